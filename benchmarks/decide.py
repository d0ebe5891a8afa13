"""The decision core: batch throughput against two Python baselines, one live decision.

Batch: the same realistic items (features extracted once) through `Kernel.decide_batch`,
through `sorter.reference.decide` (the clarity reference the tests hold the kernel to)
and through `TunedPython` below (plain Python written for speed, what a user would write
instead of numba), in the same run; decisions/s and the ratios. The tuned loop's output
is checked equal to the reference's on the same items before it is timed.

Live: `Decider.decide(codes)` one item at a time, from the codes a scanner sent to the
chute (classification, multi-read resolution, features, kernel), as the daemon calls it;
baseline: the same path with the tuned-Python decision in place of the kernel call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.common import (
    ROOT,
    best_of,
    decider,
    feature_arrays,
    feature_keywords,
    percentiles_us,
    traffic_codes,
)
from benchmarks.results import Section
from sorter import reference
from sorter.decide import Choice, Decider
from sorter.kernel import ChuteState, ItemFeatures
from sorter.plan import SortPlan
from sorter.ports import Reason
from sorter.postcode import TermKind
from sorter.runtime import tune_gc

__all__ = ["QUICK", "Options", "TunedPython", "report", "run"]

BATCH_ITEMS = 2_000_000
REFERENCE_ITEMS = 200_000
LIVE_ITEMS = 100_000
_UNUSABLE = 0b111  # full | disabled | fault
_EXACT, _PREFIX = TermKind.EXACT, TermKind.PREFIX
_MEMO_LIMIT = 1 << 16


@dataclass(frozen=True, slots=True)
class Options:
    batch_items: int = BATCH_ITEMS
    reference_items: int = REFERENCE_ITEMS
    live_items: int = LIVE_ITEMS


QUICK = Options(200_000, 50_000, 20_000)


class TunedPython:
    """The plan's decision in plain Python written for speed: the baseline a user would
    pick instead of numba. Rules are precomputed tuples, sets and lists; the rule match is
    memoised in a dict by what it depends on (postcode, service, country, regex mask, and
    the measures when the plan has size rules), as real traffic repeats postcodes; chute
    state in lists; one loop with everything bound to locals. Same order of checks as the
    kernel (sorter/kernel.py docstring), same results as the reference."""

    def __init__(self, plan: SortPlan, n_slots: int) -> None:
        fn = plan.functions
        self.fn = [fn.get(r, 0) if r is not Reason.OK else 0 for r in Reason]
        self.max_recirc = plan.max_recirculations
        self.least_loaded = plan.balance == "least_loaded"
        limits = plan.machine_limits
        self.limits = (limits.minimum, limits.maximum) if limits.any else None
        self.classes = [size.limits() for size in plan.size_classes]
        self.uses_sizes = any(r.size_classes is not None for r in plan.rules)
        self.rules = [
            (
                r.destination,
                None
                if r.postcode is None
                else tuple((t.kind, t.chars, t.lo, t.hi) for t in r.postcode),
                r.regex_bit,
                None if r.s10_service is None else r.s10_service.allowed,
                None if r.country is None else r.country.allowed,
                None if r.origin is None else r.origin.allowed,
                r.size_classes,
            )
            for r in plan.rules
        ]
        self.chutes = [d.chutes for d in plan.destinations]
        self.overflow = [d.overflow for d in plan.destinations]
        self.cutoff = [d.cutoff_min for d in plan.destinations]
        self.flags = [0] * n_slots
        self.load = [0] * n_slots
        self.rr_next = [0] * max(len(plan.destinations), 1)
        self.memo: dict[tuple[int, ...], int] = {}
        self.decide_one = self._compile()

    def size_class(self, length: int, width: int, height: int, weight: int) -> int:
        side = max(length, width, height)
        for c, limits in enumerate(self.classes):
            worst = 0
            for value, limit in zip((length, width, height, side, weight), limits, strict=True):
                if limit > 0:
                    if value <= 0:
                        worst = max(worst, 1)
                    elif value > limit:
                        worst = 2
            if worst == 0:
                return c
            if worst == 1:
                return -1
        return -1

    # One loop with the postcode terms inline, as a user tuning Python by hand writes it:
    # a helper call per rule would slow the baseline and flatter the kernel.
    def match(self, f: ItemFeatures) -> int:  # noqa: C901, PLR0912  (one loop)
        pc, digits = f.pc, f.pc_digits
        cls = -2
        for dest, terms, bit, services, countries, origins, sizes in self.rules:
            if terms is not None:
                if pc < 0:
                    continue
                # The kernel's postcode codes (sorter/postcode.py): exact, prefix mask, or
                # an all-digit range of one width.
                for kind, chars, lo, hi in terms:
                    if kind == _EXACT:
                        if pc == lo:
                            break
                    elif kind == _PREFIX:
                        if pc & hi == lo:
                            break
                    elif digits == chars and lo <= pc <= hi:
                        break
                else:
                    continue
            if bit >= 0 and not (f.regex_mask >> bit) & 1:
                continue
            if services is not None and f.service not in services:
                continue
            if countries is not None and f.country not in countries:
                continue
            if origins is not None and f.origin not in origins:
                continue
            if sizes is not None:
                if cls == -2:
                    cls = self.size_class(f.length_mm, f.width_mm, f.height_mm, f.weight_g)
                if cls not in sizes:
                    continue
            return dest
        return -1

    def _out_of_range(self, f: ItemFeatures) -> bool:
        assert self.limits is not None
        low, high = self.limits
        values = (f.length_mm, f.width_mm, f.height_mm, f.weight_g)
        return any(v > 0 and not lo <= v <= hi for v, lo, hi in zip(values, low, high, strict=True))

    def decide_all(self, items: Sequence[ItemFeatures]) -> list[tuple[int, int, int]]:
        """(destination, chute, reason) of each item, in order (round robin carries on)."""
        return list(map(self.decide_one, items))

    def _compile(self) -> Callable[[ItemFeatures], tuple[int, int, int]]:  # noqa: C901  (closure)
        """decide_one as a closure: the plan and the state in cells, read as fast as locals."""
        fn, max_recirc, limits = self.fn, self.max_recirc, self.limits
        memo, match, uses_sizes = self.memo, self.match, self.uses_sizes
        out_of_range = self._out_of_range
        chutes_of, overflow_of, cutoff_of = self.chutes, self.overflow, self.cutoff
        flags, load, rr_next, least_loaded = self.flags, self.load, self.rr_next, self.least_loaded
        n_dest = len(chutes_of)
        max_recirc_out = (-1, fn[Reason.MAX_RECIRC], int(Reason.MAX_RECIRC))
        out_of_range_out = (-1, fn[Reason.OUT_OF_RANGE], int(Reason.OUT_OF_RANGE))
        no_rule_out = (-1, fn[Reason.NO_RULE], int(Reason.NO_RULE))
        fn_cutoff, fn_no_chute = fn[Reason.AFTER_CUTOFF], fn[Reason.NO_CHUTE]
        after_cutoff, no_chute = int(Reason.AFTER_CUTOFF), int(Reason.NO_CHUTE)

        # One closure, every check inline (the kernel's order): split into calls, the
        # baseline would measure Python's call overhead rather than the decision. For the
        # same reason _compile is over 60 lines: its locals are the closure's fast cells.
        def decide_one(f: ItemFeatures) -> tuple[int, int, int]:  # noqa: C901, PLR0912  (inline)
            (reason_in, pc, digits, service, country, origin, mask, recirc, minute, dest,
             length, width, height, weight) = f  # fmt: skip
            if recirc >= max_recirc:
                return max_recirc_out
            if limits is not None and (length or width or height or weight) and out_of_range(f):
                return out_of_range_out
            if reason_in:
                return (-1, fn[reason_in], reason_in)
            if not 0 <= dest < n_dest:
                key = (
                    (pc, digits, service, country, origin, mask, length, width, height, weight)
                    if uses_sizes
                    else (pc, digits, service, country, origin, mask)
                )
                dest = memo.get(key, -2)
                if dest == -2:
                    dest = match(f)
                    if len(memo) >= _MEMO_LIMIT:
                        memo.clear()
                    memo[key] = dest
                if dest < 0:
                    return no_rule_out
            cutoff = cutoff_of[dest]
            if cutoff >= 0 and minute >= cutoff:
                return (dest, fn_cutoff, after_cutoff)
            chute = -1
            chutes = chutes_of[dest]
            n = len(chutes)
            if least_loaded:
                best_load = 0
                for c in chutes:
                    if not flags[c] & _UNUSABLE and (chute < 0 or load[c] < best_load):
                        chute, best_load = c, load[c]
            elif n:
                i = rr_next[dest]
                for _ in range(n):
                    c = chutes[i]
                    i += 1
                    if i == n:
                        i = 0
                    if not flags[c] & _UNUSABLE:
                        rr_next[dest] = i
                        chute = c
                        break
            if chute < 0:
                for c in overflow_of[dest]:
                    if not flags[c] & _UNUSABLE:
                        chute = c
                        break
                else:
                    return (dest, fn_no_chute, no_chute)
            load[chute] += 1
            return (dest, chute, 0)

        return decide_one


def _batch_rate(d: Decider, features: list[ItemFeatures], items: int) -> float:
    """Decisions/s of the batch kernel over `features` repeated to about `items`, best of 5."""
    reps = max(1, items // len(features))
    arrays = feature_arrays(features * reps)
    keywords = feature_keywords(features * reps)
    reason_in, pc, digits, service, country, mask, recirc, minute = arrays

    def batch() -> None:
        d.kernel.decide_batch(
            reason_in, pc, digits, service, country, mask, recirc, minute,
            ChuteState.for_plan(d.plan), **keywords,
        )  # fmt: skip

    return float(arrays[0].shape[0] / best_of(5, batch))


def _cross_border(opts: Options) -> tuple[float, dict[str, float]]:
    """Batch rate and live latency on the Casablanca plan with the cross-border items of
    tests/crossborder (imports, exports, returns, every label form) and their pre-advice."""
    import tempfile
    from pathlib import Path

    from sorter.manifest import load_manifests
    from sorter.plan import compile_plan, load_plan
    from tests.crossborder.files import write_manifest
    from tests.crossborder.generator import generate

    items = generate(10_000, seed=11)
    plan = compile_plan(load_plan(ROOT / "config" / "casablanca" / "sortplan.toml"))
    d = Decider(plan, ChuteState.for_plan(plan), site_country="MA")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "preadvice.csv"
        write_manifest(path, items)
        d.use_manifest(load_manifests([path], d.destination_names))
    d.warm()
    codes = [item.codes for item in items]
    features = [d.features(c, 0, -1)[0] for c in codes]
    rate = _batch_rate(d, features, opts.batch_items)
    live_codes = (codes * (opts.live_items // len(codes) + 1))[: opts.live_items]
    for c in live_codes[:2000]:
        d.decide(c)
    tune_gc()
    return rate, _live(d.decide, live_codes)


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    d = decider()
    codes = traffic_codes(50_000, seed=2)
    features = [d.features(c, 0, -1)[0] for c in codes]
    n = max(1, opts.batch_items // len(features)) * len(features)
    kernel_rate = _batch_rate(d, features, opts.batch_items)
    reference_rate, tuned_rate = _python_rates(d, features, opts.reference_items)
    live, live_tuned = _live_pair(d, opts.live_items)
    cross_rate, cross_live = _cross_border(opts)
    section = Section(
        params={
            "batch_items": n,
            "reference_items": opts.reference_items,
            "live_items": opts.live_items,
            "plan": "config/demo/sortplan.toml",
            "cross_border_plan": "config/casablanca/sortplan.toml",
        },
        details={
            "live_us": live,
            "live_tuned_python_us": live_tuned,
            "cross_border_live_us": cross_live,
        },
    )
    section.add(
        "cross_border_batch_rate",
        cross_rate / 1e6,
        "M/s",
        "batch decisions/s, kernel, Casablanca plan (37 destinations, string postcodes "
        "scoped by country, origin), generated cross-border items with pre-advice",
        better="higher",
        target=">= 20 M/s",
    )
    section.add(
        "cross_border_live_us_p99",
        cross_live["p99"],
        "us",
        "one live decision, Casablanca plan, cross-border items and manifest, p99",
        better="lower",
        target="<= 20 us",
    )
    _add_kernel_figures(section, kernel_rate, reference_rate, tuned_rate, live, live_tuned)
    return section


def _python_rates(d: Decider, features: list[ItemFeatures], n_ref: int) -> tuple[float, float]:
    """Decisions/s of the reference and of TunedPython over `n_ref` items, best of 3,
    once the tuned loop is shown to decide what the reference decides."""
    plan = d.sort_plan
    ref_features = (features * (n_ref // len(features) + 1))[:n_ref]
    # The baseline must decide what the reference decides before its speed means anything.
    state = reference.ReferenceState()
    expected = [
        (dd, c, int(r)) for dd, c, r in (reference.decide(plan, f, state) for f in ref_features)
    ]
    got = TunedPython(plan, d.plan.n_chute_slots).decide_all(ref_features)
    if got != expected:
        bad = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        raise AssertionError(f"tuned Python differs at item {bad}: {got[bad]} != {expected[bad]}")

    def ref() -> None:
        state = reference.ReferenceState()
        for f in ref_features:
            reference.decide(plan, f, state)

    def tuned() -> None:
        TunedPython(plan, d.plan.n_chute_slots).decide_all(ref_features)

    reference_s = best_of(3, ref)
    tuned_s = best_of(3, tuned)
    return n_ref / reference_s, n_ref / tuned_s


def _live_pair(d: Decider, live_items: int) -> tuple[dict[str, float], dict[str, float]]:
    """Live decision latencies: the Decider, and the same path with TunedPython."""
    live_codes = traffic_codes(live_items, seed=3)
    fast = TunedPython(d.sort_plan, d.plan.n_chute_slots)
    names = d.destination_names

    def tuned_decide(codes: Sequence[str]) -> Choice:
        f, barcode = d.features(codes, 0, None)
        dest, chute, reason = fast.decide_one(f)
        return Choice(names[dest] if dest >= 0 else "", chute, Reason(reason), barcode)

    for c in live_codes[:2000]:
        d.decide(c)
        tuned_decide(c)
    tune_gc()  # as the daemon runs
    return _live(d.decide, live_codes), _live(tuned_decide, live_codes)


def _add_kernel_figures(
    section: Section,
    kernel_rate: float,
    reference_rate: float,
    tuned_rate: float,
    live: dict[str, float],
    live_tuned: dict[str, float],
) -> None:
    labels = {
        "reference": "plain-Python reference (sorter/reference.py)",
        "tuned_python": "tuned plain Python (benchmarks/decide.py TunedPython)",
    }
    section.add(
        "batch_rate",
        kernel_rate / 1e6,
        "M/s",
        "batch decisions/s, numba kernel (decide_batch)",
        better="higher",
        target=">= 20 M/s",
        baselines={"reference": reference_rate / 1e6, "tuned_python": tuned_rate / 1e6},
        baseline_labels=labels,
    )
    section.add(
        "batch_ratio_tuned",
        kernel_rate / tuned_rate,
        "x",
        "kernel / tuned Python",
        better="higher",
        target=">= 10 x",
    )
    section.add("batch_ratio_reference", kernel_rate / reference_rate, "x", "kernel / reference")
    for q in ("p50", "p99", "max"):
        section.add(
            f"live_us_{q}",
            live[q],
            "us",
            f"one live decision, codes -> chute (Decider.decide), {q}",
            better="lower",
            target="<= 20 us" if q == "p99" else "",
            baselines={"tuned_python": live_tuned[q]},
            baseline_labels={"tuned_python": "the same path, tuned Python instead of the kernel"},
        )


def _live(decide: Callable[[Sequence[str]], Any], codes: list[tuple[str, ...]]) -> dict[str, float]:
    samples: list[int] = []
    clock = time.perf_counter_ns
    for c in codes:
        t0 = clock()
        decide(c)
        samples.append(clock() - t0)
    return percentiles_us(samples)


def report(section: Section) -> list[str]:
    fig = {f.name: f for f in section.figures}
    batch = fig["batch_rate"]
    ref, tuned = batch.baseline("reference"), batch.baseline("tuned_python")
    assert ref is not None
    assert tuned is not None
    live = {q: fig[f"live_us_{q}"] for q in ("p50", "p99", "max")}
    lt = {q: f.baseline("tuned_python") for q, f in live.items()}
    return [
        f"batch decisions/s, numba kernel:     {batch.value:8.2f} M/s   (target >= 20 M/s)",
        f"batch decisions/s, tuned Python:     {tuned.value:8.3f} M/s   "
        f"kernel = {fig['batch_ratio_tuned'].value:.0f} x   (target >= 10 x)",
        f"batch decisions/s, Python reference: {ref.value:8.3f} M/s   "
        f"kernel = {fig['batch_ratio_reference'].value:.0f} x",
        f"one live decision, codes -> chute:   p50 {live['p50'].value:.1f} us  p99 "
        f"{live['p99'].value:.1f} us  max {live['max'].value:.0f} us   (target p99 <= 20 us)",
        "  same path, tuned Python decision:  "
        + "  ".join(f"{q} {b.value:.1f} us" for q, b in lt.items() if b is not None),
        f"cross-border (Casablanca plan):      {fig['cross_border_batch_rate'].value:8.2f} M/s"
        f"   live p99 {fig['cross_border_live_us_p99'].value:.1f} us",
    ]
