"""The plan's `[[rule]]` tables: conditions on an item, in order, each naming a destination."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from sorter.countries import ISO_ALPHA2
from sorter.plan.records import ALPHA2, LETTER_CODES, MAX_REGEX_RULES, LetterSet, Rule
from sorter.plan.tables import Problems, TableModel
from sorter.postcode import PostcodeTerm, parse_postcode_term

__all__ = ["RuleModel", "RuleNames", "build_rules", "parse_letter_set"]

# Two letters, where ? is one letter and * any run: "MA", "E*", "?A", "*", with ! to negate.
_TWO_LETTER_GLOB_RE = re.compile(r"^!?(?:[A-Z?]{2}|[A-Z?]?\*|\*[A-Z?])$")
_LETTER_FIELDS = ("s10_service", "country", "origin")


class RuleModel(TableModel):
    destination: str
    # An empty list would be a condition nobody can read right (never, or always?).
    postcode: Annotated[list[str], Field(min_length=1)] | None = None
    barcode: str | None = None
    s10_service: Annotated[list[str], Field(min_length=1)] | None = None
    country: Annotated[list[str], Field(min_length=1)] | None = None  # destination
    origin: Annotated[list[str], Field(min_length=1)] | None = None  # where it was posted
    size_class: Annotated[list[str], Field(min_length=1)] | None = None


@dataclass(frozen=True, slots=True)
class RuleNames:
    """What rules may name: destinations and size classes (valid ones by index; the raw
    names include tables that failed their own validation, already reported there)."""

    destinations: Mapping[str, int]
    raw_destinations: set[Any]
    classes: Mapping[str, int]
    raw_classes: set[Any]


def parse_letter_set(patterns: list[str], iso: bool = False) -> LetterSet:
    """Globs over two-letter codes; `!` negates. Only negations means 'all but these'.
    With `iso`, a code without wildcards must be an officially assigned ISO 3166-1 alpha-2
    code: a typo like "UK" (GB) or "EL" (GR) would otherwise silently match nothing."""
    positive: set[int] = set()
    negative: set[int] = set()
    has_positive = False
    for raw in patterns:
        pattern = raw.strip().upper()
        if not _TWO_LETTER_GLOB_RE.match(pattern):
            raise ValueError(f"{raw!r} is not a two-letter code or glob like 'E*' or '!MA'")
        neg = pattern.startswith("!")
        body = pattern[1:] if neg else pattern
        if iso and "*" not in body and "?" not in body and body not in ISO_ALPHA2:
            raise ValueError(f"{raw!r}: {body} is not an ISO 3166-1 alpha-2 country code")
        hits = {i for i, code in enumerate(LETTER_CODES) if fnmatch.fnmatchcase(code, body)}
        if neg:
            negative |= hits
        else:
            has_positive = True
            positive |= hits
    base = positive if has_positive else set(range(ALPHA2))
    return LetterSet(frozenset(base - negative))


def _postcode_terms(
    written: list[str] | None, key: str, problems: Problems
) -> tuple[PostcodeTerm, ...] | None:
    if written is None:
        return None
    parsed = []
    for j, text in enumerate(written):
        try:
            parsed.append(parse_postcode_term(text))
        except ValueError as exc:
            problems.add(f"{key}.postcode[{j}]", str(exc))
    return tuple(parsed)


def _barcode_regex(
    written: str | None, bit: int, key: str, problems: Problems
) -> tuple[re.Pattern[str] | None, int]:
    """The compiled pattern and its bit in the per-item mask; (None, -1) without one."""
    if written is None:
        return None, -1
    try:
        pattern = re.compile(written)
    except (re.error, OverflowError, RecursionError) as exc:
        # OverflowError: a{99999999999}; RecursionError: thousands of nested groups.
        problems.add(f"{key}.barcode", f"regular expression does not compile: {exc}")
        return None, -1
    if bit >= MAX_REGEX_RULES:
        problems.add(f"{key}.barcode", f"more than {MAX_REGEX_RULES} barcode rules")
    return pattern, bit


def _letter_sets(r: RuleModel, key: str, problems: Problems) -> list[LetterSet | None]:
    """The service, country and origin conditions, in _LETTER_FIELDS order."""
    sets: list[LetterSet | None] = []
    for field_name in _LETTER_FIELDS:
        patterns = getattr(r, field_name)
        letters = None
        if patterns is not None:
            try:
                letters = parse_letter_set(patterns, iso=field_name != "s10_service")
            except ValueError as exc:
                problems.add(f"{key}.{field_name}", str(exc))
        sets.append(letters)
    return sets


def _size_classes(
    r: RuleModel, key: str, names: RuleNames, problems: Problems
) -> frozenset[int] | None:
    if r.size_class is None:
        return None
    for j, class_name in enumerate(r.size_class):
        if class_name not in names.classes and class_name not in names.raw_classes:
            known = ", ".join(repr(n) for n in names.classes) or "none defined"
            problems.add(
                f"{key}.size_class[{j}]",
                f"no size class named {class_name!r} ([[size_class]]: {known})",
            )
    return frozenset(names.classes[n] for n in r.size_class if n in names.classes)


def build_rules(
    models: list[RuleModel | None], names: RuleNames, problems: Problems
) -> tuple[list[Rule], list[re.Pattern[str]]]:
    """The [[rule]] tables, in order; every problem reported with its rule and key."""
    rules: list[Rule] = []
    regexes: list[re.Pattern[str]] = []
    for i, r in enumerate(models):
        if r is None:
            continue
        key = f"rule[{i}]"
        dest = names.destinations.get(r.destination, -1)
        if dest < 0 and r.destination not in names.raw_destinations:
            problems.add(f"{key}.destination", f"no destination named {r.destination!r}")
        terms = _postcode_terms(r.postcode, key, problems)
        pattern, bit = _barcode_regex(r.barcode, len(regexes), key, problems)
        if pattern is not None:
            regexes.append(pattern)
        service, country, origin = _letter_sets(r, key, problems)
        classes = _size_classes(r, key, names, problems)
        rules.append(Rule(i, dest, terms, pattern, bit, service, country, origin, classes))
    return rules, regexes
