"""The feeds' subscription (drivers/feeds.py) against a real mosquitto: a persistent
session keeps what is published while it is away, a batch is acknowledged only when the
handler says it is durable, and what was not acknowledged comes again."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Sequence

import aiomqtt

from drivers.broker import LocalBroker
from drivers.feeds import NOT_DURABLE_REASON, FeedMessage, FeedSubscriber
from tests.conftest import require
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
    received = sub.stats.received
    task = asyncio.create_task(sub.run(), name="feeds")
    try:
        # Or it received already: a batch that is not durable drops the connection at once.
        await wait_until(lambda: sub.subscribed or sub.stats.received > received, 10)
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
        await wait_until(lambda: len(handler.seen) >= 5, 10)
    assert handler.seen[:5] == sent  # and again after each reconnect for the re-delivery
    assert sub.stats.not_acknowledged >= 5

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


class Gated:
    """A handler whose batches are durable at once and applied when the test says so (the
    feeds worker's: committed, then merged by the daemon), as awaitables."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.gates: dict[bytes, asyncio.Future[bool]] = {}

    async def __call__(self, batch: Sequence[FeedMessage]) -> asyncio.Future[bool]:
        await asyncio.sleep(0.05)  # parsing and journaling: what came meanwhile is queued
        gate = asyncio.get_running_loop().create_future()
        for m in batch:
            self.seen.append(m.payload)
            self.gates[m.payload] = gate
        return gate


async def test_the_next_batch_is_handled_while_the_last_is_applied(broker: LocalBroker) -> None:
    """A batch still being applied (an awaitable from the handler) is acknowledged once it
    is, in order; meanwhile the next batch already received is handled, one at most; the
    last one is acknowledged without waiting for another message; one that ends not
    durable makes the link reconnect, and it and the batch after it come again."""
    handler = Gated()
    sub = FeedSubscriber(broker.url, ["hub/pre"], handler, client_id="feeds-ahead", max_batch=1)
    async with subscribed(sub):
        pass  # the session exists from here on
    await publish(broker, [b"m0", b"m1", b"m2"])  # queued: all three come at once
    async with subscribed(sub):
        await wait_until(lambda: handler.seen == [b"m0", b"m1"], 10)
        await asyncio.sleep(0.2)
        assert handler.seen == [b"m0", b"m1"]  # one ahead at most
        assert sub.stats.acknowledged == 0  # m0 is not applied yet
        handler.gates[b"m0"].set_result(True)
        await wait_until(lambda: sub.stats.acknowledged == 1 and len(handler.seen) == 3, 10)
        handler.gates[b"m2"].set_result(True)  # done before m1: still acknowledged after it
        await asyncio.sleep(0.2)
        assert sub.stats.acknowledged == 1
        handler.gates[b"m1"].set_result(True)
        await wait_until(lambda: sub.stats.acknowledged == 3, 10)  # no next message needed
        await publish(broker, [b"m3", b"m4"])
        await wait_until(lambda: b"m4" in handler.gates, 10)
        handler.gates[b"m3"].set_result(False)  # m3 could not be made durable
        handler.gates[b"m4"].set_result(True)
        await wait_until(lambda: sub.stats.redelivery_reconnects == 1, 10)
        await wait_until(lambda: handler.seen.count(b"m3") == 2, 10)  # sent again
        await wait_until(lambda: handler.seen.count(b"m4") == 2, 10)
        for gate in handler.gates.values():
            if not gate.done():
                gate.set_result(True)
        await wait_until(lambda: sub.stats.acknowledged == 5, 10)
    assert handler.seen[:3] == [b"m0", b"m1", b"m2"]


async def test_what_waits_in_the_socket_is_read_with_the_next_batch(broker: LocalBroker) -> None:
    """aiomqtt reads one packet per turn of the event loop: messages that came while the
    handler held the loop (parsing, journaling) are read off the socket at the next batch,
    all of them, so that their apply lag starts there and not at some later turn."""
    batches: list[list[bytes]] = []
    later = [f"m{i}".encode() for i in range(1, 20)]

    async def busy(batch: Sequence[FeedMessage]) -> bool:
        batches.append([m.payload for m in batch])
        if len(batches) == 1:  # the worker's CPU-bound part: the loop turns not meanwhile
            publisher = threading.Thread(target=asyncio.run, args=(publish(broker, later),))
            publisher.start()
            publisher.join(10)
            time.sleep(0.2)  # noqa: ASYNC251 - the loop held, as by parsing: they reach the socket
        return True

    sub = FeedSubscriber(broker.url, ["hub/pre"], busy, client_id="feeds-waiting", max_batch=64)
    async with subscribed(sub):
        await publish(broker, [b"m0"])
        await wait_until(lambda: sum(map(len, batches)) == 20, 10)
    assert batches == [[b"m0"], later]  # all that waited, in one batch


async def test_a_batch_not_journaled_comes_again_past_the_brokers_inflight_limit() -> None:
    """mosquitto with its default max_inflight_messages (20): after a batch that could not
    be journaled the link reconnects (P/devices/feeds says why), the broker re-delivers what
    was not acknowledged, and once the journal writes again every message is applied and
    acknowledged; without the reconnect the broker stops after 20 un-acknowledged ones."""
    require("mosquitto")
    handler = Handler()
    handler.durable = False
    states: list[tuple[bool, str]] = []
    sent = [f"m{i}".encode() for i in range(60)]
    async with LocalBroker(kind="mosquitto", max_inflight_messages=None) as broker:
        sub = FeedSubscriber(
            broker.url, ["hub/pre"], handler, client_id="feeds-inflight", max_batch=1,
            on_state=lambda connected, reason: states.append((connected, reason)),
            backoff_max_s=0.2,
        )  # fmt: skip
        async with subscribed(sub):
            await publish(broker, sent)
            await wait_until(lambda: sub.stats.redelivery_reconnects >= 3, 20)
            handler.durable = True  # the journal writes again
            await wait_until(lambda: set(sent) <= set(handler.seen), 20)
            assert (False, NOT_DURABLE_REASON) in states
            await wait_until(lambda: sub.connected and sub.subscribed, 10)
        assert states[-1] == (True, "subscribed")
        handler.seen.clear()
        async with subscribed(sub):  # everything was acknowledged: nothing comes again
            await publish(broker, [b"new"])
            await wait_until(lambda: b"new" in handler.seen, 10)
        assert handler.seen == [b"new"]


async def test_a_refused_or_downgraded_subscription_is_reported() -> None:
    """SUBACK codes are read: a broker that grants QoS 0 only (mosquitto `max_qos 0`) makes
    P/devices/feeds say so, with the topic, instead of `subscribed`."""
    require("mosquitto")
    states: list[tuple[bool, str]] = []
    async with LocalBroker(kind="mosquitto", extra_config=["max_qos 0"]) as broker:
        sub = FeedSubscriber(
            broker.url, ["hub/pre"], Handler(), client_id="feeds-qos0",
            on_state=lambda connected, reason: states.append((connected, reason)),
        )  # fmt: skip
        task = asyncio.create_task(sub.run(), name="feeds")
        try:
            await wait_until(lambda: sub.stats.errors >= 1, 10)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert not sub.subscribed
    assert states[-1] == (False, "the broker granted 'hub/pre' QoS 0 only (QoS 1 is needed)")
