"""The tracker's heads: the tunnel of each, whether an item waits for it, and its counts.

A head is awaited while it is alive (the daemon's health watch says so) and has not missed
`miss_limit` items in a row: one dead head costs a few items one merge window each, not
every item. What each head did with the items (read, missed, late, orphaned) is counted
here for P/stats and logged at most once per kind and head per LOG_INTERVAL_NS.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from sorter.ports import ScanRead

__all__ = ["LOG_INTERVAL_NS", "Head", "HeadBook", "HeadStats", "TrackerStats"]

log = structlog.get_logger("sorter.tracker")

LOG_INTERVAL_NS = 10_000_000_000  # one line per kind and head per 10 s at most


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
    # Reads without tracking id that more than one request could hold, given how late the
    # daemon may have taken the times (a stall, a slow PLC poll): dropped, never paired
    # with a neighbour (sorter/tracker_window.py). Counted in reads_orphaned too.
    reads_ambiguous: int = 0


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
class Head:
    name: str
    stats: HeadStats
    order: int  # merge order within its tunnel (and across heads: the order named)
    cursor: int = -1  # number of the last request this (window) head is done with
    # The time (t_ns) of the last request it was done with without a read, since its last
    # read was paired: its next read may still be that request's (sorter/tracker_window.py).
    skipped_ns: int | None = None
    pending: deque[ScanRead] = field(default_factory=deque)  # window reads waiting


class HeadBook:
    """The heads by name and by tunnel, and the accounting of what each did with items.

    `by_name`, `tunnels` and `window_heads` are read by the tracker and the window pairing
    on every event; only this class adds to them.
    """

    __slots__ = ("_logged", "by_name", "miss_limit", "stats", "tunnels", "window_heads")

    def __init__(
        self, stats: TrackerStats, miss_limit: int, heads: Mapping[str, str] | None = None
    ) -> None:
        """`heads` maps each scanner name to its tunnel name, in merge order; a head not
        named there is its own tunnel when it first reads."""
        if miss_limit < 1:
            raise ValueError("head_miss_limit must be >= 1")
        self.stats = stats
        self.miss_limit = miss_limit
        self.by_name: dict[str, Head] = {}
        self.tunnels: dict[str, list[Head]] = {}
        self.window_heads: list[Head] = []
        # (event, head) -> (when last logged, the head's total then)
        self._logged: dict[tuple[str, str], tuple[int, int]] = {}
        for name, tunnel in (heads or {}).items():
            self.get(name, tunnel)

    def get(self, name: str, tunnel: str | None = None) -> Head:
        """The head of that name, added (to `tunnel`, or a tunnel of its own) if new."""
        head = self.by_name.get(name)
        if head is None:
            tunnel = tunnel or name
            head = Head(name, HeadStats(tunnel), len(self.by_name))
            self.by_name[name] = head
            self.tunnels.setdefault(tunnel, []).append(head)
        return head

    def reads_by_window(self, head: Head) -> None:
        """The head sent a read without tracking id: it is paired by window from now on."""
        if not head.stats.window:
            head.stats.window = True
            self.window_heads.append(head)

    def set_alive(self, name: str, alive: bool) -> None:
        head = self.get(name)
        if alive and not head.stats.alive:
            head.stats.consecutive_misses = 0  # back: wait for it again
        head.stats.alive = alive

    def awaited(self, head: Head) -> bool:
        s = head.stats
        return s.alive and s.consecutive_misses < self.miss_limit

    def only_windows_left(self, done: set[str]) -> bool:
        """Whether every awaited head reads by window and is in `done` (let the item's
        window close): only window heads can tell for sure that they sent nothing."""
        awaited = [h for h in self.by_name.values() if self.awaited(h)]
        return bool(awaited) and all(h.stats.window and h.name in done for h in awaited)

    # --- accounting -----------------------------------------------------------------------

    def missed(self, head: Head, tracking_id: int, seq: int, now_ns: int) -> None:
        head.stats.missed += 1
        head.stats.consecutive_misses += 1
        self.stats.head_misses += 1
        self._log(
            "scanner head sent no read for an item",
            head,
            head.stats.missed,
            now_ns,
            tracking_id=tracking_id,
            seq=seq,
        )

    def late(self, head: Head, tracking_id: int, seq: int, now_ns: int) -> None:
        head.stats.late += 1
        head.stats.consecutive_misses = 0  # slow, not dead
        self.stats.reads_late += 1
        self._log(
            "scanner read came after its item was decided",
            head,
            head.stats.late,
            now_ns,
            tracking_id=tracking_id,
            seq=seq,
        )

    def orphan(self, head: Head, scan: ScanRead, now_ns: int) -> None:
        head.stats.orphans += 1
        self.stats.reads_orphaned += 1
        self._log(
            "scanner read matched no item within the window",
            head,
            head.stats.orphans,
            now_ns,
            codes=list(scan.codes),
        )

    def _log(self, event: str, head: Head, total: int, now_ns: int, **detail: Any) -> None:
        """At most one line per kind and head per LOG_INTERVAL_NS, with the count since."""
        key = (event, head.name)
        last = self._logged.get(key)
        if last is not None and now_ns - last[0] < LOG_INTERVAL_NS:
            return
        since = total - (last[1] if last is not None else 0)
        self._logged[key] = (now_ns, total)
        log.warning(event, head=head.name, tunnel=head.stats.tunnel, since_last_line=since,
                    total=total, **detail)  # fmt: skip
