"""Shared fixtures: a real MQTT broker, and a check that no test leaves tasks behind."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator

import pytest

from drivers.broker import BrokerKind, LocalBroker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        func = getattr(item, "function", None)
        if func is not None and inspect.iscoroutinefunction(func):
            item.add_marker(pytest.mark.usefixtures("_no_leaked_tasks"))


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    # Give cancelled tasks a few loop turns to finish before judging.
    for _ in range(20):
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        left = [t for t in left if t is not asyncio.current_task()]
        if not left:
            return
        await asyncio.sleep(0.01)
    names = ", ".join(sorted(t.get_name() for t in left))
    for t in left:
        t.cancel()
    pytest.fail(f"test left tasks running: {names}")


def broker_kind() -> BrokerKind | None:
    """SORTERD_TEST_BROKER=embedded forces the fallback; default: mosquitto if installed."""
    kind = os.environ.get("SORTERD_TEST_BROKER")
    if kind in ("mosquitto", "embedded"):
        return kind  # type: ignore[return-value]
    return None


@pytest.fixture
async def broker() -> AsyncIterator[LocalBroker]:
    async with LocalBroker(kind=broker_kind()) as b:
        yield b
