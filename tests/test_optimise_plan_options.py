"""The plan's optimiser options, `[options] chute_capacity_items` and `clear_interval_min`
(docs/interfaces.md section 6): optional for the daemon, checked like every option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sorter.config import ConfigError
from sorter.plan import build_plan, load_plan

FILE = "plan.toml"


def minimal(**options: Any) -> dict[str, Any]:
    return {
        "version": 2,
        "name": "options",
        "machine": {"chutes": "1-20"},
        "functions": {
            "no_read": 20,
            "invalid_code": 20,
            "multi_read_conflict": 20,
            "no_rule": 19,
            "no_chute": 19,
            "max_recirc": 19,
            "timeout": 19,
            "after_cutoff": 18,
            "customs_hold": 18,
        },
        "options": {"max_recirculations": 2, **options},
        "destination": [{"name": "A", "chutes": [1, 2]}],
    }


def test_left_out_they_are_none() -> None:
    plan = build_plan(minimal(), FILE)
    assert plan.chute_capacity_items is None
    assert plan.clear_interval_min is None


def test_given_they_are_read() -> None:
    plan = build_plan(minimal(chute_capacity_items=60, clear_interval_min=15), FILE)
    assert plan.chute_capacity_items == 60
    assert plan.clear_interval_min == 15


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("chute_capacity_items", 0, "greater than or equal to 1"),
        ("chute_capacity_items", -5, "greater than or equal to 1"),
        ("chute_capacity_items", 100_001, "less than or equal to 100000"),
        ("chute_capacity_items", "400", "valid integer"),
        ("chute_capacity_items", 40.5, "valid integer"),
        ("chute_capacity_items", True, "valid integer"),
        ("clear_interval_min", 0, "greater than or equal to 1"),
        ("clear_interval_min", 1441, "less than or equal to 1440"),
        ("clear_interval_min", "15", "valid integer"),
        ("clear_interval_min", 7.5, "valid integer"),
    ],
)
def test_a_bad_value_names_file_key_and_value(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_plan(minimal(**{key: value}), FILE)
    (problem,) = info.value.problems
    assert (problem.file, problem.key) == (FILE, f"options.{key}")
    assert message in problem.message


def test_a_typo_is_an_unknown_key() -> None:
    with pytest.raises(ConfigError) as info:
        build_plan(minimal(chute_capacity=60), FILE)
    (problem,) = info.value.problems
    assert problem.key == "options.chute_capacity"
    assert "unknown key" in problem.message


def test_the_shipped_casablanca_plan_has_them() -> None:
    plan = load_plan(Path(__file__).parent.parent / "config/casablanca/sortplan.toml")
    assert plan.chute_capacity_items is not None
    assert plan.clear_interval_min is not None


def test_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "sortplan.toml"
    path.write_text(
        'version = 2\nname = "f"\n[machine]\nchutes = "1-9"\n[functions]\n'
        + "".join(f"{key} = 9\n" for key in minimal()["functions"])
        + "[options]\nchute_capacity_items = 80\nclear_interval_min = 20\n"
        + '[[destination]]\nname = "A"\nchutes = [1]\n',
        encoding="utf-8",
    )
    plan = load_plan(path)
    assert (plan.chute_capacity_items, plan.clear_interval_min) == (80, 20)
