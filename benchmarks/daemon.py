"""`sorterd run` as its own process, watched from outside: MQTT status, /proc CPU and memory.

The benchmarks that measure the daemon run it as a user does (a separate process, its own
config, the real broker) and read what a user could: its messages on MQTT, its resident
memory and CPU time in /proc, and the PLC's view of its replies in the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiomqtt

from sorter.runtime import pace_gc, tune_gc

__all__ = [
    "PREFIX",
    "BrokerAt",
    "cpu_s",
    "daemon_process",
    "log_events",
    "memory_kb",
    "observing",
    "paced_gc",
    "wait_for",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PREFIX = "bench/line"


class BrokerAt(Protocol):
    """Where the broker is: a LocalBroker here, or its address in another process."""

    @property
    def port(self) -> int: ...

    @property
    def url(self) -> str: ...


@contextlib.asynccontextmanager
async def paced_gc() -> AsyncIterator[None]:
    """The simulators' process collects as the daemon does (sorter/runtime.py): its ledger
    of every item and pass grows to hundreds of thousands of objects, and one automatic
    full pass over them (231 ms of CPU once) stalled the simulated PLC, whose late reads
    the latency figures then charged to the daemon. No full pass at all here: the ledger
    only grows (a 45-minute soak's full pass would walk every item and pass of the run)
    and holds no cycles to free."""
    tune_gc()
    pacing = asyncio.create_task(pace_gc(full_interval_s=float("inf")))
    try:
        yield
    finally:
        pacing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pacing


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (resident at its peak) of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


async def wait_for(predicate: Callable[[], object], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - watching another process's effects
            await asyncio.sleep(0.01)


class Observer:
    """The daemon's status, PLC device state and P/stats, as MQTT shows them."""

    def __init__(self, prefix: str = PREFIX, identifier: str = "bench-observer") -> None:
        self.prefix = prefix
        # Its own per line when several lines share a broker: the same client id would
        # take the other observer's session.
        self.identifier = identifier
        self.status: dict[str, Any] = {}
        self.plc: dict[str, Any] = {}
        self.stats: list[dict[str, Any]] = []

    @property
    def online(self) -> bool:
        return self.status.get("state") == "online" and bool(self.plc.get("connected"))

    async def run(self, broker: BrokerAt, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=self.identifier) as c:
            await c.subscribe(f"{self.prefix}/status", qos=1)
            await c.subscribe(f"{self.prefix}/stats", qos=0)
            await c.subscribe(f"{self.prefix}/devices/plc", qos=1)
            ready.set()
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                data = json.loads(m.payload)
                topic = str(m.topic)
                if topic.endswith("/status"):
                    self.status = data
                elif topic.endswith("/stats"):
                    self.stats.append(data)
                else:
                    self.plc = data


@contextlib.asynccontextmanager
async def observing(
    broker: BrokerAt, prefix: str = PREFIX, identifier: str = "bench-observer"
) -> AsyncIterator[Observer]:
    obs = Observer(prefix, identifier)
    ready = asyncio.Event()
    watcher = asyncio.create_task(obs.run(broker, ready), name=identifier)
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield obs
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


@dataclass(slots=True)
class MemoryWatch:
    """VmRSS of a process sampled every `interval_s`: the largest seen and the latest, KiB.
    (VmHWM is the kernel's own peak; the samples show when the peak came.)"""

    pid: int
    interval_s: float = 0.01
    peak_kb: int = 0
    last_kb: int = 0
    samples: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name=f"memory-watch-{self.pid}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                rss = memory_kb(self.pid).get("VmRSS", 0)
                self.last_kb = rss
                self.peak_kb = max(self.peak_kb, rss)
                self.samples += 1
            await asyncio.sleep(self.interval_s)


@dataclass(slots=True)
class Daemon:
    proc: asyncio.subprocess.Process
    startup_s: float
    memory: MemoryWatch

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.asynccontextmanager
async def daemon_process(
    site: Path,
    obs: Observer,
    *,
    profile: str | None = None,
    online_timeout_s: float = 120.0,
    log: Path | None = None,
) -> AsyncIterator[Daemon]:
    """`sorterd run -c site` as its own process, until online: status online with the PLC
    connected. `startup_s` is spawn to online (config, plan, kernels from the numba cache,
    manifests, devices). Logs at warning into nothing, or at info as JSON lines into `log`.
    Stopped with SIGTERM (SIGINT for py-spy)."""
    env = {**os.environ, "SORTERD_LOG_LEVEL": "info" if log else "warning"}
    command = [sys.executable, "-m", "sorterd.cli", "run", "-c", str(site)]
    if profile:
        # py-spy samples the daemon; the CPU and memory figures are then py-spy's own.
        command = ["py-spy", "record", "--format", "raw", "-r", "250", "-o", profile,
                   "--", *command]  # fmt: skip
    obs.status = {}
    obs.plc = {}
    t0 = time.perf_counter()
    with open(log or os.devnull, "wb") as stderr:  # noqa: ASYNC230 - once, before the spawn
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=stderr, env=env
        )
    watch = MemoryWatch(proc.pid)
    watch.start()
    try:
        await wait_for(lambda: obs.online or proc.returncode is not None, online_timeout_s)
        if proc.returncode is not None:
            raise RuntimeError(f"sorterd run exited with {proc.returncode} before online")
        yield Daemon(proc, time.perf_counter() - t0, watch)
    finally:
        await watch.stop()
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT if profile else signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines of one event."""
    out = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            out.append(record)
    return out
