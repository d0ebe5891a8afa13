"""Shared start-up of the harnesses: the repository on sys.path, heavy imports uninstrumented."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Imported before instrumentation: coverage of numpy, numba and pydantic's internals would
# only slow the fuzzer down; our own modules are what is instrumented.
import numba
import numpy  # noqa: F401
import pydantic  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Instrumented bytecode cannot be compiled by numba: the modules with jitted kernels stay
# uninstrumented unless NUMBA_DISABLE_JIT=1 makes them plain Python (fuzz_manifest does).
JITTED = ["sorter.kernel", "sorter.manifest"]


def instrument() -> Any:
    """atheris.instrument_imports for our packages, less what numba must compile."""
    import atheris  # noqa: PLC0415

    jit_off = bool(numba.config.DISABLE_JIT)
    return atheris.instrument_imports(
        include=["drivers", "sorter"], exclude=[] if jit_off else JITTED
    )
