"""`sorterd archive`, `trace` and `report` against a real mosquitto and a real PostgreSQL,
each command as its own process (docs/archive.md)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest

from drivers.archive_db import ArchiveDb
from drivers.archive_rows import iso, parse_message
from drivers.broker import LocalBroker
from sorterd.archive_report import query
from tests.archivekit import archive_site, archived, archived_count, archiver, run_cli, wait_online
from tests.pgkit import ROLE_PASSWORD
from tests.waiting import wait_until

pytestmark = pytest.mark.requires("postgresql", "mosquitto")

HUB = "test/hub"
# Within the retention whenever the test runs.
TODAY = dt.datetime.now(dt.UTC).date().isoformat()


def _decision(i: int, codes: list[str], **more: Any) -> dict[str, Any]:
    return {
        "id": f"d-test-{i}", "ts": f"{TODAY}T10:00:{i % 60:02d}.{i % 1000:03d}Z",
        "tracking_id": i, "seq": i, "codes": codes, "barcode": codes[0] if codes else None,
        "destination": "CASA", "chute": 3, "reason": "ok", "recirculations": 0,
        "latency_ms": 0.2, **more,
    }  # fmt: skip


def _result(i: int, barcode: str | None, **more: Any) -> dict[str, Any]:
    return {
        "id": f"r-test-{i}", "ts": f"{TODAY}T10:01:{i % 60:02d}.{i % 1000:03d}Z",
        "tracking_id": i, "seq": i, "barcode": barcode, "destination": "CASA",
        "chute_assigned": 3, "chute_actual": 3, "outcome": "sorted", "recirculations": 0,
        **more,
    }  # fmt: skip


async def _publish(broker: LocalBroker, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-line") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


@pytest.mark.asyncio
async def test_messages_archived_once_bad_ones_skipped_and_traced(
    broker: LocalBroker, archive_db: str, tmp_path: Path
) -> None:
    site = archive_site(tmp_path, broker.url, archive_db, [f"{HUB}/+"])
    good = [(f"{HUB}/line-1/decisions", _decision(i, [f"CODE{i}", f"ALT{i}"])) for i in range(50)]
    # Results of the first 25 passes from line-1, as their decisions; of the rest from
    # line-2 (the same barcodes seen on another line).
    good += [
        (f"{HUB}/line-{1 if i < 25 else 2}/results", _result(i, f"CODE{i}")) for i in range(50)
    ]
    bad = [
        (f"{HUB}/line-1/decisions", b"not json"),
        (f"{HUB}/line-1/decisions", b"[1, 2]"),
        (f"{HUB}/line-1/results", json.dumps({"id": "x", "ts": "yesterday"}).encode()),
        (f"{HUB}/line-1/decisions", json.dumps({**_decision(99, ["A"]), "codes": "A"}).encode()),
    ]
    wire = [(t, json.dumps(p).encode()) for t, p in good]
    async with archiver(site, "archiver-a") as proc:
        await wait_online(broker.port, HUB, "archiver-a")
        # Twice each: a redelivery changes nothing.
        await _publish(broker, wire[:10] + bad + wire + wire[:30])
        await wait_until(lambda: archived_count(archive_db) >= len(good), 60, "rows archived")
        # `sorterd top` of a line shows the hub's archive (its retained status topic).
        code, out, err = await run_cli(
            "top", "-c", str(site), "--prefix", f"{HUB}/line-1", "--once"
        )
        assert code == 0, err
        assert "archive: ONLINE" in out
        assert "(archiver-a)" in out
        assert await proc.stop() == 0
    rows = archived(archive_db)
    assert sorted(r["id"] for r in rows) == sorted(p["id"] for _, p in good)
    log = proc.output()
    assert log.count("message skipped") == len(bad)
    assert "Traceback" not in log

    code, out, err = await run_cli("trace", "-c", str(site), "ALT7", "--json")
    assert code == 0, err
    trace = json.loads(out)
    # The result of that pass too, though it names only the barcode chosen (CODE7).
    assert [(e["kind"], e["line"], e["id"]) for e in trace] == [
        ("decision", f"{HUB}/line-1", "d-test-7"),
        ("result", f"{HUB}/line-1", "r-test-7"),
    ]
    assert trace[0]["codes"] == ["CODE7", "ALT7"]
    assert trace[0]["outcome"] is None
    assert trace[1]["codes"] is None
    assert trace[1]["chute_actual"] == 3
    assert trace[1]["outcome"] == "sorted"
    # Another line's result of the same barcode is found by the barcode, not by ALT30.
    code, out, _ = await run_cli("trace", "-c", str(site), "CODE30", "--json")
    assert [(e["kind"], e["line"]) for e in json.loads(out)] == [
        ("decision", f"{HUB}/line-1"),
        ("result", f"{HUB}/line-2"),
    ]
    code, out, _ = await run_cli("trace", "-c", str(site), "ALT30", "--json")
    assert [e["kind"] for e in json.loads(out)] == ["decision"]
    code, out, _ = await run_cli("trace", "-c", str(site), "CODE30")
    assert code == 0
    assert "d-test" not in out  # the table: times, lines, passes, not ids
    assert f"{HUB}/line-2" in out
    code, out, err = await run_cli("trace", "-c", str(site), "CODE")  # exact, not a prefix
    assert code == 3
    assert out == ""


@pytest.mark.asyncio
async def test_what_waited_in_the_session_is_acknowledged_bad_ones_too(
    broker: LocalBroker, archive_db: str, tmp_path: Path
) -> None:
    """Messages that waited for the archiver come right after the CONNACK, before its
    subscription is confirmed: good and bad ones are acknowledged on that connection, so
    the next start gets none of them again."""
    site = archive_site(tmp_path, broker.url, archive_db, [f"{HUB}/+"])
    async with archiver(site, "early") as proc:
        await wait_online(broker.port, HUB, "early")
        assert await proc.stop() == 0
    waiting = [
        (f"{HUB}/line-1/decisions", json.dumps(_decision(i, [f"E{i}"])).encode()) for i in range(2)
    ]
    waiting += [(f"{HUB}/line-1/decisions", b"not json")] * 3
    await _publish(broker, waiting)
    async with archiver(site, "early") as proc:
        await wait_until(lambda: archived_count(archive_db) >= 2, 60, "rows archived")
        await wait_until(lambda: proc.output().count("message skipped") == 3, 30, "skipped")
        await wait_online(broker.port, HUB, "early")
        assert await proc.stop() == 0
    skipped = proc.output().count("message skipped")
    async with archiver(site, "early") as proc:
        await wait_online(broker.port, HUB, "early")
        assert await proc.stop() == 0
    # One log file per client id, the three runs in it: the last run got nothing again.
    assert proc.output().count("message skipped") == skipped
    stopped = re.findall(
        r'"rows": (\d+), "waiting": \d+, "event": "archive stopped"', proc.output()
    )
    assert stopped[-1] == "0"
    assert "Traceback" not in proc.output()


@pytest.mark.asyncio
async def test_wrong_password_and_no_server_are_one_line_errors(
    broker: LocalBroker, archive_db: str, tmp_path: Path
) -> None:
    site = archive_site(tmp_path, broker.url, archive_db, [f"{HUB}/+"])
    for command in (["archive", "-c", str(site)], ["trace", "-c", str(site), "X"]):
        code, _, err = await run_cli(*command, password="wrong-pw-123")
        assert code == 1
        assert "password authentication failed" in err
        assert "wrong-pw-123" not in err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    gone = archive_site(
        tmp_path / "gone", broker.url, "postgresql://sorterd@127.0.0.1:1/archive", [f"{HUB}/+"]
    )
    code, _, err = await run_cli("archive", "-c", str(gone))
    assert code == 1
    assert err.startswith("error: archive database postgresql://sorterd@127.0.0.1:1/archive")
    assert "Traceback" not in err


@pytest.mark.asyncio
async def test_report_counts_what_was_archived(
    broker: LocalBroker, archive_db: str, tmp_path: Path
) -> None:
    site = archive_site(tmp_path, broker.url, archive_db, [f"{HUB}/line-1"])
    decisions = [_decision(i, [f"C{i}"] if i % 5 else []) for i in range(20)]
    decisions += [_decision(100 + i, [f"C{i}"], recirculations=1) for i in range(4)]
    results = [
        _result(i, f"C{i}", **({} if i % 4 else {"outcome": "recirc_full"})) for i in range(20)
    ]
    wire = [(f"{HUB}/line-1/decisions", json.dumps(d).encode()) for d in decisions]
    wire += [(f"{HUB}/line-1/results", json.dumps(r).encode()) for r in results]
    async with archiver(site, "archiver-r") as proc:
        await wait_online(broker.port, HUB, "archiver-r")
        await _publish(broker, wire)
        await wait_until(lambda: archived_count(archive_db) == len(wire), 60, "rows archived")
        assert await proc.stop() == 0
    html = tmp_path / "report.html"
    period = ["--from", f"{TODAY}T00:00Z", "--to", f"{TODAY}T23:59:59Z"]
    code, out, err = await run_cli("report", "-c", str(site), *period, "--html", str(html))
    assert code == 0, err
    line = next(row for row in out.splitlines() if row.strip().startswith(f"{HUB}/line-1"))
    # 20 items (first passes), 20 results, 20 of 24 decisions with a code, 15 of 20
    # results sorted, 5 recirculated.
    assert line.split()[1:] == ["20", "20", "83.3%", "75.0%", "25.0%"]
    assert "recirc_full" in out
    assert "<svg" in html.read_text()
    # Busiest hours in the site's zone, by name or by offset (ISO sign: east is +).
    start = dt.datetime.fromisoformat(f"{TODAY}T00:00+00:00")
    with psycopg.connect(archive_db, password=ROLE_PASSWORD) as conn:
        named = query(conn, start, start + dt.timedelta(days=1), "Asia/Kolkata")
        offset = query(conn, start, start + dt.timedelta(days=1), dt.timedelta(hours=5.5))
    assert named.hours == offset.hours == [(f"{TODAY} 15:00", 20)]
    assert offset.zone == "UTC+05:30"
    code, _, err = await run_cli("report", "-c", str(site), "--from", "soon", "--to", "later")
    assert code == 1
    assert "not an ISO 8601 time" in err


@pytest.mark.asyncio
async def test_writes_are_once_per_id_and_old_days_are_dropped(archive_db: str) -> None:
    conn = await psycopg.AsyncConnection.connect(archive_db, password=ROLE_PASSWORD)
    try:
        db = ArchiveDb(conn)
        assert await db.migrate() == await db.migrate()  # idempotent
        now = dt.datetime.now(dt.UTC)
        old = now - dt.timedelta(days=10)
        rows = [
            parse_message(
                f"{HUB}/l/decisions", json.dumps(_decision(i, ["A"], ts=iso(t))).encode()
            ).values()
            for i, t in enumerate([now, now, old, old - dt.timedelta(days=1)])
        ]
        # A redelivery within one batch and in a later one: each id once.
        assert await db.write(rows + rows[:2]) == 4
        assert await db.write(rows) == 0
        assert len(archived(archive_db)) == 4
        dropped = await db.drop_expired(retention_days=10, now=now)
        assert dropped == [f"pieces_{old - dt.timedelta(days=1):%Y%m%d}"]
        assert len(archived(archive_db)) == 3  # the day 10 days ago is still whole in
        assert await db.drop_expired(retention_days=9, now=now) == [f"pieces_{old:%Y%m%d}"]
        assert await db.write(rows[2:3]) == 1  # its partition is made again when needed
    finally:
        await conn.close()
