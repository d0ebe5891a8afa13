"""Joins each sort request with the reads of the same item from the heads of its tunnel.

Pure logic with the time passed in, so the pipeline drives it from the event loop and the
tests drive it with made-up clocks.

Two ways a read finds its item:
- **by tracking id** (`index` heads): the read names the PLC's tracking id; it joins the
  waiting request of that id, or waits up to `scan_ttl_ns` for it (reads may come first);
- **by window** (heads whose telegrams carry no tracking id): reads and requests both come
  in belt order, and each head's reads are paired with the requests whose time window
  holds them (sorter/tracker_window.py, where the rule and its limits are set out).

Heads are grouped into tunnels; the reads of all heads of an item's tunnel are merged (codes
deduplicated, in head order) before the decision. The request is decided as soon as every
awaited head of its tunnel (sorter/tracker_heads.py) has either read it or, for a window
head, let its window close; at the latest `merge_window_ns` after its first read, or
`scan_wait_ns` after the request (reason timeout when no head read it at all).

The pieces: `HeadBook` (sorter/tracker_heads.py) the heads, their health and counts;
`WaitingItems` and `ReadsById` (sorter/tracker_store.py) what waits, with its deadlines;
`WindowPairing` (sorter/tracker_window.py) the request timeline for window heads. The
`Tracker` here joins them: what a read or a request does, and when an item is decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sorter.bounded import BoundedMap
from sorter.ports import ScanRead, SortRequest
from sorter.tracker_heads import Head, HeadBook, HeadStats, TrackerStats
from sorter.tracker_store import Item, Match, ReadsById, WaitingItems
from sorter.tracker_window import WindowPairing

__all__ = [
    "DEFAULT_HEAD_MISS_LIMIT",
    "DEFAULT_MERGE_WINDOW_NS",
    "DEFAULT_WINDOW_AFTER_NS",
    "DEFAULT_WINDOW_BEFORE_NS",
    "HeadStats",
    "Match",
    "Recent",
    "Tracker",
    "TrackerStats",
]

DEFAULT_WINDOW_BEFORE_NS = 50_000_000
DEFAULT_WINDOW_AFTER_NS = 50_000_000
DEFAULT_MERGE_WINDOW_NS = 50_000_000
DEFAULT_HEAD_MISS_LIMIT = 3

# A decided item as the tracker remembers it: (seq, decided_ns, names of the heads that
# read it).
Recent = tuple[int, int, tuple[str, ...]]


class Tracker:
    """Requests and reads in (`on_request`, `on_scan`), matches out; `expire` at
    `next_deadline_ns` hands over what waited long enough."""

    def __init__(
        self,
        scan_wait_ns: int,
        scan_ttl_ns: int,
        max_items: int = 20_000,
        *,
        heads: Mapping[str, str] | None = None,
        window_before_ns: int = DEFAULT_WINDOW_BEFORE_NS,
        window_after_ns: int = DEFAULT_WINDOW_AFTER_NS,
        merge_window_ns: int = DEFAULT_MERGE_WINDOW_NS,
        head_miss_limit: int = DEFAULT_HEAD_MISS_LIMIT,
        item_spacing_ns: int | None = None,
    ) -> None:
        """`heads` maps each scanner name to its tunnel name, in merge order; a head not
        named there is its own tunnel. `max_items` bounds the requests remembered to drop
        duplicates (re-reads after a reconnect are within one 64-slot ring), the reads
        waiting for their request and the recent decisions kept to spot late reads.
        `item_spacing_ns`: the least time between two items at the tunnel, when known (else
        the window's width, which must be less: sorter/tracker_window.py)."""
        if min(window_before_ns, window_after_ns, merge_window_ns) < 0:
            raise ValueError("windows must be >= 0")
        self.scan_wait_ns = scan_wait_ns
        self.merge_window_ns = merge_window_ns
        self.stats = TrackerStats()
        self._book = HeadBook(self.stats, head_miss_limit, heads)
        # The book's own collections, read on every read and decision.
        self._heads = self._book.by_name
        self._tunnels = self._book.tunnels
        self._window_heads = self._book.window_heads
        self._waiting = WaitingItems()
        self._reads = ReadsById(scan_ttl_ns, max_items, self.stats)
        self._windows = WindowPairing(
            window_before_ns,
            window_after_ns,
            max_items,
            self._book,
            self._attach,
            self._check,
            spacing_ns=item_spacing_ns,
            wait_ns=scan_wait_ns,
        )
        self._seen: BoundedMap[tuple[int, int], None] = BoundedMap(max_items)
        # Decided items by tracking id, as (seq, decided_ns, heads that read it): tuples of
        # ints and strings, which the cyclic GC stops tracking. Kept as the items themselves
        # (item, request, read, dict and set each), these were 130,000 objects at 20,000
        # entries, nine tenths of what every GC pass of the daemon had to walk: a pass of the
        # older generations stalled the line for hundreds of milliseconds.
        self._recent: BoundedMap[int, Recent] = BoundedMap(max_items)

    # --- heads ----------------------------------------------------------------------------

    @property
    def heads(self) -> dict[str, HeadStats]:
        return {name: head.stats for name, head in self._heads.items()}

    def set_head_alive(self, name: str, alive: bool) -> None:
        """The daemon's health watch: a head offline (link down, silent) is not waited for.
        Items already waiting for it are decided at their merge deadline at the latest."""
        self._book.set_alive(name, alive)

    # --- what waits -----------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def pending_scans(self) -> int:
        return len(self._reads) + self._windows.pending_reads

    def holds_read(self, tracking_id: int) -> bool:
        """Whether a read of this id waits for its request (it came first)."""
        return tracking_id in self._reads

    def is_waiting(self, tracking_id: int, seq: int) -> bool:
        """Whether this request waits for its reads (not decided, not a duplicate)."""
        return (tracking_id, seq) in self._waiting

    def forget_requests(self) -> None:
        """Forget the (tracking_id, seq) pairs of requests already decided: after a PLC
        restart they may come again as new items. Requests still waiting stay known."""
        self._seen.retain(self._waiting.keys())
        # Reads kept for requests to come, and the items decided: their ids may now be a
        # new parcel's.
        self._reads.clear()
        self._recent.clear()

    # --- events ---------------------------------------------------------------------------

    def on_request(self, req: SortRequest, now_ns: int) -> list[Match]:
        """A new sort request: the matches it makes ready (usually itself, when its reads
        are all here already, or nothing while it waits)."""
        key = (req.tracking_id, req.seq)
        self._windows.note_time(now_ns)
        if not self._seen.add(key):
            # The same message seen twice (PLC re-sent after a reconnect): answer it once.
            self.stats.duplicate_requests += 1
            return []
        out: list[Match] = []
        item = self._windows.open(req, key, now_ns, now_ns + self.scan_wait_ns, out)
        self._waiting.add(item)
        # Every read already here joins before the item is checked: deciding after the first
        # one would turn the others into late reads when a head is not awaited.
        for name, scan in self._reads.take(req.tracking_id, now_ns).items():
            self._attach(item, self._heads[name], scan, now_ns, out, False)
        if self._window_heads:
            self._windows.pair_all(now_ns, out, {item.number: item})
        else:
            self._check(item, now_ns, out)
        if not item.decided:
            if self.scan_wait_ns <= 0:
                self._decide(item, now_ns, out)
            else:
                self._waiting.schedule(item.deadline_ns, item)
                self._check(item, now_ns, out)
        return out

    def on_scan(self, scan: ScanRead, now_ns: int) -> list[Match]:
        """A read from a scanner head: the matches it makes ready."""
        out: list[Match] = []
        self._windows.note_time(now_ns)
        self._reads.expire(now_ns)
        head = self._book.get(scan.scanner)
        if scan.codes:
            head.stats.reads += 1
        else:
            head.stats.noreads += 1
        tracking_id = scan.tracking_id
        if tracking_id is None:
            self._windows.add_read(head, scan, now_ns, out)
            return out
        items = self._waiting.with_id(tracking_id)
        if items:
            for item in items:
                if head.name not in item.reads:
                    self._attach(item, head, scan, now_ns, out, True)
                    return out
        recent = self._recent.get(tracking_id)
        if recent is not None:
            seq, decided_ns, heads = recent
            if head.name not in heads and now_ns - decided_ns <= max(
                self.scan_wait_ns, self.merge_window_ns
            ):
                self._book.late(head, tracking_id, seq, now_ns)
                return out
        self._reads.put(head.name, scan, tracking_id)
        return out

    def next_deadline_ns(self) -> int | None:
        """When `expire` has work next: a wait or merge deadline, a window closing, or a
        read without tracking id that no request can claim any more."""
        best = self._waiting.next_due_ns()
        if self._window_heads:
            window = self._windows.next_deadline_ns()
            if window is not None and (best is None or window < best):
                best = window
            self._windows.arm(best)  # called much later than this: the daemon stalled
        return best

    def expire(self, now_ns: int) -> list[Match]:
        """Everything due by now: requests whose wait or merge window ran out, windows that
        closed, reads that can no longer find an item."""
        out: list[Match] = []
        self._windows.note_time(now_ns)
        waiting = self._waiting
        while (item := waiting.pop_due(now_ns)) is not None:
            self._decide(item, now_ns, out)
        self._windows.close_windows(now_ns, out)
        if self._window_heads:
            self._windows.pair_all(now_ns, out)
        self._reads.expire(now_ns)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Matching figures for P/stats (`tracker`)."""
        s = self.stats
        return {
            "waiting": self.waiting,
            "pending_scans": self.pending_scans,
            "timeouts": s.timeouts,
            "scans_unmatched": s.scans_unmatched,
            "duplicate_requests": s.duplicate_requests,
            "matched": s.matched,
            "window_matched": s.window_matched,
            "reads_orphaned": s.reads_orphaned,
            "reads_late": s.reads_late,
            "head_misses": s.head_misses,
            "requests_within_window": s.requests_within_window,
            "reads_ambiguous": s.reads_ambiguous,
        }

    # --- the item's state -----------------------------------------------------------------

    def _attach(
        self, item: Item, head: Head, scan: ScanRead, now_ns: int, out: list[Match], check: bool
    ) -> None:
        """Join a read to its item; `check` False leaves the decision to the caller (more
        reads of the same moment to join first)."""
        head.stats.consecutive_misses = 0
        if item.decided:
            self._book.late(head, item.req.tracking_id, item.req.seq, now_ns)
            return
        if head.name in item.reads:
            self.stats.scans_replaced += 1  # a head that sent twice for one item: first wins
            return
        item.reads[head.name] = scan
        item.done.add(head.name)
        head.stats.matched += 1
        if item.tunnel is None:
            item.tunnel = head.stats.tunnel
            item.merge_deadline_ns = now_ns + self.merge_window_ns
            self._waiting.schedule(item.merge_deadline_ns, item)
        if check:
            self._check(item, now_ns, out)

    def _check(self, item: Item, now_ns: int, out: list[Match]) -> None:
        """Decide the item if every head it waits for is done with it."""
        if item.decided:
            return
        if item.tunnel is None:
            # Nothing read yet: when only window heads are awaited and all let their window
            # close, stop waiting.
            if self._book.only_windows_left(item.done):
                self._decide(item, now_ns, out)
            return
        awaited = self._book.awaited
        for head in self._tunnels[item.tunnel]:
            if head.name not in item.done and awaited(head):
                return
        self._decide(item, now_ns, out)

    def _decide(self, item: Item, now_ns: int, out: list[Match]) -> None:
        item.decided = True
        self._waiting.remove(item)
        req = item.req
        tunnel = item.tunnel
        if tunnel is None and len(self._tunnels) == 1:
            tunnel = next(iter(self._tunnels))  # one tunnel: its heads all missed the item
        if tunnel is not None:
            for head in self._tunnels[tunnel]:
                if head.name not in item.reads:
                    self._book.missed(head, req.tracking_id, req.seq, now_ns)
        self._recent[req.tracking_id] = (req.seq, now_ns, tuple(item.reads))
        if not item.reads:
            self.stats.timeouts += 1
            out.append(Match(req, None))
            return
        self.stats.matched += 1
        heads = self._heads
        reads = tuple(sorted(item.reads.values(), key=lambda r: heads[r.scanner].order))
        codes: dict[str, None] = {}
        for read in reads:
            for code in read.codes:
                codes.setdefault(code, None)
        merged = ScanRead(
            tunnel or reads[0].scanner,
            req.tracking_id,
            tuple(codes),
            min(r.received_ns for r in reads),
        )
        out.append(Match(req, merged, reads))
