"""How much a Modbus RTU line carries: bytes and wire time of the PLC link's poll cycle.

No I/O. The driver (`drivers.plc`) sizes its request timeout with these, the benchmarks
and docs/interfaces.md ("PLC link over Modbus RTU") quote their figures.
"""

from __future__ import annotations

from sorter.addresses import SerialSettings

__all__ = ["cycle_s", "max_items_per_h", "read_bytes", "transaction_s", "write_bytes"]


# ---------------------------------------------------------------- line budget (RTU)
# Bytes of the two Modbus functions the link uses, request + response, RTU framing
# (device id, function code and CRC included).
def read_bytes(registers: int) -> int:
    """Read holding registers (FC 3): 8-byte request, 5 + 2n response."""
    return 8 + 5 + 2 * registers


def write_bytes(registers: int) -> int:
    """Write multiple registers (FC 16): 9 + 2n request, 8-byte response."""
    return 9 + 2 * registers + 8


def transaction_s(settings: SerialSettings, nbytes: int, turnaround_s: float = 0.0) -> float:
    """Time on the wire for one request/response pair: bytes, two frame gaps, PLC reply time."""
    return nbytes * settings.char_s + 2 * settings.frame_gap_s + turnaround_s


def cycle_s(settings: SerialSettings, items: int, turnaround_s: float = 0.0) -> float:
    """One poll cycle that takes in `items` requests and `items` confirmations.

    The driver's batching: the header in one read, requests 15 slots a read, their replies
    30 slots a write, `req_ack`+`rep_head` in one write, confirmations 20 slots a read,
    `conf_ack` in one write. With `items=0` it is the idle poll (the header alone).
    """
    t = transaction_s(settings, read_bytes(15), turnaround_s)
    if items == 0:
        return t
    for size, per_transaction, is_read in ((8, 15, True), (4, 30, False), (6, 20, True)):
        left = items
        while left:
            n = min(left, per_transaction)
            nbytes = read_bytes(size * n) if is_read else write_bytes(size * n)
            t += transaction_s(settings, nbytes, turnaround_s)
            left -= n
    t += transaction_s(settings, write_bytes(2), turnaround_s)  # req_ack + rep_head
    t += transaction_s(settings, write_bytes(1), turnaround_s)  # conf_ack
    return t


def max_items_per_h(settings: SerialSettings, items: int, turnaround_s: float = 0.0) -> float:
    """Items an hour the line carries when every cycle takes in `items` of each message."""
    return 3600.0 * items / cycle_s(settings, items, turnaround_s)
