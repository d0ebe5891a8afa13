"""The real StreamScanner against the ScannerSimulator, over TCP and over a pty."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from structlog.testing import capture_logs

from drivers.scanner import InMemoryScanner, Scanner, StreamScanner
from drivers.telegram import MAX_FRAME_BYTES
from simulators.scanner import ScannerSimulator
from sorter.ports import ScanRead
from tests.waiting import wait_until

TIMEOUT_S = 5.0  # generous bound for every wait; passing runs take milliseconds
BACKOFF_INITIAL_S = 0.01  # fast retries keep the reconnect tests short
BACKOFF_CAP_S = 0.05


def _open_fds() -> dict[int, str]:
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd listdir itself used is gone already
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def _leftovers(me: asyncio.Task[object] | None, fds_before: dict[int, str]) -> list[str]:
    tasks = [repr(task) for task in asyncio.all_tasks() if task is not me]
    fds = [f"fd {fd} -> {target}" for fd, target in _open_fds().items() if fd not in fds_before]
    return tasks + fds


@pytest.fixture(autouse=True)
async def _no_leaks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks, sockets, ptys or other fds behind."""
    fds_before = _open_fds()
    yield
    me = asyncio.current_task()
    # Transports release their fds in callbacks a loop iteration or two after close, and
    # neither fds nor tasks offer an event to wait on: poll.
    with contextlib.suppress(TimeoutError):
        await wait_until(lambda: not _leftovers(me, fds_before), 5.0)
    left = _leftovers(me, fds_before)
    assert not left, f"left behind: {left}"


class States:
    """Records on_state_change calls and lets a test wait for one."""

    def __init__(self) -> None:
        self.history: list[bool] = []
        self._changed = asyncio.Event()

    def __call__(self, name: str, connected: bool) -> None:
        assert name == "tunnel-1"
        self.history.append(connected)
        self._changed.set()

    async def wait_for(self, connected: bool, changes: int = 1) -> None:
        """Wait until the state is `connected` after at least `changes` changes."""
        while len(self.history) < changes or self.history[-1] is not connected:
            self._changed.clear()
            await self._changed.wait()


@contextlib.asynccontextmanager
async def consuming(
    url: str, *, idle_timeout_s: float | None = None
) -> AsyncIterator[tuple[StreamScanner, asyncio.Queue[ScanRead], States]]:
    """A StreamScanner with a consumer task, as the daemon runs it."""
    states = States()
    scanner = StreamScanner(
        "tunnel-1",
        url,
        on_state_change=states,
        idle_timeout_s=idle_timeout_s,
        backoff_initial_s=BACKOFF_INITIAL_S,
        backoff_cap_s=BACKOFF_CAP_S,
    )
    queue: asyncio.Queue[ScanRead] = asyncio.Queue()

    async def consume() -> None:
        async for read in scanner.reads():
            queue.put_nowait(read)

    async with scanner:
        task = asyncio.create_task(consume(), name="consume tunnel-1")
        try:
            yield scanner, queue, states
        except BaseException:
            failure = task.exception() if task.done() and not task.cancelled() else None
            if failure is not None:
                raise failure from None  # the consumer's failure explains the test's
            task.cancel()
            raise
    async with asyncio.timeout(TIMEOUT_S):
        await task  # closing the scanner ends the iteration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- construction ---


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="unknown telegram format 'zebra'; known: cognex"):
        StreamScanner("s", "tcp://127.0.0.1:1", telegram_format="zebra")
    with pytest.raises(ValueError, match="backoff"):
        StreamScanner("s", "tcp://127.0.0.1:1", backoff_initial_s=1, backoff_cap_s=0.5)
    with pytest.raises(ValueError, match="scheme"):
        StreamScanner("s", "ftp://x:1")


def test_backoff_is_capped_and_jittered() -> None:
    scanner = StreamScanner(
        "s", "tcp://127.0.0.1:1", backoff_initial_s=0.1, backoff_cap_s=5.0, rng=random.Random(1)
    )
    # White-box: measuring the backoff through real sleeps would be slow and flaky.
    delays = [scanner._backoff.next_delay_s() for _ in range(12)]
    bases = [min(5.0, 0.1 * 2**n) for n in range(12)]
    assert all(base / 2 <= d <= base for d, base in zip(delays, bases, strict=True))
    assert max(delays) <= 5.0
    assert len(set(delays)) == len(delays)


# --- the simulator alone ------------------------------------------------------------------


async def test_simulator_drops_telegrams_nobody_hears() -> None:
    async with ScannerSimulator() as sim:
        assert sim.port is not None
        assert sim.port > 0
        assert not sim.send_read(1, ["A"])
        assert not sim.send_heartbeat()
        assert (sim.sent, sim.dropped) == (0, 2)
        await sim.stop()
        await sim.stop()  # idempotent
        assert not sim.running


# --- end to end over TCP ------------------------------------------------------------------


async def test_tcp_reads_noreads_and_heartbeats() -> None:
    async with ScannerSimulator() as sim, consuming(sim.tcp_url) as (scanner, queue, states):
        async with asyncio.timeout(TIMEOUT_S):
            await states.wait_for(connected=True)
            await sim.wait_for_clients(1)
            assert scanner.connected
            assert scanner.last_seen_ns is None
            assert sim.send_read(4711, ["RB123456785GB", "]C1\x1d00061110", "RB123456785GB"])
            assert sim.send_heartbeat()
            assert sim.send_read(4712, [])
            first, second = await queue.get(), await queue.get()
        assert first.scanner == "tunnel-1"
        assert (first.tracking_id, first.codes) == (4711, ("RB123456785GB", "]C1\x1d00061110"))
        assert (second.tracking_id, second.codes) == (4712, ())
        assert first.received_ns <= second.received_ns
        assert queue.empty()  # the heartbeat was not yielded
        stats = scanner.stats
        assert (stats.frames, stats.reads, stats.noreads, stats.heartbeats) == (3, 1, 1, 1)
        assert scanner.last_seen_ns is not None
        assert scanner.last_seen_ns >= second.received_ns
        assert scanner.errors == 0
    assert states.history == [True, False]
    assert not scanner.connected


async def test_periodic_heartbeats_update_last_seen_only() -> None:
    sim = ScannerSimulator(heartbeat_interval_s=0.01)
    async with sim, consuming(sim.tcp_url) as (scanner, queue, states):
        async with asyncio.timeout(TIMEOUT_S):
            await states.wait_for(connected=True)
            await wait_until(lambda: scanner.stats.heartbeats >= 3)
        assert scanner.last_seen_ns is not None
        assert queue.empty()


async def test_pyserial_socket_url() -> None:
    async with ScannerSimulator() as sim:
        url = f"socket://127.0.0.1:{sim.port}"
        async with consuming(url) as (_, queue, states):
            async with asyncio.timeout(TIMEOUT_S):
                await states.wait_for(connected=True)
                await sim.wait_for_clients(1)
                sim.send_read(7, ["ABC"])
                read = await queue.get()
            assert (read.tracking_id, read.codes) == (7, ("ABC",))


async def test_reconnects_after_restart_and_drops_the_cut_frame() -> None:
    sim = ScannerSimulator()
    async with sim, consuming(sim.tcp_url) as (scanner, queue, states):
        async with asyncio.timeout(TIMEOUT_S):
            await states.wait_for(connected=True)
            await sim.wait_for_clients(1)
            sim.send_read(1, ["A"])
            assert (await queue.get()).tracking_id == 1
            cut = b"\x0299|PART"  # the scanner dies in the middle of a telegram
            sim.send_raw(cut)
            await wait_until(
                lambda: scanner.stats.frames == 1 and scanner.buffered_bytes == len(cut)
            )

            port = sim.port
            await sim.stop()
            await states.wait_for(connected=False)
            assert scanner.stats.garbage_bytes == len(cut)
            assert not sim.send_read(2, ["LOST"])  # nobody is connected: dropped
            await wait_until(lambda: scanner.errors >= 3)  # refused attempts, not raised

            await sim.start()
            assert sim.port == port
            await states.wait_for(connected=True, changes=3)
            await sim.wait_for_clients(1)
            sim.send_raw(b"ART\x03")  # the rest of the cut frame must not complete it
            sim.send_read(3, ["B"])
            read = await queue.get()
        assert (read.tracking_id, read.codes) == (3, ("B",))
        assert scanner.stats.garbage_bytes == len(cut) + 4
        assert scanner.stats.bad_telegrams == 0
        assert scanner.connects == 2
        assert queue.empty()
    assert states.history == [True, False, True, False]


async def test_garbage_and_oversize_frames_around_good_telegrams() -> None:
    sim = ScannerSimulator()
    with capture_logs() as logs:
        async with sim, consuming(sim.tcp_url) as (scanner, queue, states):
            async with asyncio.timeout(TIMEOUT_S):
                await states.wait_for(connected=True)
                await sim.wait_for_clients(1)
                sim.send_raw(b"\xff\x00line noise\r\n")
                sim.send_read(1, ["A"])
                sim.send_raw(b"\x02" + b"Z" * (MAX_FRAME_BYTES + 100))  # never terminated
                sim.send_read(2, ["B"])
                sim.send_raw(b"\x02not a telegram\x03")
                sim.send_read(3, [])
                sim.send_raw(b"\x027|CUT\x02")  # restarted by the STX of the next telegram
                sim.send_read(4, ["D"])
                reads = [await queue.get() for _ in range(4)]
        assert [(r.tracking_id, r.codes) for r in reads] == [
            (1, ("A",)),
            (2, ("B",)),
            (3, ()),
            (4, ("D",)),
        ]
        stats = scanner.stats
        assert stats.oversize_frames == 1
        assert stats.bad_telegrams == 1
        assert stats.garbage_bytes == 14 + 1 + MAX_FRAME_BYTES + 100 + 6 + 1
        assert (stats.reads, stats.noreads) == (3, 1)
    warnings = [entry for entry in logs if entry["event"] == "scanner sent garbage"]
    assert len(warnings) == 1  # bounded: one per 10 s however much garbage follows
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["scanner"] == "tunnel-1"


async def test_unreachable_scanner_retries_without_raising() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    async with consuming(url) as (scanner, _queue, states):
        async with asyncio.timeout(TIMEOUT_S):
            await wait_until(lambda: scanner.errors >= 4)
        assert not scanner.connected
        assert scanner.last_error is not None
        assert "Connect" in scanner.last_error or "refused" in scanner.last_error.lower()
    assert states.history == []


async def test_idle_timeout_reopens_a_silent_link() -> None:
    async with (
        ScannerSimulator() as sim,
        consuming(sim.tcp_url, idle_timeout_s=0.05) as (scanner, _queue, states),
    ):
        async with asyncio.timeout(TIMEOUT_S):
            await states.wait_for(connected=True, changes=3)
        assert scanner.last_error is not None
        assert "silent" in scanner.last_error


@pytest.mark.parametrize("reachable", [True, False], ids=["reading", "in-backoff"])
async def test_cancelling_the_consumer_propagates(reachable: bool) -> None:
    async with ScannerSimulator() as sim:
        url = sim.tcp_url if reachable else f"tcp://127.0.0.1:{free_port()}"
        scanner = StreamScanner(
            "tunnel-1", url, backoff_initial_s=BACKOFF_INITIAL_S, backoff_cap_s=BACKOFF_CAP_S
        )
        async with scanner:

            async def consume() -> None:
                async for _ in scanner.reads():
                    pass

            task = asyncio.create_task(consume())
            async with asyncio.timeout(TIMEOUT_S):
                await wait_until(lambda: scanner.connected or scanner.errors > 0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert not scanner.connected


async def test_close_twice_and_reads_before_open() -> None:
    async with ScannerSimulator() as sim:
        scanner = StreamScanner("tunnel-1", sim.tcp_url)
        with pytest.raises(RuntimeError, match="async with"):
            await anext(scanner.reads())
        async with scanner:
            pass
        await scanner.__aexit__(None, None, None)
        with pytest.raises(StopAsyncIteration):
            await anext(scanner.reads())


# --- end to end over a pty ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make_url",
    [
        lambda path: path,
        lambda path: f"serial://{path}?baudrate=115200",
        # pyserial URL handlers that check-config accepts (sorter/addresses.py) must open.
        lambda path: f"spy://{path}?all",
        lambda path: f"alt://{path}?class=PosixPollSerial",
    ],
    ids=["path", "serial", "spy", "alt"],
)
async def test_pty_reads_and_loss(make_url: Callable[[str], str]) -> None:
    sim = ScannerSimulator(port=None, pty=True)
    async with sim:
        assert sim.pty_path is not None
        async with consuming(make_url(sim.pty_path)) as (scanner, queue, states):
            async with asyncio.timeout(TIMEOUT_S):
                await states.wait_for(connected=True)
                sim.send_raw(b"noise")
                sim.send_read(10, ["X1", "X2"])
                sim.send_heartbeat()
                sim.send_read(11, [])
                first, second = await queue.get(), await queue.get()
                assert (first.tracking_id, first.codes) == (10, ("X1", "X2"))
                assert (second.tracking_id, second.codes) == (11, ())
                await wait_until(lambda: scanner.stats.heartbeats == 1)
                assert scanner.stats.garbage_bytes == 5

                await sim.stop()  # the device disappears: read error, then retries
                await states.wait_for(connected=False)
                await wait_until(lambda: scanner.errors >= 1)
            assert queue.empty()


# --- in memory ----------------------------------------------------------------------------


async def test_in_memory_scanner() -> None:
    scanner = InMemoryScanner("tunnel-1", maxsize=2)
    _: Scanner = scanner  # the pipeline sees only the Protocol
    read = ScanRead("tunnel-1", 1, ("A",), 5)
    scanner.put(read)
    async with scanner:
        assert scanner.connected
        scanner.put(ScanRead("tunnel-1", 2, (), 6))
        with pytest.raises(asyncio.QueueFull):
            scanner.put(read)
        got: list[ScanRead] = []
        async with asyncio.timeout(TIMEOUT_S):
            async for item in scanner.reads():
                got.append(item)
                if len(got) == 2:
                    break

            async def consume() -> list[ScanRead]:
                return [r async for r in scanner.reads()]

            waiting = asyncio.create_task(consume())
            await asyncio.sleep(0)
    async with asyncio.timeout(TIMEOUT_S):
        assert await waiting == []  # closing ends a waiting consumer
    assert [r.tracking_id for r in got] == [1, 2]
    assert (scanner.stats.reads, scanner.stats.noreads) == (1, 1)
    assert scanner.last_seen_ns == 6
    assert not scanner.connected
    with pytest.raises(RuntimeError, match="closed"):
        scanner.put(read)
    await scanner.__aexit__(None, None, None)
