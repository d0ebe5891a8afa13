"""`sorterd run` as a process: online on MQTT, SIGHUP reloads the plan, SIGTERM stops it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiomqtt

from drivers.broker import LocalBroker
from simulators.line import SimulatedLine
from sorter.plan import load_plan
from sorterd.demo import write_site
from tests.linekit import PLAN_PATH, wait_until

PREFIX = "test/process/line"


async def test_run_reload_on_sighup_and_stop_on_sigterm(
    broker: LocalBroker, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN_PATH.read_text())
    seen: list[tuple[str, dict[str, object]]] = []
    ready = asyncio.Event()

    async def observe() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="proc-observer") as c:
            await c.subscribe(f"{PREFIX}/#", qos=1)
            ready.set()
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                seen.append((str(m.topic)[len(PREFIX) + 1 :], json.loads(m.payload)))

    def last(kind: str) -> dict[str, object]:
        return next((p for k, p in reversed(seen) if k == kind), {})

    async with SimulatedLine(sorted(load_plan(plan).machine_chutes)) as line:
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
        observer = asyncio.create_task(observe())
        await asyncio.wait_for(ready.wait(), 10)
        # Stand in for systemd: the daemon must say READY=1 once ready, STOPPING=1 at stop.
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify.sock"))
        notify.setblocking(False)
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
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
            await wait_until(lambda: last("status").get("state") == "online", 60)
            await wait_until(lambda: last("devices/plc").get("connected") is True, 20)
            await line.run(20_000, count=10)
            assert await line.drain(30)

            plan.write_text(
                plan.read_text().replace('name = "casablanca-day"', 'name = "after-hup"')
            )
            proc.send_signal(signal.SIGHUP)
            await wait_until(lambda: last("cmd-result").get("plan") == "after-hup", 30)
            assert last("cmd-result")["ok"] is True

            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                code = await proc.wait()
            assert code == 0
            await wait_until(lambda: last("status").get("state") == "offline", 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            observer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await observer
        notes = []
        with contextlib.suppress(BlockingIOError):
            while True:
                notes.append(notify.recv(4096).decode())
        notify.close()
        assert any("READY=1" in n for n in notes), notes
        assert any("STOPPING=1" in n for n in notes), notes
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        assert "Traceback" not in err
        decisions = [p for k, p in seen if k == "decisions"]
        assert len(decisions) == 10
