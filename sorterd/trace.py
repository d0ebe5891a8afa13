"""`sorterd trace CODE`: every decision and result of one barcode in the archive, oldest
first (docs/interfaces.md section 8, docs/archive.md).

CODE matches exactly the `barcode` of a message or any entry of its `codes`; the results of
the passes so found come too (a result names only the barcode the decision chose).

The lookup probes `codes` (code -> days, drivers/archive_db.py) once, then searches the
daily partitions of those days only, by their indexes on barcode (btree) and codes (GIN):
a code of one day costs a handful of page reads however many days are kept. A day of
`uncoded_days` (written before schema version 2, not yet filled in) is searched whatever
the code, and an archive without the codes table at all is searched in every partition,
as before. The days go into the query as constants, so PostgreSQL prunes the other
partitions when it plans, and does not plan them at all.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import psycopg
from psycopg import sql

from drivers.archive_db import SCHEMA, ArchiveDbError, connect_sync, describe_error
from drivers.archive_rows import COLUMNS, Row, iso, trace_json
from sorter.config import Site
from sorterd.archive import archive_section

__all__ = ["EXIT_NOT_FOUND", "find", "print_table", "trace"]

EXIT_NOT_FOUND = 3

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM {SCHEMA}.pieces WHERE "
_MATCHES = "(barcode = %(code)s OR codes @> ARRAY[%(code)s]::text[])"
# The results of those passes: a result carries the decision's barcode only, so an item
# found by another of its codes would otherwise show its decisions without their outcomes.
_RESULTS = "kind = 'result' AND barcode = ANY(%(barcodes)s)"

# The settings of a lookup (`find`), in the statement that looks the days up to save a
# round trip.
_SETTINGS = (
    "set_config('max_parallel_workers_per_gather', '0', %(local)s), "
    "set_config('jit', 'off', %(local)s)"
)
# The days of each code (code NULL: a day not in `codes` yet, to search for every code).
_DAYS = (
    f"SELECT NULL::text, NULL::date, {_SETTINGS} "
    f"UNION ALL SELECT code, day, NULL, NULL FROM {SCHEMA}.codes WHERE code = ANY(%(codes)s) "
    f"UNION ALL SELECT NULL, day, NULL, NULL FROM {SCHEMA}.uncoded_days"
)


def find(conn: psycopg.Connection[tuple[Any, ...]], code: str, *, lookup: bool = True) -> list[Row]:
    """The messages of `code`, oldest first; none when the archive has no table yet.
    `lookup=False` searches every partition, as before the codes table (benchmarks/archive.py
    compares the two).

    Without parallel workers and without JIT: the planner guesses thousands of rows per
    partition for `codes @>` (it has no statistics for unique array elements), and on
    tens of millions of rows it plans workers, and JIT-compiles the plan, at a cost far
    over the few index probes a code needs (10,000,000 rows: p50 40 ms with workers, 5 ms
    without; 50,000,000 rows over 31 days searched everywhere: 320 ms of JIT compilation
    before 8 ms of search; BENCHMARKS.md, "The archive").
    """
    # In a transaction (psycopg's default) the settings end with it: nothing to undo, and
    # a lookup of 2 round trips. Each costs a wake-up of the server process, which on a
    # busy machine is no longer negligible.
    local = not conn.autocommit
    try:
        return _find(conn, code, lookup=lookup, local=local)
    finally:
        if not local and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.execute("RESET max_parallel_workers_per_gather; RESET jit")


def _has_pieces(conn: psycopg.Connection[tuple[Any, ...]], *, local: bool) -> bool:
    """The settings of a lookup, then whether the archive has its table at all."""
    row = conn.execute(
        f"SELECT {_SETTINGS}, to_regclass('{SCHEMA}.pieces')", {"local": local}
    ).fetchone()
    assert row is not None
    return row[2] is not None


def _days(
    conn: psycopg.Connection[tuple[Any, ...]], codes: Iterable[str], *, local: bool
) -> dict[str, set[dt.date]]:
    """The days to search for each code: those of `codes`, and every day not in it yet.
    UndefinedTable when the archive has no codes table (schema version 1, or none)."""
    wanted = sorted(set(codes))
    days: dict[str, set[dt.date]] = {c: set() for c in wanted}
    everywhere: set[dt.date] = set()
    for code, day, *_ in conn.execute(_DAYS, {"codes": wanted, "local": local}).fetchall():
        if day is not None:  # None: the row of the settings
            (everywhere if code is None else days[code]).add(day)
    return {c: found | everywhere for c, found in days.items()}


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _rows(
    conn: psycopg.Connection[tuple[Any, ...]],
    where: str,
    days: set[dt.date] | None,
    params: dict[str, Any],
) -> list[Row]:
    """The rows matching `where` on those days (None: on every day)."""
    query: sql.SQL | sql.Composed = sql.SQL(_SELECT + where)
    if days is not None:
        if not days:
            return []
        spans = sql.SQL(" OR ").join(
            sql.SQL("(ts >= {} AND ts < {})").format(
                sql.Literal(_midnight(day)), sql.Literal(_midnight(day + dt.timedelta(days=1)))
            )
            for day in sorted(days)
        )
        query = sql.SQL("{} AND ({})").format(query, spans)
    return [Row(*row) for row in conn.execute(query, params).fetchall()]


def _find(
    conn: psycopg.Connection[tuple[Any, ...]], code: str, *, lookup: bool, local: bool
) -> list[Row]:
    days = None
    if lookup:
        try:
            days = _days(conn, [code], local=local)
        except psycopg.errors.UndefinedTable:
            # Schema version 1 (or no archive yet): every partition is searched. The error
            # aborted the transaction (a caller's open one too, as any error would).
            if local:
                conn.rollback()
    if days is None and not _has_pieces(conn, local=local):
        return []
    rows = _rows(conn, _MATCHES, None if days is None else days[code], {"code": code})
    rows += _results_of(conn, rows, code, use_days=days is not None, local=local)
    rows.sort(key=lambda r: (r.ts, r.kind, r.id))
    return rows


def _results_of(
    conn: psycopg.Connection[tuple[Any, ...]],
    rows: list[Row],
    code: str,
    *,
    use_days: bool,
    local: bool,
) -> list[Row]:
    """The results of the decisions found by another of their codes: those of their
    barcodes, then only those of the same pass (line, tracking id, seq) and not older than
    the decision; none already in `rows`."""
    passes: dict[tuple[str, str, int, int], dt.datetime] = {}
    for r in sorted(rows, key=lambda r: r.ts, reverse=True):  # the first decision last
        if r.kind == "decision" and r.barcode is not None and r.barcode != code:
            passes[(r.barcode, r.line, r.tracking_id, r.seq)] = r.ts
    if not passes:
        return []
    barcodes = {key[0] for key in passes}
    first = min(passes.values()).astimezone(dt.UTC).date()
    span = None
    if use_days:
        found = _days(conn, barcodes, local=local)
        span = {day for days in found.values() for day in days if day >= first}
    known = {r.id for r in rows}
    results = []
    for result in _rows(conn, _RESULTS, span, {"barcodes": sorted(barcodes)}):
        assert result.barcode is not None  # found by it
        decided = passes.get((result.barcode, result.line, result.tracking_id, result.seq))
        if decided is not None and result.ts >= decided and result.id not in known:
            known.add(result.id)
            results.append(result)
    return results


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
