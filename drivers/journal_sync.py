"""Group commit for the journal: its disk sync off the event loop, shared by every commit
that came before it.

With `synchronous = "full"` SQLite syncs the WAL inside every COMMIT, on the thread that
commits: the event loop. On this kind of virtual disk that is 1 ms at the median and 4-5 ms
at p99, up to 80 times a second at 100,000 items/h, and the whole line (scanner reads, the
PLC's other requests, MQTT) waits behind it. Instead the journal commits at
`synchronous = "normal"` (the COMMIT only writes the WAL: a killed process loses nothing)
and this module makes it power-cut safe: `fdatasync` of the WAL file in a thread of its
own, started at each commit, covering every commit made before it began. Whatever the PLC
or the broker is told about a step waits for `wait()` (the PLC driver before it bumps
`rep_head`, `req_ack` or `conf_ack`) or runs in `after()` (the MQTT outbox): so nothing
outside the process ever sees a step a power cut could take back, as with "full". The
same holds for what a killed predecessor committed and never synced: the journal syncs
the file once at open, before the recovery's replies and the outbox's page-in read it,
and the page-in reads no row whose sync is still running.

Meanwhile the PLC driver writes the reply slots (invisible to the PLC until `rep_head`
moves): the sync and that round trip overlap instead of following each other.

Checkpoints leave the loop too. SQLite's automatic checkpoint runs inside the COMMIT that
crosses 1,000 WAL pages: it copies them into the database file and syncs both, 12-27 ms
on this disk and far more when the disk is busy, all on the loop. The journal turns it off
(`wal_autocheckpoint = 0`) and a second thread, with a connection of its own, runs a
PASSIVE checkpoint at most every CHECKPOINT_INTERVAL_S after a sync: it never waits for the
writer, and the writer never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["CHECKPOINT_INTERVAL_S", "WalSync"]

CHECKPOINT_INTERVAL_S = 1.0


class WalSync:
    """Counts commits and syncs; `committed()` after each COMMIT, `wait()` before telling
    anyone outside. `on_error` runs on the loop when a sync fails (the journal then
    reports itself unhealthy; the line does not stop for it)."""

    def __init__(
        self,
        db_path: Path,
        on_error: Callable[[OSError], None],
        on_ok: Callable[[], None] | None = None,
    ) -> None:
        self._db_path = db_path
        self._wal_path = Path(f"{db_path}-wal")
        self._on_error = on_error
        self._on_ok = on_ok  # after a sync that worked (the journal's health comes back)
        self._closed = False
        self.commits = 0  # COMMITs made
        self.synced = 0  # COMMITs on the disk
        # Message rows up to durable_rowid are on the disk; committed_rowid is the last
        # committed (the journal's outbox pages in none past durable_rowid).
        self.durable_rowid = self.committed_rowid = 0
        self.syncs = 0  # fdatasync calls: fewer than commits when commits came together
        self._fd = -1
        self._ino = 0
        # The loop whose fdatasync is in the sync thread (its end comes on that loop).
        self._syncing: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()  # (commit, waiter)
        self._after: deque[tuple[int, Callable[[], None]]] = deque()
        self._rowids: deque[tuple[int, int]] = deque()  # (commit number, its last row)
        self._executor: ThreadPoolExecutor | None = None
        self.checkpoints = 0
        self._checkpointer: ThreadPoolExecutor | None = None
        self._checkpointing: asyncio.Future[None] | None = None
        self._checkpoint_db: sqlite3.Connection | None = None
        self._last_checkpoint = 0.0

    def committed(self, last_rowid: int = 0) -> None:
        """A COMMIT returned (its last message row, if it wrote any): start a sync now
        unless one is running (the running one's end starts the next, which covers every
        commit made meanwhile)."""
        self.commits += 1
        if last_rowid:
            self.committed_rowid = last_rowid
            self._rowids.append((self.commits, last_rowid))
        self._start()

    async def wait(self) -> None:
        """Return once every commit made before the call is on the disk (or its sync
        failed: reported through `on_error`)."""
        target = self.commits
        if self.synced >= target:
            return
        self._start()
        if self.synced >= target:  # synced in place (the journal is closed)
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        await waiter

    def after(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the loop once the commits made so far are on the disk."""
        if self.synced >= self.commits:
            callback()
        else:
            self._after.append((self.commits, callback))

    def sync_now(self) -> None:
        """Sync in place, whatever this process committed or not: at open, the rows a
        killed predecessor committed at "normal" may be in the page cache only, and the
        recovery replies and the outbox's page-in are about to tell the PLC and the broker
        about them."""
        upto = self.commits
        if self._executor is not None:
            # A sync of a loop that stopped may still run in the sync thread: this one goes
            # after it rather than beside it on the same file descriptor.
            error = self._executor.submit(self._sync_file).result()
        else:
            error = self._sync_file()
        self._finish(upto, error)

    def close(self) -> None:
        """Sync what is left, in place, and release the threads and the files."""
        # A sync still running finishes on the loop after this: it must not start a
        # checkpoint thread and a connection again once the journal is closed.
        self._closed = True
        for pool in (self._executor, self._checkpointer):
            if pool is not None:
                pool.shutdown(wait=True)
        self._executor = self._checkpointer = None
        if self._checkpoint_db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._checkpoint_db.close()
            self._checkpoint_db = None
        if self.synced < self.commits:
            self.sync_now()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
            self._ino = 0  # a commit after close() opens the WAL again

    # ------------------------------------------------------------------ the sync

    def _start(self) -> None:
        """Hand the fdatasync to the sync thread now, not at the loop's next turn: the
        thread then runs while the PLC driver writes the reply slots."""
        if self.synced >= self.commits:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self._syncing is not None:
            if self._syncing is loop:
                return  # its end starts the next, which covers this commit
            # The loop that handed a sync to the thread stopped before the sync's end came
            # back to it: that end may never come, and nothing would sync again.
            self._syncing = None
        if loop is None or self._closed:
            # No loop (start-up, shutdown, tools), or closed: the sync a COMMIT at "full"
            # would make.
            self.sync_now()
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="journal-sync")
        self._syncing = loop
        done = loop.run_in_executor(self._executor, self._sync_file)
        done.add_done_callback(functools.partial(self._synced, loop, self.commits))

    def _synced(
        self, loop: asyncio.AbstractEventLoop, upto: int, done: asyncio.Future[OSError | None]
    ) -> None:
        """A sync ended (on the loop): the commits up to `upto` are on the disk; the ones
        made while it ran get the next sync."""
        if self._syncing is loop:
            self._syncing = None
        error = done.result() if not done.cancelled() else OSError("journal sync cancelled")
        self._finish(upto, error)
        if self.synced < self.commits:
            self._start()
        # Also while commits keep coming: a line busy enough that every sync ends with
        # another to make would otherwise never checkpoint, and with SQLite's own
        # checkpoint off the WAL would grow for as long as the line runs.
        self._checkpoint_soon(loop)

    def _checkpoint_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        if self._closed or self._checkpointing is not None:
            return
        if now - self._last_checkpoint < CHECKPOINT_INTERVAL_S:
            return
        self._last_checkpoint = now
        if self._checkpointer is None:
            self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="journal-checkpoint")
        self._checkpointing = loop.run_in_executor(self._checkpointer, self._checkpoint)
        self._checkpointing.add_done_callback(self._checkpointed)

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        self._checkpointing = None
        if not done.cancelled():
            done.exception()  # _checkpoint keeps its errors; nothing is left to retrieve

    def _checkpoint(self) -> None:
        """PASSIVE: copies what no reader still needs and returns; the next one goes on.
        A failure here costs WAL size only (the rows are in the WAL, synced): the next
        checkpoint, or the one SQLite makes when the journal closes, catches up."""
        try:
            if self._checkpoint_db is None:
                self._checkpoint_db = sqlite3.connect(
                    self._db_path, isolation_level=None, check_same_thread=False
                )
            self._checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
        except sqlite3.Error:
            pass

    def _finish(self, upto: int, error: OSError | None) -> None:
        self.syncs += 1
        self.synced = max(self.synced, upto)
        if error is not None:
            self._on_error(error)
        elif self._on_ok is not None:
            self._on_ok()
        # Who waits first (the PLC driver, to move its heads), then the callbacks (the
        # MQTT outbox): both wake on the loop's next turn, in this order, so the PLC is
        # not left behind a publish.
        while self._waiters and self._waiters[0][0] <= self.synced:
            waiter = self._waiters.popleft()[1]
            if not waiter.done():  # a waiter cancelled meanwhile (its task stopped)
                waiter.set_result(None)
        while self._rowids and self._rowids[0][0] <= self.synced:
            self.durable_rowid = self._rowids.popleft()[1]
        while self._after and self._after[0][0] <= self.synced:
            self._after.popleft()[1]()

    def _sync_file(self) -> OSError | None:
        """fdatasync of the WAL (in the sync thread): every frame written so far. The WAL
        lives as long as the connection; a checkpoint at "normal" has already synced what
        it moved into the database file."""
        try:
            ino = os.stat(self._wal_path).st_ino
            if ino != self._ino:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
                self._fd = os.open(self._wal_path, os.O_RDONLY)
                self._ino = ino
            os.fdatasync(self._fd)
        except FileNotFoundError:
            # No WAL (not written yet, or checkpointed away): the database file holds it all.
            return _sync_path(self._db_path)
        except OSError as exc:
            return exc
        return None


def _sync_path(path: Path) -> OSError | None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return exc
    return None
