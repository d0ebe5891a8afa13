"""The archiver's MQTT session (drivers/archive_mqtt.py) against a real mosquitto: packets
of every length cut right, acknowledged messages gone from the session and the others sent
again, the retained status and the will, and a frozen broker dropped by the keepalive."""

from __future__ import annotations

import asyncio
import json
import signal

import aiomqtt
import pytest

from drivers.archive_mqtt import Connect, MqttSession, MqttSessionError, Received, open_session
from drivers.broker import LocalBroker
from tests.waiting import wait_until

pytestmark = pytest.mark.requires("mosquitto")

TOPIC = "mq/hub/line-1/decisions"
# Lengths around the remaining-length steps (127/128 bytes, 16383/16384) and one large
# enough to come in several reads.
SIZES = [0, 1, 100, 127 - len(TOPIC) - 4, 128, 16_383 - len(TOPIC) - 4, 16_384, 300_000]


async def _session(
    broker: LocalBroker, got: list[Received], *, keepalive_s: int = 10
) -> MqttSession:
    connect = Connect(
        client_id="archive-session-test",
        keepalive_s=keepalive_s,
        will_topic="mq/hub/archive/status",
        will_payload=b'{"state": "offline"}',
    )
    session = await open_session("127.0.0.1", broker.port, connect, got.extend)
    await session.subscribe(["$share/g/mq/hub/+/decisions"], qos=1, timeout_s=10)
    return session


async def _until(got: list[Received], n: int) -> None:
    await wait_until(lambda: len(got) >= n, 20, f"{n} messages")


@pytest.mark.asyncio
async def test_messages_cut_acked_and_sent_again_when_not() -> None:
    async with LocalBroker(kind="mosquitto") as broker:
        await _acked_and_not(broker)


async def _acked_and_not(broker: LocalBroker) -> None:
    payloads = [bytes([65 + i]) * size for i, size in enumerate(SIZES)]
    got: list[Received] = []
    session = await _session(broker, got)
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        for payload in payloads:
            await client.publish(TOPIC, payload, qos=1)
    await _until(got, len(payloads))
    assert [(t, p, q) for t, p, _, q in got] == [(TOPIC.encode(), p, 1) for p in payloads]
    # The first half acknowledged, the rest not: those come again on the next connection.
    session.ack(mid for _, _, mid, _ in got[:4])
    await session.publish("mq/hub/archive/status", b'{"state": "online"}', retain=True, timeout_s=5)
    session.close()
    again: list[Received] = []
    session = await _session(broker, again)
    await _until(again, len(payloads) - 4)
    await asyncio.sleep(0.3)  # nothing more comes
    assert [p for _, p, _, _ in again] == payloads[4:]
    session.ack(mid for _, _, mid, _ in again)
    session.close()
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe("mq/hub/archive/status", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
        assert isinstance(message.payload, bytes)
        assert json.loads(message.payload) == {"state": "online"}  # a clean close: no will


@pytest.mark.asyncio
async def test_a_frozen_broker_is_dropped_and_a_refused_connect_said() -> None:
    async with LocalBroker(kind="mosquitto") as broker:
        session = await _session(broker, [], keepalive_s=1)
        broker.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(MqttSessionError, match="keepalive"):
                async with asyncio.timeout(10):
                    await session.closed()
        finally:
            broker.send_signal(signal.SIGCONT)
    async with LocalBroker(kind="mosquitto", users={"a": "right"}) as broker:
        connect = Connect(client_id="x", keepalive_s=5, username="a", password="wrong")
        with pytest.raises(MqttSessionError, match="refused by the broker: not authorised"):
            await open_session("127.0.0.1", broker.port, connect, lambda _: None)
