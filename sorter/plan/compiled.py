"""A checked SortPlan as flat numpy arrays for the numba kernel (CSR layout for lists)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from sorter.plan.records import ALPHA2, CLASS_LIMITS, SortPlan
from sorter.ports import Reason

__all__ = ["CompiledPlan", "compile_plan"]

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


class _Postcodes(NamedTuple):
    rule_pc_ptr: I32
    rule_has_pc: B8
    pc_lo: I64
    pc_hi: I64
    pc_chars: I32
    pc_kind: I32


def _postcode_arrays(plan: SortPlan) -> _Postcodes:
    """Every rule's postcode terms, one after the other, and where each rule's start."""
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
    return _Postcodes(
        np.array(ptr, dtype=np.int32),
        np.array([r.postcode is not None for r in plan.rules], dtype=np.bool_),
        np.array(lo, dtype=np.int64),
        np.array(hi, dtype=np.int64),
        np.array(chars, dtype=np.int32),
        np.array(kind, dtype=np.int32),
    )


def _letter_arrays(plan: SortPlan, field_name: str) -> tuple[B8, B8]:
    """One letter condition (s10_service, country, origin): which rules have it, and as a
    row of 676 flags per rule."""
    table = np.zeros((max(len(plan.rules), 1), ALPHA2), dtype=np.bool_)
    has = []
    for i, r in enumerate(plan.rules):
        letters = getattr(r, field_name)
        has.append(letters is not None)
        if letters is not None:
            table[i, list(letters.allowed)] = True
    return np.array(has, np.bool_), table


def _csr(lists: list[tuple[int, ...]]) -> tuple[I32, I32]:
    p = np.zeros(len(lists) + 1, dtype=np.int32)
    flat: list[int] = []
    for i, items in enumerate(lists):
        flat.extend(items)
        p[i + 1] = len(flat)
    return p, np.array(flat, dtype=np.int32)


def _class_limits(plan: SortPlan) -> I64:
    return np.array([c.limits() for c in plan.size_classes], dtype=np.int64).reshape(
        len(plan.size_classes), len(CLASS_LIMITS)
    )


def compile_plan(plan: SortPlan) -> CompiledPlan:
    dest_ptr, dest_chutes = _csr([d.chutes for d in plan.destinations])
    over_ptr, over_chutes = _csr([d.overflow for d in plan.destinations])
    has_service, service = _letter_arrays(plan, "s10_service")
    has_country, country = _letter_arrays(plan, "country")
    has_origin, origin = _letter_arrays(plan, "origin")
    size_mask = [
        0 if r.size_classes is None else sum(1 << c for c in r.size_classes) for r in plan.rules
    ]
    limits = plan.machine_limits
    function_chute = np.zeros(len(Reason), dtype=np.int32)
    for reason, chute in plan.functions.items():
        function_chute[int(reason)] = chute
    return CompiledPlan(
        plan,
        np.array([r.destination for r in plan.rules], dtype=np.int32),
        *_postcode_arrays(plan),
        rule_regex_bit=np.array([r.regex_bit for r in plan.rules], dtype=np.int32),
        rule_has_service=has_service,
        rule_service=service,
        rule_has_country=has_country,
        rule_country=country,
        rule_has_origin=has_origin,
        rule_origin=origin,
        rule_size_mask=np.array(size_mask, dtype=np.int64),
        class_limits=_class_limits(plan),
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
