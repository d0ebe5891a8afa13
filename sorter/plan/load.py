"""Reading a plan: the file, its top level, then each table through its own module.

Every table is validated on its own, then checked against the others (chutes against the
machine, rules against destinations and size classes): a typo in one rule must not hide
an unknown chute in another, and each problem is reported once, in file order.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, StrictInt

from sorter.config import ConfigError, Problem
from sorter.plan.destinations import DestinationModel, build_destinations, raw_names
from sorter.plan.functions import FunctionsModel, OptionsModel, function_chutes
from sorter.plan.layout import (
    LayoutModel,
    ZoneModel,
    build_groups,
    build_loop_order,
    build_zones,
    check_destination_limits,
)
from sorter.plan.machine import MachineModel, machine_chutes, machine_limits
from sorter.plan.records import PLAN_VERSION, SortPlan
from sorter.plan.rule_lint import lint_postcode_formats, lint_rules
from sorter.plan.rules import RuleModel, RuleNames, build_rules
from sorter.plan.size_classes import (
    SizeClassModel,
    build_size_classes,
    lint_sizes,
    raw_class_names,
)
from sorter.plan.tables import Problems, TableModel

__all__ = ["PlanModel", "build_plan", "load_plan"]


class PlanModel(TableModel):
    """The plan's top level; each table is validated on its own (see build_plan)."""

    version: StrictInt  # "2" (a string) is a typo, not a version
    name: str = Field(min_length=1)
    machine: dict[str, Any]
    functions: dict[str, Any]
    options: dict[str, Any] = Field(default_factory=dict)
    destination: list[dict[str, Any]] = Field(min_length=1)
    rule: list[dict[str, Any]] = Field(default_factory=list)
    size_class: list[dict[str, Any]] = Field(default_factory=list)
    zone: list[dict[str, Any]] = Field(default_factory=list)  # the optimiser's (layout.py)
    layout: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Tables:
    """Each table validated on its own; None (or a None item) where it is missing, not a
    table, or wrong."""

    top: PlanModel | None
    machine: MachineModel | None
    functions: FunctionsModel | None
    options: OptionsModel | None
    destinations: list[DestinationModel | None]
    size_classes: list[SizeClassModel | None]
    rules: list[RuleModel | None]
    zones: list[ZoneModel | None]
    layout: LayoutModel | None


def load_plan(path: str | Path) -> SortPlan:
    """Read a plan file and check it; raise ConfigError listing every problem."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM from Windows editors
    except OSError as exc:
        raise ConfigError([Problem(shown, "", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(shown, "", f"not UTF-8 text: {exc.reason}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(shown, "", f"TOML syntax error: {exc}")]) from exc
    return build_plan(data, shown)


def _table(data: dict[str, Any], name: str, default: Any = None) -> Any:
    value = data.get(name, default)
    return value if isinstance(value, dict) else None


def _array(data: dict[str, Any], name: str) -> list[Any]:
    value = data.get(name, [])
    return value if isinstance(value, list) else []


def _validate_tables(data: dict[str, Any], problems: Problems) -> _Tables:
    """The top level first, then every table on its own, in file order."""
    top = problems.section(PlanModel, data, "")
    if top is not None and top.version != PLAN_VERSION:
        problems.add("version", _version_message(top.version))
    machine_raw = _table(data, "machine")
    functions_raw = _table(data, "functions")
    options_raw = _table(data, "options", {})
    return _Tables(
        top=top,
        machine=problems.section(MachineModel, machine_raw, "machine") if machine_raw else None,
        functions=(
            problems.section(FunctionsModel, functions_raw, "functions")
            if functions_raw is not None
            else None
        ),
        options=(
            problems.section(OptionsModel, options_raw, "options")
            if options_raw is not None
            else None
        ),
        destinations=problems.each(DestinationModel, _array(data, "destination"), "destination"),
        size_classes=problems.each(SizeClassModel, _array(data, "size_class"), "size_class"),
        rules=problems.each(RuleModel, _array(data, "rule"), "rule"),
        zones=problems.each(ZoneModel, _array(data, "zone"), "zone"),
        layout=(
            problems.section(LayoutModel, _table(data, "layout"), "layout")
            if _table(data, "layout") is not None
            else None
        ),
    )


def build_plan(data: dict[str, Any], file: str = "<plan>") -> SortPlan:
    """Validate a plan given as TOML data; raise ConfigError listing every problem."""
    problems = Problems(file)
    tables = _validate_tables(data, problems)
    machine = machine_chutes(tables.machine, problems)
    limits = machine_limits(tables.machine, problems)
    functions = function_chutes(tables.functions, machine, problems)
    size_classes, class_index = build_size_classes(tables.size_classes, problems)
    destinations, names = build_destinations(tables.destinations, machine, problems)
    rule_names = RuleNames(
        names,
        raw_names(_array(data, "destination")),
        class_index,
        raw_class_names(_array(data, "size_class")),
    )
    rules, regexes = build_rules(tables.rules, rule_names, problems)
    loop_order = build_loop_order(
        tables.machine.loop_order if tables.machine else None, machine, problems
    )
    zones = build_zones(tables.zones, machine, problems)
    check_destination_limits(destinations, machine, problems)
    together, apart = build_groups(tables.layout, set(names), problems)
    if problems.found:
        raise ConfigError(problems.found)
    # No problem found: the top level and [options] validated.
    assert tables.top is not None
    assert tables.options is not None
    all_chutes = set(machine) | set(functions.values())
    return SortPlan(
        name=tables.top.name,
        path=file,
        machine_chutes=frozenset(machine),
        max_chute=max(all_chutes) if all_chutes else 0,
        functions=functions,
        max_recirculations=tables.options.max_recirculations,
        balance=tables.options.balance,
        destinations=tuple(destinations),
        rules=tuple(rules),
        regexes=tuple(regexes),
        warnings=(
            *lint_rules(rules, destinations, file),
            *lint_postcode_formats(rules, file),
            *lint_sizes(size_classes, limits, tables.functions, file),
        ),
        size_classes=tuple(size_classes),
        machine_limits=limits,
        chute_capacity_items=tables.options.chute_capacity_items,
        clear_interval_min=tables.options.clear_interval_min,
        loop_order=loop_order,
        lap_s=tables.machine.lap_s if tables.machine else None,
        zones=zones,
        together=together,
        apart=apart,
    )


def _version_message(version: int) -> str:
    if version == 1:
        return (
            "version 1 plans are no longer read: in version 2 `country` is the DESTINATION "
            "country (GS1 AI 421, an AI 420 label = the site's [site] country, or the "
            "manifest), no longer the S10 suffix; the S10 suffix is the new `origin` "
            "condition; postcodes are strings (ranges 'a-b' of equal-width digits, prefixes "
            "with letters 'SW1*', exact 'K1A0B1'). Rewrite S10-country rules with `origin`, "
            "give postcode rules their `country`, then set version = 2"
        )
    return f"unknown plan version {version}; this sorterd reads version {PLAN_VERSION}"
