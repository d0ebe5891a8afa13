"""Calling a numba function through its compiled entry point (sorter.kernel, sorter.fastpath).

numba's dispatcher works out the types of every argument on every call (0.73 us for
decide_one's 21 arguments); the entry point compiled for those types takes them as they
are (0.34 us). Kept out of sorter/kernel.py: a change there changes how LLVM compiles the
batch kernel beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from numba import typeof

from sorter.kernel import ChuteState, ItemFeatures, Kernel, decide_one

__all__ = ["DecideCall", "compiled_entry"]


def compiled_entry(dispatcher: Any, args: tuple[Any, ...]) -> Callable[..., Any] | None:
    """The compiled entry point of a numba function for these arguments' types, or None
    when it has not been compiled for them (or numba has no such attribute).

    An entry point unboxes its arguments as the types it was compiled for without checking
    them: call it only with arguments of the same types as `args` (the same arrays' dtypes,
    layouts and dimensions; ints as ints)."""
    try:
        signature = tuple(typeof(a) for a in args)  # type: ignore[no-untyped-call]
        overload = dispatcher.overloads.get(signature)
        return None if overload is None else cast(Callable[..., Any], overload.entry_point)
    except (AttributeError, ValueError, TypeError):
        return None


class DecideCall:
    """A Kernel's decide_one on the 14 ItemFeatures fields as plain ints: (destination
    index or -1, chute, reason as int), as Kernel.decide computes it, through the compiled
    entry point once the arrays are known to be of the types it was compiled for.

    (Kept beside the kernel rather than in sorter/kernel.py: a change to the Kernel class
    there changed how LLVM compiled decide_batch, and the batch rate with it.)"""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._call: Callable[..., tuple[int, int, int]] = decide_one
        self._checked: tuple[object, object, object] | None = None

    def __call__(self, *features: int, state: ChuteState) -> tuple[int, int, int]:
        k = self._kernel
        flags, load, rr_next = state.flags, state.load, k.rr_next
        checked = self._checked
        call = (
            self._call
            if checked is not None
            and checked[0] is flags
            and checked[1] is load
            and checked[2] is rr_next
            else self.bind(state)
        )
        d, c, r = call(
            *features, k._blob, k._tables, k._max_recirculations, k._least_loaded, flags, load,
            rr_next,
        )  # fmt: skip
        return int(d), int(c), int(r)

    def bind(self, state: ChuteState) -> Callable[..., tuple[int, int, int]]:
        """The call for `state`'s arrays (done by the first call with them; a warm-up does
        it ahead for the state the line will decide with)."""
        k = self._kernel
        args = (
            *ItemFeatures(), k._blob, k._tables, k._max_recirculations, k._least_loaded,
            state.flags, state.load, k.rr_next,
        )  # fmt: skip
        entry = compiled_entry(decide_one, args)
        if entry is None:
            self._checked = None
            return decide_one
        self._call = entry
        self._checked = (state.flags, state.load, k.rr_next)
        return entry
