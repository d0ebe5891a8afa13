"""The health of the journal and of the scanner heads, as the daemon reports it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog

from drivers.journal import PRUNE_BATCH_ROWS
from drivers.mqtt import OutMessage
from drivers.scanner import StreamScanner
from sorter.heads import HeadChange
from sorterd.parts import Parts
from sorterd.status import status_message

__all__ = [
    "JOURNAL_CHECK_S",
    "JOURNAL_PRUNE_S",
    "MAX_PRUNE_BATCHES",
    "HeadWatch",
    "JournalWatch",
]

log = structlog.get_logger(__name__)

JOURNAL_CHECK_S = 10.0  # disk space and alarms
JOURNAL_PRUNE_S = 60.0
MAX_PRUNE_BATCHES = 200  # a minute's work at most; the rest at the next prune


class JournalWatch:
    """The journal's alarms (on P/status) and device state; its pruning, as a task."""

    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self.alarms: tuple[str, ...] = ()

    def status_message(self) -> OutMessage:
        return status_message(self._parts.topics, self.alarms)

    def check(self) -> None:
        """Alarms on P/status and the journal's device state, when they change. Writes
        nothing to the journal, so a health change reported from a failed write cannot
        come back here."""
        journal = self._parts.journal
        alarms = tuple(journal.check_space())
        if alarms != self.alarms:
            log.warning("alarms", alarms=list(alarms), was=list(self.alarms))
            self.alarms = alarms
            self._parts.mqtt.publish_raw(self.status_message())
        self._parts.pipeline.devices.report(
            "journal",
            connected=journal.healthy,
            errors=journal.stats.failed,
            detail=journal.last_error or ", ".join(alarms),
        )

    async def run(self) -> None:
        journal = self._parts.journal
        next_prune = time.monotonic()
        while True:
            if time.monotonic() >= next_prune:
                for _ in range(MAX_PRUNE_BATCHES):
                    if journal.prune() < PRUNE_BATCH_ROWS:
                        break
                    await asyncio.sleep(0.05)  # batch by batch: the line runs in between
                next_prune = time.monotonic() + JOURNAL_PRUNE_S
            journal.persist_sent()
            self.check()
            await asyncio.sleep(JOURNAL_CHECK_S)


class HeadWatch:
    """P/devices/NAME of each scanner head: online while linked and speaking
    (sorter/heads.py); the tracker stops waiting for a head that is not."""

    def __init__(self, parts: Parts, silence_timeouts_s: Sequence[float]) -> None:
        self._parts = parts
        self._interval_s = min(1.0, max(0.05, min(silence_timeouts_s) / 4))

    def on_link(self, name: str, connected: bool) -> None:
        """A scanner's link came up or went down."""
        scanner = next((s for s in self._parts.scanners if s.name == name), None)
        if scanner is None:
            return
        detail = "connected" if connected else (scanner.last_error or "disconnected")
        change = self._parts.heads.on_link(name, connected, detail, time.monotonic_ns())
        self._publish(scanner, change)

    async def run(self) -> None:
        """Notice heads that went silent, and silent heads that speak again."""
        while True:
            await asyncio.sleep(self._interval_s)
            now = time.monotonic_ns()
            for scanner in self._parts.scanners:
                change = self._parts.heads.on_heard(scanner.name, scanner.last_seen_ns, now)
                if change is not None:
                    self._publish(scanner, change)

    def _publish(self, scanner: StreamScanner, change: HeadChange | None) -> None:
        pipeline = self._parts.pipeline
        if change is None:
            # No change of state; a new error count is still worth publishing.
            pipeline.devices.report(
                scanner.name,
                connected=self._parts.heads.online(scanner.name),
                errors=scanner.errors,
            )
            return
        self._parts.tracker.set_head_alive(scanner.name, change.online)
        seen = scanner.last_seen_ns
        wall = None if seen is None else time.time_ns() - (time.monotonic_ns() - seen)
        log.info("scanner head", head=scanner.name, online=change.online, detail=change.detail)
        pipeline.devices.report(
            scanner.name,
            connected=change.online,
            errors=scanner.errors,
            last_seen_wall_ns=wall,
            detail=change.detail,
            force=True,
        )
