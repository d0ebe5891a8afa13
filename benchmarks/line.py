"""The whole line at speed: `sorterd run` as its own process against the simulated line.

For each rate the simulated PLC, conveyor and scan tunnel (in this process) induct items
for a bounded time; the daemon is a separate `sorterd run` process talking to them over
Modbus TCP and TCP telegrams, and to a local broker over MQTT. Figures per rate:

- request-to-reply latency as the PLC sees it: from the PLC model putting the request on
  its ring to the PLC reading the reply (simulator clock; includes its 2 ms cycle and the
  wait for scans that arrive after the request);
- the same latency with the minimal reference host (`benchmarks/refhost.py`: poll, read
  the requests, answer a fixed chute, write) in place of the daemon, in the same run,
  against a fresh simulated line with the same seed, rate and poll interval: the floor of
  the handshake. The daemon's p99 is reported as a ratio to it (goal <= 1.3 x);
- decision latency inside the daemon (its P/stats, last 8192 decisions);
- items answered late (reply after the item passed its chute), recirculations caused by
  the host (recirc_late), and whether every item drained (reached a terminal outcome);
- CPU seconds per 1,000 items of the daemon process, and as a share of one core; the
  reference host's share beside it;
- peak resident memory of the daemon process (VmHWM); MQTT backlog (max on P/stats).

Start-up to ready: from spawning `sorterd run` to its status online with the PLC
connected (config loaded, plan compiled, kernels from the numba cache, devices connected).

The long run at one rate, sampled every minute, is benchmarks/soak.py.
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
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import PLAN
from benchmarks.daemon import (
    PREFIX,
    BrokerAt,
    Daemon,
    Observer,
    cpu_s,
    daemon_process,
    memory_kb,
    observing,
    paced_gc,
)
from benchmarks.results import Section, broker_info, filesystem
from drivers.broker import LocalBroker
from simulators.conveyor import Ledger, LineParams
from simulators.line import DEMO_PARAMS, SimulatedLine
from simulators.plc import PlcServe
from sorter.plan import load_plan
from sorterd.demo import write_site

__all__ = [
    "QUICK_DURATION_S",
    "QUICK_RATES",
    "Options",
    "Variant",
    "daemon_on_line",
    "induct",
    "latency_ms",
    "ledger_figures",
    "main",
    "report",
    "run",
    "run_reference",
    "section_name",
]

RATES = (20_000, 40_000, 100_000, 200_000)
DURATION_S = 30.0
QUICK_RATES = (40_000, 100_000)
QUICK_DURATION_S = 8.0
POLL_MS = 5  # write_site's plc.poll_interval_ms; the reference host polls at the same
# A belt fast enough to carry 200,000 items/h with room: 10 m/s, one item per 0.1 m at
# most; the first chute is 6 m (0.6 s) after the scan tunnel.
PARAMS = replace(DEMO_PARAMS, belt_speed_m_s=10.0, item_pitch_m=0.1)
RATIO_GOAL = 1.3
JOURNAL_SYNCHRONOUS_ENV = "SORTERD_JOURNAL_SYNCHRONOUS"
POLL_ON_READ_ENV = "SORTERD_PLC_POLL_ON_READ"


@dataclass(frozen=True, slots=True)
class Variant:
    """A run of the daemon beside the default one, with one config key set through its
    environment override (docs/interfaces.md): its row key, the override, its figure."""

    key: str
    env: str
    value: str
    figure: str
    label: str


JOURNAL_NORMAL = Variant(
    "daemon_normal",
    JOURNAL_SYNCHRONOUS_ENV,
    "normal",
    "plc_reply_ms_p99_journal_normal",
    'PLC request -> reply p99, journal synchronous = "normal"',
)
NO_READ_AHEAD = Variant(
    "daemon_no_read_ahead",
    POLL_ON_READ_ENV,
    "false",
    "plc_reply_ms_p99_no_read_ahead",
    "PLC request -> reply p99, poll_on_read = false",
)


@dataclass(frozen=True, slots=True)
class Options:
    rates: tuple[float, ...] = RATES
    duration_s: float = DURATION_S
    reference: bool = True  # also run the reference host at each rate
    # Every scan before its request: no reply waits for a scan, so the daemon's latency
    # against the reference host's is the daemon's own (a diagnosis, not the line's mix).
    scans_first: bool = False
    # Rates at which the daemon also runs with `[journal] synchronous = "normal"` (no disk
    # sync before the PLC hears of a step): what the default durability costs at the PLC.
    normal_at: tuple[float, ...] = (100_000,)
    # Rates at which the daemon also runs with `[plc] poll_on_read = false`: polling at the
    # poll interval only, as the reference host does.
    no_read_ahead_at: tuple[float, ...] = (100_000,)

    def variants(self) -> tuple[tuple[Variant, tuple[float, ...]], ...]:
        """The comparison runs and the rates each is made at."""
        return ((JOURNAL_NORMAL, self.normal_at), (NO_READ_AHEAD, self.no_read_ahead_at))

    @property
    def params(self) -> LineParams:
        return replace(PARAMS, scan_before_request_probability=1.0) if self.scans_first else PARAMS


def latency_ms(ledger: Ledger) -> dict[str, float]:
    """Request (on the PLC's ring) to reply (read by the PLC), every pass that got one."""
    samples = np.array(
        [
            (p.reply_s - p.scan_s) * 1000
            for rec in ledger.items
            for p in rec.passes
            if p.reply_s is not None
        ]
    )
    if samples.size == 0:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "n": 0}
    return {
        "p50": float(np.percentile(samples, 50)),
        "p99": float(np.percentile(samples, 99)),
        "max": float(samples.max()),
        "n": int(samples.size),
    }


def ledger_figures(ledger: Ledger, drained: bool) -> dict[str, Any]:
    return {
        "drained": drained,
        "drained_items": ledger.terminal.total(),
        "in_flight": ledger.in_flight,
        "late_replies": ledger.late_replies,
        "recirc_late": ledger.confirmations.get("recirc_late", 0),
        "no_reply_passes": ledger.no_reply_passes,
        "requests": sum(len(rec.passes) for rec in ledger.items),
    }


@dataclass(frozen=True, slots=True)
class Run:
    """One timed induction and its drain, with the host process's CPU over both."""

    inducted: int
    drained: bool
    cpu_s: float  # the host's (daemon's or reference host's) user + system time
    wall_s: float
    own_cpu_s: float  # this process's (the simulators')

    @property
    def figures(self) -> dict[str, Any]:
        return {
            "inducted": self.inducted,
            "cpu_s": self.cpu_s,
            "wall_s": self.wall_s,
            "cpu_share": self.cpu_s / self.wall_s,
            "cpu_s_per_1000": self.cpu_s / max(self.inducted, 1) * 1000,
        }


async def induct(line: SimulatedLine, rate: float, duration_s: float, pid: int) -> Run:
    """Induct at `rate` for `duration_s`, then drain (60 s at most)."""
    cpu0, own0, t0 = cpu_s(pid), time.process_time(), time.perf_counter()
    inducted = await line.run(rate, duration_s=duration_s)
    drained = await line.drain(60)
    return Run(
        inducted,
        drained,
        cpu_s(pid) - cpu0,
        time.perf_counter() - t0,
        time.process_time() - own0,
    )


@contextlib.asynccontextmanager
async def daemon_on_line(
    broker: BrokerAt,
    *,
    profile: str | None = None,
    params: LineParams = PARAMS,
    plc_serve: PlcServe | None = None,
    seed: int = 5,
    prefix: str = PREFIX,
    name: str = "demo",
) -> AsyncIterator[tuple[SimulatedLine, Daemon, Observer]]:
    """A simulated line and `sorterd run` on it as its own process (MQTT client id and
    topic prefix from `name` and `prefix`), online, with an observer of its MQTT; the
    daemon's scanner link is up."""
    plan = load_plan(PLAN)
    async with (
        SimulatedLine(
            sorted(plan.machine_chutes), params=params, seed=seed, plc_serve=plc_serve
        ) as line,
        observing(broker, prefix, identifier=f"bench-observer-{name}") as obs,
    ):
        assert line.scanner is not None
        assert line.scanner.port is not None
        with tempfile.TemporaryDirectory(prefix="sorterd-bench-") as tmp:
            site = write_site(
                Path(tmp),
                plc_port=line.plc.port,
                plc_url=line.plc.url if plc_serve is not None else None,
                scanner_port=line.scanner.port,
                mqtt_url=broker.url,
                plan=PLAN,
                prefix=prefix,
                line=name,
            )
            async with daemon_process(site, obs, profile=profile) as daemon:
                await line.scanner.wait_for_clients(1)
                yield line, daemon, obs


async def run_rate(
    rate: float,
    duration_s: float,
    *,
    broker: LocalBroker,
    profile: str | None = None,
    params: LineParams = PARAMS,
    plc_serve: PlcServe | None = None,
) -> dict[str, Any]:
    """One rate with the daemon: the figures of the module docstring."""
    async with daemon_on_line(broker, profile=profile, params=params, plc_serve=plc_serve) as (
        line,
        daemon,
        obs,
    ):
        run = await induct(line, rate, duration_s, daemon.pid)
        memory = memory_kb(daemon.pid)
        await asyncio.sleep(2.5)  # one more P/stats
    last = obs.stats[-1] if obs.stats else {}
    return {
        "rate": rate,
        **run.figures,
        **ledger_figures(line.ledger, run.drained),
        "plc_latency_ms": latency_ms(line.ledger),
        "decision_latency_ms": last.get("latency_ms", {}),
        "polls_per_s": polls_per_s(obs.stats),
        "rss_peak_mb": memory.get("VmHWM", 0) / 1024,
        "mqtt_backlog_max": max(
            (s.get("mqtt", {}).get("backlog", 0) for s in obs.stats), default=0
        ),
        "startup_s": daemon.startup_s,
    }


async def run_reference(
    rate: float,
    duration_s: float,
    *,
    params: LineParams = PARAMS,
    plc_serve: PlcServe | None = None,
    poll_ms: float = POLL_MS,
) -> dict[str, Any]:
    """The same line, seed and rate with the minimal reference host in place of the daemon."""
    plan = load_plan(PLAN)
    chutes = sorted(plan.machine_chutes)
    async with SimulatedLine(chutes, params=params, seed=5, plc_serve=plc_serve) as line:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.refhost", line.plc.url,
            "--poll-ms", str(poll_ms), "--chutes", f"{chutes[0]}-{chutes[-1]}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                first = (await proc.stdout.readline()).decode().strip()
            if first != "ready":
                raise RuntimeError(f"reference host did not start: {first!r}")
            started_s = time.monotonic()
            run = await induct(line, rate, duration_s, proc.pid)
            memory = memory_kb(proc.pid)
            ran_s = time.monotonic() - started_s
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        counters = {}
        with contextlib.suppress(ValueError):
            counters = json.loads((await proc.stdout.read()).decode().strip() or "{}")
    return {
        "rate": rate,
        **run.figures,
        **ledger_figures(line.ledger, run.drained),
        "plc_latency_ms": latency_ms(line.ledger),
        "rss_peak_mb": memory.get("VmHWM", 0) / 1024,
        "host_counters": counters,
        "polls_per_s": counters.get("cycles", 0) / ran_s if ran_s > 0 else 0.0,
    }


def polls_per_s(stats: Sequence[dict[str, Any]]) -> float:
    """The daemon's header reads a second between its first and last P/stats of the run."""
    marks = [
        (datetime.fromisoformat(s["ts"]), s["plc"]["polls"])
        for s in stats
        if "ts" in s and "polls" in s.get("plc", {})
    ]
    # The first may be the retained P/stats of the daemon before this one: the run is the
    # stretch at the end over which the counter only grows.
    start = len(marks) - 1
    while start > 0 and marks[start - 1][1] <= marks[start][1]:
        start -= 1
    if len(marks) - start < 2:
        return 0.0
    (t0, n0), (t1, n1) = marks[start], marks[-1]
    seconds = (t1 - t0).total_seconds()
    return (n1 - n0) / seconds if seconds > 0 else 0.0


@contextlib.contextmanager
def _config_env(name: str, value: str) -> Iterator[None]:
    """The daemons spawned meanwhile run with a config key set through its environment
    override (docs/interfaces.md), e.g. `[journal] synchronous = "normal"`."""
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


async def _run_all(opts: Options) -> tuple[list[dict[str, Any]], dict[str, str]]:
    rows = []
    async with paced_gc(), LocalBroker() as broker:
        info = broker_info(broker.kind)
        print(f"broker: {info['kind']} {info.get('version', '')}", flush=True)
        for rate in opts.rates:
            row = {
                "daemon": await run_rate(rate, opts.duration_s, broker=broker, params=opts.params)
            }
            if opts.reference:
                row["reference"] = await run_reference(rate, opts.duration_s, params=opts.params)
            for variant, at in opts.variants():
                if rate in at:
                    with _config_env(variant.env, variant.value):
                        row[variant.key] = await run_rate(
                            rate, opts.duration_s, broker=broker, params=opts.params
                        )
            rows.append(row)
            for line in report_rows([row]):
                print(line, flush=True)
    return rows, info


def section_name(opts: Options) -> str:
    """A diagnosis run keeps its own section: it must not replace the line's table."""
    return "line-scans-first" if opts.scans_first else "line"


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    rows, broker = asyncio.run(_run_all(opts))
    section = Section(
        params={
            "rates_per_h": list(opts.rates),
            "duration_s": opts.duration_s,
            "poll_interval_ms": POLL_MS,
            "belt_speed_m_s": PARAMS.belt_speed_m_s,
            "reference_host": opts.reference,
            "scan_before_request_probability": opts.params.scan_before_request_probability,
            "journal_normal_at": list(opts.normal_at),
            "no_read_ahead_at": list(opts.no_read_ahead_at),
        },
        details={"broker": broker, "rates": rows},
        filesystems={"daemon journal": filesystem(tempfile.gettempdir())},
    )
    for row in rows:
        add_rate_figures(section, row)
        for variant, _at in opts.variants():
            if (n := row.get(variant.key)) is not None:
                section.add(
                    f"{variant.figure}@{n['rate']:.0f}",
                    n["plc_latency_ms"]["p99"],
                    "ms",
                    variant.label,
                    better="lower",
                )
    return section


def add_rate_figures(section: Section, row: dict[str, Any], suffix: str = "") -> None:
    """Named figures of one rate: NAME@RATE, baselines from the reference host's run."""
    d = row["daemon"]
    ref = row.get("reference")
    key = f"@{d['rate']:.0f}{suffix}"
    lat, ref_lat = d["plc_latency_ms"], (ref or {}).get("plc_latency_ms", {})
    name = "reference host"
    for q in ("p50", "p99", "max"):
        section.add(
            f"plc_reply_ms_{q}{key}",
            lat[q],
            "ms",
            f"PLC request -> reply {q}",
            better="lower",
            baselines={"reference_host": ref_lat[q]} if ref else None,
            baseline_labels={"reference_host": name},
        )
    if ref and ref_lat["p99"] > 0:
        section.add(
            f"plc_reply_p99_ratio{key}",
            lat["p99"] / ref_lat["p99"],
            "x",
            "daemon p99 / reference host p99",
            better="lower",
            target=f"<= {RATIO_GOAL} x",
        )
    section.add(
        f"cpu_share{key}",
        d["cpu_share"] * 100,
        "% of a core",
        "CPU",
        better="lower",
        baselines={"reference_host": ref["cpu_share"] * 100} if ref else None,
        baseline_labels={"reference_host": name},
    )
    section.add(f"cpu_s_per_1000{key}", d["cpu_s_per_1000"], "s", "CPU per 1,000 items")
    section.add(
        f"rss_peak_mb{key}",
        d["rss_peak_mb"],
        "MB",
        "peak resident memory (VmHWM)",
        better="lower",
        baselines={"reference_host": ref["rss_peak_mb"]} if ref else None,
        baseline_labels={"reference_host": name},
    )
    dec = d["decision_latency_ms"]
    section.add(f"decision_ms_p50{key}", dec.get("p50", 0), "ms", "daemon decision p50")
    section.add(f"decision_ms_p99{key}", dec.get("p99", 0), "ms", "daemon decision p99")
    for k in ("inducted", "drained_items", "in_flight", "late_replies", "recirc_late"):
        section.add(f"{k}{key}", d[k], "items", k.replace("_", " "))
    section.add(f"mqtt_backlog_max{key}", d["mqtt_backlog_max"], "messages", "MQTT backlog")
    section.add(f"startup_s{key}", d["startup_s"], "s", "start-up to online", better="lower")


def report_rows(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        x, ref = row["daemon"], row.get("reference")
        p, d = x["plc_latency_ms"], x["decision_latency_ms"]
        text = (
            f"{x['rate']:>7,.0f}/h  inducted {x['inducted']}, drained {x['drained_items']}"
            f"{'' if x['drained'] else ' (NOT ALL)'}  PLC ms p50/p99/max {p['p50']:.2f} "
            f"{p['p99']:.2f} {p['max']:.2f}  daemon ms p50/p99 {d.get('p50', 0):.2f} "
            f"{d.get('p99', 0):.2f}  late {x['late_replies']} recirc_late {x['recirc_late']}"
            f"  CPU {x['cpu_share'] * 100:.1f} %  {x['cpu_s_per_1000']:.2f} s/1000  "
            f"RSS {x['rss_peak_mb']:.0f} MB  backlog {x['mqtt_backlog_max']}  "
            f"start {x['startup_s']:.2f} s"
        )
        lines.append(text)
        if ref:
            r = ref["plc_latency_ms"]
            ratio = p["p99"] / r["p99"] if r["p99"] else float("nan")
            lines.append(
                f"{'':>9}  reference host: inducted {ref['inducted']}, drained "
                f"{ref['drained_items']}  PLC ms p50/p99/max {r['p50']:.2f} {r['p99']:.2f} "
                f"{r['max']:.2f}  CPU {ref['cpu_share'] * 100:.1f} %  RSS "
                f"{ref['rss_peak_mb']:.0f} MB  ->  daemon p99 = {ratio:.2f} x reference "
                f"(goal <= {RATIO_GOAL} x)"
            )
        if (n := row.get(JOURNAL_NORMAL.key)) is not None:
            cost_ms = p["p99"] - n["plc_latency_ms"]["p99"]
            lines.append(
                _variant_row(
                    "journal synchronous=normal",
                    n,
                    f'(the default "full" above: its disk sync costs {cost_ms:+.2f} ms at p99)',
                )
            )
        if (n := row.get(NO_READ_AHEAD.key)) is not None:
            lines.append(
                _variant_row(
                    "poll_on_read=false",
                    n,
                    f"polls/s {n.get('polls_per_s', 0):.0f} (with it "
                    f"{x.get('polls_per_s', 0):.0f}"
                    + (f", reference host {ref.get('polls_per_s', 0):.0f})" if ref else ")"),
                )
            )
    return lines


def _variant_row(what: str, run: dict[str, Any], tail: str) -> str:
    q = run["plc_latency_ms"]
    return (
        f"{'':>9}  {what}: PLC ms p50/p99/max {q['p50']:.2f} {q['p99']:.2f} {q['max']:.2f}"
        f"  late {run['late_replies']}  {tail}"
    )


def report(section: Section) -> list[str]:
    broker = section.details["broker"]
    return [
        f"broker: {broker['kind']} {broker.get('version', '')}",
        *report_rows(section.details["rates"]),
        "targets: p99 <= 10 ms at 100,000/h (poll 5 ms); p99 <= 1.3 x the reference host; "
        "no late reply at 200,000/h; CPU <= 25 % of a core at 40,000/h; start-up <= 2 s",
    ]


async def _main_profile(rates: Sequence[float], duration_s: float, profile: str) -> None:
    async with LocalBroker() as broker:
        for rate in rates:
            row = {"daemon": await run_rate(rate, duration_s, broker=broker, profile=profile)}
            for line in report_rows([row]):
                print(line)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.line")
    parser.add_argument("--rate", type=float, action="append", help="only these rates")
    parser.add_argument("--duration", type=float, default=DURATION_S, metavar="S")
    parser.add_argument("--profile", metavar="FILE", help="py-spy raw stacks of the daemon")
    args = parser.parse_args()
    rates = tuple(args.rate or RATES)
    if args.profile:
        asyncio.run(_main_profile(rates, args.duration, args.profile))
        return 0
    print("\n".join(report(run(Options(rates, args.duration)))))
    print("(no results file: `python -m benchmarks --only line` writes one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
