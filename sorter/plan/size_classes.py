"""The plan's `[[size_class]]` tables: named bands of item sizes, and their warnings."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sorter.config import Problem
from sorter.plan.functions import FunctionsModel
from sorter.plan.records import (
    CLASS_LIMITS,
    MAX_SIZE_CLASSES,
    MEASURES,
    MachineLimits,
    SizeClass,
)
from sorter.plan.tables import Measure, Problems, TableModel

__all__ = ["SizeClassModel", "build_size_classes", "lint_sizes", "raw_class_names"]


class SizeClassModel(TableModel):
    name: str = Field(min_length=1)
    max_length_mm: Measure | None = None
    max_width_mm: Measure | None = None
    max_height_mm: Measure | None = None
    max_side_mm: Measure | None = None
    max_weight_g: Measure | None = None


def build_size_classes(
    models: list[SizeClassModel | None], problems: Problems
) -> tuple[list[SizeClass], dict[str, int]]:
    """The valid classes in order, and each name's index among them."""
    size_classes: list[SizeClass] = []
    class_index: dict[str, int] = {}
    for i, sc in enumerate(models):
        if sc is None:
            continue
        if sc.name in class_index:
            problems.add(f"size_class[{i}].name", f"duplicate size class {sc.name!r}")
            continue
        if len(size_classes) == MAX_SIZE_CLASSES:
            problems.add(f"size_class[{i}]", f"more than {MAX_SIZE_CLASSES} size classes")
            continue
        class_index[sc.name] = len(size_classes)
        size_classes.append(
            SizeClass(
                len(size_classes),
                sc.name,
                sc.max_length_mm,
                sc.max_width_mm,
                sc.max_height_mm,
                sc.max_side_mm,
                sc.max_weight_g,
            )
        )
    return size_classes, class_index


def raw_class_names(raw: list[Any]) -> set[Any]:
    """Names of every class as written, those that failed validation included."""
    return {c.get("name") for c in raw if isinstance(c, dict)}


def _unreachable(c: SizeClass, classes: list[SizeClass], file: str) -> list[Problem]:
    """An earlier class takes every item this one fits when each limit the earlier class
    sets is at least this class's limit on the same value."""
    mine = c.limits()
    earlier = next(
        (
            e
            for e in classes[: c.index]
            if all(
                theirs == 0 or 0 < ours <= theirs
                for ours, theirs in zip(mine, e.limits(), strict=True)
            )
        ),
        None,
    )
    if earlier is None:
        return []
    return [
        Problem(
            file,
            f"size_class[{c.index}]",
            f"no item can be {c.name!r}: size_class[{earlier.index}] "
            f"({earlier.name}) comes first and takes every item that fits it",
        )
    ]


def _beyond_machine(c: SizeClass, limits: MachineLimits, file: str) -> list[Problem]:
    warnings: list[Problem] = []
    mine = c.limits()
    for k, name in enumerate(CLASS_LIMITS):
        if name == "side_mm":
            machine_max = max(limits.maximum[:3])
        else:
            machine_max = limits.maximum[MEASURES.index(name)]
        if mine[k] > machine_max:
            warnings.append(
                Problem(
                    file,
                    f"size_class[{c.index}].max_{name}",
                    f"{mine[k]} is above what the machine takes ({machine_max}): "
                    "such items are out_of_range before any rule",
                )
            )
    return warnings


def lint_sizes(
    classes: list[SizeClass],
    limits: MachineLimits,
    functions: FunctionsModel | None,
    file: str,
) -> list[Problem]:
    """Warnings: size classes no item can reach, class limits the machine never lets
    through, machine limits without their own function chute."""
    warnings: list[Problem] = []
    for c in classes:
        warnings += _unreachable(c, classes, file)
        warnings += _beyond_machine(c, limits, file)
    if limits.any and functions is not None and functions.out_of_range is None:
        warnings.append(
            Problem(
                file,
                "functions.out_of_range",
                "the machine has size or weight limits but no out_of_range chute: items "
                f"beyond them go to the max_recirc chute {functions.max_recirc}",
            )
        )
    return warnings
