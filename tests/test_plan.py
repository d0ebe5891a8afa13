"""Sort plans (sorter.plan): loading, every class of bad input, the term parsers, compilation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sorter.config import ConfigError, Problem
from sorter.plan import (
    ALPHA2,
    MachineLimits,
    build_plan,
    compile_plan,
    letters_index,
    load_plan,
    parse_chute_list,
    parse_letter_set,
)
from sorter.plan.destinations import DestinationModel
from sorter.plan.machine import MachineModel, machine_limits
from sorter.plan.tables import Problems
from sorter.ports import FUNCTION_REASONS, OPTIONAL_FUNCTIONS, Reason
from sorter.postcode import TermKind, parse_postcode_term

DEMO_PLAN = Path(__file__).resolve().parents[1] / "config" / "demo" / "sortplan.toml"
FILE = "site/plan.toml"

FUNCTIONS = {
    "no_read": 19,
    "invalid_code": 19,
    "multi_read_conflict": 18,
    "no_rule": 17,
    "no_chute": 20,
    "max_recirc": 20,
    "timeout": 16,
    "after_cutoff": 15,
    "customs_hold": 14,
}


def minimal() -> dict[str, Any]:
    """A small valid plan as TOML data; tests break one thing at a time."""
    return {
        "version": 2,
        "name": "test-plan",
        "machine": {"chutes": "1-20"},
        "functions": dict(FUNCTIONS),
        "options": {"max_recirculations": 2, "balance": "round_robin"},
        "destination": [
            {"name": "A", "chutes": [1, 2], "overflow": [10]},
            {"name": "B", "chutes": [3], "cutoff": "21:30"},
        ],
        "rule": [
            {"destination": "A", "postcode": ["20000-20999"]},
            {"destination": "B", "barcode": "^1Z"},
        ],
    }


def problems_of(data: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        build_plan(data, FILE)
    problems = info.value.problems
    assert problems, "a ConfigError must list at least one problem"
    assert all(p.file == FILE for p in problems)
    return problems


def only_problem(data: dict[str, Any]) -> Problem:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


# --- the demo plan and a valid minimal plan ----------------------------------------------


def test_demo_plan_loads() -> None:
    plan = load_plan(DEMO_PLAN)
    assert plan.name == "casablanca-day"
    assert plan.path == str(DEMO_PLAN)
    assert plan.machine_chutes == frozenset(range(1, 61))
    assert plan.max_chute == 60
    assert plan.max_recirculations == 2
    assert plan.balance == "round_robin"
    assert plan.functions == {
        Reason.NO_READ: 59,
        Reason.INVALID_CODE: 59,
        Reason.MULTI_READ_CONFLICT: 58,
        Reason.NO_RULE: 57,
        Reason.NO_CHUTE: 60,
        Reason.MAX_RECIRC: 60,
        Reason.TIMEOUT: 56,
        Reason.AFTER_CUTOFF: 55,
        Reason.CUSTOMS_HOLD: 54,
        Reason.OUT_OF_RANGE: 60,  # not in the plan: the max_recirc chute stands in
    }
    assert [d.name for d in plan.destinations] == [
        "CASABLANCA",
        "RABAT",
        "MARRAKECH",
        "FES",
        "TANGIER",
        "AGADIR",
        "EMS-INBOUND",
        "REGISTERED-MANUAL",
        "UPS-EXPORT",
        "DHL-EXPORT",
        "CAINIAO-MANUAL",
    ]
    casablanca = plan.destinations[0]
    assert (casablanca.chutes, casablanca.overflow, casablanca.cutoff_min) == (
        (1, 2, 3, 4, 5, 6),
        (40,),
        -1,
    )
    assert plan.destination_index("UPS-EXPORT") == 8
    assert plan.destination_index("NOWHERE") == -1


def test_demo_plan_rules() -> None:
    plan = load_plan(DEMO_PLAN)
    assert len(plan.rules) == 11
    assert [r.destination for r in plan.rules] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert plan.rules[0].postcode == (parse_postcode_term("20000-20999"),)
    assert plan.rules[0].postcode[0].kind == TermKind.RANGE
    assert plan.rules[1].postcode == (parse_postcode_term("10*"),)
    assert plan.rules[0].country is not None
    assert plan.rules[0].country.allowed == {letters_index("MA")}
    ems = plan.rules[6]
    assert ems.s10_service is not None
    assert ems.origin is not None
    assert ems.country is None
    assert letters_index("EE") in ems.s10_service
    assert letters_index("RB") not in ems.s10_service
    assert letters_index("CN") in ems.origin
    assert letters_index("MA") not in ems.origin
    assert len(ems.origin.allowed) == ALPHA2 - 1
    assert [r.regex_bit for r in plan.rules] == [-1] * 8 + [0, 1, 2]
    assert [p.pattern for p in plan.regexes] == [
        "^1Z[0-9A-Z]{16}$",
        "^[0-9]{10}$",
        "^LP[0-9]{12,14}$",
    ]


def test_minimal_plan_builds() -> None:
    plan = build_plan(minimal(), FILE)
    assert plan.path == FILE
    assert plan.machine_chutes == frozenset(range(1, 21))
    assert plan.destinations[1].cutoff_min == 21 * 60 + 30
    assert plan.destinations[0].cutoff_min == -1
    assert plan.rules[1].barcode is not None
    assert plan.rules[1].regex_bit == 0


def test_options_default_when_omitted() -> None:
    data = minimal()
    del data["options"]
    del data["rule"]
    plan = build_plan(data)
    assert (plan.max_recirculations, plan.balance, plan.rules) == (2, "round_robin", ())
    assert plan.path == "<plan>"


def test_machine_chutes_as_list() -> None:
    data = minimal()
    data["machine"]["chutes"] = [1, 2, 3, 10, *range(14, 21)]
    plan = build_plan(data)
    assert plan.machine_chutes == frozenset({1, 2, 3, 10, *range(14, 21)})


# --- one bad input at a time: the problem names the file and the key --------------------


def _set(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    data = minimal()
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "key", "message"),
    [
        # unknown chutes
        (
            ("destination", 0, "chutes"),
            [1, 99],
            "destination[0].chutes[1]",
            "chute 99 does not exist",
        ),
        (
            ("destination", 1, "overflow"),
            [21],
            "destination[1].overflow[0]",
            "chute 21 does not exist",
        ),
        (("functions", "no_chute"), 0, "functions.no_chute", "chute 0 does not exist"),
        (("functions", "customs_hold"), 500, "functions.customs_hold", "chute 500 does not"),
        # malformed postcode terms
        (("rule", 0, "postcode"), ["20999-20000"], "rule[0].postcode[0]", "runs backwards"),
        (("rule", 0, "postcode"), ["10*", "2a-3"], "rule[0].postcode[1]", "'2a-3': '-' is only"),
        (("rule", 0, "postcode"), ["20-300"], "rule[0].postcode[0]", "same number of digits"),
        (("rule", 0, "postcode"), ["2*0"], "rule[0].postcode[0]", "is not a postcode"),
        (("rule", 0, "postcode"), ["A1-B2"], "rule[0].postcode[0]", "'A1-B2': '-' is only"),
        (("rule", 0, "postcode"), ["1000-001"], "rule[0].postcode[0]", "'1000001'"),
        # country and origin codes are ISO 3166-1 alpha-2
        (("rule", 0, "country"), ["UK"], "rule[0].country", "'UK': UK is not an ISO 3166"),
        (("rule", 0, "origin"), ["MA", "XX"], "rule[0].origin", "XX is not an ISO 3166"),
        (("rule", 0, "country"), ["!ZZ"], "rule[0].country", "ZZ is not an ISO 3166"),
        # a rule naming a missing destination
        (("rule", 1, "destination"), "NOWHERE", "rule[1].destination", "'NOWHERE'"),
        # a regex that does not compile
        (("rule", 1, "barcode"), "^1Z[0-9", "rule[1].barcode", "does not compile"),
        # letter sets
        (("rule", 0, "country"), ["MAR"], "rule[0].country", "'MAR'"),
        (("rule", 0, "s10_service"), ["E*", "1A"], "rule[0].s10_service", "'1A'"),
        # a destination that could never take an item
        (("destination", 1, "chutes"), [], "destination[1].chutes", "has no chutes"),
        # machine chute spec
        (("machine", "chutes"), "10-1", "machine.chutes", "runs backwards"),
        (("machine", "chutes"), "1-20,x", "machine.chutes", "'x' is not a chute number"),
        (("machine", "chutes"), "1-20,", "machine.chutes", "'' is not a chute number"),
        (("machine", "chutes"), "0-20", "machine.chutes", "1..999"),
        (("machine", "chutes"), "1-1000", "machine.chutes", "1..999"),
        (("machine", "chutes"), [-3, *range(1, 21)], "machine.chutes", "1..999"),
    ],
)
def test_semantic_problem_names_file_and_key(
    path: tuple[str | int, ...], value: Any, key: str, message: str
) -> None:
    # The problem itself comes first; what follows from it (a rule whose destination has
    # no valid name any more) may be listed after it.
    problem = problems_of(_set(path, value))[0]
    assert problem.key == key
    assert message in problem.message


@pytest.mark.parametrize(
    ("path", "value", "key", "message"),
    [
        (("destination", 0, "chute"), [1], "destination[0].chute", "unknown key (typo?)"),
        (("rule", 1, "postcodes"), ["1*"], "rule[1].postcodes", "unknown key (typo?)"),
        (("options", "balanse"), "round_robin", "options.balanse", "unknown key (typo?)"),
        (("functions", "no_reed"), 19, "functions.no_reed", "unknown key (typo?)"),
        (("machine", "chute"), "1-5", "machine.chute", "unknown key (typo?)"),
        (("rules",), [], "rules", "unknown key (typo?)"),
        (("options", "balance"), "random", "options.balance", "round_robin"),
        (
            ("options", "max_recirculations"),
            -1,
            "options.max_recirculations",
            "greater than or equal to 0",
        ),
        (("destination", 1, "cutoff"), "25:00", "destination[1].cutoff", "pattern"),
        (("destination", 0, "name"), "", "destination[0].name", "at least 1 character"),
        (("version",), "two", "version", "integer"),
        (("version",), "2", "version", "integer"),
        (("destination",), [], "destination", "at least 1 item"),
        (("destination", 0, "chutes"), ["one"], "destination[0].chutes[0]", "integer"),
    ],
)
def test_schema_problem_names_file_and_key(
    path: tuple[str | int, ...], value: Any, key: str, message: str
) -> None:
    # The problem itself comes first; what follows from it (a rule whose destination has
    # no valid name any more) may be listed after it.
    problem = problems_of(_set(path, value))[0]
    assert problem.key == key
    assert message in problem.message


@pytest.mark.parametrize(
    "reason", [r.word for r in FUNCTION_REASONS if r not in OPTIONAL_FUNCTIONS]
)
def test_missing_function_reason(reason: str) -> None:
    data = minimal()
    del data["functions"][reason]
    problem = only_problem(data)
    assert (problem.key, problem.message) == (f"functions.{reason}", "required key is missing")


def test_missing_machine_table() -> None:
    data = minimal()
    del data["machine"]
    problem = only_problem(data)
    assert (problem.key, problem.message) == ("machine", "required key is missing")


def test_machine_chutes_of_wrong_type_names_the_key() -> None:
    # pydantic reports one error per member of `str | list[int]`; the key must still
    # lead the reader to machine.chutes.
    problems = problems_of(_set(("machine", "chutes"), 5))
    assert problems
    assert all(p.key.startswith("machine.chutes") for p in problems)


def test_duplicate_destination() -> None:
    data = minimal()
    data["destination"].append({"name": "A", "chutes": [4]})
    problem = only_problem(data)
    assert problem.key == "destination[2].name"
    assert problem.message == "duplicate destination 'A'"


def test_machine_spec_error_skips_chute_checks() -> None:
    # With no usable machine list nothing can be said about chute numbers; one problem,
    # not one per chute in the plan.
    problem = only_problem(_set(("machine", "chutes"), "1-x"))
    assert problem.key == "machine.chutes"


def test_several_semantic_problems_are_all_listed() -> None:
    data = minimal()
    data["functions"]["timeout"] = 77
    data["destination"][0]["chutes"] = [1, 55]
    data["destination"][0]["overflow"] = [56]
    data["destination"].append({"name": "B", "chutes": [5]})
    data["rule"] = [
        {"destination": "A", "postcode": ["20999-20000", "20*", "2a-3"]},
        {"destination": "GONE", "barcode": "(unclosed"},
        {"destination": "B", "country": ["!MAR"], "origin": ["QQ"]},
    ]
    problems = problems_of(data)
    assert [p.key for p in problems] == [
        "functions.timeout",
        "destination[0].chutes[1]",
        "destination[0].overflow[0]",
        "destination[2].name",
        "rule[0].postcode[0]",
        "rule[0].postcode[2]",
        "rule[1].destination",
        "rule[1].barcode",
        "rule[2].country",
        "rule[2].origin",
    ]


def test_several_schema_problems_are_all_listed() -> None:
    data = minimal()
    del data["functions"]["no_rule"]
    data["destination"][0]["chutez"] = [1]
    data["options"]["balance"] = "fastest"
    data["rule"][0]["county"] = ["MA"]
    keys = {p.key for p in problems_of(data)}
    assert keys == {
        "functions.no_rule",
        "destination[0].chutez",
        "options.balance",
        "rule[0].county",
    }


def test_error_text_lists_file_key_and_message() -> None:
    data = minimal()
    data["destination"][0]["chutes"] = [99]
    data["rule"][1]["destination"] = "NOWHERE"
    with pytest.raises(ConfigError) as info:
        build_plan(data, FILE)
    assert str(info.value).splitlines() == [
        f"{FILE}: destination[0].chutes[0]: chute 99 does not exist on the machine",
        f"{FILE}: rule[1].destination: no destination named 'NOWHERE'",
    ]


def test_too_many_barcode_rules() -> None:
    data = minimal()
    data["rule"] = [{"destination": "A", "barcode": f"^X{i}$"} for i in range(65)]
    problem = only_problem(data)
    assert problem.key == "rule[64].barcode"
    assert "more than 64" in problem.message


def test_build_plan_does_not_modify_its_input() -> None:
    data = minimal()
    before = copy.deepcopy(data)
    build_plan(data)
    assert data == before


# --- file-level errors: load_plan ----------------------------------------------------


def test_load_plan_from_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(DEMO_PLAN.read_text(encoding="utf-8"), encoding="utf-8")
    plan = load_plan(str(path))
    assert plan.path == str(path)
    assert plan.name == "casablanca-day"


def test_load_plan_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    [problem] = info.value.problems
    assert (problem.file, problem.key) == (str(path), "")
    assert problem.message.startswith("cannot read:")
    assert "No such file" in problem.message


def test_load_plan_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_plan(tmp_path)
    [problem] = info.value.problems
    assert (problem.file, problem.key) == (str(tmp_path), "")
    assert problem.message.startswith("cannot read:")


def test_load_plan_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_bytes(b'version = 1\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    [problem] = info.value.problems
    assert (problem.file, problem.key) == (str(path), "")
    assert problem.message.startswith("not UTF-8 text:")


def test_load_plan_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text('version = 1\nname = "x\n[machine]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    [problem] = info.value.problems
    assert (problem.file, problem.key) == (str(path), "")
    assert problem.message.startswith("TOML syntax error:")
    assert "line 2" in problem.message


def test_load_plan_semantic_problem_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    text = DEMO_PLAN.read_text(encoding="utf-8").replace('chutes = "1-60"', 'chutes = "1-50"')
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    problems = info.value.problems
    assert all(p.file == str(path) for p in problems)
    # Every function chute (54-60) is now off the machine.
    assert [p.key for p in problems] == [
        f"functions.{r.word}" for r in FUNCTION_REASONS if r not in OPTIONAL_FUNCTIONS
    ]


def test_load_plan_typo_in_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    text = DEMO_PLAN.read_text(encoding="utf-8").replace("balance =", "balanse =")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    assert [(p.file, p.key, p.message) for p in info.value.problems] == [
        (str(path), "options.balanse", "unknown key (typo?)")
    ]


# --- parse_chute_list ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "chutes"),
    [
        ("1-5", {1, 2, 3, 4, 5}),
        ("7", {7}),
        ("1-3,7, 9-10", {1, 2, 3, 7, 9, 10}),
        ("5-5", {5}),
        ("1-3,2-4", {1, 2, 3, 4}),
        ([4, 2, 4], {2, 4}),
    ],
)
def test_parse_chute_list(spec: str | list[int], chutes: set[int]) -> None:
    assert parse_chute_list(spec) == chutes


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("5-1", "runs backwards"),
        ("1-", "is not a chute number"),
        ("a", "is not a chute number"),
        ("1,,2", "is not a chute number"),
        ("", "is not a chute number"),
        ("1-2-3", "is not a chute number"),
        ("-4", "is not a chute number"),
        ([], "the machine has no chutes"),
        ("1-1000", "chute numbers are 1..999"),
        ("1-2400000000", "chute numbers are 1..999"),
        ([0, 5], "chute numbers are 1..999"),
    ],
)
def test_parse_chute_list_errors(spec: str | list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_chute_list(spec)


# --- parse_letter_set --------------------------------------------------------------------


def codes(*two_letters: str) -> set[int]:
    return {letters_index(c) for c in two_letters}


def test_letters_index() -> None:
    assert letters_index("AA") == 0
    assert letters_index("AZ") == 25
    assert letters_index("MA") == 12 * 26
    assert letters_index("ZZ") == ALPHA2 - 1
    assert letters_index("ma") == -1
    assert letters_index("M") == -1
    assert letters_index("MAR") == -1
    assert letters_index("M1") == -1


def test_letter_set_exact() -> None:
    assert parse_letter_set(["MA"]).allowed == codes("MA")
    assert parse_letter_set(["MA", "FR"]).allowed == codes("MA", "FR")


def test_letter_set_lower_case_is_upper_cased() -> None:
    assert parse_letter_set(["ma", "!fr"]).allowed == codes("MA")


def test_letter_set_glob_prefix() -> None:
    allowed = parse_letter_set(["E*"]).allowed
    assert allowed == {letters_index("E" + chr(c)) for c in range(65, 91)}
    assert letters_index("EE") in parse_letter_set(["E*"])
    assert letters_index("RE") not in parse_letter_set(["E*"])


def test_letter_set_glob_question_mark() -> None:
    assert parse_letter_set(["?A"]).allowed == {letters_index(chr(c) + "A") for c in range(65, 91)}
    assert parse_letter_set(["R?", "E?"]).allowed == parse_letter_set(["R*", "E*"]).allowed


def test_letter_set_star_is_everything() -> None:
    assert parse_letter_set(["*"]).allowed == set(range(ALPHA2))


def test_letter_set_only_negations_means_all_but() -> None:
    allowed = parse_letter_set(["!MA"]).allowed
    assert len(allowed) == ALPHA2 - 1
    assert letters_index("MA") not in allowed
    assert letters_index("FR") in allowed
    assert parse_letter_set(["!MA", "!FR"]).allowed == set(range(ALPHA2)) - codes("MA", "FR")
    assert len(parse_letter_set(["!E*"]).allowed) == ALPHA2 - 26


def test_letter_set_negation_narrows_positive() -> None:
    assert parse_letter_set(["E*", "!EM"]).allowed == codes(
        *(f"E{chr(c)}" for c in range(65, 91))
    ) - codes("EM")
    # Order does not matter: the negation applies to every positive pattern.
    assert parse_letter_set(["!EM", "E*"]).allowed == parse_letter_set(["E*", "!EM"]).allowed
    assert parse_letter_set(["MA", "!MA"]).allowed == set()


def test_letter_set_minus_index_is_never_in() -> None:
    assert -1 not in parse_letter_set(["*"])
    assert -1 not in parse_letter_set(["!MA"])


@pytest.mark.parametrize("pattern", ["MAR", "1A", "!", "", "M-", "!!MA", "E**"])
def test_letter_set_errors(pattern: str) -> None:
    with pytest.raises(ValueError, match="is not a two-letter code"):
        parse_letter_set(["MA", pattern])


# --- compile_plan ----------------------------------------------------------------------


def test_compile_demo_plan() -> None:
    compiled = compile_plan(load_plan(DEMO_PLAN))
    assert compiled.n_chute_slots == 61
    assert compiled.max_recirculations == 2
    assert compiled.least_loaded is False
    assert compiled.rule_dest.tolist() == list(range(11))
    assert compiled.rule_has_pc.tolist() == [True] * 6 + [False] * 5
    assert compiled.rule_pc_ptr.tolist() == [0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6]
    terms = [parse_postcode_term(t) for t in ("20000-20999", "10*", "40*", "30*", "90*", "80*")]
    assert compiled.pc_lo.tolist() == [t.lo for t in terms]
    assert compiled.pc_hi.tolist() == [t.hi for t in terms]
    assert compiled.pc_chars.tolist() == [5, 2, 2, 2, 2, 2]
    assert compiled.pc_kind.tolist() == [TermKind.RANGE] + [TermKind.PREFIX] * 5
    assert compiled.rule_regex_bit.tolist() == [-1] * 8 + [0, 1, 2]
    assert compiled.rule_has_service.tolist() == [False] * 6 + [True, True] + [False] * 3
    assert compiled.rule_has_country.tolist() == [True] * 6 + [False] * 5
    assert compiled.rule_has_origin.tolist() == [False] * 6 + [True] + [False] * 4
    assert compiled.rule_service.shape == (11, ALPHA2)
    assert int(compiled.rule_service[6].sum()) == 26
    assert int(compiled.rule_country[0].sum()) == 1
    assert bool(compiled.rule_country[0, letters_index("MA")]) is True
    assert bool(compiled.rule_origin[6, letters_index("MA")]) is False
    assert int(compiled.rule_origin[6].sum()) == ALPHA2 - 1
    assert compiled.dest_ptr.tolist() == [0, 6, 8, 10, 11, 12, 13, 15, 17, 18, 19, 20]
    assert compiled.dest_chutes.tolist() == [*range(1, 14), 20, 21, 22, 23, 30, 31, 32]
    assert compiled.over_ptr.tolist() == [0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6]
    assert compiled.over_chutes.tolist() == [40, 41, 41, 42, 42, 42]
    assert compiled.dest_cutoff_min.tolist() == [-1] * 11
    expected_functions = np.zeros(len(Reason), dtype=np.int32)
    for reason, chute in load_plan(DEMO_PLAN).functions.items():
        expected_functions[int(reason)] = chute
    assert compiled.function_chute.tolist() == expected_functions.tolist()
    assert compiled.function_chute[int(Reason.OK)] == 0


def test_compile_plan_without_rules() -> None:
    data = minimal()
    data["rule"] = []
    data["options"]["balance"] = "least_loaded"
    compiled = compile_plan(build_plan(data))
    assert compiled.rule_dest.shape == (0,)
    assert compiled.rule_pc_ptr.tolist() == [0]
    assert compiled.rule_service.shape == (1, ALPHA2)
    assert compiled.least_loaded is True
    assert compiled.dest_cutoff_min.tolist() == [-1, 21 * 60 + 30]


# --- regressions: problems a review found -------------------------------------------------


@pytest.mark.parametrize("field", ["postcode", "s10_service", "country"])
def test_empty_condition_list_is_an_error(field: str) -> None:
    data = minimal()
    data["rule"][0][field] = []
    problem = only_problem(data)
    assert problem.key == f"rule[0].{field}"
    assert "at least 1 item" in problem.message


@pytest.mark.parametrize("pattern", ["M", "!M", "MAR", "E**"])
def test_letter_glob_must_cover_two_letters(pattern: str) -> None:
    with pytest.raises(ValueError, match="two-letter"):
        parse_letter_set([pattern])


def test_postcode_longer_than_the_kernel_can_hold() -> None:
    data = minimal()
    data["rule"][0]["postcode"] = ["99999999999999999999*"]
    problem = only_problem(data)
    assert problem.key == "rule[0].postcode[0]"
    assert "at most 9 characters" in problem.message


def test_unicode_digits_are_not_postcodes_nor_chutes() -> None:
    arabic_indic = "".join(chr(0x0660 + int(d)) for d in "20000-20999" if d != "-")
    with pytest.raises(ValueError, match="'-' is only for a range"):
        parse_postcode_term(arabic_indic[:5] + "-" + arabic_indic[5:])
    with pytest.raises(ValueError, match="is not a postcode pattern"):
        parse_postcode_term(arabic_indic[:5])
    with pytest.raises(ValueError, match="not a chute number"):
        parse_chute_list(chr(0x0661) + "-" + chr(0x0663))


def test_every_problem_across_tables_is_listed() -> None:
    data = minimal()
    data["destination"][0]["chutez"] = [1]  # a typo in one table...
    data["destination"].append({"name": "C", "chutes": [99]})  # ...an unknown chute in another
    data["rule"].append({"destination": "NOWHERE"})  # ...and a rule to nowhere
    keys = [p.key for p in problems_of(data)]
    assert "destination[0].chutez" in keys
    assert "destination[2].chutes[0]" in keys
    assert f"rule[{len(data['rule']) - 1}].destination" in keys


def test_machine_chutes_of_the_wrong_type_is_one_problem() -> None:
    data = minimal()
    data["machine"]["chutes"] = 5
    problem = only_problem(data)
    assert problem.key == "machine.chutes"
    assert "list of chute numbers" in problem.message


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_bytes(b"\xef\xbb\xbf" + DEMO_PLAN.read_bytes())
    assert load_plan(path).name == "casablanca-day"


# --- warnings: rules that can never match, postcodes shared by destinations -------------


def _lint(rules: list[dict[str, Any]], extra_destinations: int = 2) -> list[Problem]:
    data = minimal()
    data["destination"] = [
        {"name": n, "chutes": [1]} for n in ["A", "B", "C", "D"][: 2 + extra_destinations]
    ]
    data["rule"] = rules
    return list(build_plan(data, FILE).warnings)


def test_rule_behind_a_covering_rule_is_reported() -> None:
    warnings = _lint(
        [
            {"destination": "A", "postcode": ["20*"]},
            {"destination": "B", "postcode": ["20000-20999"]},  # inside 20*
            {"destination": "C", "postcode": ["2*", "30*"]},  # 30* is not inside 20*
        ]
    )
    assert [w.key for w in warnings] == ["rule[1]", "rule[2].postcode"]
    assert "can never match: rule[0] (A)" in warnings[0].message
    assert "2* overlaps 20* of rule[0] (A)" in warnings[1].message


def test_conditions_that_narrow_a_rule_keep_it_reachable() -> None:
    assert not _lint(
        [
            {"destination": "A", "s10_service": ["E*"], "country": ["!MA"]},
            {"destination": "B", "s10_service": ["E*"]},  # also MA: reachable
            {"destination": "C", "barcode": "^1Z"},
            {"destination": "D", "barcode": "^1Z[0-9]"},  # another regex: not judged
        ]
    )
    shadowed = _lint(
        [
            {"destination": "A", "s10_service": ["E*"]},
            {"destination": "B", "s10_service": ["EE", "EA"], "country": ["CN"]},
            {"destination": "C"},  # a catch-all
            {"destination": "D", "barcode": "^LP"},  # after the catch-all
        ]
    )
    assert [w.key for w in shadowed] == ["rule[1]", "rule[3]"]


def test_overlapping_postcodes_across_destinations() -> None:
    warnings = _lint(
        [
            {"destination": "A", "postcode": ["20000-20500"]},
            {"destination": "B", "postcode": ["20400-20999", "40*"]},
            {"destination": "A", "postcode": ["20450"]},  # same destination: no overlap warning
        ]
    )
    assert [w.key for w in warnings] == ["rule[1].postcode", "rule[2]"]
    assert "20400-20999 overlaps 20000-20500" in warnings[0].message


def test_demo_plan_has_no_warnings() -> None:
    assert load_plan(DEMO_PLAN).warnings == ()


# --- version 2: destination country, origin, string postcodes ------------------------


def test_version_1_plan_is_refused_with_what_changed() -> None:
    data = minimal()
    data["version"] = 1
    problem = only_problem(data)
    assert problem.key == "version"
    for change in ("DESTINATION country", "`origin`", "strings", "version = 2"):
        assert change in problem.message


def test_unknown_version_is_refused() -> None:
    data = minimal()
    data["version"] = 3
    assert "unknown plan version 3" in only_problem(data).message


def test_globs_in_country_need_not_be_iso_codes() -> None:
    data = minimal()
    data["rule"][0]["country"] = ["E*", "!?Z", "MA"]
    data["rule"][0]["origin"] = ["C?"]
    plan = build_plan(data, FILE)
    assert plan.rules[0].country is not None
    assert letters_index("ES") in plan.rules[0].country
    assert plan.rules[0].origin is not None
    assert letters_index("CN") in plan.rules[0].origin


def test_s10_service_is_not_checked_against_iso() -> None:
    data = minimal()
    data["rule"][0]["s10_service"] = ["EE", "UX"]
    build_plan(data, FILE)


def test_overlap_warnings_are_scoped_by_country() -> None:
    assert not _lint(
        [
            {"destination": "A", "country": ["MA"], "postcode": ["20000-20999"]},
            {"destination": "B", "country": ["FR"], "postcode": ["20000-20999"]},
        ]
    )
    warnings = _lint(
        [
            {"destination": "A", "country": ["MA", "FR"], "postcode": ["20000-20999"]},
            {"destination": "B", "country": ["FR"], "postcode": ["202*"]},
        ]
    )
    assert [w.key for w in warnings] == ["rule[1].postcode"]


def test_letter_prefixes_shadow_and_overlap() -> None:
    warnings = _lint(
        [
            {"destination": "A", "country": ["GB"], "postcode": ["SW*"]},
            {"destination": "B", "country": ["GB"], "postcode": ["SW1A 1AA", "sw1*"]},
            {"destination": "C", "country": ["GB"], "postcode": ["S*"]},
        ]
    )
    assert [w.key for w in warnings] == ["rule[1]", "rule[2].postcode"]


@pytest.mark.parametrize(
    ("country", "pattern", "warned"),
    [
        ("GB", "10000-19999", True),  # a 5-digit range on a GB rule
        ("GB", "SW1*", False),
        ("GB", "SW1A 1AA", False),
        ("GB", "1*", True),  # GB postcodes start with a letter
        ("NL", "1000-1099", True),  # NL postcodes are 9999AA
        ("NL", "10*", False),
        ("NL", "1012 AB", False),
        ("MA", "2025", True),
        ("MA", "20000-20999", False),
        ("PT", "1000-001", None),  # refused outright (a hyphen outside a range)
        ("PT", "1000001", False),
        ("CA", "K1A 0B1", False),
        ("CA", "K1A0B12", True),
        ("US", "94105-94199", False),
        ("US", "941051234", False),
    ],
)
def test_patterns_checked_against_the_countrys_postcode_forms(
    country: str, pattern: str, warned: bool | None
) -> None:
    data = minimal()
    data["rule"][0].update({"country": [country], "postcode": [pattern]})
    if warned is None:
        assert only_problem(data).key == "rule[0].postcode[0]"
        return
    keys = [w.key for w in build_plan(data, FILE).warnings]
    assert ("rule[0].postcode[0]" in keys) is warned


def test_format_check_skips_countries_without_known_forms() -> None:
    data = minimal()
    data["rule"][0].update({"country": ["GB", "AE"], "postcode": ["10000-19999"]})
    assert not build_plan(data, FILE).warnings


def test_shipped_plans_have_no_warnings() -> None:
    for path in (DEMO_PLAN, DEMO_PLAN.parents[1] / "casablanca" / "sortplan.toml"):
        assert load_plan(path).warnings == (), path


# --- the per-table pieces ------------------------------------------------------------------


def test_problems_each_validates_every_table_on_its_own() -> None:
    problems = Problems(FILE)
    models = problems.each(DestinationModel, [{"name": "A"}, "not a table", {"nam": "B"}], "d")
    assert [m.name if m else None for m in models] == ["A", None, None]
    # The one that is not a table is the top level's to report; the typo is reported here.
    assert {p.key for p in problems.found} == {"d[2].name", "d[2].nam"}
    assert all(p.file == FILE for p in problems.found)


def test_machine_limits_report_a_minimum_above_its_maximum() -> None:
    problems = Problems(FILE)
    model = MachineModel(chutes="1-4", min_weight_g=500, max_weight_g=100, max_length_mm=900)
    limits = machine_limits(model, problems)
    assert (limits.minimum, limits.maximum) == ((0, 0, 0, 500), (900, 65_535, 65_535, 100))
    assert [(p.key, p.message.split(":")[0]) for p in problems.found] == [
        ("machine.min_weight_g", "500 is above machine.max_weight_g = 100")
    ]
    assert machine_limits(None, problems) == MachineLimits()
