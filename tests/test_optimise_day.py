"""The generated Casablanca day (simulators/volumes.py) and what the optimiser makes of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from simulators.volumes import OPEN_HOURS, generate_day, kind_of, plan_lanes, write_volumes
from sorter.optimise import instance_from_plan, load_volumes, solve
from sorter.plan import load_plan

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "config" / "casablanca" / "sortplan.toml"
SHIPPED = ROOT / "config" / "casablanca" / "volumes.csv"


def test_the_same_seed_gives_the_same_day_another_seed_another() -> None:
    lanes = plan_lanes(PLAN)
    assert generate_day(lanes, seed=3) == generate_day(lanes, seed=3)
    assert generate_day(lanes, seed=3) != generate_day(lanes, seed=4)


def test_the_day_has_its_shape() -> None:
    lanes = plan_lanes(PLAN)
    day = generate_day(lanes, total_items=90_000, seed=1)
    assert set(day) == set(lanes)
    total = sum(map(sum, day.values()))
    assert abs(total - 90_000) < 90_000 * 0.05
    assert all(n == 0 for hours in day.values() for h, n in enumerate(hours) if h not in OPEN_HOURS)

    def by_kind(kind: str) -> list[int]:
        names = [name for name in day if kind_of(name) == kind]
        assert names, kind
        return [sum(day[name][h] for name in names) for h in range(24)]

    export, inbound = by_kind("export"), by_kind("inbound")
    assert 17 <= export.index(max(export)) <= 21, export  # the evening export peak
    assert 7 <= inbound.index(max(inbound)) <= 12, inbound  # the morning air cargo
    # Skewed: the busiest fifth of the lanes carries twice its share of the day, or more.
    sizes = sorted((sum(hours) for hours in day.values()), reverse=True)
    assert sum(sizes[: len(sizes) // 5]) >= total * 0.4


def test_the_shipped_day_is_the_generated_one_and_reads(tmp_path: Path) -> None:
    made = tmp_path / "volumes.csv"
    result = subprocess.run(
        [sys.executable, "-m", "simulators.volumes", "--plan", str(PLAN), "--out", str(made)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert made.read_text() == SHIPPED.read_text()
    plan = load_plan(PLAN)
    volumes = load_volumes(SHIPPED, [d.name for d in plan.destinations])
    assert volumes.total == sum(map(sum, generate_day(plan_lanes(PLAN), seed=1).values()))


def test_write_volumes_leaves_out_empty_hours(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    write_volumes(path, {"A": [0] * 23 + [7]})
    assert path.read_text() == "destination,hour,items\nA,23,7\n"


def test_the_optimiser_halves_the_estimate_moving_few_chutes() -> None:
    # The figure, on the model's estimate (the simulation's is still to come):
    # at least half of the full-chute items gone, at most 10 % of the chutes moved.
    plan = load_plan(PLAN)
    volumes = load_volumes(SHIPPED, [d.name for d in plan.destinations])
    result = solve(instance_from_plan(plan, volumes), move_weight=100.0, time_limit_s=30, workers=2)
    assert result.estimate_before > 0
    assert result.estimate_after <= result.estimate_before / 2
    assert len(result.moved) <= len(plan.machine_chutes) // 10
