"""A hub on one machine: several lines, each its own `sorterd run`, on one broker.

`python -m benchmarks --only hub` (opt-in: it runs up to eight daemons at once). For each
scenario (lines x items/h per line) the simulated PLC, conveyor and scan tunnel of every
line run in this process (benchmarks/line.py's line: a 10 m/s belt, poll 5 ms), every
line's daemon is its own `sorterd run` process with its own site config, journal and
topic prefix (`bench/hub/line-K`), and all daemons publish to one local broker
(mosquitto when installed). Figures per scenario:

- each line's request-to-reply latency as its PLC sees it (benchmarks.line.latency_ms;
  target p99 <= 10 ms on every line), late replies and recirc_late;
- the daemons' CPU together, as a share of one core (target <= 0.5 core for 4 lines at
  40,000 items/h), from /proc over the induction and drain;
- this process's own CPU share: the simulators of every line share one event loop here,
  and a saturated measuring side inflates the latency it measures (read the p99 with it);
- whether every line drained, and the MQTT backlog (max on P/stats).

Bounded: `duration_s` of induction per scenario (25 s), a 60 s drain at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import PLAN
from benchmarks.daemon import Daemon, Observer, cpu_s, daemon_process, observing, paced_gc
from benchmarks.line import PARAMS, POLL_MS, latency_ms, ledger_figures
from benchmarks.results import Section, broker_info
from drivers.broker import LocalBroker
from simulators.line import SimulatedLine
from sorter.plan import load_plan
from sorterd.demo import write_site

__all__ = ["QUICK", "Options", "report", "run"]

HUB = "bench/hub"
P99_TARGET_MS = 10.0
CPU_TARGET_CORES = 0.5


@dataclass(frozen=True, slots=True)
class Options:
    # (lines, items/h per line)
    scenarios: tuple[tuple[int, float], ...] = ((4, 40_000.0), (8, 20_000.0))
    duration_s: float = 25.0


QUICK = Options(scenarios=((2, 20_000.0),), duration_s=6.0)


@dataclass(slots=True)
class _Line:
    name: str
    sim: SimulatedLine
    obs: Observer
    daemon: Daemon | None = None


async def _line(
    stack: contextlib.AsyncExitStack, broker: LocalBroker, folder: Path, index: int, seed: int
) -> tuple[_Line, Path]:
    """A line's simulators and observer, and its site config (not started yet)."""
    name = f"line-{index}"
    chutes = sorted(load_plan(PLAN).machine_chutes)
    sim = await stack.enter_async_context(SimulatedLine(chutes, params=PARAMS, seed=seed))
    obs = await stack.enter_async_context(
        observing(broker, f"{HUB}/{name}", identifier=f"bench-hub-observer-{name}")
    )
    assert sim.scanner is not None
    assert sim.scanner.port is not None
    (folder / name).mkdir()
    site = write_site(
        folder / name,
        plc_port=sim.plc.port,
        scanner_port=sim.scanner.port,
        mqtt_url=broker.url,
        plan=PLAN,
        prefix=f"{HUB}/{name}",
        line=name,  # the daemon's MQTT client id: one per daemon
    )
    return _Line(name, sim, obs), site


async def run_scenario(
    lines: int, rate: float, duration_s: float, broker: LocalBroker
) -> dict[str, Any]:
    """`lines` lines at `rate` items/h each, for `duration_s`: the module docstring's figures."""
    async with contextlib.AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sorterd-hub-")))
        made = [await _line(stack, broker, folder, k, seed=5 + k) for k in range(1, lines + 1)]
        started = time.perf_counter()
        # Started together, as a hub's daemons are after a power cut: they compete for CPU.
        daemons = await asyncio.gather(
            *(stack.enter_async_context(daemon_process(site, line.obs)) for line, site in made)
        )
        startup_s = time.perf_counter() - started
        hub = [line for line, _ in made]
        for line, daemon in zip(hub, daemons, strict=True):
            line.daemon = daemon
            assert line.sim.scanner is not None
            await line.sim.scanner.wait_for_clients(1)
        pids = [d.pid for d in daemons]
        cpu0, own0 = [cpu_s(pid) for pid in pids], time.process_time()
        t0 = time.perf_counter()
        inducting = (line.sim.run(rate, duration_s=duration_s) for line in hub)
        inducted = await asyncio.gather(*inducting)
        drained = await asyncio.gather(*(line.sim.drain(60) for line in hub))
        wall_s = time.perf_counter() - t0
        used = [cpu_s(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
        own_s = time.process_time() - own0
        await asyncio.sleep(2.5)  # one more P/stats from every daemon
        per_line = [
            {
                "line": line.name,
                "inducted": n,
                **ledger_figures(line.sim.ledger, ok),
                "plc_latency_ms": latency_ms(line.sim.ledger),
                "decision_latency_ms": (line.obs.stats[-1] if line.obs.stats else {}).get(
                    "latency_ms", {}
                ),
                "cpu_share": u / wall_s,
                "cpu_s_per_1000": u / max(n, 1) * 1000,
                "mqtt_backlog_max": max(
                    (s.get("mqtt", {}).get("backlog", 0) for s in line.obs.stats), default=0
                ),
            }
            for line, n, ok, u in zip(hub, inducted, drained, used, strict=True)
        ]
    return {
        "lines": lines,
        "rate": rate,
        "duration_s": duration_s,
        "per_line": per_line,
        "cpu_cores": sum(used) / wall_s,
        "simulators_cpu_cores": own_s / wall_s,
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
