"""A simulated line wired to the real daemon and an MQTT observer, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiomqtt

from drivers.broker import LocalBroker
from simulators.conveyor import LineParams
from simulators.line import DEMO_PARAMS, HeadSpec, SimulatedLine
from simulators.plc import PlcServe
from sorter.config import load_site
from sorter.plan import load_plan
from sorterd.daemon import Daemon
from sorterd.demo import demo_config_dir, head_format, write_site
from tests.waiting import wait_until

__all__ = [
    "FAST_LINE",
    "PLAN_PATH",
    "PREFIX",
    "Rig",
    "Subscriber",
    "line_with_daemon",
    "wait_until",
]

PLAN_PATH = demo_config_dir() / "sortplan.toml"
# The demo geometry on a 10 m/s belt: hundreds of items through the line in seconds.
FAST_LINE = replace(DEMO_PARAMS, belt_speed_m_s=10.0, item_pitch_m=0.2)
PREFIX = "test/hub/line"


class Subscriber:
    """Records every message under PREFIX, by topic suffix."""

    def __init__(self) -> None:
        self.messages: dict[str, list[dict[str, Any]]] = {}

    async def run(self, broker: LocalBroker, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="e2e-observer") as c:
            await c.subscribe(f"{PREFIX}/#", qos=1)
            ready.set()
            async for m in c.messages:
                kind = str(m.topic)[len(PREFIX) + 1 :]
                assert isinstance(m.payload, bytes)
                self.messages.setdefault(kind, []).append(json.loads(m.payload))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self.messages.get(kind, [])

    def last(self, kind: str) -> dict[str, Any] | None:
        got = self.of(kind)
        return got[-1] if got else None


@dataclass(slots=True)
class Rig:
    line: SimulatedLine
    daemon: Daemon
    sub: Subscriber


@contextlib.asynccontextmanager
async def line_with_daemon(
    broker: LocalBroker,
    folder: Path,
    *,
    params: LineParams = DEMO_PARAMS,
    seed: int = 1,
    plc_port: int = 0,
    scanner_port: int = 0,
    plan_path: Path = PLAN_PATH,
    manifests: str | None = None,
    extra_config: str = "",
    plc_serve: PlcServe | None = None,
    heads: Sequence[HeadSpec] | None = None,
    silence_timeout_s: float | None = None,
    formats: Mapping[str, str] | None = None,
    scanner_keys: Mapping[str, str] | None = None,
) -> AsyncIterator[Rig]:
    """Line and daemon running; on exit the daemon stops gracefully and says offline.

    `heads`: the scan tunnel's heads, each a [[scanner]] of the site config under its own
    name, tunnel and telegram preset; default one head, `tunnel-1`. `formats` configures
    the daemon with another preset for some heads (a scanner set up wrongly), and
    `scanner_keys` adds TOML lines to a head's table (see write_site)."""
    line = SimulatedLine(
        sorted(load_plan(plan_path).machine_chutes),
        params=params,
        seed=seed,
        plc_port=plc_port,
        scanner_port=scanner_port,
        plc_serve=plc_serve,
        heads=heads,
    )
    async with line:
        assert line.scanner is not None
        assert line.scanner.port is not None
        site = write_site(
            folder,
            plc_port=line.plc.port,
            plc_url=line.plc.url,
            scanner_port=line.scanner.port,
            mqtt_url=broker.url,
            plan=plan_path,
            prefix=PREFIX,
            manifests=manifests,
            manifest_poll_s=0.2,
            extra=extra_config,
            scanners=[(h.name, line.heads[h.name].port or 0, h.tunnel) for h in (heads or ())],
            silence_timeout_s=silence_timeout_s,
            formats={h.name: head_format(h) for h in (heads or ())} | dict(formats or {}),
            scanner_keys=scanner_keys,
        )
        async with _daemon_running(broker, line, Daemon(load_site(site))) as rig:
            yield rig


@contextlib.asynccontextmanager
async def _daemon_running(
    broker: LocalBroker, line: SimulatedLine, daemon: Daemon
) -> AsyncIterator[Rig]:
    """The observer subscribed, then the daemon ready and every head's link up; on exit
    the daemon stops gracefully and says offline."""
    sub = Subscriber()
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        sub_task = tg.create_task(sub.run(broker, ready), name="observer")
        await asyncio.wait_for(ready.wait(), 10)
        daemon_task = tg.create_task(daemon.run(), name="daemon")
        try:
            await asyncio.wait_for(daemon.ready.wait(), 60)
            for sim in line.heads.values():
                await sim.wait_for_clients(1)
            yield Rig(line, daemon, sub)
        finally:
            daemon.request_stop()
            await daemon_task
            with contextlib.suppress(TimeoutError):
                await wait_until(lambda: (sub.last("status") or {}).get("state") == "offline", 10)
            sub_task.cancel()
