"""The host side of the PLC handshake (INTERFACES.md section 3) over Modbus TCP or RTU.

One task owns the Modbus client and runs the poll cycle; everything else talks to it
through callbacks (requests, confirmations, chute status, link state) and `queue_reply`.
A cycle is: read the header; read new request slots, hand them to the handler (which may
queue replies at once), write the replies and then `req_ack`+`rep_head` in one write; read
new confirmations and write `conf_ack`; bump the host heartbeat every 250 ms; read the chute
status block every `chute_status_interval_ms`. A queued reply wakes the loop so that a reply
decided outside a poll (a late scan, a timeout) is written without waiting for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import serial
import structlog
from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from drivers import registers as R  # noqa: N812  (R.X reads like the register map)
from sorter.addresses import PlcEndpoint, parse_plc_url
from sorter.errors import SorterdError
from sorter.ports import Confirmation, Ring, SortRequest
from sorter.rtu_budget import read_bytes, transaction_s

__all__ = ["PlcEndpoint", "PlcError", "PlcHandler", "PlcLink", "PlcStats", "parse_plc_url"]

log = structlog.get_logger(__name__)

HOST_HEARTBEAT_INTERVAL_NS = 250_000_000
DELIVERED_MEMORY = 4096  # confirmations remembered to drop re-reads: 64 rings' worth


def _raise_if_cancelling() -> None:
    """pymodbus waits with asyncio.wait_for, which on Python 3.11 can swallow a cancel that
    lands as its answer arrives; a daemon stopping its TaskGroup would then hang."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class PlcError(SorterdError):
    """The PLC link failed: no answer, a Modbus exception, or an answer that makes no sense."""


class PlcHandler(Protocol):
    """What the pipeline hears from the PLC. Called on the event loop, must not block."""

    def on_requests(self, requests: Sequence[SortRequest]) -> None: ...
    def on_confirmations(self, confirmations: Sequence[Confirmation]) -> None: ...
    def on_chute_status(self, first_chute: int, status: Sequence[int]) -> None: ...
    def on_link_state(self, connected: bool, reason: str) -> None: ...
    def on_counters_jumped(self, ring: Ring) -> None:
        """A ring jumped: a PLC restart with its counters
        reset, a PLC that lost the host's registers, or a ring overrun. The PLC may now
        reuse (tracking_id, seq) pairs it used before: they are new messages. Called for
        the request ring before its new requests are handed over, for the confirmation
        ring after the confirmations read at the jump (stale slots are dropped by then)."""
        ...


@dataclass(slots=True)
class PlcStats:
    cycles: int = 0
    requests: int = 0
    confirmations: int = 0
    replies: int = 0
    errors: int = 0
    reconnects: int = 0
    counter_jumps: int = 0  # a head more than a ring past our ack: PLC restart or overrun
    duplicate_confirmations: int = 0
    bad_confirmations: int = 0
    bad_requests: int = 0
    last_seen_ns: int = 0
    last_error: str = ""
    plc_state: int = -1
    io_ms_max: float = 0.0


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
    ) -> None:
        self.endpoint = parse_plc_url(url)
        self.url = url
        self.handler = handler
        self.device_id = device_id
        self.poll_interval_s = poll_interval_ms / 1000
        self.heartbeat_timeout_ns = heartbeat_timeout_ms * 1_000_000
        self.request_timeout_s = request_timeout_ms / 1000
        if self.endpoint.kind == "rtu":
            # The longest transaction (a 125-register read) must fit in the timeout with
            # room for the PLC's turnaround, or a slow line would never get one answer.
            longest_s = transaction_s(self.endpoint.serial, read_bytes(R.MAX_READ_REGS))
            floor_s = 1.5 * longest_s + 0.02
            if self.request_timeout_s < floor_s:
                log.warning(
                    "plc request timeout raised for the serial line",
                    configured_ms=request_timeout_ms,
                    used_ms=round(floor_s * 1000),
                    line=self.endpoint.serial.describe(),
                )
                self.request_timeout_s = floor_s
        self.chute_status_interval_ns = chute_status_interval_ms * 1_000_000
        self.max_chute = min(max_chute, R.MAX_CHUTE)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.clock_ns = clock_ns
        self.stats = PlcStats()
        self.connected = False
        self._replies: deque[list[int]] = deque()
        self._wake = asyncio.Event()
        self._written = asyncio.Event()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        # Ring positions; synchronised from the PLC's registers on every connect.
        self._req_ack = 0
        self._rep_head = 0
        self._conf_ack = 0
        self._host_heartbeat = 0
        self._last_plc_heartbeat = -1
        self._plc_heartbeat_changed_ns = 0
        self._heartbeat_alive = False
        self._bad_logged_ns = -(10**18)
        self._reported = False
        self._delivered_confirmations: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._line_logged = False
        self._sessions = 0
        self._intake = True
        self._in_flight: tuple[int, int] | None = None  # (first, n) replies whose head write is out

    def _chute_status_interval_ns(self) -> int:
        """The configured interval, stretched on a serial line so that the chute block
        takes at most a fifth of it: the handshake must keep most of a slow line."""
        if self.endpoint.kind != "rtu" or self.max_chute <= 0:
            return self.chute_status_interval_ns
        block_s = 0.0
        left = self.max_chute
        while left:
            n = min(left, R.MAX_READ_REGS)
            block_s += transaction_s(self.endpoint.serial, read_bytes(n))
            left -= n
        interval_ns = max(self.chute_status_interval_ns, int(5 * block_s * 1e9))
        if not self._line_logged:
            self._line_logged = True
            log.info(
                "plc serial line",
                line=self.endpoint.serial.describe(),
                chute_block_ms=round(block_s * 1000, 1),
                chute_status_interval_ms=interval_ns // 1_000_000,
                request_timeout_ms=round(self.request_timeout_s * 1000),
            )
        return interval_ns

    @property
    def pending_replies(self) -> int:
        return len(self._replies)

    async def wait_replies_written(self, timeout_s: float) -> bool:
        """Wait until every queued reply is in the PLC (graceful stop); False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._replies and self.connected:
                    self._written.clear()
                    await self._written.wait()
        except TimeoutError:
            return False
        return not self._replies

    def stop_intake(self) -> None:
        """Take no more requests (graceful stop): what the PLC asks from now on stays in its
        ring, unacknowledged, for the next start. Replies, confirmations and heartbeats go
        on."""
        self._intake = False

    def queue_reply(self, seq: int, tracking_id: int, chute: int) -> None:
        """Queue a destination reply; the poll task writes it as soon as it can."""
        self._replies.append(R.encode_reply(seq, tracking_id, chute))
        self._wake.set()

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        ep = self.endpoint
        # pymodbus' own reconnect is off (delay 0): this class owns reconnect and resync.
        if ep.kind == "tcp":
            return AsyncModbusTcpClient(
                ep.host,
                port=ep.port,
                framer=FramerType.RTU if ep.framer == "rtu" else FramerType.SOCKET,
                timeout=self.request_timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        return AsyncModbusSerialClient(
            ep.device,
            framer=FramerType.RTU,
            baudrate=ep.serial.baudrate,
            parity=ep.serial.parity,
            stopbits=ep.serial.stopbits,
            bytesize=ep.serial.bytesize,
            handle_local_echo=ep.local_echo,
            timeout=self.request_timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    def _serial_problem(self) -> str:
        """Why the serial device did not open, in words a commissioner can act on.

        pymodbus only logs its reason; opening the port once more with pyserial gets it
        (at most once per backoff step, so a missing adapter costs nothing).
        """
        ep = self.endpoint
        device = ep.device
        if "://" not in device:  # a pyserial URL (socket://, rfc2217://) is no file
            path = Path(device)
            if not path.exists():
                return f"serial device {device} does not exist (adapter unplugged? wrong name?)"
            if not os.access(path, os.R_OK | os.W_OK):
                return f"no permission to open serial device {device} (add the user to dialout)"
        try:
            port = serial.serial_for_url(
                device,
                baudrate=ep.serial.baudrate,
                parity=ep.serial.parity,
                stopbits=ep.serial.stopbits,
                bytesize=ep.serial.bytesize,
                exclusive=True,
            )
        except (OSError, ValueError) as exc:
            return f"cannot open serial device {device} as {ep.serial.describe()}: {exc}"
        port.close()
        return f"cannot open serial device {device}"

    async def run(self) -> None:
        """Connect, poll, and on any link error report it, back off and start again."""
        delay_s = self.backoff_initial_s
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
                delay_s = self.backoff_initial_s
            self.stats.reconnects += 1
            await asyncio.sleep(delay_s * random.uniform(0.8, 1.2))
            delay_s = min(delay_s * 2, self.backoff_max_s)

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

    async def _read(self, address: int, count: int) -> list[int]:
        assert self._client is not None
        t0 = time.perf_counter()
        try:
            rr = await self._client.read_holding_registers(
                address, count=count, device_id=self.device_id
            )
        except (TimeoutError, ModbusException, OSError) as exc:
            raise PlcError(f"read {count} registers at {address}: {exc}") from exc
        _raise_if_cancelling()
        self._note_io(t0)
        if rr.isError():
            raise PlcError(f"read {count} registers at {address}: Modbus exception {rr}")
        regs = list(rr.registers)
        if len(regs) < count:
            raise PlcError(f"read {count} registers at {address}: got {len(regs)}")
        return regs[:count]

    async def _write(self, address: int, values: list[int]) -> None:
        assert self._client is not None
        t0 = time.perf_counter()
        try:
            rr = await self._client.write_registers(address, values, device_id=self.device_id)
        except (TimeoutError, ModbusException, OSError) as exc:
            raise PlcError(f"write {len(values)} registers at {address}: {exc}") from exc
        _raise_if_cancelling()
        self._note_io(t0)
        if rr.isError():
            raise PlcError(f"write {len(values)} registers at {address}: Modbus exception {rr}")

    def _note_io(self, t0: float) -> None:
        io_ms = (time.perf_counter() - t0) * 1000
        self.stats.io_ms_max = max(self.stats.io_ms_max, io_ms)
        self.stats.last_seen_ns = self.clock_ns()

    async def _read_ring(self, base: int, size: int, first: int, count: int) -> list[list[int]]:
        """Slots of messages first..first+count-1, in as few reads as 125 registers allow."""
        out: list[list[int]] = []
        per_read = R.MAX_READ_REGS // size
        k = first
        remaining = count
        while remaining:
            s = R.slot(k)
            n = min(remaining, R.RING_SLOTS - s, per_read)  # no read across the ring's end
            regs = await self._read(base + size * s, size * n)
            out.extend(regs[i * size : (i + 1) * size] for i in range(n))
            k += n
            remaining -= n
        return out

    async def _session(self) -> None:
        self._client = self._make_client()
        try:
            async with asyncio.timeout(self.request_timeout_s * 4):
                ok = await self._client.connect()
        except (OSError, TimeoutError, ModbusException) as exc:
            raise PlcError(f"connect failed: {exc}") from exc
        _raise_if_cancelling()
        if not ok:
            if self.endpoint.kind == "rtu":
                raise PlcError(self._serial_problem())
            raise PlcError("connect failed")
        header = await self._read(0, R.HEADER_COUNT)
        if header[R.INTERFACE_VERSION] != R.INTERFACE_VERSION_V1:
            raise PlcError(
                f"PLC interface_version is {header[R.INTERFACE_VERSION]}, this host speaks 1"
            )
        self._sessions += 1
        if self._sessions > 1:
            self._check_host_registers(header)
        if self._in_flight is not None:
            first, n = self._in_flight
            self._in_flight = None
            if R.counter_diff(header[R.REP_HEAD], first) == n:
                for _ in range(min(n, len(self._replies))):
                    self._replies.popleft()  # that head write did land
                self.stats.replies += n
        # Resume where the PLC says we were: unconsumed requests and confirmations between
        # ack and head are processed now; replies continue after the PLC's rep_head.
        self._req_ack = header[R.REQ_ACK]
        self._rep_head = header[R.REP_HEAD]
        self._conf_ack = header[R.CONF_ACK]
        self._host_heartbeat = header[R.HOST_HEARTBEAT]
        self._last_plc_heartbeat = header[R.PLC_HEARTBEAT]
        now = self.clock_ns()
        self._plc_heartbeat_changed_ns = now
        self._heartbeat_alive = True
        self._set_connected(True, "connected")
        next_heartbeat_ns = now
        next_status_ns = now
        while True:
            self.stats.cycles += 1
            now = self.clock_ns()
            header = await self._read(0, R.HEADER_COUNT)
            self._watch_heartbeat(header, now)
            await self._take_requests(header)
            await self._flush_replies()
            await self._take_confirmations(header)
            now = self.clock_ns()
            if now >= next_heartbeat_ns:
                self._host_heartbeat = (self._host_heartbeat + 1) % R.COUNTER_MOD
                await self._write(R.HOST_HEARTBEAT, [self._host_heartbeat])
                next_heartbeat_ns = now + HOST_HEARTBEAT_INTERVAL_NS
            if self.max_chute > 0 and now >= next_status_ns:
                await self._read_chute_status()
                next_status_ns = now + self._chute_status_interval_ns()
            # Sleep until the next poll or heartbeat, or less when a reply is queued.
            self._wake.clear()
            if not self._replies:
                sleep_s = min(self.poll_interval_s, (next_heartbeat_ns - self.clock_ns()) / 1e9)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(sleep_s, 0.0)):
                        await self._wake.wait()
            while self._replies:
                await self._flush_replies()
                if not self._replies:
                    break

    def _check_host_registers(self, header: list[int]) -> None:
        """After a reconnect, the acks the PLC holds are ours, or at most a ring behind (a
        write lost with the link). Anything else means the PLC lost its memory of us (a
        power cycle that reset every register): its ids and seqs start again."""
        req_behind = R.counter_diff(self._req_ack, header[R.REQ_ACK])
        conf_behind = R.counter_diff(self._conf_ack, header[R.CONF_ACK])
        if req_behind <= R.RING_SLOTS and conf_behind <= R.RING_SLOTS:
            return
        self.stats.counter_jumps += 1
        log.warning(
            "plc registers reset",
            req_ack=header[R.REQ_ACK],
            req_ack_was=self._req_ack,
            conf_ack=header[R.CONF_ACK],
            conf_ack_was=self._conf_ack,
        )
        self._delivered_confirmations.clear()
        self.handler.on_counters_jumped(Ring.REQUESTS)
        self.handler.on_counters_jumped(Ring.CONFIRMATIONS)

    def _watch_heartbeat(self, header: list[int], now_ns: int) -> None:
        self.stats.plc_state = header[R.PLC_STATE]
        beat = header[R.PLC_HEARTBEAT]
        if beat != self._last_plc_heartbeat:
            self._last_plc_heartbeat = beat
            self._plc_heartbeat_changed_ns = now_ns
            if not self._heartbeat_alive:
                self._heartbeat_alive = True
                self._set_connected(True, "plc heartbeat resumed")
        elif self._heartbeat_alive and now_ns - self._plc_heartbeat_changed_ns > (
            self.heartbeat_timeout_ns
        ):
            self._heartbeat_alive = False
            self.stats.errors += 1
            self.stats.last_error = "plc heartbeat frozen"
            self._set_connected(False, "plc heartbeat frozen")

    def _unread(self, ring: str, head: int, ack: int) -> tuple[int, int, bool]:
        """(first message to read, how many, whether the head jumped) for one ring.

        More than a ring ahead means the PLC restarted with its counters reset (the head
        went back) or overran the ring: only the last 64 slots can hold live messages, and
        the callers keep just those (requests by seq, confirmations by identity).
        """
        n = R.counter_diff(head, ack)
        if n <= R.RING_SLOTS:
            return ack, n, False
        self.stats.counter_jumps += 1
        log.warning("plc counter jumped", ring=ring, head=head, ack=ack)
        if ring == "request":
            self.handler.on_counters_jumped(Ring.REQUESTS)
        return (head - R.RING_SLOTS) % R.COUNTER_MOD, R.RING_SLOTS, True

    async def _take_requests(self, header: list[int]) -> None:
        if not self._intake:
            return
        head = header[R.REQ_HEAD]
        first, n, jumped = self._unread("request", head, self._req_ack)
        if n == 0:
            return
        now = self.clock_ns()
        slots = await self._read_ring(R.REQUEST_BASE, R.REQUEST_SIZE, first, n)
        if not self._intake:
            return  # stopped while reading: not handed over, not acknowledged
        requests = []
        for i, regs in enumerate(slots):
            # A request's seq is its message number: a slot that says otherwise was not
            # written for this message (a PLC restarted without its memory, a stale ring).
            expected = (first + i) % R.COUNTER_MOD
            if regs[0] != expected:
                if not jumped:
                    self.stats.bad_requests += 1
                    self._warn_bad("request slot with wrong seq skipped", expected=expected)
                continue
            requests.append(R.decode_request(regs, now))
        self._req_ack = head
        self.stats.requests += len(requests)
        self.handler.on_requests(requests)
        # Replies decided in on_requests go out before the ack, so a PLC that sees the ack
        # move already finds the replies of the same cycle in its ring.
        await self._flush_replies(ack=True)

    async def _flush_replies(self, ack: bool = False) -> None:
        if self._replies:
            first = self._rep_head
            pending = list(self._replies)
            k = first
            i = 0
            while i < len(pending):
                s = R.slot(k)
                n = min(len(pending) - i, R.RING_SLOTS - s, R.MAX_WRITE_REGS // R.REPLY_SIZE)
                values = [v for reply in pending[i : i + n] for v in reply]
                await self._write(R.REPLY_BASE + R.REPLY_SIZE * s, values)
                k += n
                i += n
            head = (first + len(pending)) % R.COUNTER_MOD
            # The replies leave the queue only once the PLC has the head that shows them:
            # a write lost with the link would otherwise lose them (the reconnect takes
            # rep_head from the PLC). If the write landed but its answer was lost, the
            # next session sees that in the PLC's rep_head and drops them then.
            self._in_flight = (first, len(pending))
            await self._write(R.REQ_ACK, [self._req_ack, head])
            self._in_flight = None
            for _ in pending:
                self._replies.popleft()
            self._rep_head = head
            self.stats.replies += len(pending)
            self._written.set()
        elif ack:
            await self._write(R.REQ_ACK, [self._req_ack])

    async def _take_confirmations(self, header: list[int]) -> None:
        head = header[R.CONF_HEAD]
        first, n, jumped = self._unread("confirmation", head, self._conf_ack)
        if n == 0:
            return
        now = self.clock_ns()
        slots = await self._read_ring(R.CONF_BASE, R.CONF_SIZE, first, n)
        confirmations = []
        delivered = self._delivered_confirmations
        for regs in slots:
            try:
                conf = R.decode_confirmation(regs, now)
            except R.RegisterError as exc:
                if not jumped:
                    self.stats.bad_confirmations += 1
                    self._warn_bad("bad confirmation slot skipped", error=str(exc), regs=regs)
                continue
            key = (conf.tracking_id, conf.seq)
            if key in delivered:
                # Read again after a reconnect whose conf_ack write was lost, or a stale
                # slot after a counter jump: one item, one confirmation.
                self.stats.duplicate_confirmations += 1
                continue
            delivered[key] = None
            if len(delivered) > DELIVERED_MEMORY:
                delivered.popitem(last=False)
            confirmations.append(conf)
        self._conf_ack = head
        self.stats.confirmations += len(confirmations)
        self.handler.on_confirmations(confirmations)
        if jumped:
            # The stale slots of the jump are filtered out above and will not be read
            # again: from now on a known (tracking_id, seq) is a new item's confirmation.
            delivered.clear()
            self.handler.on_counters_jumped(Ring.CONFIRMATIONS)
        await self._write(R.CONF_ACK, [self._conf_ack])

    def _warn_bad(self, event: str, **fields: object) -> None:
        """At most one warning a second: a PLC writing garbage must not flood the log."""
        now = self.clock_ns()
        if now - self._bad_logged_ns >= 1_000_000_000:
            self._bad_logged_ns = now
            log.warning(
                event,
                bad_requests=self.stats.bad_requests,
                bad_confirmations=self.stats.bad_confirmations,
                **fields,
            )

    async def _read_chute_status(self) -> None:
        status: list[int] = []
        first = 1
        while first + len(status) <= self.max_chute:
            address = first + len(status)
            count = min(R.MAX_READ_REGS, self.max_chute - address + 1)
            status.extend(await self._read(R.CHUTE_BASE + address, count))
        self.handler.on_chute_status(first, status)
