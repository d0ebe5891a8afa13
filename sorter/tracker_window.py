"""Pairing reads without tracking id with their request, by time window.

Reads and requests both come in belt order. Per head, the oldest unmatched read is paired
with the oldest request that head has not yet read, when the read's time lies within
`[t - before, t + after]` of the request's time t. A read older than that window is an
orphan (no item for it); a read newer than the window means the head sent nothing for that
request (a missing read), and the next request is tried. So a missing read never shifts
the next read onto the wrong item, as long as the window is narrower than the spacing of
items: with items S apart and reads within [dmin, dmax] of their request, any `before` in
[-dmin, S - dmax) and `after` in [dmax, S + dmin) pair every read with its own item
(docs/tunnels.md). The times are the daemon's, so a stall of its event loop shifts them: a
read handled more than `S - before` late goes to the next item; docs/tunnels.md says how
to choose.

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

__all__ = ["Attach", "Check", "WindowPairing"]

log = structlog.get_logger("sorter.tracker")

# Join a read to its item; the last argument False leaves the decision to the caller.
Attach = Callable[[Item, Head, ScanRead, int, list[Match], bool], None]
# Decide the item if every head it waits for is done with it.
Check = Callable[[Item, int, list[Match]], None]


class WindowPairing:
    """The request timeline and the window heads' reads waiting to be paired with it."""

    __slots__ = (
        "_attach",
        "_book",
        "_check",
        "_heads",
        "_last_t_ns",
        "_numbers",
        "_spacing_logged_ns",
        "_started",
        "_stats",
        "_timeline",
        "after_ns",
        "before_ns",
        "max_items",
    )

    def __init__(
        self,
        before_ns: int,
        after_ns: int,
        max_items: int,
        book: HeadBook,
        attach: Attach,
        check: Check,
    ) -> None:
        self.before_ns = before_ns
        self.after_ns = after_ns
        self.max_items = max_items
        self._book = book
        self._heads = book.window_heads  # the book adds to it; read on every event
        self._stats: TrackerStats = book.stats
        self._attach = attach
        self._check = check
        self._timeline: deque[Item] = deque()  # requests whose window is still open
        self._numbers = itertools.count()
        self._last_t_ns = 0
        self._started = False  # a request was seen (so _last_t_ns means something)
        self._spacing_logged_ns: int | None = None

    @property
    def pending_reads(self) -> int:
        return sum(len(head.pending) for head in self._heads)

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
        self._last_t_ns = t_ns
        self._started = True
        item = Item(req, key, next(self._numbers), t_ns, deadline_ns)
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
                "requests closer than the window: reads without tracking id may be "
                "paired by order only",
                gap_ms=round((t_ns - self._last_t_ns) / 1e6, 1),
                window_ms=(self.before_ns + self.after_ns) / 1e6,
                total=self._stats.requests_within_window,
            )

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
                orphan = head.pending[0].received_ns + self.before_ns + 1
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

    def _pair(
        self, head: Head, now_ns: int, out: list[Match], touched: dict[int, Item] | None
    ) -> None:
        """Pair the head's oldest reads with the oldest requests it has not read (module
        docstring); stops when a read has to wait for its request. With `touched`, the
        items joined are collected there for the caller to check, not checked here."""
        pending = head.pending
        timeline = self._timeline
        check_now = touched is None
        while pending:
            read = pending[0]
            item = None
            if timeline:
                index = max(0, head.cursor + 1 - timeline[0].number)
                if index < len(timeline):
                    item = timeline[index]
            if item is None:
                # A request not here yet carries a later time than now: once now is past the
                # read's window, no request to come can hold it.
                if read.received_ns + self.before_ns < now_ns:
                    pending.popleft()
                    self._book.orphan(head, read, now_ns)
                    continue
                return
            if read.received_ns < item.t_ns - self.before_ns:
                pending.popleft()  # older than every request's window it could still be in
                self._book.orphan(head, read, now_ns)
                continue
            head.cursor = item.number
            if read.received_ns > item.t_ns + self.after_ns:
                # It sent nothing for this item.
                self._head_done(head, item, now_ns, out, check_now)
            else:
                pending.popleft()
                self._stats.window_matched += 1
                self._attach(item, head, read, now_ns, out, check_now)
            if touched is not None and not item.decided:
                touched[item.number] = item

    def _head_done(
        self, head: Head, item: Item, now_ns: int, out: list[Match], check: bool
    ) -> None:
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
                head.cursor = item.number
                self._head_done(head, item, now_ns, out, True)
