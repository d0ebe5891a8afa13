"""The numba decision core: arrays in, arrays out, no I/O, no Python objects.

`sorter.reference` holds a plain-Python implementation of the same rules over `SortPlan`
objects; a hypothesis test holds the two equal. Both follow this order, first hit wins:

1. the item already recirculated `max_recirculations` times -> max_recirc chute;
2. a measured dimension or weight beyond the machine's limits -> out_of_range (a chute
   that cannot take the item is no choice, whatever else is known about it);
3. a reason found before the kernel (no_read, invalid_code, multi_read_conflict,
   customs_hold, timeout) -> that function chute;
4. the first rule whose every condition matches gives the destination, else no_rule;
5. the destination's cut-off has passed -> after_cutoff;
6. a chute of the destination that is not full, disabled or in fault (round robin or least
   loaded), else the first usable overflow chute, else no_chute.

Dimensions and weight are 0 when the line did not measure them: 0 is never out of range,
and a size class that limits an unmeasured value is unknown (no size rule matches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

from sorter.plan import ALPHA2, CLASS_LIMITS, MEASURES, CompiledPlan
from sorter.ports import ChuteFlag, Reason
from sorter.postcode import TermKind

__all__ = [
    "CHUTE_UNUSABLE",
    "ChuteState",
    "ItemFeatures",
    "Kernel",
    "decide_batch",
    "decide_one",
    "match_destination",
    "out_of_range",
    "size_class",
]

# A chute with any of these bits set takes no item (a numpy scalar: numba folds it in).
CHUTE_UNUSABLE = np.uint8(ChuteFlag.FULL | ChuteFlag.DISABLED | ChuteFlag.FAULT)

_OK = int(Reason.OK)
_NO_RULE = int(Reason.NO_RULE)
_NO_CHUTE = int(Reason.NO_CHUTE)
_MAX_RECIRC = int(Reason.MAX_RECIRC)
_AFTER_CUTOFF = int(Reason.AFTER_CUTOFF)
_OUT_OF_RANGE = int(Reason.OUT_OF_RANGE)
_N_LIMITS = len(CLASS_LIMITS)


# The plan travels to the kernel as one int64 "blob" (a header of segment offsets, then
# the segments) and one uint8 table: numba's dispatcher costs ~0.1 us per array argument,
# and 24 plan arrays made a single live decision cost 3 us before any work was done.
(
    _RULE_DEST,
    _RULE_PC_PTR,
    _RULE_CONDITIONS,
    _PC_LO,
    _PC_HI,
    _PC_CHARS,
    _PC_KIND,
    _RULE_REGEX_BIT,
    _DEST_PTR,
    _DEST_CHUTES,
    _OVER_PTR,
    _OVER_CHUTES,
    _DEST_CUTOFF,
    _FUNCTION_CHUTE,
    _RULE_SIZE_MASK,
    _CLASS_LIMITS,
    _MACHINE_LIMITS,
    _COUNTRY_START,
    _COUNTRY_END,
    _COUNTRY_RULES,
    _UNMEASURED_CLASS,
    _N_SEGMENTS,
) = range(22)

# Which conditions a rule has, as bits of one word: one load per rule and item, not four.
_HAS_POSTCODE, _HAS_SERVICE, _HAS_COUNTRY, _HAS_SIZE, _HAS_ORIGIN = 1, 2, 4, 8, 16
_EXACT, _PREFIX = TermKind.EXACT, TermKind.PREFIX
_UNKNOWN_COUNTRY = ALPHA2  # the last of country_rules' lists


def rule_conditions(plan: CompiledPlan) -> npt.NDArray[np.int64]:
    conditions = np.zeros(plan.rule_dest.shape[0], dtype=np.int64)
    conditions[plan.rule_has_pc] |= _HAS_POSTCODE
    conditions[plan.rule_has_service] |= _HAS_SERVICE
    conditions[plan.rule_has_country] |= _HAS_COUNTRY
    conditions[plan.rule_size_mask != 0] |= _HAS_SIZE
    conditions[plan.rule_has_origin] |= _HAS_ORIGIN
    return conditions


def country_rules(
    plan: CompiledPlan,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(start, end, rules): for each destination country (index 676: unknown, none), the
    rules an item going there walks, in plan order: the rules with a country condition
    that holds for it merged with the rules without one (which every item sees). An item
    walks its own country's rules, not the export lanes of every other country, in one
    plain loop. Countries no rule names share the one list of rules without a country,
    so a plan of many such rules costs that list once, not once per country."""
    n_rules = plan.rule_dest.shape[0]
    has = plan.rule_has_country
    shared = np.flatnonzero(~has).astype(np.int64)
    start = np.zeros(ALPHA2 + 1, dtype=np.int64)
    end = np.full(ALPHA2 + 1, shared.shape[0], dtype=np.int64)
    lists: list[npt.NDArray[np.int64]] = [shared]
    offset = shared.shape[0]
    for c in range(ALPHA2):  # the unknown country (ALPHA2) matches no country condition
        own = np.flatnonzero(has & plan.rule_country[:n_rules, c])
        if own.shape[0] == 0:
            continue
        merged = np.union1d(own, shared).astype(np.int64)  # sorted: plan order
        lists.append(merged)
        start[c], end[c] = offset, offset + merged.shape[0]
        offset += merged.shape[0]
    return start, end, np.concatenate(lists)


def unmeasured_class(plan: CompiledPlan) -> int:
    """size_class of an item the line did not measure at all: the first class if it limits
    nothing (a catch-all), else unknown (-1), as size_class walks the classes. Known per
    plan, so that a size rule costs unmeasured items (most lines have no dimensioner) one
    load instead of a call per item."""
    limits = plan.class_limits
    return 0 if limits.shape[0] and not (limits[0] > 0).any() else -1


def pack_plan(plan: CompiledPlan) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """(blob, tables): tables[0] are the rules' S10 service sets, tables[1] their origins
    (their destination countries travel as country_rules' lists)."""
    segments: list[npt.NDArray[Any]] = [
        plan.rule_dest,
        plan.rule_pc_ptr,
        rule_conditions(plan),
        plan.pc_lo,
        plan.pc_hi,
        plan.pc_chars,
        plan.pc_kind,
        plan.rule_regex_bit,
        plan.dest_ptr,
        plan.dest_chutes,
        plan.over_ptr,
        plan.over_chutes,
        plan.dest_cutoff_min,
        plan.function_chute,
        plan.rule_size_mask,
        plan.class_limits.reshape(-1),
        plan.machine_limits,
        *country_rules(plan),
        np.array([unmeasured_class(plan)], dtype=np.int64),
    ]
    assert len(segments) == _N_SEGMENTS
    header = np.zeros(_N_SEGMENTS + 1, dtype=np.int64)
    offset = _N_SEGMENTS + 1
    for k, seg in enumerate(segments):
        header[k] = offset
        offset += seg.shape[0]
    header[_N_SEGMENTS] = offset
    blob = np.concatenate([header, *(np.asarray(seg, dtype=np.int64) for seg in segments)])
    tables = np.stack([plan.rule_service, plan.rule_origin]).astype(np.uint8)
    return blob, tables


# `_nrt=False` on every kernel function: the kernels never allocate, and with numba's
# runtime on, each array passed between them gets reference-count operations that the
# refcount pruning pass does not remove across calls (numba issue 2345): 26 ns an item
# instead of 1 ns on the no-read path, 12 M/s instead of 38 M/s on the traffic mix. It is
# an internal numba option; numba is pinned below 0.70 and the tests exercise every path.

_F = TypeVar("_F", bound=Callable[..., Any])


def _kernel(inline: bool = False) -> Callable[[_F], _F]:
    def wrap(fn: _F) -> _F:
        dispatcher = njit(  # type: ignore[call-overload]  # _nrt is not in numba's stubs
            fn,
            cache=True,
            nogil=True,
            _nrt=False,
            error_model="numpy",  # no Python exception machinery around integer division
            inline="always" if inline else "never",
        )
        return cast(_F, dispatcher)

    return wrap


@_kernel(inline=True)
def _fit(value: int, limit: int) -> int:
    """0 within the limit (or no limit), 1 not measured, 2 beyond the limit."""
    if limit <= 0:
        return 0
    if value <= 0:
        return 1
    return 2 if value > limit else 0


# size_class and out_of_range are not inlined: they run only for measured items on plans
# that use sizes, and inlined they slowed every other item down by a few per cent.
@_kernel()
def size_class(length_mm: int, width_mm: int, height_mm: int, weight_g: int, blob: Any) -> int:
    """The first size class the item fits, -1 when none does or it is not known."""
    side_mm = max(length_mm, width_mm, height_mm)
    for c, base in enumerate(range(blob[_CLASS_LIMITS], blob[_CLASS_LIMITS + 1], _N_LIMITS)):
        worst = max(
            _fit(length_mm, blob[base]),
            _fit(width_mm, blob[base + 1]),
            _fit(height_mm, blob[base + 2]),
            _fit(side_mm, blob[base + 3]),
            _fit(weight_g, blob[base + 4]),
        )
        if worst == 0:
            return c
        if worst == 1:
            return -1  # beyond no limit, but one that decides is unmeasured
    return -1


@_kernel(inline=True)
def _outside(value: int, low: int, high: int) -> bool:
    return value > 0 and (value < low or value > high)


@_kernel()
def out_of_range(length_mm: int, width_mm: int, height_mm: int, weight_g: int, blob: Any) -> bool:
    """A measured value outside the machine's [min, max]; 0 (not measured) never is."""
    o = blob[_MACHINE_LIMITS]
    return (
        _outside(length_mm, blob[o], blob[o + 4])
        or _outside(width_mm, blob[o + 1], blob[o + 5])
        or _outside(height_mm, blob[o + 2], blob[o + 6])
        or _outside(weight_g, blob[o + 3], blob[o + 7])
    )


@_kernel(inline=True)
def match_destination(  # noqa: C901, PLR0912  (numba kernel: branches compile to a loop)
    pc: int,
    pc_digits: int,
    service: int,
    country: int,
    origin: int,
    regex_mask: int,
    length_mm: int,
    width_mm: int,
    height_mm: int,
    weight_g: int,
    blob: Any,
    tables: Any,
) -> int:
    """Index of the destination of the first matching rule, -1 when none matches.

    `pc` is the postcode's code (sorter.postcode: negative when there is none or it is
    unusable), `pc_digits` its length when it is all digits, else 0."""
    # Plain offsets into the blob rather than slices of it: a slice is an array object
    # with a reference count, and ten of them per item halved the batch rate.
    o_dest = blob[_RULE_DEST]
    o_pc_ptr = blob[_RULE_PC_PTR]
    o_conditions = blob[_RULE_CONDITIONS]
    o_lo = blob[_PC_LO]
    o_hi = blob[_PC_HI]
    o_chars = blob[_PC_CHARS]
    o_kind = blob[_PC_KIND]
    o_bit = blob[_RULE_REGEX_BIT]
    o_size = blob[_RULE_SIZE_MASK]
    o_rules = blob[_COUNTRY_RULES]
    key = country if country >= 0 else _UNKNOWN_COUNTRY
    cls = -2  # the item's size class, found when the first rule asks for it
    # Only the rules that can take an item going to its country (country_rules), in plan
    # order.
    for k in range(blob[blob[_COUNTRY_START] + key], blob[blob[_COUNTRY_END] + key]):
        r = blob[o_rules + k]
        conditions = blob[o_conditions + r]
        # The one-load tests before the postcode lists.
        if conditions & _HAS_ORIGIN and (origin < 0 or not tables[1, r, origin]):
            continue
        if conditions & _HAS_SERVICE and (service < 0 or not tables[0, r, service]):
            continue
        bit = blob[o_bit + r]
        if bit >= 0 and (regex_mask >> bit) & 1 == 0:
            continue
        if conditions & _HAS_POSTCODE:
            hit = False
            if pc >= 0:
                for t in range(blob[o_pc_ptr + r], blob[o_pc_ptr + r + 1]):
                    kind = blob[o_kind + t]
                    if kind == _EXACT:
                        hit = pc == blob[o_lo + t]
                    elif kind == _PREFIX:
                        hit = (pc & blob[o_hi + t]) == blob[o_lo + t]
                    else:
                        hit = pc_digits == blob[o_chars + t] and (
                            blob[o_lo + t] <= pc <= blob[o_hi + t]
                        )
                    if hit:
                        break
            if not hit:
                continue
        if conditions & _HAS_SIZE:
            size_mask = blob[o_size + r]
            if cls == -2:
                if length_mm | width_mm | height_mm | weight_g:
                    cls = size_class(length_mm, width_mm, height_mm, weight_g, blob)
                else:
                    cls = blob[blob[_UNMEASURED_CLASS]]
            if cls < 0 or (size_mask >> cls) & 1 == 0:
                continue
        return int(blob[o_dest + r])
    return -1


@_kernel(inline=True)
def _pick(
    dest: int,
    blob: Any,
    ptr_seg: int,
    chutes_seg: int,
    flags: Any,
    load: Any,
    rr_next: Any,
    round_robin: bool,
    least_loaded: bool,
) -> int:
    o_ptr = blob[ptr_seg]
    o_chutes = blob[chutes_seg]
    start = blob[o_ptr + dest]
    n = blob[o_ptr + dest + 1] - start
    if n == 0:
        return -1
    if least_loaded:
        best = -1
        best_load = 0
        for i in range(n):
            c = blob[o_chutes + start + i]
            if flags[c] & CHUTE_UNUSABLE == 0 and (best < 0 or load[c] < best_load):
                best = c
                best_load = load[c]
        return int(best)
    # No modulo: integer division costs more than the rest of the pick together.
    i = rr_next[dest] if round_robin else 0
    if i >= n or i < 0:
        i = 0
    for _ in range(n):
        c = blob[o_chutes + start + i]
        i += 1
        if i == n:
            i = 0
        if flags[c] & CHUTE_UNUSABLE == 0:
            if round_robin:
                rr_next[dest] = i
            return int(c)
    return -1


# Over 60 lines like match_destination: a numba kernel inlined into decide_batch's loop,
# where every call a split would add costs on each item.
@_kernel(inline=True)
def decide_one(
    reason_in: int,
    pc: int,
    pc_digits: int,
    service: int,
    country: int,
    origin: int,
    regex_mask: int,
    recirculations: int,
    minute_of_day: int,
    dest_in: int,
    length_mm: int,
    width_mm: int,
    height_mm: int,
    weight_g: int,
    blob: Any,
    tables: Any,
    max_recirculations: int,
    least_loaded: bool,
    flags: Any,
    load: Any,
    rr_next: Any,
) -> tuple[int, int, int]:
    """(destination index or -1, chute, reason) for one item; updates rr_next and load."""
    o_function = blob[_FUNCTION_CHUTE]
    if recirculations >= max_recirculations:
        return -1, int(blob[o_function + _MAX_RECIRC]), _MAX_RECIRC
    # Unmeasured items (every item of a line without dimensioner and scale) skip the call.
    if (length_mm | width_mm | height_mm | weight_g) != 0 and out_of_range(
        length_mm, width_mm, height_mm, weight_g, blob
    ):
        return -1, int(blob[o_function + _OUT_OF_RANGE]), _OUT_OF_RANGE
    if reason_in != _OK:
        return -1, int(blob[o_function + reason_in]), reason_in
    # A destination the shipper pre-advised (manifest) comes before the rules.
    n_dest = blob[_DEST_CUTOFF + 1] - blob[_DEST_CUTOFF]
    if 0 <= dest_in < n_dest:
        dest = dest_in
    else:
        dest = match_destination(
            pc,
            pc_digits,
            service,
            country,
            origin,
            regex_mask,
            length_mm,
            width_mm,
            height_mm,
            weight_g,
            blob,
            tables,
        )
    if dest < 0:
        return -1, int(blob[o_function + _NO_RULE]), _NO_RULE
    cutoff = blob[blob[_DEST_CUTOFF] + dest]
    if cutoff >= 0 and minute_of_day >= cutoff:
        return dest, int(blob[o_function + _AFTER_CUTOFF]), _AFTER_CUTOFF
    chute = _pick(dest, blob, _DEST_PTR, _DEST_CHUTES, flags, load, rr_next, True, least_loaded)
    if chute < 0:
        chute = _pick(dest, blob, _OVER_PTR, _OVER_CHUTES, flags, load, rr_next, False, False)
    if chute < 0:
        return dest, int(blob[o_function + _NO_CHUTE]), _NO_CHUTE
    load[chute] += 1
    return dest, chute, _OK


@_kernel()
def decide_batch(
    reason_in: Any,
    pc: Any,
    pc_digits: Any,
    service: Any,
    country: Any,
    origin: Any,
    regex_mask: Any,
    recirculations: Any,
    minute_of_day: Any,
    dest_in: Any,
    measures: Any,
    blob: Any,
    tables: Any,
    max_recirculations: int,
    least_loaded: bool,
    flags: Any,
    load: Any,
    rr_next: Any,
    out_dest: Any,
    out_chute: Any,
    out_reason: Any,
) -> None:
    """decide_one over arrays of items, in order (round robin state carries across).

    `measures` is one [items, 4] array rather than four: each array argument holds
    registers through the whole inlined loop, and four of them cost about 10 % of the
    batch rate."""
    for i in range(reason_in.shape[0]):
        d, c, r = decide_one(
            reason_in[i],
            pc[i],
            pc_digits[i],
            service[i],
            country[i],
            origin[i],
            regex_mask[i],
            recirculations[i],
            minute_of_day[i],
            dest_in[i],
            measures[i, 0],
            measures[i, 1],
            measures[i, 2],
            measures[i, 3],
            blob,
            tables,
            max_recirculations,
            least_loaded,
            flags,
            load,
            rr_next,
        )
        out_dest[i] = d
        out_chute[i] = c
        out_reason[i] = r


class ItemFeatures(NamedTuple):
    """What the kernel needs of one item, extracted from its labels in Python. (A
    NamedTuple: built once per item, five times cheaper than a frozen dataclass.)"""

    reason_in: int = _OK
    pc: int = -1
    pc_digits: int = 0
    service: int = -1  # S10 service indicator, two-letter index
    country: int = -1  # destination country
    origin: int = -1  # where the item was posted
    regex_mask: int = 0
    recirculations: int = 0
    minute_of_day: int = -1
    destination: int = -1  # pre-advised by a manifest: skips the rules
    # From the sort request; 0 = not measured (MEASURES order).
    length_mm: int = 0
    width_mm: int = 0
    height_mm: int = 0
    weight_g: int = 0


@dataclass(slots=True)
class ChuteState:
    """Per-line chute state as the kernel takes it. `flags` are written by
    `sorter.chutes.ChuteBook` alone; `load` is raised by the kernel's decision step for
    the chute it picks and lowered by the chute book at the item's confirmation."""

    flags: npt.NDArray[np.uint8]
    load: npt.NDArray[np.int64]

    @classmethod
    def for_plan(cls, plan: CompiledPlan, n_slots: int | None = None) -> ChuteState:
        n = max(plan.n_chute_slots, n_slots or 0)
        return cls(np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.int64))


class Kernel:
    """A compiled plan bound to the kernel functions; one per loaded plan."""

    def __init__(self, plan: CompiledPlan) -> None:
        self.plan = plan
        self._n_destinations = len(plan.plan.destinations)
        self.rr_next = np.zeros(max(self._n_destinations, 1), dtype=np.int32)
        self._blob, self._tables = pack_plan(plan)
        self._max_recirculations = plan.max_recirculations
        self._least_loaded = plan.least_loaded

    def warm(self) -> None:
        """Compile (or load from the numba cache) both kernels before the first item."""
        state = ChuteState.for_plan(self.plan)
        self.decide(ItemFeatures(), state)
        n = 1
        self.decide_batch(
            np.zeros(n, np.int32),
            np.full(n, -1, np.int64),
            np.zeros(n, np.int32),
            np.full(n, -1, np.int32),
            np.full(n, -1, np.int32),
            np.zeros(n, np.int64),
            np.zeros(n, np.int32),
            np.full(n, -1, np.int32),
            state,
        )
        # Called from Python on multi-reads and by tools: their own dispatchers, which
        # load from numba's cache on the first call (tens of ms) unless done here.
        self.match(ItemFeatures())
        self.size_class(ItemFeatures())
        self.rr_next[:] = 0

    def match(self, f: ItemFeatures) -> int:
        """Destination of the item (pre-advised, else the first matching rule's), -1 for none;
        no chute state involved."""
        if 0 <= f.destination < self._n_destinations:
            return f.destination
        return int(
            match_destination(
                f.pc,
                f.pc_digits,
                f.service,
                f.country,
                f.origin,
                f.regex_mask,
                f.length_mm,
                f.width_mm,
                f.height_mm,
                f.weight_g,
                self._blob,
                self._tables,
            )
        )

    def size_class(self, f: ItemFeatures) -> int:
        """Index of the item's size class in the plan, -1 for none or unknown."""
        return int(size_class(f.length_mm, f.width_mm, f.height_mm, f.weight_g, self._blob))

    def decide(self, f: ItemFeatures, state: ChuteState) -> tuple[int, int, Reason]:
        d, c, r = decide_one(
            f.reason_in,
            f.pc,
            f.pc_digits,
            f.service,
            f.country,
            f.origin,
            f.regex_mask,
            f.recirculations,
            f.minute_of_day,
            f.destination,
            f.length_mm,
            f.width_mm,
            f.height_mm,
            f.weight_g,
            self._blob,
            self._tables,
            self._max_recirculations,
            self._least_loaded,
            state.flags,
            state.load,
            self.rr_next,
        )
        return int(d), int(c), Reason(r)

    def decide_batch(
        self,
        reason_in: npt.NDArray[np.int32],
        pc: npt.NDArray[np.int64],
        pc_digits: npt.NDArray[np.int32],
        service: npt.NDArray[np.int32],
        country: npt.NDArray[np.int32],
        regex_mask: npt.NDArray[np.int64],
        recirculations: npt.NDArray[np.int32],
        minute_of_day: npt.NDArray[np.int32],
        state: ChuteState,
        destination: npt.NDArray[np.int32] | None = None,
        measures: npt.NDArray[np.int32] | None = None,
        origin: npt.NDArray[np.int32] | None = None,
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """`measures`: [items, 4] of length_mm, width_mm, height_mm, weight_g (C order);
        None: nothing measured. `origin`: None for unknown everywhere."""
        n = reason_in.shape[0]
        if destination is None:
            destination = np.full(n, -1, np.int32)
        if origin is None:
            origin = np.full(n, -1, np.int32)
        if measures is None:
            measures = np.zeros((n, len(MEASURES)), np.int32)
        out_dest = np.empty(n, np.int32)
        out_chute = np.empty(n, np.int32)
        out_reason = np.empty(n, np.int32)
        decide_batch(
            reason_in,
            pc,
            pc_digits,
            service,
            country,
            origin,
            regex_mask,
            recirculations,
            minute_of_day,
            destination,
            measures,
            self._blob,
            self._tables,
            self._max_recirculations,
            self._least_loaded,
            state.flags,
            state.load,
            self.rr_next,
            out_dest,
            out_chute,
            out_reason,
        )
        return out_dest, out_chute, out_reason
