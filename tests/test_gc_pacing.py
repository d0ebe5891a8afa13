"""The cyclic GC on a beat (sorter/runtime.py's GcPacer, run by the daemon)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from drivers.broker import LocalBroker
from sorter.runtime import GcPacer
from tests.linekit import line_with_daemon, wait_until


def test_young_passes_mostly_the_middle_generation_every_nth_and_all_on_the_interval() -> None:
    pacer = GcPacer(0.0, middle_every=3, full_interval_s=10.0)
    beats = [pacer.generation(t) for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)]
    assert beats == [0, 0, 1, 0, 0, 1, 0]
    assert pacer.generation(10.0) == 2  # the full pass is due
    assert [pacer.generation(t) for t in (11.0, 12.0)] == [1, 0]
    assert pacer.generation(19.9) == 0
    assert pacer.generation(20.0) == 2


def test_a_beat_collects_cyclic_garbage_of_its_generation() -> None:
    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    gc.collect()
    was = gc.isenabled()
    gc.disable()  # only the pacer collects here
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        pacer = GcPacer(0.0, middle_every=10, full_interval_s=600.0)
        assert pacer.step(1.0) == 0
        assert not any(isinstance(o, Node) for o in gc.get_objects())
    finally:
        if was:
            gc.enable()


def test_a_pacer_needs_a_positive_beat() -> None:
    with pytest.raises(ValueError, match="middle_every"):
        GcPacer(0.0, middle_every=0)
    with pytest.raises(ValueError, match="full_interval_s"):
        GcPacer(0.0, full_interval_s=0.0)


async def test_the_daemon_paces_the_gc_once_ready(broker: LocalBroker, tmp_path: Path) -> None:
    async with line_with_daemon(broker, tmp_path) as rig:
        assert rig.daemon.ready.is_set()
        assert any(t.get_name() == "gc" for t in asyncio.all_tasks())
        young = gc.get_stats()[0]["collections"]
        # Young passes come on the pacer's beat with the line idle: no allocation count
        # crosses the automatic threshold here.
        await wait_until(lambda: gc.get_stats()[0]["collections"] >= young + 3, 30)
