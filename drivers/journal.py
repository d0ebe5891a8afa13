"""The local journal: every decision and result on disk before it is published or replied.

SQLite in WAL mode (standard library). Three tables:
- `message`: one row per decision and result, in outbox order (`id`), with the exact MQTT
  payload, so a re-send after a reconnect or a restart carries the same message `id`;
- `pending`: sort requests taken from the PLC ring and not decided yet, so a request the
  daemon acknowledged just before a crash is still answered after the restart;
- `meta`: `sent_upto`, the outbox watermark: every message row up to it was acknowledged by
  the broker (PUBACK). The publisher sends in row order, so one number says what is sent.

Writes happen on the event loop thread and are committed before the PLC sees the reply or
the acknowledgement they belong to (the pipeline commits at the end of each step). With
`synchronous = "full"` a commit is on the disk when it returns (0.2-0.6 ms here); with
"normal" it survives a crash of the process but not a power cut.

A journal that cannot write (disk full, I/O error) must not stop the sorter: `append`
returns None, the caller keeps the message in memory only, and `healthy`/`last_error` say
why; the next write that succeeds clears it. Sent rows are pruned after `retention_h`, and
when the file nears `max_size_mb`; unsent rows are never pruned, so a journal full of
unsent rows refuses writes (the size bound is SQLite's `max_page_count`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from drivers.mqtt import MqttPublisher, OutMessage, encode
from sorter.errors import SorterdError
from sorter.ports import MessageKind, Outgoing, Recovered, SortRequest

log = structlog.get_logger(__name__)

SCHEMA_VERSION: Final = 1
# How far back recovery looks: replies and confirmations re-read after a restart are within
# one 64-slot ring, and decisions wait for their confirmation for minutes at most.
RECOVER_DECISIONS: Final = 100_000
RECOVER_RESULTS: Final = 4096
RECOVER_ANSWERED_NS: Final = 30 * 10**9
RECOVER_REPLIES_NS: Final = 5 * 10**9
PRUNE_BATCH_ROWS: Final = 5_000  # about 10 ms of the event loop here
SENT_PERSIST_NS: Final = 250_000_000
# Pruning frees space for new rows once the file is this full; the alarm is raised above it.
PRUNE_AT_FRACTION: Final = 0.8
ALARM_AT_FRACTION: Final = 0.9

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


class JournalError(SorterdError, OSError):
    """The journal file cannot be opened at all (a path or permission problem): the
    machine's set-up, reported like other OS errors, without a traceback."""


@dataclass(frozen=True, slots=True)
class Unsent:
    rowid: int
    topic: str
    payload: bytes


@dataclass(slots=True)
class JournalStats:
    appended: int = 0
    failed: int = 0  # writes refused (disk full, I/O error): those messages are memory only
    sent_upto: int = 0
    pruned: int = 0
    size_bytes: int = 0
    disk_free_bytes: int = 0
    unsent: int = 0
    recovered_pending: int = 0
    recovered_unsent: int = 0
    set_aside: list[str] = field(default_factory=list)  # unreadable files moved away


class Journal:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_size_mb: float = 1024.0,
        retention_h: float = 72.0,
        synchronous: str = "full",
        min_free_mb: float = 512.0,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = Path(path)
        self.max_size_bytes = int(max_size_mb * 1024 * 1024)
        self.retention_ns = int(retention_h * 3600 * 1e9)
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)
        self.synchronous = synchronous.upper()
        self.stats = JournalStats()
        self.healthy = True
        self.last_error = ""
        # Called when `healthy` changes (the daemon reports it on P/devices/journal).
        self.on_health_change: Callable[[], None] | None = None
        self._wall_ns = wall_clock_ns
        self._pending_keys: set[tuple[int, int]] = set()
        self._txn_deleted: list[tuple[int, int]] = []  # pending rows deleted, not committed
        self._owed: set[tuple[int, int]] = set()  # pending rows to delete at the next commit
        self._txn_rows = False  # the open transaction adds message or pending rows
        self._sent_on_disk = 0
        self._sent_persisted_ns = 0
        self._db = self._open()

    # --- opening ----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"journal folder {self.path.parent}: {exc.strerror}") from exc
        self._lock = self._take_lock()
        try:
            return self._connect()
        except sqlite3.OperationalError as exc:
            # Locked, read-only, no space to open: the machine's state, not the file's.
            raise JournalError(f"journal {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
        # Not a database, or a damaged one: keep it for inspection, start a new one. What it
        # held is lost to this process either way; refusing to start would stop the whole
        # line for a file nobody can read.
        aside = self.path.with_name(f"{self.path.name}.unreadable-{time.time_ns()}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.rename(Path(f"{aside}{suffix}"))
        self.stats.set_aside.append(str(aside))
        log.error(
            "journal unreadable, set aside", path=str(self.path), error=problem, moved_to=str(aside)
        )
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path}: {exc}") from exc

    def _take_lock(self) -> int:
        """One process per journal: a second daemon on the same file would interleave its
        rows and watermark with ours. The lock goes with the process, however it ends."""
        lock_path = Path(f"{self.path}.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(f"journal lock {lock_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JournalError(
                f"journal {self.path} is in use by another process (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode}, WAL needed")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.executescript(_SCHEMA)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            # Written by another version of sorterd: not ours to set aside or change.
            raise JournalError(
                f"journal {self.path} has schema {version}, this sorterd reads {SCHEMA_VERSION}"
            )
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = max(self.max_size_bytes // page_size, 64)
        db.execute(f"PRAGMA max_page_count={pages}")
        # Read every table once: a torn or foreign file fails here, not in the first write.
        db.execute("SELECT count(*) FROM pending").fetchone()
        self.stats.sent_upto = self._sent_on_disk = self._sent_upto(db)

    @staticmethod
    def _sent_upto(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key='sent_upto'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.commit()
            self.persist_sent()
            self._db.close()
        with contextlib.suppress(OSError):
            os.close(self._lock)

    # --- writing ----------------------------------------------------------------------

    def _failed(self, exc: sqlite3.Error) -> None:
        self.stats.failed += 1
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        # The rollback brought back the pending rows this transaction deleted: they are
        # owed, deleted by the next transaction that commits.
        self._owed.update(self._txn_deleted)
        self._txn_deleted.clear()
        self._txn_rows = False
        changed = self.healthy
        if self.healthy or str(exc) != self.last_error:
            log.error("journal write failed", path=str(self.path), error=str(exc))
        self.healthy = False
        self.last_error = str(exc)
        if changed and self.on_health_change is not None:
            self.on_health_change()

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
            if self._owed:
                owed, self._owed = self._owed, set()
                self._txn_deleted.extend(owed)
                self._db.executemany("DELETE FROM pending WHERE tracking_id=? AND seq=?", owed)

    def decided_elsewhere(self, tracking_id: int, seq: int) -> None:
        """A decision that could not be journaled (the step failed): its pending row, if
        any, is deleted by the next transaction that commits, so that a restart does not
        decide the request again."""
        key = (tracking_id, seq)
        if key in self._pending_keys:
            self._pending_keys.discard(key)
            self._owed.add(key)

    def append(self, msg: Outgoing, data: bytes) -> int | None:
        """Store one outgoing message (`data` is its encoded payload); its row id, or None
        when the journal cannot write. Part of the open transaction: durable once
        `commit()` returns."""
        try:
            self._begin()
            cur = self._db.execute(
                "INSERT INTO message (kind, tracking_id, seq, chute, barcode, destination,"
                " recirculations, outcome, wall_ns, topic, payload)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    msg.kind,
                    msg.tracking_id,
                    msg.seq,
                    msg.chute,
                    msg.barcode,
                    msg.destination,
                    msg.recirculations,
                    msg.outcome,
                    self._wall_ns(),
                    msg.topic,
                    data,
                ),
            )
            key = (msg.tracking_id, msg.seq)
            if msg.kind is MessageKind.DECISION and key in self._pending_keys:
                # Most requests find their scan already there and were never pending.
                self._db.execute("DELETE FROM pending WHERE tracking_id=? AND seq=?", key)
                self._pending_keys.discard(key)
                self._txn_deleted.append(key)
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        self.stats.appended += 1
        self._txn_rows = True
        return cur.lastrowid

    def add_pending(self, req: SortRequest) -> bool:
        """A request taken from the ring that is not decided yet; False when the journal
        could not write (the open transaction is then rolled back)."""
        try:
            self._begin()
            self._db.execute(
                "INSERT OR REPLACE INTO pending VALUES (?,?,?,?,?,?,?,?)",
                (
                    req.tracking_id,
                    req.seq,
                    req.induction,
                    req.length_mm,
                    req.width_mm,
                    req.height_mm,
                    req.weight_g,
                    self._wall_ns(),
                ),
            )
        except sqlite3.Error as exc:
            self._failed(exc)
            return False
        self._pending_keys.add((req.tracking_id, req.seq))
        self._txn_rows = True
        return True

    def commit(self) -> bool:
        """Make what was appended durable; False when the journal could not."""
        # The open transaction is what was appended and not committed yet.
        if not self._db.in_transaction:
            return self.healthy
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._failed(exc)
            return False
        self._txn_deleted.clear()
        wrote_rows, self._txn_rows = self._txn_rows, False
        # Only new rows prove the journal writes again: a watermark update or a prune
        # fits where a decision may not, and would make the alarm flap.
        if not self.healthy and wrote_rows:
            log.info("journal writes again", path=str(self.path))
            self.healthy = True
            self.last_error = ""
            if self.on_health_change is not None:
                self.on_health_change()
        return True

    def mark_sent(self, upto_rowid: int) -> None:
        """The broker acknowledged every message row up to `upto_rowid`.

        Written at most every SENT_PERSIST_NS (and by `close`): an acknowledgement lost in
        a crash only means a re-send with the same id, while a commit per PUBACK batch would
        cost a disk sync each.
        """
        if upto_rowid <= self.stats.sent_upto:
            return
        self.stats.sent_upto = upto_rowid
        now = time.monotonic_ns()
        if now - self._sent_persisted_ns >= SENT_PERSIST_NS:
            self.persist_sent(now)

    def persist_sent(self, now_ns: int | None = None) -> None:
        """Write the sent watermark now, if it moved since it was last written."""
        if now_ns is None:
            now_ns = time.monotonic_ns()
        if self._sent_on_disk == self.stats.sent_upto:
            return
        try:
            self._begin()
            self._db.execute(
                "UPDATE meta SET value=? WHERE key='sent_upto'", (self.stats.sent_upto,)
            )
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        if self.commit():
            self._sent_on_disk = self.stats.sent_upto
            self._sent_persisted_ns = now_ns

    # --- reading ----------------------------------------------------------------------

    def unsent(self, after_rowid: int, limit: int) -> list[Unsent] | None:
        """Message rows after `after_rowid` (and after the sent watermark), in order; None
        when the journal cannot be read (not the same as "no more rows")."""
        after = max(after_rowid, self.stats.sent_upto)
        try:
            rows = self._db.execute(
                "SELECT id, topic, payload FROM message WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        return [Unsent(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def count_unsent(self) -> int:
        try:
            row = self._db.execute(
                "SELECT count(*) FROM message WHERE id > ?", (self.stats.sent_upto,)
            ).fetchone()
        except sqlite3.Error:
            return -1
        return int(row[0])

    def recover(self) -> Recovered:
        """What the last process left: decisions awaiting their confirmation, results already
        recorded, recirculation counts and requests taken but not decided."""
        rec = Recovered()
        db = self._db
        decisions = db.execute(
            "SELECT tracking_id, seq, chute, barcode, destination, wall_ns FROM message"
            " WHERE kind='decision' ORDER BY id DESC LIMIT ?",
            (RECOVER_DECISIONS,),
        ).fetchall()
        last_ns = decisions[0][5] if decisions else 0
        results = db.execute(
            "SELECT tracking_id, seq, outcome, recirculations FROM message"
            " WHERE kind='result' ORDER BY id DESC LIMIT ?",
            (RECOVER_DECISIONS,),
        ).fetchall()
        confirmed = set()
        # Oldest first, so that later rows win, as they did in the process that wrote them.
        for tid, seq, outcome, recirc in reversed(results):
            confirmed.add((tid, seq))
            if outcome in (2, 3, 4):  # recirculated: the item comes back
                rec.recirculations[tid] = recirc
            else:
                rec.recirculations.pop(tid, None)
        for tid, seq, *_ in results[:RECOVER_RESULTS]:
            rec.results_seen.add((tid, seq))
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
        decided = {(tid, seq) for tid, seq, *_ in decisions}
        for tid, seq, induction, length_mm, width_mm, height_mm, weight_g in db.execute(
            "SELECT tracking_id, seq, induction, length_mm, width_mm, height_mm, weight_g"
            " FROM pending ORDER BY wall_ns"
        ):
            if (tid, seq) in decided:
                self._owed.add((tid, seq))  # decided; only the row's deletion was lost
                continue
            rec.pending.append(
                SortRequest(seq, tid, induction, length_mm, width_mm, height_mm, weight_g)
            )
            self._pending_keys.add((tid, seq))
        self.stats.recovered_pending = len(rec.pending)
        self.stats.recovered_unsent = self.count_unsent()
        return rec

    # --- upkeep -----------------------------------------------------------------------

    def size_bytes(self) -> int:
        try:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        except sqlite3.Error:
            return 0
        return int((pages - free) * page_size)

    def prune(self) -> int:
        """Delete one batch (at most PRUNE_BATCH_ROWS) of sent rows past retention, or of
        the oldest sent rows while the file is too full; never an unsent row. Returns the
        rows deleted: the caller repeats, yielding to the event loop in between, while it
        gets a whole batch (a first prune after days away must not stall the line)."""
        cutoff_ns = self._wall_ns() - self.retention_ns
        sent = self.stats.sent_upto
        too_full = self.size_bytes() > self.max_size_bytes * PRUNE_AT_FRACTION
        try:
            self._begin()
            if too_full:
                cur = self._db.execute(
                    "DELETE FROM message WHERE id IN (SELECT id FROM message"
                    " WHERE id <= ? ORDER BY id LIMIT ?)",
                    (sent, PRUNE_BATCH_ROWS),
                )
            else:
                # Only the oldest batch by id is looked at: rows are written in time order,
                # so the rows past retention are the first ones. `wall_ns < ?` inside the
                # subquery (no index on it) read every sent row on each prune: 20 ms on the
                # event loop at 160,000 rows, seconds with 72 h of a busy line.
                cur = self._db.execute(
                    "DELETE FROM message WHERE id IN (SELECT id FROM message"
                    " WHERE id <= ? ORDER BY id LIMIT ?) AND wall_ns < ?",
                    (sent, PRUNE_BATCH_ROWS, cutoff_ns),
                )
        except sqlite3.Error as exc:
            self._failed(exc)
            return 0
        if not self.commit():
            return 0
        self.stats.pruned += cur.rowcount
        return int(cur.rowcount)

    def check_space(self) -> list[str]:
        """Alarms for P/status: the file near its bound, the disk near full. Reads only."""
        self.stats.size_bytes = self.size_bytes()
        self.stats.unsent = self.count_unsent()
        alarms = []
        if self.stats.size_bytes > self.max_size_bytes * ALARM_AT_FRACTION:
            alarms.append("journal_full")
        try:
            self.stats.disk_free_bytes = shutil.disk_usage(self.path.parent).free
        except OSError:
            self.stats.disk_free_bytes = 0
        if self.stats.disk_free_bytes < self.min_free_bytes:
            alarms.append("disk_low")
        if not self.healthy:
            alarms.append("journal_error")
        return alarms


class JournalOutbox:
    """The pipeline's Durable: journal first, then the MQTT outbox with the row id.

    A step's messages reach the outbox at its commit: with their row ids when the commit
    succeeded, as memory-only messages when any write of the step failed (a failed write
    rolls the whole step back, so none of its rows exist, and their ids will be reused).
    """

    def __init__(self, journal: Journal, publisher: MqttPublisher) -> None:
        self.journal = journal
        self.publisher = publisher
        self._step: list[tuple[str, bytes, int | None]] = []
        self._decided: list[tuple[int, int]] = []
        self._step_failed = False

    def add_pending(self, req: SortRequest) -> None:
        if not self._step_failed and not self.journal.add_pending(req):
            self._step_failed = True

    def record(self, msg: Outgoing) -> None:
        data = encode(msg.payload)
        rowid = None if self._step_failed else self.journal.append(msg, data)
        if rowid is None:
            self._step_failed = True
        self._step.append((msg.topic, data, rowid))
        if msg.kind is MessageKind.DECISION:
            self._decided.append((msg.tracking_id, msg.seq))

    def commit(self) -> None:
        durable = not self._step_failed and self.journal.commit()
        if not durable:
            for tid, seq in self._decided:
                self.journal.decided_elsewhere(tid, seq)
        self._decided.clear()
        for topic, data, rowid in self._step:
            self.publisher.publish_raw(
                OutMessage(topic, data, 1, False), rowid if durable else None
            )
        self._step.clear()
        self._step_failed = False
