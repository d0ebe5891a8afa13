"""The journal's file: its schema, the statements the journal runs on it, and opening it.

One process per file (a lock file beside it), WAL mode, the schema version checked; a file
that is not a database, or a damaged one, is set aside and a new one started. Three tables:
- `message`: one row per decision and result, in outbox order (`id`), with the exact MQTT
  payload, so a re-send after a reconnect or a restart carries the same message `id`;
- `pending`: sort requests taken from the PLC ring and not decided yet, so a request the
  daemon acknowledged just before a crash is still answered after the restart;
- `meta`: `sent_upto`, the outbox watermark: every message row up to it was acknowledged by
  the broker (PUBACK). The publisher sends in row order, so one number says what is sent.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import Final

import structlog

from sorter.errors import SorterdError
from sorter.ports import Outgoing, SortRequest

__all__ = [
    "COUNT_UNSENT",
    "DELETE_PENDING",
    "INSERT_MESSAGE",
    "INSERT_PENDING",
    "SCHEMA_VERSION",
    "SELECT_UNSENT",
    "UPDATE_SENT_UPTO",
    "JournalError",
    "message_row",
    "open_database",
    "pending_row",
    "read_sent_upto",
    "take_lock",
]

log = structlog.get_logger("drivers.journal")

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the watermark relies on it
    kind TEXT NOT NULL,             -- 'decision' or 'result'
    tracking_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    chute INTEGER NOT NULL,         -- decision: chute assigned; result: chute_actual
    barcode TEXT NOT NULL,
    destination TEXT NOT NULL,
    recirculations INTEGER NOT NULL,
    outcome INTEGER NOT NULL,       -- result: the PLC's outcome code; decision: 0
    wall_ns INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    tracking_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    induction INTEGER NOT NULL,
    length_mm INTEGER NOT NULL,
    width_mm INTEGER NOT NULL,
    height_mm INTEGER NOT NULL,
    weight_g INTEGER NOT NULL,
    wall_ns INTEGER NOT NULL,
    PRIMARY KEY (tracking_id, seq)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('sent_upto', 0);
"""

INSERT_MESSAGE: Final = (
    "INSERT INTO message (kind, tracking_id, seq, chute, barcode, destination,"
    " recirculations, outcome, wall_ns, topic, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
INSERT_PENDING: Final = "INSERT OR REPLACE INTO pending VALUES (?,?,?,?,?,?,?,?)"
DELETE_PENDING: Final = "DELETE FROM pending WHERE tracking_id=? AND seq=?"
UPDATE_SENT_UPTO: Final = "UPDATE meta SET value=? WHERE key='sent_upto'"
SELECT_UNSENT: Final = "SELECT id, topic, payload FROM message WHERE id > ? ORDER BY id LIMIT ?"
COUNT_UNSENT: Final = "SELECT count(*) FROM message WHERE id > ?"


def message_row(msg: Outgoing, data: bytes, wall_ns: int) -> tuple[object, ...]:
    """The `message` row of an outgoing message (`data`: its encoded payload), in the
    order of INSERT_MESSAGE."""
    return (
        msg.kind,
        msg.tracking_id,
        msg.seq,
        msg.chute,
        msg.barcode,
        msg.destination,
        msg.recirculations,
        msg.outcome,
        wall_ns,
        msg.topic,
        data,
    )


def pending_row(req: SortRequest, wall_ns: int) -> tuple[int, ...]:
    """The `pending` row of a request, in the order of INSERT_PENDING."""
    return (
        req.tracking_id,
        req.seq,
        req.induction,
        req.length_mm,
        req.width_mm,
        req.height_mm,
        req.weight_g,
        wall_ns,
    )


class JournalError(SorterdError, OSError):
    """The journal file cannot be opened at all (a path or permission problem): the
    machine's set-up, reported like other OS errors, without a traceback."""


def take_lock(path: Path) -> int:
    """One process per journal: a second daemon on the same file would interleave its
    rows and watermark with ours. The lock goes with the process, however it ends; the
    file descriptor returned holds it."""
    lock_path = Path(f"{path}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise JournalError(f"journal lock {lock_path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise JournalError(f"journal {path} is in use by another process (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def open_database(
    path: Path, *, synchronous: str, max_size_bytes: int
) -> tuple[sqlite3.Connection, str | None]:
    """The journal's connection, ready to write, and where an unreadable file found at
    `path` was moved (None when there was none). The caller holds the lock."""
    try:
        return _connect(path, synchronous, max_size_bytes), None
    except sqlite3.OperationalError as exc:
        # Locked, read-only, no space to open: the machine's state, not the file's.
        raise JournalError(f"journal {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        problem = str(exc)
    # Not a database, or a damaged one: keep it for inspection, start a new one. What it
    # held is lost to this process either way; refusing to start would stop the whole
    # line for a file nobody can read.
    aside = path.with_name(f"{path.name}.unreadable-{time.time_ns()}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            part.rename(Path(f"{aside}{suffix}"))
    log.error("journal unreadable, set aside", path=str(path), error=problem, moved_to=str(aside))
    try:
        return _connect(path, synchronous, max_size_bytes), str(aside)
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"journal {path}: {exc}") from exc


def _connect(path: Path, synchronous: str, max_size_bytes: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _prepare(db, path, synchronous, max_size_bytes)
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection, path: Path, synchronous: str, max_size_bytes: int) -> None:
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"journal_mode is {mode}, WAL needed")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.executescript(_SCHEMA)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    elif version != SCHEMA_VERSION:
        # Written by another version of sorterd: not ours to set aside or change.
        raise JournalError(
            f"journal {path} has schema {version}, this sorterd reads {SCHEMA_VERSION}"
        )
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    # The size bound: a journal full of unsent rows refuses writes at this size.
    pages = max(max_size_bytes // page_size, 64)
    db.execute(f"PRAGMA max_page_count={pages}")
    # Read every table once (meta too): a torn or foreign file fails here, not in the first
    # write.
    db.execute("SELECT count(*) FROM pending").fetchone()
    read_sent_upto(db)


def read_sent_upto(db: sqlite3.Connection) -> int:
    """The sent watermark as last written."""
    row = db.execute("SELECT value FROM meta WHERE key='sent_upto'").fetchone()
    return int(row[0]) if row else 0
