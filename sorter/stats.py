"""Line statistics for P/stats: rates over a sliding window, counts, latency percentiles."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sorter.ports import Outcome, Reason

__all__ = ["LAG_SAMPLES", "LATENCY_SAMPLES", "WINDOW_NS", "FeedStats", "LineStats"]

LATENCY_SAMPLES = 8192  # enough for a stable p99 over the last minutes at line speed
WINDOW_NS = 60 * 1_000_000_000
LAG_SAMPLES = 8192  # feed messages whose apply lag makes the percentiles


class LineStats:
    """The line's own block of P/stats (docs/interfaces.md section 5), fed per event."""

    def __init__(self) -> None:
        self.decisions = 0
        self.results = 0
        self.reasons: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.reads = 0
        self.noreads = 0
        self._latency_ms = np.zeros(LATENCY_SAMPLES, dtype=np.float64)
        self._latency_n = 0
        self._latency_max_ms = 0.0
        self._window: deque[int] = deque()  # decision times within the last minute

    def on_decision(self, reason: Reason, latency_ms: float, now_ns: int) -> None:
        self.decisions += 1
        self.reasons[reason.word] += 1
        self._latency_ms[self._latency_n % LATENCY_SAMPLES] = latency_ms
        self._latency_n += 1
        self._latency_max_ms = max(self._latency_max_ms, latency_ms)
        self._window.append(now_ns)

    def on_read(self, noread: bool) -> None:
        self.reads += 1
        if noread:
            self.noreads += 1

    def on_result(self, outcome: Outcome) -> None:
        self.results += 1
        self.outcomes[outcome.word] += 1

    def items_per_h(self, now_ns: int) -> float:
        window = self._window
        while window and window[0] < now_ns - WINDOW_NS:
            window.popleft()
        if len(window) < 2:
            return 0.0
        span_s = max((now_ns - window[0]) / 1e9, 1.0)
        return len(window) * 3600.0 / span_s

    def latency_percentiles(self) -> dict[str, float]:
        n = min(self._latency_n, LATENCY_SAMPLES)
        if n == 0:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        p50, p99 = np.percentile(self._latency_ms[:n], [50, 99])
        return {
            "p50": round(float(p50), 3),
            "p99": round(float(p99), 3),
            "max": round(self._latency_max_ms, 3),
        }

    def snapshot(self, now_ns: int) -> dict[str, Any]:
        sorted_n = self.outcomes.get(Outcome.SORTED.word, 0)
        recirc = sum(self.outcomes.get(o.word, 0) for o in Outcome if not o.terminal)
        ok = self.reasons.get(Reason.OK.word, 0)
        return {
            "items_per_h": round(self.items_per_h(now_ns), 1),
            "decisions": self.decisions,
            "results": self.results,
            "read_rate": round(1 - self.noreads / self.reads, 4) if self.reads else None,
            "sort_rate": round(sorted_n / self.results, 4) if self.results else None,
            "ok_rate": round(ok / self.decisions, 4) if self.decisions else None,
            "recirculation_rate": round(recirc / self.results, 4) if self.results else None,
            "reasons": dict(self.reasons),
            "outcomes": dict(self.outcomes),
            "latency_ms": self.latency_percentiles(),
        }


@dataclass(slots=True)
class FeedStats:
    """The live feeds' figures (P/stats `feeds`, docs/interfaces.md section 7)."""

    rows_applied: int = 0
    customs_applied: int = 0
    duplicates: int = 0  # rows and decisions whose id was applied before: skipped
    replayed: int = 0  # entries applied again from the journal at the start
    bad_reasons: Counter[str] = field(default_factory=Counter)
    lag_ms: np.ndarray[Any, np.dtype[np.float64]] = field(
        default_factory=lambda: np.zeros(LAG_SAMPLES, dtype=np.float64)
    )
    lag_n: int = 0

    @property
    def bad_rows(self) -> int:
        return sum(self.bad_reasons.values())

    def on_lag(self, lag_ms: float) -> None:
        """One message's arrival -> applied time."""
        self.lag_ms[self.lag_n % LAG_SAMPLES] = lag_ms
        self.lag_n += 1

    def lag_percentiles(self) -> tuple[float, float]:
        """p50 and p99 of the last LAG_SAMPLES messages' lag, ms."""
        n = min(self.lag_n, LAG_SAMPLES)
        if n == 0:
            return 0.0, 0.0
        p50, p99 = np.percentile(self.lag_ms[:n], [50, 99])
        return round(float(p50), 3), round(float(p99), 3)
