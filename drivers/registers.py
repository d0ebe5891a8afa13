"""The PLC register map of INTERFACES.md section 3, shared by the driver and the simulator.

Pure data and encoding helpers: no I/O here.
"""

from __future__ import annotations

from typing import Final

from sorter.errors import SorterdError
from sorter.ports import Confirmation, Outcome, SortRequest

PLC_HEARTBEAT: Final = 0
HOST_HEARTBEAT: Final = 1
PLC_STATE: Final = 2
INTERFACE_VERSION: Final = 3
REQ_HEAD: Final = 10
REQ_ACK: Final = 11
REP_HEAD: Final = 12
CONF_HEAD: Final = 13
CONF_ACK: Final = 14
HEADER_COUNT: Final = 15  # registers 0..14 are read in one request

RING_SLOTS: Final = 64
REQUEST_BASE: Final = 100
REQUEST_SIZE: Final = 8
REPLY_BASE: Final = 700
REPLY_SIZE: Final = 4
CONF_BASE: Final = 1000
CONF_SIZE: Final = 6
CHUTE_BASE: Final = 2000
MAX_CHUTE: Final = 999  # 2000 + n must stay below the end of the simulator's block
REGISTER_COUNT: Final = CHUTE_BASE + MAX_CHUTE + 1

# A Modbus read returns at most 125 registers (spec limit of one PDU).
MAX_READ_REGS: Final = 125
MAX_WRITE_REGS: Final = 123

CHUTE_FULL: Final = 1 << 0
CHUTE_DISABLED: Final = 1 << 1
CHUTE_FAULT: Final = 1 << 2

INTERFACE_VERSION_V1: Final = 1
COUNTER_MOD: Final = 1 << 16


class PlcState:
    STOPPED: Final = 0
    RUNNING: Final = 1
    FAULT: Final = 2
    EMERGENCY_STOP: Final = 3


def counter_diff(head: int, ack: int) -> int:
    """How many messages are between ack and head, comparing modulo 65536."""
    return (head - ack) % COUNTER_MOD


def slot(k: int) -> int:
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


def decode_request(regs: list[int], received_ns: int = 0) -> SortRequest:
    return SortRequest(
        seq=regs[0],
        tracking_id=join32(regs[1], regs[2]),
        induction=regs[3],
        length_mm=regs[4],
        width_mm=regs[5],
        height_mm=regs[6],
        weight_g=regs[7],
        received_ns=received_ns,
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


class RegisterError(SorterdError, ValueError):
    """A register block that does not decode (a wrong answer from the PLC)."""


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
