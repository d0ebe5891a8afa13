"""Live feeds into `sorterd run` as its own process, through a real mosquitto
(docs/interfaces.md section 7): rows published while the daemon is down arrive when it is
back (its persistent session), a row changes the next decision of its barcode, a customs
hold and its release, bad rows counted and the rest applied, and after `kill -9` every
applied row is still there and an id delivered again is not applied twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt

from drivers.broker import LocalBroker, free_port
from simulators.conveyor import SimItem
from simulators.line import SimulatedLine
from sorter.plan import load_plan
from sorterd.demo import write_site
from sorterd.feeds_worker import feeds_journal_path
from tests.faults.harness import DaemonProcess, Observed, observe
from tests.linekit import FAST_LINE, PLAN_PATH
from tests.waiting import wait_until

PREFIX = "faults/hub/line"  # the harness's observer listens here
PRE = "test/hub/preadvice"
CUS = "test/hub/customs"
FEEDS = f'\n[feeds]\npreadvice = "{PRE}"\ncustoms = "{CUS}"\n'
RATE_PER_H = 20_000


def s10(number: int, service: str = "RB", country: str = "GB") -> str:
    """A UPU S10 code with its check digit (written here from the standard, not shared
    with the code under test)."""
    digits = f"{number:08d}"
    total = sum(int(d) * w for d, w in zip(digits, (8, 6, 4, 2, 3, 5, 9, 7), strict=True))
    check = 11 - total % 11
    check = 0 if check == 10 else 5 if check == 11 else check
    return f"{service}{digits}{check}{country}"


A, B, C = s10(11_111_111), s10(22_222_222), s10(33_333_333)


async def publish(broker: LocalBroker, topic: str, payloads: list[Any]) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="feed-publisher") as client:
        for payload in payloads:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            await client.publish(topic, data, qos=1)


class Rig:
    def __init__(self, folder: Path, broker: LocalBroker, line: SimulatedLine) -> None:
        self.broker, self.line, self.seen = broker, line, Observed()
        assert line.scanner is not None
        assert line.scanner.port is not None
        site = write_site(
            folder,
            plc_port=line.plc.port,
            scanner_port=line.scanner.port,
            mqtt_url=broker.url,
            plan=PLAN_PATH,
            prefix=PREFIX,
            extra=FEEDS,
        )
        env = {"SORTERD_MQTT_STATS_INTERVAL_S": "0.3"}
        self.daemon = DaemonProcess(site, env, folder / "daemon.log")
        self.journal = folder / "journal.sqlite"

    def feeds(self) -> dict[str, Any]:
        block = self.seen.last("stats").get("feeds")
        return block if isinstance(block, dict) else {}

    def device(self) -> dict[str, Any]:
        return self.seen.last("devices/feeds")

    async def start(self) -> None:
        self.seen.by_kind.pop("stats", None)
        self.seen.by_kind.pop("devices/feeds", None)
        await self.daemon.start()
        await wait_until(
            lambda: self.device().get("connected") is True,
            60,
            what=f"feeds subscribed\n{self.daemon.log_tail()}",
        )
        await wait_until(lambda: bool(self.feeds()), 20, what="a P/stats with a feeds block")

    async def decide(self, code: str) -> dict[str, Any]:
        """One item carrying `code` through the line; its decision."""
        before = len(self.seen.of("decisions"))
        await self.line.conveyor.run(iter([SimItem(codes=(code,))]), RATE_PER_H, count=1)
        await wait_until(
            lambda: any(d["barcode"] == code for d in self.seen.of("decisions")[before:]),
            30,
            what=f"a decision for {code}",
        )
        return next(d for d in self.seen.of("decisions")[before:] if d["barcode"] == code)

    async def query(self, tracking_id: int) -> dict[str, Any]:
        """P/cmd/tracking/<id>/query and its answer (listened for here: the observer drops
        an answer as a duplicate of its command, which carries the same id)."""
        request = f"q-{tracking_id}"
        async with aiomqtt.Client("127.0.0.1", self.broker.port) as client:
            await client.subscribe(f"{PREFIX}/cmd-result", qos=1)
            topic = f"{PREFIX}/cmd/tracking/{tracking_id}/query"
            await client.publish(topic, json.dumps({"id": request}).encode(), qos=1)
            async with asyncio.timeout(20):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    answer: dict[str, Any] = json.loads(message.payload)
                    if answer.get("id") == request:
                        return answer
        raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def rig_running(tmp_path: Path, broker_port: int | None = None) -> AsyncIterator[Rig]:
    (tmp_path / "broker").mkdir()
    # Persistence on: a broker stopped cleanly keeps its sessions and their queues.
    async with (
        LocalBroker(broker_port, kind="mosquitto", persistence_dir=tmp_path / "broker") as broker,
        SimulatedLine(
            sorted(load_plan(PLAN_PATH).machine_chutes),
            params=FAST_LINE,
            plc_port=free_port(),
            scanner_port=free_port(),
        ) as line,
    ):
        rig = Rig(tmp_path, broker, line)
        ready = asyncio.Event()
        watcher = asyncio.create_task(observe(broker, rig.seen, ready), name="observer")
        try:
            await asyncio.wait_for(ready.wait(), 10)
            yield rig
        finally:
            await rig.daemon.stop()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def test_feeds_route_items_and_survive_kill(tmp_path: Path) -> None:
    async with rig_running(tmp_path) as rig:
        # The first start makes the persistent session; then the daemon stops.
        await rig.start()
        assert (await rig.decide(A))["destination"] == "REGISTERED-MANUAL"  # by its rule
        assert await rig.daemon.stop() == 0

        # Published while the daemon is down: kept by the broker for its session.
        await publish(rig.broker, PRE, [{"barcode": A, "destination": "RABAT", "id": "a1"}])
        await rig.start()
        await wait_until(lambda: rig.feeds().get("rows_applied") == 1, 20)
        decided = await rig.decide(A)
        assert (decided["destination"], decided["reason"]) == ("RABAT", "ok")
        answer = await rig.query(decided["tracking_id"])
        assert answer["ok"] is True
        assert answer["source"] == "feed"
        assert answer["decision"]["destination"] == "RABAT"

        # Customs hold, then release: each applies to the next decision of the item.
        await publish(rig.broker, CUS, [{"barcode": A, "status": "hold", "id": "c1"}])
        await wait_until(lambda: rig.feeds().get("customs_applied") == 1, 20)
        held = await rig.decide(A)
        assert (held["reason"], held["chute"]) == ("customs_hold", 54)
        assert (await rig.query(held["tracking_id"]))["source"] == "customs"
        await publish(rig.broker, CUS, [{"barcode": A, "status": "release", "id": "c2"}])
        await wait_until(lambda: rig.feeds().get("customs_applied") == 2, 20)
        released = await rig.decide(A)
        assert (released["destination"], released["reason"]) == ("RABAT", "ok")

        # Bad rows are counted by reason; the good rows of the same message are applied.
        mixed = [
            {"barcode": B, "destination": "FES", "id": "b1"},
            {"destination": "FES"},
            {"barcode": C, "destination": ["FES"]},
        ]
        await publish(rig.broker, PRE, [mixed, b"\xff not json"])
        await wait_until(lambda: rig.feeds().get("bad_rows") == 3, 20)
        feeds = rig.feeds()
        assert feeds["rows_applied"] == 2
        assert feeds["bad_reasons"] == {"no_barcode": 1, "wrong_type": 1, "bad_json": 1}
        assert (await rig.decide(B))["destination"] == "FES"
        assert (await rig.decide(C))["destination"] == "REGISTERED-MANUAL"
        assert rig.daemon.log_events("feed bad rows"), "bad rows are logged with their reason"

        # kill -9: every applied row and decision is in the journal, and comes back.
        rig.daemon.kill(signal.SIGKILL)
        await rig.daemon.wait(20)
        await rig.start()
        # a1, c1, c2, b1; c1 only if the journal's prune has not yet found c2 replaces it.
        assert rig.feeds()["replayed"] in (3, 4)
        assert (await rig.decide(A))["destination"] == "RABAT"
        assert (await rig.decide(B))["destination"] == "FES"
        # A publisher sends the same ids again: skipped, the index keeps what came later.
        await publish(
            rig.broker,
            PRE,
            [
                {"barcode": A, "destination": "FES", "id": "a1"},
                {"barcode": B, "destination": "RABAT", "id": "b1"},
            ],
        )
        await publish(rig.broker, CUS, [{"barcode": A, "status": "hold", "id": "c1"}])
        await wait_until(lambda: rig.feeds().get("duplicates") == 3, 20)
        # The counts go on across the restart (kept in the journal), and the re-sent ids
        # add nothing to them: a1, b1 and c1, c2 were applied once each.
        assert rig.feeds()["rows_applied"] == 2
        assert rig.feeds()["customs_applied"] == 2
        assert (await rig.decide(A))["destination"] == "RABAT"
        assert await rig.daemon.stop() == 0
        assert "Traceback" not in rig.daemon.log_path.read_text()

    with sqlite3.connect(feeds_journal_path(rig.journal)) as db:
        rows = db.execute("SELECT barcode, id FROM feed WHERE kind = 0 ORDER BY seq").fetchall()
    assert rows == [(A, "a1"), (B, "b1")], "each row journaled once"


async def test_killed_mid_stream_every_row_applied_once(tmp_path: Path) -> None:
    """kill -9 while rows stream in: after the restart every published row is applied,
    none twice (what was committed but not acknowledged comes again, and is skipped)."""
    messages, per_message = 400, 10
    total = messages * per_message
    async with rig_running(tmp_path) as rig:
        await rig.start()  # the session exists from here on

        async def stream() -> None:
            # Paced (over a second or more), so that the kill falls inside the stream.
            async with aiomqtt.Client("127.0.0.1", rig.broker.port) as client:
                for m in range(messages):
                    rows = [
                        {"barcode": f"K{m:04d}{i}", "destination": "RABAT", "id": f"k{m}-{i}"}
                        for i in range(per_message)
                    ]
                    await client.publish(PRE, json.dumps(rows).encode(), qos=1)
                    await asyncio.sleep(0.003)

        publisher = asyncio.create_task(stream(), name="publisher")
        await wait_until(lambda: rig.feeds().get("rows_applied", 0) >= total // 10, 30)
        rig.daemon.kill(signal.SIGKILL)
        await rig.daemon.wait(20)
        await publisher
        await rig.start()
        # rows_applied counts since the journal began: across the kill, every row once.
        await wait_until(
            lambda: rig.feeds().get("rows_applied", 0) >= total,
            60,
            what=f"every row applied: {rig.feeds()}",
        )
        feeds = rig.feeds()
        assert 0 < feeds["replayed"] < total, "killed mid-stream"
        assert feeds["rows_applied"] == total
        assert feeds["bad_rows"] == 0
        assert await rig.daemon.stop() == 0
    with sqlite3.connect(feeds_journal_path(rig.journal)) as db:
        (rows, ids) = db.execute("SELECT count(*), count(DISTINCT id) FROM feed").fetchone()
    assert rows == ids == total


async def test_broker_restarted_while_rows_are_published(tmp_path: Path) -> None:
    """The broker goes away and comes back (persistent, as a hub's broker is): the daemon
    resumes its session, and rows published before it reconnected still arrive."""
    async with rig_running(tmp_path, broker_port=free_port()) as rig:
        await rig.start()
        await publish(rig.broker, PRE, [{"barcode": A, "destination": "RABAT", "id": "a1"}])
        await wait_until(lambda: rig.feeds().get("rows_applied") == 1, 20)
        await rig.broker.stop()
        # Seen in the daemon's log: its P/devices/feeds cannot reach anyone meanwhile.
        await wait_until(lambda: bool(rig.daemon.log_events("feeds connection lost")), 20)
        await rig.broker.start()
        # Published at once, mostly before the daemon is back from its reconnect backoff.
        await publish(rig.broker, PRE, [{"barcode": B, "destination": "FES", "id": "b1"}])
        await publish(rig.broker, CUS, [{"barcode": A, "status": "hold", "id": "c1"}])
        await wait_until(lambda: rig.device().get("connected") is True, 30)
        await wait_until(
            lambda: (rig.feeds().get("rows_applied"), rig.feeds().get("customs_applied")) == (2, 1),
            20,
            what=f"rows and decisions after the broker's restart: {rig.feeds()}",
        )
        assert rig.device()["errors"] >= 1
        assert (await rig.decide(B))["destination"] == "FES"
        assert (await rig.decide(A))["reason"] == "customs_hold"


def _worker_pid(daemon_pid: int) -> int:
    """The daemon's feeds worker (a spawned child: multiprocessing's spawn_main)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
            cmdline = (status.parent / "cmdline").read_bytes()
            if int(fields["PPid"]) == daemon_pid and b"spawn_main" in cmdline:
                return int(status.parent.name)
    raise AssertionError(f"no feeds worker under pid {daemon_pid}")


async def test_a_killed_feeds_worker_is_started_again(tmp_path: Path) -> None:
    """The worker process killed while rows stream in: the daemon starts it again, the line
    keeps its rows, and every published row is applied exactly once."""
    messages, per_message = 300, 10
    total = messages * per_message
    async with rig_running(tmp_path) as rig:
        await rig.start()
        async with aiomqtt.Client("127.0.0.1", rig.broker.port) as client:
            row = {"barcode": A, "destination": "RABAT", "id": "a1"}
            await client.publish(PRE, json.dumps(row).encode(), qos=1)
        await wait_until(lambda: rig.feeds().get("rows_applied", 0) >= 1, 30)
        assert rig.daemon.proc is not None
        worker = _worker_pid(rig.daemon.proc.pid)

        async def stream() -> None:
            async with aiomqtt.Client("127.0.0.1", rig.broker.port) as client:
                for m in range(messages):
                    rows = [
                        {"barcode": f"W{m:04d}{i}", "destination": "FES", "id": f"w{m}-{i}"}
                        for i in range(per_message)
                    ]
                    await client.publish(PRE, json.dumps(rows).encode(), qos=1)
                    await asyncio.sleep(0.003)

        publisher = asyncio.create_task(stream(), name="publisher")
        await wait_until(lambda: rig.feeds().get("rows_applied", 0) >= total // 10, 30)
        os.kill(worker, signal.SIGKILL)
        await publisher
        await wait_until(
            lambda: rig.feeds().get("rows_applied", 0) >= total + 1,
            60,
            what=f"every row applied: {rig.feeds()}",
        )
        assert rig.daemon.proc.returncode is None, "the daemon runs on"
        assert _worker_pid(rig.daemon.proc.pid) != worker
        feeds = rig.feeds()
        assert feeds["rows_applied"] == total + 1
        assert feeds["replayed"] > 0
        assert (await rig.decide(A))["destination"] == "RABAT"
        assert await rig.daemon.stop() == 0
        assert "feeds worker ended" in rig.daemon.log_path.read_text()
    with sqlite3.connect(feeds_journal_path(rig.journal)) as db:
        (rows, ids) = db.execute("SELECT count(*), count(DISTINCT id) FROM feed").fetchone()
    assert rows == ids == total + 1


async def test_ctrl_c_stops_the_daemon_and_its_worker_quietly(tmp_path: Path) -> None:
    """Ctrl-C in a terminal (SIGINT to the daemon and its feeds worker, one process group)
    while rows stream in: a clean stop (exit 0), no traceback, and no worker started again
    for a daemon that is stopping."""
    async with rig_running(tmp_path) as rig:
        await rig.start()
        assert rig.daemon.proc is not None
        worker = _worker_pid(rig.daemon.proc.pid)
        async with aiomqtt.Client("127.0.0.1", rig.broker.port) as client:
            for m in range(50):
                rows = [{"barcode": f"I{m:04d}{i}", "destination": "FES"} for i in range(200)]
                await client.publish(PRE, json.dumps(rows).encode(), qos=1)
        await wait_until(lambda: rig.feeds().get("rows_applied", 0) > 0, 30)
        os.kill(worker, signal.SIGINT)
        rig.daemon.kill(signal.SIGINT)
        assert await rig.daemon.wait(30) == 0
        text = rig.daemon.log_path.read_text()
        assert "Traceback" not in text
        assert "feeds worker ended" not in text
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, 0)
            raise AssertionError("the worker outlived the daemon")


async def test_a_killed_daemons_worker_ends(tmp_path: Path) -> None:
    """kill -9 of the daemon while rows stream in: its feeds worker ends by itself (the
    socket closed) and lets go of the feeds journal; the next daemon's worker takes it."""
    async with rig_running(tmp_path) as rig:
        await rig.start()
        assert rig.daemon.proc is not None
        worker = _worker_pid(rig.daemon.proc.pid)
        async with aiomqtt.Client("127.0.0.1", rig.broker.port) as client:
            for m in range(50):
                rows = [{"barcode": f"K{m:04d}{i}", "destination": "FES"} for i in range(200)]
                await client.publish(PRE, json.dumps(rows).encode(), qos=1)
        await wait_until(lambda: rig.feeds().get("rows_applied", 0) > 0, 30)
        rig.daemon.kill(signal.SIGKILL)
        await rig.daemon.wait(30)

        def gone() -> bool:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                return True
            return False

        await wait_until(gone, 30, what="the killed daemon's worker ended")
        await rig.start()
        await wait_until(lambda: rig.feeds().get("rows_applied", 0) == 50 * 200, 60)
