"""Process-wide settings for a long-running line-speed process."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from typing import cast

__all__ = ["GC_GEN0_THRESHOLD", "release_free_memory", "tune_gc"]

# Allocations between young-generation collections. CPython's default of 700 runs a
# collection every few items on the decision path; at 50,000 they are rare, and the
# objects that live for the whole run are frozen out of every collection.
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Call once start-up is done: freeze what exists, collect the young rarely."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


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
