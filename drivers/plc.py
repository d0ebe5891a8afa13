"""The host side of the PLC handshake (docs/interfaces.md section 3) over Modbus TCP or RTU.

One task owns the Modbus client and runs the poll cycle; everything else talks to it
through callbacks (requests, confirmations, chute status, link state) and `queue_reply`.
What to read and write is `drivers.handshake.Handshake`'s to say (it does no I/O); this
module does the awaits, the timing and the reconnects. A cycle is: read the header; read new
request slots, hand them to the handler (which may queue replies at once), write the replies
and then `req_ack`+`rep_head` in one write; read new confirmations and write `conf_ack`; bump
the host heartbeat every 250 ms; read the chute status block every
`chute_status_interval_ms`. A queued reply wakes the loop so that a reply decided outside a
poll (a late scan, a timeout) is written without waiting for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import serial
import structlog
from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from drivers import registers as R  # noqa: N812  (R.X reads like the register map)
from drivers.handshake import (
    Handshake,
    LinkChange,
    PlcError,
    PlcStats,
    PlcTimeoutError,
    Read,
    Write,
    chute_reads,
    chute_status,
)
from sorter.addresses import PlcEndpoint, parse_plc_url
from sorter.backoff import Backoff
from sorter.ports import Confirmation, Ring, SortRequest
from sorter.rtu_budget import read_bytes, transaction_s

__all__ = [
    "PlcEndpoint",
    "PlcError",
    "PlcHandler",
    "PlcLink",
    "PlcStats",
    "PlcTimeoutError",
    "parse_plc_url",
]

log = structlog.get_logger(__name__)

HOST_HEARTBEAT_INTERVAL_NS = 250_000_000
# While a read waits for its request (`expect_request`): the poll interval then.
READ_AHEAD_POLL_S = 0.001
# How long a read keeps the link polling for its request at most: one poll interval, but
# no more than this, so that a slow poll interval does not mean a thousand reads a read.
READ_AHEAD_MAX_NS = 20_000_000

_ModbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient


def _raise_if_cancelling() -> None:
    """pymodbus waits with asyncio.wait_for, which on Python 3.11 can swallow a cancel that
    lands as its answer arrives; a daemon stopping its TaskGroup would then hang."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _what(call: Read | Write) -> str:
    """A Modbus call in words, for the error that names it."""
    if isinstance(call, Read):
        return f"read {call.count} registers at {call.address}"
    return f"write {len(call.values)} registers at {call.address}"


def _link_error(what: str, exc: BaseException) -> PlcError:
    """A failed Modbus call as our error; no answer in time is a PlcTimeoutError. pymodbus
    reports a request that timed out as a ModbusIOException saying "No response"."""
    if isinstance(exc, TimeoutError) or "No response" in str(exc):
        return PlcTimeoutError(f"{what}: {exc}")
    return PlcError(f"{what}: {exc}")


class PlcHandler(Protocol):
    """What the pipeline hears from the PLC. Called on the event loop, must not block."""

    def on_requests(self, requests: Sequence[SortRequest]) -> None: ...
    def on_confirmations(self, confirmations: Sequence[Confirmation]) -> None: ...
    def on_chute_status(self, first_chute: int, status: Sequence[int]) -> None: ...
    def on_link_state(self, connected: bool, reason: str) -> None: ...
    def on_counters_jumped(self, ring: Ring) -> None:
        """A ring jumped: a PLC restart with its counters reset, a PLC that lost the host's
        registers, or a ring overrun. The PLC may now reuse (tracking_id, seq) pairs it used
        before: they are new messages. Called for the request ring before its new requests
        are handed over, for the confirmation ring after the confirmations read at the jump
        (stale slots are dropped by then)."""
        ...


def _request_timeout_s(endpoint: PlcEndpoint, request_timeout_ms: int) -> float:
    """The configured timeout, raised on a serial line so that the longest transaction (a
    125-register read) fits with room for the PLC's turnaround, or a slow line would never
    get one answer."""
    timeout_s = request_timeout_ms / 1000
    if endpoint.kind != "rtu":
        return timeout_s
    floor_s = 1.5 * transaction_s(endpoint.serial, read_bytes(R.MAX_READ_REGS)) + 0.02
    if timeout_s >= floor_s:
        return timeout_s
    log.warning(
        "plc request timeout raised for the serial line",
        configured_ms=request_timeout_ms,
        used_ms=round(floor_s * 1000),
        line=endpoint.serial.describe(),
    )
    return floor_s


def _chute_status_interval_ns(endpoint: PlcEndpoint, max_chute: int, configured_ns: int) -> int:
    """The configured interval, stretched on a serial line so that the chute block takes at
    most a fifth of it: the handshake must keep most of a slow line."""
    if endpoint.kind != "rtu" or max_chute <= 0:
        return configured_ns
    block_s = 0.0
    left = max_chute
    while left:
        n = min(left, R.MAX_READ_REGS)
        block_s += transaction_s(endpoint.serial, read_bytes(n))
        left -= n
    return max(configured_ns, int(5 * block_s * 1e9))


def _log_serial_line(
    endpoint: PlcEndpoint, chute_block: Sequence[Read], interval_ns: int, timeout_s: float
) -> None:
    """The figures a slow serial line runs with, once, at the first connect."""
    block_s = sum(transaction_s(endpoint.serial, read_bytes(read.count)) for read in chute_block)
    log.info(
        "plc serial line",
        line=endpoint.serial.describe(),
        chute_block_ms=round(block_s * 1000, 1),
        chute_status_interval_ms=interval_ns // 1_000_000,
        request_timeout_ms=round(timeout_s * 1000),
    )


def _make_client(endpoint: PlcEndpoint, timeout_s: float) -> _ModbusClient:
    # pymodbus' own reconnect is off (delay 0): PlcLink owns reconnect and resync.
    if endpoint.kind == "tcp":
        return AsyncModbusTcpClient(
            endpoint.host,
            port=endpoint.port,
            framer=FramerType.RTU if endpoint.framer == "rtu" else FramerType.SOCKET,
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
        )
    return AsyncModbusSerialClient(
        endpoint.device,
        framer=FramerType.RTU,
        baudrate=endpoint.serial.baudrate,
        parity=endpoint.serial.parity,
        stopbits=endpoint.serial.stopbits,
        bytesize=endpoint.serial.bytesize,
        handle_local_echo=endpoint.local_echo,
        timeout=timeout_s,
        retries=0,
        reconnect_delay=0,
    )


def _serial_problem(endpoint: PlcEndpoint) -> str:
    """Why the serial device did not open, in words a commissioner can act on.

    pymodbus only logs its reason; opening the port once more with pyserial gets it (at
    most once per backoff step, so a missing adapter costs nothing).
    """
    device = endpoint.device
    if "://" not in device:  # a pyserial URL (socket://, rfc2217://) is no file
        path = Path(device)
        if not path.exists():
            return f"serial device {device} does not exist (adapter unplugged? wrong name?)"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"no permission to open serial device {device} (add the user to dialout)"
    line = endpoint.serial
    try:
        port = serial.serial_for_url(
            device,
            baudrate=line.baudrate,
            parity=line.parity,
            stopbits=line.stopbits,
            bytesize=line.bytesize,
            exclusive=True,
        )
    except (OSError, ValueError) as exc:
        return f"cannot open serial device {device} as {line.describe()}: {exc}"
    port.close()
    return f"cannot open serial device {device}"


class PlcLink:
    """Polls one PLC and keeps the rings in step; reconnects by itself, forever."""

    def __init__(
        self,
        url: str,
        handler: PlcHandler,
        *,
        device_id: int = 1,
        poll_interval_ms: int = 5,
        heartbeat_timeout_ms: int = 1000,
        request_timeout_ms: int = 500,
        chute_status_interval_ms: int = 100,
        max_chute: int = 0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        durable: Callable[[], Awaitable[None]] | None = None,
        poll_on_read: bool | None = None,
    ) -> None:
        self.endpoint = parse_plc_url(url)
        # A serial line (RTU, or RTU frames through a gateway) has no time for extra reads.
        serial = self.endpoint.kind == "rtu" or self.endpoint.framer == "rtu"
        self.poll_on_read = not serial if poll_on_read is None else poll_on_read
        self._read_ahead_until_ns = 0
        self._read_ahead_ns = min(poll_interval_ms * 1_000_000, READ_AHEAD_MAX_NS)
        self.url = url
        self.handler = handler
        self.device_id = device_id
        self.poll_interval_s = poll_interval_ms / 1000
        self.request_timeout_s = _request_timeout_s(self.endpoint, request_timeout_ms)
        self._configured_status_interval_ns = chute_status_interval_ms * 1_000_000
        self.max_chute = max_chute  # the reads of the chute status block follow it
        self.backoff = Backoff(backoff_initial_s, backoff_max_s)
        self.clock_ns = clock_ns
        # Awaited before a write that tells the PLC a step happened (rep_head, req_ack,
        # conf_ack): what the handler journaled for it is then on the disk.
        self._durable = durable
        self.handshake = Handshake(heartbeat_timeout_ns=heartbeat_timeout_ms * 1_000_000)
        self.stats = self.handshake.stats
        self.connected = False
        self._wake = asyncio.Event()
        self._written = asyncio.Event()
        self._client: _ModbusClient | None = None
        self._reported = False
        self._line_logged = False
        # When the last read of the header went out (kept across reconnects: requests left
        # in the ring were written after it); 1 until then.
        self._polled_ns = 1

    @property
    def max_chute(self) -> int:
        """The highest chute of the running plan: the chute status block read each cycle."""
        return self._max_chute

    @max_chute.setter
    def max_chute(self, max_chute: int) -> None:
        # A plan reload may change the chutes: the reads and (on RTU) the status interval,
        # which stretches with the block's wire time, follow at the next status read.
        self._max_chute = min(max_chute, R.MAX_CHUTE)
        self._chute_reads = chute_reads(self._max_chute)
        self.chute_status_interval_ns = _chute_status_interval_ns(
            self.endpoint, self._max_chute, self._configured_status_interval_ns
        )

    @property
    def pending_replies(self) -> int:
        return self.handshake.pending_replies

    async def wait_replies_written(self, timeout_s: float) -> bool:
        """Wait until every queued reply is in the PLC (graceful stop); False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.handshake.pending_replies and self.connected:
                    self._written.clear()
                    await self._written.wait()
        except TimeoutError:
            return False
        return not self.handshake.pending_replies

    def stop_intake(self) -> None:
        """Take no more requests (graceful stop): what the PLC asks from now on stays in its
        ring, unacknowledged, for the next start. Replies, confirmations and heartbeats go
        on."""
        self.handshake.intake = False

    def queue_reply(self, seq: int, tracking_id: int, chute: int) -> None:
        """Queue a destination reply; the poll task writes it as soon as it can."""
        self.handshake.queue_reply(seq, tracking_id, chute)
        self._wake.set()

    def expect_request(self) -> None:
        """A scanner read came whose request is not read yet: poll now, and every
        READ_AHEAD_POLL_S until a request comes or one poll interval (at most
        READ_AHEAD_MAX_NS) has passed, so the request is answered without waiting for the
        next poll (`poll_on_read`)."""
        if not self.poll_on_read:
            return
        now = self.clock_ns()
        if now >= self._read_ahead_until_ns:
            self._wake.set()
        # else the link polls every READ_AHEAD_POLL_S already: a read then waits for that
        # poll, so that reads coming faster than the link's round trip (a scanner reading
        # items the PLC never asks about, a tunnel's two heads) cannot make it poll back
        # to back.
        self._read_ahead_until_ns = now + self._read_ahead_ns

    async def run(self) -> None:
        """Connect, poll, and on any link error report it, back off and start again."""
        while True:
            cycles_before = self.stats.cycles
            reason = "closed"
            try:
                await self._session()
            except PlcError as exc:
                self.stats.errors += 1
                self.stats.last_error = reason = str(exc)
                log.warning("plc link error", url=self.url, error=reason)
            finally:
                self._close()
                self._set_connected(False, reason)
            # A session that polled is a link that worked: start the backoff over.
            if self.stats.cycles > cycles_before:
                self.backoff.reset()
            self.stats.reconnects += 1
            await asyncio.sleep(self.backoff.next_delay_s())

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _set_connected(self, connected: bool, reason: str) -> None:
        # The first failure is reported too, so a PLC that never answers shows on P/devices.
        if connected != self.connected or not self._reported:
            self._reported = True
            self.connected = connected
            log.info("plc link state", url=self.url, connected=connected, reason=reason)
            self.handler.on_link_state(connected, reason)

    # ------------------------------------------------------------------ Modbus calls

    async def _read(self, read: Read) -> list[int]:
        assert self._client is not None
        t0 = time.perf_counter()
        try:
            rr = await self._client.read_holding_registers(
                read.address, count=read.count, device_id=self.device_id
            )
        except (TimeoutError, ModbusException, OSError) as exc:
            raise _link_error(_what(read), exc) from exc
        _raise_if_cancelling()
        self._note_io(t0)
        if rr.isError():
            raise PlcError(f"{_what(read)}: Modbus exception {rr}")
        return read.fit(rr.registers)

    async def _write(self, write: Write) -> None:
        assert self._client is not None
        t0 = time.perf_counter()
        try:
            rr = await self._client.write_registers(
                write.address, write.values, device_id=self.device_id
            )
        except (TimeoutError, ModbusException, OSError) as exc:
            raise _link_error(_what(write), exc) from exc
        _raise_if_cancelling()
        self._note_io(t0)
        if rr.isError():
            raise PlcError(f"{_what(write)}: Modbus exception {rr}")

    def _note_io(self, t0: float) -> None:
        io_ms = (time.perf_counter() - t0) * 1000
        self.stats.io_ms_max = max(self.stats.io_ms_max, io_ms)
        self.stats.last_seen_ns = self.clock_ns()

    async def _read_all(self, reads: Sequence[Read]) -> list[list[int]]:
        return [await self._read(read) for read in reads]

    # ------------------------------------------------------------------ the session

    async def _connect(self) -> None:
        self._client = _make_client(self.endpoint, self.request_timeout_s)
        try:
            async with asyncio.timeout(self.request_timeout_s * 4):
                ok = await self._client.connect()
        except (OSError, TimeoutError, ModbusException) as exc:
            raise _link_error("connect failed", exc) from exc
        _raise_if_cancelling()
        if not ok:
            if self.endpoint.kind == "rtu":
                raise PlcError(_serial_problem(self.endpoint))
            raise PlcError("connect failed")

    async def _session(self) -> None:
        await self._connect()
        if self.endpoint.kind == "rtu" and self._chute_reads and not self._line_logged:
            self._line_logged = True
            _log_serial_line(
                self.endpoint,
                self._chute_reads,
                self.chute_status_interval_ns,
                self.request_timeout_s,
            )
        header = await self._read(Read(0, R.HEADER_COUNT))
        if self.handshake.resume(header, self.clock_ns()):
            self.handler.on_counters_jumped(Ring.REQUESTS)
            self.handler.on_counters_jumped(Ring.CONFIRMATIONS)
        self._set_connected(True, "connected")
        now = self.clock_ns()
        next_heartbeat_ns = next_status_ns = now
        while True:
            self.stats.cycles += 1
            now = self.clock_ns()
            header = await self._read(Read(0, R.HEADER_COUNT))
            self._link_change(self.handshake.watch_heartbeat(header, now))
            await self._take_requests(header, self._polled_ns)
            self._polled_ns = now  # the ring held no later request when this read went out
            await self._flush_replies()
            await self._take_confirmations(header)
            now = self.clock_ns()
            if now >= next_heartbeat_ns:
                await self._write(self.handshake.heartbeat_write())
                next_heartbeat_ns = now + HOST_HEARTBEAT_INTERVAL_NS
            if self.max_chute > 0 and now >= next_status_ns:
                status = chute_status(self._chute_reads, await self._read_all(self._chute_reads))
                self.handler.on_chute_status(1, status)
                next_status_ns = now + self.chute_status_interval_ns
            await self._idle(next_heartbeat_ns)

    async def _idle(self, next_heartbeat_ns: int) -> None:
        """Sleep until the next poll or heartbeat, or less when a reply is queued; then
        write whatever replies came in meanwhile."""
        self._wake.clear()
        if not self.handshake.pending_replies:
            now = self.clock_ns()
            poll_s = self.poll_interval_s
            if now < self._read_ahead_until_ns:
                poll_s = min(poll_s, READ_AHEAD_POLL_S)
            sleep_s = min(poll_s, (next_heartbeat_ns - now) / 1e9)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(sleep_s, 0.0)):
                    await self._wake.wait()
        while self.handshake.pending_replies:
            await self._flush_replies()

    def _link_change(self, change: LinkChange | None) -> None:
        if change is not None:
            self._set_connected(change.connected, change.reason)

    async def _take_requests(self, header: list[int], polled_ns: int) -> None:
        """`polled_ns`: when the previous read of the header went out; the requests it did
        not show were written after that (1 before the first: any time before)."""
        plan = self.handshake.plan_requests(header)
        if plan is None:
            return
        if plan.jumped:
            self.handler.on_counters_jumped(Ring.REQUESTS)
        now = self.clock_ns()
        # A slow poll leaves the time each was written open back to the last poll: the
        # pairing of reads without tracking id must know (sorter/tracker_window.py).
        requests = self.handshake.take_requests(
            plan, await self._read_all(plan.reads), now, min(polled_ns, now)
        )
        if requests is None:
            return  # stopped while reading: not handed over, not acknowledged
        self._read_ahead_until_ns = 0  # the request a read waited for is likely here
        self.handler.on_requests(requests)
        # Replies decided in on_requests go out before the ack, so a PLC that sees the ack
        # move already finds the replies of the same cycle in its ring.
        await self._flush_replies(ack=True)

    async def _flush_replies(self, ack: bool = False) -> None:
        writes = self.handshake.reply_writes(ack=ack)
        for i, write in enumerate(writes, 1):
            if i == len(writes) and self._durable is not None:
                # The last write moves req_ack and rep_head; the reply slots before it went
                # out while the journal's sync ran.
                await self._durable()
            await self._write(write)
        if self.handshake.replies_written():
            self._written.set()

    async def _take_confirmations(self, header: list[int]) -> None:
        plan = self.handshake.plan_confirmations(header)
        if plan is None:
            return
        now = self.clock_ns()
        confirmations, ack = self.handshake.take_confirmations(
            plan, await self._read_all(plan.reads), now
        )
        self.handler.on_confirmations(confirmations)
        if plan.jumped:
            self.handler.on_counters_jumped(Ring.CONFIRMATIONS)
        if self._durable is not None:
            await self._durable()
        await self._write(ack)
