"""Pairing reads without tracking id with their request, by time window.

Reads and requests both come in belt order. Per head, the oldest unmatched read is paired
with the oldest request that head has not yet read, when the read's time lies within
`[t - before, t + after]` of the request's time t. A read older than that window is an
orphan (no item for it); a read newer than the window means the head sent nothing for that
request (a missing read), and the next request is tried. So a missing read never shifts
the next read onto the wrong item, as long as the window is narrower than the spacing of
items: with items S apart and reads within [dmin, dmax] of their request, any `before` in
[-dmin, S - dmax) and `after` in [dmax, S + dmin) pair every read with its own item
(docs/tunnels.md).

The times are the daemon's, taken when it got to each telegram and each poll of the PLC,
and a daemon short of CPU takes them late: on a loaded machine the PLC poll (several round
trips) fell 40 to 250 ms behind the scanner links, so a head's read came before its
request's window opened (an orphan) and the next read fell into that window (a neighbour's
read). So each time is a span, not a point. A request was written within `[lo, t]`, `lo`
being when the poll before the one that saw it went out (`SortRequest.earliest_ns`, from
drivers/plc.py). A read arrived within `[lo, t]`, `lo` being the start of a stall of the
daemon when the read was taken during or soon after it (the tracker asked to be called at
a deadline and was called late: `note_time`). A read is paired only with a request it can
belong to when no other can: not the request before (one the head was taken to have sent
nothing for), not the next one, here or still to come (a request to come is at least
`spacing` after this one's `lo`, so it cannot hold a read earlier than
`lo + spacing - before`). A read that more than one request could hold is dropped and
counted (`reads_ambiguous`, and an orphan of its head), never given to a neighbour; its
item goes without it (reason `timeout` when no head read it).

`WindowPairing` keeps the request timeline (every request, numbered in belt order, while
its window is open) and each window head's cursor on it; joining a read to its item and
deciding are the tracker's (sorter/tracker.py), called back through `attach` and `check`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

import structlog

from sorter.ports import ScanRead, SortRequest
from sorter.tracker_heads import LOG_INTERVAL_NS, Head, HeadBook, TrackerStats
from sorter.tracker_store import Item, Match

__all__ = ["LATE_CALL_NS", "Attach", "Check", "WindowPairing"]

log = structlog.get_logger("sorter.tracker")

# Join a read to its item; the last argument False leaves the decision to the caller.
Attach = Callable[[Item, Head, ScanRead, int, list[Match], bool], None]
# Decide the item if every head it waits for is done with it.
Check = Callable[[Item, int, list[Match]], None]

# Called this long after the deadline it asked for, the daemon was stalled: the reads it
# takes until this long after may have arrived any time since the call before. A loaded
# but healthy event loop runs a timer a few ms late.
LATE_CALL_NS = 15_000_000


class WindowPairing:
    """The request timeline and the window heads' reads waiting to be paired with it."""

    __slots__ = (
        "_armed_ns",
        "_attach",
        "_blind",
        "_book",
        "_check",
        "_heads",
        "_last_call_ns",
        "_last_lo_ns",
        "_last_t_ns",
        "_numbers",
        "_spacing_logged_ns",
        "_started",
        "_stats",
        "_timeline",
        "after_ns",
        "before_ns",
        "max_items",
        "spacing_ns",
        "wait_ns",
    )

    def __init__(
        self,
        before_ns: int,
        after_ns: int,
        max_items: int,
        book: HeadBook,
        attach: Attach,
        check: Check,
        *,
        spacing_ns: int | None = None,
        wait_ns: int = 0,
    ) -> None:
        """`spacing_ns`: the least time between two items at the tunnel; not given, the
        window's width (which must be less: docs/tunnels.md). `wait_ns`: how long a read
        waits for a request that may hold it (at least the window's width)."""
        self.before_ns = before_ns
        self.after_ns = after_ns
        self.max_items = max_items
        self.spacing_ns = max(spacing_ns or 0, before_ns + after_ns, 1)
        self.wait_ns = max(wait_ns, before_ns + after_ns)
        self._book = book
        self._heads = book.window_heads  # the book adds to it; read on every event
        self._stats: TrackerStats = book.stats
        self._attach = attach
        self._check = check
        self._timeline: deque[Item] = deque()  # requests whose window is still open
        self._numbers = itertools.count()
        self._last_t_ns = 0
        self._last_lo_ns = 0
        self._started = False  # a request was seen (so _last_t_ns means something)
        self._spacing_logged_ns: int | None = None
        self._armed_ns: int | None = None  # the deadline the tracker last asked for
        self._last_call_ns: int | None = None
        self._blind: tuple[int, int] = (0, -1)  # the last stall seen: (from, to)

    @property
    def pending_reads(self) -> int:
        return sum(len(head.pending) for head in self._heads)

    # --- the daemon's stalls ----------------------------------------------------------------

    def arm(self, deadline_ns: int | None) -> None:
        """The deadline the tracker asked to be called at (its `next_deadline_ns`)."""
        self._armed_ns = deadline_ns

    def note_time(self, now_ns: int) -> None:
        """Every call of the tracker: called well after the deadline it asked for, the
        daemon was stalled since the call before, and what it took meanwhile has no time."""
        armed, last = self._armed_ns, self._last_call_ns
        if armed is not None and last is not None and now_ns - armed > LATE_CALL_NS:
            self._blind = (last, now_ns)
            self._armed_ns = None
        self._last_call_ns = now_ns

    def _read_lo(self, received_ns: int) -> int:
        """The earliest the read may have arrived: the start of a stall when it was taken
        during one or just after it (the backlog a stall leaves is taken at once)."""
        start, end = self._blind
        if start <= received_ns <= end + LATE_CALL_NS:
            return start
        return received_ns

    # --- requests ---------------------------------------------------------------------------

    def open(
        self,
        req: SortRequest,
        key: tuple[int, int],
        now_ns: int,
        deadline_ns: int,
        out: list[Match],
    ) -> Item:
        """A new request: windows that closed by now first, then its item on the timeline."""
        timeline = self._timeline
        limit = now_ns - self.after_ns
        while timeline and timeline[0].t_ns < limit:  # close_windows, inline: once per item
            self._close(timeline.popleft(), now_ns, out)
        # Requests come in belt order; a clock that steps back must not reorder them.
        t_ns = max(req.received_ns or now_ns, self._last_t_ns)
        if (
            self._heads
            and self._started
            and t_ns - self._last_t_ns < self.before_ns + self.after_ns
        ):
            self._too_close(t_ns, now_ns)
        # Written after the poll before, and at least `spacing` after the request before
        # (the items are that far apart on the belt); by t at latest.
        floor_ns = self._last_lo_ns + self.spacing_ns if self._started else 0
        lo_ns = min(max(req.earliest_ns or t_ns, floor_ns), t_ns)
        self._last_t_ns = t_ns
        self._last_lo_ns = lo_ns
        self._started = True
        item = Item(req, key, next(self._numbers), t_ns, deadline_ns, lo_ns=lo_ns)
        timeline.append(item)
        while len(timeline) > self.max_items:
            self._close(timeline.popleft(), now_ns, out)
        return item

    def _too_close(self, t_ns: int, now_ns: int) -> None:
        self._stats.requests_within_window += 1
        last = self._spacing_logged_ns
        if last is None or now_ns - last >= LOG_INTERVAL_NS:
            self._spacing_logged_ns = now_ns
            log.warning(
                "requests closer than the window: reads without tracking id that two of "
                "them could hold are dropped",
                gap_ms=round((t_ns - self._last_t_ns) / 1e6, 1),
                window_ms=(self.before_ns + self.after_ns) / 1e6,
                total=self._stats.requests_within_window,
            )

    # --- reads ------------------------------------------------------------------------------

    def add_read(self, head: Head, scan: ScanRead, now_ns: int, out: list[Match]) -> None:
        """A read without tracking id: paired now if its request is here, else it waits."""
        if not head.stats.window:
            self._book.reads_by_window(head)
        self.close_windows(now_ns, out)
        head.pending.append(scan)
        if len(head.pending) > self.max_items:
            self._book.orphan(head, head.pending.popleft(), now_ns)
        self._pair(head, now_ns, out, None)

    def next_deadline_ns(self) -> int | None:
        """When a window closes next, or a waiting read can no longer find a request."""
        if not self._heads:
            return None
        best: int | None = None
        if self._timeline:
            best = self._timeline[0].t_ns + self.after_ns + 1
        for head in self._heads:
            if head.pending:
                orphan = head.pending[0].received_ns + self.wait_ns + 1
                best = orphan if best is None else min(best, orphan)
        return best

    def pair_all(
        self, now_ns: int, out: list[Match], touched: dict[int, Item] | None = None
    ) -> None:
        """Pair the waiting reads of every window head, then check the items they joined:
        reads of several heads that were all waiting for the same request join it before
        it is decided (`touched` adds items to check, by number)."""
        touched = {} if touched is None else touched
        for head in self._heads:
            self._pair(head, now_ns, out, touched)
        check = self._check
        for number in sorted(touched):
            check(touched[number], now_ns, out)

    def _candidates(self, head: Head) -> tuple[Item | None, Item | None]:
        """The first request the head is not done with, and the one after it."""
        timeline = self._timeline
        if not timeline:
            return None, None
        index = max(0, head.cursor + 1 - timeline[0].number)
        if index >= len(timeline):
            return None, None
        after = timeline[index + 1] if index + 1 < len(timeline) else None
        return timeline[index], after

    def _pair(
        self, head: Head, now_ns: int, out: list[Match], touched: dict[int, Item] | None
    ) -> None:
        """Pair the head's oldest reads with the oldest requests it has not read (module
        docstring); stops when a read has to wait for its request. With `touched`, the
        items joined are collected there for the caller to check, not checked here."""
        pending = head.pending
        check_now = touched is None
        before, after = self.before_ns, self.after_ns
        while pending:
            read = pending[0]
            hi = read.received_ns
            lo = self._read_lo(hi)
            item, following = self._candidates(head)
            if item is not None and lo > item.t_ns + after:
                # Later than this request's window: it sent nothing for it.
                self._skip(head, item, now_ns, out, check_now)
                if touched is not None and not item.decided:
                    touched[item.number] = item
                continue
            # Whether the request it was taken to have sent nothing for may hold it ...
            skipped = head.skipped_ns is not None and lo <= head.skipped_ns + after
            if item is not None and hi < item.lo_ns - before:
                pending.popleft()  # ... older than every request's window it could be in
                self._book.orphan(head, read, now_ns)
                continue
            # ... the next request, here or to come (at least `spacing` after this one).
            if following is not None:
                later = hi >= following.lo_ns - before
            else:
                base = item.lo_ns if item is not None else self._last_lo_ns
                later = not self._started or hi >= base + self.spacing_ns - before
            if item is not None and not skipped and not later:
                pending.popleft()
                head.skipped_ns = None
                head.cursor = item.number
                self._stats.window_matched += 1
                self._attach(item, head, read, now_ns, out, check_now)
                if touched is not None and not item.decided:
                    touched[item.number] = item
                continue
            if later and following is None and not skipped and now_ns <= hi + self.wait_ns:
                return  # its request (or the one after this) may still come
            pending.popleft()
            if item is not None or (skipped and later):
                self._stats.reads_ambiguous += 1  # two requests could hold it
            self._book.orphan(head, read, now_ns)

    def _skip(self, head: Head, item: Item, now_ns: int, out: list[Match], check: bool) -> None:
        """The head is done with the item without a read."""
        head.cursor = item.number
        head.skipped_ns = item.t_ns
        if not item.decided:
            item.done.add(head.name)
            if check:
                self._check(item, now_ns, out)

    def close_windows(self, now_ns: int, out: list[Match]) -> None:
        """Requests whose window closed: no read can be paired with them any more."""
        timeline = self._timeline
        limit = now_ns - self.after_ns
        while timeline and timeline[0].t_ns < limit:
            self._close(timeline.popleft(), now_ns, out)

    def _close(self, item: Item, now_ns: int, out: list[Match]) -> None:
        for head in self._heads:
            # Its reads up to now were paired on arrival, so it has nothing for this item.
            if head.cursor < item.number:
                self._skip(head, item, now_ns, out, True)
