"""The one reconnect backoff: capped exponential with jitter.

Every link that reconnects by itself (PLC, scanners, MQTT, `top`) waits with this, so
they all behave alike: the first retry comes after about `initial_s`, each failure doubles
the wait up to `cap_s`, and a link that worked starts over (`reset`). The jitter (each wait
drawn from [half, whole] of the step) keeps many clients that lost the same switch or
broker from reconnecting in lockstep.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]

_MAX_DOUBLINGS = 32  # 2**32 x any sane initial is far past any cap: stops float overflow


class Backoff:
    """Waits between reconnect attempts. Not thread-safe; one per link."""

    __slots__ = ("_failures", "_rng", "cap_s", "initial_s")

    def __init__(
        self, initial_s: float = 0.1, cap_s: float = 5.0, *, rng: random.Random | None = None
    ) -> None:
        if not 0 < initial_s <= cap_s:
            raise ValueError(f"need 0 < initial_s <= cap_s, got {initial_s} and {cap_s}")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self._rng = rng or random.Random()
        self._failures = 0

    @property
    def failures(self) -> int:
        """Failures since the last `reset()`."""
        return self._failures

    def step_s(self) -> float:
        """The un-jittered wait the next failure gets (for logs and tests)."""
        return min(self.cap_s, self.initial_s * 2.0 ** min(self._failures, _MAX_DOUBLINGS))

    def next_delay_s(self) -> float:
        """Count a failure and return how long to wait before the next attempt."""
        base_s = self.step_s()
        self._failures += 1
        return base_s * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        """The link worked: the next failure waits about `initial_s` again."""
        self._failures = 0
