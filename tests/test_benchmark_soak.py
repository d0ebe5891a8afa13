"""The soak benchmark's per-minute latency window (benchmarks/soak.py)."""

from __future__ import annotations

import asyncio

from benchmarks.soak import WINDOW_CHUNK_ITEMS, _window
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
    got = await _window(ledger, 100.0, 9_000.0)
    during = ticks - before
    stop.set()
    await task
    assert during >= 4  # the simulator ran between the slices
    assert len(got) == 9_000 - 100
    assert all(abs(ms - 4.0) < 1e-6 for ms in got)
