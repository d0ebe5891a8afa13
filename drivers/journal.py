"""The local journal: every decision and result on disk before it is published or replied.

SQLite in WAL mode (standard library); the tables and how the file is opened are in
drivers/journal_file.py. Writes happen on the event loop thread and are committed before
the PLC sees the reply or the acknowledgement they belong to (the pipeline commits at the
end of each step). With `synchronous = "normal"` a commit survives a crash of the process
but not a power cut. With "full" a commit is also on the disk before anyone outside hears
of it: by default (`deferred_sync`, the daemon) the disk sync runs off the event loop and
is shared by the commits that came together (drivers/journal_sync.py), and the PLC driver
and the MQTT outbox wait for it; without it, inside every COMMIT (the feeds worker).

A journal that cannot write (disk full, I/O error) must not stop the sorter: `append`
returns None, the caller keeps the message in memory only, and `healthy`/`last_error` say
why; the next write that succeeds clears it. Sent rows are pruned after `retention_h`, and
when the file nears `max_size_mb` (drivers/journal_upkeep.py).

The pieces: drivers/journal_file.py (schema, opening), drivers/journal_recovery.py (what a
restart reads back), drivers/journal_upkeep.py (prune, size and disk alarms),
drivers/journal_outbox.py (`JournalOutbox`, the pipeline's Durable). `Journal` here owns
the connection and the transaction: writes, commits, the sent watermark.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from drivers.journal_file import (
    COUNT_UNSENT,
    DELETE_PENDING,
    INSERT_MESSAGE,
    INSERT_PENDING,
    SCHEMA_VERSION,
    SELECT_UNSENT,
    UPDATE_SENT_UPTO,
    JournalError,
    message_row,
    open_database,
    pending_row,
    read_sent_upto,
    take_lock,
)
from drivers.journal_health import JournalHealth
from drivers.journal_outbox import JournalOutbox
from drivers.journal_recovery import recover_from
from drivers.journal_sync import WalSync
from drivers.journal_upkeep import (
    PRUNE_AT_FRACTION,
    PRUNE_BATCH_ROWS,
    delete_sent_batch,
    disk_free_bytes,
    size_bytes,
    space_alarms,
)
from sorter.ports import MessageKind, Outgoing, Recovered, SortRequest

__all__ = [
    "PRUNE_BATCH_ROWS",
    "SCHEMA_VERSION",
    "SENT_PERSIST_NS",
    "Journal",
    "JournalError",
    "JournalOutbox",
    "JournalStats",
    "Unsent",
]

T = TypeVar("T")

SENT_PERSIST_NS: Final = 250_000_000


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
        deferred_sync: bool = False,
    ) -> None:
        self.path = Path(path)
        self.max_size_bytes = int(max_size_mb * 1024 * 1024)
        self.retention_ns = int(retention_h * 3600 * 1e9)
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)
        self.synchronous = synchronous.upper()
        self.stats = JournalStats()
        # The daemon reports it on P/devices/journal (`health.on_change`).
        self.health = JournalHealth(self.path)
        self._wall_ns = wall_clock_ns
        self._pending_keys: set[tuple[int, int]] = set()
        self._txn_deleted: list[tuple[int, int]] = []  # pending rows deleted, not committed
        self._owed: set[tuple[int, int]] = set()  # pending rows to delete at the next commit
        self._txn_rows = False  # the open transaction adds message or pending rows
        self._sent_persisted_ns = 0
        # "full" with the sync off the loop: SQLite commits at "normal", WalSync syncs.
        self.sync: WalSync | None = None
        if deferred_sync and self.synchronous == "FULL":
            self.sync = WalSync(self.path, self._sync_failed, self.health.sync_worked)
        self._txn_last_rowid = 0  # the open transaction's last message row
        self._db = self._open()
        self.stats.sent_upto = self._sent_on_disk = read_sent_upto(self._db)
        if self.sync is not None:
            self.sync.sync_now()
            last = self._db.execute("SELECT coalesce(max(id), 0) FROM message").fetchone()[0]
            self.sync.durable_rowid = self.sync.committed_rowid = int(last)

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"journal folder {self.path.parent}: {exc.strerror}") from exc
        self._lock = take_lock(self.path)
        pragma = "NORMAL" if self.sync is not None else self.synchronous
        db, aside = open_database(self.path, synchronous=pragma, max_size_bytes=self.max_size_bytes)
        if self.sync is not None:
            db.execute("PRAGMA wal_autocheckpoint=0")  # the sync's thread checkpoints
        if aside is not None:
            self.stats.set_aside.append(aside)
        return db

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.commit()
            self.persist_sent()
        if self.sync is not None:
            self.sync.close()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        with contextlib.suppress(OSError):
            os.close(self._lock)

    async def synced(self) -> None:
        """Every commit made so far is on the disk (at once unless `deferred_sync`)."""
        if self.sync is not None:
            await self.sync.wait()

    def after_sync(self, callback: Callable[[], None]) -> None:
        """Run `callback` once every commit made so far is on the disk."""
        if self.sync is None:
            callback()
        else:
            self.sync.after(callback)

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
        self._txn_last_rowid = 0
        self.health.write_failed(str(exc))

    def _sync_failed(self, exc: OSError) -> None:
        self.stats.failed += 1
        self.health.sync_failed(str(exc))

    @property
    def healthy(self) -> bool:
        return self.health.healthy

    @property
    def last_error(self) -> str:
        return self.health.last_error

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
            if self._owed:
                owed, self._owed = self._owed, set()
                self._txn_deleted.extend(owed)
                self._db.executemany(DELETE_PENDING, owed)

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
            cur = self._db.execute(INSERT_MESSAGE, message_row(msg, data, self._wall_ns()))
            key = (msg.tracking_id, msg.seq)
            if msg.kind is MessageKind.DECISION and key in self._pending_keys:
                # Most requests find their scan already there and were never pending.
                self._db.execute(DELETE_PENDING, key)
                self._pending_keys.discard(key)
                self._txn_deleted.append(key)
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        self.stats.appended += 1
        self._txn_rows = True
        self._txn_last_rowid = cur.lastrowid or self._txn_last_rowid
        return cur.lastrowid

    def add_pending(self, req: SortRequest) -> bool:
        """A request taken from the ring that is not decided yet; False when the journal
        could not write (the open transaction is then rolled back)."""
        try:
            self._begin()
            self._db.execute(INSERT_PENDING, pending_row(req, self._wall_ns()))
        except sqlite3.Error as exc:
            self._failed(exc)
            return False
        self._pending_keys.add((req.tracking_id, req.seq))
        self._txn_rows = True
        return True

    def run(self, statements: Callable[[sqlite3.Connection], T], *, write: bool) -> T | None:
        """Run `statements` (drivers/journal_feeds.py), a `write` in the open transaction
        (durable once `commit()` is); None when they failed (a write is then rolled back,
        as a failed append is)."""
        try:
            if write:
                self._begin()
            out = statements(self._db)
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        self._txn_rows = self._txn_rows or write
        return out

    def commit(self) -> bool:
        """Make what was appended durable (on the disk once `synced()` returns, with
        `deferred_sync`); False when the journal could not."""
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
        last_rowid, self._txn_last_rowid = self._txn_last_rowid, 0
        if self.sync is not None and wrote_rows:
            # A watermark or a prune needs no sync of its own: losing one to a power cut
            # only means a re-send or a later prune; the next sync covers it anyway.
            self.sync.committed(last_rowid)
        if wrote_rows:
            self.health.rows_written()
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
        now_ns = time.monotonic_ns()
        if now_ns - self._sent_persisted_ns >= SENT_PERSIST_NS:
            self.persist_sent(now_ns)

    def persist_sent(self, now_ns: int | None = None) -> None:
        """Write the sent watermark now, if it moved since it was last written."""
        if now_ns is None:
            now_ns = time.monotonic_ns()
        if self._sent_on_disk == self.stats.sent_upto:
            return
        try:
            self._begin()
            self._db.execute(UPDATE_SENT_UPTO, (self.stats.sent_upto,))
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
            rows = self._db.execute(SELECT_UNSENT, (after, limit)).fetchall()
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        sync = self.sync
        if sync is not None and sync.committed_rowid > sync.durable_rowid:
            # Committed, not synced yet: the step's own publish brings them once they are
            # (JournalOutbox); the broker must not have them before the disk does.
            # Rows from before this process are all below: synced at open.
            rows = [r for r in rows if r[0] <= sync.durable_rowid]
        return [Unsent(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def count_unsent(self) -> int:
        try:
            row = self._db.execute(COUNT_UNSENT, (self.stats.sent_upto,)).fetchone()
        except sqlite3.Error:
            return -1
        return int(row[0])

    def recover(self) -> Recovered:
        """What the last process left: decisions awaiting their confirmation, results already
        recorded, recirculation counts and requests taken but not decided."""
        rec, decided_pending = recover_from(self._db)
        # Decided already: only the rows' deletion was lost.
        self._owed.update(decided_pending)
        self._pending_keys.update((r.tracking_id, r.seq) for r in rec.pending)
        self.stats.recovered_unsent = self.count_unsent()
        return rec

    # --- upkeep -----------------------------------------------------------------------

    def prune(self) -> int:
        """Delete one batch (at most PRUNE_BATCH_ROWS) of sent rows past retention, or of
        the oldest sent rows while the file is too full; never an unsent row. Returns the
        rows deleted: the caller repeats, yielding to the event loop in between, while it
        gets a whole batch (a first prune after days away must not stall the line)."""
        cutoff_ns = self._wall_ns() - self.retention_ns
        too_full = size_bytes(self._db) > self.max_size_bytes * PRUNE_AT_FRACTION
        try:
            self._begin()
            deleted = delete_sent_batch(
                self._db, self.stats.sent_upto, cutoff_ns, too_full=too_full
            )
        except sqlite3.Error as exc:
            self._failed(exc)
            return 0
        if not self.commit():
            return 0
        self.stats.pruned += deleted
        return deleted

    def check_space(self) -> list[str]:
        """Alarms for P/status: the file near its bound, the disk near full. Reads only."""
        stats = self.stats
        stats.size_bytes = size_bytes(self._db)
        stats.unsent = self.count_unsent()
        stats.disk_free_bytes = disk_free_bytes(self.path.parent)
        return space_alarms(
            size_bytes=stats.size_bytes,
            max_size_bytes=self.max_size_bytes,
            free_bytes=stats.disk_free_bytes,
            min_free_bytes=self.min_free_bytes,
            healthy=self.healthy,
        )
