"""The PLC register map (docs/interfaces.md section 3), declared once, as data.

`REGISTERS` is the table of the document: every register or block of slots with its
address, size, writer and meaning; the constants below are read from it, never written a
second time. tests/test_plc_register_map.py holds the table against the document's, and the
simulator (simulators/plc_map.py) writes its own map from the document, so a layout slip on
either side fails a test instead of agreeing with itself.

Pure data and the slot codec: no I/O here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

from sorter.errors import SorterdError
from sorter.ports import Confirmation, Outcome, SortRequest

__all__ = [
    "CHUTE_BASE",
    "CONF_ACK",
    "CONF_BASE",
    "CONF_HEAD",
    "CONF_SIZE",
    "COUNTER_MOD",
    "HEADER_COUNT",
    "HOST_HEARTBEAT",
    "INTERFACE_VERSION",
    "INTERFACE_VERSION_V1",
    "MAX_CHUTE",
    "MAX_READ_REGS",
    "MAX_WRITE_REGS",
    "PLC_HEARTBEAT",
    "PLC_STATE",
    "REGISTERS",
    "REPLY_BASE",
    "REPLY_SIZE",
    "REP_HEAD",
    "REQUEST_BASE",
    "REQUEST_SIZE",
    "REQ_ACK",
    "REQ_HEAD",
    "RING_SLOTS",
    "PlcState",
    "Register",
    "RegisterError",
    "counter_diff",
    "decode_confirmation",
    "decode_reply",
    "decode_request",
    "encode_confirmation",
    "encode_reply",
    "encode_request",
    "join32",
    "register",
    "slot",
    "split32",
]

RING_SLOTS: Final = 64
MAX_CHUTE: Final = 999  # chute n at 2000 + n; the sort plan's chute numbers stop here too


@dataclass(frozen=True, slots=True)
class Register:
    """One row of the register map: one register, or a block of `slots` equal slots.

    Slot s of a block starts at `address + size * s`; `fields` name its registers in order,
    with how many registers each takes (32-bit values take two, high word first).
    """

    name: str
    address: int
    writer: Literal["PLC", "daemon"]
    meaning: str
    fields: tuple[tuple[str, int], ...] = ()
    slots: int = 1

    @property
    def size(self) -> int:
        """Registers per slot (1 for a single register)."""
        return sum(width for _, width in self.fields) or 1

    def offset(self, field: str) -> int:
        """Where `field` starts inside a slot."""
        at = 0
        for name, width in self.fields:
            if name == field:
                return at
            at += width
        raise KeyError(f"{self.name} has no field {field!r}")


REGISTERS: Final[tuple[Register, ...]] = (
    Register("plc_heartbeat", 0, "PLC", "incremented at least every 250 ms"),
    Register("host_heartbeat", 1, "daemon", "incremented every 250 ms"),
    Register("plc_state", 2, "PLC", "0 stopped, 1 running, 2 fault, 3 emergency stop"),
    Register("interface_version", 3, "PLC", "1"),
    Register("req_head", 10, "PLC", "number of sort requests written"),
    Register("req_ack", 11, "daemon", "number of sort requests consumed"),
    Register("rep_head", 12, "daemon", "number of replies written"),
    Register("conf_head", 13, "PLC", "number of confirmations written"),
    Register("conf_ack", 14, "daemon", "number of confirmations consumed"),
    Register(
        "request_slot",
        100,
        "PLC",
        "one sort request",
        fields=(
            ("seq", 1),
            ("tracking_id", 2),
            ("induction", 1),
            ("length_mm", 1),
            ("width_mm", 1),
            ("height_mm", 1),
            ("weight_g", 1),
        ),
        slots=RING_SLOTS,
    ),
    Register(
        "reply_slot",
        700,
        "daemon",
        "one reply",
        fields=(("seq", 1), ("tracking_id", 2), ("chute", 1)),
        slots=RING_SLOTS,
    ),
    Register(
        "confirmation_slot",
        1000,
        "PLC",
        "one confirmation",
        fields=(
            ("seq", 1),
            ("tracking_id", 2),
            ("chute_actual", 1),
            ("outcome", 1),
            ("recirculations", 1),
        ),
        slots=RING_SLOTS,
    ),
    Register(
        "chute_status",
        2000,
        "PLC",
        "bit 0 full, bit 1 disabled, bit 2 fault (sorter.ports.ChuteFlag)",
        slots=MAX_CHUTE + 1,
    ),
)


def register(name: str) -> Register:
    """The row of the register map called `name`."""
    for row in REGISTERS:
        if row.name == name:
            return row
    raise KeyError(name)


PLC_HEARTBEAT: Final = register("plc_heartbeat").address
HOST_HEARTBEAT: Final = register("host_heartbeat").address
PLC_STATE: Final = register("plc_state").address
INTERFACE_VERSION: Final = register("interface_version").address
REQ_HEAD: Final = register("req_head").address
REQ_ACK: Final = register("req_ack").address
REP_HEAD: Final = register("rep_head").address
CONF_HEAD: Final = register("conf_head").address
CONF_ACK: Final = register("conf_ack").address
HEADER_COUNT: Final = CONF_ACK + 1  # registers 0..14 are read in one request

REQUEST_BASE: Final = register("request_slot").address
REQUEST_SIZE: Final = register("request_slot").size
REPLY_BASE: Final = register("reply_slot").address
REPLY_SIZE: Final = register("reply_slot").size
CONF_BASE: Final = register("confirmation_slot").address
CONF_SIZE: Final = register("confirmation_slot").size
CHUTE_BASE: Final = register("chute_status").address

# Modbus limits of one PDU: a read returns at most 125 registers, a write carries 123.
MAX_READ_REGS: Final = 125
MAX_WRITE_REGS: Final = 123

INTERFACE_VERSION_V1: Final = 1
COUNTER_MOD: Final = 1 << 16


class PlcState(enum.IntEnum):
    """Values of `plc_state`."""

    STOPPED = 0
    RUNNING = 1
    FAULT = 2
    EMERGENCY_STOP = 3


class RegisterError(SorterdError, ValueError):
    """A register block that does not decode (a wrong answer from the PLC)."""


def counter_diff(head: int, ack: int) -> int:
    """How many messages are between ack and head, comparing modulo 65536."""
    return (head - ack) % COUNTER_MOD


def slot(k: int) -> int:
    """The ring slot of message number k."""
    return k % RING_SLOTS


def split32(value: int) -> tuple[int, int]:
    """High word first, as the register map says."""
    return (value >> 16) & 0xFFFF, value & 0xFFFF


def join32(high: int, low: int) -> int:
    return ((high & 0xFFFF) << 16) | (low & 0xFFFF)


def encode_request(req: SortRequest) -> list[int]:
    hi, lo = split32(req.tracking_id)
    return [
        req.seq & 0xFFFF,
        hi,
        lo,
        req.induction & 0xFFFF,
        req.length_mm & 0xFFFF,
        req.width_mm & 0xFFFF,
        req.height_mm & 0xFFFF,
        req.weight_g & 0xFFFF,
    ]


def decode_request(regs: list[int], received_ns: int = 0, earliest_ns: int = 0) -> SortRequest:
    return SortRequest(
        seq=regs[0],
        tracking_id=join32(regs[1], regs[2]),
        induction=regs[3],
        length_mm=regs[4],
        width_mm=regs[5],
        height_mm=regs[6],
        weight_g=regs[7],
        received_ns=received_ns,
        earliest_ns=earliest_ns,
    )


def encode_reply(seq: int, tracking_id: int, chute: int) -> list[int]:
    hi, lo = split32(tracking_id)
    return [seq & 0xFFFF, hi, lo, chute & 0xFFFF]


def decode_reply(regs: list[int]) -> tuple[int, int, int]:
    """(seq, tracking_id, chute)"""
    return regs[0], join32(regs[1], regs[2]), regs[3]


def encode_confirmation(conf: Confirmation) -> list[int]:
    hi, lo = split32(conf.tracking_id)
    return [
        conf.seq & 0xFFFF,
        hi,
        lo,
        conf.chute_actual & 0xFFFF,
        int(conf.outcome),
        conf.recirculations & 0xFFFF,
    ]


def decode_confirmation(regs: list[int], received_ns: int = 0) -> Confirmation:
    try:
        outcome = Outcome(regs[4])
    except ValueError as exc:
        raise RegisterError(f"confirmation outcome {regs[4]} is not 1..7") from exc
    return Confirmation(
        seq=regs[0],
        tracking_id=join32(regs[1], regs[2]),
        chute_actual=regs[3],
        outcome=outcome,
        recirculations=regs[5],
        received_ns=received_ns,
    )
