"""The ports of the line core: the records that cross between the drivers and `sorter`,
and the Protocols the drivers implement.

Scanner drivers produce `ScanRead`s, the PLC driver produces `SortRequest`s and
`Confirmation`s and takes replies; whatever keeps decisions durable implements `Durable`
(drivers.journal), whatever watches the line in process implements `LineObserver`
(drivers.metrics). Nothing here does I/O.

Identity of an item on the sorter is `(tracking_id, seq)`: PLCs reuse tracking ids over
time, and a recirculated item comes back with the same tracking id and a new seq.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "FUNCTION_REASONS",
    "NOREAD",
    "OPTIONAL_FUNCTIONS",
    "ChuteFlag",
    "ChuteStatus",
    "Confirmation",
    "Durable",
    "LineObserver",
    "MessageKind",
    "Outcome",
    "Outgoing",
    "Publish",
    "Reason",
    "Recovered",
    "Ring",
    "ScanRead",
    "SortRequest",
]

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
    # An extension of the contract's list (docs/interfaces.md section 5): a dimension or the weight
    # the PLC reported is beyond the machine's limits in the plan's [machine] table.
    OUT_OF_RANGE = 10

    @property
    def word(self) -> str:
        """The word used on MQTT and in files (docs/interfaces.md section 5)."""
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


class Ring(enum.StrEnum):
    """The PLC's two rings (docs/interfaces.md, the register map)."""

    REQUESTS = "requests"
    CONFIRMATIONS = "confirmations"


class ChuteFlag(enum.IntFlag):
    """Bits of a chute's status word, as the PLC reports them and the host sets them."""

    FULL = 1 << 0
    DISABLED = 1 << 1
    FAULT = 1 << 2


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
    received_ns: int = 0  # time.monotonic_ns() once the poll that saw it was answered
    # The PLC wrote it after this (the previous poll of its ring was sent then): with
    # received_ns, the span a slow poll leaves open (sorter/tracker_window.py). 0: not known,
    # taken as received_ns.
    earliest_ns: int = 0


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


class MessageKind(enum.StrEnum):
    """The two messages every item produces; the value is the journal's `kind` column."""

    DECISION = "decision"
    RESULT = "result"


class LineObserver(Protocol):
    """Something that watches the line in process (metrics, watchdogs). Called on the event
    loop for every event: must be quick and must not raise."""

    def on_decision(self, reason: str, destination: str, chute: int, latency_ms: float) -> None: ...

    def on_result(self, outcome: str, chute_actual: int) -> None: ...

    def on_device(self, name: str, connected: bool, errors: int) -> None: ...


class Publish(Protocol):
    def __call__(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False
    ) -> None: ...


class Durable(Protocol):
    """Where decisions and results go: written down before the PLC hears of them.

    The pipeline calls `commit()` at the end of every step (a poll's requests, a scan, a
    timeout, a poll's confirmations), before control returns to the PLC driver, which then
    writes the replies and acknowledgements: so nothing the PLC saw answered is missing
    from the journal after a crash. The daemon's implementation is drivers.journal.
    """

    def add_pending(self, req: SortRequest) -> None: ...

    def record(self, msg: Outgoing) -> None: ...

    def commit(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A decision or result: its MQTT message and what a restart needs to know of it."""

    kind: MessageKind
    tracking_id: int
    seq: int
    chute: int  # decision: the chute assigned; result: chute_actual
    barcode: str
    destination: str
    recirculations: int
    outcome: int  # result: the PLC's outcome code; decision: 0
    topic: str
    payload: dict[str, Any]


@dataclass(slots=True)
class Recovered:
    """What a previous process of this line left in its journal (drivers.journal.recover)."""

    answered: dict[tuple[int, int], int] = field(default_factory=dict)  # -> chute replied
    assigned: dict[tuple[int, int], tuple[str, str, int]] = field(default_factory=dict)
    recirculations: dict[int, int] = field(default_factory=dict)
    results_seen: set[tuple[int, int]] = field(default_factory=set)
    pending: list[SortRequest] = field(default_factory=list)
    replies: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, id, chute)
