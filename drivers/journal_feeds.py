"""The live feeds in the journal: every applied pre-advice row and customs decision, and the
ids already applied, in the journal's SQLite file (drivers/journal.py).

Two tables beside the journal's own (created when missing: a journal written before the
feeds simply gains them):
- `feed`: one row per applied pre-advice row (kind 0) or customs decision (kind 1), in
  arrival order (`seq`), so that a restart applies them again in the same order;
- `feed_id`: the ids applied, each with the `seq` of its entry, so that an id delivered
  again (the broker's re-send of what was not acknowledged before a kill, a publisher's
  own re-send) is not applied twice, even after a restart. The ids of the last
  `remember_ids` entries are kept; older ones are pruned.

An entry that a later one of the same barcode and kind replaced is no longer needed (the
later one says all of it) and is pruned in small steps, off the hot path (`prune_step`);
its id stays in `feed_id`. A barcode whose newest entry is older than the retention leaves
the table altogether (`retire_step`, oldest first, a bounded number per step), so that the
journal, the live index and a restart's replay hold the last `retention_h` of the feeds.

Writes join the journal's open transaction (`Journal.run`) and are durable when the
journal commits: the feed handler (sorterd/feeds.py) commits before the PUBACK.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from drivers.journal_file import JournalError
from sorter.feeds import CustomsUpdate, FeedBatch, FeedRow

if TYPE_CHECKING:
    from drivers.journal import Journal

__all__ = [
    "FEED_CACHE_KIB",
    "FEED_PRUNE_ROWS",
    "FEED_REPLAY_ROWS",
    "FEED_RETIRE_ROWS",
    "FEED_SCHEMA",
    "FeedStore",
    "Replayed",
    "adopt_line_feeds",
    "counts_file",
    "replay_file",
]

FEED_PRUNE_ROWS: Final = 2_000  # entries looked at per prune step (a few ms)
FEED_REPLAY_ROWS: Final = 20_000  # entries read per replay chunk
FEED_RETIRE_ROWS: Final = 2_000  # oldest entries looked at per retire step
# The connection's page cache (KiB): every feed row adds to two indexes keyed by barcode and
# id, whose pages a batch touches all over; SQLite's default 2 MiB makes it read them back.
FEED_CACHE_KIB: Final = 64 * 1024

_ROW: Final = 0
_CUSTOMS: Final = 1

FEED_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS feed (
    seq INTEGER PRIMARY KEY,        -- arrival order (the newest entry is never pruned)
    kind INTEGER NOT NULL,          -- 0 pre-advice row, 1 customs decision
    barcode TEXT NOT NULL,
    destination TEXT, postcode TEXT, country TEXT, origin TEXT, customs TEXT, service TEXT,
    hold INTEGER,                   -- customs decision: 1 hold, 0 release
    id TEXT,                        -- the row's or decision's own id, if it had one
    arrival_ns INTEGER NOT NULL     -- wall clock when it arrived
);
CREATE INDEX IF NOT EXISTS feed_barcode ON feed (barcode, kind, seq);
CREATE TABLE IF NOT EXISTS feed_id (id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feed_id_seq ON feed_id (seq);
-- What P/stats counts since the journal began: written in each batch's transaction, so the
-- counts survive a restart and show from outside that every row was applied once.
CREATE TABLE IF NOT EXISTS feed_count (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_INSERT: Final = (
    "INSERT INTO feed (kind, barcode, destination, postcode, country, origin, customs, service,"
    " hold, id, arrival_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
_CLAIM_ID: Final = "INSERT INTO feed_id VALUES (?, ?)"
_SEEN_BATCH: Final = 500  # ids looked up per statement (SQLite allows 32766 parameters)
_SELECT: Final = (
    "SELECT seq, kind, barcode, destination, postcode, country, origin, customs, service, hold,"
    " id, arrival_ns FROM feed WHERE seq > ? ORDER BY seq LIMIT ?"
)
# An entry is replaced by a later one of the same barcode and kind that says all it said:
# a customs decision by a later one; a row by a later row, unless it stated customs and the
# later row does not (a row's customs word ends an earlier customs decision, a row without
# one leaves that decision in force: sorter/feeds.py).
_PRUNE: Final = (
    "DELETE FROM feed WHERE seq IN (SELECT f.seq FROM feed f WHERE f.seq > ? AND f.seq <= ?"
    " AND EXISTS (SELECT 1 FROM feed g WHERE g.barcode = f.barcode AND g.kind = f.kind"
    " AND g.seq > f.seq AND (f.kind = 1 OR f.customs IS NULL OR g.customs IS NOT NULL)))"
)
_LAST_SEQ: Final = "SELECT coalesce(max(seq), 0) FROM feed"
_COUNT: Final = (
    "INSERT INTO feed_count VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
)
_COUNTS: Final = "SELECT name, value FROM feed_count"
_OLDEST: Final = "SELECT seq, barcode, arrival_ns FROM feed WHERE seq > ? ORDER BY seq LIMIT ?"
# A barcode's newest entry (through feed_barcode: both kinds).
_NEWEST_ARRIVAL: Final = (
    "SELECT arrival_ns FROM feed WHERE seq = (SELECT max(seq) FROM feed WHERE barcode = ?)"
)
_RETIRE: Final = "DELETE FROM feed WHERE barcode = ?"
# Bounded per step like the entries (a day's ids at once would hold the event loop for
# ~0.5 s at 1,000,000): the oldest first, through the index on seq.
_PRUNE_IDS: Final = (
    "DELETE FROM feed_id WHERE id IN (SELECT id FROM feed_id WHERE seq <= ? ORDER BY seq LIMIT ?)"
)


@dataclass(frozen=True, slots=True)
class Replayed:
    """A run of entries of one kind that arrived together, to apply as they were."""

    batch: FeedBatch
    arrival_ns: int
    seq: int = 0  # the journal's seq of its last entry


class FeedStore:
    """The feeds' side of the journal. Every method runs on the event loop thread, as the
    journal's writes do."""

    def __init__(self, journal: Journal, *, remember_ids: int) -> None:
        self.journal = journal
        self.remember_ids = remember_ids
        self._prune_after = 0  # the prune's cursor: entries up to it were looked at
        self._retire_after = 0  # the retirement's cursor (seq), back to 0 at the end
        if journal.run(lambda db: db.executescript(FEED_SCHEMA), write=False) is None:
            raise JournalError(f"journal {journal.path}: cannot add the feed tables")
        journal.run(lambda db: db.execute(f"PRAGMA cache_size=-{FEED_CACHE_KIB}"), write=False)

    def fresh(self, batch: FeedBatch) -> FeedBatch | None:
        """`batch` without the rows and decisions whose id was journaled before (durably,
        or earlier in this transaction) or comes earlier in `batch`; None when the journal
        cannot be read (the caller applies the batch as it is, and does not acknowledge
        it). The ids are claimed by `add`, for what was applied: a row the index refused
        keeps its id free."""
        ids = [r.id for r in batch.rows if r.id is not None]
        ids += [c.id for c in batch.customs if c.id is not None]
        if not ids:
            return batch

        def unseen(db: sqlite3.Connection) -> FeedBatch:
            taken = _known_ids(db, ids)

            def first_time(entry_id: str | None) -> bool:
                if entry_id is None:
                    return True
                if entry_id in taken:
                    return False
                taken.add(entry_id)
                return True

            rows = [r for r in batch.rows if first_time(r.id)]
            customs = [c for c in batch.customs if first_time(c.id)]
            return FeedBatch(rows, customs, batch.bad)

        return self.journal.run(unseen, write=False)

    def add(self, batch: FeedBatch, arrival_ns: int) -> bool:
        """Journal the applied rows and decisions of one message, and claim their ids (in
        the open transaction); False when the journal cannot write."""
        entries = [_row_entry(r, arrival_ns) for r in batch.rows]
        entries += [_customs_entry(c, arrival_ns) for c in batch.customs]
        if not entries:
            return True
        ids = [r.id for r in batch.rows if r.id is not None]
        ids += [c.id for c in batch.customs if c.id is not None]

        def insert(db: sqlite3.Connection) -> bool:
            seq = int(db.execute(_LAST_SEQ).fetchone()[0]) + 1
            db.executemany(_INSERT, entries)
            db.executemany(_CLAIM_ID, [(entry_id, seq) for entry_id in ids])
            return True

        return self.journal.run(insert, write=True) is not None

    def count(self, rows: int, customs: int) -> bool:
        """Add to the applied counts (in the open transaction); False when the journal cannot
        write."""
        if not rows and not customs:
            return True
        counts = [("rows_applied", rows), ("customs_applied", customs)]
        return self.journal.run(lambda db: db.executemany(_COUNT, counts), write=True) is not None

    def last_seq(self) -> int | None:
        """The seq of the newest entry (of the open transaction too); None when the journal
        cannot be read. Every entry up to it has been packed (an entry is packed before it
        is journaled: sorterd/feeds.py), which the daemon's feeds worker tells the daemon
        with each update, so that a worker that dies with entries journaled and not yet
        merged leaves the daemon knowing where to read them back (docs/feeds.md)."""
        last = self.journal.run(lambda db: db.execute(_LAST_SEQ).fetchone()[0], write=False)
        return None if last is None else int(last)

    def counts(self) -> dict[str, int]:
        """The applied counts since the journal began (empty when it cannot be read)."""
        rows = self.journal.run(lambda db: db.execute(_COUNTS).fetchall(), write=False)
        return {str(name): int(value) for name, value in rows or ()}

    def replay(self) -> Iterator[Replayed]:
        """Every entry in arrival order, as runs of one kind and one arrival; stops early
        when the journal cannot be read."""
        after = 0
        while True:
            chunk = self.journal.run(_select_after(after), write=False)
            if not chunk:
                return
            yield from _runs(chunk)
            after = int(chunk[-1][0])
            if len(chunk) < FEED_REPLAY_ROWS:
                return

    def prune_step(self) -> int | None:
        """Delete the replaced entries among the next FEED_PRUNE_ROWS, and up to
        FEED_PRUNE_ROWS of the oldest ids beyond the bound; the entries deleted, None when
        the journal cannot write. Wraps around at the end; committed here."""
        start = self._prune_after
        last = self.journal.run(lambda db: db.execute(_LAST_SEQ).fetchone()[0], write=False)
        if last is None:
            return None
        end = min(int(last), start + FEED_PRUNE_ROWS)

        def prune(db: sqlite3.Connection) -> int:
            deleted = int(db.execute(_PRUNE, (start, end)).rowcount)
            db.execute(_PRUNE_IDS, (int(last) - self.remember_ids, FEED_PRUNE_ROWS))
            return deleted

        deleted = self.journal.run(prune, write=True)
        if deleted is None or not self.journal.commit():
            return None
        self._prune_after = 0 if end >= int(last) else end
        return deleted

    def retire_step(self, cutoff_ns: int) -> list[str] | None:
        """Among the next FEED_RETIRE_ROWS oldest entries that arrived before `cutoff_ns`,
        the barcodes whose newest entry did too: all their entries deleted (committed
        here). The barcodes retired; None when the journal cannot write. `retire_wrapped`
        once an entry not old enough (or the end) is reached."""
        after = self._retire_after

        def retire(db: sqlite3.Connection) -> tuple[list[str], int, bool]:
            chunk = db.execute(_OLDEST, (after, FEED_RETIRE_ROWS)).fetchall()
            old = [(int(seq), str(code)) for seq, code, arrival in chunk if arrival < cutoff_ns]
            done = len(old) < FEED_RETIRE_ROWS
            retired: list[str] = []
            for code in dict.fromkeys(code for _, code in old):
                newest = db.execute(_NEWEST_ARRIVAL, (code,)).fetchone()
                if newest is not None and newest[0] < cutoff_ns:
                    db.execute(_RETIRE, (code,))
                    retired.append(code)
            return retired, old[-1][0] if old else after, done

        out = self.journal.run(retire, write=True)
        if out is None or not self.journal.commit():
            return None
        retired, last, done = out
        self._retire_after = 0 if done else last
        return retired

    @property
    def retire_wrapped(self) -> bool:
        """The last retire step reached the entries still within the retention."""
        return self._retire_after == 0

    @property
    def prune_wrapped(self) -> bool:
        """The last prune step reached the end of the entries."""
        return self._prune_after == 0


def _select_after(after: int) -> Callable[[sqlite3.Connection], list[Any]]:
    return lambda db: db.execute(_SELECT, (after, FEED_REPLAY_ROWS)).fetchall()


def _known_ids(db: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    """Which of `ids` were claimed before."""
    known: set[str] = set()
    for i in range(0, len(ids), _SEEN_BATCH):
        part = ids[i : i + _SEEN_BATCH]
        marks = ",".join("?" * len(part))
        known.update(
            r[0] for r in db.execute(f"SELECT id FROM feed_id WHERE id IN ({marks})", part)
        )
    return known


def _row_entry(row: FeedRow, arrival_ns: int) -> tuple[object, ...]:
    return (
        _ROW, row.barcode, row.destination, row.postcode, row.country, row.origin,
        row.customs, row.service, None, row.id, arrival_ns,
    )  # fmt: skip


def _customs_entry(update: CustomsUpdate, arrival_ns: int) -> tuple[object, ...]:
    hold = 1 if update.hold else 0
    return (
        _CUSTOMS, update.barcode, None, None, None, None, None, None, hold, update.id, arrival_ns,
    )  # fmt: skip


def _runs(chunk: Sequence[Any]) -> Iterator[Replayed]:
    """Consecutive entries of one kind and one arrival, as one batch each."""
    rows: list[FeedRow] = []
    customs: list[CustomsUpdate] = []
    current: tuple[int, int] | None = None
    last_seq = 0
    for seq, kind, barcode, dest, pc, country, origin, cust, service, hold, eid, arrival in chunk:
        key = (int(kind), int(arrival))
        if current is not None and key != current:
            yield Replayed(FeedBatch(rows, customs, []), current[1], last_seq)
            rows, customs = [], []
        current, last_seq = key, int(seq)
        if kind == _ROW:
            rows.append(FeedRow(barcode, dest, pc, country, origin, cust, eid, service))
        else:
            customs.append(CustomsUpdate(barcode, bool(hold), eid))
    if current is not None:
        yield Replayed(FeedBatch(rows, customs, []), current[1], last_seq)


def replay_file(path: Path, after_seq: int = 0) -> Iterator[Replayed]:
    """Every entry of a feeds journal file after `after_seq`, in arrival order, read beside
    its writer (a read-only connection: the daemon replays the file while its feeds worker,
    which holds the file's lock, has not started writing yet). Nothing when there is no
    file yet or no feed table in it."""
    if not path.exists():
        return
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        after = after_seq
        while True:
            try:
                chunk = _select_after(after)(db)
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return
                raise
            if not chunk:
                return
            yield from _runs(chunk)
            after = int(chunk[-1][0])
            if len(chunk) < FEED_REPLAY_ROWS:
                return
    finally:
        db.close()


def counts_file(path: Path) -> dict[str, int]:
    """The applied counts of a feeds journal file (read-only, as `replay_file`); empty
    when there is no file or no count yet."""
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(_COUNTS).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise
    finally:
        db.close()
    return {str(name): int(value) for name, value in rows}


_COLUMNS: Final = (
    "seq, kind, barcode, destination, postcode, country, origin, customs, service, hold, id,"
    " arrival_ns"
)


def _line_feeds(line_journal: Path) -> tuple[list[Any], list[Any], list[Any]] | None:
    """The feed entries, ids and counts in a line's journal (read-only); None when it has
    none."""
    db = sqlite3.connect(f"file:{line_journal}?mode=ro", uri=True)
    try:
        feed = db.execute(f"SELECT {_COLUMNS} FROM feed ORDER BY seq").fetchall()
        if not feed:
            return None
        return feed, db.execute("SELECT id, seq FROM feed_id").fetchall(), _counts(db)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    finally:
        db.close()


def _counts(db: sqlite3.Connection) -> list[Any]:
    try:
        return db.execute(_COUNTS).fetchall()
    except sqlite3.OperationalError:
        return []


def adopt_line_feeds(
    line_journal: Path, feeds_journal: Path, open_journal: Callable[[], Journal]
) -> int:
    """The feed entries an earlier sorterd journaled in the line's journal (before the feeds
    had a journal of their own), with their ids and counts, copied into the feeds journal
    when it has never been used (no counts: a journal that wrote anything has them); the
    entries copied. One transaction: a copy cut short is done again at the next start.
    Without it the first start after the upgrade would lose every feed row and customs
    decision (a hold among them) the line had. `open_journal`: the feeds journal, opened
    (it takes the file's lock)."""
    try:
        if not line_journal.exists() or counts_file(feeds_journal):
            return 0
        old = _line_feeds(line_journal)
    except sqlite3.Error:
        # A damaged file: the journals set it aside when they open it (drivers/journal_file.py).
        return 0
    if old is None:
        return 0
    feed, ids, counts = old
    if not counts:  # a journal from before the counts: what it holds
        rows = sum(1 for entry in feed if entry[1] == _ROW)
        counts = [("rows_applied", rows), ("customs_applied", len(feed) - rows)]
    journal = open_journal()
    try:
        FeedStore(journal, remember_ids=1)

        def copy(db: sqlite3.Connection) -> bool:
            if db.execute(_COUNTS).fetchone() is not None:
                return False  # adopted meanwhile
            marks = ",".join("?" * 12)
            db.executemany(f"INSERT INTO feed ({_COLUMNS}) VALUES ({marks})", feed)
            db.executemany(_CLAIM_ID, ids)
            db.executemany(_COUNT, counts)
            return True

        copied = journal.run(copy, write=True)
        if copied is None or not journal.commit():
            raise JournalError(f"journal {journal.path}: cannot adopt the line journal's feeds")
    finally:
        journal.close()
    return len(feed) if copied else 0
