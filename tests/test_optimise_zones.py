"""The allocation model with the plan's layout (docs/optimiser.md, "Layout"): zones and
their operators, fixed chutes, min/max chutes, destinations together or apart, and the
constraints that cannot hold named."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from sorter.optimise import OptimiseError, estimate_of, instance_from_plan, solve
from sorter.plan import build_plan
from tests.test_optimise_model import FUNCTIONS, volumes


def zoned(*destinations: dict[str, Any], **extra: Any) -> Any:
    data: dict[str, Any] = {
        "version": 2,
        "name": "zoned",
        "machine": {"chutes": "1-12"},
        "functions": dict(FUNCTIONS),  # 11 and 12
        "options": {"chute_capacity_items": 10, "clear_interval_min": 30},
        "zone": [
            {"name": "west", "chutes": "1-5", "operators": 1},
            {"name": "east", "chutes": "6-12", "operators": 3},
        ],
        "destination": list(destinations)
        or [
            {"name": "A", "chutes": [1]},
            {"name": "B", "chutes": [2]},
            {"name": "C", "chutes": [6]},
        ],
        **extra,
    }
    return build_plan(data, "p.toml")


def zones_of(inst: Any, chutes: tuple[int, ...]) -> set[int]:
    return {inst.zone(c) for c in chutes}


def test_kept_together_they_share_one_zone() -> None:
    plan = zoned(layout={"together": [["A", "B"]]})
    inst = instance_from_plan(plan, volumes({"A": {8: 60}, "B": {9: 40}}))
    result = solve(inst, move_weight=1.0, time_limit_s=30, workers=2)
    assert result.estimate_after == 0  # 3 + 2 chutes: a whole zone
    assert len(zones_of(inst, result.chutes[0] + result.chutes[1])) == 1


def test_kept_apart_they_share_no_zone() -> None:
    plan = zoned(layout={"apart": [["A", "C"]]})
    inst = instance_from_plan(plan, volumes({"A": {8: 200}, "C": {8: 20}}))
    result = solve(inst, move_weight=1.0, time_limit_s=30, workers=2)
    assert not zones_of(inst, result.chutes[0]) & zones_of(inst, result.chutes[2])
    assert len(result.chutes[0]) > 1


def test_fixed_min_and_max_chutes_hold() -> None:
    plan = zoned(
        {"name": "A", "chutes": [1, 2], "fixed": [2], "max_chutes": 3},
        {"name": "B", "chutes": [3], "min_chutes": 3},
        {"name": "C", "chutes": [6]},
    )
    inst = instance_from_plan(plan, volumes({"A": {8: 500}, "C": {8: 40}}))
    result = solve(inst, move_weight=0.0, time_limit_s=30, workers=2)
    assert 2 in result.chutes[0]
    assert len(result.chutes[0]) == 3  # wants all, gets its max
    assert len(result.chutes[1]) == 3  # no volume, keeps its min
    assert all(chute != 2 for chute, _, _ in result.moved)


def test_the_busiest_operator_gets_relief() -> None:
    # A and B are busy all day in the west zone (one operator); the east has three. The
    # estimate is 0 either way: the second stage moves chutes east.
    plan = zoned(
        {"name": "A", "chutes": [1, 2]},
        {"name": "B", "chutes": [3, 4]},
        {"name": "C", "chutes": [6]},
    )
    day = dict.fromkeys(range(6, 20), 30)
    inst = instance_from_plan(plan, volumes({"A": day, "B": day, "C": {8: 5}}))
    still = solve(inst, move_weight=1.0, time_limit_s=30, workers=2, balance_weight=0.0)
    assert still.moved == ()
    result = solve(inst, move_weight=1.0, time_limit_s=30, workers=2, balance_weight=1.0)
    assert result.estimate_after == 0
    assert max(result.zone_load_after) < max(result.zone_load_before)
    assert result.zone_load_before[0] == pytest.approx(2 * 14 * 30)
    assert any(inst.zone(c) == 1 for c, _, _ in result.moved)


def test_apart_groups_that_cannot_hold_are_named() -> None:
    # Three destinations pairwise apart on a machine of two zones.
    plan = zoned(layout={"apart": [["A", "B", "C"]]})
    with pytest.raises(OptimiseError) as info:
        instance_from_plan(plan, volumes({"A": {8: 5}}))
    assert "layout.apart[0] (A, B, C) cannot hold: 3 destinations" in str(info.value)


def test_the_solver_names_the_constraints_that_clash() -> None:
    # A needs 6 chutes: more than one zone's 5, so it is in both, and B, kept apart from
    # A, has no zone left. Only the solver sees it; the core it names is minimal (C's
    # min_chutes has nothing to do with it).
    plan = zoned(
        {"name": "A", "chutes": [1], "min_chutes": 6},
        {"name": "B", "chutes": [2]},
        {"name": "C", "chutes": [6], "min_chutes": 2},
        layout={"apart": [["A", "B"]]},
    )
    inst = instance_from_plan(plan, volumes({"A": {8: 5}}))
    with pytest.raises(OptimiseError) as info:
        solve(inst, move_weight=1.0, time_limit_s=30, workers=2)
    assert str(info.value) == (
        "these constraints cannot hold together: A: min_chutes = 6; layout.apart[0] (A, B)"
    )


def test_min_chutes_beyond_the_free_chutes_are_named() -> None:
    plan = zoned(
        {"name": "A", "chutes": [1], "min_chutes": 6},
        {"name": "B", "chutes": [2], "min_chutes": 5},
    )
    with pytest.raises(OptimiseError) as info:
        instance_from_plan(plan, volumes({}, ("A", "B")))
    message = str(info.value)
    assert "min_chutes of A, B: they need 11 free chutes but only 10" in message


def test_a_together_group_whose_fixed_chutes_sit_in_two_zones_is_named() -> None:
    plan = zoned(
        {"name": "A", "chutes": [1], "fixed": [1]},
        {"name": "B", "chutes": [6], "fixed": [6]},
        layout={"together": [["A", "B"]]},
    )
    with pytest.raises(OptimiseError, match=r"layout.together\[0\] \(A, B\) cannot hold"):
        instance_from_plan(plan, volumes({}, ("A", "B")))


def test_min_and_max_that_clash_with_a_group_are_named() -> None:
    # Together, A (min 4) and B (min 2) need 6 chutes in one zone; each zone has room for
    # 5 (11 and 12 are function chutes).
    plan = zoned(
        {"name": "A", "chutes": [1], "min_chutes": 4},
        {"name": "B", "chutes": [2], "min_chutes": 2},
        layout={"together": [["A", "B"]]},
    )
    with pytest.raises(OptimiseError, match=r"together they need 6 chutes but no zone has more"):
        instance_from_plan(plan, volumes({}, ("A", "B")))


def best_per_chute(inst: Any, move_weight: float) -> float:
    """Every assignment of every free chute (or none) enumerated and costed per chute, with
    the zone constraints checked chute by chute: what the counts-per-zone model must
    match."""
    best = float("inf")
    n = len(inst.destinations)
    for assignment in itertools.product(range(-1, n), repeat=len(inst.free_chutes)):
        chutes = [list(f) for f in inst.fixed]
        for c, d in zip(inst.free_chutes, assignment, strict=True):
            if d >= 0:
                chutes[d].append(c)
        if any(len(cs) < m for cs, m in zip(chutes, inst.min_chutes, strict=True)):
            continue
        zones = [{inst.zone(c) for c in cs} for cs in chutes]
        if any(len(set().union(*(zones[d] for d in g))) > 1 for g in inst.together):
            continue
        if any(zones[a] & zones[b] for g in inst.apart for a in g for b in g if a < b):
            continue
        cost = sum(estimate_of(inst, d, cs) for d, cs in enumerate(chutes))
        for c, d in zip(inst.free_chutes, assignment, strict=True):
            now = [i for i, cs in enumerate(inst.current) if c in cs]
            if now and d not in now:
                cost += move_weight * 1.01
            elif not now and d >= 0:
                cost += move_weight
        best = min(best, cost)
    return best


@pytest.mark.parametrize("layout", [{}, {"together": [["A", "B"]]}, {"apart": [["A", "C"]]}])
def test_the_zone_counts_model_finds_the_best_per_chute_answer(layout: dict[str, Any]) -> None:
    # Seven free chutes in two zones (west 1-3 every 30 min, east 6-9 every 15 min; 10 is
    # overflow, 11 and 12 function chutes).
    data_zones = [
        {"name": "west", "chutes": "1-3", "operators": 1},
        {"name": "east", "chutes": "6-12", "operators": 2, "clear_interval_min": 15},
    ]
    plan = zoned(
        {"name": "A", "chutes": [1], "overflow": [10]},
        {"name": "B", "chutes": [2, 6]},
        {"name": "C", "chutes": [7], "overflow": [10]},
        layout=layout,
        zone=data_zones,
        machine={"chutes": "1-3,6-12"},
    )
    vols = volumes({"A": {8: 70, 9: 40}, "B": {18: 45}, "C": {3: 60}})
    inst = instance_from_plan(plan, vols)
    assert len(inst.free_chutes) == 7
    result = solve(inst, move_weight=5.0, time_limit_s=30, workers=2, balance_weight=0.0)
    assert result.status == "OPTIMAL"
    assert result.objective == pytest.approx(best_per_chute(inst, 5.0), abs=0.02)
    used = sum(1 for _, before, _ in result.moved if before)
    realised = result.estimate_after + 5.0 * (1.01 * used + len(result.moved) - used)
    assert realised == pytest.approx(result.objective, abs=0.02)


@pytest.mark.parametrize(("loop_order", "gained"), [(None, 4), ("5,1-4,6-12", 1)])
def test_a_growing_destination_takes_the_nearest_chute_along_the_loop(
    loop_order: str | None, gained: int
) -> None:
    machine: dict[str, Any] = {"chutes": "1-12"}
    if loop_order:
        machine["loop_order"] = loop_order
    plan = zoned(
        {"name": "A", "chutes": [5]},
        {"name": "B", "chutes": [10]},
        machine=machine,
        zone=[{"name": "all", "chutes": "1-12"}],
    )
    inst = instance_from_plan(plan, volumes({"A": {8: 40}}, ("A", "B")))
    result = solve(inst, move_weight=1.0, time_limit_s=30, workers=2)
    assert result.chutes[0] == tuple(sorted((5, gained)))
