"""Process-wide settings for a long-running line-speed process.

The cyclic garbage collector, paced: CPython collects a generation when its count of
allocations minus deallocations passes a threshold. In a line that runs at a steady
state (bounded memories: as many entries evicted as added) that count hardly moves, so
automatic collections come seldom and then walk every object made since the last one:
a young pass over 100,000 objects and an older one over 160,000 cost 110-250 ms of CPU
each in a `sorterd run` at 200,000 items/h, with the line stopped meanwhile. `GcPacer`
says which generation to collect on a fixed beat instead, so each pass walks only what
the last interval made (tuples of ints and strings, most of what the line keeps, are
untracked by the first pass over them); `tune_gc` leaves the automatic collection as a
backstop for bursts.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import time
from collections.abc import Callable
from typing import Final, cast

__all__ = [
    "GC_FULL_INTERVAL_S",
    "GC_GEN0_THRESHOLD",
    "GC_MIDDLE_EVERY",
    "GC_PACE_S",
    "GcPacer",
    "pace_gc",
    "release_free_memory",
    "tune_gc",
]

# Allocations between young-generation collections. CPython's default of 700 runs a
# collection every few items on the decision path; at 50,000 they are rare, and the
# objects that live for the whole run are frozen out of every collection.
GC_GEN0_THRESHOLD = 50_000
# The pacer's beat: a young pass each GC_PACE_S, the middle generation every
# GC_MIDDLE_EVERY passes, everything (cyclic garbage that reached the old generation)
# every GC_FULL_INTERVAL_S.
GC_PACE_S: Final = 0.5
GC_MIDDLE_EVERY: Final = 10
GC_FULL_INTERVAL_S: Final = 600.0


def tune_gc() -> None:
    """Call once start-up is done: freeze what exists, collect the young rarely."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


class GcPacer:
    """Which generation to collect at each beat of the pacer (a task calls `step` every
    GC_PACE_S): 0 mostly, 1 every `middle_every` beats, 2 once per `full_interval_s`."""

    __slots__ = ("_beats", "_next_full_s", "full_interval_s", "middle_every")

    def __init__(
        self,
        now_s: float,
        *,
        middle_every: int = GC_MIDDLE_EVERY,
        full_interval_s: float = GC_FULL_INTERVAL_S,
    ) -> None:
        if middle_every < 1 or full_interval_s <= 0:
            raise ValueError("middle_every must be >= 1 and full_interval_s > 0")
        self.middle_every = middle_every
        self.full_interval_s = full_interval_s
        self._beats = 0
        self._next_full_s = now_s + full_interval_s

    def generation(self, now_s: float) -> int:
        """The generation to collect at this beat."""
        self._beats += 1
        if now_s >= self._next_full_s:
            self._next_full_s = now_s + self.full_interval_s
            return 2
        return 1 if self._beats % self.middle_every == 0 else 0

    def step(self, now_s: float) -> int:
        """Collect the generation due at this beat; returns it."""
        generation = self.generation(now_s)
        gc.collect(generation)
        return generation


async def pace_gc(full_interval_s: float = GC_FULL_INTERVAL_S) -> None:
    """The cyclic GC on a beat, forever (a task of the daemon, and of the benchmarks'
    simulators, whose ledgers grow as large): short passes over what each half second
    made, instead of rare ones over everything kept."""
    pacer = GcPacer(time.monotonic(), full_interval_s=full_interval_s)
    while True:
        await asyncio.sleep(GC_PACE_S)
        pacer.step(time.monotonic())


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # no C library by that name (Windows)
        return None
    trim = getattr(libc, "malloc_trim", None)  # glibc only
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return cast(Callable[[int], int], trim)


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Hand the C allocator's free pages back to the system (glibc's malloc_trim; nothing
    where there is none). Call after freeing a large structure that was built from many
    temporaries (a manifest index): glibc keeps freed memory below its mmap threshold,
    which rises to 32 MiB as large blocks come and go, and the worker thread's own arena
    trims only its top, so otherwise the daemon holds tens of megabytes it no longer uses.
    Blocking (milliseconds): from a worker thread, ctypes lets go of the GIL."""
    if _TRIM is not None:
        _TRIM(0)
