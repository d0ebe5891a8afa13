"""The numba decision kernel (sorter.kernel) against the plain-Python reference."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sorter import reference
from sorter.kernel import ChuteState, ItemFeatures, Kernel
from sorter.plan import (
    ALPHA2,
    CLASS_LIMITS,
    MAX_MEASURE,
    MEASURES,
    SortPlan,
    build_plan,
    compile_plan,
    letters_index,
    load_plan,
)
from sorter.ports import FUNCTION_REASONS, Reason
from sorter.postcode import TermKind, digit_count, encode_postcode

DEMO_PLAN = Path(__file__).resolve().parents[1] / "config" / "demo" / "sortplan.toml"

# The status bits as docs/interfaces.md section 3 lays them out, spelled here rather than
# taken from sorter.ports.ChuteFlag so that a wrong bit there fails these tests.
FULL, DISABLED, FAULT = 0b001, 0b010, 0b100
PRE_KERNEL_REASONS = (
    Reason.NO_READ,
    Reason.INVALID_CODE,
    Reason.MULTI_READ_CONFLICT,
    Reason.TIMEOUT,
    Reason.CUSTOMS_HOLD,
)
FUNCTION_WORDS = [r.word for r in FUNCTION_REASONS]
# The kernel sees only the regex bit mask, so any pattern that compiles will do.
REGEX_POOL = ("^1Z[0-9A-Z]{16}$", "^[0-9]{10}$", "^LP[0-9]{12,14}$", "CN$", "^RB", "X+")
LETTER_GLOBS = ("E*", "R*", "?A", "C?", "*", "MA", "CN", "FR", "!MA", "!E*", "!C?", "!CN")
# Country and origin rules: codes must be ISO 3166-1 (ZZ, AA are not), globs are free.
COUNTRY_GLOBS = ("E*", "?A", "C?", "*", "MA", "CN", "FR", "GB", "!MA", "!E*", "!C?", "!CN")
# Limits that sit on interesting values: tiny, typical parcel sizes and weights, the top.
MEASURE_EDGES = (1, 5, 300, 600, 1200, 2000, 30_000, MAX_MEASURE)
LETTER_CODES = ("EE", "EA", "RB", "RR", "MA", "CN", "FR", "CA", "ZZ", "AA")
# Postcode characters: digits, and a few letters so that letter prefixes and exact values
# meet digit ranges.
PC_ALPHABET = "0123456789ABKSW"


@pytest.fixture(scope="module", autouse=True)
def _warm_kernel() -> None:
    """Compile (or load from numba's cache) once per process, before any timing matters."""
    Kernel(compile_plan(load_plan(DEMO_PLAN))).warm()


# --- random plans and item streams -----------------------------------------------------


def _postcode_term(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["range", "prefix", "exact", "letters"]))
    width = draw(st.integers(1, 5))
    top = 10**width - 1
    if kind == "range":
        lo = draw(st.integers(0, top))
        hi = draw(st.integers(lo, min(top, lo + draw(st.sampled_from([0, 5, 50, top])))))
        return f"{lo:0{width}d}-{hi:0{width}d}"
    if kind == "letters":
        text = draw(st.text(PC_ALPHABET, min_size=1, max_size=width + 2))
        return draw(st.sampled_from([f"{text}*", text, f" {text.lower()} "]))
    value = draw(st.integers(0, top))
    return f"{value:0{width}d}*" if kind == "prefix" else f"{value:0{width}d}"


def _draw_machine(draw: st.DrawFn) -> tuple[list[int], str | list[int]]:
    """The machine's chutes, and how the plan writes them (a range, a list or a text)."""
    if draw(st.booleans()):
        n = draw(st.integers(3, 30))
        return list(range(1, n + 1)), f"1-{n}"
    machine = sorted(draw(st.sets(st.integers(1, 40), min_size=1, max_size=20)))
    return machine, machine if draw(st.booleans()) else ",".join(map(str, machine))


def _draw_machine_table(draw: st.DrawFn, machine_spec: str | list[int]) -> dict[str, Any]:
    """[machine]: its chutes and some limits (a minimum never above its maximum)."""
    machine_table: dict[str, Any] = {"chutes": machine_spec}
    for measure in MEASURES:
        if draw(st.integers(0, 3)) == 0:
            machine_table[f"max_{measure}"] = draw(st.sampled_from(MEASURE_EDGES))
        if draw(st.integers(0, 4)) == 0:
            machine_table[f"min_{measure}"] = draw(st.integers(1, 300))
        low, high = machine_table.get(f"min_{measure}"), machine_table.get(f"max_{measure}")
        if low is not None and high is not None and low > high:
            del machine_table[f"min_{measure}"]
    return machine_table


def _draw_size_classes(draw: st.DrawFn) -> list[dict[str, Any]]:
    size_classes = []
    for i in range(draw(st.integers(0, 4))):
        size: dict[str, Any] = {"name": f"S{i}"}
        for limit in CLASS_LIMITS:
            if draw(st.integers(0, 2)) == 0:
                size[f"max_{limit}"] = draw(st.sampled_from(MEASURE_EDGES))
        size_classes.append(size)
    return size_classes


def _draw_destinations(draw: st.DrawFn, chute: st.SearchStrategy[int]) -> list[dict[str, Any]]:
    destinations = []
    for i in range(draw(st.integers(1, 8))):
        chutes = draw(st.lists(chute, max_size=4))
        overflow = draw(st.lists(chute, max_size=2))
        if not chutes and not overflow:
            chutes = [draw(chute)]
        d: dict[str, Any] = {"name": f"D{i}", "chutes": chutes, "overflow": overflow}
        if draw(st.booleans()):
            d["cutoff"] = f"{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}"
        destinations.append(d)
    return destinations


def _draw_rule(
    draw: st.DrawFn, names: list[str], size_classes: list[dict[str, Any]]
) -> dict[str, Any]:
    rule: dict[str, Any] = {"destination": draw(st.sampled_from(names))}
    if draw(st.integers(0, 2)) == 0:
        rule["postcode"] = [_postcode_term(draw) for _ in range(draw(st.integers(1, 3)))]
    if draw(st.integers(0, 3)) == 0:
        rule["barcode"] = draw(st.sampled_from(REGEX_POOL))
    for field in ("s10_service", "country", "origin"):
        if draw(st.integers(0, 3)) == 0:
            pool = LETTER_GLOBS if field == "s10_service" else COUNTRY_GLOBS
            rule[field] = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2))
    if size_classes and draw(st.integers(0, 2)) == 0:
        names_of_classes = [c["name"] for c in size_classes]
        rule["size_class"] = draw(
            st.lists(st.sampled_from(names_of_classes), min_size=1, max_size=2)
        )
    return rule


@st.composite
def plan_data(draw: st.DrawFn) -> dict[str, Any]:
    """A valid sort plan as TOML data: random machine, destinations, rules and options."""
    machine, machine_spec = _draw_machine(draw)
    chute = st.sampled_from(machine)
    functions = {word: draw(chute) for word in FUNCTION_WORDS}
    if draw(st.booleans()):
        del functions["out_of_range"]  # optional: the max_recirc chute stands in
    machine_table = _draw_machine_table(draw, machine_spec)
    size_classes = _draw_size_classes(draw)
    destinations = _draw_destinations(draw, chute)
    names = [d["name"] for d in destinations]
    rules = [_draw_rule(draw, names, size_classes) for _ in range(draw(st.integers(0, 6)))]
    return {
        "version": 2,
        "name": "random",
        "machine": machine_table,
        "functions": functions,
        "options": {
            "max_recirculations": draw(st.sampled_from([2, 3, 1, 2, 3, 1, 0])),
            "balance": draw(st.sampled_from(["round_robin", "least_loaded"])),
        },
        "destination": destinations,
        "rule": rules,
        "size_class": size_classes,
    }


def _beside(digits: str, step: int) -> str:
    """The digit string of the same width one above or below, or "" past the edge."""
    value = int(digits) + step
    return f"{value:0{len(digits)}d}" if 0 <= value < 10 ** len(digits) else ""


def _interesting_postcodes(plan: SortPlan) -> list[str]:
    """Postcodes on and just beside every postcode term's edges, some written with spaces,
    hyphens or in lower case."""
    out: list[str] = []
    for rule in plan.rules:
        for t in rule.postcode or ():
            if t.kind == TermKind.RANGE:
                out += [t.first, t.last, _beside(t.first, -1), _beside(t.last, 1)]
                out += [
                    t.first + "0",
                    t.last[:-1],
                    t.first[:-1] + "A",
                    f"{t.first[:2]} {t.first[2:]}",
                ]
            else:
                out += [t.text, t.text + "7", t.text + "A1", t.text[:-1], t.text.lower()]
                out += [f"{t.text[:1]}-{t.text[1:]}", t.text + "Z" * 10]
    return [p for p in out if p]


def pcf(written: str) -> dict[str, int]:
    """ItemFeatures' postcode fields, as keywords, for a postcode as written."""
    code, digits = item_postcode(written)
    return {"pc": code, "pc_digits": digits}


def item_postcode(written: str) -> tuple[int, int]:
    """(pc, pc_digits) of ItemFeatures for a postcode as written."""
    return encode_postcode(written), digit_count(written) if encode_postcode(written) >= 0 else 0


def _interesting_measures(plan: SortPlan) -> list[int]:
    """0 (not measured), the register's edges, and every limit of the plan and one beside."""
    limits = {*plan.machine_limits.minimum, *plan.machine_limits.maximum}
    for size in plan.size_classes:
        limits |= set(size.limits())
    out = {0, 1, MAX_MEASURE, MAX_MEASURE + 1}
    for v in limits:
        out |= {v - 1, v, v + 1}
    return sorted(v for v in out if v >= 0)


def features(plan: SortPlan) -> st.SearchStrategy[ItemFeatures]:
    """Items, most of them on or next to the plan's own postcode, size and weight edges
    and cut-offs."""
    near = _interesting_postcodes(plan)
    random_digits = st.integers(1, 11).flatmap(
        lambda d: st.integers(0, 10**d - 1).map(lambda v: f"{v:0{d}d}")
    )
    written = st.one_of(
        st.just(""),
        random_digits,
        st.text(PC_ALPHABET + " -", max_size=12),
        *([st.sampled_from(near)] * 3 if near else []),
    )
    postcode = written.map(item_postcode)
    cutoffs = [d.cutoff_min for d in plan.destinations if d.cutoff_min >= 0]
    minute = st.one_of(
        st.just(-1),
        st.integers(0, 1439),
        *(
            [st.sampled_from(cutoffs).flatmap(lambda c: st.integers(max(c - 1, 0), c + 1))] * 2
            if cutoffs
            else []
        ),
    )
    letters = st.one_of(
        st.sampled_from([-1, *(letters_index(c) for c in LETTER_CODES)]),
        st.integers(-1, ALPHA2 - 1),
    )
    reason = st.one_of(
        st.just(int(Reason.OK)),
        st.just(int(Reason.OK)),
        st.just(int(Reason.OK)),
        st.sampled_from([int(r) for r in PRE_KERNEL_REASONS]),
    )
    measure = st.one_of(
        st.just(0), st.sampled_from(_interesting_measures(plan)), st.integers(0, 3000)
    )
    # Mostly a line that measures every item, sometimes one that measures nothing.
    dims = st.one_of(
        st.tuples(measure, measure, measure, measure),
        st.tuples(measure, measure, measure, measure),
        st.just((0, 0, 0, 0)),
    )
    return st.builds(
        lambda r, pc, s, c, o, m, n, t, d: ItemFeatures(r, *pc, s, c, o, m, n, t, -1, *d),
        reason,
        postcode,
        letters,
        letters,
        letters,
        st.integers(0, 2 ** len(REGEX_POOL) - 1),
        st.sampled_from([0] * 12 + [1, 2, 3, 4]),
        minute,
        dims,
    )


@dataclass(frozen=True, slots=True)
class FlagChange:
    chute: int
    flags: int


Event = ItemFeatures | FlagChange


def events(plan: SortPlan) -> st.SearchStrategy[list[Event]]:
    every = sorted(plan.machine_chutes | set(plan.functions.values()))
    owned = sorted({c for d in plan.destinations for c in (*d.chutes, *d.overflow)})
    # Bit 3 is not one of full/disabled/fault: a chute with only that bit stays usable.
    flag = st.builds(
        FlagChange,
        st.one_of(st.sampled_from(owned), st.sampled_from(owned), st.sampled_from(every)),
        st.sampled_from([0, 0, 1, 2, 4, 7, 8]),
    )
    items = features(plan)
    return st.lists(st.one_of(items, items, flag), min_size=8, max_size=40)


def segments(stream: list[Event]) -> Iterator[tuple[list[FlagChange], list[ItemFeatures]]]:
    """Flag changes, then the run of items that follows them, for the batch kernel."""
    flags: list[FlagChange] = []
    items: list[ItemFeatures] = []
    for event in stream:
        if isinstance(event, FlagChange):
            if items:
                yield flags, items
                flags, items = [], []
            flags.append(event)
        else:
            items.append(event)
    yield flags, items


I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


def batch_arrays(
    items: list[ItemFeatures],
) -> tuple[I32, I64, I32, I32, I32, I64, I32, I32]:
    """The columns `Kernel.decide_batch` takes, in its order and dtypes."""
    return (
        np.array([f.reason_in for f in items], np.int32),
        np.array([f.pc for f in items], np.int64),
        np.array([f.pc_digits for f in items], np.int32),
        np.array([f.service for f in items], np.int32),
        np.array([f.country for f in items], np.int32),
        np.array([f.regex_mask for f in items], np.int64),
        np.array([f.recirculations for f in items], np.int32),
        np.array([f.minute_of_day for f in items], np.int32),
    )


def measure_arrays(items: list[ItemFeatures]) -> I32:
    return np.array([[getattr(f, m) for m in MEASURES] for f in items], np.int32)


# Green, this takes a few seconds; shrinking a failure to a small example can take
# minutes, longer than the suite's per-test timeout.
@pytest.mark.timeout(600)
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_kernel_equals_reference(data: st.DataObject) -> None:
    plan = build_plan(data.draw(plan_data(), label="plan"))
    stream = data.draw(events(plan), label="events")
    compiled = compile_plan(plan)

    kernel = Kernel(compiled)
    state = ChuteState.for_plan(compiled)
    ref_state = reference.ReferenceState()
    one_by_one: list[tuple[int, int, Reason]] = []
    for event in stream:
        if isinstance(event, FlagChange):
            state.flags[event.chute] = event.flags
            ref_state.flags[event.chute] = event.flags
            continue
        got = kernel.decide(event, state)
        matched = kernel.match(event)
        expected = reference.decide(plan, event, ref_state)
        assert (got, matched) == (expected, reference.match_destination(plan, event)), event
        assert kernel.size_class(event) == reference.size_class(plan, event), event
        one_by_one.append(got)
    assert {c: int(n) for c, n in enumerate(state.load) if n} == {
        c: n for c, n in ref_state.load.items() if n
    }

    batch_kernel = Kernel(compiled)
    batch_state = ChuteState.for_plan(compiled)
    batched: list[tuple[int, int, Reason]] = []
    for changes, items in segments(stream):
        for change in changes:
            batch_state.flags[change.chute] = change.flags
        if not items:
            continue
        dests, chutes, reasons = batch_kernel.decide_batch(
            *batch_arrays(items),
            batch_state,
            measures=measure_arrays(items),
            origin=np.array([f.origin for f in items], np.int32),
        )
        batched.extend(
            (int(d), int(c), Reason(int(r))) for d, c, r in zip(dests, chutes, reasons, strict=True)
        )
    assert batched == one_by_one
    assert batch_state.load.tolist() == state.load.tolist()
    assert batch_kernel.rr_next.tolist() == kernel.rr_next.tolist()


# --- hand-written cases ----------------------------------------------------------------


def _plan(
    *,
    chutes: list[int] | None = None,
    overflow: list[int] | None = None,
    cutoff: str | None = None,
    balance: str = "round_robin",
    max_recirculations: int = 2,
) -> SortPlan:
    functions = {word: 50 + i for i, word in enumerate(FUNCTION_WORDS)}
    home: dict[str, Any] = {
        "name": "HOME",
        "chutes": [1, 2, 3] if chutes is None else chutes,
        "overflow": [8, 9] if overflow is None else overflow,
    }
    if cutoff is not None:
        home["cutoff"] = cutoff
    return build_plan(
        {
            "version": 2,
            "name": "unit",
            "machine": {"chutes": "1-60"},
            "functions": functions,
            "options": {"max_recirculations": max_recirculations, "balance": balance},
            "destination": [{"name": "OTHER", "chutes": [20]}, home],
            "rule": [
                {"destination": "OTHER", "postcode": ["10*"]},
                {"destination": "HOME", "postcode": ["20000-20999"]},
            ],
        }
    )


def fn(plan: SortPlan, reason: Reason) -> int:
    return plan.functions[reason]


HOME = 1  # destination index of HOME in _plan
HOME_ITEM = ItemFeatures(**pcf("20250"), country=letters_index("MA"))


class Both:
    """Kernel and reference side by side, each with its own state; every call compares."""

    def __init__(self, plan: SortPlan) -> None:
        self.plan = plan
        compiled = compile_plan(plan)
        self.kernel = Kernel(compiled)
        self.state = ChuteState.for_plan(compiled)
        self.ref_state = reference.ReferenceState()

    def set_flags(self, chute: int, flags: int) -> None:
        self.state.flags[chute] = flags
        self.ref_state.flags[chute] = flags

    def set_load(self, chute: int, load: int) -> None:
        self.state.load[chute] = load
        self.ref_state.load[chute] = load

    def decide(self, f: ItemFeatures = HOME_ITEM) -> tuple[int, int, Reason]:
        got = self.kernel.decide(f, self.state)
        assert got == reference.decide(self.plan, f, self.ref_state)
        return got

    def chutes(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            dest, chute, reason = self.decide()
            assert (dest, reason) == (HOME, Reason.OK)
            out.append(chute)
        return out


def test_round_robin_cycles_through_chutes() -> None:
    both = Both(_plan())
    assert both.chutes(7) == [1, 2, 3, 1, 2, 3, 1]
    assert both.state.load[1:4].tolist() == [3, 2, 2]


@pytest.mark.parametrize("bit", [FULL, DISABLED, FAULT])
def test_round_robin_skips_unusable_chute(bit: int) -> None:
    both = Both(_plan())
    assert both.chutes(1) == [1]
    both.set_flags(2, bit)
    assert both.chutes(4) == [3, 1, 3, 1]
    both.set_flags(2, 0)
    assert both.chutes(3) == [2, 3, 1]


def test_round_robin_ignores_other_flag_bits() -> None:
    both = Both(_plan())
    both.set_flags(1, 0b1000)
    assert both.chutes(4) == [1, 2, 3, 1]


def test_round_robin_state_is_per_destination() -> None:
    both = Both(_plan())
    other = ItemFeatures(**pcf("10100"))
    assert both.chutes(1) == [1]
    assert both.decide(other) == (0, 20, Reason.OK)
    assert both.chutes(1) == [2]


def test_least_loaded_picks_least_loaded() -> None:
    both = Both(_plan(balance="least_loaded"))
    both.set_load(1, 5)
    both.set_load(2, 3)
    both.set_load(3, 4)
    assert both.chutes(1) == [2]  # 5, 3, 4
    assert both.chutes(1) == [2]  # 5, 4, 4: the first of equals
    assert both.chutes(1) == [3]  # 5, 5, 4
    assert both.chutes(2) == [1, 2]  # 5, 5, 5 -> 6, 5, 5 -> 6, 6, 5
    assert both.state.load[1:4].tolist() == [6, 6, 5]


def test_least_loaded_skips_unusable_chutes() -> None:
    both = Both(_plan(balance="least_loaded"))
    both.set_load(1, 9)
    both.set_flags(2, FULL)
    both.set_flags(3, FAULT)
    assert both.chutes(2) == [1, 1]
    assert both.state.load[1] == 11


def test_overflow_when_all_chutes_unusable() -> None:
    both = Both(_plan())
    for chute, bit in ((1, FULL), (2, DISABLED), (3, FAULT)):
        both.set_flags(chute, bit)
    # Overflow chutes are taken in order, not balanced.
    assert both.chutes(3) == [8, 8, 8]
    both.set_flags(8, FULL)
    assert both.chutes(1) == [9]
    both.set_flags(2, 0)
    assert both.chutes(2) == [2, 2]


@pytest.mark.parametrize("balance", ["round_robin", "least_loaded"])
def test_overflow_only_destination(balance: str) -> None:
    both = Both(_plan(chutes=[], overflow=[8, 9], balance=balance))
    assert both.chutes(2) == [8, 8]


@pytest.mark.parametrize("balance", ["round_robin", "least_loaded"])
def test_no_chute_when_overflow_unusable_too(balance: str) -> None:
    plan = _plan(balance=balance)
    both = Both(plan)
    for chute in (1, 2, 3, 8, 9):
        both.set_flags(chute, DISABLED)
    assert both.decide() == (HOME, fn(plan, Reason.NO_CHUTE), Reason.NO_CHUTE)
    assert int(both.state.load.sum()) == 0


def test_no_chute_without_overflow() -> None:
    plan = _plan(overflow=[])
    both = Both(plan)
    for chute in (1, 2, 3):
        both.set_flags(chute, FULL)
    assert both.decide() == (HOME, fn(plan, Reason.NO_CHUTE), Reason.NO_CHUTE)


def test_no_rule() -> None:
    plan = _plan()
    both = Both(plan)
    no_rule = (-1, fn(plan, Reason.NO_RULE), Reason.NO_RULE)
    assert both.decide(ItemFeatures(**pcf("30000"))) == no_rule
    assert both.decide(ItemFeatures(**pcf("2025"))) == no_rule  # width matters
    assert both.decide(ItemFeatures()) == no_rule


def test_after_cutoff() -> None:
    plan = _plan(cutoff="21:30")
    both = Both(plan)
    after = (HOME, fn(plan, Reason.AFTER_CUTOFF), Reason.AFTER_CUTOFF)
    assert both.decide(ItemFeatures(**pcf("20250"), minute_of_day=21 * 60 + 29))[2] == (Reason.OK)
    assert both.decide(ItemFeatures(**pcf("20250"), minute_of_day=21 * 60 + 30)) == after
    assert both.decide(ItemFeatures(**pcf("20250"), minute_of_day=23 * 60 + 59)) == after
    # Unknown time of day: no cut-off applies.
    assert both.decide(ItemFeatures(**pcf("20250"), minute_of_day=-1))[2] == Reason.OK
    # Another destination without a cut-off is unaffected.
    late_other = ItemFeatures(**pcf("10100"), minute_of_day=23 * 60)
    assert both.decide(late_other) == (0, 20, Reason.OK)


def test_cutoff_at_midnight_means_always_after() -> None:
    plan = _plan(cutoff="00:00")
    both = Both(plan)
    item = ItemFeatures(**pcf("20250"), minute_of_day=0)
    assert both.decide(item) == (HOME, fn(plan, Reason.AFTER_CUTOFF), Reason.AFTER_CUTOFF)


def test_after_cutoff_comes_before_chute_choice() -> None:
    plan = _plan(cutoff="12:00")
    both = Both(plan)
    for chute in (1, 2, 3, 8, 9):
        both.set_flags(chute, FULL)
    late = ItemFeatures(**pcf("20250"), minute_of_day=12 * 60)
    assert both.decide(late)[2] == Reason.AFTER_CUTOFF


@pytest.mark.parametrize(
    "item",
    [
        ItemFeatures(**pcf("20250"), recirculations=2),
        ItemFeatures(**pcf("20250"), recirculations=7),
        ItemFeatures(reason_in=int(Reason.NO_READ), recirculations=2),
        ItemFeatures(reason_in=int(Reason.CUSTOMS_HOLD), recirculations=2),
        ItemFeatures(recirculations=2),  # would be no_rule
        ItemFeatures(**pcf("20250"), recirculations=2, minute_of_day=23 * 60),
    ],
)
def test_max_recirc_takes_precedence(item: ItemFeatures) -> None:
    plan = _plan(cutoff="21:30")
    both = Both(plan)
    for chute in (1, 2, 3, 8, 9):
        both.set_flags(chute, FULL)
    assert both.decide(item) == (-1, fn(plan, Reason.MAX_RECIRC), Reason.MAX_RECIRC)


def test_below_max_recirculations_sorts_normally() -> None:
    both = Both(_plan(max_recirculations=2))
    assert both.decide(ItemFeatures(**pcf("20250"), recirculations=1)) == (
        HOME,
        1,
        Reason.OK,
    )


def test_max_recirculations_zero_sends_every_item_to_max_recirc() -> None:
    plan = _plan(max_recirculations=0)
    both = Both(plan)
    assert both.decide(HOME_ITEM) == (-1, fn(plan, Reason.MAX_RECIRC), Reason.MAX_RECIRC)


@pytest.mark.parametrize("reason", PRE_KERNEL_REASONS)
def test_function_chute_for_pre_kernel_reason(reason: Reason) -> None:
    plan = _plan()
    both = Both(plan)
    # The item's features would match HOME: the reason found earlier wins.
    item = ItemFeatures(reason_in=int(reason), **pcf("20250"))
    assert both.decide(item) == (-1, fn(plan, reason), reason)
    assert fn(plan, reason) == 50 + FUNCTION_WORDS.index(reason.word)
    assert int(both.state.load.sum()) == 0
    assert both.kernel.rr_next.tolist() == [0, 0]


def test_first_matching_rule_wins() -> None:
    plan = build_plan(
        {
            "version": 2,
            "name": "order",
            "machine": {"chutes": "1-20"},
            "functions": dict.fromkeys(FUNCTION_WORDS, 20),
            "destination": [
                {"name": "EMS", "chutes": [1]},
                {"name": "CASA", "chutes": [2]},
                {"name": "UPS", "chutes": [3]},
            ],
            "rule": [
                {"destination": "EMS", "s10_service": ["E*"], "country": ["!MA"]},
                {"destination": "CASA", "postcode": ["20000-20999", "0*"]},
                {"destination": "UPS", "barcode": "^1Z"},
            ],
        }
    )
    both = Both(plan)
    ee, ma, cn = letters_index("EE"), letters_index("MA"), letters_index("CN")
    assert both.decide(ItemFeatures(**pcf("20250"), service=ee, country=cn))[:2] == (0, 1)
    assert both.decide(ItemFeatures(**pcf("20250"), service=ee, country=ma))[:2] == (1, 2)
    assert both.decide(ItemFeatures(service=ee, country=-1))[2] == Reason.NO_RULE
    assert both.decide(ItemFeatures(**pcf("01234")))[:2] == (1, 2)  # "01234"
    assert both.decide(ItemFeatures(**pcf("1234")))[2] == Reason.NO_RULE
    assert both.decide(ItemFeatures(**pcf("20250"), regex_mask=1))[:2] == (1, 2)
    assert both.decide(ItemFeatures(**pcf("30250"), regex_mask=1))[:2] == (2, 3)
    assert both.decide(ItemFeatures(regex_mask=0b10))[2] == Reason.NO_RULE


def test_country_scopes_postcodes_and_origin_is_its_own_condition() -> None:
    plan = build_plan(
        {
            "version": 2,
            "name": "cross-border",
            "machine": {"chutes": "1-20"},
            "functions": dict.fromkeys(FUNCTION_WORDS, 20),
            "destination": [
                {"name": "RETURNS-CN", "chutes": [1]},
                {"name": "CASABLANCA", "chutes": [2]},
                {"name": "FR-CORSE", "chutes": [3]},
                {"name": "UK-LONDON", "chutes": [4]},
                {"name": "CA-OTTAWA", "chutes": [5]},
                {"name": "ABROAD", "chutes": [6]},
            ],
            "rule": [
                {"destination": "RETURNS-CN", "origin": ["MA"], "country": ["CN"]},
                {"destination": "CASABLANCA", "country": ["MA"], "postcode": ["20000-20999"]},
                {"destination": "FR-CORSE", "country": ["FR"], "postcode": ["20000-20999"]},
                {"destination": "UK-LONDON", "country": ["GB"], "postcode": ["SW1*", "EC*"]},
                {"destination": "CA-OTTAWA", "postcode": ["K1A 0B1"]},
                {"destination": "ABROAD", "country": ["!MA"]},
            ],
        }
    )
    both = Both(plan)
    ma, fr, gb, cn = (letters_index(c) for c in ("MA", "FR", "GB", "CN"))

    def dest(postcode: str = "", **fields: int) -> int:
        return both.decide(ItemFeatures(**pcf(postcode), **fields))[0]

    assert dest("20250", country=ma) == 1
    assert dest("20250", country=fr) == 2  # Corsica: the same digits, another country
    assert dest("20250") == -1  # unknown country: neither, and not "!MA" either
    assert dest("SW1A 1AA", country=gb) == 3
    assert dest("sw1a1aa", country=gb) == 3
    assert dest("EC1A-1BB", country=gb) == 3
    assert dest("SW2A 1AA", country=gb) == 5  # abroad, not London
    assert dest("K1A0B1") == 4
    assert dest("K1A 0B12") == -1
    assert dest(country=cn, origin=ma) == 0
    assert dest(country=cn, origin=cn) == 5
    assert dest(country=cn) == 5  # origin unknown: not a return
    assert dest("2025", country=ma) == -1  # a range tests its own width only
    assert dest("2025A", country=ma) == -1


def test_decide_batch_matches_one_by_one_on_demo_plan() -> None:
    plan = load_plan(DEMO_PLAN)
    compiled = compile_plan(plan)
    ems = ItemFeatures(service=letters_index("EE"), origin=letters_index("CN"))
    items = [HOME_ITEM] * 8 + [ems] * 3 + [ItemFeatures(reason_in=int(Reason.NO_READ))]
    batch_kernel = Kernel(compiled)
    dests, chutes, reasons = batch_kernel.decide_batch(
        *batch_arrays(items),
        ChuteState.for_plan(compiled),
        origin=np.array([f.origin for f in items], np.int32),
    )
    assert dests.tolist() == [0] * 8 + [6] * 3 + [-1]
    assert chutes.tolist() == [1, 2, 3, 4, 5, 6, 1, 2, 20, 21, 20, 59]
    assert reasons.tolist() == [0] * 11 + [int(Reason.NO_READ)]
    assert batch_kernel.rr_next.tolist()[:7] == [2, 0, 0, 0, 0, 0, 1]


def test_warm_leaves_round_robin_at_start() -> None:
    compiled = compile_plan(load_plan(DEMO_PLAN))
    kernel = Kernel(compiled)
    kernel.warm()
    assert kernel.rr_next.tolist() == [0] * 11
    assert kernel.decide(HOME_ITEM, ChuteState.for_plan(compiled)) == (0, 1, Reason.OK)


def test_chute_state_size() -> None:
    compiled = compile_plan(load_plan(DEMO_PLAN))
    assert ChuteState.for_plan(compiled).flags.shape == (61,)
    state = ChuteState.for_plan(compiled, n_slots=100)
    assert (state.flags.shape, state.load.shape) == ((100,), (100,))
    assert state.flags.dtype == np.uint8
    assert state.load.dtype == np.int64


@pytest.mark.parametrize(
    ("first_class", "unmeasured_matches"),
    [({"name": "ANY"}, True), ({"name": "SMALL", "max_weight_g": 5000}, False)],
)
def test_a_size_rule_takes_unmeasured_items_only_through_a_first_class_without_limits(
    first_class: dict[str, Any], unmeasured_matches: bool
) -> None:
    # The kernel knows the unmeasured item's class per plan instead of computing it per
    # item; a partly measured item still goes through the classes.
    plan = build_plan(
        {
            "version": 2,
            "name": "sizes",
            "machine": {"chutes": "1-20"},
            "functions": dict.fromkeys(FUNCTION_WORDS, 20),
            "size_class": [first_class, {"name": "BIG", "max_length_mm": 3000}],
            "destination": [{"name": "BY-SIZE", "chutes": [1]}, {"name": "MA", "chutes": [2]}],
            "rule": [
                {"destination": "BY-SIZE", "size_class": [first_class["name"]]},
                {"destination": "MA", "country": ["MA"]},
            ],
        }
    )
    both = Both(plan)
    ma = letters_index("MA")
    expected = 0 if unmeasured_matches else 1
    assert both.decide(ItemFeatures(country=ma))[0] == expected
    assert both.decide(ItemFeatures(country=ma, weight_g=100))[0] == 0  # fits either way
    assert both.decide(ItemFeatures(country=ma, length_mm=100))[0] == expected
