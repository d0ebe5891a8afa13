"""The PLC link address (`plc.url`) and serial line settings, parsed without any I/O.

Lives beside the config models so that a bad URL (`parity=X`, `baudrate=fast`) is one
config error from `check-config`, not a failure when the daemon opens the link. The
driver (`drivers.plc`) and the simulator (`simulators.plc`) take their settings from here.

URL forms:
- `tcp://host:port`: Modbus TCP (MBAP framing);
- `tcp://host:port?framer=rtu`: RTU frames over TCP, as serial-to-Ethernet gateways in
  "transparent" mode speak;
- `rtu:///dev/ttyUSB0?baudrate=115200&parity=E&stopbits=1&bytesize=8&local_echo=1`: Modbus
  RTU on a serial line (RS-485 or RS-232). Defaults 19200 baud, 8N1, no local echo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import parse_qs, urlsplit

_PARITIES: Final = {"N": "none", "E": "even", "O": "odd", "M": "mark", "S": "space"}
_TCP_OPTIONS: Final = frozenset({"framer"})
_RTU_OPTIONS: Final = frozenset(
    {"baudrate", "parity", "stopbits", "bytesize", "local_echo", "framer"}
)
_MIN_BAUD: Final = 300
_MAX_BAUD: Final = 4_000_000
# The Modbus serial line spec fixes the gap between frames at 3.5 characters, and at 1.75 ms
# above 19200 baud (where 3.5 characters would be too short for UART timers).
_FAST_GAP_BAUD: Final = 19200
_FAST_GAP_S: Final = 0.00175


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """UART settings of one end of a serial line."""

    baudrate: int = 19200
    parity: str = "N"  # N, E, O, M, S as pyserial spells them
    stopbits: int = 1
    bytesize: int = 8

    @property
    def char_bits(self) -> int:
        """Bits on the wire per byte: start bit, data bits, parity bit, stop bits."""
        return 1 + self.bytesize + (self.parity != "N") + self.stopbits

    @property
    def char_s(self) -> float:
        return self.char_bits / self.baudrate

    @property
    def frame_gap_s(self) -> float:
        """Silence that ends an RTU frame (t3.5)."""
        return _FAST_GAP_S if self.baudrate > _FAST_GAP_BAUD else 3.5 * self.char_s

    def describe(self) -> str:
        """`115200 8N1` as on a device's settings page."""
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"

    def query(self) -> str:
        return (
            f"baudrate={self.baudrate}&parity={self.parity}"
            f"&stopbits={self.stopbits}&bytesize={self.bytesize}"
        )


@dataclass(frozen=True, slots=True)
class PlcEndpoint:
    kind: Literal["tcp", "rtu"]
    host: str = ""
    port: int = 0
    device: str = ""
    framer: Literal["socket", "rtu"] = "socket"
    serial: SerialSettings = field(default_factory=SerialSettings)
    local_echo: bool = False  # an RS-485 adapter that hears its own transmission


def parse_plc_url(url: str) -> PlcEndpoint:
    """Parse and check `plc.url`; ValueError names the URL and what is wrong with it."""
    parts = urlsplit(url)
    try:
        raw = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ValueError(f"PLC URL {url!r}: malformed query: {exc}") from exc
    query = {k: v[-1] for k, v in raw.items()}
    if parts.scheme == "tcp":
        _no_unknown(url, query, _TCP_OPTIONS)
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"PLC URL {url!r} has an invalid port") from exc
        if not parts.hostname or port is None:
            raise ValueError(f"PLC URL {url!r} needs tcp://host:port")
        framer = query.get("framer", "socket").lower()
        if framer not in ("socket", "tcp", "rtu"):
            raise ValueError(f"PLC URL {url!r}: framer must be rtu or socket, not {framer!r}")
        return PlcEndpoint(
            "tcp", host=parts.hostname, port=port, framer="rtu" if framer == "rtu" else "socket"
        )
    if parts.scheme == "rtu":
        _no_unknown(url, query, _RTU_OPTIONS)
        if parts.netloc and parts.path:
            # rtu://dev/ttyUSB0 would open /ttyUSB0 (found in review): a typo, said so.
            raise ValueError(
                f"PLC URL {url!r}: the device goes after three slashes, "
                f"rtu:///{parts.netloc}{parts.path}"
            )
        device = parts.path or parts.netloc
        if not device:
            raise ValueError(f"PLC URL {url!r} names no serial device (rtu:///dev/ttyUSB0)")
        if query.get("framer", "rtu").lower() != "rtu":
            raise ValueError(f"PLC URL {url!r}: a serial line speaks RTU framing only")
        return PlcEndpoint(
            "rtu",
            device=device,
            framer="rtu",
            serial=_serial_settings(url, query),
            local_echo=_flag(url, "local_echo", query.get("local_echo", "0")),
        )
    raise ValueError(f"PLC URL {url!r}: scheme must be tcp or rtu")


def _no_unknown(url: str, query: dict[str, str], known: frozenset[str]) -> None:
    unknown = sorted(set(query) - known)
    if unknown:
        raise ValueError(
            f"PLC URL {url!r}: unknown option {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )


def _int(url: str, key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"PLC URL {url!r}: {key} must be a whole number, not {text!r}") from None


def _flag(url: str, key: str, text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"PLC URL {url!r}: {key} must be 0 or 1, not {text!r}")


def _serial_settings(url: str, query: dict[str, str]) -> SerialSettings:
    baudrate = _int(url, "baudrate", query.get("baudrate", "19200"))
    if not _MIN_BAUD <= baudrate <= _MAX_BAUD:
        raise ValueError(f"PLC URL {url!r}: baudrate {baudrate} is not {_MIN_BAUD}..{_MAX_BAUD}")
    # "even", "Even" and "E" all mean E, as on device settings pages.
    parity_text = query.get("parity", "N")
    parity = parity_text[:1].upper()
    if parity not in _PARITIES or parity_text.lower() not in (parity.lower(), _PARITIES[parity]):
        raise ValueError(
            f"PLC URL {url!r}: parity must be N, E or O (or M, S), not {parity_text!r}"
        )
    stopbits = _int(url, "stopbits", query.get("stopbits", "1"))
    if stopbits not in (1, 2):
        raise ValueError(f"PLC URL {url!r}: stopbits must be 1 or 2, not {stopbits}")
    bytesize = _int(url, "bytesize", query.get("bytesize", "8"))
    if bytesize != 8:
        raise ValueError(f"PLC URL {url!r}: Modbus RTU uses 8 data bits, not {bytesize}")
    return SerialSettings(baudrate, parity, stopbits, bytesize)


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
