"""The plan's layout keys for the optimiser (docs/optimiser.md, "Layout"): where chutes sit
along the loop (`[machine] loop_order`, `lap_s`), the operators' zones (`[[zone]]`), each
destination's `min_chutes`, `max_chutes` and `fixed` chutes, and destinations kept
together or apart (`[layout]`). The daemon does not use them; check-config checks them so
that the optimiser never starts from a plan that contradicts itself.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any

from pydantic import Field, field_validator

from sorter.plan.records import MAX_CHUTE_NUMBER, MAX_CLEAR_INTERVAL_MIN, Destination, Zone
from sorter.plan.tables import Problems, TableModel

__all__ = [
    "MAX_OPERATORS",
    "LayoutModel",
    "ZoneModel",
    "build_groups",
    "build_loop_order",
    "build_zones",
    "check_destination_limits",
    "ordered_chutes",
]

MAX_OPERATORS = 1000  # people in one zone: more is a typo
_RANGE_RE = re.compile(r"^([0-9]+)-([0-9]+)$")


def ordered_chutes(spec: str | list[int]) -> list[int]:
    """Chutes in the order written: `"1-120,240-121"` (a range may run downwards) or a list;
    ValueError for anything else."""
    if isinstance(spec, list):
        out = list(spec)
    else:
        out = []
        for raw in spec.split(","):
            part = raw.strip()
            m = _RANGE_RE.match(part)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if max(lo, hi) > MAX_CHUTE_NUMBER:
                    raise ValueError(f"range {part!r}: chute numbers are 1..{MAX_CHUTE_NUMBER}")
                out.extend(range(lo, hi + 1) if lo <= hi else range(lo, hi - 1, -1))
            elif part.isdigit():
                out.append(int(part))
            else:
                raise ValueError(f"{part!r} is not a chute number or range a-b")
    if any(c < 1 or c > MAX_CHUTE_NUMBER for c in out):
        raise ValueError(f"chute numbers are 1..{MAX_CHUTE_NUMBER}")
    return out


def _chute_spec(value: Any) -> str | list[int]:
    if isinstance(value, str) or (isinstance(value, list) and all(type(v) is int for v in value)):
        return value
    raise ValueError("must be a string of ranges like '1-60' or a list of chute numbers")


class ZoneModel(TableModel):
    name: str = Field(min_length=1)
    chutes: Any
    operators: Annotated[int, Field(strict=True, ge=1, le=MAX_OPERATORS)] = 1
    clear_interval_min: (
        Annotated[int, Field(strict=True, ge=1, le=MAX_CLEAR_INTERVAL_MIN)] | None
    ) = None

    @field_validator("chutes")
    @classmethod
    def _spec(cls, value: Any) -> str | list[int]:
        return _chute_spec(value)


class LayoutModel(TableModel):
    together: list[list[str]] = Field(default_factory=list)
    apart: list[list[str]] = Field(default_factory=list)


def _first(chutes: list[int] | set[int], limit: int = 5) -> str:
    shown = sorted(chutes)[:limit]
    more = f" and {len(chutes) - limit} more" if len(chutes) > limit else ""
    return ", ".join(str(c) for c in shown) + more


def build_loop_order(spec: Any, machine: set[int], problems: Problems) -> tuple[int, ...]:
    """`[machine] loop_order`: every chute of the machine once, in the order an item passes
    them after the induction; () when not given (ascending chute numbers)."""
    if spec is None or not machine:
        return ()
    try:
        order = ordered_chutes(_chute_spec(spec))
    except ValueError as exc:
        problems.add("machine.loop_order", str(exc))
        return ()
    twice = {c for c, n in Counter(order).items() if n > 1}
    unknown = set(order) - machine
    missing = machine - set(order)
    for what, chutes in (("twice", twice), ("not on the machine", unknown)):
        if chutes:
            problems.add("machine.loop_order", f"chute(s) {_first(chutes)} {what}")
    if missing:
        problems.add("machine.loop_order", f"leaves out chute(s) {_first(missing)} of the machine")
    return tuple(order)


def build_zones(
    models: list[ZoneModel | None], machine: set[int], problems: Problems
) -> tuple[Zone, ...]:
    """The operators' zones: each machine chute in exactly one when any zone is given."""
    zones: list[Zone] = []
    owner: dict[int, str] = {}
    names: set[str] = set()
    for i, z in enumerate(models):
        if z is None:
            continue
        key = f"zone[{i}]"
        if z.name in names:
            problems.add(f"{key}.name", f"duplicate zone {z.name!r}")
        names.add(z.name)
        try:
            chutes = ordered_chutes(z.chutes)
        except ValueError as exc:
            problems.add(f"{key}.chutes", str(exc))
            continue
        unknown = set(chutes) - machine if machine else set()
        if unknown:
            problems.add(f"{key}.chutes", f"chute(s) {_first(unknown)} do not exist on the machine")
        shared = {c for c in chutes if c in owner}
        if shared:
            other = owner[min(shared)]
            problems.add(
                f"{key}.chutes",
                f"chute(s) {_first(shared)} already in zone {other!r}: a chute is in one zone",
            )
        for c in chutes:
            owner.setdefault(c, z.name)
        zones.append(Zone(z.name, tuple(sorted(set(chutes))), z.operators, z.clear_interval_min))
    if zones and machine and (machine - set(owner)):
        problems.add(
            "zone",
            f"chute(s) {_first(machine - set(owner))} of the machine are in no zone: "
            "with [[zone]] tables every chute is in one",
        )
    return tuple(zones)


def check_destination_limits(
    destinations: list[Destination], machine: set[int], problems: Problems
) -> None:
    """min_chutes, max_chutes and fixed chutes that cannot hold whatever the volumes."""
    fixed_by: dict[int, str] = {}
    for i, d in enumerate(destinations):
        key = f"destination[{i}]"
        stray = [c for c in d.fixed if c not in d.chutes]
        if stray:
            problems.add(f"{key}.fixed", f"fixed chute(s) {_first(stray)} are not among its chutes")
        for c in d.fixed:
            if c in fixed_by and fixed_by[c] != d.name:
                problems.add(f"{key}.fixed", f"chute {c} is fixed to {fixed_by[c]!r} too")
            fixed_by.setdefault(c, d.name)
        low, high = d.min_chutes, d.max_chutes
        if high is not None and low is not None and low > high:
            problems.add(f"{key}.min_chutes", f"{low} is above max_chutes = {high}")
        if high is not None and len(set(d.fixed)) > high:
            problems.add(
                f"{key}.max_chutes", f"{high} is below its {len(set(d.fixed))} fixed chutes"
            )
        if low is not None and machine and low > len(machine):
            problems.add(f"{key}.min_chutes", f"{low} is above the machine's {len(machine)} chutes")


def _groups(
    groups: list[list[str]], kind: str, names: set[str], problems: Problems
) -> tuple[tuple[str, ...], ...]:
    out = []
    for j, group in enumerate(groups):
        key = f"layout.{kind}[{j}]"
        unknown = [n for n in group if n not in names]
        if unknown:
            problems.add(key, f"unknown destination(s) {', '.join(map(repr, unknown))}")
        if len(set(group)) < 2:
            problems.add(key, "a group names at least two different destinations")
        out.append(tuple(dict.fromkeys(group)))
    return tuple(out)


def _components(together: tuple[tuple[str, ...], ...]) -> dict[str, int]:
    """Together is transitive (A with B, B with C: all three in one zone)."""
    component: dict[str, int] = {}
    for j, group in enumerate(together):
        joined = {component[n] for n in group if n in component}
        for n, c in list(component.items()):
            if c in joined:
                component[n] = j
        for n in group:
            component[n] = j
    return component


def build_groups(
    model: LayoutModel | None, names: set[str], problems: Problems
) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """`[layout] together` and `apart`: groups of known destinations; an apart pair inside
    one together component cannot hold."""
    if model is None:
        return (), ()
    together = _groups(model.together, "together", names, problems)
    apart = _groups(model.apart, "apart", names, problems)
    component = _components(together)
    for j, group in enumerate(apart):
        clash = [
            (a, b)
            for a in group
            for b in group
            if a < b and a in component and component.get(b) == component[a]
        ]
        for a, b in clash:
            problems.add(
                f"layout.apart[{j}]",
                f"{a!r} and {b!r} are also kept together (layout.together): they cannot be both",
            )
    return together, apart
