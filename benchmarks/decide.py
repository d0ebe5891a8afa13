"""The decision core: batch throughput against the Python reference, one live decision.

Batch: the same realistic items (features extracted once) through `Kernel.decide_batch`
and through `sorter.reference.decide`, in the same run; decisions/s and their ratio.
Live: `Decider.decide(codes)` one item at a time, from the codes a scanner sent to the
chute (classification, multi-read resolution, features, kernel), as the daemon calls it.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import best_of, decider, feature_arrays, percentiles_us, traffic_codes
from sorter import reference
from sorter.kernel import ChuteState
from sorter.runtime import tune_gc

BATCH_ITEMS = 2_000_000
REFERENCE_ITEMS = 200_000
LIVE_ITEMS = 100_000


def run() -> dict[str, Any]:
    d = decider()
    codes = traffic_codes(50_000, seed=2)
    features = [d.features(c, 0, -1)[0] for c in codes]
    reps = BATCH_ITEMS // len(features)
    arrays = feature_arrays(features * reps)
    n = arrays[0].shape[0]

    def batch() -> None:
        d.kernel.decide_batch(*arrays, ChuteState.for_plan(d.plan))

    kernel_s = best_of(5, batch)
    plan = d.plan.plan
    ref_features = (features * (REFERENCE_ITEMS // len(features) + 1))[:REFERENCE_ITEMS]

    def ref() -> None:
        state = reference.ReferenceState()
        for f in ref_features:
            reference.decide(plan, f, state)

    reference_s = best_of(3, ref)
    kernel_rate = n / kernel_s
    reference_rate = REFERENCE_ITEMS / reference_s

    live_codes = traffic_codes(LIVE_ITEMS, seed=3)
    for c in live_codes[:2000]:
        d.decide(c)
    samples: list[int] = []
    tune_gc()  # as the daemon runs
    clock = time.perf_counter_ns
    for c in live_codes:
        t0 = clock()
        d.decide(c)
        samples.append(clock() - t0)
    live = percentiles_us(samples)
    return {
        "batch_kernel_per_s": kernel_rate,
        "batch_reference_per_s": reference_rate,
        "batch_ratio": kernel_rate / reference_rate,
        "live_us": live,
    }


def report(r: dict[str, Any]) -> list[str]:
    live = r["live_us"]
    return [
        f"batch decisions/s, numba kernel:      {r['batch_kernel_per_s'] / 1e6:8.1f} M/s"
        "   (target >= 20 M/s)",
        f"batch decisions/s, Python reference:  {r['batch_reference_per_s'] / 1e6:8.3f} M/s",
        f"kernel / reference:                   {r['batch_ratio']:8.0f} x   (target >= 10 x)",
        f"one live decision, codes -> chute:    p50 {live['p50']:.1f} us  p99 {live['p99']:.1f} us"
        f"  max {live['max']:.0f} us   (target p99 <= 20 us)",
    ]
