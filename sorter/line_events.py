"""What the line core says happened: typed events, before they are MQTT messages.

The line core (`sorter.line`), the chute book (`sorter.chutes`) and the device board
(`sorter.devices`) produce these; `sorter.contract` alone turns them into the payloads of
docs/interfaces.md section 5. Nothing here knows a topic, a JSON key or a timestamp format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from sorter.decide import Choice
    from sorter.ports import ChuteFlag, Confirmation, SortRequest

__all__ = ["Assignment", "ChuteChange", "Decided", "DeviceReport", "ResultRecorded"]


class Assignment(NamedTuple):
    """What an item was sent to, remembered until its confirmation (a NamedTuple: one per
    item, and the journal's recovery hands the same triple back)."""

    barcode: str
    destination: str
    chute: int


# Decisions and results refer to the records they come from rather than copy their
# fields, and are NamedTuples like sorter.kernel.ItemFeatures: built once per item on the
# hot path, where a frozen dataclass of five fields costs twice as much to build.


class Decided(NamedTuple):
    """One sort request answered: P/decisions."""

    request: SortRequest
    codes: tuple[str, ...]  # empty for a no-read or a timeout
    choice: Choice
    recirculations: int  # before this request
    latency_ms: float  # request read -> reply queued


class ResultRecorded(NamedTuple):
    """One confirmation recorded, joined with the decision it confirms: P/results."""

    confirmation: Confirmation
    assigned: Assignment  # empty strings and chute 0 when this process never decided it


@dataclass(frozen=True, slots=True)
class ChuteChange:
    """A chute of the machine whose state is to be announced: P/chutes/N."""

    chute: int
    flags: ChuteFlag
    destination: str  # "" when no destination of the plan owns the chute
    count: int  # items confirmed sorted into it since the start or its last emptying


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """A device's health to announce: P/devices/NAME."""

    name: str
    connected: bool
    errors: int
    last_seen_wall_ns: int | None
    detail: str
