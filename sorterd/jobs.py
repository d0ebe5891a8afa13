"""One-off work (a plan or manifest reload) run as tasks of the daemon's TaskGroup."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

__all__ = ["Jobs", "OnError"]

log = structlog.get_logger(__name__)

OnError = Callable[[Exception], None]


@dataclass(frozen=True, slots=True)
class _Job:
    work: Callable[[], Awaitable[None]]
    name: str
    on_error: OnError | None


class Jobs:
    """Starts jobs from synchronous callbacks (an MQTT command, SIGHUP) inside a TaskGroup.

    A job asked for before the group runs waits here and starts once `bind` gives the
    group. A job that fails is logged and handed to its `on_error` (a reload answers the
    command with the error), so no exception goes unretrieved, and it does not cancel the
    group: a reload that goes wrong must not stop the line. `close` cancels what runs and
    refuses what comes after: the daemon is stopping.
    """

    def __init__(self) -> None:
        self._group: asyncio.TaskGroup | None = None
        self._waiting: list[_Job] = []
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        self.failed = 0

    @property
    def running(self) -> int:
        return len(self._running)

    def bind(self, group: asyncio.TaskGroup) -> None:
        """Start the waiting jobs in `group`, and every later one."""
        self._group = group
        waiting, self._waiting = self._waiting, []
        for job in waiting:
            self._start(job)

    def start(
        self,
        work: Callable[[], Awaitable[None]],
        name: str,
        on_error: OnError | None = None,
    ) -> None:
        """Run `work()` as a task named `name` (now, or once the group is bound)."""
        job = _Job(work, name, on_error)
        if self._closed:
            log.warning("stopping: job not started", job=name)
        elif self._group is None:
            self._waiting.append(job)
        else:
            self._start(job)

    def close(self) -> None:
        """Cancel the running jobs and refuse new ones; safe to call twice."""
        self._closed = True
        self._waiting.clear()
        for task in self._running:
            task.cancel()

    def _start(self, job: _Job) -> None:
        assert self._group is not None
        guarded = self._guarded(job)
        try:
            task = self._group.create_task(guarded, name=job.name)
        except RuntimeError:
            # The group is shutting down after a task failed: the daemon is stopping.
            guarded.close()
            log.warning("stopping: job not started", job=job.name)
            return
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _guarded(self, job: _Job) -> None:
        try:
            await job.work()
        except Exception as exc:  # the job's failure is reported here; the line goes on
            self.failed += 1
            log.exception("job failed", job=job.name)
            if job.on_error is not None:
                job.on_error(exc)
