"""The one way a test waits for something to happen: poll what it can observe, with a deadline.

The deadline ends a test that hangs; it says nothing about how fast the code is, so keep it
generous (a loaded CI machine runs many times slower than a laptop). No test asserts a
duration or a rate: the benchmarks measure those (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

DEFAULT_TIMEOUT_S = 30.0
_POLL_S = 0.005


async def wait_until(
    predicate: Callable[[], bool] | Callable[[], Awaitable[bool]],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    what: str = "",
) -> None:
    """Return as soon as `predicate()` holds; TimeoutError saying `what` if it does not
    within `timeout_s`. `predicate` may be a coroutine function (a register read).

    Polling, because most of what tests watch (counters, flags, a simulator's ledger,
    messages a subscriber received) offers no event to await."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await _holds(predicate):  # noqa: ASYNC110 - the one polling loop
                await asyncio.sleep(_POLL_S)
    except TimeoutError:
        what = what or "the awaited condition"
        raise TimeoutError(f"not within {timeout_s:g} s: {what}") from None


async def _holds(predicate: Callable[[], bool] | Callable[[], Awaitable[bool]]) -> bool:
    result = predicate()
    if inspect.isawaitable(result):
        result = await result
    return bool(result)
