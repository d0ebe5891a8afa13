"""The checked sort plan as Python objects (docs/interfaces.md section 6), and its limits.

`SortPlan` is what every table's validation builds and what the reference decision reads;
`sorter.plan.compiled` turns it into the kernel's arrays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from sorter.config import Problem
from sorter.ports import Reason
from sorter.postcode import PostcodeTerm

__all__ = [
    "ALPHA2",
    "CLASS_LIMITS",
    "LETTER_CODES",
    "MAX_CHUTE_CAPACITY_ITEMS",
    "MAX_CHUTE_NUMBER",
    "MAX_CLEAR_INTERVAL_MIN",
    "MAX_MEASURE",
    "MAX_REGEX_RULES",
    "MAX_SIZE_CLASSES",
    "MEASURES",
    "PLAN_VERSION",
    "Balance",
    "Destination",
    "LetterSet",
    "MachineLimits",
    "Rule",
    "SizeClass",
    "SortPlan",
    "Zone",
    "letters_index",
]

PLAN_VERSION: Final = 2
ALPHA2: Final = 26 * 26  # size of the two-letter code tables (S10 service, ISO country)
MAX_REGEX_RULES: Final = 64  # barcode regex results travel to the kernel as one uint64 bit mask
MAX_CHUTE_NUMBER: Final = 999  # the register map's chute status block is 2000 + n
# [options] of the plan optimiser: a chute is a cage or a roller bed, not a warehouse, and
# a chute emptied less than once a day is not emptied on a schedule.
MAX_CHUTE_CAPACITY_ITEMS: Final = 100_000
MAX_CLEAR_INTERVAL_MIN: Final = 1440
MAX_MEASURE: Final = 65_535  # dimensions and weight arrive in 16-bit registers
MAX_SIZE_CLASSES: Final = 32  # a rule's size classes travel to the kernel as one bit mask
# The PLC's measurements, in the order of the request slot.
MEASURES: Final = ("length_mm", "width_mm", "height_mm", "weight_g")
# What a size class can limit: the PLC's measurements, and the longest side whichever way
# the item lies on the belt ("any side over 1200 mm").
CLASS_LIMITS: Final = ("length_mm", "width_mm", "height_mm", "side_mm", "weight_g")

LETTER_CODES: Final = tuple(chr(65 + i // 26) + chr(65 + i % 26) for i in range(ALPHA2))
"""Index -> two upper-case letters, "AA" to "ZZ"."""
_LETTERS: Final = {code: i for i, code in enumerate(LETTER_CODES)}

Balance = Literal["round_robin", "least_loaded"]


def letters_index(code: str) -> int:
    """Two upper-case letters -> 0..675; anything else -> -1."""
    return _LETTERS.get(code, -1)


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
    # For the plan optimiser (docs/optimiser.md, "Layout"); the daemon does not use them.
    min_chutes: int | None = None
    max_chutes: int | None = None
    fixed: tuple[int, ...] = ()  # chutes that stay with this destination


@dataclass(frozen=True, slots=True)
class Zone:
    """Chutes one team of operators empties (plan optimiser, docs/optimiser.md)."""

    name: str
    chutes: tuple[int, ...]
    operators: int = 1
    clear_interval_min: int | None = None  # None: [options] clear_interval_min


@dataclass(frozen=True, slots=True)
class SortPlan:
    """A sort plan checked against the machine."""

    name: str
    path: str
    machine_chutes: frozenset[int]
    max_chute: int
    functions: dict[Reason, int]
    max_recirculations: int
    balance: Balance
    destinations: tuple[Destination, ...]
    rules: tuple[Rule, ...]
    regexes: tuple[re.Pattern[str], ...]
    warnings: tuple[Problem, ...] = ()
    size_classes: tuple[SizeClass, ...] = ()
    machine_limits: MachineLimits = MachineLimits()
    # [options] for the plan optimiser (docs/optimiser.md); None when the plan leaves them out.
    chute_capacity_items: int | None = None
    clear_interval_min: int | None = None
    # Layout for the optimiser (docs/optimiser.md, "Layout"): the chutes in the order an item
    # passes them (() = ascending numbers), one lap's seconds, zones, kept together/apart.
    loop_order: tuple[int, ...] = ()
    lap_s: float | None = None
    zones: tuple[Zone, ...] = ()
    together: tuple[tuple[str, ...], ...] = ()
    apart: tuple[tuple[str, ...], ...] = ()

    def destination_index(self, name: str) -> int:
        for i, d in enumerate(self.destinations):
            if d.name == name:
                return i
        return -1
