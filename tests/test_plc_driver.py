"""PlcLink (drivers/plc.py) end to end against the real PlcSimulator over Modbus TCP.

Every test runs the link's `run()` in a task against a simulator (or a bare pymodbus server)
on 127.0.0.1 with a recording handler, and cancels it at the end. The last section holds
regressions for bugs a review found in drivers/plc.py (cancellation lost on Python 3.11,
counters that go back after a PLC restart, backoff, heartbeat timing, state reporting).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pymodbus import ModbusException
from pymodbus.exceptions import ModbusIOException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers import plc as plc_driver
from drivers.broker import free_port
from drivers.plc import PlcError, PlcLink, PlcTimeoutError
from drivers.registers import (
    CONF_ACK,
    CONF_BASE,
    CONF_SIZE,
    COUNTER_MOD,
    HOST_HEARTBEAT,
    INTERFACE_VERSION,
    REP_HEAD,
    REQ_ACK,
    REQUEST_BASE,
    REQUEST_SIZE,
    slot,
)
from simulators.plc import PlcSimulator
from sorter.ports import ChuteFlag, Confirmation, Outcome, Ring, SortRequest
from tests.waiting import wait_until

HOST = "127.0.0.1"
DEVICE_ID = 1
_WRITE_MULTIPLE = 16  # function code pymodbus' datastore wants for a register write


def chute_for(tracking_id: int) -> int:
    return tracking_id % 10 + 1


class Recorder:
    """A PlcHandler that records every callback and, by default, answers each request at once."""

    def __init__(self, *, auto_reply: bool = True) -> None:
        self.link: PlcLink | None = None
        self.auto_reply = auto_reply
        self.batches: list[list[SortRequest]] = []
        self.confirmations: list[Confirmation] = []
        self.chute_status: list[tuple[int, list[int]]] = []
        self.states: list[tuple[bool, str]] = []
        self.jumps: list[Ring] = []

    @property
    def requests(self) -> list[SortRequest]:
        return [r for batch in self.batches for r in batch]

    @property
    def up(self) -> bool:
        return bool(self.states) and self.states[-1][0]

    @property
    def down(self) -> bool:
        return bool(self.states) and not self.states[-1][0]

    def on_requests(self, requests: Sequence[SortRequest]) -> None:
        self.batches.append(list(requests))
        if self.auto_reply:
            assert self.link is not None
            for r in requests:
                self.link.queue_reply(r.seq, r.tracking_id, chute_for(r.tracking_id))

    def on_confirmations(self, confirmations: Sequence[Confirmation]) -> None:
        self.confirmations.extend(confirmations)

    def on_chute_status(self, first_chute: int, status: Sequence[int]) -> None:
        self.chute_status.append((first_chute, list(status)))

    def on_link_state(self, connected: bool, reason: str) -> None:
        self.states.append((connected, reason))

    def on_counters_jumped(self, ring: Ring) -> None:
        self.jumps.append(ring)


def make_link(url: str, handler: Recorder, **kwargs: Any) -> PlcLink:
    # Short timeouts and backoff keep the failure tests fast; callers override as needed.
    params: dict[str, Any] = {
        "request_timeout_ms": 300,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
    }
    params.update(kwargs)
    link = PlcLink(url, handler, **params)
    handler.link = link
    return link


async def stop_link(task: asyncio.Task[None]) -> None:
    """Cancel `run()` until it ends; re-raise whatever it died of if it ended by itself.

    One cancel is not always enough on Python 3.11: asyncio.wait_for (in pymodbus and in
    PlcLink) drops a cancellation that arrives as the awaited thing completes, see
    test_cancel_is_not_lost_when_a_reply_is_queued_at_the_same_moment.
    """
    ended_early = task.done()
    for _ in range(10):
        task.cancel()
        done, _pending = await asyncio.wait({task}, timeout=1.0)
        if done:
            break
    else:
        pytest.fail("PlcLink.run() does not stop when cancelled")
    if not task.cancelled():
        task.result()  # raises what escaped run()
    assert not ended_early, "PlcLink.run() returned instead of retrying"


@contextlib.asynccontextmanager
async def running(link: PlcLink) -> AsyncIterator[asyncio.Task[None]]:
    """Run `link.run()` in a task; stop it on exit and fail if it had ended by itself."""
    task = asyncio.create_task(link.run(), name="plc-link-under-test")
    try:
        yield task
    finally:
        await stop_link(task)


async def register(plc: PlcSimulator, address: int) -> int:
    return (await plc.read_registers(address, 1))[0]


async def register_becomes(plc: PlcSimulator, address: int, value: int) -> None:
    async def reached() -> bool:
        return await register(plc, address) == value

    try:
        await wait_until(reached, what=f"register {address} == {value}")
    except TimeoutError:
        last = await register(plc, address)
        pytest.fail(f"register {address} is {last}, not {value}")


async def two_more_polls(link: PlcLink) -> None:
    """Let the link start a poll cycle after this call and finish it: a message it would
    read twice, or a write it would repeat, has happened by then."""
    started = link.stats.cycles
    await wait_until(lambda: link.stats.cycles >= started + 2, what="two more poll cycles")


@contextlib.asynccontextmanager
async def bare_server(values: list[int]) -> AsyncIterator[tuple[ModbusTcpServer, str]]:
    """A plain pymodbus server holding exactly `values` (no PLC logic, device 1)."""
    device = SimDevice(DEVICE_ID, [SimData(0, count=1, values=values, datatype=DataType.REGISTERS)])
    server = ModbusTcpServer(device, address=(HOST, 0))
    assert await server.listen()
    listener = server.transport
    assert isinstance(listener, asyncio.Server)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"tcp://{HOST}:{port}"
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await listener.wait_closed()


def header_values(count: int, *, interface_version: int = 1) -> list[int]:
    values = [0] * count
    values[2] = 1  # plc_state running
    values[INTERFACE_VERSION] = interface_version
    return values


# ---------------------------------------------------------------------------- requests


async def test_requests_arrive_once_in_order_decoded_and_replies_land() -> None:
    sent = [
        # tracking_id, induction, length_mm, width_mm, height_mm, weight_g
        (70_000, 1, 600, 400, 300, 12_345),
        (0x1234_5678, 2, 1, 2, 3, 4),
        (2**32 - 1, 65_535, 65_535, 65_535, 65_535, 65_535),
        (65_536, 3, 0, 0, 0, 0),  # no dimensioner, no scale
        (42, 1, 250, 180, 90, 30_000),
    ]
    async with PlcSimulator() as plc:
        handler = Recorder()
        link = make_link(plc.url, handler)
        async with running(link):
            await wait_until(lambda: handler.up, what="link up")
            assert handler.states == [(True, "connected")]
            seqs = [plc.submit_request(*fields) for fields in sent]
            assert seqs == [0, 1, 2, 3, 4]
            await wait_until(lambda: len(handler.requests) >= len(sent), what="all requests")
            await two_more_polls(link)  # a duplicate would show up

            got = handler.requests
            assert [(r.seq, r.tracking_id) for r in got] == [
                (seq, fields[0]) for seq, fields in zip(seqs, sent, strict=True)
            ]
            for r, (tid, induction, length, width, height, weight) in zip(got, sent, strict=True):
                assert (r.tracking_id, r.induction) == (tid, induction)
                assert (r.length_mm, r.width_mm, r.height_mm, r.weight_g) == (
                    length,
                    width,
                    height,
                    weight,
                )
                assert r.received_ns > 0

            def replies_in() -> bool:
                return all(plc.reply(f[0], s) is not None for s, f in zip(seqs, sent, strict=True))

            await wait_until(replies_in, what="replies taken in by the PLC")
            for seq, fields in zip(seqs, sent, strict=True):
                reply = plc.reply(fields[0], seq)
                assert reply is not None
                assert (reply.seq, reply.tracking_id, reply.chute) == (
                    seq,
                    fields[0],
                    chute_for(fields[0]),
                )
            await register_becomes(plc, REQ_ACK, len(sent))
            await register_becomes(plc, REP_HEAD, len(sent))
            assert link.stats.requests == len(sent)
            assert link.stats.replies == len(sent)
            assert link.stats.errors == 0
            assert link.stats.counter_jumps == 0
            assert plc.stats.replies_read == len(sent)
            assert plc.stats.rep_head_jumps == 0


async def test_counters_wrap_and_bursts_cross_the_ring_end() -> None:
    start = 65_500  # slot 28: a burst of 40 runs over slot 63 -> 0 and counter 65535 -> 0
    burst = 40
    async with PlcSimulator(counter_start=start) as plc:
        first_tids = [100_000 + i for i in range(burst)]
        seqs = [plc.submit_request(tid, length_mm=i) for i, tid in enumerate(first_tids)]
        assert seqs == [(start + i) % COUNTER_MOD for i in range(burst)]
        for i in range(burst):
            plc.submit_confirmation(seqs[i], first_tids[i], chute_for(i), Outcome.SORTED, i % 3)
        await wait_until(
            lambda: (
                plc.stats.requests_written == burst and plc.stats.confirmations_written == burst
            ),
            what="simulator wrote the burst",
        )

        handler = Recorder()
        link = make_link(plc.url, handler)
        async with running(link):
            # The link starts with 40 unconsumed requests: one cycle, four reads.
            await wait_until(lambda: len(handler.requests) >= burst, what="first burst")
            assert len(handler.batches[0]) == burst
            assert [(r.seq, r.tracking_id, r.length_mm) for r in handler.requests] == [
                (seqs[i], first_tids[i], i) for i in range(burst)
            ]
            await wait_until(lambda: len(handler.confirmations) >= burst, what="confirmations")
            assert [(c.seq, c.tracking_id, c.recirculations) for c in handler.confirmations] == [
                (seqs[i], first_tids[i], i % 3) for i in range(burst)
            ]
            end = (start + burst) % COUNTER_MOD
            assert end == 4
            await register_becomes(plc, REQ_ACK, end)
            await register_becomes(plc, REP_HEAD, end)
            await register_becomes(plc, CONF_ACK, end)

            def all_replied(tids: list[int], seq_list: list[int]) -> bool:
                return all(plc.reply(t, s) is not None for t, s in zip(tids, seq_list, strict=True))

            await wait_until(lambda: all_replied(first_tids, seqs), what="replies of first burst")
            for tid, seq in zip(first_tids, seqs, strict=True):
                reply = plc.reply(tid, seq)
                assert reply is not None
                assert reply.chute == chute_for(tid)

            # A second burst while the link runs: more than one read's worth (15 slots).
            second_tids = [200_000 + i for i in range(20)]
            more = [plc.submit_request(tid) for tid in second_tids]
            await wait_until(lambda: len(handler.requests) >= burst + 20, what="second burst")
            await two_more_polls(link)
            assert [(r.seq, r.tracking_id) for r in handler.requests[burst:]] == list(
                zip(more, second_tids, strict=True)
            )
            await wait_until(lambda: all_replied(second_tids, more), what="replies of second burst")
            await register_becomes(plc, REQ_ACK, end + 20)
            await register_becomes(plc, REP_HEAD, end + 20)
            assert link.stats.requests == burst + 20
            assert link.stats.counter_jumps == 0
            assert plc.stats.rep_head_jumps == 0
            assert plc.stats.replies_read == burst + 20


async def test_reply_queued_outside_a_poll_is_written_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A decision made between polls (a late scan, a timeout) goes out when it is made.
    Here the link has nothing to wake it for ten minutes, neither a poll nor a heartbeat
    (the heartbeat period is stretched for this test), so a reply that waited for the next
    cycle would never arrive. How soon it arrives is a benchmark's question."""
    monkeypatch.setattr(plc_driver, "HOST_HEARTBEAT_INTERVAL_NS", 600 * 10**9)
    async with PlcSimulator() as plc:
        seq = plc.submit_request(777_777)
        # In the ring before the link connects: its first poll takes it.
        await wait_until(lambda: plc.stats.requests_written == 1, what="request in the ring")
        handler = Recorder(auto_reply=False)
        link = make_link(plc.url, handler, poll_interval_ms=600_000)
        async with running(link):
            await wait_until(lambda: bool(handler.requests), what="request")
            link.queue_reply(seq, 777_777, 9)
            assert await link.wait_replies_written(30)
            await wait_until(lambda: plc.reply(777_777, seq) is not None, what="reply")
            reply = plc.reply(777_777, seq)
            assert reply is not None
            assert reply.chute == 9
            assert link.pending_replies == 0


@pytest.mark.parametrize("request_first", [True, False], ids=["in-ring", "read-first"])
async def test_a_read_ahead_of_its_request_makes_the_link_poll_for_it(
    monkeypatch: pytest.MonkeyPatch, request_first: bool
) -> None:
    """`expect_request()` (a scanner read whose request is not read yet): the link polls
    at once, then every millisecond until a request comes, so the request is read without
    waiting for the next poll. Here neither a poll nor a heartbeat comes for ten minutes:
    only the read-ahead polls can find the request, whether it was already in the ring or
    is written after the read (the read came first)."""
    monkeypatch.setattr(plc_driver, "HOST_HEARTBEAT_INTERVAL_NS", 600 * 10**9)
    monkeypatch.setattr(plc_driver, "READ_AHEAD_MAX_NS", 600 * 10**9)  # a slow host too
    async with PlcSimulator() as plc:
        handler = Recorder()
        link = make_link(plc.url, handler, poll_interval_ms=600_000)
        assert link.poll_on_read  # Modbus TCP: on by default
        async with running(link):
            # The first cycle's heartbeat write follows its header read: idle from here.
            await register_becomes(plc, HOST_HEARTBEAT, 1)
            if request_first:
                plc.submit_request(4242)
                await wait_until(lambda: plc.stats.requests_written == 1, what="in the ring")
                link.expect_request()
            else:
                link.expect_request()
                await two_more_polls(link)  # polling every millisecond now
                plc.submit_request(4242)
            await wait_until(lambda: bool(handler.requests), what="request read")
            assert [r.tracking_id for r in handler.requests] == [4242]


async def test_a_flood_of_reads_makes_no_more_than_one_poll_per_read_ahead_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reads whose request never comes (a scanner reading items the PLC never asks about,
    both heads of a tunnel, a replay) can come faster than the link's round trip: while
    the link already polls every READ_AHEAD_POLL_S for an earlier read, another read must
    not wake it into a poll of its own, or the reads set the pace and the link polls back
    to back. Here the poll interval, the read-ahead interval and the heartbeat are ten
    minutes: after the read-ahead's first poll, any poll is one a read forced."""
    monkeypatch.setattr(plc_driver, "HOST_HEARTBEAT_INTERVAL_NS", 600 * 10**9)
    monkeypatch.setattr(plc_driver, "READ_AHEAD_POLL_S", 600.0)
    async with PlcSimulator() as plc:
        handler = Recorder()
        link = make_link(plc.url, handler, poll_interval_ms=600_000)
        async with running(link):
            await register_becomes(plc, HOST_HEARTBEAT, 1)  # idle from here
            started = link.stats.cycles
            link.expect_request()
            await wait_until(lambda: link.stats.cycles == started + 1, what="the poll at once")
            for _ in range(200):  # reads 1 ms apart, as a busy tunnel's
                link.expect_request()
                await asyncio.sleep(0.001)
            assert link.stats.cycles == started + 1


def test_read_ahead_polls_are_off_over_a_serial_line() -> None:
    """A serial line has no time for extra reads: off for RTU and for RTU frames through
    a gateway unless set; a setting wins."""
    handler = Recorder()
    assert PlcLink("tcp://127.0.0.1:5020", handler).poll_on_read
    assert not PlcLink("tcp://127.0.0.1:5020?framer=rtu", handler).poll_on_read
    assert not PlcLink("rtu:///dev/ttyUSB0?baudrate=115200", handler).poll_on_read
    assert PlcLink("rtu:///dev/ttyUSB0", handler, poll_on_read=True).poll_on_read
    assert not PlcLink("tcp://127.0.0.1:5020", handler, poll_on_read=False).poll_on_read


# ---------------------------------------------------------------------------- confirmations


async def test_confirmations_arrive_once_with_outcome_decoded() -> None:
    async with PlcSimulator() as plc:
        handler = Recorder()
        link = make_link(plc.url, handler)
        async with running(link):
            await wait_until(lambda: handler.up, what="link up")
            sent = [
                # seq, tracking_id, chute_actual, outcome, recirculations
                (100 + int(o), 90_000 + int(o), 0 if o is Outcome.LOST else int(o) + 10, o, 2)
                for o in Outcome
            ]
            for conf in sent:
                plc.submit_confirmation(*conf)
            await wait_until(lambda: len(handler.confirmations) >= len(sent), what="confirmations")
            await two_more_polls(link)
            assert [
                (c.seq, c.tracking_id, c.chute_actual, c.outcome, c.recirculations)
                for c in handler.confirmations
            ] == sent
            assert all(isinstance(c.outcome, Outcome) for c in handler.confirmations)
            assert all(c.received_ns > 0 for c in handler.confirmations)
            await register_becomes(plc, CONF_ACK, len(sent))
            assert link.stats.confirmations == len(sent)
            assert link.stats.bad_confirmations == 0


async def test_invalid_confirmation_outcome_is_counted_and_skipped() -> None:
    async with PlcSimulator() as plc:
        # Written while no host runs, so the slots can be spoiled before anyone reads them;
        # the link then finds them between conf_ack and conf_head when it connects.
        for k in range(4):
            plc.submit_confirmation(k, 300_000 + k, 5, Outcome.SORTED, 0)
        await wait_until(lambda: plc.stats.confirmations_written == 4, what="confirmations written")
        await plc.write_registers(CONF_BASE + CONF_SIZE * slot(1) + 4, [0])
        await plc.write_registers(CONF_BASE + CONF_SIZE * slot(2) + 4, [8])

        handler = Recorder()
        link = make_link(plc.url, handler)
        async with running(link):
            await register_becomes(plc, CONF_ACK, 4)
            assert [c.tracking_id for c in handler.confirmations] == [300_000, 300_003]
            assert link.stats.bad_confirmations == 2
            assert link.stats.confirmations == 2
            # The link stays up and keeps working.
            plc.submit_confirmation(4, 300_004, 6, Outcome.REJECT, 1)
            seq = plc.submit_request(300_005)
            await wait_until(lambda: len(handler.confirmations) == 3, what="next confirmation")
            await wait_until(lambda: plc.reply(300_005, seq) is not None, what="reply")
            assert handler.confirmations[-1].outcome is Outcome.REJECT
            assert handler.states == [(True, "connected")]
            assert link.stats.errors == 0


async def test_request_slot_with_a_wrong_seq_is_counted_and_skipped() -> None:
    async with PlcSimulator() as plc:
        for k in range(3):
            plc.submit_request(600_000 + k)
        await wait_until(lambda: plc.stats.requests_written == 3, what="requests written")
        await plc.write_registers(REQUEST_BASE + REQUEST_SIZE * slot(1), [9])  # seq 9, not 1

        handler = Recorder()
        link = make_link(plc.url, handler)
        async with running(link):
            await register_becomes(plc, REQ_ACK, 3)
            assert [(r.seq, r.tracking_id) for r in handler.requests] == [
                (0, 600_000),
                (2, 600_002),
            ]
            assert link.stats.bad_requests == 1
            seq = plc.submit_request(600_003)
            await wait_until(lambda: plc.reply(600_003, seq) is not None, what="next reply")
            assert plc.reply(600_001, 1) is None
            assert handler.states == [(True, "connected")]


# ---------------------------------------------------------------------------- chutes


@pytest.mark.parametrize("max_chute", [60, 200])
async def test_chute_status_bits_reach_the_handler(max_chute: int) -> None:
    async with PlcSimulator() as plc:
        handler = Recorder()
        link = make_link(plc.url, handler, max_chute=max_chute, chute_status_interval_ms=20)
        async with running(link):
            await wait_until(lambda: bool(handler.chute_status), what="first chute status")
            first, status = handler.chute_status[-1]
            assert (first, len(status)) == (1, max_chute)
            assert not any(status)

            plc.set_chute_full(3)
            plc.set_chute_disabled(7)
            plc.set_chute_full(12)
            plc.set_chute_fault(12)
            plc.set_chute_fault(max_chute)
            plc.set_chute_full(max_chute + 1)  # beyond max_chute: not reported
            expected = [0] * max_chute
            expected[3 - 1] = ChuteFlag.FULL
            expected[7 - 1] = ChuteFlag.DISABLED
            expected[12 - 1] = ChuteFlag.FULL | ChuteFlag.FAULT
            expected[max_chute - 1] = ChuteFlag.FAULT
            await wait_until(lambda: handler.chute_status[-1] == (1, expected), what="chute bits")

            plc.set_chute_full(3, False)
            plc.set_chute_fault(12, False)
            expected[3 - 1] = 0
            expected[12 - 1] = ChuteFlag.FULL
            await wait_until(lambda: handler.chute_status[-1] == (1, expected), what="cleared bits")


async def test_a_reloaded_plan_with_more_chutes_reads_their_status() -> None:
    """Found in review: the status reads were worked out once, at start-up; a plan reload
    that added chutes never saw their bits, and items went to full chutes."""
    async with PlcSimulator() as plc:
        handler = Recorder()
        link = make_link(plc.url, handler, max_chute=10, chute_status_interval_ms=20)
        async with running(link):
            await wait_until(lambda: bool(handler.chute_status), what="first chute status")
            assert len(handler.chute_status[-1][1]) == 10
            plc.set_chute_full(15)
            link.max_chute = 20  # what a plan reload does
            await wait_until(
                lambda: len(handler.chute_status[-1][1]) == 20, what="the new plan's chutes"
            )
            await wait_until(
                lambda: handler.chute_status[-1][1][15 - 1] == ChuteFlag.FULL, what="chute 15"
            )


# ---------------------------------------------------------------------------- heartbeats


async def host_heartbeats(plc: PlcSimulator, changes: int) -> list[int]:
    """The values the host heartbeat register takes until it has changed `changes` times."""
    values = [await register(plc, HOST_HEARTBEAT)]

    async def changed_enough() -> bool:
        value = await register(plc, HOST_HEARTBEAT)
        if value != values[-1]:
            values.append(value)
        return len(values) > changes

    await wait_until(changed_enough, what=f"{changes} changes of the host heartbeat")
    return values


def counts_up(values: Sequence[int]) -> bool:
    """Each value a step forward mod 65536 (one beat, or a few a slow reader missed)."""
    return all(0 < (b - a) % COUNTER_MOD < COUNTER_MOD // 2 for a, b in itertools.pairwise(values))


async def test_host_heartbeat_keeps_changing_and_plc_sees_host_alive() -> None:
    async with PlcSimulator() as plc:
        handler = Recorder()
        link = make_link(plc.url, handler)
        assert not plc.host_alive
        async with running(link):
            await wait_until(lambda: handler.up, what="link up")
            values = await host_heartbeats(plc, 3)
            assert counts_up(values), values
            await wait_until(lambda: plc.host_alive, what="the PLC sees the host alive")
            assert plc.stats.host_dead_events == 0


async def test_frozen_plc_heartbeat_drops_the_link_and_resuming_restores_it() -> None:
    async with PlcSimulator() as plc:
        handler = Recorder()
        link = make_link(plc.url, handler)
        async with running(link):
            await wait_until(lambda: handler.up, what="link up")
            await two_more_polls(link)  # polls while the heartbeat runs keep the link up
            assert handler.states == [(True, "connected")]
            plc.freeze_heartbeat()
            await wait_until(lambda: handler.down, what="link down on frozen heartbeat")
            assert handler.states[-1] == (False, "plc heartbeat frozen")
            assert not link.connected
            assert link.stats.errors == 1
            assert link.stats.last_error == "plc heartbeat frozen"

            plc.freeze_heartbeat(False)
            await wait_until(lambda: handler.up, what="link up again")
            assert handler.states[-1] == (True, "plc heartbeat resumed")
            seq = plc.submit_request(1_000_001)
            await wait_until(
                lambda: plc.reply(1_000_001, seq) is not None, what="reply after resume"
            )


# ---------------------------------------------------------------------------- reconnect


@pytest.mark.parametrize("memory", ["kept", "lost"])
async def test_plc_back_on_the_same_port_reconnects_by_itself(memory: str) -> None:
    """`kept`: the same PLC was unreachable for a while; `lost`: a new one, counters at 0."""
    handler = Recorder()
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        plc = await stack.enter_async_context(PlcSimulator(port=port))
        link = make_link(plc.url, handler)
        await stack.enter_async_context(running(link))
        await wait_until(lambda: handler.up, what="link up")
        for i in range(3):
            plc.submit_request(555_000 + i)
        await wait_until(
            lambda: plc.reply(555_002, 2) is not None, what="replies before the outage"
        )

        await plc.stop()
        await wait_until(lambda: handler.down, what="link down when the PLC goes")
        assert handler.states[-1][1], "link down without a reason"
        await wait_until(lambda: link.stats.errors >= 3, what="a few failed connects")
        assert not link.connected

        if memory == "lost":
            plc = await stack.enter_async_context(PlcSimulator(port=port))
        else:
            await plc.start()
        assert plc.port == port
        await wait_until(lambda: handler.up, what="link up again")
        assert handler.states[-1] == (True, "connected")
        assert link.stats.reconnects > 0
        n = len(handler.requests)
        seq = plc.submit_request(555_010, weight_g=800)
        assert seq == (3 if memory == "kept" else 0)
        await wait_until(lambda: plc.reply(555_010, seq) is not None, what="reply after the outage")
        await two_more_polls(link)  # a duplicate would show up
        assert [(r.seq, r.tracking_id, r.weight_g) for r in handler.requests[n:]] == [
            (seq, 555_010, 800)
        ]
        reply = plc.reply(555_010, seq)
        assert reply is not None
        assert reply.chute == chute_for(555_010)
        await register_becomes(plc, REQ_ACK, seq + 1)
        await register_becomes(plc, REP_HEAD, seq + 1)
        assert plc.stats.rep_head_jumps == 0


# ---------------------------------------------------------------------------- refusals


async def test_unserved_device_id_is_a_plc_error_and_the_link_keeps_retrying() -> None:
    async with PlcSimulator(device_id=1) as plc:
        handler = Recorder()
        link = make_link(plc.url, handler, device_id=5)
        async with running(link) as task:
            await wait_until(lambda: link.stats.errors >= 3, what="repeated errors")
            assert "Modbus exception" in link.stats.last_error
            assert not task.done()
            assert not link.connected
            assert (True, "connected") not in handler.states
            assert link.stats.reconnects >= 2


async def test_unserved_device_id_reports_link_down_with_a_reason() -> None:
    async with PlcSimulator(device_id=1) as plc:
        handler = Recorder()
        link = make_link(plc.url, handler, device_id=5)
        async with running(link):
            await wait_until(lambda: link.stats.errors >= 2, what="repeated errors")
            assert handler.states, "handler never heard that the link is down"
            connected, reason = handler.states[-1]
            assert not connected
            assert "Modbus exception" in reason


async def test_too_small_register_block_is_a_plc_error_and_the_link_keeps_retrying() -> None:
    # Header and rings fit nowhere but the header: the chute status read (2001..) fails.
    async with bare_server(header_values(20)) as (_server, url):
        handler = Recorder()
        link = make_link(url, handler, max_chute=60)
        async with running(link) as task:
            await wait_until(lambda: handler.down, what="link down after a Modbus exception")
            assert handler.states[0] == (True, "connected")
            connected, reason = handler.states[1]
            assert not connected
            assert "Modbus exception" in reason
            assert "2001" in reason
            await wait_until(lambda: link.stats.errors >= 3, what="repeated errors")
            assert link.stats.reconnects >= 2
            assert [s for s, _ in handler.states[:4]] == [True, False, True, False]
            assert not task.done()


async def test_wrong_interface_version_is_refused_until_the_plc_speaks_v1() -> None:
    values = header_values(30, interface_version=2)
    async with bare_server(values) as (server, url):
        handler = Recorder()
        link = make_link(url, handler, heartbeat_timeout_ms=5000)
        async with running(link) as task:
            await wait_until(lambda: link.stats.errors >= 3, what="repeated refusals")
            assert "interface_version is 2" in link.stats.last_error
            assert not link.connected
            # Reported once, not once per retry: P/devices/plc shows why it is down.
            assert handler.states == [(False, "PLC interface_version is 2, this host speaks 1")]
            assert link.stats.cycles == 0
            assert not task.done()

            await server.async_setValues(DEVICE_ID, _WRITE_MULTIPLE, INTERFACE_VERSION, [1])
            await wait_until(lambda: handler.up, what="link up once the PLC speaks v1")
            assert handler.states[-1] == (True, "connected")
            assert len(handler.states) == 2


# ------------------------------------------------- regressions (bugs found in review, fixed)


async def test_plc_counter_reset_is_resynced_without_stale_messages() -> None:
    async with PlcSimulator() as plc:
        handler = Recorder()
        link = make_link(plc.url, handler)
        async with running(link):
            await wait_until(lambda: handler.up, what="link up")
            for i in range(3):
                plc.submit_request(400_000 + i)
                plc.submit_confirmation(i, 400_000 + i, 2, Outcome.SORTED, 0)
            await wait_until(
                lambda: len(handler.requests) == 3 and len(handler.confirmations) == 3,
                what="messages before the restart",
            )
            await register_becomes(plc, CONF_ACK, 3)
            n_req, n_conf = len(handler.requests), len(handler.confirmations)

            plc.reset_counters()
            await wait_until(
                lambda: handler.jumps == [Ring.REQUESTS, Ring.CONFIRMATIONS], what="restart seen"
            )
            seqs = [plc.submit_request(500_000 + i) for i in range(2)]
            assert seqs == [0, 1]
            await wait_until(
                lambda: any(r.tracking_id == 500_001 for r in handler.requests),
                what="requests after the restart",
            )
            await two_more_polls(link)  # a stale or repeated request would show up
            assert [(r.seq, r.tracking_id) for r in handler.requests[n_req:]] == [
                (0, 500_000),
                (1, 500_001),
            ]
            plc.submit_confirmation(0, 500_000, 4, Outcome.SORTED, 0)
            await wait_until(
                lambda: any(c.tracking_id == 500_000 for c in handler.confirmations),
                what="confirmation after the restart",
            )
            await two_more_polls(link)
            assert [c.tracking_id for c in handler.confirmations[n_conf:]] == [500_000]
            # The pipeline forgets the pairs the PLC may reuse: requests before their batch,
            # confirmations after theirs (its stale slots are dropped by then).
            assert handler.jumps == [Ring.REQUESTS, Ring.CONFIRMATIONS]
            assert link.stats.bad_confirmations == 0
            assert link.stats.bad_requests == 0


async def test_reconnect_backoff_grows_while_the_plc_is_down() -> None:
    """Attempts at a PLC that is gone come further and further apart. Checked in the one
    direction a slow machine cannot upset: a sleep never ends early, so six attempts take
    at least the five sleeps between them, each at least half (sorter.backoff's jitter) of a
    step that doubles from backoff_initial_s. A machine that is slow only adds to the time taken."""
    initial_s, max_s = 0.05, 1.0
    async with PlcSimulator() as plc:
        handler = Recorder()
        link = make_link(plc.url, handler, backoff_initial_s=initial_s, backoff_max_s=max_s)
        async with running(link):
            await wait_until(lambda: handler.up, what="link up")
            await plc.stop()
            await wait_until(lambda: handler.down, what="link down")
            loop = asyncio.get_running_loop()
            before, started_s = link.stats.reconnects, loop.time()
            await wait_until(lambda: link.stats.reconnects >= before + 6, what="six attempts")
            took_s = loop.time() - started_s
            # 0.05 + 0.1 + 0.2 + 0.4 + 0.8 s at the least jitter: 0.775 s; a link that did not
            # back off would make its six attempts in 0.2 s.
            least_s = 0.5 * sum(min(initial_s * 2**k, max_s) for k in range(5))
            assert took_s >= least_s, f"6 attempts in {took_s:.2f} s: the backoff did not grow"


async def test_host_heartbeat_goes_on_whatever_the_poll_interval() -> None:
    """A poll interval of ten minutes: the heartbeat has its own period (250 ms), so the
    PLC still sees the host alive. (The period itself is a benchmark's question.)"""
    async with PlcSimulator() as plc:
        handler = Recorder()
        link = make_link(plc.url, handler, poll_interval_ms=600_000)
        async with running(link):
            await wait_until(lambda: handler.up, what="link up")
            values = await host_heartbeats(plc, 3)
            assert counts_up(values), values
            await wait_until(lambda: plc.host_alive, what="the PLC sees the host alive")
            assert plc.stats.host_dead_events == 0


async def test_link_down_reason_on_cancel_is_not_a_stale_error() -> None:
    handler = Recorder()
    async with contextlib.AsyncExitStack() as stack:
        plc = await stack.enter_async_context(PlcSimulator())
        port = plc.port
        link = make_link(plc.url, handler)
        async with running(link):
            await wait_until(lambda: handler.up, what="link up")
            await plc.stop()
            await wait_until(lambda: handler.down, what="link down")
            await stack.enter_async_context(PlcSimulator(port=port))
            await wait_until(lambda: handler.up, what="link up again")
            stale = link.stats.last_error
            assert stale
        connected, reason = handler.states[-1]
        assert not connected
        assert reason != stale


async def test_cancel_is_not_lost_when_a_reply_is_queued_at_the_same_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing due for ten minutes (see test_reply_queued_outside_a_poll_is_written_at_once):
    # after its first cycle the link can only be waiting, which is the moment under test.
    monkeypatch.setattr(plc_driver, "HOST_HEARTBEAT_INTERVAL_NS", 600 * 10**9)
    async with PlcSimulator() as plc:
        handler = Recorder(auto_reply=False)
        link = make_link(plc.url, handler, poll_interval_ms=600_000)
        task = asyncio.create_task(link.run(), name="plc-link-under-test")
        try:
            beat = await register(plc, HOST_HEARTBEAT)

            async def first_cycle_done() -> bool:  # its last write is the heartbeat
                return await register(plc, HOST_HEARTBEAT) != beat

            await wait_until(first_cycle_done, what="the link's first cycle")
            # The scenario, not a synchronisation: the heartbeat's answer reaches the link,
            # which then waits. Caught earlier, the cancel lands in that write instead, and
            # must not be lost there either.
            await asyncio.sleep(0.05)
            # A last reply and the shutdown in the same callback, as at a daemon stop.
            link.queue_reply(0, 1, 1)
            task.cancel()
            done, _pending = await asyncio.wait({task}, timeout=10.0)
            assert done, "PlcLink.run() swallowed the cancellation and kept running"
        finally:
            if not task.done():
                await stop_link(task)


async def test_a_plc_that_lost_the_host_registers_counts_as_restarted() -> None:
    """A power cycle that resets every register, the host's acks included, looks like a
    consistent ring (head == ack == 0): only the acks going back tells it apart."""
    async with PlcSimulator(port=free_port()) as plc:
        handler = Recorder()
        link = make_link(plc.url, handler, backoff_initial_s=0.3, backoff_max_s=0.3)
        async with running(link):
            await wait_until(lambda: handler.up, what="link up")
            for i in range(100):
                plc.submit_request(700_000 + i)
            await register_becomes(plc, REQ_ACK, 100)
            await plc.stop()
            await wait_until(lambda: handler.down, what="link down")
            plc.reset_counters()
            await plc.start()
            # The power cycle: the host's registers are gone too, before the link is back.
            await plc.write_registers(REQ_ACK, [0, 0, 0, 0])
            assert handler.jumps == []
            await wait_until(lambda: handler.up, what="link up again")
            both = [Ring.REQUESTS, Ring.CONFIRMATIONS]
            await wait_until(lambda: handler.jumps == both, what="jump")
            plc.submit_request(700_000)  # the same id and seq 0: a new item
            await wait_until(lambda: handler.requests[-1].seq == 0, what="new request")


async def test_replies_survive_a_lost_head_write() -> None:
    """Found in review: the replies left the queue before the write of rep_head; when that
    write was lost, the reconnect took rep_head from the PLC and they were never sent."""
    async with PlcSimulator(port=free_port()) as plc:
        handler = Recorder(auto_reply=False)
        link = make_link(plc.url, handler, backoff_initial_s=0.05, backoff_max_s=0.1)
        handler.link = link
        async with running(link):
            await wait_until(lambda: handler.up, what="link up")
            seq = plc.submit_request(4711)
            await wait_until(lambda: bool(handler.requests), what="request read")
            await register_becomes(plc, REQ_ACK, seq + 1)
            # Decided later (a timeout, a late scan): the head write of its reply is lost.
            plc.refuse_writes(REQ_ACK)
            link.queue_reply(seq, 4711, 12)
            await wait_until(lambda: plc.stats.writes_refused == 1, what="write refused")
            await wait_until(lambda: plc.reply(4711, seq) is not None, what="reply after all")
            reply = plc.reply(4711, seq)
            assert reply is not None
            assert reply.chute == 12
            # The slot is visible before the head write that completes the reply lands.
            await wait_until(lambda: link.pending_replies == 0, what="reply completed")


def test_no_answer_in_time_is_a_timeout_and_other_failures_are_not() -> None:
    no_answer = ModbusIOException("No response received after 0 retries")
    for cause in (TimeoutError(), no_answer):
        error = plc_driver._link_error("read 15 registers at 0", cause)
        assert isinstance(error, PlcTimeoutError)
        assert isinstance(error, TimeoutError)
    for cause in (ModbusException("bad frame"), ConnectionResetError("reset")):
        error = plc_driver._link_error("read 15 registers at 0", cause)
        assert isinstance(error, PlcError)
        assert not isinstance(error, TimeoutError)


async def test_a_plc_that_never_answers_times_out() -> None:
    """A TCP peer that accepts and stays silent: the first read is a PlcTimeoutError."""
    server = await asyncio.start_server(lambda _r, _w: None, HOST, 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        link = make_link(f"tcp://{HOST}:{port}", Recorder(), request_timeout_ms=100)
        try:
            with pytest.raises(PlcTimeoutError):
                await link._session()
        finally:
            link._close()


# ---------------------------------------------------------------------------- durability


async def test_no_ack_reaches_the_plc_before_the_journal_is_on_the_disk() -> None:
    """With a `durable` wait (the journal's sync, drivers/journal_sync.py) the reply slots
    go out at once, but req_ack and rep_head move only once it returns; conf_ack likewise.
    The wait here looks at the PLC's registers when it is called and is held open by the
    test: a link that wrote its heads without waiting fails the first wait_until."""
    released = asyncio.Event()
    seen: list[tuple[int, int, int, int]] = []  # slot seq, rep_head, req_ack, conf_ack

    async with PlcSimulator() as plc:
        seq = plc.submit_request(4242)

        async def durable() -> None:
            regs = await plc.read_registers(0, 15)
            slot_seq = (await plc.read_registers(700 + 4 * slot(seq), 1))[0]
            seen.append((slot_seq, regs[REP_HEAD], regs[REQ_ACK], regs[CONF_ACK]))
            await released.wait()

        handler = Recorder()
        link = make_link(plc.url, handler, durable=durable)
        async with running(link):
            await wait_until(lambda: bool(seen), what="the link waiting for the journal")
            assert seen[0] == (seq, 0, 0, 0)  # the slot is in the PLC, not announced
            assert plc.reply(4242, seq) is None
            released.set()
            await register_becomes(plc, REP_HEAD, 1)
            assert await register(plc, REQ_ACK) == 1
            await wait_until(lambda: plc.reply(4242, seq) is not None, what="reply read")

            calls = len(seen)
            plc.submit_confirmation(seq, 4242, 3, Outcome.SORTED, 0)
            await wait_until(lambda: bool(handler.confirmations), what="confirmation")
            await register_becomes(plc, CONF_ACK, 1)
            # The wait ran after the handler had the confirmation and before conf_ack moved.
            assert len(seen) > calls
            assert seen[calls][3] == 0
