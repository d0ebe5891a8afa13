"""Every address in a site config, parsed once, without I/O: one parser per kind.

`sorterd check-config`, the drivers, `sorterd top` and the simulators all call these, so
an address the config check accepts is one the daemon can open, and one it refuses is
refused with the same words everywhere. Each parser raises AddressError (a SorterdError
and a ValueError) naming the URL
(with any password hidden) and what is wrong; config errors add the file and key.

- PLC (`plc.url`, `parse_plc_url`): `tcp://host:port` (Modbus TCP),
  `tcp://host:port?framer=rtu` (RTU frames through a serial-to-Ethernet gateway),
  `rtu:///dev/ttyUSB0?baudrate=115200&parity=E&stopbits=1&bytesize=8&local_echo=1`
  (Modbus RTU on a serial line; defaults 19200 baud, 8N1, no local echo).
- Scanner (`scanner[].url`, `parse_scanner_url`): `tcp://host:port` (the daemon connects
  to the scanner, which listens); a device path `/dev/ttyS0` or `serial:///dev/ttyS0`;
  the pyserial URL handlers whose port has a file descriptor, which the asyncio serial
  transport needs: `socket://host:port`, `hwgrep://REGEXP[&n=N][&skip_busy]`,
  `spy:///dev/ttyS0[?color&all]` (its hexdump to standard error) and
  `alt:///dev/ttyS0?class=NAME`. `rfc2217://`, `loop://` and `cp2110://` ports
  have none, so both the config check and the driver refuse them, saying why. Serial
  options in the query: baudrate, bytesize, parity, stopbits, xonxoff, rtscts, dsrdtr
  (defaults 9600 8N1, no flow control).
- MQTT (`mqtt.url`, `parse_mqtt_url`): `mqtt://[user[:password]@]host[:port]` or
  `mqtts://...` (TLS); ports default to 1883 and 8883; user and password are
  percent-decoded (`%40` for `@`). `mqtt.url` may also be a list of such URLs, the nodes
  of one clustered broker (`parse_mqtt_urls`): not empty, one scheme for all, no node twice.

Serial options follow one set of rules for every serial line: parity `N`, `E`, `O`, `M`,
`S` or the words `none`, `even`, `odd`, `mark`, `space` in any case; stop bits 1, 1.5 or
2; 5 to 8 data bits; 300 to 4,000,000 baud. Modbus RTU narrows them (8 data bits, 1 or 2
stop bits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import SplitResult, unquote, unquote_plus, urlencode, urlsplit

from sorter.errors import SorterdError

__all__ = [
    "ALT_CLASSES",
    "SOCKET_LOGGING_LEVELS",
    "SPY_OPTIONS",
    "AddressError",
    "MqttEndpoint",
    "PlcEndpoint",
    "ScannerEndpoint",
    "SerialEndpoint",
    "SerialSettings",
    "TcpEndpoint",
    "parse_mqtt_url",
    "parse_mqtt_urls",
    "parse_plc_url",
    "parse_scanner_url",
]


class AddressError(SorterdError, ValueError):
    """An address that cannot be used. A ValueError too, so the config model's validators
    turn it into a problem naming the file and the key."""


# --- serial lines ---------------------------------------------------------------------------

_PARITIES: Final = {"N": "none", "E": "even", "O": "odd", "M": "mark", "S": "space"}
_STOPBITS: Final = (1.0, 1.5, 2.0)
_BYTESIZES: Final = (5, 6, 7, 8)
_MIN_BAUD: Final = 300
_MAX_BAUD: Final = 4_000_000
_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off")
_LINE_OPTIONS: Final = ("baudrate", "bytesize", "parity", "stopbits")
_FLOW_OPTIONS: Final = ("xonxoff", "rtscts", "dsrdtr")
# The Modbus serial line spec fixes the gap between frames at 3.5 characters, and at 1.75 ms
# above 19200 baud (where 3.5 characters would be too short for UART timers).
_FAST_GAP_BAUD: Final = 19200
_FAST_GAP_S: Final = 0.00175


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """UART settings of one end of a Modbus RTU line (pyserial's names and spellings)."""

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
        """Time on the wire of one byte."""
        return self.char_bits / self.baudrate

    @property
    def frame_gap_s(self) -> float:
        """Silence that ends an RTU frame (t3.5)."""
        return _FAST_GAP_S if self.baudrate > _FAST_GAP_BAUD else 3.5 * self.char_s

    def describe(self) -> str:
        """`115200 8N1` as on a device's settings page."""
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"

    def query(self) -> str:
        """The line settings as a URL query, as `parse_plc_url` reads them back."""
        return (
            f"baudrate={self.baudrate}&parity={self.parity}"
            f"&stopbits={self.stopbits}&bytesize={self.bytesize}"
        )


def _hide_userinfo(text: str) -> str:
    """`scheme://user:secret@rest` -> `scheme://***@rest`, for a URL too broken to split."""
    scheme, sep, rest = text.partition("://")
    userinfo, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if sep and at and userinfo else text


class _Url:
    """One URL being parsed: its text for messages (password hidden) and its parts."""

    __slots__ = ("kind", "parts", "raw", "shown")

    def __init__(self, kind: str, text: str, *, shown: str | None = None) -> None:
        """`shown`: the URL as written, for messages, when `text` is a cleaned copy."""
        self.kind = kind
        self.raw = text
        written = text if shown is None else shown
        try:
            self.parts = urlsplit(text)
        except ValueError as exc:  # an unbalanced [ in the host
            self.parts = SplitResult("", "", "", "", "")
            # No parts, so no password to find: hide whatever stands between :// and @.
            self.shown = repr(_hide_userinfo(written))
            raise self.error(f"not a URL: {exc}") from None
        password = self.parts.password
        hidden = written.replace(f":{password}@", ":***@", 1) if password else written
        self.shown = repr(hidden)

    def error(self, what: str) -> AddressError:
        return AddressError(f"{self.kind} URL {self.shown}: {what}")

    def host_port(self, default_port: int | None = None) -> tuple[str, int]:
        if not self.parts.hostname:
            raise self.error(f"no host ({self.parts.scheme}://host:port)")
        try:
            port = self.parts.port  # a property: raises on a non-numeric or out-of-range port
        except ValueError:
            raise self.error("not valid: bad port (1..65535)") from None
        if port is None:
            port = default_port
        if port is None or port == 0:
            raise self.error(f"needs a port in 1..65535 ({self.parts.scheme}://host:port)")
        return self.parts.hostname, port

    def query(self, query: str | None = None, flags: tuple[str, ...] = ()) -> dict[str, str]:
        """The query's options; each given once and with a value (`flags` need none)."""
        text = self.parts.query if query is None else query
        pairs: list[tuple[str, str]] = []
        for item in text.split("&") if text else ():
            key, eq, value = item.partition("=")
            if not key or (not eq and key not in flags):
                raise self.error(f"malformed query: bad field {item!r} (want key=value)")
            pairs.append((unquote_plus(key), unquote_plus(value)))
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise self.error(f"repeats {', '.join(repeated)}")
        for key, value in pairs:
            if not value and key not in flags:
                raise self.error(f"{key} has no value")
        return dict(pairs)

    def no_unknown(self, options: dict[str, str], known: tuple[str, ...]) -> None:
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise self.error(
                f"unknown option {', '.join(unknown)} (known: {', '.join(sorted(known)) or 'none'})"
            )

    def integer(self, key: str, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise self.error(f"{key} must be a whole number, not {text!r}") from None

    def flag(self, key: str, text: str) -> bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise self.error(f"{key} must be 0 or 1 (true/false), not {text!r}")


@dataclass(frozen=True, slots=True)
class _Line:
    """Serial line options as a query gives them; defaults are each kind's own."""

    baudrate: int
    parity: str = "N"
    stopbits: float = 1
    bytesize: int = 8
    xonxoff: bool = False
    rtscts: bool = False
    dsrdtr: bool = False


@dataclass(frozen=True, slots=True)
class _LineRules:
    """What one kind of serial line allows; Modbus RTU narrows the common rules."""

    default: _Line
    stopbits: tuple[float, ...] = _STOPBITS
    bytesizes: tuple[int, ...] = _BYTESIZES
    bytesize_why: str = ""


def _serial_line(url: _Url, options: dict[str, str], rules: _LineRules) -> _Line:
    """The serial line options of a query, checked; absent ones keep the default."""
    default = rules.default
    baudrate = url.integer("baudrate", options.get("baudrate", str(default.baudrate)))
    if not _MIN_BAUD <= baudrate <= _MAX_BAUD:
        raise url.error(f"baudrate {baudrate} is not {_MIN_BAUD}..{_MAX_BAUD}")
    # "even", "Even" and "E" all mean E, as on device settings pages.
    parity_text = options.get("parity", default.parity)
    parity = parity_text[:1].upper()
    if parity not in _PARITIES or parity_text.lower() not in (parity.lower(), _PARITIES[parity]):
        raise url.error(f"parity must be N, E or O (or M, S), not {parity_text!r}")
    stopbits_text = options.get("stopbits", f"{default.stopbits:g}")
    try:
        stopbits = float(stopbits_text)
    except ValueError:
        stopbits = 0.0
    if stopbits not in rules.stopbits:
        allowed = " or ".join(f"{n:g}" for n in rules.stopbits)
        raise url.error(f"stopbits must be {allowed}, not {stopbits_text!r}")
    bytesize = url.integer("bytesize", options.get("bytesize", str(default.bytesize)))
    if bytesize not in rules.bytesizes:
        allowed = " or ".join(str(n) for n in rules.bytesizes)
        raise url.error(f"bytesize must be {allowed}, not {bytesize}{rules.bytesize_why}")
    return _Line(
        baudrate,
        parity,
        stopbits,
        bytesize,
        *(url.flag(key, options[key]) if key in options else False for key in _FLOW_OPTIONS),
    )


# --- PLC --------------------------------------------------------------------------------------

_PLC_TCP_OPTIONS: Final = ("framer",)
_PLC_RTU_OPTIONS: Final = (*_LINE_OPTIONS, "local_echo", "framer")
_RTU_LINE: Final = _LineRules(
    _Line(baudrate=19200), (1, 2), (8,), ": Modbus RTU uses 8 data bits (binary bytes)"
)


@dataclass(frozen=True, slots=True)
class PlcEndpoint:
    """Where the PLC is and how its Modbus frames travel."""

    kind: Literal["tcp", "rtu"]
    host: str = ""
    port: int = 0
    device: str = ""
    framer: Literal["socket", "rtu"] = "socket"
    serial: SerialSettings = field(default_factory=SerialSettings)
    local_echo: bool = False  # an RS-485 adapter that hears its own transmission


def parse_plc_url(url: str) -> PlcEndpoint:
    """Parse and check `plc.url`; AddressError names the URL and what is wrong with it."""
    parsed = _Url("PLC", url)
    parts = parsed.parts
    if parts.scheme == "tcp":
        options = parsed.query()
        parsed.no_unknown(options, _PLC_TCP_OPTIONS)
        if parts.path not in ("", "/") or parts.fragment:
            raise parsed.error("needs tcp://host:port, with ?framer= only")
        host, port = parsed.host_port()
        framer = options.get("framer", "socket").lower()
        if framer not in ("socket", "tcp", "rtu"):
            raise parsed.error(f"framer must be rtu or socket, not {framer!r}")
        return PlcEndpoint(
            "tcp", host=host, port=port, framer="rtu" if framer == "rtu" else "socket"
        )
    if parts.scheme == "rtu":
        return _rtu_endpoint(parsed)
    raise parsed.error("scheme must be tcp or rtu")


def _rtu_endpoint(parsed: _Url) -> PlcEndpoint:
    parts = parsed.parts
    options = parsed.query()
    parsed.no_unknown(options, _PLC_RTU_OPTIONS)
    if parts.netloc and parts.path:
        # rtu://dev/ttyUSB0 would open /ttyUSB0: a typo, said so.
        raise parsed.error(
            f"the device goes after three slashes, rtu:///{parts.netloc}{parts.path}"
        )
    device = parts.path or parts.netloc
    if not device:
        raise parsed.error("names no serial device (rtu:///dev/ttyUSB0)")
    if options.get("framer", "rtu").lower() != "rtu":
        raise parsed.error("a serial line speaks RTU framing only")
    line = _serial_line(parsed, options, _RTU_LINE)
    return PlcEndpoint(
        "rtu",
        device=device,
        framer="rtu",
        serial=SerialSettings(line.baudrate, line.parity, int(line.stopbits), line.bytesize),
        local_echo=parsed.flag("local_echo", options.get("local_echo", "0")),
    )


# --- scanners ---------------------------------------------------------------------------------

_SCANNER_LINE: Final = _LineRules(_Line(baudrate=9600))
_SCANNER_SERIAL_OPTIONS: Final = (*_LINE_OPTIONS, *_FLOW_OPTIONS)
# The options pyserial's own URL handlers read from the query (serial/urlhandler/
# protocol_*.py); tests/test_addresses.py holds these tables to pyserial's.
SOCKET_LOGGING_LEVELS: Final = ("debug", "info", "warning", "error")
# spy:// takes no file=: pyserial opens that file on every (re)connect and never closes it;
# the hexdump goes to standard error, which is the daemon's log. Nor raw: pyserial 3.5 then
# writes bytes to that text stream, which fails on the first byte read.
SPY_OPTIONS: Final = ("color", "all")
ALT_CLASSES: Final = ("Serial", "PosixPollSerial", "VTIMESerial")
_HANDLER_OPTIONS: Final = {"socket": ("logging",), "spy": SPY_OPTIONS, "alt": ("class",)}
_REFUSED_SCHEMES: Final = {
    "rfc2217": "rfc2217:// ports have no file descriptor for the asyncio serial transport; "
    "put the device server in raw TCP mode and use socket://host:port",
    "loop": "pyserial loop:// does not work with the asyncio serial transport",
    "cp2110": "cp2110:// (HID) ports have no file descriptor for the asyncio serial transport",
}


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    """A scanner that listens on TCP; the daemon connects."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SerialEndpoint:
    """A device path or pyserial URL, opened through pyserial-asyncio-fast."""

    url: str  # what pyserial's serial_for_url gets: a device path or socket://, hwgrep://...
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    xonxoff: bool = False
    rtscts: bool = False
    dsrdtr: bool = False

    def __str__(self) -> str:
        return self.url


ScannerEndpoint = TcpEndpoint | SerialEndpoint


def parse_scanner_url(url: str) -> ScannerEndpoint:
    """Parse and check `scanner[].url`; AddressError names the URL and what is wrong."""
    text = url.strip()
    if not text:
        raise AddressError("scanner URL is empty")
    if "://" not in text:
        # A plain device path, optionally with serial options: /dev/ttyUSB0?baudrate=115200.
        path, _, query = text.partition("?")
        parsed = _Url("scanner", text, shown=url)
        if not path.startswith("/"):
            raise parsed.error(
                "neither an absolute device path nor a URL "
                "(tcp://host:port, serial:///dev/tty..., socket://host:port)"
            )
        return _serial_device(parsed, path, query)
    parsed = _Url("scanner", text, shown=url)
    parts = parsed.parts
    scheme = parts.scheme.lower()
    if parts.fragment:
        raise parsed.error("has a fragment (#...)")
    if scheme == "tcp":
        if parts.path not in ("", "/") or parts.query:
            raise parsed.error("tcp:// takes only host:port")
        return TcpEndpoint(*parsed.host_port())
    if scheme == "serial":
        if parts.netloc or not parts.path.startswith("/"):
            raise parsed.error("needs serial:///dev/ttyS0 (three slashes, an absolute path)")
        return _serial_device(parsed, parts.path, parts.query)
    if scheme in _REFUSED_SCHEMES:
        raise parsed.error(_REFUSED_SCHEMES[scheme])
    if scheme in (*_HANDLER_OPTIONS, "hwgrep"):
        return _pyserial_url(parsed, scheme)
    raise parsed.error(
        f"unknown scheme {parts.scheme!r}; use tcp://, serial://, socket://, hwgrep://, "
        "spy://, alt:// or a device path"
    )


def _serial_device(parsed: _Url, path: str, query: str) -> SerialEndpoint:
    options = parsed.query(query)
    parsed.no_unknown(options, _SCANNER_SERIAL_OPTIONS)
    return _serial_endpoint(path, _serial_line(parsed, options, _SCANNER_LINE))


def _serial_endpoint(target: str, line: _Line) -> SerialEndpoint:
    return SerialEndpoint(
        target,
        baudrate=line.baudrate,
        bytesize=line.bytesize,
        parity=line.parity,
        stopbits=line.stopbits,
        xonxoff=line.xonxoff,
        rtscts=line.rtscts,
        dsrdtr=line.dsrdtr,
    )


def _pyserial_url(parsed: _Url, scheme: str) -> SerialEndpoint:
    """A pyserial URL handler: our serial options are taken out of the query (they are
    Serial() arguments), the handler's own options stay in the URL pyserial gets."""
    parts = parsed.parts
    options = parsed.query(flags=(*SPY_OPTIONS, "raw") if scheme == "spy" else ())
    theirs = {k: v for k, v in options.items() if k not in _SCANNER_SERIAL_OPTIONS}
    ours = {k: v for k, v in options.items() if k in _SCANNER_SERIAL_OPTIONS}
    if scheme == "spy" and {"file", "raw"} & set(theirs):
        raise parsed.error("spy:// writes a hexdump to standard error (the log): no file=, no raw")
    parsed.no_unknown(theirs, _HANDLER_OPTIONS.get(scheme, ()))
    if scheme == "socket":
        parsed.host_port()
        level = theirs.get("logging", "info")
        if level not in SOCKET_LOGGING_LEVELS:
            raise parsed.error(f"logging must be {', '.join(SOCKET_LOGGING_LEVELS)}, not {level!r}")
    elif scheme == "hwgrep":
        if "?" in parsed.raw and not parts.query:
            # urlsplit took the ? for the start of the (empty) serial options.
            raise parsed.error("a ? in a hwgrep pattern starts the serial options; use {0,1}")
        _check_hwgrep(parsed, parts.netloc + parts.path)
    elif not (parts.netloc + parts.path).startswith("/"):
        raise parsed.error(f"needs {scheme}:///dev/ttyS0 (three slashes, an absolute path)")
    if scheme == "alt" and theirs.get("class", "Serial") not in ALT_CLASSES:
        raise parsed.error(f"class must be {', '.join(ALT_CLASSES)}, not {theirs['class']!r}")
    query = urlencode(theirs)
    target = f"{scheme}://{parts.netloc}{parts.path}" + (f"?{query}" if query else "")
    return _serial_endpoint(target, _serial_line(parsed, ours, _SCANNER_LINE))


def _check_hwgrep(parsed: _Url, rest: str) -> None:
    """`hwgrep://REGEXP&n=N&skip_busy`: the handler's options follow the pattern after `&`."""
    pattern, *options = rest.split("&")
    if not pattern:
        raise parsed.error("no pattern after hwgrep:// (hwgrep://VID:PID)")
    for option in options:
        key, _, value = option.partition("=")
        # pyserial counts from 1 but refuses n=1 (leave n out for the first match).
        if key == "n" and value.isdigit() and int(value) >= 2:
            continue
        if key == "skip_busy" and not value:
            continue
        raise parsed.error(f"hwgrep option {option!r} is not n=N (N >= 2) or skip_busy")


# --- MQTT -------------------------------------------------------------------------------------

_MQTT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """Where the broker is, from an mqtt:// or mqtts:// URL; credentials percent-decoded."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """host:port, for a status line."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def shown(self) -> str:
        """scheme://host:port: what logs show (never the credentials)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.address}"


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """Parse and check `mqtt.url`: `mqtt://[user[:password]@]host[:port]` or mqtts://."""
    parsed = _Url("MQTT", url)
    parts = parsed.parts
    if parts.scheme not in _MQTT_PORTS:
        raise parsed.error("must start with mqtt:// or mqtts:// (mqtt://host:port)")
    host, port = parsed.host_port(_MQTT_PORTS[parts.scheme])
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise parsed.error("must be only scheme, host and port; give the topic prefix apart")
    return MqttEndpoint(
        host=host,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def parse_mqtt_urls(value: str | Sequence[str]) -> tuple[MqttEndpoint, ...]:
    """Parse and check `mqtt.url` as one URL or a list of the nodes of one clustered broker
    (docs/cluster.md): every URL as `parse_mqtt_url` says; a list not empty, all mqtt:// or
    all mqtts://, no node (host and port) twice."""
    if isinstance(value, str):
        return (parse_mqtt_url(value),)
    if not value:
        raise AddressError("MQTT URL list is empty: give one URL, or the nodes of the cluster")
    endpoints = []
    for i, url in enumerate(value):
        try:
            endpoints.append(parse_mqtt_url(url))
        except AddressError as exc:
            raise AddressError(f"node {i + 1}: {exc}") from None
    if len({e.tls for e in endpoints}) > 1:
        raise AddressError(
            "MQTT URL list mixes mqtt:// and mqtts://: the nodes of one cluster share a scheme"
        )
    seen: set[tuple[str, int]] = set()
    for i, e in enumerate(endpoints):
        if (e.host.lower(), e.port) in seen:
            raise AddressError(f"MQTT URL list: node {i + 1} ({e.shown}) is given twice")
        seen.add((e.host.lower(), e.port))
    return tuple(endpoints)
