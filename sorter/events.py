"""Immutable events that flow between the pipeline stages.

Identity of an item on the sorter is `(tracking_id, seq)`: PLCs reuse tracking ids over
time, and a recirculated item comes back with the same tracking id and a new seq.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

NOREAD = "NOREAD"


class Reason(enum.IntEnum):
    """Why a chute was chosen. The integer is what the numba kernel returns."""

    OK = 0
    NO_READ = 1
    INVALID_CODE = 2
    MULTI_READ_CONFLICT = 3
    NO_RULE = 4
    NO_CHUTE = 5
    MAX_RECIRC = 6
    TIMEOUT = 7
    AFTER_CUTOFF = 8
    CUSTOMS_HOLD = 9
    # An extension of INTERFACES.md's list (docs/interfaces.md): a dimension or the weight
    # the PLC reported is beyond the machine's limits in the plan's [machine] table.
    OUT_OF_RANGE = 10

    @property
    def word(self) -> str:
        """The word used on MQTT and in files (INTERFACES.md section 5)."""
        return self.name.lower()


FUNCTION_REASONS: tuple[Reason, ...] = tuple(r for r in Reason if r is not Reason.OK)

# Function chutes a plan may leave out, and the reason whose chute then stands in. Plans
# written before a reason existed keep loading; out-of-range items go where the sorter
# gives up on items (max_recirc: usually the end of the line, which needs no divert).
OPTIONAL_FUNCTIONS: dict[Reason, Reason] = {Reason.OUT_OF_RANGE: Reason.MAX_RECIRC}


class Outcome(enum.IntEnum):
    """What the PLC reports at the divert (confirmation `outcome` register)."""

    SORTED = 1
    RECIRC_FULL = 2
    RECIRC_LATE = 3
    RECIRC_DISABLED = 4
    REJECT = 5
    LOST = 6
    REMOVED = 7

    @property
    def word(self) -> str:
        return self.name.lower()

    @property
    def terminal(self) -> bool:
        """True when the item leaves the sorter; recirculated items come back."""
        return self not in (Outcome.RECIRC_FULL, Outcome.RECIRC_LATE, Outcome.RECIRC_DISABLED)


@dataclass(frozen=True, slots=True)
class ScanRead:
    """One telegram from a scanner: the codes read for one item (or a no-read)."""

    scanner: str
    tracking_id: int | None  # None for presets that carry no tracking id
    codes: tuple[str, ...]  # empty tuple for a no-read
    received_ns: int  # time.monotonic_ns() at arrival


@dataclass(frozen=True, slots=True)
class SortRequest:
    """A sort request slot read from the PLC's request ring."""

    seq: int
    tracking_id: int
    induction: int
    length_mm: int
    width_mm: int
    height_mm: int
    weight_g: int
    received_ns: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """The host's answer to one sort request."""

    request: SortRequest
    codes: tuple[str, ...]
    barcode: str  # the code the decision was based on, "" when none
    destination: str  # "" when no destination applies
    chute: int
    reason: Reason
    recirculations: int
    decided_ns: int
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A confirmation slot read from the PLC: what actually happened at the divert."""

    seq: int
    tracking_id: int
    chute_actual: int
    outcome: Outcome
    recirculations: int
    received_ns: int = 0


@dataclass(frozen=True, slots=True)
class Result:
    """A confirmation joined with the decision it confirms."""

    confirmation: Confirmation
    barcode: str
    destination: str
    chute_assigned: int


@dataclass(frozen=True, slots=True)
class ChuteStatus:
    """Live state of one chute, from the PLC's chute status block."""

    chute: int
    full: bool = False
    disabled: bool = False
    fault: bool = False
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if self.fault:
            return "fault"
        if self.disabled:
            return "disabled"
        if self.full:
            return "full"
        return "ok"
