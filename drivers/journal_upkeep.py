"""Keeping the journal within its bounds: pruning sent rows, watching its size and disk.

Sent rows are pruned after the retention, and when the file nears its size bound; unsent
rows are never pruned, so a journal full of unsent rows refuses writes (the bound is
SQLite's `max_page_count`, drivers/journal_file.py). The statements here run inside the
journal's transaction; the journal (drivers/journal.py) commits them.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Final

__all__ = [
    "ALARM_AT_FRACTION",
    "PRUNE_AT_FRACTION",
    "PRUNE_BATCH_ROWS",
    "delete_sent_batch",
    "disk_free_bytes",
    "size_bytes",
    "space_alarms",
]

# Rows deleted per slice: each slice holds the event loop for its DELETE and commit. A
# slice of 5,000 rows took 44 ms (112 ms at worst) on a loaded 2-core host, one of 500
# takes a few: the daemon repeats slices with a pause between them (sorterd/health.py).
PRUNE_BATCH_ROWS: Final = 500
# Pruning frees space for new rows once the file is this full; the alarm is raised above it.
PRUNE_AT_FRACTION: Final = 0.8
ALARM_AT_FRACTION: Final = 0.9


def size_bytes(db: sqlite3.Connection) -> int:
    """The bytes the journal's pages hold (free pages left out); 0 when it cannot be read."""
    try:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    except sqlite3.Error:
        return 0
    return int((pages - free) * page_size)


def delete_sent_batch(
    db: sqlite3.Connection, sent_upto: int, cutoff_wall_ns: int, *, too_full: bool
) -> int:
    """Delete the oldest PRUNE_BATCH_ROWS sent rows: those written before `cutoff_wall_ns`
    of them, or all of them when the file is `too_full`. The rows deleted."""
    if too_full:
        cur = db.execute(
            "DELETE FROM message WHERE id IN (SELECT id FROM message"
            " WHERE id <= ? ORDER BY id LIMIT ?)",
            (sent_upto, PRUNE_BATCH_ROWS),
        )
    else:
        # Only the oldest batch by id is looked at: rows are written in time order, so the
        # rows past retention are the first ones. `wall_ns < ?` inside the subquery (no
        # index on it) read every sent row on each prune: 20 ms on the event loop at
        # 160,000 rows, seconds with 72 h of a busy line.
        cur = db.execute(
            "DELETE FROM message WHERE id IN (SELECT id FROM message"
            " WHERE id <= ? ORDER BY id LIMIT ?) AND wall_ns < ?",
            (sent_upto, PRUNE_BATCH_ROWS, cutoff_wall_ns),
        )
    return int(cur.rowcount)


def disk_free_bytes(folder: Path) -> int:
    """Free bytes on the file system of `folder`; 0 when it cannot be asked."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def space_alarms(
    *, size_bytes: int, max_size_bytes: int, free_bytes: int, min_free_bytes: int, healthy: bool
) -> list[str]:
    """Alarms for P/status: the file near its bound, the disk near full, writes failing."""
    alarms = []
    if size_bytes > max_size_bytes * ALARM_AT_FRACTION:
        alarms.append("journal_full")
    if free_bytes < min_free_bytes:
        alarms.append("disk_low")
    if not healthy:
        alarms.append("journal_error")
    return alarms
