"""`sorterd trace CODE`: every decision and result of one barcode in the archive, oldest
first (docs/interfaces.md section 8, docs/archive.md).

CODE matches exactly the `barcode` of a message or any entry of its `codes`; the results of
the passes so found come too (a result names only the barcode the decision chose). The lookup
uses the per-partition indexes on barcode (btree) and codes (GIN), so its cost grows with
the number of days kept, not with the number of rows.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import psycopg

from drivers.archive_db import SCHEMA, ArchiveDbError, connect_sync, describe_error
from drivers.archive_rows import COLUMNS, Row, iso, trace_json
from sorter.config import Site
from sorterd.archive import archive_section

__all__ = ["EXIT_NOT_FOUND", "find", "print_table", "trace"]

EXIT_NOT_FOUND = 3

_QUERY = (
    f"SELECT {', '.join(COLUMNS)} FROM {SCHEMA}.pieces "
    "WHERE barcode = %(code)s OR codes @> ARRAY[%(code)s]::text[] "
    "ORDER BY ts, kind, id"
)


# The results of those passes: a result carries the decision's barcode only, so an item
# found by another of its codes would otherwise show its decisions without their outcomes.
_RESULTS_OF = (
    f"SELECT {', '.join(COLUMNS)} FROM {SCHEMA}.pieces "
    "WHERE barcode = %(barcode)s AND kind = 'result' AND line = %(line)s "
    "AND tracking_id = %(tracking_id)s AND seq = %(seq)s AND ts >= %(ts)s"
)


def find(conn: psycopg.Connection[tuple[Any, ...]], code: str) -> list[Row]:
    """The messages of `code`, oldest first; none when the archive has no table yet.

    Without parallel workers: the planner guesses thousands of rows per partition for
    `codes @>` (it has no statistics for unique array elements) and, past some 10 million
    rows, plans workers whose start costs more than the few index probes a code needs
    (10,000,000 rows: p50 40 ms with workers, 5 ms without; BENCHMARKS.md, "The archive").
    """
    conn.execute("SET max_parallel_workers_per_gather = 0")
    try:
        return _find(conn, code)
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("RESET max_parallel_workers_per_gather")


def _find(conn: psycopg.Connection[tuple[Any, ...]], code: str) -> list[Row]:
    try:
        rows = [Row(*row) for row in conn.execute(_QUERY, {"code": code}).fetchall()]
    except psycopg.errors.UndefinedTable:
        return []
    known = {r.id for r in rows}
    for r in list(rows):
        if r.kind != "decision" or r.barcode is None or r.barcode == code:
            continue
        params = {
            "barcode": r.barcode, "line": r.line, "tracking_id": r.tracking_id,
            "seq": r.seq, "ts": r.ts,
        }  # fmt: skip
        for found in conn.execute(_RESULTS_OF, params).fetchall():
            result = Row(*found)
            if result.id not in known:
                known.add(result.id)
                rows.append(result)
    rows.sort(key=lambda r: (r.ts, r.kind, r.id))
    return rows


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ";".join(value) or "-"
    return str(value)


def print_table(rows: list[Row], out: TextIO) -> None:
    head = ("ts", "line", "kind", "tracking_id/seq", "codes", "destination", "chute", "what")
    table = [head]
    for r in rows:
        what = r.reason if r.kind == "decision" else f"{r.outcome} at {_cell(r.chute_actual)}"
        table.append(
            (
                iso(r.ts),
                r.line,
                r.kind,
                f"{r.tracking_id}/{r.seq}",
                _cell(r.codes if r.codes is not None else r.barcode),
                _cell(r.destination),
                _cell(r.chute),
                f"{what} (recirc {r.recirculations})",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )


def trace(site: Site, code: str, *, as_json: bool) -> int:
    section = archive_section(site)
    with connect_sync(section.url, section.password) as conn:
        try:
            rows = find(conn, code)
        except psycopg.Error as exc:
            raise ArchiveDbError(
                f"archive database: {describe_error(exc, section.password)}"
            ) from None
    if as_json:
        json.dump([trace_json(r) for r in rows], sys.stdout, ensure_ascii=False)
        print()
    elif rows:
        print_table(rows, sys.stdout)
    if not rows:
        print(f"{code!r}: nothing in the archive", file=sys.stderr)
        return EXIT_NOT_FOUND
    return 0
