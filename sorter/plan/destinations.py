"""The plan's `[[destination]]` tables: a name, its chutes, its overflow, its cut-off."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictInt

from sorter.plan.records import MAX_CHUTE_NUMBER, Destination
from sorter.plan.tables import Problems, TableModel

__all__ = ["DestinationModel", "build_destinations", "raw_names"]


class DestinationModel(TableModel):
    name: str = Field(min_length=1)
    chutes: list[int] = Field(default_factory=list)
    overflow: list[int] = Field(default_factory=list)
    cutoff: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    # The optimiser's limits (docs/optimiser.md, "Layout"); the daemon does not use them.
    min_chutes: StrictInt | None = Field(default=None, ge=0, le=MAX_CHUTE_NUMBER)
    max_chutes: StrictInt | None = Field(default=None, ge=1, le=MAX_CHUTE_NUMBER)
    fixed: list[int] = Field(default_factory=list)


def _cutoff_minutes(text: str | None) -> int:
    if text is None:
        return -1
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def raw_names(raw: list[Any]) -> set[Any]:
    """Names of every table as written, those that failed validation included: they still
    exist for the rules' sake. A name of the wrong type (a list: unhashable) is reported by
    its own table's check."""
    return {d["name"] for d in raw if isinstance(d, dict) and isinstance(d.get("name"), str)}


def _check_chutes(d: DestinationModel, key: str, machine: set[int], problems: Problems) -> None:
    if not d.chutes and not d.overflow:
        problems.add(f"{key}.chutes", f"destination {d.name!r} has no chutes")
    for field_name, chutes in (("chutes", d.chutes), ("overflow", d.overflow)):
        for j, c in enumerate(chutes):
            if machine and c not in machine:
                problems.add(f"{key}.{field_name}[{j}]", f"chute {c} does not exist on the machine")


def build_destinations(
    models: list[DestinationModel | None], machine: set[int], problems: Problems
) -> tuple[list[Destination], dict[str, int]]:
    """The valid destinations in order, and each name's table index (the first one's)."""
    destinations: list[Destination] = []
    names: dict[str, int] = {}
    for i, d in enumerate(models):
        if d is None:
            continue
        key = f"destination[{i}]"
        if d.name in names:
            problems.add(f"{key}.name", f"duplicate destination {d.name!r}")
        names.setdefault(d.name, i)
        _check_chutes(d, key, machine, problems)
        destinations.append(
            Destination(
                d.name,
                tuple(d.chutes),
                tuple(d.overflow),
                _cutoff_minutes(d.cutoff),
                d.min_chutes,
                d.max_chutes,
                tuple(d.fixed),
            )
        )
    return destinations, names
