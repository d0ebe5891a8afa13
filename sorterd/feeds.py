"""The live hub feeds in the daemon (docs/interfaces.md section 7): messages from the feeds'
subscription (drivers/feeds.py) parsed (sorter/feeds.py), journaled
(drivers/journal_feeds.py) and applied to the live manifest the decider looks items up in,
all before the batch is acknowledged; replayed from the journal at a restart; counted for
P/stats `feeds` and reported on P/devices/feeds.

Everything here runs on the event loop, between two PLC polls: one batch of messages
(drivers/feeds.py bounds it) at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

import structlog

from drivers.feeds import FeedMessage
from drivers.journal import Journal
from drivers.journal_feeds import FeedStore
from sorter.config import FeedsSection
from sorter.contract import feeds_figures
from sorter.feeds import (
    BadRow,
    CustomsUpdate,
    FeedBatch,
    FeedRow,
    LiveManifest,
    parse_customs,
    parse_preadvice,
)
from sorter.stats import FeedStats

__all__ = [
    "BAD_LOG_INTERVAL_NS",
    "RETAINED_REASON",
    "FeedService",
    "topic_matches",
    "warm_live",
]

log = structlog.get_logger(__name__)

BAD_LOG_INTERVAL_NS: Final = 10 * 10**9  # bad rows are logged at most this often
# A retained message is sent again on every subscribe: an old row that would undo newer
# ones each time the link comes back. Feeds are streams; such a message is refused.
RETAINED_REASON: Final = "retained"
PRUNE_PAUSE_S: Final = 0.05  # between two prune steps: the line runs in between
PRUNE_ROUND_S: Final = 60.0  # between two passes over the whole feed table
COMPACT_EVERY_S: Final = 1.0


def warm_live() -> None:
    """The live index's compiled paths (numba, loaded from its cache), so that the first
    item and the first feed row do not pay for them."""
    live = LiveManifest(None, ["WARM"])
    row = FeedRow("RB123456785GB", "WARM", None, None, None, "hold", None)
    live.apply(FeedBatch([row], [CustomsUpdate("RB123456785GB", False, None)], []), 0)
    live.lookup_source("RB123456785GB")
    live.compact()
    live.lookup_source("RB123456785GB")
    live.lookup_source("RB123456784GB")
    parse_preadvice(b'{"barcode": "RB123456785GB", "destination": "WARM"}')
    parse_customs(b'{"barcode": "RB123456785GB", "status": "hold"}')


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (+ one level, # the rest)."""
    if topic_filter == topic:
        return True
    want, got = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(got) or (level not in ("+", got[i])):
            return False
    return len(want) == len(got)


class _BadLog:
    """Bad rows logged with their reasons at most once per BAD_LOG_INTERVAL_NS."""

    def __init__(self) -> None:
        self._since: Counter[str] = Counter()
        self._detail: dict[str, str] = {}
        self._last_ns: int | None = None

    def add(self, bad: Sequence[BadRow], topic: str, now_ns: int) -> None:
        for row in bad:
            self._since[row.reason] += 1
            self._detail[row.reason] = f"{topic}: {row.detail}"
        self.flush_due(now_ns)

    def flush_due(self, now_ns: int) -> None:
        """Log what was held back, once its interval is over."""
        if self._last_ns is None or now_ns - self._last_ns >= BAD_LOG_INTERVAL_NS:
            self.flush(now_ns)

    def flush(self, now_ns: int) -> None:
        if not self._since:
            return
        log.warning(
            "feed bad rows",
            counts=dict(self._since),
            examples=dict(self._detail),
            interval_s=BAD_LOG_INTERVAL_NS // 10**9,
        )
        self._since.clear()
        self._detail.clear()
        self._last_ns = now_ns


class FeedService:
    """Applies feed messages to `live` and journals them; the subscription's handler.

    `live` is the index the decider uses (sorterd/reload.py swaps its files and plan
    names). `wall_ns`: the clock of the arrival times (the subscription's).
    """

    def __init__(
        self,
        config: FeedsSection,
        journal: Journal,
        live: LiveManifest,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.journal = journal
        self.store = FeedStore(journal, remember_ids=config.remember_ids)
        self.live = live
        self.stats = FeedStats()
        self._bad = _BadLog()
        self._wall_ns = wall_ns

    def _parse(self, msg: FeedMessage) -> FeedBatch:
        if msg.retained:
            detail = "a retained message (sent again on every subscribe)"
            return FeedBatch(bad=[BadRow(RETAINED_REASON, detail)])
        preadvice = self.config.preadvice
        if preadvice is not None and topic_matches(preadvice, msg.topic):
            return parse_preadvice(msg.payload)
        return parse_customs(msg.payload)

    def __call__(self, batch: Sequence[FeedMessage]) -> bool:
        """Apply and journal `batch` (drivers.feeds.FeedHandler); True once it is durable.

        A message whose rows cannot be journaled is applied all the same (the line needs
        it now) and is not acknowledged: the broker sends it again, and the index's own
        memory of ids (or, after a restart, the journal's) drops what was applied.
        """
        durable = True
        stats = self.stats
        for msg in batch:
            parsed = self._parse(msg)
            fresh = self.store.fresh(parsed) if durable else None
            if fresh is None:
                durable, fresh = False, parsed
            else:
                stats.duplicates += len(parsed.rows) - len(fresh.rows)
                stats.duplicates += len(parsed.customs) - len(fresh.customs)
            applied = self.live.apply(fresh, msg.arrival_ns)
            if durable and not self.store.add(fresh, msg.arrival_ns):
                durable = False
            stats.rows_applied += applied.rows
            stats.customs_applied += applied.customs
            stats.duplicates += applied.duplicates
            bad = [*parsed.bad, *applied.bad]
            if bad:
                stats.bad_reasons.update(b.reason for b in bad)
                self._bad.add(bad, msg.topic, time.monotonic_ns())
        durable = durable and self.journal.commit()
        now_ns = self._wall_ns()
        for msg in batch:
            stats.on_lag((now_ns - msg.arrival_ns) / 1e6)
        return durable

    def replay(self) -> int:
        """Apply every journaled entry again, in arrival order (at the start, before the
        line runs); the entries applied."""
        count = 0
        for run in self.store.replay():
            self.live.apply(run.batch, run.arrival_ns)
            count += len(run.batch.rows) + len(run.batch.customs)
        self.stats.replayed = count
        return count

    async def upkeep(self) -> None:
        """Compaction of the index's newest rows and pruning of replaced journal entries,
        in small steps between decisions; the bad-row log's last counts."""
        next_prune = time.monotonic()
        while True:
            await asyncio.sleep(COMPACT_EVERY_S)
            if self.live.pending_rows:
                # Costs in proportion to the rows moved (sorter/feeds.py): a second's rows.
                self.live.compact()
            self._bad.flush_due(time.monotonic_ns())
            if time.monotonic() >= next_prune:
                # One pass over the entries, step by step; a journal that cannot write
                # ends the pass (the next one tries again).
                await self._prune_pass()
                next_prune = time.monotonic() + PRUNE_ROUND_S

    async def _prune_pass(self) -> None:
        store = self.store
        while True:
            if store.prune_step() is None or store.prune_wrapped:
                return
            await asyncio.sleep(PRUNE_PAUSE_S)

    def figures(self) -> dict[str, Any]:
        """P/stats `feeds`."""
        return feeds_figures(self.stats, self.live.delta_rows)
