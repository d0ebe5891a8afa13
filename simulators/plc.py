"""The PLC side of the register map (docs/interfaces.md section 3) as a real Modbus server.

`PlcSimulator` behaves like the sorter PLC as the daemon sees it over the wire: it owns the
PLC heartbeat, state and interface version, writes sort requests and confirmations into
their 64-slot rings, reads the host's replies, publishes chute status bits and watches the
host heartbeat. Its register layout and slot codec are its own (`simulators.plc_map`,
written from the document, not taken from the daemon's drivers); the Modbus server and its
transports are `simulators.plc_server`; the physics (items moving past chutes) lives in
`simulators.conveyor`.

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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from simulators.plc_map import (
    CHUTE_STATUS,
    CONFIRMATION_RING,
    HEADER,
    LAST_CHUTE,
    REQUEST_RING,
    RING_LENGTH,
    SUPPORTED_VERSION,
    WRAP,
    Header,
    PlcStateValue,
    SlotBlock,
    confirmation_words,
    request_words,
)
from simulators.plc_replies import PlcReply, ReplyDesk, ReplyListener
from simulators.plc_server import PlcServe, RegisterServer
from sorter.errors import SorterdError
from sorter.ports import ChuteFlag, ChuteStatus, Confirmation, Outcome, SortRequest

__all__ = [
    "PlcReply",
    "PlcResetError",
    "PlcServe",
    "PlcSimulator",
    "PlcStateValue",
    "PlcStats",
    "ReplyListener",
]

log = logging.getLogger(__name__)

# Registers the host writes whose change the PLC should react to at once, not next cycle.
_HOST_HANDSHAKE_REGS: Final = (Header.REQ_ACK, Header.REP_HEAD, Header.CONF_ACK)
_STATE: Final = PlcStateValue.RUNNING  # the simulated PLC always runs
_U16_MAX: Final = 0xFFFF
_U32_LIMIT: Final = 1 << 32
# A PLC does not keep replies forever; one per possible seq value is plenty for matching.
_DEFAULT_REPLY_RETENTION: Final = WRAP

_Store = Callable[[int, list[int]], Awaitable[None]]
_Load = Callable[[int, int], Awaitable[list[int]]]


class PlcResetError(SorterdError, ConnectionResetError):
    """A held message was dropped because the PLC restarted (`reset_counters`)."""


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
class _OutRing:
    """One ring the PLC writes: messages written so far (unbounded; the head register holds
    it mod 65536) and the messages held, oldest first, while the ring is full."""

    block: SlotBlock
    head_register: int
    count: int
    held: deque[_Held] = field(default_factory=deque)
    # The first `counted_full` held messages were already counted as ring_full events.
    counted_full: int = 0

    @property
    def head(self) -> int:
        return self.count % WRAP

    def submit(self, regs: list[int]) -> _Held:
        message = _Held(regs)
        self.held.append(message)
        return message

    async def flush(self, ack: int, store: _Store) -> tuple[int, int]:
        """Move held messages into free slots: (messages written, new ring_full events)."""
        written = 0
        while self.held:
            if (self.head - ack) % WRAP >= RING_LENGTH:
                # Includes a bogus ack ahead of head (diff > 64): never overwrite. Every
                # message that has to wait is one ring_full event, counted once.
                newly_held = len(self.held) - self.counted_full
                self.counted_full = len(self.held)
                return written, newly_held
            message = self.held.popleft()
            self.counted_full = max(0, self.counted_full - 1)
            # Slot first, head after: a reader that sees the head has a complete slot.
            await store(self.block.address(self.count), message.regs)
            self.count += 1
            written += 1
            await store(self.head_register, [self.head])
            if message.done is not None and not message.done.done():
                message.done.set_result(None)
        return written, 0

    def fail(self, exc: BaseException) -> int:
        """Drop every held message (their writers get `exc`); how many were dropped."""
        dropped = len(self.held)
        for message in self.held:
            if message.done is not None and not message.done.done():
                message.done.set_exception(exc)
        self.held.clear()
        self.counted_full = 0
        return dropped


@dataclass(slots=True)
class _HostWatch:
    """The host heartbeat as the PLC sees it: alive once it moves, dead when it freezes."""

    timeout_s: float
    beat: int | None = None
    changed_s: float = 0.0
    alive: bool = False

    def see(self, beat: int, now_s: float) -> bool:
        """Take one reading; True when the host just went dead."""
        if beat != self.beat:
            # The power-on value says nothing about a host being there; a change does.
            if self.beat is not None:
                self.changed_s = now_s
                self.alive = True
            self.beat = beat
        elif self.alive and now_s - self.changed_s >= self.timeout_s:
            self.alive = False
            return True
        return False


class _ChuteBoard:
    """The chute status words the PLC publishes at 2000 + n, and which changed."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self._flags = [0] * (LAST_CHUTE + 1)
        self._dirty: set[int] = set()
        self._changed = changed

    def flags(self, chute: int) -> int:
        _check_chute(chute)
        return self._flags[chute]

    def status(self, chute: int) -> ChuteStatus:
        flags = ChuteFlag(self.flags(chute))
        return ChuteStatus(
            chute=chute,
            full=ChuteFlag.FULL in flags,
            disabled=ChuteFlag.DISABLED in flags,
            fault=ChuteFlag.FAULT in flags,
        )

    def set(self, chute: int, bit: ChuteFlag, value: bool) -> None:
        _check_chute(chute)
        old = self._flags[chute]
        new = old | int(bit) if value else old & ~int(bit)
        if new != old:
            self._flags[chute] = new
            self._dirty.add(chute)
            self._changed()

    async def flush(self, store: _Store) -> None:
        """Write the status words that changed since the last flush."""
        while self._dirty:
            chute = self._dirty.pop()
            await store(CHUTE_STATUS + chute, [self._flags[chute]])


class _PlcProgram:
    """What the PLC does each cycle (heartbeat, replies in, rings out, header and chute
    words) and what it remembers between cycles."""

    def __init__(
        self, *, counter_start: int, reply_retention: int, host_timeout_s: float, stats: PlcStats
    ) -> None:
        self.stats = stats
        self.wake = asyncio.Event()
        self.requests = _OutRing(REQUEST_RING, Header.REQ_HEAD, counter_start)
        self.confirmations = _OutRing(CONFIRMATION_RING, Header.CONF_HEAD, counter_start)
        self.desk = ReplyDesk(retention=reply_retention, rep_seen=counter_start)
        self.host = _HostWatch(host_timeout_s)
        self.chutes = _ChuteBoard(self.wake.set)
        self.heartbeat = 0
        self.heartbeat_frozen = False
        self.header_dirty = True

    def beat(self) -> None:
        if not self.heartbeat_frozen:
            self.heartbeat = (self.heartbeat + 1) % WRAP
            self.header_dirty = True

    async def scan(self, now: float, load: _Load, store: _Store) -> None:
        """One PLC cycle: read the header, react, write what changed."""
        header = dict(zip(HEADER, await load(HEADER.start, len(HEADER)), strict=True))
        if self.host.see(header[Header.HOST_HEARTBEAT], now):
            self.stats.host_dead_events += 1
            log.warning(
                "host heartbeat frozen for %.1f s: host considered dead", self.host.timeout_s
            )
        await self.take_replies(header[Header.REP_HEAD], now, load)
        written, held = await self.requests.flush(header[Header.REQ_ACK], store)
        self.stats.requests_written += written
        self.stats.req_ring_full += held
        written, held = await self.confirmations.flush(header[Header.CONF_ACK], store)
        self.stats.confirmations_written += written
        self.stats.conf_ring_full += held
        if self.header_dirty:
            self.header_dirty = False
            await store(Header.PLC_HEARTBEAT, [self.heartbeat])
            await store(Header.PLC_STATE, [_STATE, SUPPORTED_VERSION])
            await store(Header.REQ_HEAD, [self.requests.head])
            await store(Header.CONF_HEAD, [self.confirmations.head])
        await self.chutes.flush(store)

    async def take_replies(self, rep_head: int, now: float, load: _Load) -> int:
        taken, jumped = await self.desk.take(rep_head, now, load)
        self.stats.replies_read += taken
        self.stats.rep_head_jumps += jumped
        return taken

    def fail_held(self, exc: BaseException) -> int:
        """Drop the held messages of both rings; how many were dropped."""
        return self.requests.fail(exc) + self.confirmations.fail(exc)

    def restart(self, counter_start: int) -> None:
        """Power-on values: heads, heartbeat, and no memory of the replies read."""
        self.stats.dropped_on_reset += self.fail_held(
            PlcResetError("PLC restarted; held message dropped")
        )
        self.stats.resets += 1
        self.requests.count = self.confirmations.count = counter_start
        self.desk.rep_seen = None
        self.heartbeat = 0
        self.header_dirty = True
        self.wake.set()


def _u16(value: int) -> int:
    """Saturate like a PLC move into a UINT register would, instead of wrapping sizes."""
    return max(0, min(_U16_MAX, int(value)))


def _check_chute(chute: int) -> None:
    if not 1 <= chute <= LAST_CHUTE:
        raise ValueError(f"chute {chute} is not 1..{LAST_CHUTE}")


class PlcSimulator(RegisterServer):
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
        if not 0 <= counter_start < WRAP:
            raise ValueError(f"counter_start {counter_start} is not 0..65535")
        if not 0 <= device_id <= 247:
            raise ValueError(f"device_id {device_id} is not 0..247")
        super().__init__(
            host=host,
            port=port,
            device_id=device_id,
            serve=serve or PlcServe(),
            watched=_HOST_HANDSHAKE_REGS,
        )
        self.counter_start: Final = counter_start
        self.host_timeout_s: Final = host_timeout_s
        self._heartbeat_interval_s = heartbeat_interval_ms / 1000.0
        self._cycle_s = cycle_ms / 1000.0
        self.stats = PlcStats()
        self._program = _PlcProgram(
            counter_start=counter_start,
            reply_retention=reply_retention,
            host_timeout_s=host_timeout_s,
            stats=self.stats,
        )
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def _started(self, fresh: bool) -> None:
        """Start the PLC cycle. After `stop()` the PLC comes back with the registers it had
        (`reset_counters()` is a PLC that lost them)."""
        if fresh:
            # Host-owned counters start equal to the PLC's so that a host which takes its
            # acks from the registers and one which starts at req_head agree.
            start = self.counter_start
            await self._set(Header.PLC_HEARTBEAT, [0, 0, _STATE, SUPPORTED_VERSION])
            await self._set(Header.REQ_HEAD, [start] * (Header.CONF_ACK - Header.REQ_HEAD + 1))
        self._program.header_dirty = True
        self._task = asyncio.create_task(self._cycle(), name=f"plc-sim-cycle:{self.url}")
        log.info("PLC simulator serving %s", self.url)

    async def _stopping(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._program.fail_held(PlcResetError("PLC simulator stopped"))

    def _host_wrote(self) -> None:
        self._program.wake.set()

    def _refused(self) -> None:
        self.stats.writes_refused += 1

    # ------------------------------------------------------------------ status

    @property
    def host_alive(self) -> bool:
        """False before the first host heartbeat and after it froze for `host_timeout_s`."""
        return self._program.host.alive

    @property
    def req_head(self) -> int:
        return self._program.requests.head

    @property
    def conf_head(self) -> int:
        return self._program.confirmations.head

    @property
    def pending_requests(self) -> int:
        """Requests held because the host has not acked enough of the ring."""
        return len(self._program.requests.held)

    @property
    def pending_confirmations(self) -> int:
        return len(self._program.confirmations.held)

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
        """Queue a sort request without waiting; returns its seq (fixed now: held requests
        are written strictly in order)."""
        if not 0 <= tracking_id < _U32_LIMIT:
            raise ValueError(f"tracking_id {tracking_id} does not fit 32 bits")
        ring = self._program.requests
        seq = (ring.count + len(ring.held)) % WRAP
        request = SortRequest(
            seq=seq,
            tracking_id=tracking_id,
            induction=_u16(induction),
            length_mm=_u16(length_mm),
            width_mm=_u16(width_mm),
            height_mm=_u16(height_mm),
            weight_g=_u16(weight_g),
        )
        ring.submit(request_words(request))
        self._program.wake.set()
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
        held = self._program.requests.held[-1]
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
            tracking_id=tracking_id % _U32_LIMIT,  # two registers hold the low 32 bits
            chute_actual=_u16(chute_actual),
            outcome=Outcome(outcome),
            recirculations=_u16(recirculations),
        )
        self._program.confirmations.submit(confirmation_words(conf))
        self._program.wake.set()

    # ------------------------------------------------------------------ replies

    def add_reply_listener(self, listener: ReplyListener) -> None:
        """Call `listener` (synchronously, from the PLC cycle) for every reply taken in."""
        self._program.desk.add_listener(listener)

    def remove_reply_listener(self, listener: ReplyListener) -> None:
        self._program.desk.remove_listener(listener)

    def reply(self, tracking_id: int, seq: int) -> PlcReply | None:
        """The latest reply for (tracking_id, seq), if the host sent one."""
        return self._program.desk.replies.get((tracking_id, seq))

    @property
    def replies(self) -> Mapping[tuple[int, int], PlcReply]:
        """Latest reply per (tracking_id, seq), oldest first (bounded by reply_retention)."""
        return self._program.desk.replies

    # ------------------------------------------------------------------ chutes

    def chute_flags(self, chute: int) -> int:
        """Bits of register 2000 + chute (sorter.ports.ChuteFlag)."""
        return self._program.chutes.flags(chute)

    def chute_status(self, chute: int) -> ChuteStatus:
        return self._program.chutes.status(chute)

    def set_chute_full(self, chute: int, full: bool = True) -> None:
        self._program.chutes.set(chute, ChuteFlag.FULL, full)

    def set_chute_disabled(self, chute: int, disabled: bool = True) -> None:
        self._program.chutes.set(chute, ChuteFlag.DISABLED, disabled)

    def set_chute_fault(self, chute: int, fault: bool = True) -> None:
        self._program.chutes.set(chute, ChuteFlag.FAULT, fault)

    # ------------------------------------------------------------------ fault injection

    def freeze_heartbeat(self, frozen: bool = True) -> None:
        """Stop (or resume) incrementing plc_heartbeat, as a hung PLC program would."""
        self._program.heartbeat_frozen = frozen

    def reset_counters(self) -> None:
        """Simulate a PLC restart: heads and heartbeat back to their power-on values.

        Held (unwritten) messages are lost, and the PLC forgets which replies it has read:
        it takes the host's current rep_head as the new start. Host-owned registers are
        left alone; the host has to notice the heads going back and resync its acks, and
        until it does the rings look full to the PLC (nothing is overwritten).
        """
        self._program.restart(self.counter_start)

    # ------------------------------------------------------------------ the PLC cycle

    async def _cycle(self) -> None:
        loop = asyncio.get_running_loop()
        program = self._program
        next_heartbeat_s = loop.time() + self._heartbeat_interval_s
        while True:
            now = loop.time()
            if now >= next_heartbeat_s:
                program.beat()
                next_heartbeat_s += self._heartbeat_interval_s
                if next_heartbeat_s <= now:  # the loop stalled; do not burst to catch up
                    next_heartbeat_s = now + self._heartbeat_interval_s
            program.wake.clear()
            await program.scan(now, self._get, self._set)
            self.stats.cycles += 1
            timeout_s = max(0.0, min(self._cycle_s, next_heartbeat_s - loop.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await program.wake.wait()
