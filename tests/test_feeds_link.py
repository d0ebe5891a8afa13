"""The feeds' subscription (drivers/feeds.py) against a real mosquitto: a persistent
session keeps what is published while it is away, a batch is acknowledged only when the
handler says it is durable, and what was not acknowledged comes again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import aiomqtt

from drivers.broker import LocalBroker
from drivers.feeds import FeedMessage, FeedSubscriber
from tests.waiting import wait_until


class Handler:
    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.durable = True
        self.fail = False

    async def __call__(self, batch: Sequence[FeedMessage]) -> bool:
        if self.fail:
            raise RuntimeError("a bug")
        self.seen.extend(m.payload for m in batch)
        return self.durable


@contextlib.asynccontextmanager
async def subscribed(sub: FeedSubscriber) -> AsyncIterator[None]:
    task = asyncio.create_task(sub.run(), name="feeds")
    try:
        await wait_until(lambda: sub.subscribed, 10)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sub.subscribed = False


async def publish(broker: LocalBroker, payloads: Sequence[bytes]) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        for payload in payloads:
            await client.publish("hub/pre", payload, qos=1)


async def test_session_kept_and_only_durable_batches_acknowledged(broker: LocalBroker) -> None:
    handler = Handler()
    sub = FeedSubscriber(broker.url, ["hub/pre"], handler, client_id="feeds-test")
    async with subscribed(sub):
        pass  # the session exists from here on
    sent = [f"m{i}".encode() for i in range(5)]
    await publish(broker, sent)  # nobody connected: queued for the session

    handler.durable = False  # the journal cannot write: applied, not acknowledged
    async with subscribed(sub):
        await wait_until(lambda: len(handler.seen) == 5, 10)
    assert handler.seen == sent
    assert sub.stats.not_acknowledged == 5

    handler.seen.clear()
    handler.fail = True  # a handler that raises: logged, nothing acknowledged, no crash
    async with subscribed(sub):
        await wait_until(lambda: sub.stats.errors >= 1, 10)
    handler.fail = False

    handler.durable = True
    async with subscribed(sub):
        await wait_until(lambda: len(handler.seen) == 5, 10)  # sent again
        await wait_until(lambda: sub.stats.acknowledged == 5, 10)
    assert handler.seen == sent

    handler.seen.clear()
    async with subscribed(sub):
        await publish(broker, [b"new"])
        await wait_until(lambda: handler.seen == [b"new"], 10)  # the acknowledged are gone
    assert all(m.startswith(b"new") for m in handler.seen)
