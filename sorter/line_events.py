"""What the line core says happened: typed events, before they are MQTT messages.

The line core (`sorter.line`), the chute book (`sorter.chutes`) and the device board
(`sorter.devices`) produce these; `sorter.contract` alone turns them into the payloads of
docs/interfaces.md section 5. Nothing here knows a topic, a JSON key or a timestamp format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sorter.ports import ChuteFlag, Outcome, Reason

__all__ = ["Assignment", "ChuteChange", "Decided", "DeviceReport", "ResultRecorded"]


class Assignment(NamedTuple):
    """What an item was sent to, remembered until its confirmation (a NamedTuple: one per
    item, and the journal's recovery hands the same triple back)."""

    barcode: str
    destination: str
    chute: int


@dataclass(frozen=True, slots=True)
class Decided:
    """One sort request answered: P/decisions."""

    tracking_id: int
    seq: int
    codes: tuple[str, ...]  # empty for a no-read or a timeout
    barcode: str
    destination: str
    chute: int
    reason: Reason
    recirculations: int
    latency_ms: float


@dataclass(frozen=True, slots=True)
class ResultRecorded:
    """One confirmation recorded, joined with the decision it confirms: P/results."""

    tracking_id: int
    seq: int
    assigned: Assignment  # empty strings and chute 0 when this process never decided it
    chute_actual: int
    outcome: Outcome
    recirculations: int


@dataclass(frozen=True, slots=True)
class ChuteChange:
    """A chute of the machine whose state is to be announced: P/chutes/N."""

    chute: int
    flags: ChuteFlag
    destination: str  # "" when no destination of the plan owns the chute
    count: int  # items confirmed sorted into it since the start or its last emptying


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """A device's health after an update; `changed` says whether to announce it."""

    name: str
    connected: bool
    errors: int
    last_seen_wall_ns: int | None
    detail: str
    changed: bool
