"""The daemon: wires the line's parts together and runs them in one TaskGroup.

Every resource is entered into one AsyncExitStack (journal, systemd notifier, metrics
server, scanners, and the TaskGroup whose tasks run the PLC link and the MQTT publisher),
so they close in reverse order however `run` ends. The parts are built in
sorterd/parts.py; commands are executed in sorterd/control.py, reloads in
sorterd/reload.py, journal and head health in sorterd/health.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from drivers.mqtt import OutMessage
from sorter.config import Site
from sorter.decide import Decider
from sorter.manifest import Manifest
from sorter.manifest import warm as warm_manifest_kernels
from sorter.plan import SortPlan, compile_plan, load_plan
from sorter.runtime import pace_gc, release_free_memory, tune_gc
from sorterd.control import CommandHandler
from sorterd.feeds import warm_live
from sorterd.feeds_worker import adopt_old_feeds, spawn_worker
from sorterd.health import HeadWatch, JournalWatch
from sorterd.jobs import Jobs
from sorterd.parts import build_parts
from sorterd.reload import Reloads, log_plan_warnings
from sorterd.status import Answers, link_stats, offline_message
from sorterd.systemd import run_watchdog

__all__ = ["SHUTDOWN_FLUSH_S", "Daemon", "StartupTimes"]

log = structlog.get_logger(__name__)

SHUTDOWN_FLUSH_S = 5.0


@dataclass(slots=True)
class StartupTimes:
    plan_ms: float = 0.0
    warm_ms: float = 0.0
    total_ms: float = 0.0


class Daemon:
    """One sorter line: PLC link, scanners, decision pipeline, MQTT."""

    def __init__(self, site: Site) -> None:
        self.site = site
        # The feeds worker's process first: its imports overlap the daemon's start.
        early = None
        if site.config.feeds.topics:
            adopt_old_feeds(site)  # an upgrade's first start: the line journal's feed rows
            early = spawn_worker(site, (), ())
        t0 = time.perf_counter()
        plan = compile_plan(load_plan(site.plan_path))
        self.times = StartupTimes(plan_ms=(time.perf_counter() - t0) * 1000)
        log_plan_warnings(plan.plan)
        self.parts = parts = build_parts(site, plan, self)
        if parts.feeds is not None:
            parts.feeds.worker.spawn(early)
        self.pipeline = parts.pipeline
        self.tracker = parts.tracker
        self.heads = parts.heads
        self.plc = parts.plc
        self.scanners = parts.scanners
        self.jobs = Jobs()
        self.journal_watch = JournalWatch(parts)
        self.head_watch = HeadWatch(parts, [s.silence_timeout_s for s in site.config.scanner])
        answer = Answers(parts.mqtt, parts.topics)
        live = parts.feeds.live if parts.feeds is not None else None
        self.reloads = Reloads(site, parts.pipeline, parts.plc, answer, self.jobs, live)
        self.commands = CommandHandler(parts.topics, parts.pipeline, self.reloads, answer)
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def decider(self) -> Decider:
        return self.pipeline.decider

    @property
    def plan(self) -> SortPlan:
        """The sort plan running now."""
        return self.reloads.plan

    @property
    def manifest(self) -> Manifest | None:
        """The pre-advice index running now; None before the first load."""
        return self.reloads.manifest

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self, request_id: str | None = None) -> None:
        """Reload the sort plan in the background (SIGHUP, P/cmd/plan/reload)."""
        self.reloads.request_plan(request_id)

    # --- what the parts call back (sorterd.parts.Hooks) ----------------------------------

    def status_message(self) -> OutMessage:
        return self.journal_watch.status_message()

    def on_mqtt_state(self, connected: bool, reason: str) -> None:
        log.info("mqtt link", connected=connected, reason=reason)
        # Retained and coalesced: consumers see it once the broker is back, with the count
        # of connection losses in `errors` and the last reason in `detail`.
        self.pipeline.devices.report("mqtt", connected=connected, detail=reason)

    def on_mqtt_message(self, topic: str, payload: bytes) -> None:
        self.commands.on_message(topic, payload)

    def on_scanner_state(self, name: str, connected: bool) -> None:
        self.head_watch.on_link(name, connected)

    def on_journal_health(self) -> None:
        self.journal_watch.check()

    def on_feeds_state(self, connected: bool, reason: str) -> None:
        feeds = self.parts.feeds
        errors = feeds.worker.link_errors if feeds is not None else 0
        # P/devices/feeds: connected once subscribed; errors are connection losses.
        self.pipeline.devices.report("feeds", connected=connected, errors=errors, detail=reason)

    def link_stats(self) -> dict[str, Any]:
        return link_stats(self.parts, self.journal_watch.alarms)

    # --- running ------------------------------------------------------------------------

    async def run(self, on_ready: Callable[[Daemon], None] | None = None) -> None:
        """Run until request_stop(); then publish offline status and flush the outbox."""
        t0 = time.perf_counter()
        parts = self.parts
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(parts.journal.close)
            stack.callback(parts.notifier.close)
            if parts.feeds is not None:
                # Its replay runs beside the warm-up; the line waits for it below.
                stack.push_async_callback(parts.feeds.worker.stop)
            await self._warm()
            if self.reloads.manifests.globs:
                await self.reloads.load_manifests(force=True)
            if parts.metrics is not None:
                stack.push_async_callback(asyncio.to_thread, parts.metrics.stop)  # safe twice
                self._serve_metrics()
            self._recover()
            await self._start_feeds()
            tune_gc()
            for scanner in parts.scanners:
                await stack.enter_async_context(scanner)
            group = await stack.enter_async_context(asyncio.TaskGroup())
            tasks = self._start_tasks(group)
            self.jobs.bind(group)
            self._announce_ready(t0)
            if on_ready is not None:
                on_ready(self)
            await self._stop.wait()
            await self._shutdown()
            self.jobs.close()
            for task in tasks:
                task.cancel()

    async def _warm(self) -> None:
        t0 = time.perf_counter()
        await asyncio.to_thread(self.decider.warm)  # compiled or loaded from numba's cache
        await asyncio.to_thread(warm_manifest_kernels)
        if self.parts.feeds is not None:
            await asyncio.to_thread(warm_live)
        # Loading the kernels leaves megabytes freed but resident; given back here, a
        # daemon with manifests and one without differ by the index alone.
        await asyncio.to_thread(release_free_memory)
        self.times.warm_ms = (time.perf_counter() - t0) * 1000

    def _serve_metrics(self) -> None:
        metrics, listen = self.parts.metrics, self.site.config.metrics.listen
        if metrics is None or not listen:
            return
        host, _, port = listen.rpartition(":")
        bound = metrics.start(host.strip("[]"), int(port))
        log.info("metrics endpoint", url=f"http://{host}:{bound}/metrics")

    def _recover(self) -> None:
        """Requests and messages the previous run left in the journal."""
        journal = self.parts.journal
        recovered = journal.recover()
        self.pipeline.restore(recovered)
        if recovered.pending or journal.stats.recovered_unsent:
            log.info(
                "journal recovered",
                pending_requests=len(recovered.pending),
                unsent_messages=journal.stats.recovered_unsent,
                awaiting_confirmation=len(recovered.assigned),
            )
        self.journal_watch.check()

    async def _start_feeds(self) -> None:
        """The feeds worker, and the feed rows and customs decisions of earlier runs into
        the index again (its replay of the journal) before the line runs."""
        feeds = self.parts.feeds
        if feeds is None:
            return
        t0 = time.perf_counter()
        entries = await feeds.worker.start()
        log.info(
            "feeds replayed",
            entries=entries,
            delta_rows=feeds.live.delta_rows,
            ms=round((time.perf_counter() - t0) * 1000, 1),
        )
        self.pipeline.devices.report("feeds", connected=False, errors=0, detail="connecting")

    def _start_tasks(self, group: asyncio.TaskGroup) -> list[asyncio.Task[None]]:
        parts = self.parts
        work = {
            "mqtt": parts.mqtt.run(),
            "plc": parts.plc.run(),
            "timer": self.pipeline.run_timer(),
            "manifests": self.reloads.watch_manifests(),
            "journal": self.journal_watch.run(),
            "scanner-heads": self.head_watch.run(),
            "watchdog": run_watchdog(parts.notifier, lambda: not self._stop.is_set()),
            "stats": self.pipeline.run_stats(self.site.config.mqtt.stats_interval_s),
            "gc": pace_gc(),
        }
        if parts.feeds is not None:
            work["feeds"] = parts.feeds.worker.run()
        for scanner in parts.scanners:
            work[f"scanner-{scanner.name}"] = self.pipeline.run_scanner(scanner.reads())
        return [group.create_task(coro, name=name) for name, coro in work.items()]

    def _announce_ready(self, t0: float) -> None:
        self.times.total_ms = self.times.plan_ms + (time.perf_counter() - t0) * 1000
        log.info(
            "sorterd ready",
            site=self.site.config.site.name,
            line=self.site.config.site.line,
            plan=self.plan.name,
            startup_ms=round(self.times.total_ms, 1),
        )
        self.ready.set()
        self.parts.notifier.ready(f"plan {self.plan.name}")

    async def _shutdown(self) -> None:
        """Graceful stop: answer what is waiting, say offline, flush within a bound."""
        parts = self.parts
        log.info("sorterd stopping", waiting=self.tracker.waiting, backlog=parts.mqtt.backlog)
        parts.notifier.stopping()
        # New requests stay in the PLC's ring for the next start: anything taken now could
        # be acknowledged and then not answered before the process ends.
        self.plc.stop_intake()
        # Requests still waiting for a scan are answered now rather than left to the PLC's
        # timeout: the timer decides them with reason timeout at once.
        self.pipeline.answer_waiting()
        await self.plc.wait_replies_written(timeout_s=1.0)
        # The outbox gets a step's messages only once the journal's sync is done
        # (drivers/journal_sync.py): with the PLC gone nothing above waited for it, and the
        # flush would find the outbox empty and leave those decisions to the next start.
        # Bounded: a disk that hangs must not hold the stop (the rows are committed).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_FLUSH_S):
                await parts.journal.synced()
        parts.mqtt.publish_raw(offline_message(parts.topics))
        flushed = await parts.mqtt.flush(SHUTDOWN_FLUSH_S)
        if parts.metrics is not None:
            await asyncio.to_thread(parts.metrics.stop)
        log.info("sorterd stopped", flushed=flushed, backlog=parts.mqtt.backlog)
