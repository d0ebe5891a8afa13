"""The PLC side of the register map (INTERFACES.md section 3) as a real Modbus server.

It serves Modbus TCP, RTU framing over TCP (as serial gateways do), or Modbus RTU on a
serial line: a real device, or a `SerialWire` pty pair that behaves like a cable (baud rate
timing, garbage on mismatched settings). See `PlcServe`.

`PlcSimulator` behaves like the sorter PLC as the daemon sees it over the wire: it owns the
PLC heartbeat, state and interface version, writes sort requests and confirmations into
their 64-slot rings, reads the host's replies, publishes chute status bits and watches the
host heartbeat. The physics (items moving past chutes) lives in `simulators.conveyor`.

Like a real PLC it runs a cycle: every `cycle_ms` (and at once when the host writes an ack
or `rep_head`, or when the simulator has something to write) it reads its header, takes in
new replies, and moves held messages into the rings. A message that finds its ring full is
held in order and counted once as a `ring_full` event; an unconsumed slot is never
overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Self

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.registers import (
    CHUTE_BASE,
    CHUTE_DISABLED,
    CHUTE_FAULT,
    CHUTE_FULL,
    CONF_ACK,
    CONF_BASE,
    CONF_HEAD,
    CONF_SIZE,
    COUNTER_MOD,
    HEADER_COUNT,
    HOST_HEARTBEAT,
    INTERFACE_VERSION_V1,
    MAX_CHUTE,
    PLC_HEARTBEAT,
    PLC_STATE,
    REGISTER_COUNT,
    REP_HEAD,
    REPLY_BASE,
    REPLY_SIZE,
    REQ_ACK,
    REQ_HEAD,
    REQUEST_BASE,
    REQUEST_SIZE,
    RING_SLOTS,
    PlcState,
    counter_diff,
    decode_reply,
    encode_confirmation,
    encode_request,
    slot,
)
from simulators.serial_wire import SerialWire
from sorter.addresses import SerialSettings
from sorter.ports import ChuteStatus, Confirmation, Outcome, SortRequest

log = logging.getLogger(__name__)

_READ_HOLDING: Final = 3
_WRITE_MULTIPLE: Final = 16
# Registers the host writes whose change the PLC should react to at once, not next cycle.
_HOST_HANDSHAKE_REGS: Final = frozenset({REQ_ACK, REP_HEAD, CONF_ACK})
_U16_MAX: Final = 0xFFFF
_U32_LIMIT: Final = 1 << 32
# A PLC does not keep replies forever; one per possible seq value is plenty for matching.
_DEFAULT_REPLY_RETENTION: Final = COUNTER_MOD


@dataclass(frozen=True, slots=True)
class PlcServe:
    """How the simulated PLC is reached.

    - `tcp`: Modbus TCP on `host:port` (the default);
    - `tcp-rtu`: RTU frames over TCP on `host:port`, as a serial-to-Ethernet gateway;
    - `rtu-pty`: Modbus RTU on a `SerialWire`: the host opens `PlcSimulator.serial_path`;
      `wire_timing` makes bytes take their time at the PLC's baud rate;
    - `rtu`: Modbus RTU on the serial device `device` (a real RS-485 adapter).

    `serial` is the PLC's UART: the host has to match it.
    """

    kind: Literal["tcp", "tcp-rtu", "rtu-pty", "rtu"] = "tcp"
    device: str = ""
    serial: SerialSettings = field(default_factory=SerialSettings)
    wire_timing: bool = True

    def __post_init__(self) -> None:
        if self.kind == "rtu" and not self.device:
            raise ValueError("PlcServe(kind='rtu') needs a serial device")


class PlcResetError(ConnectionResetError):
    """A held message was dropped because the PLC restarted (`reset_counters`)."""


@dataclass(frozen=True, slots=True)
class PlcReply:
    """One reply slot as the PLC read it from the host."""

    seq: int
    tracking_id: int
    chute: int
    received_s: float  # event-loop time (monotonic) when the PLC took it in
    message: int  # reply message number mod 65536 (rep_head before this reply)


@dataclass(slots=True)
class PlcStats:
    """Counters a PLC programmer would put on the HMI diagnostics page."""

    requests_written: int = 0
    confirmations_written: int = 0
    replies_read: int = 0
    req_ring_full: int = 0  # requests that had to be held because the ring was full
    conf_ring_full: int = 0  # same for confirmations
    rep_head_jumps: int = 0  # rep_head moved by more than a ring: host restarted or bug
    host_dead_events: int = 0  # transitions host alive -> dead
    dropped_on_reset: int = 0  # held messages lost in a PLC restart
    resets: int = 0
    writes_refused: int = 0  # fault injection: host writes answered with an exception
    cycles: int = 0  # PLC cycles completed: what a test waits on to know the PLC has acted


@dataclass(slots=True)
class _Held:
    regs: list[int]
    done: asyncio.Future[None] | None = None


@dataclass(slots=True)
class _Ring:
    """Messages the PLC holds for one ring, oldest first."""

    held: deque[_Held] = field(default_factory=deque)
    # The first `counted_full` held messages were already counted as ring_full events.
    counted_full: int = 0


ReplyListener = Callable[[PlcReply], None]


def _u16(value: int) -> int:
    """Saturate like a PLC move into a UINT register would, instead of wrapping sizes."""
    return max(0, min(_U16_MAX, int(value)))


class PlcSimulator:
    """A sorter PLC on a real pymodbus server: Modbus TCP bound to `host`, or RTU (`serve`).

    Use as `async with PlcSimulator(port=0) as plc:`; `plc.port` is the bound port and
    `plc.url` the address a host puts in `plc.url`. `stop()` then `start()` is a PLC that
    was unreachable for a while (same registers, same serial line); `close()` ends it all.
    `counter_start` is the initial value of every ring counter (req_head, req_ack, rep_head,
    conf_head, conf_ack): start near 65535 to exercise roll-over.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        device_id: int = 1,
        counter_start: int = 0,
        heartbeat_interval_ms: float = 100.0,
        cycle_ms: float = 2.0,
        host_timeout_s: float = 1.0,
        reply_retention: int = _DEFAULT_REPLY_RETENTION,
        serve: PlcServe | None = None,
    ) -> None:
        if not 0 <= counter_start < COUNTER_MOD:
            raise ValueError(f"counter_start {counter_start} is not 0..65535")
        if not 0 <= device_id <= 247:
            raise ValueError(f"device_id {device_id} is not 0..247")
        self._host = host
        self._requested_port = port
        self.serve = serve or PlcServe()
        self._wire: SerialWire | None = None
        self.device_id: Final = device_id
        self.counter_start: Final = counter_start
        self._heartbeat_interval_s = heartbeat_interval_ms / 1000.0
        self._cycle_s = cycle_ms / 1000.0
        self.host_timeout_s: Final = host_timeout_s
        self._reply_retention = reply_retention

        self.stats = PlcStats()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._port = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._memory: list[int] | None = None  # registers kept across stop() and start()

        # Message counts are kept unbounded here; the registers hold them mod 65536.
        self._req_count = counter_start
        self._conf_count = counter_start
        self._rep_seen: int | None = counter_start  # None: resync from rep_head
        self._req_ring = _Ring()
        self._conf_ring = _Ring()
        self._replies: dict[tuple[int, int], PlcReply] = {}
        self._listeners: list[ReplyListener] = []

        self._plc_heartbeat = 0
        self._heartbeat_frozen = False
        self._refuse: dict[int, int] = {}
        self._state = PlcState.RUNNING
        self._header_dirty = True

        self._chute_flags = [0] * (MAX_CHUTE + 1)
        self._chutes_dirty: set[int] = set()

        self._host_heartbeat: int | None = None
        self._host_heartbeat_changed_s = 0.0
        self._host_alive = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind the server and start the PLC cycle."""
        if self._server is not None:
            return
        # A restart after stop() is a PLC that was unreachable, not one that lost its
        # memory: it comes back with the registers it had (reset_counters() is the other).
        memory, self._memory = self._memory, None
        device = SimDevice(
            self.device_id,
            [
                SimData(
                    0,
                    count=1,
                    values=memory or [0] * REGISTER_COUNT,
                    datatype=DataType.REGISTERS,
                )
            ],
            action=self._on_access,
        )
        if self.serve.kind in ("tcp", "tcp-rtu"):
            await self._listen_tcp(device)
        else:
            await self._open_serial(device)

        # Host-owned counters start equal to the PLC's so that a host which takes its
        # acks from the registers and one which starts at req_head agree.
        if memory is None:
            start = self.counter_start
            await self._set(PLC_HEARTBEAT, [0, 0, self._state, INTERFACE_VERSION_V1])
            await self._set(REQ_HEAD, [start] * (CONF_ACK - REQ_HEAD + 1))
        self._header_dirty = True
        self._task = asyncio.create_task(self._cycle(), name=f"plc-sim-cycle:{self.url}")
        log.info("PLC simulator serving %s", self.url)

    async def _listen_tcp(self, device: SimDevice) -> None:
        framer = FramerType.RTU if self.serve.kind == "tcp-rtu" else FramerType.SOCKET
        server = ModbusTcpServer(device, address=(self._host, self._requested_port), framer=framer)
        if not await server.listen():
            raise OSError(f"PLC simulator cannot listen on {self._host}:{self._requested_port}")
        self._server = server
        listener = server.transport
        if not isinstance(listener, asyncio.AbstractServer):
            raise TypeError("pymodbus TCP server did not create an asyncio server")
        self._listener = listener
        self._port = _bound_port(listener, self._requested_port)

    async def _open_serial(self, device: SimDevice) -> None:
        serial = self.serve.serial
        if self.serve.kind == "rtu-pty":
            # The wire outlives stop()/start(): a PLC restart does not move the host's
            # device node, and the daemon's plc.url must stay right.
            if self._wire is None:
                self._wire = SerialWire(timing=self.serve.wire_timing)
                self._wire.open()
            path = self._wire.device_path
        else:
            path = self.serve.device
        server = ModbusSerialServer(
            device,
            framer=FramerType.RTU,
            port=path,
            baudrate=serial.baudrate,
            parity=serial.parity,
            stopbits=serial.stopbits,
            bytesize=serial.bytesize,
        )
        if not await server.listen():
            hint = ""
            if self.serve.kind == "rtu-pty" and serial.parity != "N":
                hint = " (some kernels refuse parity on ptys: use parity N on a pty)"
            raise OSError(
                f"PLC simulator cannot open serial device {path} as {serial.describe()}{hint}"
            )
        self._server = server

    async def stop(self) -> None:
        """Stop the cycle and the server; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_held(PlcResetError("PLC simulator stopped"))
        if self._server is not None:
            self._memory = await self._get(0, REGISTER_COUNT)
        server, self._server = self._server, None
        listener, self._listener = self._listener, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
        if listener is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await listener.wait_closed()
        # pymodbus answers each request in its own short task; let those finish.
        for _ in range(3):
            await asyncio.sleep(0)

    async def close(self) -> None:
        """stop(), and close the serial wire (its pty paths go away); safe to call twice."""
        await self.stop()
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()

    async def set_serial(self, serial: SerialSettings) -> None:
        """Reconfigure the PLC's serial port, as on its settings page: the port is reopened
        (registers kept, like a stop() and start()) when the simulator is running."""
        running = self._server is not None
        if running:
            await self.stop()
        self.serve = replace(self.serve, serial=serial)
        if running:
            await self.start()

    @property
    def port(self) -> int:
        """The bound TCP port (useful with port=0); 0 on a serial line."""
        return self._port

    @property
    def wire(self) -> SerialWire | None:
        """The pty wire of `rtu-pty` (its stats count garbled bytes), once started."""
        return self._wire

    @property
    def serial_path(self) -> str:
        """The device node the host opens (`rtu-pty`), or the PLC's own device (`rtu`)."""
        if self.serve.kind == "rtu-pty":
            if self._wire is None:
                raise RuntimeError("PLC simulator is not started")
            return self._wire.host_path
        return self.serve.device

    @property
    def url(self) -> str:
        """What a host puts in `plc.url` to reach this PLC (for `rtu`, with the PLC's
        device: the host's own device node is at the other end of the cable)."""
        kind = self.serve.kind
        if kind == "tcp":
            return f"tcp://{self._host}:{self._port}"
        if kind == "tcp-rtu":
            return f"tcp://{self._host}:{self._port}?framer=rtu"
        return f"rtu://{self.serial_path}?{self.serve.serial.query()}"

    # ------------------------------------------------------------------ status

    @property
    def host_alive(self) -> bool:
        """False before the first host heartbeat and after it froze for `host_timeout_s`."""
        return self._host_alive

    @property
    def state(self) -> int:
        return self._state

    def set_state(self, state: int) -> None:
        """Set plc_state (PlcState.*); the register is written on the next cycle."""
        if state not in (
            PlcState.STOPPED,
            PlcState.RUNNING,
            PlcState.FAULT,
            PlcState.EMERGENCY_STOP,
        ):
            raise ValueError(f"plc_state {state} is not 0..3")
        self._state = state
        self._header_dirty = True
        self._wake.set()

    @property
    def req_head(self) -> int:
        return self._req_count % COUNTER_MOD

    @property
    def conf_head(self) -> int:
        return self._conf_count % COUNTER_MOD

    @property
    def pending_requests(self) -> int:
        """Requests held because the host has not acked enough of the ring."""
        return len(self._req_ring.held)

    @property
    def pending_confirmations(self) -> int:
        return len(self._conf_ring.held)

    # ------------------------------------------------------------------ rings

    def submit_request(
        self,
        tracking_id: int,
        induction: int = 1,
        length_mm: int = 0,
        width_mm: int = 0,
        height_mm: int = 0,
        weight_g: int = 0,
    ) -> int:
        """Queue a sort request without waiting; returns its seq.

        The seq is fixed now because held requests are written strictly in order.
        """
        if not 0 <= tracking_id < _U32_LIMIT:
            raise ValueError(f"tracking_id {tracking_id} does not fit 32 bits")
        seq = (self._req_count + len(self._req_ring.held)) % COUNTER_MOD
        request = SortRequest(
            seq=seq,
            tracking_id=tracking_id,
            induction=_u16(induction),
            length_mm=_u16(length_mm),
            width_mm=_u16(width_mm),
            height_mm=_u16(height_mm),
            weight_g=_u16(weight_g),
        )
        self._req_ring.held.append(_Held(encode_request(request)))
        self._wake.set()
        return seq

    async def write_request(
        self,
        tracking_id: int,
        induction: int = 1,
        length_mm: int = 0,
        width_mm: int = 0,
        height_mm: int = 0,
        weight_g: int = 0,
    ) -> int:
        """Write a sort request and return its seq once it is in the ring.

        While the ring is full (host not acking) this waits: the PLC holds the request and
        counts one `ring_full` event (`stats.req_ring_full`) rather than overwrite a slot.
        """
        seq = self.submit_request(tracking_id, induction, length_mm, width_mm, height_mm, weight_g)
        held = self._req_ring.held[-1]
        held.done = asyncio.get_running_loop().create_future()
        await held.done
        return seq

    def submit_confirmation(
        self,
        seq: int,
        tracking_id: int,
        chute_actual: int,
        outcome: Outcome | int,
        recirculations: int,
    ) -> None:
        """Queue a confirmation without waiting (held in order while the ring is full)."""
        conf = Confirmation(
            seq=seq & _U16_MAX,
            tracking_id=tracking_id,
            chute_actual=_u16(chute_actual),
            outcome=Outcome(outcome),
            recirculations=_u16(recirculations),
        )
        self._conf_ring.held.append(_Held(encode_confirmation(conf)))
        self._wake.set()

    async def write_confirmation(
        self,
        seq: int,
        tracking_id: int,
        chute_actual: int,
        outcome: Outcome | int,
        recirculations: int,
    ) -> None:
        """Write a confirmation; waits while conf_head - conf_ack >= 64 (see write_request)."""
        self.submit_confirmation(seq, tracking_id, chute_actual, outcome, recirculations)
        held = self._conf_ring.held[-1]
        held.done = asyncio.get_running_loop().create_future()
        await held.done

    # ------------------------------------------------------------------ replies

    def add_reply_listener(self, listener: ReplyListener) -> None:
        """Call `listener` (synchronously, from the PLC cycle) for every reply taken in."""
        self._listeners.append(listener)

    def remove_reply_listener(self, listener: ReplyListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def reply(self, tracking_id: int, seq: int) -> PlcReply | None:
        """The latest reply for (tracking_id, seq), if the host sent one."""
        return self._replies.get((tracking_id, seq))

    def pop_reply(self, tracking_id: int, seq: int) -> PlcReply | None:
        return self._replies.pop((tracking_id, seq), None)

    @property
    def replies(self) -> Mapping[tuple[int, int], PlcReply]:
        """Latest reply per (tracking_id, seq), oldest first (bounded by reply_retention)."""
        return self._replies

    async def poll_replies(self) -> int:
        """Take in replies the host wrote since the last look; returns how many.

        The cycle does this by itself; call it to be sure before inspecting `replies`.
        """
        rep_head = (await self._get(REP_HEAD, 1))[0]
        return await self._take_replies(rep_head, asyncio.get_running_loop().time())

    # ------------------------------------------------------------------ chutes

    def chute_flags(self, chute: int) -> int:
        """Bits of register 2000 + chute: CHUTE_FULL, CHUTE_DISABLED, CHUTE_FAULT."""
        _check_chute(chute)
        return self._chute_flags[chute]

    def chute_status(self, chute: int) -> ChuteStatus:
        flags = self.chute_flags(chute)
        return ChuteStatus(
            chute=chute,
            full=bool(flags & CHUTE_FULL),
            disabled=bool(flags & CHUTE_DISABLED),
            fault=bool(flags & CHUTE_FAULT),
        )

    def set_chute_full(self, chute: int, full: bool = True) -> None:
        self._set_chute_bit(chute, CHUTE_FULL, full)

    def set_chute_disabled(self, chute: int, disabled: bool = True) -> None:
        self._set_chute_bit(chute, CHUTE_DISABLED, disabled)

    def set_chute_fault(self, chute: int, fault: bool = True) -> None:
        self._set_chute_bit(chute, CHUTE_FAULT, fault)

    def _set_chute_bit(self, chute: int, bit: int, value: bool) -> None:
        _check_chute(chute)
        old = self._chute_flags[chute]
        new = old | bit if value else old & ~bit
        if new != old:
            self._chute_flags[chute] = new
            self._chutes_dirty.add(chute)
            self._wake.set()

    # ------------------------------------------------------------------ fault injection

    def refuse_writes(self, address: int, times: int = 1) -> None:
        """Answer the next `times` host writes that touch `address` with a Modbus exception
        (device failure), without applying them: a write lost between host and PLC."""
        self._refuse[address] = self._refuse.get(address, 0) + times

    def freeze_heartbeat(self, frozen: bool = True) -> None:
        """Stop (or resume) incrementing plc_heartbeat, as a hung PLC program would."""
        self._heartbeat_frozen = frozen

    def reset_counters(self) -> None:
        """Simulate a PLC restart: heads and heartbeat back to their power-on values.

        Held (unwritten) messages are lost, and the PLC forgets which replies it has read:
        it takes the host's current rep_head as the new start. Host-owned registers are
        left alone; the host has to notice the heads going back and resync its acks, and
        until it does the rings look full to the PLC (nothing is overwritten).
        """
        dropped = len(self._req_ring.held) + len(self._conf_ring.held)
        self.stats.dropped_on_reset += dropped
        self.stats.resets += 1
        self._fail_held(PlcResetError("PLC restarted; held message dropped"))
        self._req_count = self.counter_start
        self._conf_count = self.counter_start
        self._rep_seen = None
        self._plc_heartbeat = 0
        self._header_dirty = True
        self._wake.set()

    # ------------------------------------------------------------------ test access

    async def read_registers(self, address: int, count: int) -> list[int]:
        """Read the server's registers directly (no Modbus round trip)."""
        return await self._get(address, count)

    async def write_registers(self, address: int, values: list[int]) -> None:
        """Write registers directly, as if a Modbus client had (wakes the cycle)."""
        await self._set(address, values)
        self._wake.set()

    # ------------------------------------------------------------------ internals

    def _server_or_raise(self) -> ModbusTcpServer | ModbusSerialServer:
        if self._server is None:
            raise RuntimeError("PLC simulator is not started")
        return self._server

    async def _get(self, address: int, count: int) -> list[int]:
        values = await self._server_or_raise().async_getValues(
            self.device_id, _READ_HOLDING, address, count
        )
        return [int(v) for v in values]

    async def _set(self, address: int, values: list[int]) -> None:
        await self._server_or_raise().async_setValues(
            self.device_id, _WRITE_MULTIPLE, address, values
        )

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Server hook: wake the cycle when the host writes an ack or rep_head; refuse a
        write that fault injection asked to refuse."""
        del function_code, start_address, current_registers
        if set_values is not None and self._refuse:
            for reg in range(address, address + count):
                if self._refuse.get(reg, 0) > 0:
                    self._refuse[reg] -= 1
                    self.stats.writes_refused += 1
                    return ExcCodes.DEVICE_FAILURE  # not applied
        if set_values is not None and any(
            address <= reg < address + count for reg in _HOST_HANDSHAKE_REGS
        ):
            self._wake.set()
        return None

    async def _cycle(self) -> None:
        loop = asyncio.get_running_loop()
        next_heartbeat_s = loop.time() + self._heartbeat_interval_s
        while True:
            now = loop.time()
            if now >= next_heartbeat_s:
                if not self._heartbeat_frozen:
                    self._plc_heartbeat = (self._plc_heartbeat + 1) % COUNTER_MOD
                    self._header_dirty = True
                next_heartbeat_s += self._heartbeat_interval_s
                if next_heartbeat_s <= now:  # the loop stalled; do not burst to catch up
                    next_heartbeat_s = now + self._heartbeat_interval_s
            self._wake.clear()
            await self._scan(now)
            self.stats.cycles += 1
            timeout_s = max(0.0, min(self._cycle_s, next_heartbeat_s - loop.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._wake.wait()

    async def _scan(self, now: float) -> None:
        """One PLC cycle: read the header, react, write what changed."""
        header = await self._get(0, HEADER_COUNT)
        self._supervise_host(header[HOST_HEARTBEAT], now)
        if self._rep_seen is None:  # first cycle after a restart
            self._rep_seen = header[REP_HEAD]
        await self._take_replies(header[REP_HEAD], now)
        await self._flush_ring(
            self._req_ring, header[REQ_ACK], REQUEST_BASE, REQUEST_SIZE, is_request=True
        )
        await self._flush_ring(
            self._conf_ring, header[CONF_ACK], CONF_BASE, CONF_SIZE, is_request=False
        )
        if self._header_dirty:
            self._header_dirty = False
            await self._set(PLC_HEARTBEAT, [self._plc_heartbeat])
            await self._set(PLC_STATE, [self._state, INTERFACE_VERSION_V1])
            await self._set(REQ_HEAD, [self.req_head])
            await self._set(CONF_HEAD, [self.conf_head])
        while self._chutes_dirty:
            chute = self._chutes_dirty.pop()
            await self._set(CHUTE_BASE + chute, [self._chute_flags[chute]])

    def _supervise_host(self, host_heartbeat: int, now: float) -> None:
        if host_heartbeat != self._host_heartbeat:
            # The power-on value says nothing about a host being there; a change does.
            if self._host_heartbeat is not None:
                self._host_heartbeat_changed_s = now
                self._host_alive = True
            self._host_heartbeat = host_heartbeat
        elif self._host_alive and now - self._host_heartbeat_changed_s >= self.host_timeout_s:
            self._host_alive = False
            self.stats.host_dead_events += 1
            log.warning(
                "host heartbeat frozen for %.1f s: host considered dead", self.host_timeout_s
            )

    async def _take_replies(self, rep_head: int, now: float) -> int:
        seen = self._rep_seen
        if seen is None:
            self._rep_seen = rep_head
            return 0
        new = counter_diff(rep_head, seen)
        if new == 0:
            return 0
        if new > RING_SLOTS:
            # More replies than the ring holds can only mean a host restart or a bug; the
            # slots no longer say which message they carry, so do not read them.
            self.stats.rep_head_jumps += 1
            self._rep_seen = rep_head
            log.warning("rep_head jumped from %d to %d; resynchronised", seen, rep_head)
            return 0
        for k in range(new):
            message = (seen + k) % COUNTER_MOD
            regs = await self._get(REPLY_BASE + REPLY_SIZE * slot(message), REPLY_SIZE)
            seq, tracking_id, chute = decode_reply(regs)
            reply = PlcReply(seq, tracking_id, chute, now, message)
            key = (tracking_id, seq)
            # Re-insert so that dict order stays "oldest first" for pruning.
            self._replies.pop(key, None)
            self._replies[key] = reply
            while len(self._replies) > self._reply_retention:
                del self._replies[next(iter(self._replies))]
            self.stats.replies_read += 1
            for listener in list(self._listeners):
                listener(reply)
        self._rep_seen = rep_head
        return new

    async def _flush_ring(
        self, ring: _Ring, ack: int, base: int, size: int, *, is_request: bool
    ) -> None:
        held = ring.held
        while held:
            count = self._req_count if is_request else self._conf_count
            if counter_diff(count % COUNTER_MOD, ack) >= RING_SLOTS:
                # Includes a bogus ack ahead of head (diff > 64): never overwrite. Every
                # message that has to wait is one ring_full event, counted once.
                newly_held = len(held) - ring.counted_full
                ring.counted_full = len(held)
                if is_request:
                    self.stats.req_ring_full += newly_held
                else:
                    self.stats.conf_ring_full += newly_held
                return
            message = held.popleft()
            ring.counted_full = max(0, ring.counted_full - 1)
            # Slot first, head after: a reader that sees the head has a complete slot.
            await self._set(base + size * slot(count), message.regs)
            count += 1
            if is_request:
                self._req_count = count
                self.stats.requests_written += 1
                await self._set(REQ_HEAD, [self.req_head])
            else:
                self._conf_count = count
                self.stats.confirmations_written += 1
                await self._set(CONF_HEAD, [self.conf_head])
            if message.done is not None and not message.done.done():
                message.done.set_result(None)

    def _fail_held(self, exc: BaseException) -> None:
        for ring in (self._req_ring, self._conf_ring):
            for message in ring.held:
                if message.done is not None and not message.done.done():
                    message.done.set_exception(exc)
            ring.held.clear()
            ring.counted_full = 0


def _check_chute(chute: int) -> None:
    if not 1 <= chute <= MAX_CHUTE:
        raise ValueError(f"chute {chute} is not 1..{MAX_CHUTE}")


def _bound_port(listener: asyncio.AbstractServer, requested: int) -> int:
    sockets = getattr(listener, "sockets", None)
    if sockets:
        name = sockets[0].getsockname()
        return int(name[1])
    return requested
