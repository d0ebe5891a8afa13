"""The register map as the simulated PLC's programmer reads it in docs/interfaces.md
section 3, written from the document and not from the daemon's code.

The daemon's own map is `drivers.registers`; this module imports nothing from it, on
purpose: each side is an implementation of the document, so a layout slip on one side shows
in the end-to-end tests instead of being agreed with by construction. Both tables are held
against the document by tests/test_plc_register_map.py. The slot codec here packs the
fields as the big-endian structure the document describes (32-bit values high word first)
and cuts it into 16-bit words.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from sorter.ports import Confirmation, SortRequest

__all__ = [
    "CHUTE_STATUS",
    "CONFIRMATION_RING",
    "HEADER",
    "LAST_CHUTE",
    "MEMORY_WORDS",
    "REPLY_RING",
    "REQUEST_RING",
    "RING_LENGTH",
    "SUPPORTED_VERSION",
    "WRAP",
    "Header",
    "PlcStateValue",
    "SlotBlock",
    "confirmation_words",
    "reply_from_words",
    "request_words",
]

RING_LENGTH: Final = 64  # "Rings have 64 slots; message number k uses slot k mod 64"
WRAP: Final = 65536  # "Counters wrap modulo 65536"
SUPPORTED_VERSION: Final = 1  # interface_version
LAST_CHUTE: Final = 999  # the status block 2000 + n fits below MEMORY_WORDS
CHUTE_STATUS: Final = 2000  # chute n status at 2000 + n
MEMORY_WORDS: Final = CHUTE_STATUS + LAST_CHUTE + 1


class Header(enum.IntEnum):
    """Registers 0..14 (the gaps 4..9 are unused)."""

    PLC_HEARTBEAT = 0
    HOST_HEARTBEAT = 1
    PLC_STATE = 2
    INTERFACE_VERSION = 3
    REQ_HEAD = 10
    REQ_ACK = 11
    REP_HEAD = 12
    CONF_HEAD = 13
    CONF_ACK = 14


HEADER: Final = range(Header.PLC_HEARTBEAT, Header.CONF_ACK + 1)


class PlcStateValue(enum.IntEnum):
    """plc_state: 0 stopped, 1 running, 2 fault, 3 emergency stop."""

    STOPPED = 0
    RUNNING = 1
    FAULT = 2
    EMERGENCY_STOP = 3


@dataclass(frozen=True, slots=True)
class SlotBlock:
    """A ring of 64 slots of `words` registers from `base`, packed as `layout` (struct)."""

    base: int
    words: int
    layout: str

    def address(self, message: int) -> int:
        """First register of the slot that message number `message` uses."""
        return self.base + self.words * (message % RING_LENGTH)


# seq, tracking_id (2 regs), induction, length_mm, width_mm, height_mm, weight_g
REQUEST_RING: Final = SlotBlock(100, 8, ">HIHHHHH")
# seq (echo), tracking_id (2 regs), chute
REPLY_RING: Final = SlotBlock(700, 4, ">HIH")
# seq, tracking_id (2 regs), chute_actual (0 none), outcome, recirculations
CONFIRMATION_RING: Final = SlotBlock(1000, 6, ">HIHHH")


def _words(block: SlotBlock, *fields: int) -> list[int]:
    return list(struct.unpack(f">{block.words}H", struct.pack(block.layout, *fields)))


def request_words(req: SortRequest) -> list[int]:
    """A request slot's registers (every field already in its register's range)."""
    return _words(
        REQUEST_RING,
        req.seq,
        req.tracking_id,
        req.induction,
        req.length_mm,
        req.width_mm,
        req.height_mm,
        req.weight_g,
    )


def confirmation_words(conf: Confirmation) -> list[int]:
    """A confirmation slot's registers."""
    return _words(
        CONFIRMATION_RING,
        conf.seq,
        conf.tracking_id,
        conf.chute_actual,
        conf.outcome.value,
        conf.recirculations,
    )


def reply_from_words(words: list[int]) -> tuple[int, int, int]:
    """(seq, tracking_id, chute) of a reply slot's registers."""
    raw = struct.pack(f">{REPLY_RING.words}H", *words)
    seq, tracking_id, chute = struct.unpack(REPLY_RING.layout, raw)
    return int(seq), int(tracking_id), int(chute)
