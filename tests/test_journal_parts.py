"""The journal's parts on their own: opening, recovery and upkeep against plain SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from drivers.journal_file import (
    INSERT_MESSAGE,
    INSERT_PENDING,
    message_row,
    open_database,
    pending_row,
    read_sent_upto,
)
from drivers.journal_recovery import RECOVER_ANSWERED_NS, RECOVER_REPLIES_NS, recover_from
from drivers.journal_upkeep import PRUNE_BATCH_ROWS, delete_sent_batch, space_alarms
from sorter.ports import MessageKind, Outcome, Outgoing, SortRequest

S = 10**9


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    conn, aside = open_database(
        tmp_path / "j.sqlite", synchronous="NORMAL", max_size_bytes=10 * 2**20
    )
    assert aside is None
    return conn


def _write(
    db: sqlite3.Connection,
    kind: MessageKind,
    tid: int,
    seq: int,
    wall_ns: int,
    *,
    chute: int = 5,
    outcome: int = 0,
    recirculations: int = 0,
) -> int:
    msg = Outgoing(kind, tid, seq, chute, f"B{tid}", "DEST", recirculations, outcome, "t", {})
    rowid = db.execute(INSERT_MESSAGE, message_row(msg, b"{}", wall_ns)).lastrowid
    assert rowid is not None
    return rowid


def test_a_new_file_starts_at_watermark_zero_and_a_foreign_one_is_set_aside(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    assert read_sent_upto(db) == 0
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    conn, aside = open_database(path, synchronous="NORMAL", max_size_bytes=2**20)
    assert aside is not None
    assert Path(aside).read_bytes().startswith(b"this is not")
    assert read_sent_upto(conn) == 0


def test_recover_reads_what_waits_for_confirmation_and_what_to_answer_again(
    db: sqlite3.Connection,
) -> None:
    last = 100 * S
    _write(db, MessageKind.DECISION, 1, 1, last - RECOVER_ANSWERED_NS - S)  # long ago
    _write(db, MessageKind.DECISION, 2, 2, last - RECOVER_REPLIES_NS - S)  # answered
    _write(db, MessageKind.DECISION, 3, 3, last - S, chute=9)  # its reply may be lost
    _write(db, MessageKind.DECISION, 4, 4, last)
    _write(db, MessageKind.RESULT, 4, 4, last, outcome=Outcome.SORTED)
    _write(db, MessageKind.RESULT, 1, 1, last, outcome=Outcome.RECIRC_FULL, recirculations=1)
    rec, owed = recover_from(db)
    assert set(rec.assigned) == {(2, 2), (3, 3)}
    assert rec.assigned[(3, 3)] == ("B3", "DEST", 9)
    assert set(rec.answered) == {(2, 2), (3, 3), (4, 4)}
    assert rec.replies == [(3, 3, 9)]
    assert rec.recirculations == {1: 1}
    assert rec.results_seen == {(4, 4), (1, 1)}
    assert rec.pending == []
    assert owed == set()


def test_recover_gives_back_pending_requests_and_owes_the_rows_of_decided_ones(
    db: sqlite3.Connection,
) -> None:
    waiting = SortRequest(8, 80, 1, 300, 200, 100, 1500)
    decided = SortRequest(9, 90, 1, 300, 200, 100, 1500)
    db.execute(INSERT_PENDING, pending_row(waiting, 1))
    db.execute(INSERT_PENDING, pending_row(decided, 2))
    _write(db, MessageKind.DECISION, 90, 9, 3)
    rec, owed = recover_from(db)
    assert rec.pending == [waiting]
    assert owed == {(90, 9)}


def test_prune_deletes_only_sent_rows_past_retention_unless_too_full(
    db: sqlite3.Connection,
) -> None:
    rows = [_write(db, MessageKind.RESULT, i, i, i * S) for i in range(10)]
    sent = rows[5]
    assert delete_sent_batch(db, sent, 3 * S, too_full=False) == 3
    assert delete_sent_batch(db, sent, 3 * S, too_full=False) == 0
    assert delete_sent_batch(db, sent, 0, too_full=True) == 3  # every sent row left
    left = [r[0] for r in db.execute("SELECT id FROM message ORDER BY id")]
    assert left == rows[6:]
    assert PRUNE_BATCH_ROWS > 0


def test_space_alarms() -> None:
    def alarms(size: int, free: int, healthy: bool = True) -> list[str]:
        return space_alarms(
            size_bytes=size, max_size_bytes=100, free_bytes=free, min_free_bytes=50,
            healthy=healthy,
        )  # fmt: skip

    assert alarms(90, 50) == []
    assert alarms(91, 50) == ["journal_full"]
    assert alarms(10, 49) == ["disk_low"]
    assert alarms(91, 0, healthy=False) == ["journal_full", "disk_low", "journal_error"]
