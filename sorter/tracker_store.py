"""What the tracker holds while an item waits, and what it hands back.

- `WaitingItems`: the requests waiting for their reads, by (tracking_id, seq) and by
  tracking id, and one heap of their deadlines, so waiting for one item never delays
  another;
- `ReadsById`: reads that name a tracking id no request has claimed yet (reads may come
  before their request), kept for the scan TTL;
- `Match`: a request ready to be decided, with its merged read.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from sorter.ports import ScanRead, SortRequest
from sorter.tracker_heads import TrackerStats

__all__ = ["Item", "Match", "ReadsById", "WaitingItems"]


@dataclass(frozen=True, slots=True)
class Match:
    """A request ready to be decided.

    `scan` is the merged read of its tunnel's heads (codes deduplicated, head order), None
    when no head read it in time (reason timeout); `reads` are the heads' own reads.
    """

    request: SortRequest
    scan: ScanRead | None
    reads: tuple[ScanRead, ...] = ()


@dataclass(slots=True, eq=False)
class Item:
    req: SortRequest
    key: tuple[int, int]
    number: int  # position in the request timeline, counts up by one per request
    t_ns: int  # the request's time (when it was read off the PLC)
    deadline_ns: int
    # The PLC wrote it within [lo_ns, t_ns] (sorter/tracker_window.py): lo_ns is when the
    # poll before the one that saw it went out.
    lo_ns: int = 0
    tunnel: str | None = None  # the tunnel of its first read
    reads: dict[str, ScanRead] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)  # heads that read it or cannot anymore
    merge_deadline_ns: int | None = None
    decided: bool = False

    def due_ns(self) -> int:
        """When it is decided at the latest: its wait or its merge window ran out."""
        if self.merge_deadline_ns is None:
            return self.deadline_ns
        return min(self.deadline_ns, self.merge_deadline_ns)


class WaitingItems:
    """The requests not decided yet, and when each must be."""

    __slots__ = ("_by_id", "_by_key", "_deadlines", "_tiebreak")

    def __init__(self) -> None:
        self._by_key: dict[tuple[int, int], Item] = {}
        self._by_id: dict[int, deque[Item]] = {}
        self._deadlines: list[tuple[int, int, Item]] = []
        self._tiebreak = itertools.count()

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._by_key

    def keys(self) -> set[tuple[int, int]]:
        return set(self._by_key)

    def add(self, item: Item) -> None:
        self._by_key[item.key] = item
        self._by_id.setdefault(item.req.tracking_id, deque()).append(item)

    def remove(self, item: Item) -> None:
        self._by_key.pop(item.key, None)
        same_id = self._by_id.get(item.req.tracking_id)
        if same_id is not None:
            same_id.remove(item)
            if not same_id:
                del self._by_id[item.req.tracking_id]

    def with_id(self, tracking_id: int) -> deque[Item] | None:
        """The waiting items of a tracking id, oldest first (a recirculated item may still
        wait under its previous seq)."""
        return self._by_id.get(tracking_id)

    def schedule(self, when_ns: int, item: Item) -> None:
        """Look at the item again at `when_ns` (its wait or its merge deadline)."""
        heapq.heappush(self._deadlines, (when_ns, next(self._tiebreak), item))

    def next_due_ns(self) -> int | None:
        """The earliest deadline of an item still waiting; entries of items decided, or
        superseded by an earlier deadline, are dropped on the way."""
        deadlines = self._deadlines
        while deadlines:
            when, _, item = deadlines[0]
            if not item.decided and item.due_ns() <= when:
                return when
            heapq.heappop(deadlines)
        return None

    def pop_due(self, now_ns: int) -> Item | None:
        """The next item whose deadline has come by `now_ns`, None when there is none."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now_ns:
            _, _, item = heapq.heappop(deadlines)
            if not item.decided and item.due_ns() <= now_ns:
                return item
        return None


_NO_READS: Mapping[str, ScanRead] = {}  # what `take` returns for an id nobody read


class ReadsById:
    """Reads by tracking id waiting for their request: id -> head -> read.

    A read waits `ttl_ns` at most: one older than that is not this pass's (a late or
    repeated read of the item's previous pass, when it recirculated) and must not decide
    this one. At most `max_reads` wait; beyond that the oldest is dropped.
    """

    __slots__ = ("_order", "_reads", "max_reads", "stats", "ttl_ns")

    def __init__(self, ttl_ns: int, max_reads: int, stats: TrackerStats) -> None:
        self.ttl_ns = ttl_ns
        self.max_reads = max_reads
        self.stats = stats
        self._reads: dict[int, dict[str, ScanRead]] = {}
        self._order: deque[tuple[int, int, str]] = deque()  # (received_ns, id, head)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, tracking_id: int) -> bool:
        return tracking_id in self._reads

    def put(self, head: str, scan: ScanRead, tracking_id: int) -> None:
        per_head = self._reads.setdefault(tracking_id, {})
        if head in per_head:
            self.stats.scans_replaced += 1
        per_head[head] = scan
        self._order.append((scan.received_ns, tracking_id, head))

    def take(self, tracking_id: int, now_ns: int) -> Mapping[str, ScanRead]:
        """The reads of this id still within their TTL, by head; they wait no more."""
        self.expire(now_ns)
        return self._reads.pop(tracking_id, _NO_READS)

    def expire(self, now_ns: int) -> None:
        limit = now_ns - self.ttl_ns
        order = self._order
        while order and (order[0][0] <= limit or len(order) > self.max_reads):
            received_ns, tid, name = order.popleft()
            per_head = self._reads.get(tid)
            if per_head is None:
                continue
            scan = per_head.get(name)
            if scan is not None and scan.received_ns == received_ns:
                del per_head[name]
                if not per_head:
                    del self._reads[tid]
                self.stats.scans_unmatched += 1

    def clear(self) -> None:
        """Forget every read waiting (their ids may now be a new parcel's); counted as
        unmatched."""
        self.stats.scans_unmatched += sum(len(per_head) for per_head in self._reads.values())
        self._reads.clear()
        self._order.clear()
