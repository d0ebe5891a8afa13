"""Fixed-mount scanners: the receive side of the telegram link over TCP or serial.

`StreamScanner` owns one link. It does its I/O inside `reads()`, in the task that consumes
it (one named task per stage, as elsewhere in the pipeline): no hidden background task, and
a consumer that stops reading applies back-pressure to the scanner instead of growing a
queue. When the link fails or cannot be opened it reconnects with capped, jittered
exponential backoff; I/O errors never leave `reads()`, they show in `connected`, `errors`,
the log and the `on_state_change` callback.

URLs (docs/interfaces.md sections 2 and 4) are parsed by `sorter.addresses.parse_scanner_url`,
the parser `sorterd check-config` uses too: `tcp://host:port` (the daemon connects to the
scanner, which listens), a device path or `serial:///dev/ttyS0?baudrate=115200`, and the
pyserial URLs the asyncio serial transport can open (socket://, hwgrep://, spy://, alt://).
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
from typing import Any, Final, Literal, Protocol, Self

import serial_asyncio_fast
import structlog

from drivers.telegram import TelegramDecoder, TelegramFormat, TelegramStats, get_format
from sorter.addresses import ScannerEndpoint, TcpEndpoint, parse_scanner_url
from sorter.backoff import Backoff
from sorter.ports import ScanRead

__all__ = ["InMemoryScanner", "Scanner", "StateCallback", "StreamScanner"]

log = structlog.get_logger(__name__)

_READ_CHUNK_BYTES: Final = 65536
_CLOSE_TIMEOUT_S: Final = 1.0
# A connection that lasted this long, or carried a valid telegram, was a real one: the next
# failure starts the backoff from the beginning instead of continuing to grow it.
_STABLE_CONNECTION_S: Final = 1.0


class Scanner(Protocol):
    """A source of scan reads: real (StreamScanner), in memory (InMemoryScanner)."""

    name: str

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc: object) -> None: ...
    def reads(self) -> AsyncIterator[ScanRead]: ...


StateCallback = Callable[[str, bool], None]


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


class _GarbageLog:
    """Logs what a scanner sent that was not a telegram, at most once per interval: a
    babbling line must not flood the log."""

    __slots__ = ("_clock_ns", "_decoder", "_interval_ns", "_log", "_logged", "_logged_ns")

    def __init__(
        self, decoder: TelegramDecoder, interval_s: float, clock_ns: Callable[[], int], logger: Any
    ) -> None:
        self._decoder = decoder
        self._interval_ns = int(interval_s * 1e9)
        self._clock_ns = clock_ns
        self._log = logger
        self._logged: tuple[int, int, int] = (0, 0, 0)
        self._logged_ns: int | None = None

    def maybe_log(self, stats: TelegramStats) -> None:
        counts = (stats.garbage_bytes, stats.bad_telegrams, stats.oversize_frames)
        if counts == self._logged:
            return
        now_ns = self._clock_ns()
        if self._logged_ns is not None and now_ns - self._logged_ns < self._interval_ns:
            return
        before = self._logged
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
        self._logged = counts
        self._logged_ns = now_ns


def _telegram_format(telegram_format: str | TelegramFormat) -> TelegramFormat:
    if not isinstance(telegram_format, str):
        return telegram_format
    try:
        return get_format(telegram_format)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from exc


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
        self._clock_ns = clock_ns
        self._backoff = Backoff(backoff_initial_s, backoff_cap_s, rng=rng)
        self._decoder = TelegramDecoder(
            name, clock_ns, telegram_format=_telegram_format(telegram_format), stats=self.stats
        )
        self._state: Literal["new", "open", "closed"] = "new"
        self._closed_event = asyncio.Event()
        self._lock = asyncio.Lock()
        self._conn: _Connection | None = None
        self._ready: deque[ScanRead] = deque()
        self._wait_before_connect = False
        self._unreachable_logged = False
        self._log = log.bind(scanner=name, url=url)
        self._garbage = _GarbageLog(self._decoder, garbage_log_interval_s, clock_ns, self._log)

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
                await self._sleep_unless_closed(self._backoff.next_delay_s())
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
            self._backoff.reset()
        self._wait_before_connect = True
        self._decoder.reset()  # a cut frame must not be glued to the next link's bytes
        if error:
            self.errors += 1
            self.last_error = reason
        self._set_connected(False, reason)
        self._maybe_log_garbage()
        await _close_writer(conn.writer)

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
        self._garbage.maybe_log(self.stats)


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
