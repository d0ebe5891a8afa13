"""The numba decision core: arrays in, arrays out, no I/O, no Python objects.

`sorter.reference` holds a plain-Python implementation of the same rules over `SortPlan`
objects; a hypothesis test holds the two equal. Both follow this order, first hit wins:

1. the item already recirculated `max_recirculations` times -> max_recirc chute;
2. a reason found before the kernel (no_read, invalid_code, multi_read_conflict,
   customs_hold) -> that function chute;
3. the first rule whose every condition matches gives the destination, else no_rule;
4. the destination's cut-off has passed -> after_cutoff;
5. a chute of the destination that is not full, disabled or in fault (round robin or least
   loaded), else the first usable overflow chute, else no_chute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from sorter.events import Reason
from sorter.plan import CompiledPlan

CHUTE_UNUSABLE = np.uint8(0b111)  # full | disabled | fault, as in the PLC status block

_OK = int(Reason.OK)
_NO_RULE = int(Reason.NO_RULE)
_NO_CHUTE = int(Reason.NO_CHUTE)
_MAX_RECIRC = int(Reason.MAX_RECIRC)
_AFTER_CUTOFF = int(Reason.AFTER_CUTOFF)


@njit(cache=True, nogil=True)
def match_destination(
    pc: int,
    pc_digits: int,
    service: int,
    country: int,
    regex_mask: int,
    rule_dest: Any,
    rule_pc_ptr: Any,
    rule_has_pc: Any,
    pc_lo: Any,
    pc_hi: Any,
    pc_dig: Any,
    pc_prefix: Any,
    rule_regex_bit: Any,
    rule_has_service: Any,
    rule_service: Any,
    rule_has_country: Any,
    rule_country: Any,
) -> int:
    """Index of the destination of the first matching rule, -1 when none matches."""
    for r in range(rule_dest.shape[0]):
        if rule_has_pc[r]:
            hit = False
            if pc >= 0:
                for t in range(rule_pc_ptr[r], rule_pc_ptr[r + 1]):
                    d = pc_dig[t]
                    if pc_prefix[t]:
                        if pc_digits >= d and pc // 10 ** (pc_digits - d) == pc_lo[t]:
                            hit = True
                            break
                    elif pc_digits == d and pc_lo[t] <= pc <= pc_hi[t]:
                        hit = True
                        break
            if not hit:
                continue
        bit = rule_regex_bit[r]
        if bit >= 0 and (regex_mask >> bit) & 1 == 0:
            continue
        if rule_has_service[r] and (service < 0 or not rule_service[r, service]):
            continue
        if rule_has_country[r] and (country < 0 or not rule_country[r, country]):
            continue
        return int(rule_dest[r])
    return -1


@njit(cache=True, nogil=True)
def _pick(
    dest: int,
    ptr: Any,
    chutes: Any,
    flags: Any,
    load: Any,
    rr_next: Any,
    round_robin: bool,
    least_loaded: bool,
) -> int:
    start = ptr[dest]
    n = ptr[dest + 1] - start
    if n == 0:
        return -1
    if least_loaded:
        best = -1
        best_load = 0
        for i in range(n):
            c = chutes[start + i]
            if flags[c] & CHUTE_UNUSABLE == 0 and (best < 0 or load[c] < best_load):
                best = c
                best_load = load[c]
        return best
    first = rr_next[dest] % n if round_robin else 0
    for k in range(n):
        i = (first + k) % n
        c = chutes[start + i]
        if flags[c] & CHUTE_UNUSABLE == 0:
            if round_robin:
                rr_next[dest] = (i + 1) % n
            return int(c)
    return -1


@njit(cache=True, nogil=True)
def decide_one(
    reason_in: int,
    pc: int,
    pc_digits: int,
    service: int,
    country: int,
    regex_mask: int,
    recirculations: int,
    minute_of_day: int,
    rule_dest: Any,
    rule_pc_ptr: Any,
    rule_has_pc: Any,
    pc_lo: Any,
    pc_hi: Any,
    pc_dig: Any,
    pc_prefix: Any,
    rule_regex_bit: Any,
    rule_has_service: Any,
    rule_service: Any,
    rule_has_country: Any,
    rule_country: Any,
    dest_ptr: Any,
    dest_chutes: Any,
    over_ptr: Any,
    over_chutes: Any,
    dest_cutoff_min: Any,
    function_chute: Any,
    max_recirculations: int,
    least_loaded: bool,
    flags: Any,
    load: Any,
    rr_next: Any,
) -> tuple[int, int, int]:
    """(destination index or -1, chute, reason) for one item; updates rr_next and load."""
    if recirculations >= max_recirculations:
        return -1, int(function_chute[_MAX_RECIRC]), _MAX_RECIRC
    if reason_in != _OK:
        return -1, int(function_chute[reason_in]), reason_in
    dest = match_destination(
        pc,
        pc_digits,
        service,
        country,
        regex_mask,
        rule_dest,
        rule_pc_ptr,
        rule_has_pc,
        pc_lo,
        pc_hi,
        pc_dig,
        pc_prefix,
        rule_regex_bit,
        rule_has_service,
        rule_service,
        rule_has_country,
        rule_country,
    )
    if dest < 0:
        return -1, int(function_chute[_NO_RULE]), _NO_RULE
    cutoff = dest_cutoff_min[dest]
    if cutoff >= 0 and minute_of_day >= cutoff:
        return dest, int(function_chute[_AFTER_CUTOFF]), _AFTER_CUTOFF
    chute = _pick(dest, dest_ptr, dest_chutes, flags, load, rr_next, True, least_loaded)
    if chute < 0:
        chute = _pick(dest, over_ptr, over_chutes, flags, load, rr_next, False, False)
    if chute < 0:
        return dest, int(function_chute[_NO_CHUTE]), _NO_CHUTE
    load[chute] += 1
    return dest, chute, _OK


@njit(cache=True, nogil=True)
def decide_batch(
    reason_in: Any,
    pc: Any,
    pc_digits: Any,
    service: Any,
    country: Any,
    regex_mask: Any,
    recirculations: Any,
    minute_of_day: Any,
    rule_dest: Any,
    rule_pc_ptr: Any,
    rule_has_pc: Any,
    pc_lo: Any,
    pc_hi: Any,
    pc_dig: Any,
    pc_prefix: Any,
    rule_regex_bit: Any,
    rule_has_service: Any,
    rule_service: Any,
    rule_has_country: Any,
    rule_country: Any,
    dest_ptr: Any,
    dest_chutes: Any,
    over_ptr: Any,
    over_chutes: Any,
    dest_cutoff_min: Any,
    function_chute: Any,
    max_recirculations: int,
    least_loaded: bool,
    flags: Any,
    load: Any,
    rr_next: Any,
    out_dest: Any,
    out_chute: Any,
    out_reason: Any,
) -> None:
    """decide_one over arrays of items, in order (round robin state carries across)."""
    for i in range(reason_in.shape[0]):
        d, c, r = decide_one(
            reason_in[i],
            pc[i],
            pc_digits[i],
            service[i],
            country[i],
            regex_mask[i],
            recirculations[i],
            minute_of_day[i],
            rule_dest,
            rule_pc_ptr,
            rule_has_pc,
            pc_lo,
            pc_hi,
            pc_dig,
            pc_prefix,
            rule_regex_bit,
            rule_has_service,
            rule_service,
            rule_has_country,
            rule_country,
            dest_ptr,
            dest_chutes,
            over_ptr,
            over_chutes,
            dest_cutoff_min,
            function_chute,
            max_recirculations,
            least_loaded,
            flags,
            load,
            rr_next,
        )
        out_dest[i] = d
        out_chute[i] = c
        out_reason[i] = r


@dataclass(frozen=True, slots=True)
class ItemFeatures:
    """What the kernel needs of one item, extracted from its labels in Python."""

    reason_in: int = _OK
    pc: int = -1
    pc_digits: int = 0
    service: int = -1
    country: int = -1
    regex_mask: int = 0
    recirculations: int = 0
    minute_of_day: int = -1


@dataclass(slots=True)
class ChuteState:
    """Mutable per-line chute state the kernel reads and updates."""

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
        self.rr_next = np.zeros(max(len(plan.plan.destinations), 1), dtype=np.int32)
        p = plan
        self._rules = (
            p.rule_dest,
            p.rule_pc_ptr,
            p.rule_has_pc,
            p.pc_lo,
            p.pc_hi,
            p.pc_digits,
            p.pc_prefix,
            p.rule_regex_bit,
            p.rule_has_service,
            p.rule_service,
            p.rule_has_country,
            p.rule_country,
        )
        self._dests = (
            p.dest_ptr,
            p.dest_chutes,
            p.over_ptr,
            p.over_chutes,
            p.dest_cutoff_min,
            p.function_chute,
            p.max_recirculations,
            p.least_loaded,
        )

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
        self.rr_next[:] = 0

    def match(self, f: ItemFeatures) -> int:
        """Destination index of the first matching rule, -1 for none (no chute state)."""
        return int(
            match_destination(f.pc, f.pc_digits, f.service, f.country, f.regex_mask, *self._rules)
        )

    def decide(self, f: ItemFeatures, state: ChuteState) -> tuple[int, int, Reason]:
        d, c, r = decide_one(
            f.reason_in,
            f.pc,
            f.pc_digits,
            f.service,
            f.country,
            f.regex_mask,
            f.recirculations,
            f.minute_of_day,
            *self._rules,
            *self._dests,
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
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        n = reason_in.shape[0]
        out_dest = np.empty(n, np.int32)
        out_chute = np.empty(n, np.int32)
        out_reason = np.empty(n, np.int32)
        decide_batch(
            reason_in,
            pc,
            pc_digits,
            service,
            country,
            regex_mask,
            recirculations,
            minute_of_day,
            *self._rules,
            *self._dests,
            state.flags,
            state.load,
            self.rr_next,
            out_dest,
            out_chute,
            out_reason,
        )
        return out_dest, out_chute, out_reason
