"""Process-wide settings for a long-running line-speed process."""

from __future__ import annotations

import gc

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
