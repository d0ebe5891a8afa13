"""Sort plans (INTERFACES.md section 6): load, validate against the machine, compile to arrays.

A plan maps item attributes to a destination with ordered rules (the first match wins),
then a destination to chutes. `SortPlan` keeps the checked plan as Python objects, which
the reference decision uses; `CompiledPlan` holds the same plan as flat numpy arrays for
the numba kernel.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
)

from sorter.barcodes import ISO_ALPHA2
from sorter.config import ConfigError, Problem, validation_problems
from sorter.ports import FUNCTION_REASONS, OPTIONAL_FUNCTIONS, Reason
from sorter.postcode import (
    POSTCODE_FORMATS,
    PostcodeTerm,
    TermKind,
    parse_postcode_term,
    term_fits_format,
)

PLAN_VERSION = 2
ALPHA2 = 26 * 26  # size of the two-letter code tables (S10 service, ISO country)
MAX_REGEX_RULES = 64  # barcode regex results travel to the kernel as one uint64 bit mask
MAX_CHUTE_NUMBER = 999  # the register map's chute status block is 2000 + n
MAX_MEASURE = 65_535  # dimensions and weight arrive in 16-bit registers
MAX_SIZE_CLASSES = 32  # a rule's size classes travel to the kernel as one bit mask
# The PLC's measurements, in the order of the request slot.
MEASURES = ("length_mm", "width_mm", "height_mm", "weight_g")
# What a size class can limit: the PLC's measurements, and the longest side whichever way
# the item lies on the belt ("any side over 1200 mm").
CLASS_LIMITS = ("length_mm", "width_mm", "height_mm", "side_mm", "weight_g")
_RANGE_RE = re.compile(r"^([0-9]+)-([0-9]+)$")
_EXACT_RE = re.compile(r"^[0-9]+$")
# Two letters, where ? is one letter and * any run: "MA", "E*", "?A", "*", with ! to negate.
_TWO_LETTER_GLOB_RE = re.compile(r"^!?(?:[A-Z?]{2}|[A-Z?]?\*|\*[A-Z?])$")


_LETTERS = {chr(65 + i // 26) + chr(65 + i % 26): i for i in range(ALPHA2)}


def letters_index(code: str) -> int:
    """Two upper-case letters -> 0..675; anything else -> -1."""
    return _LETTERS.get(code, -1)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Measure = Annotated[int, Field(ge=1, le=MAX_MEASURE)]


class MachineModel(_Model):
    chutes: Any
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


class FunctionsModel(_Model):
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


class OptionsModel(_Model):
    max_recirculations: Annotated[int, Field(ge=0, le=100)] = 2
    balance: Literal["round_robin", "least_loaded"] = "round_robin"


class DestinationModel(_Model):
    name: str = Field(min_length=1)
    chutes: list[int] = Field(default_factory=list)
    overflow: list[int] = Field(default_factory=list)
    cutoff: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class RuleModel(_Model):
    destination: str
    # An empty list would be a condition nobody can read right (never, or always?).
    postcode: Annotated[list[str], Field(min_length=1)] | None = None
    barcode: str | None = None
    s10_service: Annotated[list[str], Field(min_length=1)] | None = None
    country: Annotated[list[str], Field(min_length=1)] | None = None  # destination
    origin: Annotated[list[str], Field(min_length=1)] | None = None  # where it was posted
    size_class: Annotated[list[str], Field(min_length=1)] | None = None


class SizeClassModel(_Model):
    name: str = Field(min_length=1)
    max_length_mm: Measure | None = None
    max_width_mm: Measure | None = None
    max_height_mm: Measure | None = None
    max_side_mm: Measure | None = None
    max_weight_g: Measure | None = None


class PlanModel(_Model):
    """The plan's top level; each table is validated on its own (see build_plan)."""

    version: StrictInt  # "2" (a string) is a typo, not a version
    name: str = Field(min_length=1)
    machine: dict[str, Any]
    functions: dict[str, Any]
    options: dict[str, Any] = Field(default_factory=dict)
    destination: list[dict[str, Any]] = Field(min_length=1)
    rule: list[dict[str, Any]] = Field(default_factory=list)
    size_class: list[dict[str, Any]] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LetterSet:
    """Which two-letter codes a rule accepts: globs like `E*`, negations like `!MA`."""

    allowed: frozenset[int]

    def __contains__(self, index: int) -> bool:
        return index in self.allowed


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    destination: int
    postcode: tuple[PostcodeTerm, ...] | None
    barcode: re.Pattern[str] | None
    regex_bit: int  # bit in the per-item regex mask, -1 without a barcode condition
    s10_service: LetterSet | None
    country: LetterSet | None  # destination country
    origin: LetterSet | None = None  # where the item was posted
    size_classes: frozenset[int] | None = None  # indexes into SortPlan.size_classes


@dataclass(frozen=True, slots=True)
class SizeClass:
    """A band of item sizes: an item belongs to the first class whose every limit it fits.

    Limits are maxima (None: no limit); a class without limits takes every item that
    reaches it ("oversize" after "standard"). A limit on a value the line did not measure
    (0) leaves the item's class unknown, unless a measured value already rules the class
    out: an unweighed parcel is in no weight band, a 40 kg one is not "light" either way.
    """

    index: int
    name: str
    max_length_mm: int | None = None
    max_width_mm: int | None = None
    max_height_mm: int | None = None
    max_side_mm: int | None = None
    max_weight_g: int | None = None

    def limits(self) -> tuple[int, ...]:
        """Maxima in CLASS_LIMITS order, 0 for none."""
        return tuple(getattr(self, f"max_{name}") or 0 for name in CLASS_LIMITS)


@dataclass(frozen=True, slots=True)
class MachineLimits:
    """What the sorter can carry, per measurement (MEASURES order); 0 / MAX_MEASURE: none.

    A measured value (> 0) outside [min, max] is out of range; values above MAX_MEASURE
    (only a replay file can hold them) always are.
    """

    minimum: tuple[int, int, int, int] = (0, 0, 0, 0)
    maximum: tuple[int, int, int, int] = (MAX_MEASURE,) * 4

    @property
    def any(self) -> bool:
        return self != MachineLimits()


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    chutes: tuple[int, ...]
    overflow: tuple[int, ...]
    cutoff_min: int  # minutes after local midnight, -1 for none


@dataclass(frozen=True, slots=True)
class SortPlan:
    """A sort plan checked against the machine."""

    name: str
    path: str
    machine_chutes: frozenset[int]
    max_chute: int
    functions: dict[Reason, int]
    max_recirculations: int
    balance: Literal["round_robin", "least_loaded"]
    destinations: tuple[Destination, ...]
    rules: tuple[Rule, ...]
    regexes: tuple[re.Pattern[str], ...]
    warnings: tuple[Problem, ...] = ()
    size_classes: tuple[SizeClass, ...] = ()
    machine_limits: MachineLimits = MachineLimits()

    def destination_index(self, name: str) -> int:
        for i, d in enumerate(self.destinations):
            if d.name == name:
                return i
        return -1


def parse_chute_list(spec: str | list[int]) -> set[int]:
    """`"1-240"`, `"1-100,200-240"` or a list of numbers -> the set of chutes."""
    if isinstance(spec, list):
        out = set(spec)
    else:
        out = set()
        for raw in spec.split(","):
            part = raw.strip()
            m = _RANGE_RE.match(part)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if lo > hi:
                    raise ValueError(f"range {part!r} runs backwards")
                # Checked before building the range: "1-2400000000" is a typo, not a plan.
                if hi > MAX_CHUTE_NUMBER:
                    raise ValueError(f"range {part!r}: chute numbers are 1..{MAX_CHUTE_NUMBER}")
                out.update(range(lo, hi + 1))
            elif _EXACT_RE.match(part):
                out.add(int(part))
            else:
                raise ValueError(f"{part!r} is not a chute number or range a-b")
    if not out:
        raise ValueError("the machine has no chutes")
    if any(c < 1 or c > MAX_CHUTE_NUMBER for c in out):
        raise ValueError(f"chute numbers are 1..{MAX_CHUTE_NUMBER} (register map 2000+n)")
    return out


def parse_letter_set(patterns: list[str], iso: bool = False) -> LetterSet:
    """Globs over two-letter codes; `!` negates. Only negations means 'all but these'.
    With `iso`, a code without wildcards must be an officially assigned ISO 3166-1 alpha-2
    code: a typo like "UK" (GB) or "EL" (GR) would otherwise silently match nothing."""
    every = [chr(65 + i // 26) + chr(65 + i % 26) for i in range(ALPHA2)]
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
        hits = {i for i, code in enumerate(every) if fnmatch.fnmatchcase(code, body)}
        if neg:
            negative |= hits
        else:
            has_positive = True
            positive |= hits
    base = positive if has_positive else set(range(ALPHA2))
    return LetterSet(frozenset(base - negative))


def _cutoff_minutes(text: str | None) -> int:
    if text is None:
        return -1
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


_M = TypeVar("_M", bound=BaseModel)


def _section(
    model: type[_M], data: Any, prefix: str, file: str, problems: list[Problem]
) -> _M | None:
    """Validate one part of the plan, so a typo in one rule hides nothing elsewhere."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(validation_problems(file, exc, prefix))
        return None


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


def build_plan(data: dict[str, Any], file: str = "<plan>") -> SortPlan:
    """Validate a plan given as TOML data; raise ConfigError listing every problem."""
    problems: list[Problem] = []

    def problem(key: str, message: str) -> None:
        problems.append(Problem(file, key, message))

    def table(name: str, default: Any = None) -> Any:
        value = data.get(name, default)
        return value if isinstance(value, dict) else None

    def array(name: str) -> list[Any]:
        value = data.get(name, [])
        return value if isinstance(value, list) else []

    # The top level first, then every table on its own: a typo in one rule must not hide
    # an unknown chute in another (each problem once, in file order).
    top = _section(PlanModel, data, "", file, problems)
    if top is not None and top.version != PLAN_VERSION:
        problem("version", _version_message(top.version))
    machine_raw, functions_raw, options_raw = (
        table("machine"),
        table("functions"),
        table("options", {}),
    )
    machine_model = (
        _section(MachineModel, machine_raw, "machine", file, problems) if machine_raw else None
    )
    functions_model = (
        _section(FunctionsModel, functions_raw, "functions", file, problems)
        if functions_raw is not None
        else None
    )
    options = (
        _section(OptionsModel, options_raw, "options", file, problems)
        if options_raw is not None
        else None
    )
    raw_destinations = array("destination")
    destination_models = [
        _section(DestinationModel, d, f"destination[{i}]", file, problems)
        if isinstance(d, dict)
        else None
        for i, d in enumerate(raw_destinations)
    ]
    class_models = [
        _section(SizeClassModel, c, f"size_class[{i}]", file, problems)
        if isinstance(c, dict)
        else None
        for i, c in enumerate(array("size_class"))
    ]
    rule_models = [
        _section(RuleModel, r, f"rule[{i}]", file, problems) if isinstance(r, dict) else None
        for i, r in enumerate(array("rule"))
    ]

    machine: set[int] = set()
    if machine_model is not None:
        try:
            machine = parse_chute_list(machine_model.chutes)
        except ValueError as exc:
            problem("machine.chutes", str(exc))

    limits = MachineLimits()
    if machine_model is not None:
        limits = _machine_limits(machine_model, problem)

    functions: dict[Reason, int] = {}
    for reason in FUNCTION_REASONS:
        if functions_model is None:
            break
        chute = getattr(functions_model, reason.word)
        if chute is None:
            continue  # an optional function chute the plan leaves out
        if machine and chute not in machine:
            problem(f"functions.{reason.word}", f"chute {chute} does not exist on the machine")
        functions[reason] = chute
    for reason, stand_in in OPTIONAL_FUNCTIONS.items():
        if reason not in functions and stand_in in functions:
            functions[reason] = functions[stand_in]

    size_classes: list[SizeClass] = []
    class_index: dict[str, int] = {}
    raw_class_names = {c.get("name") for c in array("size_class") if isinstance(c, dict)}
    for i, sc in enumerate(class_models):
        if sc is None:
            continue
        if sc.name in class_index:
            problem(f"size_class[{i}].name", f"duplicate size class {sc.name!r}")
            continue
        if len(size_classes) == MAX_SIZE_CLASSES:
            problem(f"size_class[{i}]", f"more than {MAX_SIZE_CLASSES} size classes")
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

    destinations: list[Destination] = []
    names: dict[str, int] = {}
    # Names of destinations that failed validation still exist for the rules' sake.
    raw_names = {
        d["name"]
        for d in raw_destinations
        if isinstance(d, dict) and isinstance(d.get("name"), str)
    }  # a name of the wrong type (a list: unhashable) is reported by its own table's check
    for i, d in enumerate(destination_models):
        if d is None:
            continue
        key = f"destination[{i}]"
        if d.name in names:
            problem(f"{key}.name", f"duplicate destination {d.name!r}")
        names.setdefault(d.name, i)
        if not d.chutes and not d.overflow:
            problem(f"{key}.chutes", f"destination {d.name!r} has no chutes")
        for field_name, chutes in (("chutes", d.chutes), ("overflow", d.overflow)):
            for j, c in enumerate(chutes):
                if machine and c not in machine:
                    problem(f"{key}.{field_name}[{j}]", f"chute {c} does not exist on the machine")
        destinations.append(
            Destination(d.name, tuple(d.chutes), tuple(d.overflow), _cutoff_minutes(d.cutoff))
        )

    rules, regexes = _build_rules(
        rule_models, names, raw_names, class_index, raw_class_names, problem
    )

    if problems:
        raise ConfigError(problems)
    assert top is not None
    assert options is not None
    all_chutes = set(machine) | set(functions.values())
    return SortPlan(
        name=top.name,
        path=file,
        machine_chutes=frozenset(machine),
        max_chute=max(all_chutes) if all_chutes else 0,
        functions=functions,
        max_recirculations=options.max_recirculations,
        balance=options.balance,
        destinations=tuple(destinations),
        rules=tuple(rules),
        regexes=tuple(regexes),
        warnings=(
            *lint_rules(rules, destinations, file),
            *lint_postcode_formats(rules, file),
            *lint_sizes(size_classes, limits, functions_model, file),
        ),
        size_classes=tuple(size_classes),
        machine_limits=limits,
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


def _build_rules(
    rule_models: list[RuleModel | None],
    names: dict[str, int],
    raw_names: set[Any],
    class_index: dict[str, int],
    raw_class_names: set[Any],
    problem: Callable[[str, str], None],
) -> tuple[list[Rule], list[re.Pattern[str]]]:
    """The [[rule]] tables, in order; every problem reported with its rule and key."""
    rules: list[Rule] = []
    regexes: list[re.Pattern[str]] = []
    for i, r in enumerate(rule_models):
        if r is None:
            continue
        key = f"rule[{i}]"
        dest = names.get(r.destination, -1)
        if dest < 0 and r.destination not in raw_names:
            problem(f"{key}.destination", f"no destination named {r.destination!r}")
        terms = _postcode_terms(r.postcode, key, problem)
        pattern, bit = _barcode_regex(r.barcode, len(regexes), key, problem)
        if pattern is not None:
            regexes.append(pattern)
        sets: dict[str, LetterSet | None] = {"s10_service": None, "country": None, "origin": None}
        for field_name in sets:
            patterns = getattr(r, field_name)
            if patterns is not None:
                try:
                    sets[field_name] = parse_letter_set(patterns, iso=field_name != "s10_service")
                except ValueError as exc:
                    problem(f"{key}.{field_name}", str(exc))
        classes: frozenset[int] | None = None
        if r.size_class is not None:
            for j, class_name in enumerate(r.size_class):
                if class_name not in class_index and class_name not in raw_class_names:
                    known = ", ".join(repr(n) for n in class_index) or "none defined"
                    problem(
                        f"{key}.size_class[{j}]",
                        f"no size class named {class_name!r} ([[size_class]]: {known})",
                    )
            classes = frozenset(class_index[n] for n in r.size_class if n in class_index)
        rules.append(
            Rule(
                i,
                dest,
                terms,
                pattern,
                bit,
                sets["s10_service"],
                sets["country"],
                sets["origin"],
                classes,
            )
        )
    return rules, regexes


def _postcode_terms(
    written: list[str] | None, key: str, problem: Callable[[str, str], None]
) -> tuple[PostcodeTerm, ...] | None:
    if written is None:
        return None
    parsed = []
    for j, text in enumerate(written):
        try:
            parsed.append(parse_postcode_term(text))
        except ValueError as exc:
            problem(f"{key}.postcode[{j}]", str(exc))
    return tuple(parsed)


def _barcode_regex(
    written: str | None, bit: int, key: str, problem: Callable[[str, str], None]
) -> tuple[re.Pattern[str] | None, int]:
    """The compiled pattern and its bit in the per-item mask; (None, -1) without one."""
    if written is None:
        return None, -1
    try:
        pattern = re.compile(written)
    except (re.error, OverflowError, RecursionError) as exc:
        # OverflowError: a{99999999999}; RecursionError: thousands of nested groups.
        problem(f"{key}.barcode", f"regular expression does not compile: {exc}")
        return None, -1
    if bit >= MAX_REGEX_RULES:
        problem(f"{key}.barcode", f"more than {MAX_REGEX_RULES} barcode rules")
    return pattern, bit


def _machine_limits(model: MachineModel, problem: Callable[[str, str], None]) -> MachineLimits:
    """The [machine] table's size and weight limits; a minimum above its maximum is wrong."""
    minimum: list[int] = []
    maximum: list[int] = []
    for measure in MEASURES:
        lo: int | None = getattr(model, f"min_{measure}")
        hi: int | None = getattr(model, f"max_{measure}")
        if lo is not None and hi is not None and lo > hi:
            problem(
                f"machine.min_{measure}",
                f"{lo} is above machine.max_{measure} = {hi}: no item could be sorted",
            )
        minimum.append(lo or 0)
        maximum.append(hi or MAX_MEASURE)
    return MachineLimits(
        (minimum[0], minimum[1], minimum[2], minimum[3]),
        (maximum[0], maximum[1], maximum[2], maximum[3]),
    )


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
        mine = c.limits()
        # An earlier class takes every item this one fits when each limit the earlier
        # class sets is at least this class's limit on the same value.
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
        if earlier is not None:
            warnings.append(
                Problem(
                    file,
                    f"size_class[{c.index}]",
                    f"no item can be {c.name!r}: size_class[{earlier.index}] "
                    f"({earlier.name}) comes first and takes every item that fits it",
                )
            )
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


def _range_holds(term: PostcodeTerm, norm: str) -> bool:
    return len(norm) == term.chars and norm.isdigit() and term.first <= norm <= term.last


def _term_within(inner: PostcodeTerm, outer: PostcodeTerm) -> bool:
    """Every postcode `inner` matches, `outer` matches too."""
    if outer.kind == TermKind.EXACT:
        return inner.kind == TermKind.EXACT and inner.text == outer.text
    if outer.kind == TermKind.PREFIX:
        if inner.kind == TermKind.RANGE:
            k = outer.chars
            return k <= inner.chars and inner.first[:k] == inner.last[:k] == outer.text
        return inner.text.startswith(outer.text)
    if inner.kind == TermKind.EXACT:
        return _range_holds(outer, inner.text)
    if inner.kind == TermKind.PREFIX:
        return False  # a prefix matches postcodes of every length; a range, of one
    return inner.chars == outer.chars and outer.first <= inner.first and inner.last <= outer.last


def _terms_overlap(a: PostcodeTerm, b: PostcodeTerm) -> bool:
    """Some postcode matches both."""
    if a.kind > b.kind:
        a, b = b, a  # EXACT < PREFIX < RANGE: fewer cases below
    if a.kind == TermKind.EXACT:
        if b.kind == TermKind.EXACT:
            return a.text == b.text
        if b.kind == TermKind.PREFIX:
            return a.text.startswith(b.text)
        return _range_holds(b, a.text)
    if a.kind == TermKind.PREFIX:
        if b.kind == TermKind.PREFIX:
            return a.text.startswith(b.text) or b.text.startswith(a.text)
        k = a.chars
        if k > b.chars or not a.text.isdigit():
            return False
        return b.first <= a.text + "9" * (b.chars - k) and a.text + "0" * (b.chars - k) <= b.last
    return a.chars == b.chars and a.first <= b.last and b.first <= a.last


def _covers(q: Rule, r: Rule) -> bool:
    """Rule q matches every item rule r matches (so r, after q, never gets one)."""
    if q.postcode is not None and (
        r.postcode is None
        or not all(any(_term_within(t, u) for u in q.postcode) for t in r.postcode)
    ):
        return False
    if q.barcode is not None and (r.barcode is None or r.barcode.pattern != q.barcode.pattern):
        return False
    for field_name in ("s10_service", "country", "origin"):
        qs: LetterSet | None = getattr(q, field_name)
        rs: LetterSet | None = getattr(r, field_name)
        if qs is not None and (rs is None or not rs.allowed <= qs.allowed):
            return False
    return q.size_classes is None or (
        r.size_classes is not None and r.size_classes <= q.size_classes
    )


def lint_rules(rules: list[Rule], destinations: list[Destination], file: str) -> list[Problem]:
    """Warnings, not errors: rules that can never match, postcodes two destinations share.

    "Never matches" is decided conservatively: an earlier rule whose every condition holds
    for all the later rule's items (regular expressions only when they are identical).
    """
    warnings: list[Problem] = []

    def name(rule: Rule) -> str:
        return destinations[rule.destination].name if rule.destination >= 0 else "?"

    shadowed: set[int] = set()
    for i, r in enumerate(rules):
        shadow = next((q for q in rules[:i] if _covers(q, r)), None)
        if shadow is not None:
            shadowed.add(i)
            warnings.append(
                Problem(
                    file,
                    f"rule[{i}]",
                    f"can never match: rule[{shadow.index}] ({name(shadow)}) comes first "
                    "and matches everything it does",
                )
            )
            continue
        for q in rules[:i]:
            if (
                q.index in shadowed
                or q.destination == r.destination
                or q.postcode is None
                or r.postcode is None
                or (
                    q.country is not None
                    and r.country is not None
                    and not q.country.allowed & r.country.allowed
                )
            ):
                continue  # the same digits in two countries are two places
            pairs = [(u, t) for u in q.postcode for t in r.postcode if _terms_overlap(u, t)]
            if pairs:
                u, t = pairs[0]
                warnings.append(
                    Problem(
                        file,
                        f"rule[{i}].postcode",
                        f"{t.written.strip()} overlaps {u.written.strip()} of "
                        f"rule[{q.index}] ({name(q)}); "
                        f"rule[{q.index}] wins where both match",
                    )
                )
    return warnings


_CODES = list(_LETTERS)  # index -> two letters
# A rule naming more countries than this is a "rest of the world" rule: not worth checking.
_MAX_FORMAT_CHECKED_COUNTRIES = 40


def lint_postcode_formats(rules: list[Rule], file: str) -> list[Problem]:
    """Warnings for postcode patterns no postcode of the rule's countries can match (a
    5-digit range on a GB rule), where every one of those countries' forms is known."""
    warnings: list[Problem] = []
    for r in rules:
        if r.postcode is None or r.country is None:
            continue
        countries = sorted(_CODES[i] for i in r.country.allowed)
        if not countries or len(countries) > _MAX_FORMAT_CHECKED_COUNTRIES:
            continue
        if any(c not in POSTCODE_FORMATS for c in countries):
            continue
        for j, term in enumerate(r.postcode):
            if any(term_fits_format(term, f) for c in countries for f in POSTCODE_FORMATS[c]):
                continue
            forms = "; ".join(f"{c} {' '.join(POSTCODE_FORMATS[c])}" for c in countries)
            warnings.append(
                Problem(
                    file,
                    f"rule[{r.index}].postcode[{j}]",
                    f"{term.written!r} can never match a postcode of {', '.join(countries)} "
                    f"(forms without spaces: {forms}; 9 digit, A letter, X either)",
                )
            )
    return warnings


I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
B8 = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class CompiledPlan:
    """A SortPlan as flat arrays for the numba kernel (CSR layout for the lists)."""

    plan: SortPlan
    # rules
    rule_dest: I32
    rule_pc_ptr: I32  # terms of rule r: pc_*[rule_pc_ptr[r]:rule_pc_ptr[r+1]]; -1 = no condition
    rule_has_pc: B8
    pc_lo: I64  # sorter.postcode.PostcodeTerm's lo/hi/chars, and its kind
    pc_hi: I64
    pc_chars: I32
    pc_kind: I32
    rule_regex_bit: I32
    rule_has_service: B8
    rule_service: B8  # [rules, 676]
    rule_has_country: B8
    rule_country: B8  # [rules, 676]: destination countries
    rule_has_origin: B8
    rule_origin: B8  # [rules, 676]
    rule_size_mask: I64  # bit c: size class c accepted; 0 = no size condition
    # sizes
    class_limits: I64  # [classes, 5]: maxima in CLASS_LIMITS order, 0 = no limit
    machine_limits: I64  # minima then maxima, MEASURES order
    # destinations
    dest_ptr: I32
    dest_chutes: I32
    over_ptr: I32
    over_chutes: I32
    dest_cutoff_min: I32
    # functions, indexed by Reason
    function_chute: I32
    max_recirculations: int
    least_loaded: bool
    n_chute_slots: int  # size of per-chute state arrays: max chute number + 1


def compile_plan(plan: SortPlan) -> CompiledPlan:
    n_rules = len(plan.rules)
    rule_dest = np.array([r.destination for r in plan.rules], dtype=np.int32)
    ptr = [0]
    lo: list[int] = []
    hi: list[int] = []
    chars: list[int] = []
    kind: list[int] = []
    for r in plan.rules:
        for t in r.postcode or ():
            lo.append(t.lo)
            hi.append(t.hi)
            chars.append(t.chars)
            kind.append(t.kind)
        ptr.append(len(lo))
    service = np.zeros((max(n_rules, 1), ALPHA2), dtype=np.bool_)
    country = np.zeros((max(n_rules, 1), ALPHA2), dtype=np.bool_)
    origin = np.zeros((max(n_rules, 1), ALPHA2), dtype=np.bool_)
    for i, r in enumerate(plan.rules):
        for table, letters in ((service, r.s10_service), (country, r.country), (origin, r.origin)):
            if letters is not None:
                table[i, list(letters.allowed)] = True

    def csr(lists: list[tuple[int, ...]]) -> tuple[I32, I32]:
        p = np.zeros(len(lists) + 1, dtype=np.int32)
        flat: list[int] = []
        for i, items in enumerate(lists):
            flat.extend(items)
            p[i + 1] = len(flat)
        return p, np.array(flat, dtype=np.int32)

    dest_ptr, dest_chutes = csr([d.chutes for d in plan.destinations])
    over_ptr, over_chutes = csr([d.overflow for d in plan.destinations])
    size_mask = [
        0 if r.size_classes is None else sum(1 << c for c in r.size_classes) for r in plan.rules
    ]
    class_limits = np.array([c.limits() for c in plan.size_classes], dtype=np.int64).reshape(
        len(plan.size_classes), len(CLASS_LIMITS)
    )
    limits = plan.machine_limits
    function_chute = np.zeros(len(Reason), dtype=np.int32)
    for reason, chute in plan.functions.items():
        function_chute[int(reason)] = chute
    return CompiledPlan(
        plan=plan,
        rule_dest=rule_dest,
        rule_pc_ptr=np.array(ptr, dtype=np.int32),
        rule_has_pc=np.array([r.postcode is not None for r in plan.rules], dtype=np.bool_),
        pc_lo=np.array(lo, dtype=np.int64),
        pc_hi=np.array(hi, dtype=np.int64),
        pc_chars=np.array(chars, dtype=np.int32),
        pc_kind=np.array(kind, dtype=np.int32),
        rule_regex_bit=np.array([r.regex_bit for r in plan.rules], dtype=np.int32),
        rule_has_service=np.array([r.s10_service is not None for r in plan.rules], np.bool_),
        rule_service=service,
        rule_has_country=np.array([r.country is not None for r in plan.rules], np.bool_),
        rule_country=country,
        rule_has_origin=np.array([r.origin is not None for r in plan.rules], np.bool_),
        rule_origin=origin,
        rule_size_mask=np.array(size_mask, dtype=np.int64),
        class_limits=class_limits,
        machine_limits=np.array([*limits.minimum, *limits.maximum], dtype=np.int64),
        dest_ptr=dest_ptr,
        dest_chutes=dest_chutes,
        over_ptr=over_ptr,
        over_chutes=over_chutes,
        dest_cutoff_min=np.array([d.cutoff_min for d in plan.destinations], dtype=np.int32),
        function_chute=function_chute,
        max_recirculations=plan.max_recirculations,
        least_loaded=plan.balance == "least_loaded",
        n_chute_slots=plan.max_chute + 1,
    )
