"""The chute allocation model (contract section 11) on small plans whose best answer is
found here by enumeration, independently of the solver."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sorter.optimise import (
    OptimiseError,
    estimate_items,
    instance_from_plan,
    parse_volumes,
    solve,
)
from sorter.optimise.plan_out import dump_toml, optimised_plan_text
from sorter.plan import build_plan, compile_plan, load_plan

FUNCTIONS = {
    "no_read": 12,
    "invalid_code": 12,
    "multi_read_conflict": 12,
    "no_rule": 12,
    "no_chute": 11,
    "max_recirc": 11,
    "timeout": 11,
    "after_cutoff": 11,
    "customs_hold": 11,
}


def plan_data(chutes: str = "1-12") -> dict[str, Any]:
    return {
        "version": 2,
        "name": "small",
        "machine": {"chutes": chutes},
        "functions": dict(FUNCTIONS),
        "options": {"chute_capacity_items": 10, "clear_interval_min": 30},
        "destination": [
            {"name": "A", "chutes": [1], "overflow": [10]},
            {"name": "B", "chutes": [2, 3, 4]},
            {"name": "C", "chutes": [5, 6], "overflow": [10], "cutoff": "20:00"},
        ],
        "rule": [
            {"destination": "A", "postcode": ["20*"], "country": ["MA"]},
            {"destination": "B", "barcode": '^1Z"\\d'},
            {"destination": "C", "country": ["!MA"]},
        ],
    }


def volumes(rows: dict[str, dict[int, int]], names: tuple[str, ...] = ("A", "B", "C")) -> Any:
    text = "destination,hour,items\n" + "".join(
        f"{name},{hour},{items}\n" for name, hours in rows.items() for hour, items in hours.items()
    )
    return parse_volumes(text, "v.csv", names)


def literal_estimate(items: int, n: int, capacity: int, clear: int) -> float:
    """Section 11 as written."""
    return max(0.0, items / n * clear / 60 - capacity) * n * 60 / clear


@pytest.mark.parametrize(("items", "n"), [(0, 1), (19, 1), (20, 1), (21, 1), (95, 3), (400, 7)])
def test_the_estimate_is_the_contracts(items: int, n: int) -> None:
    hours = (items,) + (0,) * 23
    assert estimate_items(hours, n, 10, 30) == pytest.approx(literal_estimate(items, n, 10, 30))


def best_by_enumeration(inst: Any) -> float:
    """The least estimate over every split of the free chutes (each destination >= 1)."""
    free = len(inst.free_chutes)
    best = float("inf")
    for counts in itertools.product(range(1, free + 1), repeat=len(inst.destinations)):
        if sum(counts) <= free:
            total = sum(
                estimate_items(items, n, inst.capacity_items, inst.clear_interval_min)
                for items, n in zip(inst.hourly_items, counts, strict=True)
            )
            best = min(best, total)
    return best


def test_busy_destinations_get_chutes_quiet_ones_keep_one() -> None:
    plan = build_plan(plan_data(), "p.toml")
    vols = volumes({"A": {8: 200, 9: 150}, "B": {8: 10}, "C": {20: 60}})
    inst = instance_from_plan(plan, vols)
    # 12 chutes: 11 and 12 are function chutes, 10 is overflow: 9 free.
    assert inst.free_chutes == tuple(range(1, 10))
    result = solve(inst, move_weight=0.0, time_limit_s=30, workers=2)
    assert result.status == "OPTIMAL"
    assert result.estimate_after == pytest.approx(best_by_enumeration(inst))
    assert result.estimate_after < result.estimate_before
    assigned = [c for chutes in result.chutes for c in chutes]
    assert len(assigned) == len(set(assigned)), "a chute serves one destination at most"
    assert all(chutes for chutes in result.chutes), "every destination keeps a chute"
    assert not set(assigned) & {10, 11, 12}
    assert len(result.chutes[0]) > len(result.chutes[1])
    assert result.gap == pytest.approx(0.0)


def test_moves_are_counted_and_weighed() -> None:
    plan = build_plan(plan_data(), "p.toml")
    # A little over what A's one chute takes: one more chute saves 4 items in each of
    # two hours (8 in all).
    vols = volumes({"A": {8: 24, 9: 24}})
    inst = instance_from_plan(plan, vols)
    cheap = solve(inst, move_weight=1.0, time_limit_s=30, workers=2)
    assert cheap.estimate_after == 0
    # One chute more for A, from B, C or the chutes nobody uses: one move either way.
    assert len(cheap.moved) == 1
    (chute, _, after) = cheap.moved[0]
    assert after == "A"
    assert chute in cheap.chutes[0]
    assert [len(c) for c in cheap.chutes] in ([2, 3, 2], [2, 2, 2], [2, 3, 1])
    dear = solve(inst, move_weight=100.0, time_limit_s=30, workers=2)
    assert dear.moved == ()
    assert dear.chutes == ((1,), (2, 3, 4), (5, 6))
    assert dear.estimate_after == dear.estimate_before == 8


def test_chutes_nobody_used_may_be_used() -> None:
    data = plan_data()
    data["destination"][1]["chutes"] = [2]
    data["destination"][2]["chutes"] = [3]
    plan = build_plan(data, "p.toml")
    result = solve(instance_from_plan(plan, volumes({"A": {5: 100}})), 1.0, 30, 2)
    assert result.estimate_after == 0
    assert result.chutes[1:] == ((2,), (3,))
    assert all(before == "" and after == "A" for _, before, after in result.moved)


def test_a_function_or_overflow_chute_listed_as_main_chute_stays() -> None:
    data = plan_data()
    data["destination"][1]["chutes"] = [2, 10]  # 10 is A's and C's overflow
    plan = build_plan(data, "p.toml")
    result = solve(instance_from_plan(plan, volumes({"A": {5: 500}})), 0.0, 30, 2)
    assert 10 in result.chutes[1]


def test_more_destinations_than_free_chutes_is_refused() -> None:
    data = plan_data("1-3,11-12")
    data["destination"] = [{"name": n, "chutes": [1]} for n in ("A", "B", "C", "D")]
    data["rule"] = []
    plan = build_plan(data, "p.toml")
    with pytest.raises(OptimiseError) as info:
        instance_from_plan(plan, volumes({}, ("A", "B", "C", "D")))
    message = str(info.value)
    assert "4 destinations need a free chute but only 3" in message
    assert "p.toml" in message


@pytest.mark.parametrize("missing", ["chute_capacity_items", "clear_interval_min"])
def test_the_optimiser_needs_both_options(missing: str) -> None:
    data = plan_data()
    del data["options"][missing]
    plan = build_plan(data, "p.toml")
    with pytest.raises(OptimiseError, match=f"p.toml: \\[options\\] {missing} must be set"):
        instance_from_plan(plan, volumes({}))


def test_the_written_plan_reads_back_and_checks(tmp_path: Path) -> None:
    data = plan_data()
    data["name"] = 'a "quoted" name \\ with a backslash'
    plan = build_plan(data, "p.toml")
    result = solve(instance_from_plan(plan, volumes({"C": {3: 300}})), 1.0, 30, 2)
    text = optimised_plan_text(data, result.chutes, "new.toml", "optimised\nby a test")
    path = tmp_path / "new.toml"
    path.write_text(text, encoding="utf-8")
    new = load_plan(path)
    compile_plan(new)
    assert [d.chutes for d in new.destinations] == [tuple(c) for c in result.chutes]
    assert new.name == data["name"]
    assert new.rules[1].barcode is not None
    assert new.rules[1].barcode.pattern == '^1Z"\\d'
    assert [d.overflow for d in new.destinations] == [(10,), (), (10,)]
    assert new.destinations[2].cutoff_min == 20 * 60
    assert new.functions == plan.functions
    assert text.startswith("# optimised\n# by a test\n")


def test_the_shipped_casablanca_plan_round_trips() -> None:
    path = Path(__file__).parent.parent / "config/casablanca/sortplan.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert tomllib.loads(dump_toml(data)) == data


def best_per_chute(inst: Any, move_weight: float) -> float:
    """Every assignment of every free chute (or none) enumerated, costed per chute as
    docs/optimiser.md defines a move: the model decides counts, this decides chutes."""
    best = float("inf")
    options = range(-1, len(inst.destinations))
    for assignment in itertools.product(options, repeat=len(inst.free_chutes)):
        counts = [len(f) for f in inst.fixed]
        for d in assignment:
            if d >= 0:
                counts[d] += 1
        if any(n < m for n, m in zip(counts, inst.min_chutes, strict=True)):
            continue
        cost = 0.0
        for c, d in zip(inst.free_chutes, assignment, strict=True):
            now = [i for i, chutes in enumerate(inst.current) if c in chutes]
            if now and d not in now:
                cost += move_weight * 1.01  # a chute that served a destination relabelled
            elif not now and d >= 0:
                cost += move_weight  # an idle chute labelled
        cost += sum(
            estimate_items(items, n, inst.capacity_items, inst.clear_interval_min)
            for items, n in zip(inst.hourly_items, counts, strict=True)
        )
        best = min(best, cost)
    return best


@pytest.mark.parametrize("move_weight", [1.0, 5.0, 40.0])
def test_the_counts_model_finds_the_best_per_chute_answer(move_weight: float) -> None:
    data = plan_data("1-8,11-12")  # 1-8 free but 10's gone: A and C have no overflow now
    data["destination"][0]["overflow"] = []
    data["destination"][2]["overflow"] = []
    data["destination"][1]["chutes"] = [2, 3]  # 7 and 8 idle
    plan = build_plan(data, "p.toml")
    vols = volumes({"A": {8: 70, 9: 40}, "C": {18: 45, 19: 30}, "B": {3: 10}})
    inst = instance_from_plan(plan, vols)
    assert len(inst.free_chutes) == 8
    result = solve(inst, move_weight=move_weight, time_limit_s=30, workers=2)
    assert result.status == "OPTIMAL"
    assert result.objective == pytest.approx(best_per_chute(inst, move_weight), abs=0.02)
    # The chutes realised cost what the model said they would.
    used = sum(1 for _, before, _ in result.moved if before)
    idle = len(result.moved) - used
    realised = result.estimate_after + move_weight * (1.01 * used + idle)
    assert realised == pytest.approx(result.objective, abs=0.02)


def test_a_kept_destination_keeps_its_chutes_whatever_its_volume() -> None:
    plan = build_plan(plan_data(), "p.toml")
    vols = volumes({"A": {8: 500}, "B": {8: 500}})
    inst = instance_from_plan(plan, vols, keep=["B"])
    assert 2 not in inst.free_chutes
    result = solve(inst, move_weight=0.0, time_limit_s=30, workers=2)
    assert result.chutes[1] == (2, 3, 4)
    assert all(chute not in (2, 3, 4) for chute, _, _ in result.moved)
    assert len(result.chutes[0]) > 1  # A still grows, from the rest


def test_keeping_an_unknown_destination_is_refused() -> None:
    plan = build_plan(plan_data(), "p.toml")
    with pytest.raises(OptimiseError, match=r"--keep NOPE: no such destination in p\.toml"):
        instance_from_plan(plan, volumes({}), keep=["NOPE"])


@pytest.mark.parametrize(
    ("change", "keep", "owner"),
    [
        ({"A": {"chutes": [1, 2], "fixed": [2]}}, [], 0),  # 2 fixed to A, listed by B too
        ({"A": {"chutes": [1, 2]}}, ["A"], 0),  # 2 of A kept, listed by B too
        ({"A": {"chutes": [1, 10]}, "C": {"chutes": [5, 10]}}, [], 0),  # 10: overflow
        ({"A": {"chutes": [1, 12]}, "B": {"chutes": [2, 12]}}, [], 0),  # 12: a function chute
    ],
)
def test_a_chute_that_stays_is_written_under_one_destination(
    change: dict[str, dict[str, Any]], keep: list[str], owner: int, tmp_path: Path
) -> None:
    """Found in review: a chute that stays (fixed, kept, function, overflow) and that two
    destinations listed was written under both; section 11: each chute to one destination
    at most."""
    data = plan_data()
    for d in data["destination"]:
        d.update(change.get(d["name"], {}))
    plan = build_plan(data, "p.toml")
    inst = instance_from_plan(plan, volumes({"A": {5: 100}, "B": {5: 100}, "C": {5: 100}}), keep)
    result = solve(inst, move_weight=1.0, time_limit_s=30, workers=2)
    written = [c for chutes in result.chutes for c in chutes]
    assert len(written) == len(set(written)), result.chutes
    both = set(plan.destinations[owner].chutes) & {
        c for i, d in enumerate(plan.destinations) if i != owner for c in d.chutes
    }
    assert both
    assert both <= set(result.chutes[owner])
    assert all(len(chutes) >= 1 for chutes in result.chutes)
    text = optimised_plan_text(data, result.chutes, str(tmp_path / "o.toml"), "")
    compile_plan(build_plan(tomllib.loads(text), "o.toml"))
