"""Shared helpers: the demo plan, realistic items, timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from simulators.traffic import Traffic
from sorter.decide import Decider
from sorter.kernel import ChuteState, ItemFeatures
from sorter.plan import compile_plan, load_plan

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "config" / "demo" / "sortplan.toml"
SITE = ROOT / "config" / "demo" / "site.toml"


def decider() -> Decider:
    plan = compile_plan(load_plan(PLAN))
    d = Decider(plan, ChuteState.for_plan(plan), site_country="MA")
    d.warm()
    return d


def traffic_codes(n: int, seed: int = 1) -> list[tuple[str, ...]]:
    return [item.codes for item in Traffic(seed=seed).items(n)]


def feature_arrays(features: list[ItemFeatures]) -> list[np.ndarray]:
    table = np.array(features, dtype=np.int64)
    dtypes = [np.int32, np.int64, np.int32, np.int32, np.int32, np.int64, np.int32, np.int32]
    # The kernel's columns in ItemFeatures order; `destination` goes by keyword.
    return [np.ascontiguousarray(table[:, i]).astype(t) for i, t in enumerate(dtypes)]


def best_of(runs: int, fn: Callable[[], object]) -> float:
    """Best wall time of `runs` calls, in seconds: the least disturbed by a noisy machine."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    arr = np.array(samples_ns, dtype=np.float64) / 1000
    return {
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
        "mean": statistics.fmean(arr),
    }
