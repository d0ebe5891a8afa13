"""One hypothesis setting for every fuzz test: modest in CI, as long as asked for on demand.

SORTERD_FUZZ_EXAMPLES=100000 (or `make fuzz`) runs that many examples per test. Under CI
(CI=true) the examples are derandomized, so a run that passed passes again and an unrelated
change cannot be blocked by a newly drawn input; a local or long run explores new inputs and
keeps the failing ones in .hypothesis/ to replay them first.
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
        deadline=None,  # a shared 2-core machine: timing is not the property here
        derandomize=os.environ.get("CI") == "true",
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
