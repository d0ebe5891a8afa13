"""Joins each sort request with the reads of the same item from the heads of its tunnel.

Pure logic with the time passed in, so the pipeline drives it from the event loop and the
tests drive it with made-up clocks. Deadlines sit in one heap, so waiting for one item never
delays another.

Two ways a read finds its item:
- **by tracking id** (`index` heads): the read names the PLC's tracking id; it joins the
  waiting request of that id, or waits up to `scan_ttl_ns` for it (reads may come first).
- **by window** (heads whose telegrams carry no tracking id): reads and requests both come
  in belt order. Per head, the oldest unmatched read is paired with the oldest request that
  head has not yet read, when the read's time lies within `[t - before, t + after]` of the
  request's time t. A read older than that window is an orphan (no item for it); a read
  newer than the window means the head sent nothing for that request (a missing read), and
  the next request is tried. So a missing read never shifts the next read onto the wrong
  item, as long as the window is narrower than the spacing of items: with items S apart
  and reads within [dmin, dmax] of their request, any `before` in [-dmin, S - dmax) and
  `after` in [dmax, S + dmin) pair every read with its own item (docs/tunnels.md). The
  times are the daemon's, so a stall of its event loop shifts them: a read handled more
  than `S - before` late goes to the next item; docs/tunnels.md says how to choose.

Heads are grouped into tunnels; the reads of all heads of an item's tunnel are merged (codes
deduplicated, in head order) before the decision. The request is decided as soon as every
awaited head of its tunnel has either read it or, for a window head, let its window close;
at the latest `merge_window_ns` after its first read, or `scan_wait_ns` after the request
(reason timeout when no head read it at all). A head is awaited while it is alive (the
daemon's health watch says so) and has not missed `head_miss_limit` items in a row: one
dead head costs a few items one merge window each, not every item.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from sorter.ports import ScanRead, SortRequest

log = structlog.get_logger(__name__)

DEFAULT_WINDOW_BEFORE_NS = 50_000_000
DEFAULT_WINDOW_AFTER_NS = 50_000_000
DEFAULT_MERGE_WINDOW_NS = 50_000_000
DEFAULT_HEAD_MISS_LIMIT = 3
LOG_INTERVAL_NS = 10_000_000_000  # one line per kind and head per 10 s at most


@dataclass(frozen=True, slots=True)
class Match:
    """A request ready to be decided.

    `scan` is the merged read of its tunnel's heads (codes deduplicated, head order), None
    when no head read it in time (reason timeout); `reads` are the heads' own reads.
    """

    request: SortRequest
    scan: ScanRead | None
    reads: tuple[ScanRead, ...] = ()


@dataclass(slots=True)
class TrackerStats:
    matched: int = 0  # requests decided with at least one read
    timeouts: int = 0  # requests decided with none
    scans_unmatched: int = 0  # id reads no request claimed within the scan TTL
    scans_replaced: int = 0  # a newer read of the same head and id before a request took it
    duplicate_requests: int = 0
    window_matched: int = 0  # reads without tracking id paired with their item
    reads_orphaned: int = 0  # reads without tracking id that no request's window held
    reads_late: int = 0  # reads for an item already decided
    head_misses: int = 0  # (head, item) pairs: an item decided without that head's read
    # Requests closer to the previous one than the window is wide, on a line with window
    # heads: their reads may be paired by order only (a batch after a stall or an outage,
    # or items closer than the window allows: docs/tunnels.md).
    requests_within_window: int = 0


@dataclass(slots=True)
class HeadStats:
    """Per head counters, for P/stats `scanners`."""

    tunnel: str
    reads: int = 0  # telegrams with at least one code
    noreads: int = 0  # telegrams with no code
    matched: int = 0  # telegrams merged into an item's decision
    late: int = 0  # ... that came after their item was decided
    orphans: int = 0  # telegrams without tracking id no item was found for
    missed: int = 0  # items of its tunnel decided without a telegram from this head
    window: bool = False  # sends reads without tracking id (matched by window)
    alive: bool = True  # set by the daemon's health watch
    consecutive_misses: int = 0

    def snapshot(self) -> dict[str, Any]:
        telegrams = self.reads + self.noreads
        return {
            "tunnel": self.tunnel,
            "reads": self.reads,
            "noreads": self.noreads,
            "read_rate": round(self.reads / telegrams, 4) if telegrams else None,
            "matched": self.matched,
            "late": self.late,
            "orphans": self.orphans,
            "missed": self.missed,
            "matching": "window" if self.window else "tracking_id",
            "alive": self.alive,
        }


@dataclass(slots=True)
class _Head:
    name: str
    stats: HeadStats
    order: int
    cursor: int = -1  # number of the last request this (window) head is done with
    pending: deque[ScanRead] = field(default_factory=deque)  # window reads waiting


@dataclass(slots=True, eq=False)
class _Item:
    req: SortRequest
    key: tuple[int, int]
    number: int  # position in the request timeline, counts up by one per request
    t_ns: int  # the request's time (when it was read off the PLC)
    deadline_ns: int
    tunnel: str | None = None  # the tunnel of its first read
    reads: dict[str, ScanRead] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)  # heads that read it or cannot anymore
    merge_deadline_ns: int | None = None
    decided: bool = False
    decided_ns: int = 0


class Tracker:
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
    ) -> None:
        """`heads` maps each scanner name to its tunnel name, in merge order; a head not
        named there is its own tunnel. `max_items` bounds the requests remembered to drop
        duplicates (re-reads after a reconnect are within one 64-slot ring), the reads
        waiting for their request and the recent decisions kept to spot late reads."""
        if min(window_before_ns, window_after_ns, merge_window_ns) < 0:
            raise ValueError("windows must be >= 0")
        if head_miss_limit < 1:
            raise ValueError("head_miss_limit must be >= 1")
        self.scan_wait_ns = scan_wait_ns
        self.scan_ttl_ns = scan_ttl_ns
        self.max_items = max_items
        self.window_before_ns = window_before_ns
        self.window_after_ns = window_after_ns
        self.merge_window_ns = merge_window_ns
        self.head_miss_limit = head_miss_limit
        self.stats = TrackerStats()
        self._heads: dict[str, _Head] = {}
        self._tunnels: dict[str, list[_Head]] = {}
        self._window_heads: list[_Head] = []
        for name, tunnel in (heads or {}).items():
            self._head(name, tunnel)
        # Reads by tracking id waiting for their request: id -> head -> read.
        self._scans: dict[int, dict[str, ScanRead]] = {}
        self._scan_order: deque[tuple[int, int, str]] = deque()  # (received_ns, id, head)
        self._waiting: dict[tuple[int, int], _Item] = {}
        self._waiting_by_id: dict[int, deque[_Item]] = {}
        self._deadlines: list[tuple[int, int, _Item]] = []
        self._tiebreak = itertools.count()
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._timeline: deque[_Item] = deque()  # requests whose window is still open
        self._numbers = itertools.count()
        self._last_t_ns = 0
        self._numbers_issued = False  # a request was seen (so _last_t_ns means something)
        self._closest_log_ns: int | None = None
        self._recent: OrderedDict[int, _Item] = OrderedDict()  # decided, by tracking id
        self._logged_ns: dict[tuple[str, str], int] = {}
        self._logged_counts: dict[tuple[str, str], int] = {}

    # --- heads ----------------------------------------------------------------------------

    def _head(self, name: str, tunnel: str | None = None) -> _Head:
        head = self._heads.get(name)
        if head is None:
            tunnel = tunnel or name
            head = _Head(name, HeadStats(tunnel), len(self._heads))
            self._heads[name] = head
            self._tunnels.setdefault(tunnel, []).append(head)
        return head

    @property
    def heads(self) -> dict[str, HeadStats]:
        return {name: head.stats for name, head in self._heads.items()}

    def set_head_alive(self, name: str, alive: bool) -> None:
        """The daemon's health watch: a head offline (link down, silent) is not waited for.
        Items already waiting for it are decided at their merge deadline at the latest."""
        head = self._head(name)
        if alive and not head.stats.alive:
            head.stats.consecutive_misses = 0  # back: wait for it again
        head.stats.alive = alive

    def _awaited(self, head: _Head) -> bool:
        s = head.stats
        return s.alive and s.consecutive_misses < self.head_miss_limit

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def pending_scans(self) -> int:
        return len(self._scan_order) + sum(len(h.pending) for h in self._window_heads)

    def is_waiting(self, tracking_id: int, seq: int) -> bool:
        """Whether this request waits for its reads (not decided, not a duplicate)."""
        return (tracking_id, seq) in self._waiting

    def forget_requests(self) -> None:
        """Forget the (tracking_id, seq) pairs of requests already decided: after a PLC
        restart they may come again as new items. Requests still waiting stay known."""
        self._seen = OrderedDict((key, None) for key in self._seen if key in self._waiting)
        # Reads kept for requests to come, and the items decided: their ids may now be a
        # new parcel's.
        self.stats.scans_unmatched += sum(len(per_head) for per_head in self._scans.values())
        self._scans.clear()
        self._scan_order.clear()
        self._recent.clear()

    # --- events ---------------------------------------------------------------------------

    def on_request(self, req: SortRequest, now_ns: int) -> list[Match]:
        """A new sort request: the matches it makes ready (usually itself, when its reads
        are all here already, or nothing while it waits)."""
        key = (req.tracking_id, req.seq)
        if key in self._seen:
            # The same message seen twice (PLC re-sent after a reconnect): answer it once.
            self.stats.duplicate_requests += 1
            return []
        self._seen[key] = None
        if len(self._seen) > self.max_items:
            self._seen.popitem(last=False)
        out: list[Match] = []
        self._close_windows(now_ns, out)
        # Requests come in belt order; a clock that steps back must not reorder them.
        t_ns = max(req.received_ns or now_ns, self._last_t_ns)
        if (
            self._window_heads
            and self._numbers_issued
            and t_ns - self._last_t_ns < self.window_before_ns + self.window_after_ns
        ):
            self.stats.requests_within_window += 1
            if self._closest_log_ns is None or now_ns - self._closest_log_ns >= LOG_INTERVAL_NS:
                self._closest_log_ns = now_ns
                log.warning(
                    "requests closer than the window: reads without tracking id may be "
                    "paired by order only",
                    gap_ms=round((t_ns - self._last_t_ns) / 1e6, 1),
                    window_ms=(self.window_before_ns + self.window_after_ns) / 1e6,
                    total=self.stats.requests_within_window,
                )
        self._last_t_ns = t_ns
        self._numbers_issued = True
        item = _Item(req, key, next(self._numbers), t_ns, now_ns + self.scan_wait_ns)
        self._waiting[key] = item
        self._waiting_by_id.setdefault(req.tracking_id, deque()).append(item)
        self._timeline.append(item)
        while len(self._timeline) > self.max_items:
            self._close(self._timeline.popleft(), now_ns, out)
        # Every read already here joins before the item is checked: deciding after the first
        # one would turn the others into late reads when a head is not awaited.
        touched = {item.number: item}
        # Reads older than scan_ttl are not this pass's: a late or repeated read of the
        # item's previous pass (it recirculated) must not decide this one.
        self._expire_scans(now_ns)
        for name, scan in self._scans.pop(req.tracking_id, {}).items():
            self._attach(item, self._heads[name], scan, now_ns, out, check=False)
        self._pair_windows(now_ns, out, touched)
        if not item.decided:
            if self.scan_wait_ns <= 0:
                self._decide(item, now_ns, out)
            else:
                self._push(item.deadline_ns, item)
                self._check(item, now_ns, out)
        return out

    def on_scan(self, scan: ScanRead, now_ns: int) -> list[Match]:
        """A read from a scanner head: the matches it makes ready."""
        out: list[Match] = []
        self._expire_scans(now_ns)
        head = self._head(scan.scanner)
        if scan.codes:
            head.stats.reads += 1
        else:
            head.stats.noreads += 1
        if scan.tracking_id is None:
            if not head.stats.window:
                head.stats.window = True
                self._window_heads.append(head)
            self._close_windows(now_ns, out)
            head.pending.append(scan)
            if len(head.pending) > self.max_items:
                self._orphan(head, head.pending.popleft(), now_ns)
            self._pair_window(head, now_ns, out)
            return out
        items = self._waiting_by_id.get(scan.tracking_id)
        if items:
            for item in items:
                if head.name not in item.reads:
                    self._attach(item, head, scan, now_ns, out)
                    return out
        recent = self._recent.get(scan.tracking_id)
        if (
            recent is not None
            and head.name not in recent.reads
            and now_ns - recent.decided_ns <= max(self.scan_wait_ns, self.merge_window_ns)
        ):
            self._late(head, recent, now_ns)
            return out
        per_head = self._scans.setdefault(scan.tracking_id, {})
        if head.name in per_head:
            self.stats.scans_replaced += 1
        per_head[head.name] = scan
        self._scan_order.append((scan.received_ns, scan.tracking_id, head.name))
        return out

    def next_deadline_ns(self) -> int | None:
        """When `expire` has work next: a wait or merge deadline, a window closing, or a
        read without tracking id that no request can claim any more."""
        best: int | None = None
        while self._deadlines:
            when, _, item = self._deadlines[0]
            if not item.decided and self._deadline_of(item) <= when:
                best = when
                break
            heapq.heappop(self._deadlines)  # decided, or superseded by an earlier entry
        if self._window_heads:
            if self._timeline:
                close = self._timeline[0].t_ns + self.window_after_ns + 1
                best = close if best is None else min(best, close)
            for head in self._window_heads:
                if head.pending:
                    orphan = head.pending[0].received_ns + self.window_before_ns + 1
                    best = orphan if best is None else min(best, orphan)
        return best

    def expire(self, now_ns: int) -> list[Match]:
        """Everything due by now: requests whose wait or merge window ran out, windows that
        closed, reads that can no longer find an item."""
        out: list[Match] = []
        while self._deadlines and self._deadlines[0][0] <= now_ns:
            _, _, item = heapq.heappop(self._deadlines)
            if not item.decided and self._deadline_of(item) <= now_ns:
                self._decide(item, now_ns, out)
        self._close_windows(now_ns, out)
        self._pair_windows(now_ns, out)
        self._expire_scans(now_ns)
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
        }

    # --- the item's state -----------------------------------------------------------------

    def _push(self, when_ns: int, item: _Item) -> None:
        heapq.heappush(self._deadlines, (when_ns, next(self._tiebreak), item))

    def _deadline_of(self, item: _Item) -> int:
        if item.merge_deadline_ns is None:
            return item.deadline_ns
        return min(item.deadline_ns, item.merge_deadline_ns)

    def _attach(
        self,
        item: _Item,
        head: _Head,
        scan: ScanRead,
        now_ns: int,
        out: list[Match],
        *,
        check: bool = True,
    ) -> None:
        """Join a read to its item; `check=False` leaves the decision to the caller (more
        reads of the same moment to join first)."""
        head.stats.consecutive_misses = 0
        if item.decided:
            self._late(head, item, now_ns)
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
            self._push(item.merge_deadline_ns, item)
        if check:
            self._check(item, now_ns, out)

    def _check(self, item: _Item, now_ns: int, out: list[Match]) -> None:
        """Decide the item if every head it waits for is done with it."""
        if item.decided:
            return
        if item.tunnel is None:
            # Nothing read yet. Only window heads can tell for sure that they sent nothing:
            # when every awaited head is one and all let their window close, stop waiting.
            awaited = [h for h in self._heads.values() if self._awaited(h)]
            if awaited and all(h.stats.window and h.name in item.done for h in awaited):
                self._decide(item, now_ns, out)
            return
        for head in self._tunnels[item.tunnel]:
            if head.name not in item.done and self._awaited(head):
                return
        self._decide(item, now_ns, out)

    def _decide(self, item: _Item, now_ns: int, out: list[Match]) -> None:
        item.decided = True
        item.decided_ns = now_ns
        self._waiting.pop(item.key, None)
        same_id = self._waiting_by_id.get(item.req.tracking_id)
        if same_id is not None:
            same_id.remove(item)
            if not same_id:
                del self._waiting_by_id[item.req.tracking_id]
        tunnel = item.tunnel
        if tunnel is None and len(self._tunnels) == 1:
            tunnel = next(iter(self._tunnels))  # one tunnel: its heads all missed the item
        if tunnel is not None:
            for head in self._tunnels[tunnel]:
                if head.name not in item.reads:
                    self._missed(head, item, now_ns)
        self._recent[item.req.tracking_id] = item
        self._recent.move_to_end(item.req.tracking_id)
        if len(self._recent) > self.max_items:
            self._recent.popitem(last=False)
        if not item.reads:
            self.stats.timeouts += 1
            out.append(Match(item.req, None))
            return
        self.stats.matched += 1
        reads = tuple(sorted(item.reads.values(), key=lambda r: self._heads[r.scanner].order))
        codes: dict[str, None] = {}
        for read in reads:
            for code in read.codes:
                codes.setdefault(code, None)
        merged = ScanRead(
            tunnel or reads[0].scanner,
            item.req.tracking_id,
            tuple(codes),
            min(r.received_ns for r in reads),
        )
        out.append(Match(item.req, merged, reads))

    def _missed(self, head: _Head, item: _Item, now_ns: int) -> None:
        head.stats.missed += 1
        head.stats.consecutive_misses += 1
        self.stats.head_misses += 1
        self._log(
            "scanner head sent no read for an item",
            head,
            head.stats.missed,
            now_ns,
            tracking_id=item.req.tracking_id,
            seq=item.req.seq,
        )

    def _late(self, head: _Head, item: _Item, now_ns: int) -> None:
        head.stats.late += 1
        head.stats.consecutive_misses = 0  # slow, not dead
        self.stats.reads_late += 1
        self._log(
            "scanner read came after its item was decided",
            head,
            head.stats.late,
            now_ns,
            tracking_id=item.req.tracking_id,
            seq=item.req.seq,
        )

    def _orphan(self, head: _Head, scan: ScanRead, now_ns: int) -> None:
        head.stats.orphans += 1
        self.stats.reads_orphaned += 1
        self._log(
            "scanner read matched no item within the window",
            head,
            head.stats.orphans,
            now_ns,
            codes=list(scan.codes),
        )

    def _log(self, event: str, head: _Head, total: int, now_ns: int, **detail: Any) -> None:
        """At most one line per kind and head per LOG_INTERVAL_NS, with the count since."""
        key = (event, head.name)
        last = self._logged_ns.get(key)
        if last is not None and now_ns - last < LOG_INTERVAL_NS:
            return
        since = total - self._logged_counts.get(key, 0)
        self._logged_ns[key] = now_ns
        self._logged_counts[key] = total
        log.warning(event, head=head.name, tunnel=head.stats.tunnel, since_last_line=since,
                    total=total, **detail)  # fmt: skip

    # --- window matching ------------------------------------------------------------------

    def _pair_windows(
        self, now_ns: int, out: list[Match], touched: dict[int, _Item] | None = None
    ) -> None:
        """Pair the waiting reads of every window head, then check the items they joined:
        reads of several heads that were all waiting for the same request join it before
        it is decided (`touched` adds items to check, by number)."""
        touched = {} if touched is None else touched
        for head in self._window_heads:
            self._pair_window(head, now_ns, out, touched)
        for number in sorted(touched):
            self._check(touched[number], now_ns, out)

    def _pair_window(
        self,
        head: _Head,
        now_ns: int,
        out: list[Match],
        touched: dict[int, _Item] | None = None,
    ) -> None:
        """Pair the head's oldest reads with the oldest requests it has not read (module
        docstring); stops when a read has to wait for its request. With `touched`, the
        items joined are collected there for the caller to check, not checked here."""
        pending = head.pending
        timeline = self._timeline
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
                if read.received_ns + self.window_before_ns < now_ns:
                    pending.popleft()
                    self._orphan(head, read, now_ns)
                    continue
                return
            if read.received_ns < item.t_ns - self.window_before_ns:
                pending.popleft()  # older than every request's window it could still be in
                self._orphan(head, read, now_ns)
                continue
            head.cursor = item.number
            if read.received_ns > item.t_ns + self.window_after_ns:
                # It sent nothing for this item.
                self._head_done(head, item, now_ns, out, check=touched is None)
            else:
                pending.popleft()
                self.stats.window_matched += 1
                self._attach(item, head, read, now_ns, out, check=touched is None)
            if touched is not None and not item.decided:
                touched[item.number] = item

    def _head_done(
        self, head: _Head, item: _Item, now_ns: int, out: list[Match], *, check: bool = True
    ) -> None:
        if not item.decided:
            item.done.add(head.name)
            if check:
                self._check(item, now_ns, out)

    def _close_windows(self, now_ns: int, out: list[Match]) -> None:
        """Requests whose window closed: no read can be paired with them any more."""
        timeline = self._timeline
        limit = now_ns - self.window_after_ns
        while timeline and timeline[0].t_ns < limit:
            self._close(timeline.popleft(), now_ns, out)

    def _close(self, item: _Item, now_ns: int, out: list[Match]) -> None:
        for head in self._window_heads:
            # Its reads up to now were paired on arrival, so it has nothing for this item.
            if head.cursor < item.number:
                head.cursor = item.number
                self._head_done(head, item, now_ns, out)

    # --- reads waiting for their request by tracking id ------------------------------------

    def _expire_scans(self, now_ns: int) -> None:
        limit = now_ns - self.scan_ttl_ns
        order = self._scan_order
        while order and (order[0][0] <= limit or len(order) > self.max_items):
            received_ns, tid, name = order.popleft()
            per_head = self._scans.get(tid)
            if per_head is None:
                continue
            scan = per_head.get(name)
            if scan is not None and scan.received_ns == received_ns:
                del per_head[name]
                if not per_head:
                    del self._scans[tid]
                self.stats.scans_unmatched += 1


def tunnels_of(heads: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """Scanner name -> tunnel name, a scanner without a tunnel being its own."""
    return {name: tunnel or name for name, tunnel in heads}
