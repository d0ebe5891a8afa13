"""The plan's `[machine]` table: which chutes exist, and what sizes and weights it carries."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator

from sorter.plan.records import MAX_CHUTE_NUMBER, MAX_MEASURE, MEASURES, MachineLimits
from sorter.plan.tables import Measure, Problems, TableModel

__all__ = ["MachineModel", "machine_chutes", "machine_limits", "parse_chute_list"]

_RANGE_RE = re.compile(r"^([0-9]+)-([0-9]+)$")
_EXACT_RE = re.compile(r"^[0-9]+$")


class MachineModel(TableModel):
    chutes: Any
    # The optimiser's layout (sorter/plan/layout.py): the chutes in the order an item passes
    # them, and the seconds of one lap (a recirculated item comes back after one).
    loop_order: Any = None
    lap_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    # What the sorter can carry; a measured item outside is out_of_range. Unset: no limit.
    min_length_mm: Measure | None = None
    max_length_mm: Measure | None = None
    min_width_mm: Measure | None = None
    max_width_mm: Measure | None = None
    min_height_mm: Measure | None = None
    max_height_mm: Measure | None = None
    min_weight_g: Measure | None = None
    max_weight_g: Measure | None = None

    @field_validator("chutes")
    @classmethod
    def _spec(cls, value: Any) -> str | list[int]:
        # One message for both forms (a union type would report each member separately).
        if isinstance(value, str) or (
            isinstance(value, list) and all(type(v) is int for v in value)
        ):
            return value
        raise ValueError("must be a string of ranges like '1-240' or a list of chute numbers")


def _chute_range(part: str) -> range:
    """A range `a-b` as written, or one chute number."""
    m = _RANGE_RE.match(part)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi:
            raise ValueError(f"range {part!r} runs backwards")
        # Checked before building the range: "1-2400000000" is a typo, not a plan.
        if hi > MAX_CHUTE_NUMBER:
            raise ValueError(f"range {part!r}: chute numbers are 1..{MAX_CHUTE_NUMBER}")
        return range(lo, hi + 1)
    if _EXACT_RE.match(part):
        return range(int(part), int(part) + 1)
    raise ValueError(f"{part!r} is not a chute number or range a-b")


def parse_chute_list(spec: str | list[int]) -> set[int]:
    """`"1-240"`, `"1-100,200-240"` or a list of numbers -> the set of chutes."""
    if isinstance(spec, list):
        out = set(spec)
    else:
        out = set()
        for raw in spec.split(","):
            out.update(_chute_range(raw.strip()))
    if not out:
        raise ValueError("the machine has no chutes")
    if any(c < 1 or c > MAX_CHUTE_NUMBER for c in out):
        raise ValueError(f"chute numbers are 1..{MAX_CHUTE_NUMBER} (register map 2000+n)")
    return out


def machine_chutes(model: MachineModel | None, problems: Problems) -> set[int]:
    """The machine's chutes; none when the table or its `chutes` is wrong."""
    if model is None:
        return set()
    try:
        return parse_chute_list(model.chutes)
    except ValueError as exc:
        problems.add("machine.chutes", str(exc))
        return set()


def machine_limits(model: MachineModel | None, problems: Problems) -> MachineLimits:
    """The [machine] table's size and weight limits; a minimum above its maximum is wrong."""
    if model is None:
        return MachineLimits()
    minimum: list[int] = []
    maximum: list[int] = []
    for measure in MEASURES:
        lo: int | None = getattr(model, f"min_{measure}")
        hi: int | None = getattr(model, f"max_{measure}")
        if lo is not None and hi is not None and lo > hi:
            problems.add(
                f"machine.min_{measure}",
                f"{lo} is above machine.max_{measure} = {hi}: no item could be sorted",
            )
        minimum.append(lo or 0)
        maximum.append(hi or MAX_MEASURE)
    return MachineLimits(
        (minimum[0], minimum[1], minimum[2], minimum[3]),
        (maximum[0], maximum[1], maximum[2], maximum[3]),
    )
