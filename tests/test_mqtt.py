"""The MQTT outbox against a real broker: nothing lost when the broker goes and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from drivers.broker import LocalBroker, free_port
from drivers.mqtt import MqttPublisher, OutMessage, encode
from tests.waiting import wait_until


async def _collect(
    port: int, topic: str, into: list[dict[str, object]], ready: asyncio.Event
) -> None:
    # A persistent session (clean_session False) so QoS 1 messages published while this
    # subscriber is reconnecting are kept for it by the broker.
    while True:
        try:
            async with aiomqtt.Client(
                "127.0.0.1", port, identifier="outbox-observer", clean_session=False
            ) as c:
                await c.subscribe(topic, qos=1)
                ready.set()
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    into.append(json.loads(m.payload))
        except aiomqtt.MqttError:
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(pub: MqttPublisher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(pub.run(), name="publisher")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_publish_order_and_status_will(broker: LocalBroker) -> None:
    got: list[dict[str, object]] = []
    ready = asyncio.Event()
    states: list[bool] = []
    pub = MqttPublisher(
        broker.url,
        client_id="pub-1",
        will=OutMessage("t/status", encode({"state": "offline"}), 1, True),
        birth=lambda: OutMessage("t/status", encode({"state": "online"}), 1, True),
        on_state=lambda ok, _why: states.append(ok),
    )
    collector = asyncio.create_task(_collect(broker.port, "t/#", got, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with running(pub):
            for i in range(300):
                pub.publish("t/decisions", {"i": i})
            assert await pub.flush(10)
            await wait_until(lambda: len(got) >= 301, 10)
        decisions = [m["i"] for m in got if "i" in m]
        assert decisions == list(range(300))
        assert {"state": "online"} in got
        assert states[0] is True
        assert pub.stats.published >= 301
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector


@pytest.mark.requires("mosquitto")
async def test_nothing_lost_when_broker_restarts(tmp_path: Path) -> None:
    port = free_port()
    got: list[dict[str, object]] = []
    ready = asyncio.Event()
    pub = MqttPublisher(
        f"mqtt://127.0.0.1:{port}", client_id="pub-2", backoff_initial_s=0.5, backoff_max_s=1.0
    )
    # The publisher's guarantee ends at the broker's PUBACK; what reaches the observer after
    # that is the broker's business. A broker that forgets its sessions when restarted loses
    # what it had not yet passed on (its socket to the observer is reset when it stops) and
    # everything published before the observer has subscribed again: the publisher may well
    # reconnect first. With persistence, as a site's broker runs, the observer's persistent
    # session and its queued messages survive the restart, so any loss is the publisher's.
    broker = LocalBroker(port=port, persistence_dir=tmp_path)
    await broker.start()
    collector = asyncio.create_task(_collect(port, "r/#", got, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with running(pub):
            for i in range(100):
                pub.publish("r/results", {"i": i})
            assert await pub.flush(10)
            await broker.stop()
            # Published while the broker is away: must wait in the outbox, not vanish.
            for i in range(100, 250):
                pub.publish("r/results", {"i": i})
            await wait_until(lambda: not pub.connected, 10)
            assert pub.backlog > 0
            await broker.start()
            assert await pub.flush(20)
            await wait_until(lambda: {m["i"] for m in got} >= set(range(250)), 20)
        assert pub.stats.connects >= 2
        # At least once: every message arrived; duplicates only by re-send of the same body.
        assert {m["i"] for m in got} == set(range(250))
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        await broker.stop()


async def test_retained_state_keeps_only_newest_while_waiting() -> None:
    pub = MqttPublisher(f"mqtt://127.0.0.1:{free_port()}")  # never connected
    for state in ("ok", "full", "ok", "disabled"):
        pub.publish("p/chutes/7", {"state": state}, retain=True)
    pub.publish("p/decisions", {"n": 1})
    assert pub.backlog == 2  # one retained value per topic, plus the decision


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="mqtt://host:port"):
        MqttPublisher("http://example")


def test_credentials_in_the_url_are_used_but_never_shown() -> None:
    pub = MqttPublisher("mqtts://sorterd:s3cret@broker.example:8883")
    assert pub.username == "sorterd"
    assert pub.password == "s3cret"
    assert "s3cret" not in pub.url
    assert pub.url == "mqtts://broker.example:8883"
    assert pub.tls
