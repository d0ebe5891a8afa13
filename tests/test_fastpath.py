"""sorter.fastpath against the Python path it stands in for, item by item.

Two Deciders over the same plan, manifest and chute state, one with the fast path and one
without (`fast_path=False`: sorter.barcodes, sorter.postcode, the manifest's Python
lookups); every item must get the same Choice (destination, chute, reason, barcode and
source) and leave the same counters and round-robin state. Hypothesis draws the plans,
manifests and items of tests/test_oracle_vs_kernel.py (every label form, regex rules, size
classes, cut-offs), codes of the cross-border generator's forms, and bytes a scanner might
send; not derandomised. The 10,000 generated cross-border items are compared as well.
"""

from __future__ import annotations

import datetime as dt
import random
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from sorter.decide import Choice, Decider, MinuteClock
from sorter.feeds import CustomsUpdate, FeedBatch, FeedRow, LiveManifest
from sorter.kernel import ChuteState
from sorter.manifest import load_manifests
from sorter.plan import CompiledPlan, compile_plan, load_plan
from tests.crossborder import codes as cb
from tests.crossborder.files import write_manifest as write_crossborder_manifest
from tests.crossborder.generator import generate
from tests.test_oracle_vs_kernel import Case, Step, cases, write_manifest

ROOT = Path(__file__).resolve().parents[1]
GS = "\x1d"
USED: Counter[str] = Counter()  # fast path answered / fell back, over a test


def pair(plan: CompiledPlan, site: str | None) -> tuple[Decider, Decider]:
    """(with the fast path, without)."""
    fast = Decider(plan, ChuteState.for_plan(plan), site_country=site)
    slow = Decider(plan, ChuteState.for_plan(plan), site_country=site, fast_path=False)
    return fast, slow


def counters(d: Decider) -> tuple[int, int, int, list[int], list[int]]:
    return (
        d.manifest_lookups,
        d.manifest_hits,
        d.invalid_ignored,
        d.kernel.rr_next.tolist(),
        d.state.load.tolist(),
    )


def same(a: Choice, b: Choice, what: str) -> None:
    assert (a, a.barcode, a.source) == (b, b.barcode, b.source), f"{what}\nfast {a}\nslow {b}"


def decide_both(
    fast: Decider,
    slow: Decider,
    codes: Sequence[str],
    step: Step | None = None,
    identifiers: bool = False,
) -> None:
    step = step or Step(list(codes), 0, (0, 0, 0, 0), -1, False, {})
    for d in (fast, slow):
        for chute, bits in step.flags.items():
            d.state.flags[chute] = bits
    assert fast._fast is not None
    answered = fast._fast.features(codes, identifiers, step.dims) is not None
    USED["fast" if answered else "fallback"] += 1
    if currently_in_test_context():
        event("fast path" if answered else "fallback")
    if step.timeout:
        a = fast.decide_timeout(step.recirculations, step.dims)
        b = slow.decide_timeout(step.recirculations, step.dims)
    else:
        a, b = (
            d.decide(codes, step.recirculations, step.dims, identifiers, step.minute_of_day)
            for d in (fast, slow)
        )
    same(a, b, f"codes={list(codes)!r} step={step} identifiers={identifiers}")
    assert counters(fast) == counters(slow), f"codes={list(codes)!r}"


# ---------------------------------------------------------------- random plans and items


def feed_batch(case: Case, rng: random.Random) -> FeedBatch:
    """Some of the case's manifest rows again as feed rows and customs decisions."""
    rows, customs = [], []
    for k, row in enumerate(case.rows):
        if not row.get("barcode") or rng.random() < 0.5:
            continue
        if rng.random() < 0.3:
            customs.append(CustomsUpdate(row["barcode"], rng.random() < 0.5, f"c{k}"))
            continue
        rows.append(
            FeedRow(
                barcode=row["barcode"],
                destination=None,
                postcode=row.get("postcode") or None,
                country=(row.get("country") or "").upper() or None,
                origin=(row.get("origin") or "").upper() or None,
                customs=rng.choice([None, "hold", "release"]),
                id=f"r{k}",
            )
        )
    return FeedBatch(rows=rows, customs=customs)


def open_case(case: Case, directory: Path, live: int) -> tuple[Decider, Decider] | None:
    """The pair over the case's plan and manifest; `live`: 0 the file manifest, 1 a live
    manifest with feed rows compacted, 2 with feed rows still in its newest entries."""
    from sorter.config import ConfigError

    plan_path, manifest_path = directory / "plan.toml", directory / "manifest.csv"
    plan_path.write_text(case.plan_text, encoding="utf-8")
    write_manifest(manifest_path, case.rows)
    try:
        plan = compile_plan(load_plan(plan_path))
    except ConfigError:
        return None
    fast, slow = pair(plan, case.site)
    names = fast.destination_names
    for d in (fast, slow):
        manifest = load_manifests([manifest_path], names)
        if live:
            live_manifest = LiveManifest(manifest, names)
            live_manifest.apply(feed_batch(case, random.Random(len(case.rows))), 1)
            compact = getattr(live_manifest, "compact", None)  # a delta without a dict: none
            if live == 1 and compact is not None:
                compact()
            d.use_manifest(live_manifest)
        else:
            d.use_manifest(manifest)
    return fast, slow


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases(), live=st.sampled_from([0, 0, 1, 2]))
def test_random_plans_decide_alike(
    case: Case, live: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    both = open_case(case, tmp_path_factory.mktemp("case"), live)
    if both is None:
        return
    fast, slow = both
    for step in case.steps:
        decide_both(fast, slow, step.codes, step, case.identifiers)


# ---------------------------------------------------------------- random codes, Casablanca


_RNG_SEEDS = st.integers(0, 2**32 - 1)
_SERVICES = ["RB", "EE", "CP", "LX", "UA", "EA", "VV"]
_SUFFIXES = ["MA", "CN", "FR", "GB", "ES", "XX", "ZZ", "YU", "AA"]
_NUMERIC = ["504", "250", "724", "826", "528", "156", "999", "000", "530", "276", "620"]
_POSTCODES = ["20250", "20000", "75001", "28001", "SW1A1AA", "1012AB", "1000-001", "k1a0b1"]
_POSTCODES += ["", "-", "12345678901", "2025O", "ab", "9", "(1)"]
_POSTCODES += ["1" * 9, "1" * 10, "2" * 17, "2" * 20, "2" * 21]  # each AI's length limit
_FORMS = [*cb.FORMS, "]J1", "]C0", "]A0", "GS+]C1"]


@st.composite
def gs1_elements(draw: st.DrawFn, rng: random.Random) -> list[tuple[str, str]]:
    elements: list[tuple[str, str]] = []
    if draw(st.integers(0, 9)) < 7:
        elements.append(("00", cb.sscc(rng, valid_check=draw(st.integers(0, 9)) > 1)))
    kind = draw(st.integers(0, 9))
    postcode = draw(st.sampled_from(_POSTCODES))
    if kind < 4:
        elements.append(("421", draw(st.sampled_from(_NUMERIC)) + postcode))
    elif kind < 8:
        elements.append(("420", postcode))
    for ai, value in draw(
        st.lists(
            st.sampled_from(
                [("401", "CN12345"), ("403", "MA7"), ("420", "40000"), ("10", "AB12"),
                 ("01", "09506000134352"), ("00", "106141411234567897"), ("421", "25020000"),
                 ("403", "x" * 30), ("403", "x" * 31), ("401", "(x)")]
            ),
            max_size=2,
        )
    ):  # fmt: skip
        elements.append((ai, value))
    if not elements:
        elements.append(("401", "CN1"))
    return draw(st.permutations(elements)) if draw(st.booleans()) else elements


def render(elements: list[tuple[str, str]], form: str) -> str:
    if form in ("]C0", "]A0"):
        return form + cb.render(elements, "]C1")[3:]
    if form == "GS+]C1":
        return "]C1" + GS + cb.render(elements, "]C1")[3:]
    if form == "]J1":
        return "]J1" + cb.render(elements, "]C1")[3:]
    return cb.render(elements, form)


@st.composite
def one_code(draw: st.DrawFn) -> str:
    rng = random.Random(draw(_RNG_SEEDS))
    kind = draw(st.integers(0, 11))
    ok = draw(st.integers(0, 9)) > 1
    if kind == 0:
        suffix = draw(st.sampled_from(_SUFFIXES))
        return cb.s10(rng, draw(st.sampled_from(_SERVICES)), suffix, valid_check=ok)
    if kind == 1:
        return cb.ups(rng, valid_check=ok)
    if kind == 2:
        return cb.dhl(rng, valid_check=ok)
    if kind == 3:
        return cb.lp(rng)
    if kind <= 7:
        return render(draw(gs1_elements(rng)), draw(st.sampled_from(_FORMS)))
    if kind == 8:  # a code with a prefix or a tail, a lower-case one, a cut one
        code = draw(one_code())
        mangle = draw(st.sampled_from(["]C0", "]E0", " ", "\n", GS, "(", ""]))
        return draw(st.sampled_from([mangle + code, code + mangle, code.lower(), code[:-1]]))
    alphabet = string.digits * 3 + "()]" + GS + "CdQeJLPZRB1z -\x00é"
    return draw(st.text(alphabet, max_size=40))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.lists(one_code(), max_size=4), min_size=1, max_size=12),
       identifiers=st.booleans())  # fmt: skip
def test_random_codes_decide_alike(
    items: list[list[str]], identifiers: bool, casablanca: Casablanca
) -> None:
    fast, slow = casablanca.deciders
    for codes in items:
        decide_both(fast, slow, codes, identifiers=identifiers)


# ---------------------------------------------------------------- the generated items


@dataclass
class Casablanca:
    deciders: tuple[Decider, Decider]
    generated: list[tuple[str, ...]]


@pytest.fixture(scope="module")
def casablanca(tmp_path_factory: pytest.TempPathFactory) -> Casablanca:
    """The pair on the Casablanca plan with the generator's pre-advice for 10,000 items."""
    items = generate(10_000, seed=11)
    plan = compile_plan(load_plan(ROOT / "config" / "casablanca" / "sortplan.toml"))
    fast, slow = pair(plan, "MA")
    path = tmp_path_factory.mktemp("cb") / "preadvice.csv"
    write_crossborder_manifest(path, items)
    for d in (fast, slow):
        d.use_manifest(load_manifests([path], d.destination_names))
    return Casablanca((fast, slow), [item.codes for item in items])


def test_generated_crossborder_items_decide_alike(casablanca: Casablanca) -> None:
    fast, slow = casablanca.deciders
    USED.clear()
    for codes in casablanca.generated:
        decide_both(fast, slow, codes)
    # The fast path is what decides the generated traffic, not the fallback.
    assert USED["fast"] >= 0.98 * len(casablanca.generated), USED


# ---------------------------------------------------------------- the minute of the day


@pytest.mark.parametrize("zone", ["Europe/Paris", "Africa/Casablanca", "America/St_Johns"])
def test_minute_clock_is_exact_across_offset_changes(zone: str) -> None:
    tz = ZoneInfo(zone)
    clock = MinuteClock(tz)
    rng = random.Random(zone)
    start = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())
    # Walk the year in uneven steps, with a dense walk around each change of offset.
    instants: list[int] = []
    t = start
    while t < start + 366 * 86400:
        instants.append(t * 10**9 + rng.randrange(10**9))
        t += rng.randrange(1, 40000)
    day = start
    while day < start + 366 * 86400:
        if tz.utcoffset(dt.datetime.fromtimestamp(day, tz)) != tz.utcoffset(
            dt.datetime.fromtimestamp(day + 86400, tz)
        ):
            change = next(
                s for s in range(day, day + 86401, 60)
                if tz.utcoffset(dt.datetime.fromtimestamp(s, tz))
                != tz.utcoffset(dt.datetime.fromtimestamp(day, tz))
            )  # fmt: skip
            instants += [(change + k) * 10**9 + j for k in range(-130, 130, 7) for j in (0, 999)]
        day += 86400
    for ns in sorted(instants):
        local = dt.datetime.fromtimestamp(ns // 10**9, tz)
        assert clock.minute(ns) == local.hour * 60 + local.minute, (zone, ns)
    # A clock stepped backwards is recomputed, not served from the cache.
    assert clock.minute(start * 10**9) == MinuteClock(tz).minute(start * 10**9)
