"""Fixed-mount scanners: the receive side of the telegram link over TCP or serial.

`StreamScanner` owns one link. It does its I/O inside `reads()`, in the task that consumes
it (one named task per stage, as elsewhere in the pipeline): no hidden background task, and
a consumer that stops reading applies back-pressure to the scanner instead of growing a
queue. When the link fails or cannot be opened it reconnects with capped, jittered
exponential backoff; I/O errors never leave `reads()`, they show in `connected`, `errors`,
the log and the `on_state_change` callback.

URLs (INTERFACES.md sections 2 and 4):
- `tcp://host:port`: the daemon connects to the scanner, which listens;
- `serial:///dev/ttyS0?baudrate=115200&parity=E` or a plain `/dev/ttyS0?baudrate=...`;
- `socket://host:port` and `hwgrep://VID:PID` (pyserial URL handlers).
Serial options in the query: baudrate, bytesize, parity, stopbits, xonxoff, rtscts, dsrdtr.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol, Self
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

import serial_asyncio_fast
import structlog

from drivers.telegram import TelegramDecoder, TelegramFormat, TelegramStats, get_format
from sorter.ports import ScanRead

log = structlog.get_logger(__name__)

_READ_CHUNK_BYTES: Final = 65536
_CLOSE_TIMEOUT_S: Final = 1.0
# A connection that lasted this long, or carried a valid telegram, was a real one: the next
# failure starts the backoff from the beginning instead of continuing to grow it.
_STABLE_CONNECTION_S: Final = 1.0

_SERIAL_OPTIONS: Final = (
    "baudrate",
    "bytesize",
    "parity",
    "stopbits",
    "xonxoff",
    "rtscts",
    "dsrdtr",
)
_PASSTHROUGH_SCHEMES: Final = ("socket", "hwgrep")
_UNSUPPORTED_SCHEMES: Final = {
    "loop": "pyserial loop:// does not work with the asyncio serial transport",
    "rfc2217": "rfc2217:// ports have no file descriptor for the asyncio serial transport",
}
_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off")


class Scanner(Protocol):
    """A source of scan reads: real (StreamScanner), in memory (InMemoryScanner)."""

    name: str

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc: object) -> None: ...
    def reads(self) -> AsyncIterator[ScanRead]: ...


StateCallback = Callable[[str, bool], None]


# --- URLs ---------------------------------------------------------------------------------


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

    url: str  # what pyserial's serial_for_url gets: a device path or socket://, hwgrep://
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


def _host_port(url: str, parts: SplitResult) -> tuple[str, int]:
    if not parts.hostname:
        raise ValueError(f"scanner url {url!r} has no host")
    try:
        port = parts.port  # a property that raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"scanner url {url!r} has a bad port: {exc}") from exc
    if port is None or port == 0:
        raise ValueError(f"scanner url {url!r} needs a port in 1..65535")
    return parts.hostname, port


def _flag(url: str, key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"scanner url {url!r}: {key}={value!r} is not a boolean (0/1, true/false)")


def _serial_endpoint(url: str, target: str, options: dict[str, str]) -> SerialEndpoint:
    default = SerialEndpoint(target)
    try:
        baudrate = int(options.get("baudrate", default.baudrate))
        bytesize = int(options.get("bytesize", default.bytesize))
        parity = options.get("parity", default.parity).upper()
        stopbits = float(options.get("stopbits", default.stopbits))
    except ValueError as exc:
        raise ValueError(f"scanner url {url!r}: {exc}") from exc
    if baudrate <= 0:
        raise ValueError(f"scanner url {url!r}: baudrate must be positive")
    if bytesize not in (5, 6, 7, 8):
        raise ValueError(f"scanner url {url!r}: bytesize must be 5, 6, 7 or 8")
    if parity not in ("N", "E", "O", "M", "S"):
        raise ValueError(f"scanner url {url!r}: parity must be one of N, E, O, M, S")
    if stopbits not in (1.0, 1.5, 2.0):
        raise ValueError(f"scanner url {url!r}: stopbits must be 1, 1.5 or 2")
    return SerialEndpoint(
        target,
        baudrate=baudrate,
        bytesize=bytesize,
        parity=parity,
        stopbits=stopbits,
        xonxoff=_flag(url, "xonxoff", options.get("xonxoff", "0")),
        rtscts=_flag(url, "rtscts", options.get("rtscts", "0")),
        dsrdtr=_flag(url, "dsrdtr", options.get("dsrdtr", "0")),
    )


def _query_options(url: str, query: str) -> list[tuple[str, str]]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ValueError(f"scanner url {url!r} has a malformed query: {exc}") from exc
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        raise ValueError(f"scanner url {url!r} repeats {', '.join(duplicated)}")
    for key, value in pairs:
        if not value:
            raise ValueError(f"scanner url {url!r}: {key} has no value")
    return pairs


def parse_scanner_url(url: str) -> ScannerEndpoint:
    """Validate a scanner URL once, at the edge; ValueError says what is wrong with it."""
    text = url.strip()
    if not text:
        raise ValueError("scanner url is empty")
    if "://" not in text:
        # A plain device path, optionally with serial options: /dev/ttyUSB0?baudrate=115200.
        path, _, query = text.partition("?")
        if not path.startswith("/"):
            raise ValueError(
                f"scanner url {url!r} is neither an absolute device path nor a URL "
                "(tcp://host:port, serial:///dev/tty..., socket://host:port)"
            )
        return _serial_device(url, path, query)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if parts.fragment:
        raise ValueError(f"scanner url {url!r} has a fragment")
    if scheme == "tcp":
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"scanner url {url!r}: tcp:// takes only host:port")
        host, port = _host_port(url, parts)
        return TcpEndpoint(host, port)
    if scheme == "serial":
        if parts.netloc:
            raise ValueError(
                f"scanner url {url!r}: write serial:///dev/ttyS0 (three slashes, absolute path)"
            )
        if not parts.path.startswith("/"):
            raise ValueError(f"scanner url {url!r} has no device path")
        return _serial_device(url, parts.path, parts.query)
    if scheme in _PASSTHROUGH_SCHEMES:
        if scheme == "socket":
            _host_port(url, parts)
        elif not parts.netloc:
            raise ValueError(f"scanner url {url!r} has nothing after {scheme}://")
        # Serial options are ours (Serial() keyword arguments); the rest of the query belongs
        # to the pyserial URL handler, which validates it itself.
        pairs = _query_options(url, parts.query)
        ours = {key: value for key, value in pairs if key in _SERIAL_OPTIONS}
        theirs = [(key, value) for key, value in pairs if key not in _SERIAL_OPTIONS]
        if scheme == "socket" and any(key != "logging" for key, _ in theirs):
            # pyserial would only refuse these when connecting, over and over.
            raise ValueError(
                f"scanner url {url!r}: socket:// takes only logging= and serial options"
            )
        target = urlunsplit((scheme, parts.netloc, parts.path, urlencode(theirs), ""))
        return _serial_endpoint(url, target, ours)
    if scheme in _UNSUPPORTED_SCHEMES:
        raise ValueError(f"scanner url {url!r}: {_UNSUPPORTED_SCHEMES[scheme]}")
    raise ValueError(
        f"scanner url {url!r} has unknown scheme {parts.scheme!r}; "
        "use tcp://, serial://, socket://, hwgrep:// or a device path"
    )


def _serial_device(url: str, path: str, query: str) -> SerialEndpoint:
    options = dict(_query_options(url, query))
    unknown = sorted(set(options) - set(_SERIAL_OPTIONS))
    if unknown:
        raise ValueError(
            f"scanner url {url!r}: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(_SERIAL_OPTIONS)}"
        )
    return _serial_endpoint(url, path, options)


# --- the real scanner ---------------------------------------------------------------------


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened_ns: int
    got_telegram: bool = False


class _ReadIterator:
    """`reads()` as a plain object: unlike an async generator, a consumer that breaks out
    leaves nothing for the event loop to finalize later."""

    __slots__ = ("_next",)

    def __init__(self, next_read: Callable[[], Awaitable[ScanRead]]) -> None:
        self._next = next_read

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ScanRead:
        return await self._next()


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # The link is going away anyway: an error or a hang while closing adds nothing, but
    # waiting (bounded) makes sure the socket or device is released before we go on.
    with contextlib.suppress(OSError):
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await writer.wait_closed()


class StreamScanner:
    """A scanner on a TCP or serial link, reconnecting by itself.

    Use as `async with StreamScanner(...) as scanner: async for read in scanner.reads()`.
    The link is opened by the first `reads()` iteration and kept open across iterations;
    heartbeats update `last_seen_ns` but are not yielded. Iteration ends after `__aexit__`.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        telegram_format: str | TelegramFormat = "index",
        backoff_initial_s: float = 0.1,
        backoff_cap_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        idle_timeout_s: float | None = None,
        garbage_log_interval_s: float = 10.0,
        on_state_change: StateCallback | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        rng: random.Random | None = None,
    ) -> None:
        """`idle_timeout_s`: drop and reopen a link silent for that long (not even a
        heartbeat); None trusts the link until it fails, which a half-open TCP connection
        never does. `telegram_format`: a preset name (with its default settings) or a
        format from `drivers.telegram.format_from_options`. Raises ValueError for a bad
        URL, format or timing."""
        if not 0 < backoff_initial_s <= backoff_cap_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_cap_s")
        if connect_timeout_s <= 0 or (idle_timeout_s is not None and idle_timeout_s <= 0):
            raise ValueError("timeouts must be positive")
        fmt: TelegramFormat
        if isinstance(telegram_format, str):
            try:
                fmt = get_format(telegram_format)
            except KeyError as exc:
                raise ValueError(exc.args[0]) from exc
        else:
            fmt = telegram_format
        self.name = name
        self.url = url
        self.endpoint: ScannerEndpoint = parse_scanner_url(url)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_cap_s = backoff_cap_s
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.on_state_change = on_state_change
        self.stats = TelegramStats()
        self.errors = 0  # failed connection attempts plus links lost
        self.connects = 0
        self.last_seen_ns: int | None = None  # monotonic ns of the last valid telegram
        self.last_error: str | None = None
        self._garbage_log_interval_ns = int(garbage_log_interval_s * 1e9)
        self._clock_ns = clock_ns
        self._rng = rng or random.Random()
        self._decoder = TelegramDecoder(name, clock_ns, telegram_format=fmt, stats=self.stats)
        self._state: Literal["new", "open", "closed"] = "new"
        self._closed_event = asyncio.Event()
        self._lock = asyncio.Lock()
        self._conn: _Connection | None = None
        self._ready: deque[ScanRead] = deque()
        self._failures = 0
        self._wait_before_connect = False
        self._unreachable_logged = False
        self._garbage_logged: tuple[int, int, int] = (0, 0, 0)
        self._garbage_logged_ns: int | None = None
        self._log = log.bind(scanner=name, url=url)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def buffered_bytes(self) -> int:
        """Bytes of a telegram still waiting for its end."""
        return self._decoder.buffered_bytes

    async def __aenter__(self) -> Self:
        self._state = "open"
        self._closed_event.clear()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._state != "open":
            return
        self._state = "closed"
        self._closed_event.set()
        conn = self._conn
        if conn is not None:
            # A consumer blocked in a read sees EOF on this connection and then the closed
            # state, and ends its iteration.
            await self._drop(conn, "closed", error=False)

    def reads(self) -> AsyncIterator[ScanRead]:
        """Reads as they arrive, forever, until the scanner is closed.

        Several consumers share the reads (each read goes to one of them).
        """
        return _ReadIterator(self._next_read)

    async def _next_read(self) -> ScanRead:
        async with self._lock:
            while True:
                if self._ready:
                    return self._ready.popleft()
                if self._state == "closed":
                    raise StopAsyncIteration
                if self._state == "new":
                    raise RuntimeError(f"scanner {self.name}: use 'async with' before reads()")
                conn = self._conn
                if conn is None:
                    await self._connect()
                    continue
                try:
                    if self.idle_timeout_s is None:
                        data = await conn.reader.read(_READ_CHUNK_BYTES)
                    else:
                        async with asyncio.timeout(self.idle_timeout_s):
                            data = await conn.reader.read(_READ_CHUNK_BYTES)
                except TimeoutError:
                    await self._drop(conn, f"silent for {self.idle_timeout_s} s", error=True)
                    continue
                except OSError as exc:  # serial.SerialException is an OSError too
                    await self._drop(conn, f"read failed: {exc!r}", error=True)
                    continue
                if not data:
                    await self._drop(conn, "closed by the scanner", error=True)
                    continue
                self._on_data(conn, data)

    def _on_data(self, conn: _Connection, data: bytes) -> None:
        items = self._decoder.feed(data)
        if items:
            self.last_seen_ns = self._clock_ns()
            conn.got_telegram = True
            self._ready.extend(item for item in items if isinstance(item, ScanRead))
        self._maybe_log_garbage()

    async def _connect(self) -> None:
        """Open the link, retrying with backoff; return once open or closed."""
        while self._state == "open":
            if self._wait_before_connect:
                await self._sleep_unless_closed(self._next_delay_s())
                if self._state != "open":
                    return
            self._wait_before_connect = True
            try:
                conn = await self._open()
            except (OSError, ValueError) as exc:
                # ValueError: pyserial rejecting settings the device does not support. It
                # will not fix itself, but it must not stop the other devices either.
                self.errors += 1
                self.last_error = repr(exc)
                if not self._unreachable_logged:
                    self._log.warning("scanner unreachable, retrying", error=repr(exc))
                    self._unreachable_logged = True
                else:
                    self._log.debug("scanner still unreachable", error=repr(exc))
                continue
            if self._state != "open":  # closed while connecting
                await _close_writer(conn.writer)
                return
            self._conn = conn
            self.connects += 1
            self._wait_before_connect = False
            self._unreachable_logged = False
            self._set_connected(True, "connected")
            return

    async def _open(self) -> _Connection:
        endpoint = self.endpoint
        async with asyncio.timeout(self.connect_timeout_s):
            if isinstance(endpoint, TcpEndpoint):
                reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    # Lets the kernel notice a scanner that vanished without a FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            else:
                reader, writer = await serial_asyncio_fast.open_serial_connection(
                    url=endpoint.url,
                    baudrate=endpoint.baudrate,
                    bytesize=endpoint.bytesize,
                    parity=endpoint.parity,
                    stopbits=endpoint.stopbits,
                    xonxoff=endpoint.xonxoff,
                    rtscts=endpoint.rtscts,
                    dsrdtr=endpoint.dsrdtr,
                )
        return _Connection(reader, writer, self._clock_ns())

    async def _drop(self, conn: _Connection, reason: str, *, error: bool) -> None:
        if self._conn is not conn:
            return  # already dropped, e.g. by __aexit__ while a read was pending
        self._conn = None
        lived_s = (self._clock_ns() - conn.opened_ns) / 1e9
        if conn.got_telegram or lived_s >= _STABLE_CONNECTION_S:
            self._failures = 0
        self._wait_before_connect = True
        self._decoder.reset()  # a cut frame must not be glued to the next link's bytes
        if error:
            self.errors += 1
            self.last_error = reason
        self._set_connected(False, reason)
        self._maybe_log_garbage()
        await _close_writer(conn.writer)

    def _next_delay_s(self) -> float:
        base_s = min(self.backoff_cap_s, self.backoff_initial_s * 2.0 ** min(self._failures, 32))
        self._failures += 1
        # Jitter keeps many scanners that lost the same switch from reconnecting in step.
        return base_s * self._rng.uniform(0.5, 1.0)

    async def _sleep_unless_closed(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._closed_event.wait()

    def _set_connected(self, connected: bool, reason: str) -> None:
        self._log.info(
            "scanner connected" if connected else "scanner disconnected",
            reason=reason,
            errors=self.errors,
        )
        if self.on_state_change is not None:
            self.on_state_change(self.name, connected)

    def _maybe_log_garbage(self) -> None:
        stats = self.stats
        counts = (stats.garbage_bytes, stats.bad_telegrams, stats.oversize_frames)
        if counts == self._garbage_logged:
            return
        now_ns = self._clock_ns()
        last_ns = self._garbage_logged_ns
        if last_ns is not None and now_ns - last_ns < self._garbage_log_interval_ns:
            return  # bounded: a babbling line must not flood the log
        before = self._garbage_logged
        self._log.warning(
            "scanner sent garbage",
            garbage_bytes=counts[0] - before[0],
            bad_telegrams=counts[1] - before[1],
            oversize_frames=counts[2] - before[2],
            total_garbage_bytes=counts[0],
            total_bad_telegrams=counts[1],
            total_oversize_frames=counts[2],
            last_bad_telegram=self._decoder.last_error,
        )
        self._garbage_logged = counts
        self._garbage_logged_ns = now_ns


# --- in memory ----------------------------------------------------------------------------


class InMemoryScanner:
    """A scanner fed by the test itself through `put`; the pipeline cannot tell it apart."""

    def __init__(self, name: str, *, maxsize: int = 1024) -> None:
        self.name = name
        self.stats = TelegramStats()
        self.errors = 0
        self.connected = False
        self.last_seen_ns: int | None = None
        self._queue: asyncio.Queue[ScanRead | None] = asyncio.Queue(maxsize)
        self._closed = False

    async def __aenter__(self) -> Self:
        self._closed = False
        self.connected = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._closed:
            return
        self._closed = True
        self.connected = False
        if self._queue.empty():
            self._queue.put_nowait(None)  # wakes a consumer waiting in get()

    def put(self, read: ScanRead) -> None:
        """Queue a read; asyncio.QueueFull when nobody consumes (overload must show)."""
        if self._closed:
            raise RuntimeError(f"scanner {self.name} is closed")
        self._queue.put_nowait(read)
        self.last_seen_ns = read.received_ns
        if read.codes:
            self.stats.reads += 1
        else:
            self.stats.noreads += 1

    def reads(self) -> AsyncIterator[ScanRead]:
        return _ReadIterator(self._next_read)

    async def _next_read(self) -> ScanRead:
        while True:
            if self._closed and self._queue.empty():
                raise StopAsyncIteration
            read = await self._queue.get()
            if read is not None:
                return read
            if self._closed:
                if self._queue.empty():
                    self._queue.put_nowait(None)  # for the next waiting consumer, if any
                raise StopAsyncIteration
            # else: a stale wake-up from before a re-open
