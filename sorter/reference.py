"""Plain-Python reference of the decision rules in `sorter.kernel`, over `SortPlan` objects.

Written from the plan's objects rather than its arrays, so that a hypothesis test comparing
the two catches mistakes in the compilation as well as in the kernel. It shares the plan
loader and the item features with the kernel; the independent oracle that shares nothing
(its own TOML reading, code classification and postcode matching) is tests/oracle/.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sorter.kernel import ItemFeatures
from sorter.plan import Rule, SizeClass, SortPlan
from sorter.ports import ChuteFlag, Reason
from sorter.postcode import decode_postcode

__all__ = [
    "ReferenceState",
    "decide",
    "fits",
    "match_destination",
    "out_of_range",
    "rule_matches",
    "size_class",
]

UNUSABLE = int(ChuteFlag.FULL | ChuteFlag.DISABLED | ChuteFlag.FAULT)


@dataclass(slots=True)
class ReferenceState:
    """The reference's own chute state: flags as a test sets them, load, round robin."""

    flags: dict[int, int] = field(default_factory=dict)
    load: dict[int, int] = field(default_factory=dict)
    rr_next: dict[int, int] = field(default_factory=dict)

    def usable(self, chute: int) -> bool:
        return self.flags.get(chute, 0) & UNUSABLE == 0


def measures(f: ItemFeatures) -> tuple[int, int, int, int]:
    return f.length_mm, f.width_mm, f.height_mm, f.weight_g


def out_of_range(plan: SortPlan, f: ItemFeatures) -> bool:
    limits = plan.machine_limits
    return any(
        value > 0 and not low <= value <= high
        for value, low, high in zip(measures(f), limits.minimum, limits.maximum, strict=True)
    )


def fits(size: SizeClass, f: ItemFeatures) -> bool | None:
    """True or False when the item's measures decide it, None when a limit's value is
    unmeasured and no measured value exceeds its limit."""
    values = {
        "length": f.length_mm,
        "width": f.width_mm,
        "height": f.height_mm,
        "side": max(f.length_mm, f.width_mm, f.height_mm),
        "weight": f.weight_g,
    }
    limits = {
        "length": size.max_length_mm,
        "width": size.max_width_mm,
        "height": size.max_height_mm,
        "side": size.max_side_mm,
        "weight": size.max_weight_g,
    }
    checked = [(values[k], limit) for k, limit in limits.items() if limit is not None]
    if any(value > limit for value, limit in checked if value > 0):
        return False
    if any(value <= 0 for value, _ in checked):
        return None
    return True


def size_class(plan: SortPlan, f: ItemFeatures) -> int:
    for size in plan.size_classes:
        fit = fits(size, f)
        if fit is None:
            return -1
        if fit:
            return size.index
    return -1


def rule_matches(rule: Rule, f: ItemFeatures, plan: SortPlan) -> bool:
    if rule.postcode is not None:
        postcode = decode_postcode(f.pc)
        if not postcode or not any(t.matches(postcode) for t in rule.postcode):
            return False
    if rule.regex_bit >= 0 and not (f.regex_mask >> rule.regex_bit) & 1:
        return False
    if rule.s10_service is not None and f.service not in rule.s10_service:
        return False
    if rule.country is not None and f.country not in rule.country:
        return False
    if rule.origin is not None and f.origin not in rule.origin:
        return False
    return rule.size_classes is None or size_class(plan, f) in rule.size_classes


def match_destination(plan: SortPlan, f: ItemFeatures) -> int:
    for rule in plan.rules:
        if rule_matches(rule, f, plan):
            return rule.destination
    return -1


def decide(  # noqa: C901  (the kernel's order of checks, one after another, to compare with it)
    plan: SortPlan, f: ItemFeatures, state: ReferenceState
) -> tuple[int, int, Reason]:
    fn = plan.functions
    if f.recirculations >= plan.max_recirculations:
        return -1, fn[Reason.MAX_RECIRC], Reason.MAX_RECIRC
    measured = f.length_mm or f.width_mm or f.height_mm or f.weight_g
    if measured and out_of_range(plan, f):
        return -1, fn[Reason.OUT_OF_RANGE], Reason.OUT_OF_RANGE
    if f.reason_in != Reason.OK:
        reason = Reason(f.reason_in)
        return -1, fn[reason], reason
    dest = f.destination if 0 <= f.destination < len(plan.destinations) else -1
    if dest < 0:
        dest = match_destination(plan, f)
    if dest < 0:
        return -1, fn[Reason.NO_RULE], Reason.NO_RULE
    d = plan.destinations[dest]
    if d.cutoff_min >= 0 and f.minute_of_day >= d.cutoff_min:
        return dest, fn[Reason.AFTER_CUTOFF], Reason.AFTER_CUTOFF
    chute = -1
    usable = [c for c in d.chutes if state.usable(c)]
    if usable and plan.balance == "least_loaded":
        chute = min(usable, key=lambda c: state.load.get(c, 0))  # first of equals, as the kernel
    elif usable:
        n = len(d.chutes)
        first = state.rr_next.get(dest, 0) % n
        for k in range(n):
            i = (first + k) % n
            if state.usable(d.chutes[i]):
                chute = d.chutes[i]
                state.rr_next[dest] = (i + 1) % n
                break
    if chute < 0:
        chute = next((c for c in d.overflow if state.usable(c)), -1)
    if chute < 0:
        return dest, fn[Reason.NO_CHUTE], Reason.NO_CHUTE
    state.load[chute] = state.load.get(chute, 0) + 1
    return dest, chute, Reason.OK
