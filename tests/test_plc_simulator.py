"""PLC simulator and conveyor model against a real pymodbus client acting as a minimal host."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers.registers import (
    CHUTE_BASE,
    CONF_ACK,
    CONF_BASE,
    CONF_HEAD,
    CONF_SIZE,
    HEADER_COUNT,
    HOST_HEARTBEAT,
    PLC_HEARTBEAT,
    REP_HEAD,
    REPLY_BASE,
    REQ_ACK,
    REQ_HEAD,
    REQUEST_BASE,
    REQUEST_SIZE,
    RING_SLOTS,
    counter_diff,
    decode_confirmation,
    decode_request,
    encode_reply,
    slot,
)
from simulators.conveyor import Conveyor, LineParams, SimItem
from simulators.plc import PlcSimulator
from sorter.ports import ChuteFlag, Confirmation, Outcome, SortRequest
from tests.waiting import wait_until

DEVICE_ID = 1
SCAN_WAIT_S = 0.05
FAST_LINE = LineParams(
    belt_speed_m_s=20.0,
    item_pitch_m=0.5,
    induct_to_scan_m=0.2,
    scan_to_first_chute_m=4.0,  # 200 ms for the host
    chute_pitch_m=0.5,
    loop_length_m=12.0,  # back at the scanner 600 ms after the previous pass
    chutes=tuple(range(1, 11)),  # chute 10 at 8.5 m = 425 ms, end of line at 9 m
    chute_capacity=None,
    empty_after_s=None,
)


@pytest.fixture(autouse=True)
async def no_tasks_left() -> AsyncIterator[None]:
    yield
    for _ in range(5):
        await asyncio.sleep(0)
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    assert left == [], f"tasks left behind: {left}"


@dataclass
class ScannerSink:
    """Stands in for the scanner simulator: remembers the last read per tracking id."""

    codes: dict[int, tuple[str, ...]] = field(default_factory=dict)
    sent_s: list[tuple[int, float]] = field(default_factory=list)

    def __call__(self, tracking_id: int, codes: Sequence[str]) -> None:
        self.codes[tracking_id] = tuple(codes)
        self.sent_s.append((tracking_id, asyncio.get_running_loop().time()))


def chute_from_codes(codes: tuple[str, ...] | None) -> int:
    """Test sort plan: code `C<n>` goes to chute n; no-read or no read in time: 0."""
    if not codes:
        return 0
    return int(codes[0][1:])


# delay_s(request, previous requests seen for this tracking id) -> seconds, None: never reply
DelayPolicy = Callable[[SortRequest, int], float | None]


class MiniHost:
    """The host side of the handshake, as small as it can be, over real Modbus TCP."""

    def __init__(
        self,
        port: int,
        sink: ScannerSink,
        delay_s: DelayPolicy | None = None,
        poll_s: float = 0.002,
        heartbeat: bool = True,
    ) -> None:
        self.client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1)
        self.sink = sink
        self.delay_s = delay_s or (lambda _req, _n: 0.0)
        self.poll_s = poll_s
        self.heartbeat = heartbeat
        self.ack_requests = True
        self.ack_confirmations = True
        self.requests: list[SortRequest] = []
        self.confirmations: list[Confirmation] = []
        self.chute_flags_seen: set[tuple[int, int]] = set()
        self._seen_per_tid: Counter[int] = Counter()
        self._waiting: list[tuple[float, float, SortRequest]] = []  # (due, give_up, req)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MiniHost:
        assert await self.client.connect()
        header = await self.read(0, HEADER_COUNT)
        self.req_ack = header[REQ_ACK]
        self.rep_head = header[REP_HEAD]
        self.conf_ack = header[CONF_ACK]
        self.host_heartbeat = header[HOST_HEARTBEAT]
        self._task = asyncio.create_task(self._loop(), name="mini-host")
        return self

    async def __aexit__(self, *exc: object) -> None:
        # pymodbus waits with asyncio.wait_for, which on Python 3.11 can swallow a cancel
        # that lands as an answer arrives (see drivers/plc.py): cancel until it ends.
        task, self._task = self._task, None
        for _ in range(50):
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=0.2)
        if task is not None and task.done() and not task.cancelled():
            with contextlib.suppress(asyncio.CancelledError):
                task.result()
        self.client.close()

    @staticmethod
    def _check_cancelled() -> None:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise asyncio.CancelledError

    async def read(self, address: int, count: int) -> list[int]:
        rr = await self.client.read_holding_registers(address, count=count, device_id=DEVICE_ID)
        self._check_cancelled()
        assert not rr.isError(), rr
        return list(rr.registers)

    async def write(self, address: int, values: list[int]) -> None:
        rr = await self.client.write_registers(address, values, device_id=DEVICE_ID)
        self._check_cancelled()
        assert not rr.isError(), rr

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_heartbeat_s = 0.0
        while True:
            now = loop.time()
            if self.heartbeat and now >= next_heartbeat_s:
                self.host_heartbeat = (self.host_heartbeat + 1) % 65536
                await self.write(HOST_HEARTBEAT, [self.host_heartbeat])
                next_heartbeat_s = now + 0.1
            header = await self.read(0, HEADER_COUNT)
            if self.ack_requests:
                await self._take_requests(header[REQ_HEAD], now)
            await self._answer(now)
            if self.ack_confirmations:
                await self._take_confirmations(header[CONF_HEAD])
            flags = await self.read(CHUTE_BASE + 1, 10)
            self.chute_flags_seen.update((i + 1, f) for i, f in enumerate(flags) if f)
            await asyncio.sleep(self.poll_s)

    async def _take_requests(self, req_head: int, now: float) -> None:
        new = counter_diff(req_head, self.req_ack)
        assert new <= RING_SLOTS
        for k in range(new):
            regs = await self.read(REQUEST_BASE + REQUEST_SIZE * slot(self.req_ack + k), 8)
            req = decode_request(regs)
            assert req.seq == (self.req_ack + k) % 65536, "slot holds the wrong message"
            self.requests.append(req)
            delay = self.delay_s(req, self._seen_per_tid[req.tracking_id])
            self._seen_per_tid[req.tracking_id] += 1
            if delay is not None:
                self._waiting.append((now + delay, now + delay + SCAN_WAIT_S, req))
        if new:
            self.req_ack = req_head
            await self.write(REQ_ACK, [req_head])

    async def _answer(self, now: float) -> None:
        still: list[tuple[float, float, SortRequest]] = []
        for due_s, give_up_s, req in self._waiting:
            codes = self.sink.codes.get(req.tracking_id)
            if now < due_s or (codes is None and now < give_up_s):
                still.append((due_s, give_up_s, req))
                continue
            chute = chute_from_codes(codes)
            await self.write(
                REPLY_BASE + 4 * slot(self.rep_head), encode_reply(req.seq, req.tracking_id, chute)
            )
            self.rep_head = (self.rep_head + 1) % 65536
            await self.write(REP_HEAD, [self.rep_head])
        self._waiting = still

    async def _take_confirmations(self, conf_head: int) -> None:
        new = counter_diff(conf_head, self.conf_ack)
        assert new <= RING_SLOTS
        for k in range(new):
            regs = await self.read(CONF_BASE + CONF_SIZE * slot(self.conf_ack + k), CONF_SIZE)
            self.confirmations.append(decode_confirmation(regs))
        if new:
            self.conf_ack = conf_head
            await self.write(CONF_ACK, [conf_head])


async def plc_cycles(plc: PlcSimulator, n: int = 2) -> None:
    """Let the PLC complete `n` more cycles: with two, one that began after this call."""
    done = plc.stats.cycles
    await wait_until(lambda: plc.stats.cycles >= done + n, what=f"{n} more PLC cycles")


def items_for(chutes: Sequence[int | None]) -> list[SimItem]:
    """One item per entry: a chute number becomes code C<n>, None a no-read."""
    return [
        SimItem(
            codes=() if c is None else (f"C{c}",),
            expected_chutes=() if c is None else (c,),
            length_mm=300,
            width_mm=200,
            height_mm=100,
            weight_g=1500,
        )
        for c in chutes
    ]


def conf_key(c: Confirmation) -> tuple[int, int, int, int, int]:
    return (c.seq, c.tracking_id, c.chute_actual, int(c.outcome), c.recirculations)


async def test_hundred_items_terminate_with_wrapping_counters() -> None:
    params = dataclasses.replace(FAST_LINE, tracking_id_start=2**32 - 50)
    sink = ScannerSink()
    # 0..9 -> chutes 1..10, 10 -> no-read (reject), 11 -> chute 99 that does not exist.
    plan = [(i % 12 + 1 if i % 12 < 10 else (None if i % 12 == 10 else 99)) for i in range(100)]
    items = items_for(plan)
    async with (
        PlcSimulator(counter_start=65500) as plc,
        MiniHost(plc.port, sink) as host,
        Conveyor(plc, params, sink, seed=1) as line,
    ):
        assert await line.run(items, rate_items_per_h=120_000) == 100
        assert await line.drain(timeout_s=10.0)
        total_confs = sum(len(r.confirmations) for r in line.ledger.items)
        await wait_until(lambda: len(host.confirmations) == total_confs)
        req_head = (await host.read(REQ_HEAD, 1))[0]

    ledger = line.ledger
    assert ledger.inducted == 100
    assert ledger.in_flight == 0
    for record, chute in zip(ledger.items, plan, strict=True):
        terminal = [c for c in record.confirmations if c.outcome.terminal]
        assert len(terminal) == 1, record
        assert record.confirmations[-1] is terminal[0]
        if chute is None or chute == 99:
            assert record.final_outcome is Outcome.REJECT
            assert terminal[0].chute_actual == 0
        else:
            assert record.final_outcome is Outcome.SORTED, record
            assert record.final_chute == chute
    assert ledger.terminal == Counter({"sorted": 84, "reject": 16})

    # The host saw exactly the confirmations the ledger holds, each item terminating once.
    assert Counter(map(conf_key, host.confirmations)) == Counter(
        conf_key(c) for r in ledger.items for c in r.confirmations
    )
    per_tid = Counter(c.tracking_id for c in host.confirmations if c.outcome.terminal)
    assert set(per_tid.values()) == {1}
    assert len(per_tid) == 100

    # Counters and tracking ids rolled over.
    seqs = [p.seq for r in ledger.items for p in r.passes]
    assert 65535 in seqs
    assert 0 in seqs
    assert req_head == (65500 + len(seqs)) % 65536
    tids = [r.tracking_id for r in ledger.items]
    assert 2**32 - 1 in tids
    assert 1 in tids
    assert 0 not in tids
    assert [req.tracking_id for req in host.requests] == tids  # no recirculation here
    assert host.requests[0].length_mm == 300
    assert host.requests[0].weight_g == 1500

    # Reads came both before and after the PLC's request.
    scan_s = {(r.tracking_id, i): p.scan_s for r in ledger.items for i, p in enumerate(r.passes)}
    seen: Counter[int] = Counter()
    before = after = 0
    for tid, sent_s in sink.sent_s:
        pass_scan_s = scan_s[(tid, seen[tid])]
        seen[tid] += 1
        if sent_s < pass_scan_s:
            before += 1
        else:
            after += 1
    assert before > 10
    assert after > 10


async def test_late_reply_recirculates_only_when_past_the_assigned_chute() -> None:
    def delay(req: SortRequest, previous: int) -> float | None:
        del req
        if previous == 0:
            return 0.3  # chute 1 is at 200 ms: too late, however fast the host
        return 0.0

    # Chute 10 at 1.55 s: in time with more than a second to spare for a slow machine.
    params = dataclasses.replace(FAST_LINE, chute_pitch_m=3.0, loop_length_m=40.0)
    sink = ScannerSink()
    plan = [1, 10] * 5
    async with (
        PlcSimulator() as plc,
        MiniHost(plc.port, sink, delay_s=delay) as host,
        Conveyor(plc, params, sink, seed=2) as line,
    ):
        await line.run(items_for(plan), rate_items_per_h=60_000)
        assert await line.drain(timeout_s=10.0)
        total = sum(len(r.confirmations) for r in line.ledger.items)
        await wait_until(lambda: len(host.confirmations) == total)

    for record, chute in zip(line.ledger.items, plan, strict=True):
        outcomes = [(c.outcome, c.chute_actual, c.recirculations) for c in record.confirmations]
        if chute == 1:
            assert outcomes == [(Outcome.RECIRC_LATE, 0, 1), (Outcome.SORTED, 1, 1)], record
            assert record.passes[0].reply_late
            assert record.passes[0].seq != record.passes[1].seq
        else:
            assert outcomes == [(Outcome.SORTED, 10, 0)], record
    assert line.ledger.late_replies == 5
    assert line.ledger.recirculations == 5


async def test_no_reply_recirculates_late_then_plc_rejects_after_max() -> None:
    sink = ScannerSink()
    params = dataclasses.replace(FAST_LINE, max_plc_recirculations=2)
    async with (
        PlcSimulator() as plc,
        MiniHost(plc.port, sink, delay_s=lambda _r, _n: None) as host,
        Conveyor(plc, params, sink, seed=3) as line,
    ):
        await line.run(items_for([3, 4]), rate_items_per_h=60_000)
        assert await line.drain(timeout_s=10.0)
        await wait_until(lambda: len(host.confirmations) == 6)

    for record in line.ledger.items:
        assert [(c.outcome, c.recirculations) for c in record.confirmations] == [
            (Outcome.RECIRC_LATE, 1),
            (Outcome.RECIRC_LATE, 2),
            (Outcome.REJECT, 2),
        ]
        assert len({p.seq for p in record.passes}) == 3
    assert line.ledger.no_reply_passes == 6
    assert len(host.requests) == 6  # every pass asked the host, nothing more


async def test_full_and_disabled_chutes_recirculate() -> None:
    sink = ScannerSink()
    params = dataclasses.replace(FAST_LINE, chute_capacity=3, empty_after_s=0.4)
    plan = [2] * 8 + [5] * 2
    async with (
        PlcSimulator() as plc,
        MiniHost(plc.port, sink) as host,
        Conveyor(plc, params, sink, seed=4) as line,
    ):
        plc.set_chute_disabled(5)
        await line.run(items_for(plan), rate_items_per_h=100_000)
        assert await line.drain(timeout_s=15.0)
        total = sum(len(r.confirmations) for r in line.ledger.items)
        await wait_until(lambda: len(host.confirmations) == total)
        assert plc.chute_status(5).state == "disabled"

    ledger = line.ledger
    for record, chute in zip(ledger.items, plan, strict=True):
        if chute == 2:
            assert record.final_outcome is Outcome.SORTED
            assert record.final_chute == 2
        else:
            # Disabled for good: five recirculations, then the PLC's own reject.
            assert [c.outcome for c in record.confirmations] == [Outcome.RECIRC_DISABLED] * 5 + [
                Outcome.REJECT
            ]
            assert [c.recirculations for c in record.confirmations] == [1, 2, 3, 4, 5, 5]
    assert ledger.confirmations["recirc_full"] > 0
    assert ledger.terminal == Counter({"sorted": 8, "reject": 2})
    # The host saw chute 2 go full over Modbus, and chute 5 disabled.
    assert (2, ChuteFlag.FULL) in host.chute_flags_seen
    assert (5, ChuteFlag.DISABLED) in host.chute_flags_seen


async def test_dead_host_means_no_divert_to_host_chutes() -> None:
    sink = ScannerSink()
    async with (
        PlcSimulator() as plc,
        MiniHost(plc.port, sink, heartbeat=False) as host,
        Conveyor(plc, FAST_LINE, sink, seed=5) as line,
    ):
        await line.run(items_for([1, 2, 3]), rate_items_per_h=60_000)
        assert await line.drain(timeout_s=5.0)
        await wait_until(lambda: len(host.confirmations) == 3)
    assert not plc.host_alive
    assert [r.final_outcome for r in line.ledger.items] == [Outcome.REJECT] * 3
    assert all(r.passes[0].reply_chute is not None for r in line.ledger.items)


async def test_request_ring_is_not_overwritten_when_host_stops_acking() -> None:
    async with PlcSimulator(counter_start=65530) as plc:
        client = AsyncModbusTcpClient("127.0.0.1", port=plc.port, timeout=1)
        assert await client.connect()
        try:

            async def regs(address: int, count: int) -> list[int]:
                rr = await client.read_holding_registers(address, count=count, device_id=1)
                assert not rr.isError()
                return list(rr.registers)

            seqs = [plc.submit_request(1000 + i, 1, i, 0, 0, 0) for i in range(70)]
            assert seqs[:7] == [65530, 65531, 65532, 65533, 65534, 65535, 0]
            # The PLC found the ring full for the other six and holds them.
            await wait_until(lambda: plc.stats.req_ring_full == 6)
            assert plc.stats.requests_written == 64
            header = await regs(0, HEADER_COUNT)
            assert counter_diff(header[REQ_HEAD], header[REQ_ACK]) == 64
            assert header[REQ_HEAD] == (65530 + 64) % 65536
            assert plc.pending_requests == 6
            assert plc.stats.req_ring_full == 6

            # Every slot still holds its first message (tracking id 1000 + i).
            for i in range(64):
                req = decode_request(await regs(REQUEST_BASE + 8 * slot(65530 + i), 8))
                assert (req.seq, req.tracking_id) == ((65530 + i) % 65536, 1000 + i)

            # write_request waits while the ring is full and returns once the host acks.
            waiter = asyncio.create_task(plc.write_request(2000, 1, 0, 0, 0, 0))
            await wait_until(lambda: plc.stats.req_ring_full == 7)  # held too
            assert not waiter.done()
            rr = await client.write_register(REQ_ACK, (65530 + 10) % 65536, device_id=1)
            assert not rr.isError()
            async with asyncio.timeout(30):
                assert await waiter == (65530 + 70) % 65536
            assert plc.stats.requests_written == 71
            assert plc.pending_requests == 0
            for i in range(64, 71):
                req = decode_request(await regs(REQUEST_BASE + 8 * slot(65530 + i), 8))
                expected_tid = 1000 + i if i < 70 else 2000
                assert (req.seq, req.tracking_id) == ((65530 + i) % 65536, expected_tid)
            # Messages 10..63 were not consumed and were not touched.
            for i in range(10, 64):
                req = decode_request(await regs(REQUEST_BASE + 8 * slot(65530 + i), 8))
                assert req.tracking_id == 1000 + i

            # Same rule for confirmations.
            for i in range(66):
                plc.submit_confirmation(i, 3000 + i, 0, Outcome.REJECT, 0)
            await wait_until(lambda: plc.stats.conf_ring_full == 2)
            assert plc.stats.confirmations_written == 64
            header = await regs(0, HEADER_COUNT)
            assert counter_diff(header[CONF_HEAD], header[CONF_ACK]) == 64
            assert plc.pending_confirmations == 2
            assert plc.stats.conf_ring_full == 2
            first = decode_confirmation(await regs(CONF_BASE + 6 * slot(65530), 6))
            assert (first.seq, first.tracking_id) == (0, 3000)
        finally:
            client.close()


async def test_heartbeats_and_restart() -> None:
    async with PlcSimulator(host_timeout_s=0.3, counter_start=7) as plc:
        client = AsyncModbusTcpClient("127.0.0.1", port=plc.port, timeout=1)
        assert await client.connect()
        try:

            async def reg(address: int) -> int:
                rr = await client.read_holding_registers(address, count=1, device_id=1)
                assert not rr.isError()
                return int(rr.registers[0])

            header = await client.read_holding_registers(0, count=4, device_id=1)
            assert header.registers[2:4] == [1, 1]  # running, interface version 1
            hb0 = await reg(PLC_HEARTBEAT)

            async def beats(n: int) -> bool:
                return counter_diff(await reg(PLC_HEARTBEAT), hb0) >= n

            await wait_until(lambda: beats(2), what="two PLC heartbeats")

            plc.freeze_heartbeat(True)
            await plc_cycles(plc)  # a beat counted before the freeze is written by now
            frozen = await reg(PLC_HEARTBEAT)
            # The scenario: the PLC program hung for three heartbeat periods (100 ms each).
            await asyncio.sleep(0.3)
            await plc_cycles(plc)  # and the PLC did cycle after them
            assert await reg(PLC_HEARTBEAT) == frozen
            plc.freeze_heartbeat(False)
            await wait_until(lambda: beats(counter_diff(frozen, hb0) + 1), what="beats resume")

            assert not plc.host_alive  # no host heartbeat change seen yet
            await client.write_register(HOST_HEARTBEAT, 1, device_id=1)
            await wait_until(lambda: plc.host_alive)
            # The host writes no more: after host_timeout_s the PLC counts it dead.
            await wait_until(lambda: not plc.host_alive)
            assert plc.stats.host_dead_events == 1

            # A restart puts the heads back; held requests are dropped, not written later.
            for i in range(3):
                plc.submit_request(10 + i)
            await wait_until(lambda: plc.stats.requests_written == 3)
            plc.reset_counters()
            await plc_cycles(plc)
            assert await reg(REQ_HEAD) == 7
            assert await reg(CONF_HEAD) == 7
            assert plc.stats.resets == 1
        finally:
            client.close()
