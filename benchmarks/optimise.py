"""The plan optimiser as an engineer runs it: `sorterd plan optimise` as its own process.

Two measurements (issue 19's figures):
- size: a synthetic 240-chute machine with 120 destinations and a generated 24-hour day
  (simulators/volumes.py), most chutes in use so that better answers need relabelling;
  the solver's wall time within its time limit, its status and the gap to its bound;
- Casablanca: the shipped plan and the generated day config/casablanca/volumes.csv; the
  estimate of items finding their chutes full before and after, the recirculations caused
  by full chutes in the simulated day (simulators/chute_day.py) before and after, and the
  chutes moved, at two move weights.

Run `python -m benchmarks --only optimise` (writes a results file) or
`python -m benchmarks.optimise` (prints only).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT
from benchmarks.results import Section
from simulators.volumes import generate_day, write_volumes
from sorter.optimise.plan_out import dump_toml

__all__ = ["QUICK", "Options", "main", "report", "run", "synthetic_plan"]

CASABLANCA = ROOT / "config" / "casablanca"
FUNCTION_KEYS = (
    "no_read", "invalid_code", "multi_read_conflict", "no_rule", "no_chute", "max_recirc",
    "timeout", "after_cutoff", "customs_hold",
)  # fmt: skip


@dataclass(frozen=True)
class Options:
    chutes: int = 240
    destinations: int = 120
    items: int = 300_000  # the synthetic day: a busy 240-chute hub
    time_limit_s: float = 60.0
    workers: int = min(8, os.cpu_count() or 1)
    move_weights: tuple[float, ...] = (10.0, 100.0)
    seed: int = 1


QUICK = Options(chutes=120, destinations=60, items=150_000, time_limit_s=10.0)


def synthetic_plan(chutes: int, destinations: int, seed: int) -> dict[str, Any]:
    """A plan as TOML data: function chutes at the end of the loop, an overflow chute per
    ten destinations before them, and the remaining chutes dealt out to the destinations
    (a third of them export lanes), each at least one; four zones of a quarter of the loop
    with 1-3 operators, two destinations kept together and two apart."""
    functions = {key: chutes - i % 5 for i, key in enumerate(FUNCTION_KEYS)}
    n_overflow = max(1, destinations // 10)
    first_overflow = chutes - 5 - n_overflow + 1
    lanes = list(range(1, first_overflow))
    names = [f"EXPORT-{i:03d}" if i % 3 == 0 else f"CITY-{i:03d}" for i in range(destinations)]
    # Uneven by design: lane i gets about (1 + i % 4) shares of the chutes.
    shares = [1 + (i * 7 + seed) % 4 for i in range(destinations)]
    counts = [max(1, len(lanes) * s // sum(shares)) for s in shares]
    table: list[dict[str, Any]] = []
    start = 0
    for i, (name, n) in enumerate(zip(names, counts, strict=True)):
        own = lanes[start : start + n] or [lanes[-1]]
        start += n
        table.append({"name": name, "chutes": own, "overflow": [first_overflow + i % n_overflow]})
    quarter = chutes // 4
    zones = [
        {
            "name": f"Z{z + 1}",
            "chutes": f"{z * quarter + 1}-{chutes if z == 3 else (z + 1) * quarter}",
            "operators": 1 + (z * 5 + seed) % 3,
        }
        for z in range(4)
    ]
    return {
        "version": 2,
        "name": f"synthetic-{chutes}-{destinations}",
        "machine": {"chutes": f"1-{chutes}", "lap_s": 90.0},
        "functions": functions,
        "options": {"chute_capacity_items": 60, "clear_interval_min": 20},
        "zone": zones,
        "layout": {"together": [[names[1], names[2]]], "apart": [[names[4], names[5]]]},
        "destination": table,
        "rule": [
            {"destination": name, "country": ["MA"], "postcode": [f"{10000 + i}"]}
            for i, name in enumerate(names)
        ],
    }


_PATTERNS: dict[str, tuple[str, Callable[[re.Match[str]], Any]]] = {
    "status": (r"solver: (\w+) in ([\d.]+) s", lambda m: (m.group(1), float(m.group(2)))),
    "gap": (r"gap ([\d.]+)%", lambda m: float(m.group(1)) / 100),
    "estimate": (
        r"full: ([\d,]+) before, ([\d,]+) after",
        lambda m: (float(m.group(1).replace(",", "")), float(m.group(2).replace(",", ""))),
    ),
    "moved": (r"chutes moved: (\d+) of (\d+)", lambda m: (int(m.group(1)), int(m.group(2)))),
    "simulated": (
        r"recirculations caused by full chutes +([\d,]+) +([\d,]+)",
        lambda m: (int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))),
    ),
    "full_events": (
        r"chute-full events +([\d,]+) +([\d,]+)",
        lambda m: (int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))),
    ),
    "gave_up": (
        r"items to the max_recirc chute +([\d,]+) +([\d,]+)",
        lambda m: (int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))),
    ),
    "busiest_operator": (
        r"busiest operator's items per day ([\d,]+) before, ([\d,]+) after \(model\), "
        r"gap ([\d.]+)%",
        lambda m: (
            float(m.group(1).replace(",", "")),
            float(m.group(2).replace(",", "")),
            float(m.group(3)) / 100,
        ),
    ),
}
_OPERATOR_ROW = re.compile(r"items per operator, zone (.+?) \((\d+)\) +([\d,]+) +([\d,]+)")


def _optimise(site: Path, volumes: Path, opts: Options, weight: float) -> dict[str, Any]:
    """One `sorterd plan optimise` process; its printed figures and its wall time."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable, "-m", "sorterd.cli", "plan", "optimise", "-c", str(site),
            "--volumes", str(volumes), "--time-limit-s", str(opts.time_limit_s),
            "--workers", str(opts.workers), "--move-weight", str(weight),
        ],
        capture_output=True, text=True, timeout=opts.time_limit_s + 120, check=False, cwd=ROOT,
    )  # fmt: skip
    wall_s = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"sorterd plan optimise failed: {done.stderr.strip()}")
    out: dict[str, Any] = {"process_s": wall_s, "move_weight": weight}
    for key, (pattern, read) in _PATTERNS.items():
        m = re.search(pattern, done.stdout)
        if m is None:
            raise RuntimeError(f"no {key} in the output: {done.stdout}")
        out[key] = read(m)
    out["operators"] = [
        {
            "zone": m.group(1),
            "operators": int(m.group(2)),
            "before": int(m.group(3).replace(",", "")),
            "after": int(m.group(4).replace(",", "")),
        }
        for m in _OPERATOR_ROW.finditer(done.stdout)
    ]
    return out


def _synthetic(opts: Options, tmp: Path) -> dict[str, Any]:
    data = synthetic_plan(opts.chutes, opts.destinations, opts.seed)
    (tmp / "sortplan.toml").write_text(dump_toml(data), encoding="utf-8")
    (tmp / "site.toml").write_text((CASABLANCA / "site.toml").read_text(), encoding="utf-8")
    lanes = {d["name"]: len(d["chutes"]) for d in data["destination"]}
    write_volumes(tmp / "volumes.csv", generate_day(lanes, opts.items, opts.seed))
    return _optimise(tmp / "site.toml", tmp / "volumes.csv", opts, opts.move_weights[0])


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    section = Section(params={**opts.__dict__, "move_weights": list(opts.move_weights)})
    with tempfile.TemporaryDirectory(prefix="sorterd-bench-") as tmp:
        size = _synthetic(opts, Path(tmp))
    status, solve_s = size["status"]
    section.details["size"] = size
    label = f"{opts.chutes} chutes, {opts.destinations} destinations, 24 h"
    section.add(
        "solve_s", solve_s, "s", f"solver wall time ({status}), {label}", better="lower",
        target=f"<= {opts.time_limit_s:g} s",
    )  # fmt: skip
    section.add("gap", size["gap"] * 100, "%", f"gap to the solver's bound, {label}")
    section.add("process_s", size["process_s"], "s", f"`sorterd plan optimise` in all, {label}")
    machine = 240  # the Casablanca loop
    for weight in opts.move_weights:
        day = _optimise(CASABLANCA / "site.toml", CASABLANCA / "volumes.csv", opts, weight)
        before, after = day["estimate"]
        moved, _ = day["moved"]
        section.details[f"casablanca_w{weight:g}"] = day
        section.add(
            f"casablanca_reduction_w{weight:g}",
            100 * (1 - after / before) if before else 0.0,
            "%",
            f"Casablanca day: estimated full-chute items {before:,.0f} -> {after:,.0f}, "
            f"move weight {weight:g} (model estimate)",
            better="higher",
            target=">= 50 %",
        )
        sim_before, sim_after = day["simulated"]
        section.add(
            f"casablanca_sim_reduction_w{weight:g}",
            100 * (1 - sim_after / sim_before) if sim_before else 0.0,
            "%",
            f"Casablanca day simulated: recirculations caused by full chutes {sim_before:,} "
            f"-> {sim_after:,}, move weight {weight:g} (simulators/chute_day.py)",
            better="higher",
            target=">= 50 %",
        )
        section.add(
            f"casablanca_moved_w{weight:g}",
            100 * moved / machine,
            "%",
            f"Casablanca day: {moved} of {machine} chutes moved, move weight {weight:g}",
            better="lower",
            target="<= 10 %",
        )
        ev_before, ev_after = day["full_events"]
        section.add(
            f"casablanca_full_events_w{weight:g}",
            100 * (1 - ev_after / ev_before) if ev_before else 0.0,
            "%",
            f"Casablanca day simulated: chute-full events {ev_before:,} -> {ev_after:,}, "
            f"move weight {weight:g}",
            better="higher",
        )
        busiest = [max((r[k] for r in day["operators"]), default=0) for k in ("before", "after")]
        section.add(
            f"casablanca_busiest_operator_w{weight:g}",
            float(busiest[1]),
            "items",
            f"Casablanca day simulated: the busiest operator's items per day {busiest[0]:,} -> "
            f"{busiest[1]:,}, move weight {weight:g}",
            better="lower",
        )
    return section


def report(section: Section) -> list[str]:
    return [f"  {f.name:<28} {f.value:10.2f} {f.unit:<3} {f.label}" for f in section.figures]


def main() -> int:
    print("\n".join(report(run(QUICK if "--quick" in sys.argv else Options()))))
    print("(no results file: `python -m benchmarks --only optimise` writes one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
