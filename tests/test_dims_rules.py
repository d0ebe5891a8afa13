"""Size and weight in the sort plan: [[size_class]] bands, rule `size_class`, [machine]
limits and the out_of_range reason, from plan loading through kernel, decider, replay and
the simulated line."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.broker import LocalBroker
from simulators.line import DEMO_PARAMS
from sorter import reference
from sorter.config import ConfigError, Problem
from sorter.decide import Decider
from sorter.kernel import ChuteState, ItemFeatures, Kernel
from sorter.plan import MAX_MEASURE, SortPlan, build_plan, compile_plan, letters_index, load_plan
from sorter.ports import Reason
from sorter.postcode import encode_postcode
from sorter.replay import Replay, read_scans
from sorterd.demo import demo_config_dir, write_site
from tests.linekit import line_with_daemon, wait_until

FILE = "site/plan.toml"
DEMO_PLAN = demo_config_dir() / "sortplan.toml"
S10_MA = "EE123456785MA"  # an EMS item posted in Morocco: the EXPORT rule (no size condition)
OVERSIZE_CHUTE, MANUAL_CHUTE, OUT_OF_RANGE_CHUTE, MAX_RECIRC_CHUTE = 12, 13, 18, 20


def plan_data() -> dict[str, Any]:
    """What a sort-centre engineer writes: oversize (any side over 1200 mm, or over 30 kg)
    to a manual chute; the machine takes nothing over 2000 mm or 50 kg, nor under 50 g."""
    return {
        "version": 2,
        "name": "sizes",
        "machine": {
            "chutes": "1-20",
            "max_length_mm": 2000,
            "max_width_mm": 1500,
            "max_height_mm": 1000,
            "min_weight_g": 50,
            "max_weight_g": 50_000,
        },
        "functions": {
            "no_read": 19,
            "invalid_code": 19,
            "multi_read_conflict": 19,
            "no_rule": 17,
            "no_chute": 20,
            "max_recirc": MAX_RECIRC_CHUTE,
            "timeout": 16,
            "after_cutoff": 15,
            "customs_hold": 14,
            "out_of_range": OUT_OF_RANGE_CHUTE,
        },
        "size_class": [
            {"name": "small", "max_side_mm": 400, "max_weight_g": 2000},
            {"name": "standard", "max_side_mm": 1200, "max_weight_g": 30_000},
            {"name": "oversize"},
        ],
        "destination": [
            {"name": "OVERSIZE", "chutes": [OVERSIZE_CHUTE]},
            {"name": "SMALL-EXPORT", "chutes": [1]},
            {"name": "EXPORT", "chutes": [2, 3]},
            {"name": "LOCAL", "chutes": [MANUAL_CHUTE]},
        ],
        "rule": [
            {"destination": "OVERSIZE", "size_class": ["oversize"]},
            {"destination": "SMALL-EXPORT", "origin": ["MA"], "size_class": ["small"]},
            {"destination": "EXPORT", "origin": ["MA"]},
            {"destination": "LOCAL", "postcode": ["20*"]},
        ],
    }


def problems_of(data: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        build_plan(data, FILE)
    assert all(p.file == FILE for p in info.value.problems)
    return info.value.problems


def keys(problems: list[Problem] | tuple[Problem, ...]) -> list[str]:
    return [p.key for p in problems]


# --- loading and validation ---------------------------------------------------------------


def test_plan_with_sizes_loads_and_compiles() -> None:
    plan = build_plan(plan_data(), FILE)
    assert [c.name for c in plan.size_classes] == ["small", "standard", "oversize"]
    assert plan.size_classes[0].limits() == (0, 0, 0, 400, 2000)
    assert plan.size_classes[2].limits() == (0, 0, 0, 0, 0)
    assert plan.machine_limits.minimum == (0, 0, 0, 50)
    assert plan.machine_limits.maximum == (2000, 1500, 1000, 50_000)
    assert plan.functions[Reason.OUT_OF_RANGE] == OUT_OF_RANGE_CHUTE
    assert [r.size_classes for r in plan.rules] == [frozenset({2}), frozenset({0}), None, None]
    assert plan.warnings == ()
    compiled = compile_plan(plan)
    assert compiled.rule_size_mask.tolist() == [0b100, 0b001, 0, 0]
    assert compiled.class_limits.tolist() == [
        [0, 0, 0, 400, 2000],
        [0, 0, 0, 1200, 30_000],
        [0, 0, 0, 0, 0],
    ]
    assert compiled.machine_limits.tolist() == [0, 0, 0, 50, 2000, 1500, 1000, 50_000]
    assert compiled.function_chute[int(Reason.OUT_OF_RANGE)] == OUT_OF_RANGE_CHUTE


def test_without_out_of_range_chute_the_max_recirc_chute_stands_in() -> None:
    data = plan_data()
    del data["functions"]["out_of_range"]
    plan = build_plan(data, FILE)
    assert plan.functions[Reason.OUT_OF_RANGE] == MAX_RECIRC_CHUTE
    [warning] = plan.warnings
    assert warning.key == "functions.out_of_range"
    assert f"max_recirc chute {MAX_RECIRC_CHUTE}" in warning.message
    # Without machine limits there is nothing to warn about: every existing plan loads quietly.
    for key in [k for k in data["machine"] if k != "chutes"]:
        del data["machine"][key]
    assert build_plan(data, FILE).warnings == ()
    assert load_plan(DEMO_PLAN).warnings == ()


@pytest.mark.parametrize(
    ("path", "value", "key", "message"),
    [
        (("machine", "max_weight_g"), 0, "machine.max_weight_g", "greater than or equal to 1"),
        (("machine", "max_weight_g"), 70_000, "machine.max_weight_g", "less than or equal to"),
        (("machine", "max_side_mm"), 1000, "machine.max_side_mm", "unknown key"),
        (("machine", "min_weight_g"), 60_000, "machine.min_weight_g", "above machine.max_weight_g"),
        (("functions", "out_of_range"), 99, "functions.out_of_range", "does not exist"),
        (("functions", "out_of_range"), "twelve", "functions.out_of_range", "integer"),
    ],
)
def test_bad_machine_and_function_keys(
    path: tuple[str, str], value: Any, key: str, message: str
) -> None:
    data = plan_data()
    data[path[0]][path[1]] = value
    [problem] = problems_of(data)
    assert problem.key == key
    assert message in problem.message


def test_size_class_problems_are_listed_together_with_file_and_key() -> None:
    data = plan_data()
    data["size_class"][0]["max_weigth_g"] = 5  # a typo
    data["size_class"][1]["max_side_mm"] = -3
    data["size_class"].append({"name": "oversize"})  # twice
    data["size_class"].append({"max_side_mm": 100})  # no name
    data["rule"][1]["size_class"] = ["smal"]
    data["rule"][2]["size_class"] = []
    problems = problems_of(data)
    assert keys(problems) == [
        "size_class[0].max_weigth_g",
        "size_class[1].max_side_mm",
        "size_class[4].name",
        "rule[2].size_class",
        "size_class[3].name",
        "rule[1].size_class[0]",
    ]
    assert "duplicate size class 'oversize'" in problems[4].message
    assert "no size class named 'smal'" in problems[5].message
    assert "'oversize'" in problems[5].message  # the names it could have meant


def test_a_rule_naming_a_size_class_that_failed_validation_is_not_blamed_twice() -> None:
    data = plan_data()
    data["size_class"][0]["max_side_mm"] = 0
    assert keys(problems_of(data)) == ["size_class[0].max_side_mm"]


def test_too_many_size_classes() -> None:
    data = plan_data()
    data["size_class"] = [{"name": f"S{i}", "max_weight_g": 100 + i} for i in range(33)]
    data["rule"] = []
    assert keys(problems_of(data)) == ["size_class[32]"]


def test_lint_unreachable_classes_and_limits_beyond_the_machine() -> None:
    data = plan_data()
    data["size_class"] = [
        {"name": "light", "max_weight_g": 1000},
        {"name": "light-small", "max_weight_g": 800, "max_side_mm": 300},  # all fit light
        {"name": "heavy-ok", "max_weight_g": 60_000 - 10_001},  # fine
        {"name": "any"},
        {"name": "after-any", "max_side_mm": 100},  # unreachable
        {"name": "giant", "max_length_mm": 2500},  # unreachable, and beyond the machine
    ]
    data["rule"] = []
    warnings = build_plan(data, FILE).warnings
    assert keys(warnings) == [
        "size_class[1]",
        "size_class[4]",
        "size_class[5]",
        "size_class[5].max_length_mm",
    ]
    assert "size_class[0] (light) comes first" in warnings[0].message
    assert "size_class[3] (any)" in warnings[1].message
    assert "above what the machine takes (2000)" in warnings[3].message


def test_lint_knows_size_conditions() -> None:
    # A rule with only a size condition does not shadow a later rule without one...
    plan = build_plan(plan_data(), FILE)
    assert plan.warnings == ()
    # ...but an identical size rule after it can never match.
    data = plan_data()
    data["rule"].insert(1, {"destination": "LOCAL", "size_class": ["oversize"]})
    [warning] = build_plan(data, FILE).warnings
    assert warning.key == "rule[1]"
    assert "rule[0] (OVERSIZE)" in warning.message


# --- kernel and reference -----------------------------------------------------------------


class Both:
    """Kernel and reference side by side; every call compares them."""

    def __init__(self, plan: SortPlan) -> None:
        self.plan = plan
        self.kernel = Kernel(compile_plan(plan))
        self.state = ChuteState.for_plan(self.kernel.plan)
        self.ref_state = reference.ReferenceState()

    def decide(self, f: ItemFeatures) -> tuple[str, int, Reason]:
        got = self.kernel.decide(f, self.state)
        assert got == reference.decide(self.plan, f, self.ref_state), f
        assert self.kernel.size_class(f) == reference.size_class(self.plan, f), f
        dest, chute, reason = got
        return (self.plan.destinations[dest].name if dest >= 0 else ""), chute, reason

    def size_class(self, dims: tuple[int, int, int, int]) -> str:
        f = item(dims)
        got = self.kernel.size_class(f)
        assert got == reference.size_class(self.plan, f)
        return self.plan.size_classes[got].name if got >= 0 else "?"


MA = letters_index("MA")
LOCAL_PC = (encode_postcode("20250"), 5)


def item(
    dims: tuple[int, int, int, int], origin: int = MA, reason: Reason = Reason.OK, **kw: int
) -> ItemFeatures:
    return ItemFeatures(int(reason), origin=origin, **kw)._replace(
        length_mm=dims[0], width_mm=dims[1], height_mm=dims[2], weight_g=dims[3]
    )


@pytest.fixture
def both() -> Both:
    return Both(build_plan(plan_data(), FILE))


@pytest.mark.parametrize(
    ("dims", "cls"),
    [
        ((300, 200, 100, 1500), "small"),
        ((401, 200, 100, 1500), "standard"),  # the longest side, whichever it is
        ((200, 100, 401, 1500), "standard"),
        ((300, 200, 100, 2001), "standard"),
        ((1200, 800, 600, 30_000), "standard"),  # limits are inclusive
        ((1201, 800, 600, 20_000), "oversize"),  # any side over 1200 mm...
        ((300, 200, 100, 30_001), "oversize"),  # ...or over 30 kg
        ((0, 0, 0, 0), "?"),  # nothing measured: no class
        ((0, 0, 0, 1500), "?"),  # weighed only: small needs the sides too
        ((0, 0, 0, 35_000), "oversize"),  # too heavy for every band, sides or not
        ((1300, 0, 0, 0), "oversize"),  # one side known too long: weight can't help
        ((300, 200, 100, 0), "?"),  # not weighed
    ],
)
def test_size_classes(both: Both, dims: tuple[int, int, int, int], cls: str) -> None:
    assert both.size_class(dims) == cls


def test_oversize_to_its_chute_and_small_items_to_theirs(both: Both) -> None:
    assert both.decide(item((1500, 400, 300, 8000))) == ("OVERSIZE", OVERSIZE_CHUTE, Reason.OK)
    assert both.decide(item((300, 200, 100, 500))) == ("SMALL-EXPORT", 1, Reason.OK)
    assert both.decide(item((600, 200, 100, 500))) == ("EXPORT", 2, Reason.OK)
    # Not measured: no size rule matches, the rules without a size condition still do.
    assert both.decide(item((0, 0, 0, 0))) == ("EXPORT", 3, Reason.OK)
    pc, digits = LOCAL_PC
    local = item((0, 0, 0, 0), origin=-1, pc=pc, pc_digits=digits)
    assert both.decide(local) == ("LOCAL", MANUAL_CHUTE, Reason.OK)


@pytest.mark.parametrize(
    "dims",
    [
        (2001, 100, 100, 1000),  # too long for the machine
        (300, 1501, 100, 1000),
        (300, 200, 1001, 1000),
        (300, 200, 100, 50_001),  # too heavy
        (300, 200, 100, 49),  # too light to ride the sorter
        (300, 200, 100, MAX_MEASURE + 1),  # more than a register holds (a replay file)
    ],
)
def test_out_of_range(both: Both, dims: tuple[int, int, int, int]) -> None:
    assert both.decide(item(dims)) == ("", OUT_OF_RANGE_CHUTE, Reason.OUT_OF_RANGE)


def test_not_measured_is_never_out_of_range(both: Both) -> None:
    # Weight 0 is below min_weight_g = 50, yet it means "no scale", not "too light".
    assert both.decide(item((0, 0, 0, 0)))[2] is Reason.OK
    assert both.decide(item((300, 200, 100, 0)))[2] is Reason.OK
    assert both.decide(item((0, 0, 0, 50)))[2] is Reason.OK


def test_out_of_range_comes_after_max_recirc_and_before_every_other_reason(both: Both) -> None:
    too_heavy = (300, 200, 100, 60_000)
    for reason in (Reason.NO_READ, Reason.INVALID_CODE, Reason.CUSTOMS_HOLD, Reason.TIMEOUT):
        assert both.decide(item(too_heavy, reason=reason))[2] is Reason.OUT_OF_RANGE
    # A measured item that is fine keeps its own reason.
    assert both.decide(item((300, 200, 100, 500), reason=Reason.NO_READ))[2] is Reason.NO_READ
    recirculated = item(too_heavy, recirculations=2)
    assert both.decide(recirculated) == ("", MAX_RECIRC_CHUTE, Reason.MAX_RECIRC)


def test_out_of_range_without_its_chute_goes_to_max_recirc() -> None:
    data = plan_data()
    del data["functions"]["out_of_range"]
    b = Both(build_plan(data, FILE))
    assert b.decide(item((300, 200, 100, 60_000))) == ("", MAX_RECIRC_CHUTE, Reason.OUT_OF_RANGE)


def test_batch_with_measures_equals_one_by_one(both: Both) -> None:

    dims = [(1500, 400, 300, 8000), (300, 200, 100, 500), (0, 0, 0, 0), (300, 200, 100, 60_000)]
    items = [item(d) for d in dims]
    kernel = Kernel(both.kernel.plan)
    state = ChuteState.for_plan(kernel.plan)
    expected = [kernel.decide(f, state)[1:] for f in items]
    batch = Kernel(both.kernel.plan)
    n = len(items)
    _, chutes, reasons = batch.decide_batch(
        np.zeros(n, np.int32),
        np.full(n, -1, np.int64),
        np.zeros(n, np.int32),
        np.full(n, -1, np.int32),
        np.full(n, -1, np.int32),
        np.zeros(n, np.int64),
        np.zeros(n, np.int32),
        np.full(n, -1, np.int32),
        ChuteState.for_plan(batch.plan),
        measures=np.array(dims, np.int32),
        origin=np.full(n, MA, np.int32),
    )
    assert list(zip(chutes.tolist(), map(Reason, reasons.tolist()), strict=True)) == expected
    assert [r for _, r in expected] == [Reason.OK, Reason.OK, Reason.OK, Reason.OUT_OF_RANGE]


# --- the decider --------------------------------------------------------------------------


@pytest.fixture
def decider() -> Decider:
    compiled = compile_plan(build_plan(plan_data(), FILE))
    d = Decider(compiled, ChuteState.for_plan(compiled), site_country="MA")
    d.warm()
    return d


def test_decider_routes_by_the_request_measures(decider: Decider) -> None:
    assert decider.decide([S10_MA], 0, (1500, 400, 300, 8000)).chute == OVERSIZE_CHUTE
    assert decider.decide([S10_MA], 0, (300, 200, 100, 500)).destination == "SMALL-EXPORT"
    assert decider.decide([S10_MA]).destination == "EXPORT"  # not measured
    heavy = decider.decide([S10_MA], 0, (300, 200, 100, 60_000))
    assert (heavy.destination, heavy.chute, heavy.reason, heavy.barcode) == (
        "",
        OUT_OF_RANGE_CHUTE,
        Reason.OUT_OF_RANGE,
        S10_MA,
    )
    assert decider.decide([], 0, (300, 200, 100, 60_000)).reason is Reason.OUT_OF_RANGE
    assert decider.decide([], 0, (300, 200, 100, 500)).reason is Reason.NO_READ


def test_decider_timeouts_follow_the_kernel_order(decider: Decider) -> None:
    assert decider.decide_timeout(0).chute == 16
    assert decider.decide_timeout(0, (300, 200, 100, 60_000)).reason is Reason.OUT_OF_RANGE
    assert decider.decide_timeout(2, (300, 200, 100, 60_000)).reason is Reason.MAX_RECIRC
    assert decider.destination_of_chute()[OUT_OF_RANGE_CHUTE] == "out_of_range"


def test_multi_read_resolution_sees_the_size(decider: Decider) -> None:
    # Two Moroccan S10 codes agree (same rule); with the item oversize they still agree.
    codes = [S10_MA, "RR123456785MA"]
    assert decider.decide(codes, 0, (1500, 400, 300, 8000)).destination == "OVERSIZE"
    assert decider.decide(codes, 0, (300, 200, 100, 500)).destination == "SMALL-EXPORT"


# --- replay -------------------------------------------------------------------------------


def _toml(data: dict[str, Any]) -> str:
    """The plan data as TOML (scalars, lists, tables, arrays of tables: all a plan uses).
    JSON's strings and lists of them are valid TOML."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, dict | list)]
    for key, value in data.items():
        tables = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
        for table in tables:
            lines.append(f"[{key}]" if isinstance(value, dict) else f"[[{key}]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _write_plan(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(_toml(data), encoding="utf-8")
    return path


def _site(tmp_path: Path, plan: Path) -> Path:
    return write_site(
        tmp_path,
        plc_port=5020,
        scanner_port=5021,
        mqtt_url="mqtt://127.0.0.1:1883",
        plan=plan,
        prefix="test/sizes",
    )


def test_replay_uses_the_dimension_columns(tmp_path: Path, decider: Decider) -> None:
    scans = tmp_path / "scans.csv"
    scans.write_text(
        "tracking_id,codes,weight_g,length_mm,width_mm,height_mm\n"  # any column order
        f"1,{S10_MA},8000,1500,400,300\n"
        f"2,{S10_MA},500,300,200,100\n"
        f"3,{S10_MA},,,,\n"
        f"4,{S10_MA},70000,300,200,100\n"
        f"5,NOREAD,60000,300,200,100\n"
        f"6,{S10_MA},0,0,0,0\n"
    )
    out = io.StringIO()
    counts = Replay(decider, out).run(read_scans(scans))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["destination"], r["reason"]) for r in rows] == [
        ("OVERSIZE", "ok"),
        ("SMALL-EXPORT", "ok"),
        ("EXPORT", "ok"),
        ("", "out_of_range"),
        ("", "out_of_range"),
        ("EXPORT", "ok"),
    ]
    assert counts.chutes[OUT_OF_RANGE_CHUTE] == 2
    assert [s.dims for s in read_scans(scans)][3] == (300, 200, 100, MAX_MEASURE + 1)


def test_replay_some_measure_columns_only(tmp_path: Path, decider: Decider) -> None:
    scans = tmp_path / "scans.csv"
    scans.write_text(f"tracking_id,codes,weight_g\n1,{S10_MA},35000\n2,{S10_MA},900\n")
    assert [s.dims for s in read_scans(scans)] == [(0, 0, 0, 35_000), (0, 0, 0, 900)]
    out = io.StringIO()
    Replay(decider, out).run(read_scans(scans))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    # 35 kg is over every band whatever the sides; 900 g alone does not make an item small.
    assert [r["destination"] for r in rows] == ["OVERSIZE", "EXPORT"]


def test_replay_bad_measures_name_their_line(tmp_path: Path) -> None:
    scans = tmp_path / "bad.csv"
    scans.write_text(
        f"tracking_id,codes,length_mm,weight_g\n1,{S10_MA},300,500\n"
        f"2,{S10_MA},-4,500\n3,{S10_MA},300,1.5kg\n"
    )
    with pytest.raises(ConfigError) as info:
        list(read_scans(scans))
    assert [str(p) for p in info.value.problems] == [
        f"{scans}: line 3: length_mm -4 is negative (0 means not measured)",
        f"{scans}: line 4: weight_g '1.5kg' is not a whole number",
    ]


def test_replay_command_counts_out_of_range(tmp_path: Path) -> None:
    plan = _write_plan(tmp_path, plan_data())
    site = _site(tmp_path, plan)
    scans = tmp_path / "scans.csv"
    scans.write_text(
        "tracking_id,codes,length_mm,width_mm,height_mm,weight_g\n"
        f"1,{S10_MA},1500,400,300,8000\n2,{S10_MA},300,200,100,60000\n"
    )
    out_csv = tmp_path / "decisions.csv"
    run = subprocess.run(
        [sys.executable, "-m", "sorterd.cli", "replay", "-c", str(site), str(scans),
         "--out", str(out_csv)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "out_of_range" in run.stdout
    rows = list(csv.DictReader(out_csv.open()))
    assert [(r["chute"], r["reason"]) for r in rows] == [
        (str(OVERSIZE_CHUTE), "ok"),
        (str(OUT_OF_RANGE_CHUTE), "out_of_range"),
    ]


def test_check_config_lists_size_problems_with_file_and_key(tmp_path: Path) -> None:
    data = plan_data()
    data["machine"]["min_weight_g"] = 60_000
    data["rule"][0]["size_class"] = ["huge"]
    plan = _write_plan(tmp_path, data)
    site = _site(tmp_path, plan)
    run = subprocess.run(
        [sys.executable, "-m", "sorterd.cli", "check-config", "-c", str(site)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 1
    assert f"{plan}: machine.min_weight_g: 60000 is above machine.max_weight_g" in run.stderr
    assert f"{plan}: rule[0].size_class[0]: no size class named 'huge'" in run.stderr
    assert "Traceback" not in run.stderr


# --- the simulated line -------------------------------------------------------------------

# The demo plan plus what a hub with a dimensioner and a scale would add: the machine takes
# nothing over 4 kg (a few items of the simulated traffic are heavier), and items with a
# side over 700 mm (about one in seven) go to a bulky-goods destination before any other rule.
_DEMO_SIZES = """
[[size_class]]
name = "standard"
max_side_mm = 700

[[size_class]]
name = "bulky"

[[destination]]
name = "BULKY"
chutes = [45, 46]

[[rule]]
destination = "BULKY"
size_class = ["bulky"]
"""


def _demo_plan_with_sizes(folder: Path) -> Path:
    text = DEMO_PLAN.read_text(encoding="utf-8")
    text = text.replace('chutes = "1-60"', 'chutes = "1-60"\nmax_weight_g = 4000', 1)
    text = text.replace("[functions]\n", "[functions]\nout_of_range = 53\n", 1)
    head, sep, rules = text.partition("[[rule]]")
    path = folder / "sizes-plan.toml"
    path.write_text(head + _DEMO_SIZES + "\n" + sep + rules, encoding="utf-8")
    return path


async def test_dimensions_through_the_simulated_line(broker: LocalBroker, tmp_path: Path) -> None:
    plan_path = _demo_plan_with_sizes(tmp_path)
    plan = load_plan(plan_path)
    assert plan.warnings == ()
    assert plan.rules[0].size_classes == frozenset({1})
    params = replace(DEMO_PARAMS, belt_speed_m_s=10.0, item_pitch_m=0.2, chute_capacity=1000)
    async with line_with_daemon(
        broker, tmp_path, params=params, seed=11, plan_path=plan_path
    ) as rig:
        line, daemon, sub = rig.line, rig.daemon, rig.sub
        assert await line.run(150_000, count=300) == 300
        assert await line.drain(60), line.ledger.summary()
        await wait_until(lambda: len(sub.of("decisions")) >= daemon.pipeline.counters.decisions, 20)

    compiled = compile_plan(plan)
    check = Decider(compiled, ChuteState.for_plan(compiled), site_country="MA")
    by_key = {(rec.tracking_id, p.seq): rec.item for rec in line.ledger.items for p in rec.passes}
    reasons: Counter[str] = Counter()
    bulky = 0
    for d in sub.of("decisions"):
        sim = by_key[(d["tracking_id"], d["seq"])]
        dims = (sim.length_mm, sim.width_mm, sim.height_mm, sim.weight_g)
        reasons[d["reason"]] += 1
        if d["reason"] == "timeout" or (d["reason"] == "out_of_range" and not d["codes"]):
            expected = check.decide_timeout(d["recirculations"], dims)
        else:
            expected = check.decide(d["codes"], d["recirculations"], dims)
        # Exactly: chutes hold 1000 items here, so none fills and no_chute cannot happen.
        assert d["reason"] == expected.reason.word, (d, dims)
        assert d["destination"] == expected.destination, (d, dims)
        if d["reason"] == "out_of_range":
            assert d["chute"] == 53
            assert sim.weight_g > 4000
        if d["destination"] == "BULKY":
            bulky += 1
            assert max(dims[:3]) > 700
            assert d["chute"] in (45, 46)
        elif d["reason"] == "ok":
            assert max(dims[:3]) <= 700
    assert reasons["out_of_range"] > 0, reasons
    assert bulky > 10, reasons
    assert reasons["ok"] > 150, reasons
