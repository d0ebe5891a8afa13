"""The archive in PostgreSQL (docs/archive.md): schema and its migrations, daily partitions,
batch writes keyed by message id, retention, and the queries of `trace` and `report`.

One table, `sorterd_archive.pieces`, partitioned by day (UTC) on the message's own `ts`.
PostgreSQL wants the partition key in every unique index, so the key is (id, ts): a
redelivered message carries the same id and the same ts (the line's journal keeps the
payload), so it conflicts and changes nothing. Schema changes and partition DDL run under
one advisory lock, so several archivers can start and roll over midnight together.

`sorterd_archive.codes` holds (code, day) for every code and barcode of every row: `trace`
probes it, then searches only the partitions of those days. A statement trigger on
`pieces` fills it from the rows each INSERT or COPY actually added, in the same transaction,
whoever writes (an archiver of an older version too). So only rows written before the
trigger existed are missing: those of the partitions there were when schema version 2 was
migrated to, which the migration lists in `uncoded_days` (under the DDL lock: no partition
comes meanwhile; a partition made later holds only rows the trigger saw). `backfill_day`
fills them in, one day a transaction, while the archiver runs; until then `trace` searches
those days as it did before (docs/archive.md, "trace").

The password travels apart from the URL and never appears in a message: errors name the
URL as `shown_url` gives it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from drivers.archive_rows import COLUMNS
from sorter.errors import SorterdError

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "ArchiveDb",
    "ArchiveDbError",
    "codes_of",
    "connect",
    "connect_sync",
    "day_of",
    "describe_error",
    "shown_url",
]

SCHEMA = "sorterd_archive"
# Any constant; only archivers take it (pg_advisory_xact_lock), around DDL.
_DDL_LOCK = 0x736F7274  # "sort"
_PARTITION = re.compile(r"^pieces_(\d{8})$")
# The columns' types, in the order of COLUMNS: a binary COPY sends each value as exactly
# that type (psycopg would otherwise pick int2, int4 or int8 by the value).
_COPY_TYPES = (
    "text", "timestamptz", "text", "text", "int8", "int8", "text", "text[]", "text", "int8",
    "text", "int8", "text", "int8", "float8",
)  # fmt: skip
CONNECT_TIMEOUT_S = 10
# (code, day) of every code and barcode of the rows of `source`, in key order: two writers
# adding the same keys then wait for each other in the same order and cannot deadlock.
# `ts AT TIME ZONE 'UTC'` is the day whatever the session's time zone.
_CODES_OF = (
    f"INSERT INTO {SCHEMA}.codes (code, day) "
    "SELECT DISTINCT c.code, (r.ts AT TIME ZONE 'UTC')::date FROM {source} r "
    "CROSS JOIN LATERAL unnest(r.codes || r.barcode) AS c(code) "
    "WHERE c.code IS NOT NULL ORDER BY 1, 2 ON CONFLICT DO NOTHING;"
)

_MIGRATIONS: tuple[str, ...] = (
    # 1: the table, its key, and what trace looks things up by.
    f"""
    CREATE TABLE {SCHEMA}.pieces (
        id text NOT NULL,
        ts timestamptz NOT NULL,
        kind text NOT NULL,
        line text NOT NULL,
        tracking_id bigint NOT NULL,
        seq bigint NOT NULL,
        barcode text,
        codes text[],
        destination text,
        chute bigint,
        reason text,
        chute_actual bigint,
        outcome text,
        recirculations bigint NOT NULL,
        latency_ms double precision,
        -- When the row was written: archived_at - ts is the archive's lag for that message.
        archived_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (id, ts)
    ) PARTITION BY RANGE (ts);
    CREATE INDEX pieces_barcode ON {SCHEMA}.pieces (barcode) WHERE barcode IS NOT NULL;
    CREATE INDEX pieces_codes ON {SCHEMA}.pieces USING gin (codes) WITH (fastupdate = off);
    """,
    # 2: code -> days, so that trace searches only the days of a code (module docstring).
    # Not partitioned: one index probe finds every day of a code, where one index per day
    # would cost a probe per day kept. `codes_day` is what retention deletes by.
    f"""
    CREATE TABLE {SCHEMA}.codes (
        code text NOT NULL,
        day date NOT NULL,
        PRIMARY KEY (code, day)
    );
    CREATE INDEX codes_day ON {SCHEMA}.codes (day);
    CREATE TABLE {SCHEMA}.uncoded_days (day date PRIMARY KEY);
    INSERT INTO {SCHEMA}.uncoded_days
        SELECT to_date(substr(c.relname, 8), 'YYYYMMDD') FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = '{SCHEMA}.pieces'::regclass AND c.relname ~ '^pieces_[0-9]{{8}}$';
    CREATE FUNCTION {SCHEMA}.note_codes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {_CODES_OF.format(source="added")}
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER pieces_note_codes AFTER INSERT ON {SCHEMA}.pieces
        REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.note_codes();
    """,
)


# The version `ArchiveDb.migrate` brings a schema to.
SCHEMA_VERSION = len(_MIGRATIONS)


def codes_of(source: str) -> str:
    """The statement that notes (code, day) of every row of the table `source` (a
    qualified, quoted name) in `codes`."""
    return _CODES_OF.format(source=source)


class ArchiveDbError(SorterdError):
    """The archive database cannot be reached or used; the message names no password."""


def shown_url(url: str) -> str:
    """The URL without its password: what logs and errors show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def describe_error(exc: BaseException, password: str | None) -> str:
    """psycopg's message on one line, any password in it replaced (belt and braces)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if password:
        text = text.replace(password, "***")
    return text


def day_of(stamp: dt.datetime) -> dt.date:
    return stamp.astimezone(dt.UTC).date()


def _partition_name(day: dt.date) -> str:
    return f"pieces_{day:%Y%m%d}"


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _failure(url: str, exc: BaseException, password: str | None) -> ArchiveDbError:
    return ArchiveDbError(f"archive database {shown_url(url)}: {describe_error(exc, password)}")


async def connect(url: str, password: str | None) -> psycopg.AsyncConnection[tuple[Any, ...]]:
    try:
        return await psycopg.AsyncConnection.connect(
            url, password=password, connect_timeout=CONNECT_TIMEOUT_S
        )
    except psycopg.Error as exc:
        raise _failure(url, exc, password) from None


def connect_sync(url: str, password: str | None) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        return psycopg.connect(url, password=password, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise _failure(url, exc, password) from None


class ArchiveDb:
    """The archiver's connection: schema, partitions, batch writes, retention."""

    def __init__(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        self.conn = conn
        self._days: set[dt.date] = set()
        self._staging = False

    async def migrate(self) -> int:
        """Create or bring the schema up to date; the version it is at."""
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            await self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            await self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (key text PRIMARY KEY, value text)"
            )
            cur = await self.conn.execute(
                f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'"
            )
            row = await cur.fetchone()
            version = int(row[0]) if row else 0
            for number, step in enumerate(_MIGRATIONS[version:], start=version + 1):
                await self.conn.execute(step.encode())
                version = number
            await self.conn.execute(
                f"INSERT INTO {SCHEMA}.meta VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(version),),
            )
        return version

    async def ensure_days(self, days: set[dt.date]) -> None:
        """Create the partitions of these days (UTC) unless they exist."""
        new = days - self._days
        if not new:
            return
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            for day in sorted(new):
                statement = sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {table} PARTITION OF {parent} "
                    "FOR VALUES FROM ({start}) TO ({end})"
                ).format(
                    table=sql.Identifier(SCHEMA, _partition_name(day)),
                    parent=sql.Identifier(SCHEMA, "pieces"),
                    start=sql.Literal(_midnight(day)),
                    end=sql.Literal(_midnight(day + dt.timedelta(days=1))),
                )
                await self.conn.execute(statement)
        self._days |= new

    async def _partitions(self) -> dict[dt.date, str]:
        """The daily partitions there are: their names by day."""
        cur = await self.conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            (f"{SCHEMA}.pieces",),
        )
        found = {}
        for (name,) in await cur.fetchall():
            match = _PARTITION.match(name)
            if match is not None:
                found[dt.datetime.strptime(match.group(1), "%Y%m%d").date()] = name
        return found

    async def backfill_day(self) -> dt.date | None:
        """Put the codes of the oldest of `uncoded_days` (written before schema version 2)
        into `codes`, in one transaction; that day, or None when none is left. Rows added
        to it meanwhile went through the trigger, so the day is then whole."""
        async with self.conn.transaction():
            cur = await self.conn.execute(f"SELECT min(day) FROM {SCHEMA}.uncoded_days")
            row = await cur.fetchone()
        day: dt.date | None = row[0] if row else None
        if day is None:
            return None
        table = sql.Identifier(SCHEMA, _partition_name(day)).as_string(self.conn)
        forget = f"DELETE FROM {SCHEMA}.uncoded_days WHERE day = %s"
        try:
            async with self.conn.transaction():
                await self.conn.execute(codes_of(table).encode())
                await self.conn.execute(forget, (day,))
        except psycopg.errors.UndefinedTable:
            async with self.conn.transaction():  # dropped meanwhile: nothing to fill in
                await self.conn.execute(forget, (day,))
        return day

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Write a batch of rows (the values of COLUMNS) in one transaction; how many were
        new (a redelivery is not). A binary COPY into a temporary table, then one INSERT
        ... ON CONFLICT DO NOTHING: COPY cannot skip a conflict itself."""
        if not rows:
            return 0
        first, last = day_of(min(r[1] for r in rows)), day_of(max(r[1] for r in rows))
        # One day is the common case: no day computed per row then.
        await self.ensure_days({first} if first == last else {day_of(r[1]) for r in rows})
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
        async with self.conn.transaction(), self.conn.cursor() as cur:
            if not self._staging:
                await cur.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS incoming "
                    f"(LIKE {SCHEMA}.pieces INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                self._staging = True
            copy_in = sql.SQL("COPY incoming ({}) FROM STDIN (FORMAT BINARY)").format(columns)
            async with cur.copy(copy_in) as copy:
                copy.set_types(_COPY_TYPES)
                for row in rows:
                    await copy.write_row(row)
            await cur.execute(
                sql.SQL(
                    "INSERT INTO {parent} ({cols}) SELECT {cols} FROM incoming "
                    "ORDER BY id ON CONFLICT DO NOTHING"
                ).format(parent=sql.Identifier(SCHEMA, "pieces"), cols=columns)
            )
            return max(cur.rowcount, 0)

    async def drop_expired(self, retention_days: int, now: dt.datetime) -> list[str]:
        """Drop the partitions whose whole day is older than the retention; their names."""
        first_kept = day_of(now) - dt.timedelta(days=retention_days)
        dropped = []
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            for day, name in sorted((await self._partitions()).items()):
                if day < first_kept:
                    await self.conn.execute(
                        sql.SQL("DROP TABLE {}").format(sql.Identifier(SCHEMA, name))
                    )
                    dropped.append(name)
                    self._days.discard(day)
            await self.conn.execute(
                f"DELETE FROM {SCHEMA}.uncoded_days WHERE day < %s", (first_kept,)
            )
        # Their codes in a transaction of their own: the DROP locks the whole table against
        # writes until its commit, and a day's codes are millions of rows. Codes of a day
        # that has no partition any more lead trace nowhere, and the next pass deletes what
        # an interruption left.
        async with self.conn.transaction():
            await self.conn.execute(f"DELETE FROM {SCHEMA}.codes WHERE day < %s", (first_kept,))
        return dropped
