"""The live hub feeds in the daemon (docs/interfaces.md section 7): messages from the feeds'
subscription (drivers/feeds.py) parsed (sorter/feeds.py), journaled
(drivers/journal_feeds.py) and applied to the live manifest the decider looks items up in,
all before the batch is acknowledged; replayed from the journal at a restart; counted for
P/stats `feeds`; old entries retired (`[feeds] retention_h`).

`FeedService` works on an index: a `LiveManifest` it applies to itself (in one process,
as the tests use it), or a `FeedPacker` whose packed updates it hands to `sink` after each
batch is committed and waits for them to be applied: the daemon runs it in its feeds
worker process (sorterd/feeds_worker.py), and the line's event loop only merges the
packed updates.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Final

import structlog

from drivers.feeds import FeedHandler, FeedMessage, FeedSubscriber
from drivers.journal import Journal
from drivers.journal_feeds import FeedStore
from sorter.config import FeedsSection, SiteConfig
from sorter.contract import feeds_figures
from sorter.feeds import (
    BadRow,
    CustomsUpdate,
    FeedBatch,
    FeedPacker,
    FeedRow,
    LiveManifest,
    PackedUpdate,
    parse_customs,
    parse_preadvice,
)
from sorter.stats import FeedStats

__all__ = [
    "BAD_LOG_INTERVAL_NS",
    "CHUNK_ROWS",
    "MAX_OWED_ROWS",
    "PARSE_INLINE_BYTES",
    "RETAINED_REASON",
    "BadLog",
    "FeedService",
    "Sink",
    "feed_subscriber",
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
UPKEEP_EVERY_S: Final = 1.0
# Rows applied and journaled between two turns of the event loop (a few ms).
CHUNK_ROWS: Final = 256
# Rows and decisions applied and not journaled (the journal cannot write) kept in memory at
# most: past it no new message is taken (nor acknowledged) until the journal writes again;
# the broker keeps them. ~200 bytes each.
MAX_OWED_ROWS: Final = 200_000
# Replayed entries a packer holds at most before they are dropped.
REPLAY_DROP_ROWS: Final = 20_000

# Where packed updates go (the line's index, in the daemon's process). The call puts the
# update on its way (updates arrive in the order of the calls); what it returns is awaited
# until the update is applied.
Sink = Callable[[PackedUpdate], Awaitable[object]]
# A message larger than this is parsed in a worker thread (~1,000 rows).
PARSE_INLINE_BYTES: Final = 64 * 1024


def warm_live() -> None:
    """The live index's compiled paths (numba, loaded from its cache), so that the first
    item and the first feed row do not pay for them."""
    live = LiveManifest(None, ["WARM"])
    row = FeedRow("RB123456785GB", "WARM", None, None, None, "hold", None)
    live.apply(FeedBatch([row], [CustomsUpdate("RB123456785GB", False, None)], []), 0)
    live.lookup_source("RB123456785GB")
    live.lookup_source("RB123456784GB")
    live.retire(["RB123456785GB"])
    parse_preadvice(b'{"barcode": "RB123456785GB", "destination": "WARM"}')
    parse_customs(b'{"barcode": "RB123456785GB", "status": "hold"}')


def _parts(batch: FeedBatch) -> list[FeedBatch]:
    """A message's rows and customs decisions, CHUNK_ROWS at a time, in order (its rows,
    then its decisions, as `LiveManifest.apply` takes them)."""
    rows, customs = batch.rows, batch.customs
    if len(rows) + len(customs) <= CHUNK_ROWS:
        return [FeedBatch(rows, customs, [])]
    parts = [FeedBatch(rows[i : i + CHUNK_ROWS], [], []) for i in range(0, len(rows), CHUNK_ROWS)]
    parts += [
        FeedBatch([], customs[i : i + CHUNK_ROWS], []) for i in range(0, len(customs), CHUNK_ROWS)
    ]
    return parts


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


class BadLog:
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

    `live`: the line's index itself (`LiveManifest`: applied at once), or a `FeedPacker`
    whose updates go to `sink` once each batch is committed (the daemon's feeds worker).
    `wall_ns`: the clock of the arrival times (the subscription's).
    """

    def __init__(
        self,
        config: FeedsSection,
        journal: Journal,
        live: LiveManifest | FeedPacker,
        *,
        sink: Sink | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
        max_owed_rows: int = MAX_OWED_ROWS,
    ) -> None:
        self.config = config
        self.journal = journal
        self.store = FeedStore(journal, remember_ids=config.remember_ids)
        self.live = live
        self.sink = sink
        self.stats = FeedStats()
        self.max_owed_rows = max_owed_rows
        self.refused_full = 0  # messages not taken: what was owed to the journal was full
        self._bad = BadLog()
        self._wall_ns = wall_ns
        # Rows and decisions applied whose journal write has not been committed yet (a
        # batch the journal could not take), with their arrival: journaled, in this order,
        # before anything newer, so that the journal's order is the order they were
        # applied in (docs/feeds.md "Order").
        self._owed: list[tuple[FeedBatch, int]] = []

    @property
    def owed_rows(self) -> int:
        """Rows and decisions applied and not journaled yet."""
        return sum(len(b.rows) + len(b.customs) for b, _ in self._owed)

    async def _parse(self, msg: FeedMessage) -> FeedBatch:
        if msg.retained:
            detail = "a retained message (sent again on every subscribe)"
            return FeedBatch(bad=[BadRow(RETAINED_REASON, detail)])
        preadvice = self.config.preadvice
        if preadvice is not None and topic_matches(preadvice, msg.topic):
            parse = parse_preadvice
        else:
            parse = parse_customs
        if len(msg.payload) > PARSE_INLINE_BYTES:
            # Thousands of rows: parsed beside the loop (the thread gives the GIL back every
            # few ms), so that the link's keepalive and the sink go on meanwhile.
            return await asyncio.to_thread(parse, msg.payload)
        return parse(msg.payload)

    async def __call__(self, batch: Sequence[FeedMessage]) -> bool | Awaitable[bool]:
        """Apply and journal `batch` (drivers.feeds.FeedHandler); True once it is durable
        and applied to the line's index. Over a sink (the feeds worker): once the batch is
        committed and its update on its way, an awaitable of that, which ends when the
        sink has merged it; the link handles the next batch meanwhile (it parses and
        journals while the daemon merges) and acknowledges this one when it ends.

        Rows are applied and journaled CHUNK_ROWS at a time, the loop given back in
        between; the batch is committed once, then handed to the sink. A message whose
        rows cannot be journaled is applied all the same (the line needs it now) and is
        not acknowledged: what was applied is owed to the journal and written ahead of the
        next batch (in the order it was applied); the broker sends the message again, and
        the index's memory of ids (or the journal's) drops it. While more than
        `max_owed_rows` are owed and the journal still cannot take them, a batch is not
        taken at all (not applied, not acknowledged: the broker keeps it).
        """
        since_turn = 0
        # Any failed write meanwhile (ours, or a decision's while the loop had its turn)
        # rolled back the open transaction, and with it rows of this batch.
        failures = self.journal.stats.failed
        owed, self._owed = self._owed, []
        durable = self._pay(owed)
        if not durable and sum(len(b.rows) + len(b.customs) for b, _ in owed) >= (
            self.max_owed_rows
        ):
            self._owed = owed
            self.refused_full += len(batch)
            return False
        for msg in batch:
            parsed = await self._parse(msg)
            if parsed.bad:
                self._count_bad(parsed.bad, msg.topic)
            for part in _parts(parsed):
                durable = self._apply(part, msg, durable)
                since_turn += len(part.rows) + len(part.customs)
                if since_turn >= CHUNK_ROWS:
                    # The loop's turn, the transaction left open: one disk sync per batch
                    # (a decision's own commit meanwhile only makes these rows durable
                    # sooner; a failed write rolls them back, and then the batch's commit
                    # says it is not durable).
                    since_turn = 0
                    await asyncio.sleep(0)
        durable = self.journal.commit() and durable and self.journal.stats.failed == failures
        if durable:
            self._owed.clear()
        else:
            self._owed[:0] = owed  # rolled back: all of it is owed again, oldest first
        merging = self._hand_over()
        if merging is None:
            self._lags(batch)
            return durable
        return asyncio.ensure_future(self._merged(merging, batch, durable))

    async def _merged(
        self, merging: Awaitable[object], batch: Sequence[FeedMessage], durable: bool
    ) -> bool:
        await merging
        self._lags(batch)  # arrival -> in the line's index
        return durable

    def _lags(self, batch: Sequence[FeedMessage]) -> None:
        now_ns = self._wall_ns()
        for msg in batch:
            self.stats.on_lag((now_ns - msg.arrival_ns) / 1e6)

    def _hand_over(self, at_least: int = 1) -> Awaitable[object] | None:
        """What the packer packed, to the sink: on its way, in order, when this returns;
        the awaitable ends once the sink has applied it. None when there is no sink or
        nothing to send."""
        live = self.live
        if self.sink is None or not isinstance(live, FeedPacker) or live.pending < at_least:
            return None
        update = live.take()
        return None if update is None else self.sink(update)

    async def _publish(self) -> None:
        """What the packer packed, to the sink, applied there when this returns."""
        merging = self._hand_over()
        if merging is not None:
            await merging

    def _apply(self, part: FeedBatch, msg: FeedMessage, durable: bool) -> bool:
        """Journal (in the open transaction) and apply one part of a message; whether
        everything of the batch so far could be journaled."""
        stats = self.stats
        fresh = self.store.fresh(part) if durable else None
        if fresh is None:
            durable, fresh = False, part
        else:
            stats.duplicates += len(part.rows) - len(fresh.rows)
            stats.duplicates += len(part.customs) - len(fresh.customs)
        applied = self.live.apply(fresh, msg.arrival_ns)
        # Only what the index accepted is journaled: a refused row (a destination the plan
        # lacks) must neither replace an applied row in the journal nor claim its id.
        accepted = applied.accepted
        if accepted.rows or accepted.customs:
            self._owed.append((accepted, msg.arrival_ns))
            durable = durable and self._journal(accepted, msg.arrival_ns)
        stats.rows_applied += applied.rows
        stats.customs_applied += applied.customs
        stats.duplicates += applied.duplicates
        if applied.bad:
            self._count_bad(applied.bad, msg.topic)
        return durable

    def _journal(self, accepted: FeedBatch, arrival_ns: int) -> bool:
        """Write applied entries and their counts in the open transaction."""
        store = self.store
        return store.add(accepted, arrival_ns) and store.count(
            len(accepted.rows), len(accepted.customs)
        )

    def _pay(self, owed: Sequence[tuple[FeedBatch, int]]) -> bool:
        """Journal what earlier batches applied and could not journal (oldest first), less
        what a commit meanwhile made durable after all; False when the journal cannot."""
        for accepted, arrival_ns in owed:
            fresh = self.store.fresh(accepted)
            if fresh is None or not self._journal(fresh, arrival_ns):
                return False
        return True

    def _count_bad(self, bad: Sequence[BadRow], topic: str) -> None:
        self.stats.bad_reasons.update(b.reason for b in bad)
        self._bad.add(bad, topic, time.monotonic_ns())

    def _replaying(self) -> Iterator[None]:
        """Apply every journaled entry again, in arrival order; yields after each run."""
        if isinstance(self.live, LiveManifest):
            self.live.reserve(self.config.expected_rows)
        count = 0
        for run in self.store.replay():
            self.live.apply(run.batch, run.arrival_ns, replay=True)
            count += len(run.batch.rows) + len(run.batch.customs)
            yield
        self.stats.replayed = count
        # The applied counts go on from where the journal says they were.
        counts = self.store.counts()
        self.stats.rows_applied = counts.get("rows_applied", 0)
        self.stats.customs_applied = counts.get("customs_applied", 0)

    def replay(self) -> int:
        """Apply every journaled entry again, in arrival order (at the start, before the
        line runs); the entries applied. Makes room for the day's rows first. Over a
        packer (the feeds worker: the daemon replays the entries into its index itself),
        what it packs is dropped: the ids and counts are what the worker needs back."""
        live = self.live
        for _ in self._replaying():
            if isinstance(live, FeedPacker) and live.pending >= REPLAY_DROP_ROWS:
                live.drop()
        if isinstance(live, FeedPacker):
            live.drop()
        return self.stats.replayed

    async def upkeep(self) -> None:
        """Pruning of replaced journal entries and retirement of old ones, in small steps;
        the bad-row log's last counts."""
        next_prune = time.monotonic()
        while True:
            await asyncio.sleep(UPKEEP_EVERY_S)
            self._bad.flush_due(time.monotonic_ns())
            if time.monotonic() >= next_prune:
                # One pass over the entries, step by step; a journal that cannot write
                # ends the pass (the next one tries again).
                await self._prune_pass()
                await self.retire_pass()
                next_prune = time.monotonic() + PRUNE_ROUND_S

    async def _prune_pass(self) -> None:
        store = self.store
        while True:
            if store.prune_step() is None or store.prune_wrapped:
                return
            await asyncio.sleep(PRUNE_PAUSE_S)

    async def retire_pass(self) -> int:
        """Entries older than `retention_h` out of the journal and the index, a bounded
        step at a time: a barcode whose newest entry is that old leaves both (the files
        decide it again). Not while entries are owed to the journal (the journal's order
        must stay the live order). The barcodes retired."""
        retired = 0
        cutoff_ns = self._wall_ns() - int(self.config.retention_h * 3600e9)
        while not self._owed:
            barcodes = self.store.retire_step(cutoff_ns)
            if barcodes is None:
                return retired
            if barcodes:
                self.live.retire(barcodes)
                await self._publish()
                retired += len(barcodes)
            if self.store.retire_wrapped:
                return retired
            await asyncio.sleep(PRUNE_PAUSE_S)
        return retired

    def figures(self) -> dict[str, Any]:
        """P/stats `feeds` (`delta_rows` the line's index's: 0 here for a packer)."""
        live = self.live
        delta_rows = live.delta_rows if isinstance(live, LiveManifest) else 0
        return feeds_figures(self.stats, delta_rows)


def feed_subscriber(
    cfg: SiteConfig, handler: FeedHandler, on_state: Callable[[bool, str], None] | None
) -> FeedSubscriber:
    """The feeds' subscription: the site's broker and credentials, its persistent session."""
    fc, mc = cfg.feeds, cfg.mqtt
    return FeedSubscriber(
        mc.url,
        fc.topics,
        handler,
        client_id=fc.client_id or f"sorterd-{cfg.site.name}-{cfg.site.line}-feeds",
        username=mc.username,
        password=mc.password,
        keepalive_s=mc.keepalive_s,
        ca_file=mc.ca_file,
        cert_file=mc.cert_file,
        key_file=mc.key_file,
        on_state=on_state,
    )
