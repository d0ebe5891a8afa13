"""`sorterd run` as a process: online on MQTT, SIGHUP reloads the plan, SIGTERM stops it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt

from drivers.broker import LocalBroker
from simulators.line import SimulatedLine
from sorter.plan import load_plan
from sorterd.demo import write_site
from tests.linekit import PLAN_PATH, wait_until

PREFIX = "test/process/line"


class Observer:
    """Every message under PREFIX, in order, by topic suffix."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []

    async def run(self, broker: LocalBroker, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="proc-observer") as c:
            await c.subscribe(f"{PREFIX}/#", qos=1)
            ready.set()
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                self.seen.append((str(m.topic)[len(PREFIX) + 1 :], json.loads(m.payload)))

    def last(self, kind: str) -> dict[str, object]:
        return next((p for k, p in reversed(self.seen) if k == kind), {})

    def of(self, kind: str) -> list[dict[str, object]]:
        return [p for k, p in self.seen if k == kind]


@contextlib.asynccontextmanager
async def _observing(broker: LocalBroker) -> AsyncIterator[Observer]:
    observer = Observer()
    ready = asyncio.Event()
    task = asyncio.create_task(observer.run(broker, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield observer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _systemd_stand_in(path: Path) -> socket.socket:
    """The daemon must say READY=1 once ready, STOPPING=1 at stop, to NOTIFY_SOCKET."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(path))
    notify.setblocking(False)
    return notify


def _notes(notify: socket.socket) -> list[str]:
    notes = []
    with contextlib.suppress(BlockingIOError):
        while True:
            notes.append(notify.recv(4096).decode())
    notify.close()
    return notes


@contextlib.asynccontextmanager
async def _sorterd_run(
    site: Path, notify_socket: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_socket)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sorterd.cli",
        "run",
        "-c",
        str(site),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_reload_on_sighup_and_stop_on_sigterm(
    broker: LocalBroker, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN_PATH.read_text())
    async with (
        SimulatedLine(sorted(load_plan(plan).machine_chutes)) as line,
        _observing(broker) as obs,
    ):
        assert line.scanner is not None
        assert line.scanner.port is not None
        site = write_site(
            tmp_path,
            plc_port=line.plc.port,
            scanner_port=line.scanner.port,
            mqtt_url=broker.url,
            plan=plan,
            prefix=PREFIX,
        )
        notify = _systemd_stand_in(tmp_path / "notify.sock")
        async with _sorterd_run(site, tmp_path / "notify.sock") as proc:
            await wait_until(lambda: obs.last("status").get("state") == "online", 60)
            await wait_until(lambda: obs.last("devices/plc").get("connected") is True, 20)
            await line.run(20_000, count=10)
            assert await line.drain(30)

            plan.write_text(
                plan.read_text().replace('name = "casablanca-day"', 'name = "after-hup"')
            )
            proc.send_signal(signal.SIGHUP)
            await wait_until(lambda: obs.last("cmd-result").get("plan") == "after-hup", 30)
            assert obs.last("cmd-result")["ok"] is True

            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                code = await proc.wait()
            assert code == 0
            await wait_until(lambda: obs.last("status").get("state") == "offline", 10)
        notes = _notes(notify)
        assert any("READY=1" in n for n in notes), notes
        assert any("STOPPING=1" in n for n in notes), notes
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        assert "Traceback" not in err
        assert len(obs.of("decisions")) == 10
