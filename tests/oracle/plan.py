"""Reading a version 2 sort plan from TOML text, refusing what the specification refuses."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from tests.oracle.codes import normalise_postcode, usable_postcode
from tests.oracle.iso3166 import ISO_ALPHA2

REASONS = (
    "no_read", "invalid_code", "multi_read_conflict", "no_rule", "no_chute", "max_recirc",
    "timeout", "after_cutoff", "customs_hold",
)  # fmt: skip
MEASURES = ("length_mm", "width_mm", "height_mm", "weight_g")
SIZE_LIMITS = ("max_side_mm", "max_length_mm", "max_width_mm", "max_height_mm", "max_weight_g")
MAX_BARCODE_RULES = 64
# The optimiser's layout keys (docs/optimiser.md, "Layout"): the daemon's decision does not
# use them, so the oracle knows their names (a misspelt key is still refused) and ignores
# their values; check-config's checks of them are tested in tests/test_optimise_layout.py.
LAYOUT_TOP = {"zone", "layout"}
LAYOUT_MACHINE = {"loop_order", "lap_s"}
LAYOUT_DESTINATION = {"min_chutes", "max_chutes", "fixed"}
MAX_SIZE_CLASSES = 32


@dataclass(frozen=True, slots=True)
class PostcodePattern:
    kind: str  # "range", "prefix" or "exact"
    low: str  # the range's lower end, the prefix, or the exact postcode (normalised)
    high: str = ""

    def matches(self, normalised: str) -> bool:
        """`normalised` is the item's postcode after normalise_postcode."""
        if not usable_postcode(normalised):
            return False
        if self.kind == "range":
            return (
                normalised.isdigit()
                and len(normalised) == len(self.low)
                and self.low <= normalised <= self.high
            )
        if self.kind == "prefix":
            return normalised.startswith(self.low)
        return normalised == self.low


@dataclass(frozen=True, slots=True)
class LetterSet:
    """Two-letter patterns and globs; an item matches one positive (if any) and no negative."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]

    def matches(self, value: str) -> bool:
        if not value:  # unknown matches no condition, negated or not
            return False
        if any(fnmatchcase(value, p) for p in self.negative):
            return False
        return not self.positive or any(fnmatchcase(value, p) for p in self.positive)


@dataclass(frozen=True, slots=True)
class Rule:
    destination: str
    country: LetterSet | None = None
    origin: LetterSet | None = None
    s10_service: LetterSet | None = None
    postcode: tuple[PostcodePattern, ...] | None = None
    barcode: re.Pattern[str] | None = None
    size_class: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    chutes: tuple[int, ...]
    overflow: tuple[int, ...]
    cutoff_minute: int | None


@dataclass(frozen=True, slots=True)
class SizeClass:
    name: str
    limits: dict[str, int]


@dataclass(slots=True)
class Plan:
    chutes: frozenset[int]
    functions: dict[str, int]
    max_recirculations: int
    balance: str
    limits: dict[str, int] = field(default_factory=dict)  # "min_weight_g" -> 50 ...
    size_classes: list[SizeClass] = field(default_factory=list)
    destinations: dict[str, Destination] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)


class PlanError(ValueError):
    """A plan the oracle cannot read: the product must refuse it too."""


def _table(data: dict[str, Any], key: str, allowed: set[str], required: bool = True) -> Any:
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise PlanError(f"{key}: a table is required")
    unknown = set(value) - allowed
    if unknown:
        raise PlanError(f"{key}: unknown keys {sorted(unknown)}")
    return value


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PlanError(f"{where}: a whole number {low}..{high} is required, not {value!r}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    # An empty list is refused: "none of these" and "all of these" are both plausible.
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PlanError(f"{where}: a non-empty list of strings is required")
    return value


def parse_machine_chutes(spec: Any) -> frozenset[int]:
    """`"1-240"`, `"1-100,200-240"` or a list of numbers, each 1..999."""
    if isinstance(spec, list):
        return frozenset(_int(v, "machine.chutes", 1, 999) for v in spec)
    if not isinstance(spec, str):
        raise PlanError("machine.chutes: a range string or a list is required")
    chutes: set[int] = set()
    for part in spec.split(","):
        m = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", part)
        if m is None:
            raise PlanError(f"machine.chutes: cannot read {part!r}")
        low = _int(int(m.group(1)), "machine.chutes", 1, 999)
        high = _int(int(m.group(2) or m.group(1)), "machine.chutes", low, 999)
        chutes.update(range(low, high + 1))
    return frozenset(chutes)


def _postcode_body_ok(text: str) -> bool:
    return all(c.isascii() and (c.isalnum() or c == " ") for c in text)


def parse_postcode_pattern(text: str) -> PostcodePattern:
    """Working spec B: a range `a-b`, a prefix `X*`, or an exact postcode."""
    pattern = text.strip(" \t")
    if m := re.fullmatch(r"([0-9]+)-([0-9]+)", pattern):
        low, high = m.group(1), m.group(2)
        if len(low) == len(high) and len(low) <= 10 and low <= high:
            return PostcodePattern("range", low, high)
        raise PlanError(f"postcode {text!r}: a range needs two ends of one length, low first")
    if "-" in pattern:
        raise PlanError(f"postcode {text!r}: write exact postcodes without hyphens")
    body, prefix = (pattern[:-1], True) if pattern.endswith("*") else (pattern, False)
    normalised = normalise_postcode(body)
    longest = 9 if prefix else 10
    if "*" in body or not _postcode_body_ok(body) or not 1 <= len(normalised) <= longest:
        raise PlanError(f"postcode {text!r}: not a range, a prefix or a postcode")
    return PostcodePattern("prefix" if prefix else "exact", normalised)


def parse_letter_set(patterns: list[str], where: str, iso: bool) -> LetterSet:
    """Two letters or globs with `?` and `*`; `!` negates. `iso`: plain codes must exist."""
    positive: list[str] = []
    negative: list[str] = []
    for text in patterns:
        body = text[1:] if text.startswith("!") else text
        wild = "?" in body or "*" in body
        if not re.fullmatch(r"[A-Z?*]+", body) or (not wild and len(body) != 2):
            raise PlanError(f"{where}: {text!r} is not two letters or a glob")
        if iso and not wild and body not in ISO_ALPHA2:
            raise PlanError(f"{where}: {body!r} is not an officially assigned ISO 3166-1 code")
        (negative if text.startswith("!") else positive).append(body)
    return LetterSet(tuple(positive), tuple(negative))


def parse_cutoff(text: Any, where: str) -> int:
    """`"HH:MM"`, site local time, as minutes since midnight."""
    m = re.fullmatch(r"([01][0-9]|2[0-3]):([0-5][0-9])", text) if isinstance(text, str) else None
    if m is None:
        raise PlanError(f"{where}: {text!r} is not a time HH:MM")
    return int(m.group(1)) * 60 + int(m.group(2))


def _machine(data: dict[str, Any]) -> tuple[frozenset[int], dict[str, int]]:
    keys = {f"{end}_{m}" for end in ("min", "max") for m in MEASURES}
    machine = _table(data, "machine", {"chutes"} | keys | LAYOUT_MACHINE)
    chutes = parse_machine_chutes(machine.get("chutes"))
    limits = {k: _int(v, f"machine.{k}", 1, 65535) for k, v in machine.items() if k in keys}
    for m in MEASURES:
        low, high = limits.get(f"min_{m}"), limits.get(f"max_{m}")
        if low is not None and high is not None and low > high:
            raise PlanError(f"machine.min_{m}: above machine.max_{m}")
    return chutes, limits


def _on_machine(chute: Any, where: str, chutes: frozenset[int]) -> int:
    if _int(chute, where, 1, 999) not in chutes:
        raise PlanError(f"{where}: chute {chute} does not exist on the machine")
    return int(chute)


def _functions(data: dict[str, Any], chutes: frozenset[int]) -> dict[str, int]:
    table = _table(data, "functions", {*REASONS, "out_of_range"})
    missing = [r for r in REASONS if r not in table]
    if missing:
        raise PlanError(f"functions: {missing} not set")
    return {k: _on_machine(v, f"functions.{k}", chutes) for k, v in table.items()}


def _options(data: dict[str, Any]) -> tuple[int, str]:
    allowed = {"max_recirculations", "balance", "chute_capacity_items", "clear_interval_min"}
    options = _table(data, "options", allowed, required=False)
    most = _int(options.get("max_recirculations", 2), "options.max_recirculations", 0, 65535)
    balance = options.get("balance", "round_robin")
    if balance not in ("round_robin", "least_loaded"):
        raise PlanError(f"options.balance: {balance!r}")
    return most, balance


def _array(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise PlanError(f"{key}: an array of tables is required ([[{key}]])")
    return value


def _destination(i: int, entry: dict[str, Any], chutes: frozenset[int]) -> Destination:
    where = f"destination[{i}]"
    unknown = set(entry) - {"name", "chutes", "overflow", "cutoff"} - LAYOUT_DESTINATION
    name = entry.get("name")
    if unknown or not isinstance(name, str) or not name:
        raise PlanError(
            f"{where}: a name is required, and only name/chutes/overflow/cutoff "
            "(and the optimiser's min_chutes/max_chutes/fixed)"
        )
    lists = {}
    for key in ("chutes", "overflow"):
        value = entry.get(key, [])
        if not isinstance(value, list):
            raise PlanError(f"{where}.{key}: a list of chutes is required")
        lists[key] = tuple(_on_machine(c, f"{where}.{key}", chutes) for c in value)
    if not lists["chutes"]:
        raise PlanError(f"{where}.chutes: a destination needs a chute")
    cutoff = entry.get("cutoff")
    minute = None if cutoff is None else parse_cutoff(cutoff, f"{where}.cutoff")
    return Destination(name, lists["chutes"], lists["overflow"], minute)


def _size_class(i: int, entry: dict[str, Any]) -> SizeClass:
    where = f"size_class[{i}]"
    name = entry.get("name")
    if set(entry) - {"name", *SIZE_LIMITS} or not isinstance(name, str) or not name:
        raise PlanError(f"{where}: a name is required, and only known limits")
    limits = {k: _int(v, f"{where}.{k}", 1, 65535) for k, v in entry.items() if k != "name"}
    return SizeClass(name, limits)


def _letters(entry: dict[str, Any], key: str, where: str, iso: bool) -> LetterSet | None:
    if key not in entry:
        return None
    return parse_letter_set(_strings(entry[key], f"{where}.{key}"), f"{where}.{key}", iso)


def _rule(i: int, entry: dict[str, Any], plan: Plan) -> Rule:
    where = f"rule[{i}]"
    known = {"destination", "country", "origin", "s10_service", "postcode", "barcode"}
    if set(entry) - known - {"size_class"} or entry.get("destination") not in plan.destinations:
        raise PlanError(f"{where}: unknown keys, or no such destination")
    postcode = None
    if "postcode" in entry:
        terms = _strings(entry["postcode"], f"{where}.postcode")
        postcode = tuple(parse_postcode_pattern(t) for t in terms)
    barcode = None
    if "barcode" in entry:
        try:
            barcode = re.compile(entry["barcode"])
        except (re.error, TypeError) as exc:
            raise PlanError(f"{where}.barcode: {exc}") from exc
    size_class = None
    if "size_class" in entry:
        names = _strings(entry["size_class"], f"{where}.size_class")
        if set(names) - {c.name for c in plan.size_classes}:
            raise PlanError(f"{where}.size_class: no such size class")
        size_class = frozenset(names)
    return Rule(
        entry["destination"],
        country=_letters(entry, "country", where, iso=True),
        origin=_letters(entry, "origin", where, iso=True),
        s10_service=_letters(entry, "s10_service", where, iso=False),
        postcode=postcode,
        barcode=barcode,
        size_class=size_class,
    )


def parse_plan(text: str) -> Plan:
    """Read and check a version 2 plan; PlanError (a ValueError) on anything refused."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"not TOML: {exc}") from exc
    known = {"version", "name", "machine", "functions", "options", "destination", "rule"}
    known |= {"size_class"} | LAYOUT_TOP
    if set(data) - known:
        raise PlanError(f"unknown keys {sorted(set(data) - known)}")
    if data.get("version") != 2 or isinstance(data.get("version"), bool):
        raise PlanError("version: only version = 2 plans are read")
    chutes, limits = _machine(data)
    most, balance = _options(data)
    plan = Plan(chutes, _functions(data, chutes), most, balance, limits)
    plan.size_classes = [_size_class(i, e) for i, e in enumerate(_array(data, "size_class"))]
    names = {c.name for c in plan.size_classes}
    if len(plan.size_classes) > MAX_SIZE_CLASSES or len(names) != len(plan.size_classes):
        raise PlanError("size_class: at most 32, with unique names")
    for i, entry in enumerate(_array(data, "destination")):
        dest = _destination(i, entry, chutes)
        if dest.name in plan.destinations:
            raise PlanError(f"destination[{i}].name: {dest.name!r} twice")
        plan.destinations[dest.name] = dest
    plan.rules = [_rule(i, e, plan) for i, e in enumerate(_array(data, "rule"))]
    if sum(r.barcode is not None for r in plan.rules) > MAX_BARCODE_RULES:
        raise PlanError("rule: at most 64 rules may have a barcode")
    return plan
