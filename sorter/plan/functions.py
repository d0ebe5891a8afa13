"""The plan's `[functions]` table (a chute per reason an item is not sorted by a rule) and
its `[options]` table."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sorter.plan.records import MAX_CHUTE_CAPACITY_ITEMS, MAX_CLEAR_INTERVAL_MIN
from sorter.plan.tables import Problems, TableModel
from sorter.ports import FUNCTION_REASONS, OPTIONAL_FUNCTIONS, Reason

__all__ = ["FunctionsModel", "OptionsModel", "function_chutes"]


class FunctionsModel(TableModel):
    no_read: int
    invalid_code: int
    multi_read_conflict: int
    no_rule: int
    no_chute: int
    max_recirc: int
    timeout: int
    after_cutoff: int
    customs_hold: int
    out_of_range: int | None = None  # optional: see OPTIONAL_FUNCTIONS


class OptionsModel(TableModel):
    max_recirculations: Annotated[int, Field(ge=0, le=100)] = 2
    balance: Literal["round_robin", "least_loaded"] = "round_robin"
    # What the plan optimiser and its report need (docs/optimiser.md); the daemon does not
    # use them. Strict: a quoted "400" is a typo, as is a fraction of an item.
    chute_capacity_items: (
        Annotated[int, Field(strict=True, ge=1, le=MAX_CHUTE_CAPACITY_ITEMS)] | None
    ) = None
    clear_interval_min: (
        Annotated[int, Field(strict=True, ge=1, le=MAX_CLEAR_INTERVAL_MIN)] | None
    ) = None


def function_chutes(
    model: FunctionsModel | None, machine: set[int], problems: Problems
) -> dict[Reason, int]:
    """Each reason's chute, on the machine; an optional one left out takes its stand-in's."""
    functions: dict[Reason, int] = {}
    if model is None:
        return functions
    for reason in FUNCTION_REASONS:
        chute = getattr(model, reason.word)
        if chute is None:
            continue  # an optional function chute the plan leaves out
        if machine and chute not in machine:
            problems.add(f"functions.{reason.word}", f"chute {chute} does not exist on the machine")
        functions[reason] = chute
    for reason, stand_in in OPTIONAL_FUNCTIONS.items():
        if reason not in functions and stand_in in functions:
            functions[reason] = functions[stand_in]
    return functions
