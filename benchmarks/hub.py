"""A hub on one machine: several lines, each its own `sorterd run`, on one broker.

`python -m benchmarks --only hub` (opt-in: it runs up to eight daemons at once). For each
scenario (lines x items/h per line) the simulated PLC, conveyor and scan tunnel of every
line run in a process of their own per line (benchmarks/hubline.py; benchmarks/line.py's
line: a 10 m/s belt, poll 5 ms), every line's daemon is its own `sorterd run` process
with its own site config, journal and topic prefix (`bench/hub/line-K`), and all daemons
publish to one local broker (mosquitto when installed). Figures per scenario:

- each line's request-to-reply latency as its PLC sees it (benchmarks.line.latency_ms;
  target p99 <= 10 ms on every line), late replies and recirc_late;
- the daemons' CPU together, as a share of one core (target <= 0.5 core for 4 lines at
  40,000 items/h), from /proc over the induction and drain;
- the simulators' CPU together (their processes' own time): a saturated measuring side
  inflates the latency it measures (read the p99 with it);
- whether every line drained, and the MQTT backlog (max on P/stats).

Bounded: `duration_s` of induction per scenario (25 s), a 60 s drain at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.daemon import paced_gc
from benchmarks.hubline import MARK
from benchmarks.line import PARAMS, POLL_MS
from benchmarks.results import Section, broker_info
from drivers.broker import LocalBroker

__all__ = ["QUICK", "Options", "report", "run"]

_Proc = asyncio.subprocess.Process
P99_TARGET_MS = 10.0
CPU_TARGET_CORES = 0.5


@dataclass(frozen=True, slots=True)
class Options:
    # (lines, items/h per line)
    scenarios: tuple[tuple[int, float], ...] = ((4, 40_000.0), (8, 20_000.0))
    duration_s: float = 25.0


QUICK = Options(scenarios=((2, 20_000.0),), duration_s=6.0)


async def _spawn(broker: LocalBroker, index: int, rate: float, duration_s: float) -> _Proc:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.hubline", "--port", str(broker.port),
        "--index", str(index), "--rate", str(rate), "--duration", str(duration_s),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        start_new_session=True,  # a group of its own with its `sorterd run`: see _stop
    )  # fmt: skip


async def _stop(procs: Sequence[_Proc], timeout_s: float = 30.0) -> None:
    """End each line's process and the `sorterd run` it started. Killing the line's
    process alone (a line that failed, a timeout, ^C) left that daemon running with nobody
    to stop it: SIGTERM lets the line stop its daemon and wait for it; whatever of its
    group is left after `timeout_s` is killed."""
    for p in procs:
        if p.stdin is not None:
            p.stdin.close()  # a line still waiting for its go reads the end of it
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(p.wait() for p in procs))
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    await asyncio.gather(*(p.wait() for p in procs))


async def _json_line(proc: _Proc, what: str, timeout_s: float) -> dict[str, Any]:
    """The next figures line a line's process prints (its simulators log on stdout too)."""
    assert proc.stdout is not None
    async with asyncio.timeout(timeout_s):
        while line := await proc.stdout.readline():
            if line.startswith(MARK):
                return dict(json.loads(line[len(MARK) :]))
    raise RuntimeError(f"a hub line's process exited before {what} ({proc.returncode})")


async def run_scenario(
    lines: int, rate: float, duration_s: float, broker: LocalBroker
) -> dict[str, Any]:
    """`lines` lines at `rate` items/h each, for `duration_s`: the module docstring's figures."""
    started = time.perf_counter()
    # Started together, as a hub's daemons are after a power cut: they compete for CPU.
    procs = [await _spawn(broker, k, rate, duration_s) for k in range(1, lines + 1)]
    try:
        await asyncio.gather(*(_json_line(p, "ready", 300) for p in procs))
        startup_s = time.perf_counter() - started
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        bound_s = duration_s + 120
        per_line = await asyncio.gather(*(_json_line(p, "its figures", bound_s) for p in procs))
        await asyncio.gather(*(p.wait() for p in procs))
    finally:
        await _stop(procs)
    wall_s = max(r["wall_s"] for r in per_line)
    return {
        "lines": lines,
        "rate": rate,
        "duration_s": duration_s,
        "per_line": per_line,
        "cpu_cores": sum(r["cpu_s"] for r in per_line) / wall_s,
        "simulators_cpu_cores": sum(r["simulator_cpu_s"] for r in per_line) / wall_s,
        "startup_s": startup_s,
        "worst_p99_ms": max(r["plc_latency_ms"]["p99"] for r in per_line),
    }


async def _run_all(opts: Options) -> tuple[list[dict[str, Any]], dict[str, str]]:
    rows = []
    async with paced_gc(), LocalBroker() as broker:
        info = broker_info(broker.kind)
        print(f"broker: {info['kind']} {info.get('version', '')}", flush=True)
        for lines, rate in opts.scenarios:
            row = await run_scenario(lines, rate, opts.duration_s, broker)
            rows.append(row)
            for text in report_rows([row]):
                print(text, flush=True)
    return rows, info


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    rows, broker = asyncio.run(_run_all(opts))
    section = Section(
        params={
            "scenarios": [list(s) for s in opts.scenarios],
            "duration_s": opts.duration_s,
            "poll_interval_ms": POLL_MS,
            "belt_speed_m_s": PARAMS.belt_speed_m_s,
        },
        details={"broker": broker, "scenarios": rows},
    )
    for row in rows:
        key = f"@{row['lines']}x{row['rate']:.0f}"
        section.add(
            f"plc_reply_ms_p99_worst_line{key}",
            row["worst_p99_ms"],
            "ms",
            "PLC request -> reply p99, worst line",
            better="lower",
            target=f"<= {P99_TARGET_MS:g} ms",
        )
        section.add(
            f"daemons_cpu{key}",
            row["cpu_cores"],
            "cores",
            "the daemons' CPU together",
            better="lower",
            target=f"<= {CPU_TARGET_CORES:g} core" if row["lines"] == 4 else "",
        )
        section.add(f"simulators_cpu{key}", row["simulators_cpu_cores"], "cores", "simulators")
        section.add(f"startup_s{key}", row["startup_s"], "s", "all daemons online", better="lower")
        for k in ("late_replies", "recirc_late", "in_flight"):
            section.add(f"{k}{key}", sum(r[k] for r in row["per_line"]), "items", k)
    return section


def report_rows(rows: Sequence[dict[str, Any]]) -> list[str]:
    out = []
    for row in rows:
        out.append(
            f"{row['lines']} lines x {row['rate']:,.0f}/h for {row['duration_s']:g} s: "
            f"daemons' CPU {row['cpu_cores']:.2f} cores (simulators "
            f"{row['simulators_cpu_cores']:.2f}), worst line PLC p99 "
            f"{row['worst_p99_ms']:.2f} ms, all online in {row['startup_s']:.1f} s"
        )
        for r in row["per_line"]:
            p, d = r["plc_latency_ms"], r["decision_latency_ms"]
            out.append(
                f"  {r['line']}: inducted {r['inducted']}, drained {r['drained_items']}"
                f"{'' if r['drained'] else ' (NOT ALL)'}  PLC ms p50/p99/max {p['p50']:.2f} "
                f"{p['p99']:.2f} {p['max']:.2f}  daemon ms p50/p99 {d.get('p50', 0):.2f} "
                f"{d.get('p99', 0):.2f}  late {r['late_replies']} recirc_late "
                f"{r['recirc_late']}  CPU {r['cpu_share'] * 100:.1f} % "
                f"({r['cpu_s_per_1000']:.2f} s/1000 items)  backlog "
                f"{r['mqtt_backlog_max']}"
            )
    return out


def report(section: Section) -> list[str]:
    broker = section.details["broker"]
    return [
        f"broker: {broker['kind']} {broker.get('version', '')}",
        *report_rows(section.details["scenarios"]),
        f"targets: every line's PLC p99 <= {P99_TARGET_MS:g} ms; the daemons' CPU together "
        f"<= {CPU_TARGET_CORES:g} core at 4 x 40,000/h",
    ]
