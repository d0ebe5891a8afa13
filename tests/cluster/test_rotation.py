"""Moving to the next node (drivers/mqtt_nodes.py) with two real mosquittos, one of them
stopped: cheaper than the NATS cluster, and the same code path in every client (the
publisher and its outbox, the feeds subscriber, `sorterd top`). Two mosquittos are two
brokers, not one cluster: what a node had queued stays on it, so these tests hold what the
client does (where it connects, what it sends again), and the NATS tests hold the rest."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.broker import LocalBroker, free_port
from drivers.feeds import FeedMessage, FeedSubscriber
from drivers.mqtt import MqttPublisher, OutMessage, encode
from simulators.feeds import FeedMessage as SimFeedMessage
from simulators.feeds import FeedPublisher, read_feed_site
from sorterd.top import TopModel, follow
from tests.waiting import wait_until

pytestmark = pytest.mark.requires("mosquitto")


async def _collect(port: int, into: list[dict[str, Any]], ready: asyncio.Event) -> None:
    """Everything under t/ on the broker at `port`, in a persistent session."""
    while True:
        try:
            async with aiomqtt.Client(
                "127.0.0.1", port, identifier=f"collector-{port}", clean_session=False
            ) as c:
                await c.subscribe("t/#", qos=1)
                ready.set()
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    into.append({"topic": str(m.topic), **json.loads(m.payload)})
        except aiomqtt.MqttError:
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _tasks(*coros: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_node_down_at_start_is_skipped() -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    got: list[dict[str, Any]] = []
    ready = asyncio.Event()
    async with LocalBroker(kind="mosquitto") as live:
        pub = MqttPublisher([dead, live.url], client_id="rot-1", backoff_max_s=0.5)
        async with _tasks(_collect(live.port, got, ready), pub.run()):
            await asyncio.wait_for(ready.wait(), 10)
            for i in range(50):
                pub.publish("t/decisions", {"id": f"d{i}"})
            assert await pub.flush(10)
            await wait_until(lambda: len(got) >= 50, 10)
        assert pub.url == live.url
        assert pub.stats.errors >= 1  # the dead node was tried, once
        assert [m["id"] for m in got] == [f"d{i}" for i in range(50)]


async def test_the_publisher_moves_on_and_sends_the_outbox_again_with_its_ids() -> None:
    got_a: list[dict[str, Any]] = []
    got_b: list[dict[str, Any]] = []
    ready_a, ready_b = asyncio.Event(), asyncio.Event()
    node_a = LocalBroker(kind="mosquitto")
    node_b = LocalBroker(kind="mosquitto")
    await node_a.start()
    await node_b.start()
    pub = MqttPublisher(
        [node_a.url, node_b.url],
        client_id="rot-2",
        will=OutMessage("t/status", encode({"state": "offline"}), 1, True),
        birth=lambda: OutMessage("t/status", encode({"state": "online"}), 1, True),
        backoff_max_s=0.5,
    )
    try:
        collectors = (_collect(node_a.port, got_a, ready_a), _collect(node_b.port, got_b, ready_b))
        async with _tasks(*collectors, pub.run()):
            await asyncio.wait_for(asyncio.gather(ready_a.wait(), ready_b.wait()), 10)
            await wait_until(lambda: pub.connected, 10)
            assert pub.url == node_a.url
            for i in range(200):
                pub.publish("t/decisions", {"id": f"d{i}"})
            assert await pub.flush(10)
            # Acknowledged is the publisher's part; passed on is the broker's, which loses
            # what it queued when it stops (no persistence here): wait for it first.
            await wait_until(lambda: len(got_a) >= 201, 10)
            await node_a.stop()  # the node the publisher is connected to
            for i in range(200, 500):
                pub.publish("t/decisions", {"id": f"d{i}"})
            assert await pub.flush(20)
            await wait_until(lambda: len({m.get("id") for m in got_b}) >= 300, 10)
        assert pub.url == node_b.url
        # Online again, on the new node.
        assert {"topic": "t/status", "state": "online"} in got_b
        ids_a = [m["id"] for m in got_a if "id" in m]
        ids_b = [m["id"] for m in got_b if "id" in m]
        # Nothing lost across the two nodes; a duplicate only as a re-send of the same id.
        assert set(ids_a) | set(ids_b) == {f"d{i}" for i in range(500)}
        assert ids_a[:200] == [f"d{i}" for i in range(200)]
        assert [i for i in ids_b if i not in ids_a] == [f"d{i}" for i in range(200, 500)]
    finally:
        await node_a.stop()
        await node_b.stop()


class _Handler:
    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def __call__(self, batch: Sequence[FeedMessage]) -> bool:
        self.seen.extend(m.payload for m in batch)
        return True


async def test_the_feeds_subscriber_and_top_skip_a_dead_node() -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    handler = _Handler()
    model = TopModel("t/line")
    subscribed = asyncio.Event()
    async with LocalBroker(kind="mosquitto") as live:
        sub = FeedSubscriber([dead, live.url], ["t/feeds"], handler, client_id="rot-feeds")
        follower = follow([dead, live.url], model, subscribed=subscribed, backoff_max_s=0.5)
        async with _tasks(sub.run(), follower):
            await wait_until(lambda: sub.subscribed, 10)
            await asyncio.wait_for(subscribed.wait(), 10)
            async with aiomqtt.Client("127.0.0.1", live.port) as client:
                await client.publish("t/feeds", b"row-1", qos=1)
                await client.publish("t/line/status", b'{"state": "online"}', qos=1, retain=True)
            await wait_until(lambda: handler.seen == [b"row-1"], 10)
            await wait_until(lambda: model.status.get("state") == "online", 10)
        assert sub.url == live.url
        assert model.broker.connected


async def test_the_feed_simulator_reads_the_list_and_skips_a_dead_node(tmp_path: Path) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    async with LocalBroker(kind="mosquitto") as live:
        site_toml = tmp_path / "site.toml"
        site_toml.write_text(
            f'[mqtt]\nurl = ["{dead}", "{live.url}"]\ntopic_prefix = "t/line"\n'
            '[feeds]\npreadvice = "t/pre"\ncustoms = "t/customs"\n'
        )
        site = read_feed_site(site_toml)
        assert (site.url, site.more_urls) == (dead, (live.url,))
        got: list[bytes] = []

        async def collect(ready: asyncio.Event) -> None:
            async with aiomqtt.Client("127.0.0.1", live.port) as c:
                await c.subscribe("t/pre", qos=1)
                ready.set()
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    got.append(m.payload)

        ready = asyncio.Event()
        publisher = FeedPublisher(site)
        async with _tasks(collect(ready), publisher.run()):
            await asyncio.wait_for(ready.wait(), 10)
            await publisher.submit(SimFeedMessage(0.0, "preadvice", b'{"id": "r1"}'))
            await publisher.close()
            await wait_until(lambda: got == [b'{"id": "r1"}'], 10)
        assert publisher.log.reconnects >= 1  # the dead node, tried first
