"""The archive under faults, every part a real process or server: the simulated line and
the daemon publishing, `sorterd archive` processes killed and restarted, two at once, and
PostgreSQL stopped and started again. Whatever happens, every decision and result of the
line's ledger ends up in the archive exactly once (docs/archive.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.broker import LocalBroker
from tests.archivekit import archive_site, archived, archived_count, archiver, wait_online
from tests.conftest import require
from tests.linekit import FAST_LINE, PREFIX, Rig, line_with_daemon
from tests.pgkit import pg_server
from tests.waiting import wait_until

pytestmark = pytest.mark.requires("postgresql", "mosquitto")

HUB = PREFIX.rpartition("/")[0]
NOW = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
ITEMS = 300
RATE_PER_H = 100_000.0  # about 28 items/s: the run lasts ~10 s


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


async def _line_done(rig: Rig) -> tuple[int, int]:
    """Drain the line; the decisions and results the daemon published (as the observer
    saw them)."""
    assert await rig.line.drain(60), rig.line.ledger.summary()
    confirmations = sum(rig.line.ledger.confirmations.values())
    decided = rig.daemon.pipeline.counters.decisions
    await wait_until(
        lambda: (
            len(rig.sub.of("results")) >= confirmations and len(rig.sub.of("decisions")) >= decided
        ),
        30,
        "every message published",
    )
    return decided, confirmations


def _check_exactly_once(rig: Rig, rows: list[dict[str, Any]]) -> None:
    published = rig.sub.of("decisions") + rig.sub.of("results")
    assert len(rows) == len({r["id"] for r in rows})
    assert {r["id"] for r in rows} == {m["id"] for m in published}
    # Against the simulator's ground truth: one decision per sort request the PLC wrote,
    # one result per confirmation.
    ledger = rig.line.ledger
    requested = {(rec.tracking_id, p.seq) for rec in ledger.items for p in rec.passes}
    decided = Counter((r["tracking_id"], r["seq"]) for r in rows if r["kind"] == "decision")
    assert set(decided) == requested
    assert max(decided.values()) == 1
    results = [r for r in rows if r["kind"] == "result"]
    assert len(results) == sum(ledger.confirmations.values())
    assert all(r["line"] == PREFIX for r in rows)


def _stopped_rows(log: str) -> int:
    found = re.findall(r'"rows": (\d+), "waiting": \d+, "event": "archive stopped"', log)
    assert found, log[-2000:]
    return int(found[-1])


@pytest.mark.asyncio
async def test_two_archivers_one_killed_and_restarted(
    broker: LocalBroker, archive_db: str, tmp_path: Path
) -> None:
    site = archive_site(tmp_path / "archive", broker.url, archive_db, [f"{HUB}/+"])
    async with (
        archiver(site, "archiver-a") as first,
        archiver(site, "archiver-b") as second,
    ):
        await wait_online(broker.port, HUB, "archiver-a")
        await wait_online(broker.port, HUB, "archiver-b")
        async with line_with_daemon(broker, _folder(tmp_path / "line"), params=FAST_LINE) as rig:
            run = asyncio.create_task(rig.line.run(RATE_PER_H, count=ITEMS))
            await wait_until(lambda: archived_count(archive_db) > 100, 60, "rows flowing")
            await first.kill()  # SIGKILL: whatever it held unacknowledged comes back
            await wait_until(lambda: len(rig.sub.of("decisions")) > ITEMS // 2, 60)
            async with archiver(site, "archiver-a") as again:
                assert await run == ITEMS
                decided, confirmed = await _line_done(rig)
                await wait_until(
                    lambda: archived_count(archive_db) >= decided + confirmed, 60, "all archived"
                )
                assert await again.stop() == 0
            assert await second.stop() == 0
        _check_exactly_once(rig, archived(archive_db))
    # The shared subscription split the work: the survivor wrote some, not all.
    assert 0 < _stopped_rows(second.output()) < decided + confirmed
    for proc in (first, second):
        assert "Traceback" not in proc.output()


@pytest.mark.asyncio
async def test_postgresql_stopped_and_started_again(broker: LocalBroker, tmp_path: Path) -> None:
    states: list[str] = []

    async def watch(ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe(f"{HUB}/archive/status", qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                states.append(json.loads(message.payload)["state"])

    with pg_server() as server:
        db = server.new_database()
        site = archive_site(tmp_path / "archive", broker.url, db, [f"{HUB}/+"])
        ready = asyncio.Event()
        watcher = asyncio.create_task(watch(ready))
        await ready.wait()
        async with archiver(site, "archiver-pg") as proc:
            await wait_online(broker.port, HUB, "archiver-pg")
            async with line_with_daemon(
                broker, _folder(tmp_path / "line"), params=FAST_LINE
            ) as rig:
                run = asyncio.create_task(rig.line.run(RATE_PER_H, count=ITEMS))
                await wait_until(lambda: archived_count(db) > 50, 60, "rows flowing")
                await asyncio.to_thread(server.stop)
                await wait_until(lambda: "database_down" in states, 60, "database_down said")
                # Items keep flowing meanwhile: their rows wait, unacknowledged.
                seen = len(rig.sub.of("decisions"))
                await wait_until(lambda: len(rig.sub.of("decisions")) > seen + 30, 60)
                await asyncio.to_thread(server.start)
                assert await run == ITEMS
                decided, confirmed = await _line_done(rig)
                await wait_until(
                    lambda: archived_count(db) >= decided + confirmed, 60, "all archived"
                )
                assert await proc.stop() == 0
            _check_exactly_once(rig, archived(db))
        watcher.cancel()
        assert states[-1] == "offline"
        assert "online" in states[states.index("database_down") :]
        assert "Traceback" not in proc.output()
        assert "s3cret" not in proc.output()


@pytest.mark.asyncio
async def test_stopped_while_the_database_is_down_loses_nothing(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """SIGTERM while rows wait for a database that is away: the archiver stops (what it
    could not write stays unacknowledged) and the next one, same id, writes them."""
    with pg_server() as server:
        db = server.new_database()
        site = archive_site(tmp_path, broker.url, db, [f"{HUB}/+"])
        async with archiver(site, "archiver-x") as proc:
            await wait_online(broker.port, HUB, "archiver-x")
            await asyncio.to_thread(server.stop)
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                for i in range(40):
                    body = {
                        "id": f"r-down-{i}", "ts": NOW,
                        "tracking_id": i, "seq": i, "barcode": f"B{i}", "destination": "X",
                        "chute_assigned": 1, "chute_actual": 1, "outcome": "sorted",
                        "recirculations": 0,
                    }  # fmt: skip
                    await client.publish(f"{PREFIX}/results", json.dumps(body), qos=1)
            await wait_until(lambda: "database unavailable" in proc.output(), 60)
            assert await proc.stop() == 0
        await asyncio.to_thread(server.start)
        assert archived(db) == []
        async with archiver(site, "archiver-x") as again:
            await wait_until(lambda: archived_count(db) == 40, 60, "rows written after restart")
            assert await again.stop() == 0
        assert sorted(r["id"] for r in archived(db)) == sorted(f"r-down-{i}" for i in range(40))
        for log in (proc.output(), again.output()):
            assert "Traceback" not in log


def _reconnected(log: str) -> bool:
    """A connection made after the last one lost (the log of every run of a client id)."""
    return log.rfind('"mqtt connected"') > log.rfind('"mqtt connection lost"') >= 0


@pytest.mark.asyncio
async def test_broker_restarted_while_a_backlog_drains(archive_db: str, tmp_path: Path) -> None:
    """mosquitto stopped and started again (its sessions persisted) while the archiver
    drains a backlog: what it had not acknowledged comes again, and is written once."""
    require("mosquitto")
    broker = LocalBroker(kind="mosquitto", persistence_dir=_folder(tmp_path / "broker"))
    total = 20_000
    await broker.start()
    try:
        # Small batches: the whole backlog must not be written before the broker stops.
        site = archive_site(
            tmp_path / "archive", broker.url, archive_db, [f"{HUB}/+"], extra="batch_rows = 20\n"
        )
        async with archiver(site, "archiver-b") as proc:
            await wait_online(broker.port, HUB, "archiver-b")
            assert await proc.stop() == 0
        messages = [
            (f"{PREFIX}/decisions", json.dumps({
                "id": f"d-backlog-{i}", "ts": NOW, "tracking_id": i, "seq": i % 65536,
                "codes": [f"B{i}"], "barcode": f"B{i}", "destination": "X", "chute": 1,
                "reason": "ok", "recirculations": 0, "latency_ms": 0.1,
            }).encode())
            for i in range(total)
        ]  # fmt: skip
        async with aiomqtt.Client("127.0.0.1", broker.port, max_inflight_messages=100) as client:
            client.pending_calls_threshold = 1000
            for i in range(0, total, 100):
                batch = messages[i : i + 100]
                await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in batch))
        async with archiver(site, "archiver-b") as again:
            await wait_until(lambda: archived_count(archive_db) > 0, 60, "draining")
            await broker.stop()
            assert len(archived(archive_db)) < total  # stopped mid-drain
            await broker.start()
            await wait_until(lambda: archived_count(archive_db) == total, 90, "all archived")
            # Back on the broker: what it had not acknowledged came again.
            await wait_until(lambda: _reconnected(again.output()), 60, "connected again")
            assert await again.stop() == 0
        ids = [r["id"] for r in archived(archive_db)]
        assert sorted(ids) == sorted(f"d-backlog-{i}" for i in range(total))
        assert "mqtt connection lost" in again.output()
        assert "Traceback" not in again.output()
    finally:
        await broker.stop()
