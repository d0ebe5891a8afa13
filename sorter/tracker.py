"""Joins each sort request with the scan of the same item, whichever arrives first.

Pure logic with the time passed in, so the pipeline drives it from the event loop and the
tests drive it with made-up clocks. A request waits at most `scan_wait_ns` for its scan;
deadlines sit in one heap, so waiting for one item never delays another.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass

from sorter.events import ScanRead, SortRequest


@dataclass(frozen=True, slots=True)
class Match:
    """A request ready to be decided; scan is None when its wait timed out."""

    request: SortRequest
    scan: ScanRead | None


@dataclass(slots=True)
class TrackerStats:
    matched: int = 0
    timeouts: int = 0
    scans_unmatched: int = 0  # scans no request claimed within the scan TTL
    scans_replaced: int = 0  # a newer scan for the same id before any request took the first
    duplicate_requests: int = 0


class Tracker:
    def __init__(self, scan_wait_ns: int, scan_ttl_ns: int, max_items: int = 20_000) -> None:
        """`max_items` bounds the requests remembered to drop duplicates (re-reads after a
        reconnect are within one 64-slot ring) and the scans waiting for their request."""
        self.scan_wait_ns = scan_wait_ns
        self.scan_ttl_ns = scan_ttl_ns
        self.max_items = max_items
        self.stats = TrackerStats()
        self._scans: dict[int, ScanRead] = {}
        self._scan_order: deque[tuple[int, int]] = deque()  # (received_ns, tracking_id)
        self._waiting: OrderedDict[tuple[int, int], SortRequest] = OrderedDict()
        self._waiting_by_id: dict[int, deque[tuple[int, int]]] = {}
        self._deadlines: list[tuple[int, int, int]] = []  # (deadline_ns, tracking_id, seq)
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def pending_scans(self) -> int:
        return len(self._scans)

    def on_request(self, req: SortRequest, now_ns: int) -> Match | None:
        """A new sort request: a Match when its scan is already here, else None (it waits)."""
        key = (req.tracking_id, req.seq)
        if key in self._seen:
            # The same message seen twice (PLC re-sent after a reconnect): answer it once.
            self.stats.duplicate_requests += 1
            return None
        self._seen[key] = None
        if len(self._seen) > self.max_items:
            self._seen.popitem(last=False)
        scan = self._scans.pop(req.tracking_id, None)
        if scan is not None:
            self.stats.matched += 1
            return Match(req, scan)
        if self.scan_wait_ns <= 0:
            self.stats.timeouts += 1
            return Match(req, None)
        self._waiting[key] = req
        self._waiting_by_id.setdefault(req.tracking_id, deque()).append(key)
        heapq.heappush(self._deadlines, (now_ns + self.scan_wait_ns, req.tracking_id, req.seq))
        return None

    def on_scan(self, scan: ScanRead, now_ns: int) -> Match | None:
        """A read from a scanner: a Match when a request was waiting for it, else None."""
        self._expire_scans(now_ns)
        if scan.tracking_id is None:
            return None  # window matching for id-less presets lives elsewhere
        keys = self._waiting_by_id.get(scan.tracking_id)
        if keys:
            key = keys.popleft()
            if not keys:
                del self._waiting_by_id[scan.tracking_id]
            req = self._waiting.pop(key)
            self.stats.matched += 1
            return Match(req, scan)
        if scan.tracking_id in self._scans:
            self.stats.scans_replaced += 1
        self._scans[scan.tracking_id] = scan
        self._scan_order.append((scan.received_ns, scan.tracking_id))
        return None

    def next_deadline_ns(self) -> int | None:
        while self._deadlines:
            _, tid, seq = self._deadlines[0]
            if (tid, seq) in self._waiting:
                return self._deadlines[0][0]
            heapq.heappop(self._deadlines)  # already matched
        return None

    def expire(self, now_ns: int) -> list[Match]:
        """Requests whose wait ran out: decide them with reason timeout."""
        out: list[Match] = []
        while self._deadlines and self._deadlines[0][0] <= now_ns:
            _, tid, seq = heapq.heappop(self._deadlines)
            req = self._waiting.pop((tid, seq), None)
            if req is None:
                continue
            keys = self._waiting_by_id.get(tid)
            if keys is not None:
                keys.remove((tid, seq))
                if not keys:
                    del self._waiting_by_id[tid]
            self.stats.timeouts += 1
            out.append(Match(req, None))
        self._expire_scans(now_ns)
        return out

    def _expire_scans(self, now_ns: int) -> None:
        limit = now_ns - self.scan_ttl_ns
        order = self._scan_order
        while order and (order[0][0] <= limit or len(order) > self.max_items):
            received_ns, tid = order.popleft()
            scan = self._scans.get(tid)
            if scan is not None and scan.received_ns == received_ns:
                del self._scans[tid]
                self.stats.scans_unmatched += 1
