"""What the line core remembers of items it handled, each in a `BoundedMap`.

Bounds keep a process that runs for years flat in memory. A confirmation comes within
minutes of its decision, and an item is on the belt for minutes: `MAX_REMEMBERED` is hours
at 40,000 items/h. Re-read requests and confirmations come from one 64-slot ring, so
`MAX_ANSWERED` is 64 rings' worth. Queries of a tracking id's last decision reach back
`MAX_QUERYABLE` decisions (about 10 MB of messages at most).
"""

from __future__ import annotations

from typing import Any

from sorter.bounded import BoundedMap
from sorter.line_events import Assignment
from sorter.ports import Recovered

__all__ = ["MAX_ANSWERED", "MAX_QUERYABLE", "MAX_REMEMBERED", "LineMemory"]

MAX_REMEMBERED = 100_000  # decisions awaiting confirmation, recirculation counts
MAX_QUERYABLE = 10_000
MAX_ANSWERED = 4096

Pair = tuple[int, int]  # (tracking_id, seq): an item's identity on the sorter


class LineMemory:
    """The five things the line core remembers; their keys are (tracking_id, seq) pairs
    or tracking ids."""

    __slots__ = ("answered", "assigned", "last_decision", "recirculations", "results_seen")

    def __init__(self) -> None:
        # Replies given, to answer a re-read request the same way without deciding again.
        self.answered: BoundedMap[Pair, int] = BoundedMap(MAX_ANSWERED)
        # Results recorded, to drop a re-read confirmation.
        self.results_seen: BoundedMap[Pair, None] = BoundedMap(MAX_ANSWERED)
        # The decision behind each item awaiting confirmation, for its result.
        self.assigned: BoundedMap[Pair, Assignment] = BoundedMap(MAX_REMEMBERED)
        # How often an item still on the sorter has recirculated, for its next decision.
        self.recirculations: BoundedMap[int, int] = BoundedMap(MAX_REMEMBERED)
        # The last P/decisions message of each tracking id, for operators' queries, with
        # the source of the pre-advice it was routed with (file, feed, customs; None: none).
        self.last_decision: BoundedMap[int, tuple[dict[str, Any], str | None]] = BoundedMap(
            MAX_QUERYABLE
        )

    def restore(self, rec: Recovered) -> None:
        """Carry on from what a previous process left in its journal."""
        for key, chute in rec.answered.items():
            self.answered[key] = chute
        for key, (barcode, destination, chute) in rec.assigned.items():
            self.assigned[key] = Assignment(barcode, destination, chute)
        for tid, recirc in rec.recirculations.items():
            self.recirculations[tid] = recirc
        for key in rec.results_seen:
            self.results_seen.add(key)
