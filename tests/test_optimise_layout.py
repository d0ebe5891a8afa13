"""The plan's layout keys for the optimiser (docs/optimiser.md, "Layout"): loop order and
lap, zones with operators, min/max/fixed chutes, destinations together or apart. Read as
written; every contradiction refused by check-config, named by key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sorter.config import ConfigError
from sorter.plan import build_plan
from tests.test_optimise_plan_options import minimal

FILE = "plan.toml"
ROOT = Path(__file__).resolve().parent.parent


def laid_out(**extra: Any) -> dict[str, Any]:
    data = minimal(chute_capacity_items=10, clear_interval_min=30)
    data["destination"] = [
        {"name": "A", "chutes": [1, 2], "fixed": [2], "min_chutes": 1, "max_chutes": 4},
        {"name": "B", "chutes": [3]},
        {"name": "C", "chutes": [11]},
    ]
    data["machine"] |= {"loop_order": "1-10,20-11", "lap_s": 60.0}
    data["zone"] = [
        {"name": "west", "chutes": "1-10", "operators": 2},
        {"name": "east", "chutes": "11-20", "clear_interval_min": 15},
    ]
    data["layout"] = {"together": [["A", "B"]], "apart": [["A", "C"]]}
    for key, value in extra.items():
        data[key] = value
    return data


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        build_plan(data, FILE)
    return [(p.key, p.message) for p in info.value.problems]


def test_read_as_written() -> None:
    plan = build_plan(laid_out(), FILE)
    assert plan.loop_order[:3] == (1, 2, 3)
    assert plan.loop_order[10:12] == (20, 19)
    assert plan.lap_s == 60.0
    assert [(z.name, z.operators, z.clear_interval_min) for z in plan.zones] == [
        ("west", 2, None),
        ("east", 1, 15),
    ]
    assert plan.zones[1].chutes == tuple(range(11, 21))
    a = plan.destinations[0]
    assert (a.fixed, a.min_chutes, a.max_chutes) == ((2,), 1, 4)
    assert plan.together == (("A", "B"),)
    assert plan.apart == (("A", "C"),)


def test_left_out_nothing_changes() -> None:
    plan = build_plan(minimal(), FILE)
    assert (plan.zones, plan.loop_order, plan.together, plan.lap_s) == ((), (), (), None)


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (lambda d: d["zone"][1].update(chutes="10-20"), "zone[1].chutes", "already in zone"),
        (lambda d: d["zone"][1].update(chutes="12-20"), "zone", "11 of the machine are in no"),
        (lambda d: d["zone"][0].update(operators=0), "zone[0].operators", "greater than"),
        (lambda d: d["machine"].update(loop_order="1-19"), "machine.loop_order", "leaves out"),
        (lambda d: d["machine"].update(loop_order="1-20,3"), "machine.loop_order", "twice"),
        (lambda d: d["destination"][0].update(fixed=[5]), "destination[0].fixed", "not among"),
        (
            lambda d: d["destination"][0].update(min_chutes=5),
            "destination[0].min_chutes",
            "above max_chutes = 4",
        ),
        (
            lambda d: d["destination"][1].update(min_chutes=21),
            "destination[1].min_chutes",
            "above the machine's 20 chutes",
        ),
        (
            lambda d: d["destination"][1].update(chutes=[2, 3], fixed=[2]),
            "destination[1].fixed",
            "fixed to 'A' too",
        ),
        (lambda d: d["layout"].update(apart=[["A", "NOPE"]]), "layout.apart[0]", "'NOPE'"),
        (lambda d: d["layout"].update(apart=[["B", "A"]]), "layout.apart[0]", "also kept"),
        (
            # Together is transitive: A with B, B with C, so A and C cannot be apart.
            lambda d: d["layout"].update(together=[["A", "B"], ["B", "C"]]),
            "layout.apart[0]",
            "'A' and 'C' are also kept together",
        ),
    ],
)
def test_contradictions_are_refused(change: Any, key: str, message: str) -> None:
    data = laid_out()
    change(data)
    found = problems(data)
    assert any(k == key and message in m for k, m in found), found


def test_check_config_names_the_key(tmp_path: Path) -> None:
    site = (ROOT / "config/casablanca/site.toml").read_text(encoding="utf-8")
    plan = (ROOT / "config/casablanca/sortplan.toml").read_text(encoding="utf-8")
    both = '[["UPS-EXPORT", "DHL-EXPORT"], ["RETURNS-CN"'
    plan = plan.replace('apart = [["RETURNS-CN"', f"apart = {both}")
    (tmp_path / "site.toml").write_text(site, encoding="utf-8")
    (tmp_path / "sortplan.toml").write_text(plan, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "sorterd.cli", "check-config", "-c", str(tmp_path / "site.toml")],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 1
    assert "layout.apart[0]" in done.stderr
    assert "'DHL-EXPORT' and 'UPS-EXPORT' are also kept together" in done.stderr
    assert "Traceback" not in done.stderr
