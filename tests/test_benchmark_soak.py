"""The soak benchmark's per-minute latency window (benchmarks/soak.py)."""

from __future__ import annotations

import asyncio

from benchmarks.soak import SETTLED_S, WINDOW_CHUNK_ITEMS, _Windows
from simulators.conveyor import ItemRecord, Ledger, PassRecord, SimItem


def _ledger(items: int) -> Ledger:
    ledger = Ledger()
    for i in range(items):
        rec = ItemRecord(i, SimItem(), i, float(i))
        rec.passes.append(PassRecord(i, 0, float(i), reply_s=float(i) + 0.004))
        if i % 3 == 0:  # a second pass, not replied yet
            rec.passes.append(PassRecord(i + 1, 1, float(i) + 0.5))
        ledger.items.append(rec)
    return ledger


async def test_the_window_leaves_the_loop_to_the_simulators_while_it_reads_the_ledger() -> None:
    """The simulated PLC shares the loop with the sampler: a window over a long run's
    ledger goes in slices, with the loop free between them, and counts each reply of
    [t0, t1) once."""
    ledger = _ledger(WINDOW_CHUNK_ITEMS * 5 + 7)
    ticks = 0
    stop = asyncio.Event()

    async def simulator() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(simulator())
    await asyncio.sleep(0)
    before = ticks
    got = await _Windows(ledger).between(100.0, 9_000.0)
    during = ticks - before
    stop.set()
    await task
    assert during >= 4  # the simulator ran between the slices
    assert len(got) == 9_000 - 100
    assert all(abs(ms - 4.0) < 1e-6 for ms in got)


async def test_the_window_skips_the_settled_part_of_the_ledger_and_misses_no_reply() -> None:
    """Minute after minute the window looks only at items that can still have a reply in
    it; every reply of each window is counted, once."""
    ledger = _ledger(20_000)  # one item a second, replied 4 ms later
    windows = _Windows(ledger)
    counted = []
    for t0 in range(0, 20_000, 1_000):
        got = await windows.between(float(t0), float(t0 + 1_000))
        counted.append(len(got))
        assert windows.start <= max(0, t0 - int(SETTLED_S))  # nothing unsettled skipped
        assert windows.start >= max(0, t0 - int(SETTLED_S) - 1)  # the settled ones are
    assert counted == [1_000] * 20


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's end waits for an init that may not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


async def test_a_hub_line_stopped_takes_its_daemon_along() -> None:
    """benchmarks/hub.py ends a line's process when a scenario fails or times out: the
    `sorterd run` that process started goes too, instead of running on with nobody left
    to stop it."""
    from benchmarks.hub import _json_line, _spawn, _stop
    from drivers.broker import LocalBroker

    async with LocalBroker() as broker:
        proc = await _spawn(broker, 1, 20_000.0, 5.0)
        try:
            await _json_line(proc, "ready", 300)
            daemons = _children(proc.pid)
            assert daemons  # its `sorterd run`
        finally:
            await _stop([proc])
        assert proc.returncode is not None
        assert not [pid for pid in daemons if _running(pid)]
