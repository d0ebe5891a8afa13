"""The numba compilation the manifest's kernels share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from numba import njit

__all__ = ["kernel", "lookup_kernel"]

_F = TypeVar("_F", bound=Callable[..., Any])


def kernel(fn: _F) -> _F:
    """Compiled once, cached on disk, run without the GIL."""
    return cast(_F, njit(cache=True, nogil=True, error_model="numpy")(fn))


def lookup_kernel(fn: _F) -> _F:
    """Without numba's runtime: the lookups never allocate, and the reference counting of
    the key rows they slice costs more than the lookup itself (see sorter.kernel)."""
    dispatcher = njit(  # type: ignore[call-overload]  # _nrt is not in numba's stubs
        fn, cache=True, nogil=True, error_model="numpy", _nrt=False
    )
    return cast(_F, dispatcher)
