"""The whole line at speed: `sorterd run` as its own process against the simulated line.

For each rate the simulated PLC, conveyor and scan tunnel (in this process) induct items
for a bounded time; the daemon is a separate `sorterd run` process talking to them over
Modbus TCP and TCP telegrams, and to a local broker over MQTT. Figures per rate:

- request-to-reply latency as the PLC sees it: from the PLC model putting the request on
  its ring to the PLC reading the reply (simulator clock; includes its 2 ms cycle and the
  wait for scans that arrive after the request);
- decision latency inside the daemon (its P/stats, last 8192 decisions);
- items answered late (reply after the item passed its chute) and recirculations caused
  by the host (recirc_late);
- CPU seconds per 1,000 items of the daemon process, and as a share of one core;
- peak resident memory of the daemon process; MQTT backlog (max seen on P/stats).

Start-up to ready: from spawning `sorterd run` to its status online with the PLC
connected (config loaded, plan compiled, kernels from the numba cache, devices connected).

`python -m benchmarks.line --soak HOURS` runs 40,000 items/h for that long (bounded),
printing the daemon's resident memory every minute: the no-growth check (not in CI).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from benchmarks.common import PLAN
from drivers.broker import LocalBroker
from simulators.line import DEMO_PARAMS, SimulatedLine
from sorter.plan import load_plan
from sorterd.demo import write_site

RATES = (20_000, 40_000, 100_000, 200_000)
DURATION_S = 30.0
PREFIX = "bench/line"
# A belt fast enough to carry 200,000 items/h with room: 10 m/s, one item per 0.1 m at
# most; the first chute is 6 m (0.6 s) after the scan tunnel.
PARAMS = replace(DEMO_PARAMS, belt_speed_m_s=10.0, item_pitch_m=0.1)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _memory_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


class Observer:
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.plc: dict[str, Any] = {}
        self.stats: list[dict[str, Any]] = []

    async def run(self, broker: LocalBroker, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-observer") as c:
            await c.subscribe(f"{PREFIX}/status", qos=1)
            await c.subscribe(f"{PREFIX}/stats", qos=0)
            await c.subscribe(f"{PREFIX}/devices/plc", qos=1)
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


async def _wait(predicate: Any, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - watching another process's effects
            await asyncio.sleep(0.01)


async def run_rate(
    rate: float, duration_s: float, soak: bool = False, profile: str | None = None
) -> dict[str, Any]:
    plan = load_plan(PLAN)
    obs = Observer()
    ready = asyncio.Event()
    async with (
        LocalBroker() as broker,
        SimulatedLine(sorted(plan.machine_chutes), params=PARAMS, seed=5) as line,
    ):
        assert line.scanner is not None
        assert line.scanner.port is not None
        with tempfile.TemporaryDirectory(prefix="sorterd-bench-") as tmp:
            site = write_site(
                Path(tmp),
                plc_port=line.plc.port,
                scanner_port=line.scanner.port,
                mqtt_url=broker.url,
                plan=PLAN,
                prefix=PREFIX,
            )
            watcher = asyncio.create_task(obs.run(broker, ready))
            await asyncio.wait_for(ready.wait(), 10)
            env = {**os.environ, "SORTERD_LOG_LEVEL": "warning"}
            t0 = time.perf_counter()
            command = [sys.executable, "-m", "sorterd.cli", "run", "-c", str(site)]
            if profile:
                # py-spy samples the daemon; the CPU and memory figures are then py-spy's own.
                command = ["py-spy", "record", "--format", "raw", "-r", "250", "-o", profile,
                           "--", *command]  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env,
            )  # fmt: skip
            try:
                await _wait(
                    lambda: obs.status.get("state") == "online" and obs.plc.get("connected"), 60
                )
                startup_s = time.perf_counter() - t0
                await line.scanner.wait_for_clients(1)
                cpu0 = _cpu_s(proc.pid)
                t_run = time.perf_counter()
                if soak:
                    inducted = await _soak(line, rate, duration_s, proc.pid)
                else:
                    inducted = await line.run(rate, duration_s=duration_s)
                drained = await line.drain(60)
                cpu_s = _cpu_s(proc.pid) - cpu0
                wall_s = time.perf_counter() - t_run
                memory = _memory_kb(proc.pid)
                await asyncio.sleep(2.5)  # one more P/stats
            finally:
                proc.send_signal(signal.SIGINT if profile else signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(15):
                        await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
    ledger = line.ledger
    latency_ms = np.array(
        [
            (p.reply_s - p.scan_s) * 1000
            for rec in ledger.items
            for p in rec.passes
            if p.reply_s is not None
        ]
    )
    last = obs.stats[-1] if obs.stats else {}
    return {
        "rate": rate,
        "inducted": inducted,
        "drained": drained,
        "plc_latency_ms": {
            "p50": float(np.percentile(latency_ms, 50)),
            "p99": float(np.percentile(latency_ms, 99)),
            "max": float(latency_ms.max()),
        },
        "decision_latency_ms": last.get("latency_ms", {}),
        "late_replies": ledger.late_replies,
        "recirc_late": ledger.confirmations.get("recirc_late", 0),
        "cpu_s_per_1000": cpu_s / max(inducted, 1) * 1000,
        "cpu_share": cpu_s / wall_s,
        "rss_peak_mb": memory.get("VmHWM", 0) / 1024,
        "mqtt_backlog_max": max(
            (s.get("mqtt", {}).get("backlog", 0) for s in obs.stats), default=0
        ),
        "startup_s": startup_s,
    }


async def _soak(line: SimulatedLine, rate: float, duration_s: float, pid: int) -> int:
    inducting = asyncio.create_task(line.run(rate, duration_s=duration_s))
    start = time.monotonic()
    while not inducting.done():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                await asyncio.shield(inducting)
        mem = _memory_kb(pid)
        print(
            f"soak {(time.monotonic() - start) / 60:6.1f} min: inducted {line.ledger.inducted}, "
            f"rss {mem.get('VmRSS', 0) / 1024:.1f} MB, peak {mem.get('VmHWM', 0) / 1024:.1f} MB",
            flush=True,
        )
    return inducting.result()


def run() -> dict[str, Any]:
    return {"rates": [asyncio.run(run_rate(rate, DURATION_S)) for rate in RATES]}


def report(r: dict[str, Any]) -> list[str]:
    lines = [
        "rate/h    inducted  PLC req->reply ms p50/p99/max   daemon ms p50/p99   late  "
        "recirc_late  CPU s/1000  CPU %core  RSS MB  backlog  start s"
    ]
    for x in r["rates"]:
        p, d = x["plc_latency_ms"], x["decision_latency_ms"]
        lines.append(
            f"{x['rate']:>7,.0f}  {x['inducted']:>8}  {p['p50']:6.2f} {p['p99']:6.2f} "
            f"{p['max']:7.2f}          {d.get('p50', 0):5.2f} {d.get('p99', 0):6.2f}     "
            f"{x['late_replies']:>4}  {x['recirc_late']:>11}  {x['cpu_s_per_1000']:10.3f}  "
            f"{x['cpu_share'] * 100:8.1f}  {x['rss_peak_mb']:6.1f}  {x['mqtt_backlog_max']:>7}"
            f"  {x['startup_s']:6.2f}"
        )
    lines.append(
        "targets: p99 <= 10 ms at 100,000/h (poll 5 ms); no late reply at 200,000/h; "
        "CPU <= 25 % of a core at 40,000/h; start-up <= 2 s"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.line")
    parser.add_argument("--soak", type=float, metavar="HOURS", help="40,000 items/h for HOURS")
    parser.add_argument("--rate", type=float, action="append", help="only these rates")
    parser.add_argument("--duration", type=float, default=DURATION_S, metavar="S")
    parser.add_argument("--profile", metavar="FILE", help="py-spy raw stacks of the daemon")
    args = parser.parse_args()
    if args.soak:
        result = asyncio.run(run_rate(40_000, args.soak * 3600, soak=True))
        print(report({"rates": [result]})[1])
        return 0
    rates = args.rate or RATES
    result = {
        "rates": [asyncio.run(run_rate(r, args.duration, profile=args.profile)) for r in rates]
    }
    for line in report(result):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
