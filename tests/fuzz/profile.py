"""One hypothesis setting for every fuzz test: modest in CI, as long as asked for on demand.

SORTERD_FUZZ_EXAMPLES=100000 (or `make fuzz`) runs that many examples per test. Every run,
CI's too, draws new inputs and keeps the failing ones in .hypothesis/examples to replay them
first (the profiles in tests/conftest.py): a fuzz test that only ever sees the same inputs
finds nothing after its first run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

DEFAULT_EXAMPLES = 300


def examples(scale: float = 1.0) -> int:
    """Examples per test; `scale` < 1 for the slower targets (config and plan validation)."""
    wanted = os.environ.get("SORTERD_FUZZ_EXAMPLES")
    base = int(wanted) if wanted and wanted.isdigit() else DEFAULT_EXAMPLES
    return max(10, int(base * scale))


def fuzz(scale: float = 1.0) -> settings:
    return settings(
        max_examples=examples(scale),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
