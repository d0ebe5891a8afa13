"""`sorterd trace` through the code -> days table (drivers/archive_db.py, sorterd/trace.py)
against a real PostgreSQL: what it finds, what the table holds after redeliveries and
retention, and an archive of schema version 1 brought up to date (docs/archive.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drivers.archive_db import _MIGRATIONS, SCHEMA, ArchiveDb
from drivers.archive_rows import iso, parse_message
from drivers.broker import LocalBroker
from sorterd.trace import find
from tests.archivekit import archive_site, archiver, run_cli, wait_online
from tests.pgkit import ROLE_PASSWORD
from tests.waiting import wait_until

pytestmark = pytest.mark.requires("postgresql")

HUB = "test/hub"
# Noon today: the passes below stay on the days they are meant for whenever the test runs.
NOW = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
DAY = dt.timedelta(days=1)


def _decision(
    ident: str, at: dt.datetime, line: str, codes: list[str], **more: Any
) -> tuple[Any, ...]:
    body = {
        "id": ident, "ts": iso(at), "tracking_id": 7, "seq": 1, "codes": codes,
        "barcode": codes[0] if codes else None, "destination": "CASA", "chute": 3,
        "reason": "ok", "recirculations": 0, **more,
    }  # fmt: skip
    return parse_message(f"{HUB}/{line}/decisions", json.dumps(body).encode()).values()


def _result(ident: str, at: dt.datetime, line: str, barcode: str, **more: Any) -> tuple[Any, ...]:
    body = {
        "id": ident, "ts": iso(at), "tracking_id": 7, "seq": 1, "barcode": barcode,
        "destination": "CASA", "chute_assigned": 3, "chute_actual": 3, "outcome": "sorted",
        "recirculations": 0, **more,
    }  # fmt: skip
    return parse_message(f"{HUB}/{line}/results", json.dumps(body).encode()).values()


def _item() -> list[tuple[Any, ...]]:
    """One item with three codes: a recirculated pass on line-1 two days ago (its result
    just after midnight the next day), then a pass on line-2 today; and a stranger that
    shares nothing with it on every day."""
    two_ago = (NOW - 2 * DAY).replace(hour=23, minute=59, second=50)
    codes = ["BC1", "ALT1", "]C1ALT"]
    rows = [
        _decision("d1", two_ago, "line-1", codes),
        _result("r1", two_ago + dt.timedelta(seconds=20), "line-1", "BC1", outcome="recirc_full"),
        _decision("d2", NOW - dt.timedelta(seconds=30), "line-2", codes, recirculations=1),
        _result("r2", NOW - dt.timedelta(seconds=10), "line-2", "BC1", recirculations=1),
    ]
    for n in range(3):
        at = NOW - n * DAY - dt.timedelta(seconds=100)
        rows += [
            _decision(f"x{n}", at, "line-1", ["OTHER"]),
            _result(f"y{n}", at, "line-1", "OTHER"),
        ]
    return rows


def _codes(db_url: str) -> list[tuple[str, dt.date]]:
    """The codes table, sorted here (the server's collation may sort punctuation apart)."""
    with psycopg.connect(db_url, password=ROLE_PASSWORD) as conn:
        return sorted(conn.execute(f"SELECT code, day FROM {SCHEMA}.codes").fetchall())


def _ids(db_url: str, code: str, *, lookup: bool = True) -> list[str]:
    with psycopg.connect(db_url, password=ROLE_PASSWORD) as conn:
        return [r.id for r in find(conn, code, lookup=lookup)]


@pytest.mark.asyncio
async def test_every_code_finds_every_pass_oldest_first_and_redelivery_adds_no_codes(
    archive_db: str,
) -> None:
    conn = await psycopg.AsyncConnection.connect(archive_db, password=ROLE_PASSWORD)
    try:
        db = ArchiveDb(conn)
        assert await db.migrate() == len(_MIGRATIONS)
        rows = _item()
        assert await db.write(rows) == len(rows)
        before = _codes(archive_db)
        # Redelivered: in a batch of its own and mixed into a later one.
        assert await db.write(rows[:3]) == 0
        assert await db.write([*rows, _decision("d3", NOW, "line-3", ["NEW"])]) == 1
    finally:
        await conn.close()
    day = NOW.date()
    two_ago, one_ago = day - 2 * DAY, day - DAY
    assert _codes(archive_db) == sorted({*before, ("NEW", day)})
    assert before == sorted({
        ("ALT1", two_ago), ("ALT1", day), ("BC1", two_ago), ("BC1", one_ago), ("BC1", day),
        ("OTHER", two_ago), ("OTHER", one_ago), ("OTHER", day), ("]C1ALT", two_ago),
        ("]C1ALT", day),
    })  # fmt: skip
    for code in ("BC1", "ALT1", "]C1ALT"):
        # The results come by the barcode the decisions chose, on the day after too.
        assert _ids(archive_db, code) == ["d1", "r1", "d2", "r2"], code
        assert _ids(archive_db, code, lookup=False) == ["d1", "r1", "d2", "r2"], code
    assert _ids(archive_db, "OTHER") == ["x2", "y2", "x1", "y1", "x0", "y0"]
    assert _ids(archive_db, "ALT") == []  # exact, not a prefix
    assert _ids(archive_db, "NOSUCH") == []


@pytest.mark.asyncio
async def test_retention_drops_the_codes_of_the_days_it_drops(archive_db: str) -> None:
    conn = await psycopg.AsyncConnection.connect(archive_db, password=ROLE_PASSWORD)
    try:
        db = ArchiveDb(conn)
        await db.migrate()
        await db.write(_item())
        dropped = await db.drop_expired(retention_days=1, now=NOW)
        assert dropped == [f"pieces_{NOW - 2 * DAY:%Y%m%d}"]
        assert {d for _, d in _codes(archive_db)} == {NOW.date() - DAY, NOW.date()}
        assert _ids(archive_db, "ALT1") == ["d2", "r2"]
        assert await db.drop_expired(retention_days=0, now=NOW) == [f"pieces_{NOW - DAY:%Y%m%d}"]
        assert {d for _, d in _codes(archive_db)} == {NOW.date()}
    finally:
        await conn.close()


async def _version_1(db_url: str, rows: list[tuple[Any, ...]]) -> None:
    """An archive as schema version 1 left it: its three days of rows, no codes table (what
    version 2 added taken away again, the partitions made before)."""
    conn = await psycopg.AsyncConnection.connect(db_url, password=ROLE_PASSWORD)
    try:
        db = ArchiveDb(conn)
        await db.migrate()
        await db.ensure_days({NOW.date() - n * DAY for n in range(3)})
        async with conn.transaction():
            await conn.execute(f"DROP TABLE {SCHEMA}.codes, {SCHEMA}.uncoded_days")
            await conn.execute(f"DROP FUNCTION {SCHEMA}.note_codes CASCADE")  # and its trigger
            await conn.execute(f"UPDATE {SCHEMA}.meta SET value = '1'")
        await db.write(rows)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_an_archive_of_version_1_is_traced_before_and_after_its_codes_are_filled_in(
    archive_db: str,
) -> None:
    rows = _item()
    await _version_1(archive_db, rows[:2] + rows[4:])
    # A trace of this version on an archive of version 1: every partition searched.
    assert _ids(archive_db, "ALT1") == ["d1", "r1"]
    conn = await psycopg.AsyncConnection.connect(archive_db, password=ROLE_PASSWORD)
    try:
        db = ArchiveDb(conn)
        assert await db.migrate() == 2
        await db.write(rows[2:4])  # today's pass, written after the upgrade
        # The three days of version 1, in `codes` partly (today's pass) or not at all:
        # searched whatever the code.
        assert _ids(archive_db, "ALT1") == ["d1", "r1", "d2", "r2"]
        assert _ids(archive_db, "OTHER") == ["x2", "y2", "x1", "y1", "x0", "y0"]
        filled = []
        while (day := await db.backfill_day()) is not None:
            filled.append(day)
        assert filled == [NOW.date() - n * DAY for n in (2, 1, 0)]
    finally:
        await conn.close()
    assert ("ALT1", NOW.date() - 2 * DAY) in _codes(archive_db)
    assert ("OTHER", NOW.date() - DAY) in _codes(archive_db)
    assert _ids(archive_db, "ALT1") == ["d1", "r1", "d2", "r2"]
    assert _ids(archive_db, "BC1") == ["d1", "r1", "d2", "r2"]
    assert _ids(archive_db, "OTHER") == ["x2", "y2", "x1", "y1", "x0", "y0"]


@pytest.mark.asyncio
@pytest.mark.requires("mosquitto")
async def test_the_archiver_fills_in_an_old_archive_and_trace_says_3_for_unknown(
    broker: LocalBroker, archive_db: str, tmp_path: Path
) -> None:
    await _version_1(archive_db, _item())
    site = archive_site(tmp_path, broker.url, archive_db, [f"{HUB}/+"])

    def uncoded() -> int:
        """Days still to fill in; -1 before the archiver's migration."""
        with psycopg.connect(archive_db, password=ROLE_PASSWORD) as conn:
            try:
                row = conn.execute(f"SELECT count(*) FROM {SCHEMA}.uncoded_days").fetchone()
            except psycopg.errors.UndefinedTable:
                return -1
        return int(row[0]) if row else -1

    async with archiver(site, "upgrader") as proc:
        await wait_online(broker.port, HUB, "upgrader")
        await wait_until(lambda: uncoded() == 0, 60, "the three old days filled in")
        assert await proc.stop() == 0
    assert proc.output().count("codes of a day filled in") == 3
    assert "Traceback" not in proc.output()
    assert ("]C1ALT", NOW.date() - 2 * DAY) in _codes(archive_db)
    code, out, err = await run_cli("trace", "-c", str(site), "]C1ALT", "--json")
    assert code == 0, err
    assert [e["id"] for e in json.loads(out)] == ["d1", "r1", "d2", "r2"]
    code, out, err = await run_cli("trace", "-c", str(site), "NOSUCH")
    assert code == 3
    assert out == ""
    assert "nothing in the archive" in err


@pytest.mark.parametrize("autocommit", [True, False])
def test_a_lookup_leaves_the_connection_as_it_was(archive_db: str, *, autocommit: bool) -> None:
    """find() turns JIT and parallel workers off for itself only: the caller's connection
    has its own settings after (autocommit: reset; in a transaction: gone with it)."""
    with psycopg.connect(archive_db, password=ROLE_PASSWORD, autocommit=autocommit) as conn:
        shown = "SELECT current_setting('jit'), current_setting('max_parallel_workers_per_gather')"
        before = conn.execute(shown).fetchone()
        assert before is not None
        assert before[0] == "on"  # else this test shows nothing
        assert find(conn, "NOSUCH") == []
        if not autocommit:
            assert conn.execute(shown).fetchone() == ("off", "0")  # for the transaction
            conn.commit()
        assert conn.execute(shown).fetchone() == before
