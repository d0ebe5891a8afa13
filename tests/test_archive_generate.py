"""The benchmark's generated archive (benchmarks/archive_gen.py) against a real PostgreSQL:
its tables are what an archiver writing the same rows makes, and its cache is reused,
and generated again when stale."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from benchmarks import archive_gen
from benchmarks.archive_gen import generated_archive, partition_days
from drivers.archive_db import SCHEMA, ArchiveDb
from drivers.archive_rows import COLUMNS
from tests.pgkit import ROLE_PASSWORD, PgServer

pytestmark = pytest.mark.requires("postgresql")

_BATCH = 5000  # the archiver's default batch_rows


@pytest.fixture
def cache() -> Iterator[Path]:
    """A cache folder the server's user can enter (pytest's tmp_path is root's alone when
    the tests run as root and the server as postgres)."""
    folder = Path(tempfile.mkdtemp(prefix="sorterd-bench-cache-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, password=ROLE_PASSWORD) as conn:
        return conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM {SCHEMA}.pieces ORDER BY ts, id"
        ).fetchall()


async def _write_as_archiver(url: str, rows: list[tuple[Any, ...]], days: list[Any]) -> None:
    """The rows through the archiver's own writes, in batches as it receives them; one
    batch delivered twice."""
    conn = await psycopg.AsyncConnection.connect(url, password=ROLE_PASSWORD)
    db = ArchiveDb(conn)
    await db.migrate()
    await db.ensure_days(set(days))  # the generator's partitions, an empty one too
    for i in range(0, len(rows), _BATCH):
        await db.write(rows[i : i + _BATCH])
    await db.write(rows[:_BATCH])  # a redelivery
    await conn.close()


_SHAPE = {
    "codes": f"SELECT code, day FROM {SCHEMA}.codes",
    "partitions": (
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        f"JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '{SCHEMA}.pieces'::regclass"
    ),
    "indexes": (
        f"SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = '{SCHEMA}'"
    ),
    "constraints": (
        "SELECT r.relname, n.conname, pg_get_constraintdef(n.oid) FROM pg_constraint n "
        f"JOIN pg_class r ON r.oid = n.conrelid WHERE r.relnamespace = '{SCHEMA}'::regnamespace"
    ),
    "columns": (
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        f"FROM information_schema.columns WHERE table_schema = '{SCHEMA}'"
    ),
    "triggers": (
        "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
        f"JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = '{SCHEMA}'::regnamespace "
        "AND NOT t.tgisinternal"
    ),
    "meta": f"SELECT key, value FROM {SCHEMA}.meta",
}


def _shape(url: str) -> dict[str, set[tuple[Any, ...]]]:
    with psycopg.connect(url, password=ROLE_PASSWORD) as conn:
        return {name: set(conn.execute(q.encode()).fetchall()) for name, q in _SHAPE.items()}


def test_generated_tables_are_what_an_archiver_writes(cache: Path) -> None:
    # 2 days: an item every 17 s, its result 20 s after its decision (the 50,000,000
    # rows in 30 days: every 0.1 s), so that time's order interleaves items.
    with generated_archive(20_000, 2, root=cache) as (server, made):
        assert not made.reused
        assert made.rows == 20_000
        rows = _rows(made.url)
        assert len(rows) == 20_000
        assert {r[2] for r in rows} == {"decision", "result"}
        written = server.new_database()
        asyncio.run(_write_as_archiver(written, rows, partition_days(made.first, made.days)))
        assert _rows(written) == rows
        generated, archived = _shape(made.url), _shape(written)
        # Every code and barcode of every row with the (UTC) day of the row.
        noted = {(c, r[1].astimezone(dt.UTC).date()) for r in rows for c in [*(r[7] or []), r[6]]}
        assert archived["codes"] == noted
        assert len(noted) > 20_000
        for name in _SHAPE:
            assert generated[name] == archived[name], name
        # The heap in the order a live archiver writes it (the messages of batch_wait_ms,
        # 200 ms, at a time: their time's order), not an item's decision and result side by
        # side 20 s of other rows early: what a cold trace reads from disk.
        heap = _heap_order(made.url)
        assert heap == sorted(heap)


def _heap_order(url: str) -> list[tuple[Any, ...]]:
    """(partition, ts, id) of every row in the order of the partitions' heaps."""
    with psycopg.connect(url, password=ROLE_PASSWORD) as conn:
        return conn.execute(
            f"SELECT tableoid::regclass::text, ts, id FROM {SCHEMA}.pieces ORDER BY 1, ctid"
        ).fetchall()


def test_a_failed_generation_leaves_no_server_running(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_: Any) -> None:
        raise RuntimeError("generation failed")

    monkeypatch.setattr(archive_gen, "_generate", fail)
    folder = cache / "archive-2000-rows-2-days"
    try:
        with (
            pytest.raises(RuntimeError, match="generation failed"),
            generated_archive(2_000, 2, root=cache),
        ):
            pass
        assert not (folder / "data" / "postmaster.pid").exists()
    finally:
        if (folder / "data" / "postmaster.pid").exists():  # left by the defect: stopped
            PgServer(folder).stop()


def test_the_cache_is_reused_and_regenerated_when_stale(cache: Path) -> None:
    with generated_archive(2_000, 2, root=cache) as (_, made):
        assert not made.reused
        first_at = made.generated_at
    with generated_archive(2_000, 2, root=cache) as (_, again):
        assert again.reused
        assert again.generated_at == first_at
        assert again.origin().startswith(f"reused, generated at {first_at}")
        assert len(_rows(again.url)) == 2_000
    meta_file = made.folder / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "schema_version": meta["schema_version"] - 1}))
    with generated_archive(2_000, 2, root=cache) as (_, stale):
        assert not stale.reused
        assert len(_rows(stale.url)) == 2_000
    meta_file.unlink()  # an interrupted generation
    with generated_archive(2_000, 2, root=cache) as (_, interrupted):
        assert not interrupted.reused
    with generated_archive(2_000, 2, root=cache, fresh=True) as (_, fresh):
        assert not fresh.reused
