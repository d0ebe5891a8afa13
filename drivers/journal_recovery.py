"""Restart recovery: what the last process left in the journal, read back.

Decisions awaiting their confirmation, results already recorded, recirculation counts,
requests answered in the last moments before the stop, replies that may not have reached
the PLC, and requests taken from the ring but not decided.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from sorter.ports import Outcome, Recovered, SortRequest

__all__ = [
    "RECOVER_ANSWERED_NS",
    "RECOVER_DECISION_ROWS",
    "RECOVER_REPLIES_NS",
    "RECOVER_RESULT_ROWS",
    "recover_from",
]

# How far back recovery looks: replies and confirmations re-read after a restart are within
# one 64-slot ring, and decisions wait for their confirmation for minutes at most.
RECOVER_DECISION_ROWS: Final = 100_000
RECOVER_RESULT_ROWS: Final = 4096
RECOVER_ANSWERED_NS: Final = 30 * 10**9
RECOVER_REPLIES_NS: Final = 5 * 10**9

_RECIRCULATED: Final = frozenset(int(o) for o in Outcome if not o.terminal)

Key = tuple[int, int]  # (tracking_id, seq)


def recover_from(db: sqlite3.Connection) -> tuple[Recovered, set[Key]]:
    """What the last process left, and the pending rows of requests it had decided already
    (only the rows' deletion was lost: the caller deletes them at its next commit)."""
    rec = Recovered()
    decisions = db.execute(
        "SELECT tracking_id, seq, chute, barcode, destination, wall_ns FROM message"
        " WHERE kind='decision' ORDER BY id DESC LIMIT ?",
        (RECOVER_DECISION_ROWS,),
    ).fetchall()
    results = db.execute(
        "SELECT tracking_id, seq, outcome, recirculations FROM message"
        " WHERE kind='result' ORDER BY id DESC LIMIT ?",
        (RECOVER_DECISION_ROWS,),
    ).fetchall()
    confirmed = _read_results(rec, results)
    _read_decisions(rec, decisions, confirmed)
    decided = {(tid, seq) for tid, seq, *_ in decisions}
    owed: set[Key] = set()
    for tid, seq, induction, length_mm, width_mm, height_mm, weight_g in db.execute(
        "SELECT tracking_id, seq, induction, length_mm, width_mm, height_mm, weight_g"
        " FROM pending ORDER BY wall_ns"
    ):
        if (tid, seq) in decided:
            owed.add((tid, seq))
            continue
        rec.pending.append(
            SortRequest(seq, tid, induction, length_mm, width_mm, height_mm, weight_g)
        )
    return rec, owed


def _read_results(rec: Recovered, results: list[tuple[int, int, int, int]]) -> set[Key]:
    """Recirculation counts and the results seen, from the result rows (newest first);
    returns the items confirmed."""
    confirmed: set[Key] = set()
    # Oldest first, so that later rows win, as they did in the process that wrote them.
    for tid, seq, outcome, recirc in reversed(results):
        confirmed.add((tid, seq))
        if outcome in _RECIRCULATED:  # the item comes back
            rec.recirculations[tid] = recirc
        else:
            rec.recirculations.pop(tid, None)
    for tid, seq, *_ in results[:RECOVER_RESULT_ROWS]:
        rec.results_seen.add((tid, seq))
    return confirmed


def _read_decisions(
    rec: Recovered, decisions: list[tuple[int, int, int, str, str, int]], confirmed: set[Key]
) -> None:
    """Decisions awaiting confirmation, requests answered, replies to send again, from the
    decision rows (newest first)."""
    last_ns = decisions[0][5] if decisions else 0
    for tid, seq, chute, barcode, destination, wall_ns in reversed(decisions):
        if (tid, seq) not in confirmed:
            rec.assigned[(tid, seq)] = (barcode, destination, chute)
        # A request the PLC presents again was decided in the last moments before the
        # stop; older pairs may be reused by a PLC that restarted meanwhile (a power cut
        # takes both down), and must then be new items, not re-reads.
        if wall_ns >= last_ns - RECOVER_ANSWERED_NS:
            rec.answered[(tid, seq)] = chute
        # Replies decided after their request was acknowledged (a timeout, a late scan)
        # may have died in the link's queue: sent again, a reply the PLC has is harmless.
        if wall_ns >= last_ns - RECOVER_REPLIES_NS and (tid, seq) not in confirmed:
            rec.replies.append((seq, tid, chute))
