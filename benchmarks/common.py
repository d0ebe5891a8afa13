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

__all__ = [
    "PLAN",
    "ROOT",
    "best_of",
    "decider",
    "feature_arrays",
    "feature_keywords",
    "percentiles_us",
    "traffic_codes",
]

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


# The positional columns of Kernel.decide_batch, by ItemFeatures field; `destination`,
# `measures` and `origin` go by keyword (feature_keywords).
_POSITIONAL = (
    ("reason_in", np.int32),
    ("pc", np.int64),
    ("pc_digits", np.int32),
    ("service", np.int32),
    ("country", np.int32),
    ("regex_mask", np.int64),
    ("recirculations", np.int32),
    ("minute_of_day", np.int32),
)


def feature_arrays(features: list[ItemFeatures]) -> list[np.ndarray]:
    table = np.array(features, dtype=np.int64)
    fields = ItemFeatures._fields
    return [
        np.ascontiguousarray(table[:, fields.index(name)]).astype(dtype)
        for name, dtype in _POSITIONAL
    ]


def feature_keywords(features: list[ItemFeatures]) -> dict[str, np.ndarray]:
    """decide_batch's keyword columns: pre-advised destination, measures, origin."""
    table = np.array(features, dtype=np.int64)
    fields = ItemFeatures._fields
    measures = [fields.index(m) for m in ("length_mm", "width_mm", "height_mm", "weight_g")]
    return {
        "destination": np.ascontiguousarray(table[:, fields.index("destination")], np.int32),
        "measures": np.ascontiguousarray(table[:, measures], np.int32),
        "origin": np.ascontiguousarray(table[:, fields.index("origin")], np.int32),
    }


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
