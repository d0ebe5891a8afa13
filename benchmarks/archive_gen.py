"""The generated archive of benchmarks/archive.py's trace and report figures, and its cache.

Generation: `rows` rows (half decisions, half results of `rows / 2` items, a result 20 s
after its decision) over `days` days ending on the day of the run, and the partition of
the day after (the last results). Each day is loaded as PostgreSQL loads best, as a table
of its own without indexes: the rows in one `INSERT ... SELECT` from `generate_series`, in
the order of their time as an archiver receives them; then the partition's indexes are
built (the names and definitions `CREATE TABLE ... PARTITION OF` would give them), the
table attached as the day's partition (a CHECK constraint of its bounds, dropped after,
spares the attach its scan), and the day's codes put into `codes` by the statement the
archiver's own fill-in of a day uses. `codes`' key and index are built once, after every
day; then `VACUUM (ANALYZE)`, which autovacuum does to an archive's older days. The tables
are the same, row for row, index for index, as an archiver writing those rows as
messages makes them (tests/test_archive_generate.py compares the two); only the physical
order of a day's codes and the indexes' page fill differ (built at once, not grown).

Cache: the server's whole folder (its data directory) is kept in
`<cache>/archive-<rows>-rows-<days>-days/`, with `meta.json` beside the data (rows, days,
the generator's layout, the schema version, PostgreSQL's major version, when it was made),
written last, once the files are on disk: a folder without it is an interrupted
generation. A later run asking the same rows and days starts that server again and reuses
the archive; one whose layout, schema version or PostgreSQL version differs from this
code's is stale, deleted and generated again. `<cache>` is `$SORTERD_BENCH_CACHE`, else
`$XDG_CACHE_HOME/sorterd-bench`, else `~/.cache/sorterd-bench` (`/var/cache/sorterd-bench`
for root: the server then runs as the `postgres` user, who cannot enter root's home).
The rows have no random part: rows, days and the first day say all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from drivers.archive_db import SCHEMA, SCHEMA_VERSION, ArchiveDb, codes_of
from tests.pgkit import ROLE, ROLE_PASSWORD, PgServer

__all__ = [
    "LAYOUT",
    "Generated",
    "cache_root",
    "day_rows",
    "generated_archive",
    "partition_days",
]

# The shape of the generated rows (the SELECT below): a cache of another layout is stale.
# 2: a day's rows in the heap in the order of their time (1: an item's decision and result
# side by side, one heap page where an archiver's rows take two).
LAYOUT = 2
DATABASE = "trace"
_DAY_S = 86_400
_RESULT_AFTER_S = 20
_WORKERS = 2  # days loaded at once (the machine has 2 cores)
_META = "meta.json"
# What a generated row takes on disk with its share of the indexes and of `codes`, with a
# margin (about 370 B in the partitions and 125 B in `codes` at 50,000,000 rows): a run
# generates no more rows than the disk holds.
_DISK_B_PER_ROW = 600
_DISK_SPARE_B = 5 * 2**30

# The rows of items lo..hi-1 whose time falls in [day_from, day_to), in the order of their
# time, as an archiver receives them: an item's result lands 20 s of other items' rows after
# its decision, not beside it (a cold trace of a code reads both rows' heap pages).
_ROWS = f"""
SELECT * FROM (
    SELECT k || g AS id,
        %(start)s + (g::float8 * %(span)s / %(items)s + d) * interval '1 second' AS ts,
        CASE k WHEN 'd-' THEN 'decision' ELSE 'result' END AS kind,
        'hub/line-' || (g %% 3) AS line, g %% 100000 AS tracking_id, g %% 65536 AS seq,
        'RB' || lpad(g::text, 9, '0') || 'MA' AS barcode,
        CASE k WHEN 'd-' THEN ARRAY['RB' || lpad(g::text, 9, '0') || 'MA',
            ']C1' || lpad(g::text, 18, '0')] END AS codes,
        'D' || (g %% 40) AS destination, g %% 200 AS chute,
        CASE k WHEN 'd-' THEN 'ok' END AS reason,
        CASE k WHEN 'r-' THEN g %% 200 END AS chute_actual,
        CASE k WHEN 'r-' THEN 'sorted' END AS outcome, 0 AS recirculations,
        0.2::float8 AS latency_ms
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) g
    CROSS JOIN LATERAL (VALUES ('d-', 0, g), ('r-', {_RESULT_AFTER_S}, g)) AS kinds(k, d, _g)
) r WHERE ts >= %(day_from)s AND ts < %(day_to)s
ORDER BY ts, id
"""
_INSERT_COLUMNS = (
    "id, ts, kind, line, tracking_id, seq, barcode, codes, destination, chute, reason, "
    "chute_actual, outcome, recirculations, latency_ms"
)


@dataclass(frozen=True, slots=True)
class Generated:
    """A generated archive and where it came from."""

    url: str
    rows: int  # generated: fewer than asked when the disk held fewer
    days: int
    first: dt.date
    generate_s: float
    generated_at: str  # ISO 8601, UTC
    reused: bool
    folder: Path

    @property
    def last(self) -> dt.date:
        """The last whole day of items (the report's day)."""
        return self.first + dt.timedelta(days=self.days - 1)

    def origin(self) -> str:
        if self.reused:
            return f"reused, generated at {self.generated_at} in {self.generate_s:.0f} s"
        return f"generated in {self.generate_s:.0f} s"


def cache_root() -> Path:
    """Where generated archives are kept (module docstring)."""
    if os.environ.get("SORTERD_BENCH_CACHE"):
        return Path(os.environ["SORTERD_BENCH_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "sorterd-bench"
    if os.geteuid() == 0:
        return Path("/var/cache/sorterd-bench")
    return Path.home() / ".cache" / "sorterd-bench"


def partition_days(first: dt.date, days: int) -> list[dt.date]:
    """The partitions: the days of items and the day after (the last results)."""
    return [first + dt.timedelta(days=d) for d in range(days + 1)]


def day_rows(first: dt.date, days: int, rows: int, day: dt.date) -> dict[str, Any]:
    """The parameters of `_ROWS` for the rows of one day."""
    items = rows // 2
    span_s = days * _DAY_S
    k = (day - first).days
    start = dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC)
    # Items whose decision or result may fall in the day, a little wider (the WHERE cuts).
    lo = max(0, (k * _DAY_S - _RESULT_AFTER_S) * items // span_s - 1)
    hi = min(items, -(-((k + 1) * _DAY_S * items) // span_s) + 1)
    return {
        "start": start, "span": span_s, "items": items, "lo": lo, "hi": max(lo, hi),
        "day_from": start + dt.timedelta(days=k), "day_to": start + dt.timedelta(days=k + 1),
    }  # fmt: skip


def _pg_major(server: PgServer) -> str:
    return server.bin.parent.name


def _meta_ok(meta: dict[str, Any], rows: int, days: int, server: PgServer) -> str | None:
    """Why a cached archive cannot serve (None: it can)."""
    wanted = {
        "rows_asked": rows, "days": days, "layout": LAYOUT, "schema_version": SCHEMA_VERSION,
        "postgresql": _pg_major(server),
    }  # fmt: skip
    for key, value in wanted.items():
        if meta.get(key) != value:
            return f"{key} {meta.get(key)!r}, now {value!r}"
    return None


def _day_table(day: dt.date) -> str:
    return f"pieces_{day:%Y%m%d}"


def _load_day(url: str, first: dt.date, days: int, rows: int, day: dt.date) -> None:
    """One day: a table of its own, loaded, indexed, attached, its codes noted."""
    name = _day_table(day)
    table = sql.Identifier(SCHEMA, name)
    params = day_rows(first, days, rows, day)
    with psycopg.connect(url, password=ROLE_PASSWORD, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET max_parallel_maintenance_workers = 0")  # _WORKERS days at once
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                table, sql.Identifier(SCHEMA, "pieces")
            )
        )
        conn.execute(f"INSERT INTO {SCHEMA}.{name} ({_INSERT_COLUMNS}) {_ROWS}".encode(), params)
        bounds = sql.SQL("{} >= {} AND {} < {}").format(
            sql.Identifier("ts"), sql.Literal(params["day_from"]),
            sql.Identifier("ts"), sql.Literal(params["day_to"]),
        )  # fmt: skip
        # The names and definitions the partition's indexes get from `pieces`'.
        for statement in (
            f"ALTER TABLE {SCHEMA}.{name} ADD PRIMARY KEY (id, ts)",
            f"CREATE INDEX {name}_barcode_idx ON {SCHEMA}.{name} (barcode) "
            "WHERE barcode IS NOT NULL",
            f"CREATE INDEX {name}_codes_idx ON {SCHEMA}.{name} USING gin (codes) "
            "WITH (fastupdate = off)",
        ):
            conn.execute(statement.encode())
        check = sql.SQL("ALTER TABLE {} ADD CONSTRAINT bounds CHECK ({})")
        conn.execute(check.format(table, bounds))
        attach = sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})")
        conn.execute(
            attach.format(
                sql.Identifier(SCHEMA, "pieces"),
                table,
                sql.Literal(params["day_from"]),
                sql.Literal(params["day_to"]),
            )
        )
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT bounds").format(table))
        conn.execute(codes_of(f"{SCHEMA}.{name}").encode())


def _generate(url: str, rows: int, days: int, first: dt.date) -> None:
    """The archive's schema (the archiver's migrations), then every day's rows."""

    async def migrate() -> None:
        conn = await psycopg.AsyncConnection.connect(url, password=ROLE_PASSWORD)
        await ArchiveDb(conn).migrate()
        await conn.close()

    asyncio.run(migrate())
    with psycopg.connect(url, password=ROLE_PASSWORD, autocommit=True) as conn:
        # Built once at the end: one sort, not 50,000,000 inserts into a growing index.
        conn.execute(f"ALTER TABLE {SCHEMA}.codes DROP CONSTRAINT codes_pkey")
        conn.execute(f"DROP INDEX {SCHEMA}.codes_day")
    with ThreadPoolExecutor(_WORKERS) as pool:
        done = [
            pool.submit(_load_day, url, first, days, rows, day)
            for day in partition_days(first, days)
        ]
        for future in done:
            future.result()
    with psycopg.connect(url, password=ROLE_PASSWORD, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(f"ALTER TABLE {SCHEMA}.codes ADD PRIMARY KEY (code, day)")
        conn.execute(f"CREATE INDEX codes_day ON {SCHEMA}.codes (day)")
        conn.execute(f"VACUUM (ANALYZE) {SCHEMA}.pieces, {SCHEMA}.codes")


def _sync(folder: Path) -> None:
    """Every file of the folder on disk (the server runs with fsync off)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)


def _fresh(folder: Path, rows_asked: int, days: int) -> tuple[PgServer, Generated]:
    """A new server in `folder`, the archive generated in it, its meta.json written; no
    more rows than the disk holds."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    free_b = shutil.disk_usage(folder).free - _DISK_SPARE_B
    rows = max(0, min(rows_asked, free_b // _DISK_B_PER_ROW))
    server = PgServer(folder)
    server.init()
    server.start()
    try:
        server.create_role()
        with server.superuser() as conn:
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        url = server.url(DATABASE)
        first = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days - 1)
        t0 = time.perf_counter()
        _generate(url, rows, days, first)
        generate_s = time.perf_counter() - t0
        with server.superuser() as conn:
            conn.execute("CHECKPOINT")
        _sync(server.data)
    except BaseException:  # interrupted or failed: no server left running in the cache
        with contextlib.suppress(RuntimeError):
            server.stop()
        raise
    meta = {
        "rows_asked": rows_asked, "rows": rows, "days": days, "layout": LAYOUT,
        "schema_version": SCHEMA_VERSION, "postgresql": _pg_major(server),
        "first_day": first.isoformat(), "generate_s": round(generate_s, 1),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    (folder / _META).write_text(json.dumps(meta, indent=1) + "\n")
    return server, _generated(url, meta, folder, reused=False)


def _generated(url: str, meta: dict[str, Any], folder: Path, *, reused: bool) -> Generated:
    return Generated(
        url=url, rows=meta["rows"], days=meta["days"],
        first=dt.date.fromisoformat(meta["first_day"]), generate_s=meta["generate_s"],
        generated_at=meta["generated_at"], reused=reused, folder=folder,
    )  # fmt: skip


def _stop_left(server: PgServer) -> None:
    """A server left running in the folder by a run that was killed: stopped."""
    if (server.data / "postmaster.pid").exists():
        with contextlib.suppress(RuntimeError):
            server.stop()


def _schema_version(url: str) -> int:
    with psycopg.connect(url, password=ROLE_PASSWORD) as conn:
        row = conn.execute(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'")
        found = row.fetchone()
    return int(found[0]) if found else 0


def _reuse(folder: Path, rows: int, days: int) -> tuple[PgServer, Generated] | str:
    """The cached archive's server started, or why it cannot serve."""
    try:
        meta = json.loads((folder / _META).read_text())
    except (OSError, ValueError) as exc:
        return f"no usable {_META} ({exc.__class__.__name__})"
    server = PgServer(folder)
    stale = _meta_ok(meta, rows, days, server)
    if stale:
        return stale
    _stop_left(server)
    try:
        server.start()
    except RuntimeError as exc:
        return f"its server did not start: {str(exc)[-200:]}"
    url = server.url(DATABASE)
    try:
        version = _schema_version(url)
    except BaseException:  # no server left running in the cache
        with contextlib.suppress(RuntimeError):
            server.stop()
        raise
    if version != SCHEMA_VERSION:
        server.stop()
        return "its schema version differs from its meta.json"
    return server, _generated(url, meta, folder, reused=True)


@contextlib.contextmanager
def generated_archive(
    rows: int, days: int, *, root: Path | None = None, fresh: bool = False
) -> Iterator[tuple[PgServer, Generated]]:
    """A running server holding a generated archive of `rows` rows over `days` days: the
    cached one when it fits (`fresh`: generated again whatever), else generated and kept.
    The server is stopped at the end; its folder stays."""
    root = root if root is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    folder = root / f"archive-{rows}-rows-{days}-days"
    with open(root / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run on the same folder waits
        got = "asked to generate it again" if fresh else _reuse(folder, rows, days)
        if isinstance(got, str):
            if folder.exists():
                _stop_left(PgServer(folder))
                print(f"archive cache {folder}: stale ({got}), generated again", flush=True)
            got = _fresh(folder, rows, days)
        server, generated = got
        print(f"archive cache {folder}: {generated.origin()}", flush=True)
        try:
            yield server, generated
        finally:
            with contextlib.suppress(RuntimeError):
                server.stop()
