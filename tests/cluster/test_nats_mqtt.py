"""What NATS 2.9's MQTT does and does not do, of what sorterd uses (docs/cluster.md): held
against the real three-node cluster of sorterd/natscluster.py, so that a NATS upgrade that
changes any of it shows here."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from drivers.broker import free_port
from drivers.mqtt import MqttPublisher
from sorterd.natscluster import NatsCluster, NatsClusterError, _step_down
from tests.archivekit import archive_site, archived, archived_count, archiver, wait_online
from tests.faults.harness import use_url_list
from tests.waiting import wait_until

pytestmark = pytest.mark.requires("nats-server")

# A client that connects with a will and then waits to be killed (SIGKILL: no DISCONNECT).
WILLING = """
import sys, time, paho.mqtt.client as m
c = m.Client(m.CallbackAPIVersion.VERSION2, client_id="willing")
c.will_set("w/status", b'{"state": "offline"}', qos=1, retain=True)
c.connect("127.0.0.1", int(sys.argv[1]), keepalive=5)
c.loop_start()
c.publish("w/status", b'{"state": "online"}', qos=1, retain=True).wait_for_publish(10)
print("up", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats")) as started:
        yield started


async def _first(port: int, topic: str, timeout_s: float = 10.0) -> aiomqtt.Message | None:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"first-{port}-{topic}") as c:
        await c.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(timeout_s):
                async for message in c.messages:
                    return message
        except TimeoutError:
            return None
    return None


async def test_retained_messages_reach_a_late_subscriber_on_another_node(
    cluster: NatsCluster,
) -> None:
    async with aiomqtt.Client("127.0.0.1", cluster.mqtt_port(0), identifier="retainer") as c:
        await c.publish("r/chutes/7", b'{"state": "full"}', qos=1, retain=True)
        await c.publish("r/chutes/7", b'{"state": "ok"}', qos=1, retain=True)
    message = await _first(cluster.mqtt_port(2), "r/chutes/+")
    assert message is not None
    assert message.retain
    assert message.payload == b'{"state": "ok"}'  # the newest only


async def test_the_will_is_published_when_a_client_dies(cluster: NatsCluster) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WILLING, str(cluster.mqtt_port(1)), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"up"
        async with aiomqtt.Client("127.0.0.1", cluster.mqtt_port(2), identifier="will-watch") as c:
            await c.subscribe("w/status", qos=1)
            states = []
            proc.kill()
            async with asyncio.timeout(30):
                async for message in c.messages:
                    assert isinstance(message.payload, bytes)
                    states.append(json.loads(message.payload)["state"])
                    if states[-1] == "offline":
                        break
        assert states[-1] == "offline"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _qos2_then_qos1(client: aiomqtt.Client) -> None:
    await client.publish("q/x", b"2", qos=2, timeout=2)
    await client.publish("q/x", b"after", qos=1, timeout=2)  # the connection is gone


async def test_qos_2_is_not_there(cluster: NatsCluster) -> None:
    """A QoS 2 subscription is granted QoS 1; a QoS 2 PUBLISH ends the connection."""
    async with aiomqtt.Client("127.0.0.1", cluster.mqtt_port(0), identifier="qos2") as c:
        granted = await c.subscribe("q/x", qos=2)
        assert [int(getattr(g, "value", g)) for g in granted] == [1]
        with pytest.raises(aiomqtt.MqttError):
            await _qos2_then_qos1(c)


async def test_a_shared_subscription_is_taken_for_a_plain_topic(cluster: NatsCluster) -> None:
    """`$share/GROUP/t` is granted, but it is a topic of that name: nothing published to
    `t` reaches it. So `sorterd archive` subscribes plainly on NATS (docs/cluster.md)."""
    async with (
        aiomqtt.Client("127.0.0.1", cluster.mqtt_port(0), identifier="share-sub") as sub,
        aiomqtt.Client("127.0.0.1", cluster.mqtt_port(1), identifier="share-pub") as pub,
    ):
        granted = await sub.subscribe("$share/g/s/t", qos=1)
        assert [int(getattr(g, "value", g)) for g in granted] == [1]
        await pub.publish("s/t", b"to the topic", qos=1)
        await pub.publish("$share/g/s/t", b"to the literal name", qos=1)
        async with asyncio.timeout(10):
            message = await anext(aiter(sub.messages))
        assert message.payload == b"to the literal name"


@pytest.mark.requires("postgresql")
async def test_the_archiver_on_nats_subscribes_plainly_and_resumes_on_another_node(
    cluster: NatsCluster, archive_db: str, tmp_path: Path
) -> None:
    """`sorterd archive` with the node list: no `$share` (NATS has none), every message
    archived once by id, its persistent session resumed on another node after its own
    node is killed (what was published meanwhile is in it)."""
    hub = "nats/hub"
    site = archive_site(tmp_path, cluster.mqtt_urls[0], archive_db, [f"{hub}/+"])
    use_url_list(site, cluster.mqtt_urls)

    # The line's side: the daemon's own publisher and outbox, on the second and third
    # nodes (a publish waits while the cluster elects new leaders after the kill).
    line = MqttPublisher(cluster.mqtt_urls[1:], client_id="line", backoff_max_s=0.5)

    async def publish(first: int, count: int) -> None:
        for i in range(first, first + count):
            line.publish(f"{hub}/line-1/decisions", _decision(i))
        assert await line.flush(60)

    async with archiver(site, "archiver-nats") as proc:
        sender = asyncio.create_task(line.run(), name="line")
        try:
            await wait_online(cluster.mqtt_port(2), hub, "archiver-nats")
            await publish(0, 40)
            await wait_until(lambda: archived_count(archive_db) >= 40, 60, "rows archived")
            await asyncio.to_thread(cluster.kill, 0)  # the archiver's node, first in its list
            await publish(40, 40)
            await wait_until(lambda: archived_count(archive_db) >= 80, 60, "rows after the kill")
            assert await proc.stop() == 0
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await asyncio.to_thread(cluster.restart, 0)
    assert sorted(r["id"] for r in archived(archive_db)) == sorted(f"d-n-{i}" for i in range(80))
    assert "$share" not in proc.output()
    assert "mqtt next node" in proc.output()


def _decision(i: int) -> dict[str, object]:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return {
        "id": f"d-n-{i}", "ts": f"{today}T10:00:{i % 60:02d}.000Z", "tracking_id": i, "seq": i,
        "codes": [f"C{i}"], "barcode": f"C{i}", "destination": "CASA", "chute": 3,
        "reason": "ok", "recirculations": 0, "latency_ms": 0.2,
    }  # fmt: skip


async def test_the_mqtt_streams_and_consumers_are_led_from_one_node_on_request(
    cluster: NatsCluster,
) -> None:
    """`place_leaders` (docs/cluster.md "Where the leaders are"): every MQTT stream and a
    persistent QoS 1 subscription's consumer end up led by the node asked for, and QoS 1
    messages go on passing between the other two."""
    async with aiomqtt.Client(
        "127.0.0.1", cluster.mqtt_port(0), identifier="led-sub", clean_session=False
    ) as sub:
        await sub.subscribe("led/#", qos=1)
        elsewhere = await asyncio.to_thread(cluster.place_leaders, 1)
        assert elsewhere == {}
        leaders = cluster.leaders()
        assert {"$MQTT_sess", "$MQTT_msgs", "$MQTT_rmsgs"} <= set(leaders)
        assert any(group.startswith("$MQTT_msgs > ") for group in leaders)
        assert set(leaders.values()) == {"n2"}
        async with aiomqtt.Client("127.0.0.1", cluster.mqtt_port(2), identifier="led-pub") as pub:
            await pub.publish("led/x", b"1", qos=1, timeout=10)
        async with asyncio.timeout(10):
            message = await anext(aiter(sub.messages))
        assert message.payload == b"1"


def test_a_step_down_refused_or_unreachable_says_why(cluster: NatsCluster) -> None:
    """The step-down requests behind `place_leaders` (nats-py's request): a group that does
    not exist is refused by JetStream with its reason, one line per group; a node where
    nothing listens is a NatsClusterError naming the address, not a client's traceback."""
    refusals = cluster.step_down(0, ["$MQTT_none", "$MQTT_msgs > none"])
    assert len(refusals) == 2
    assert refusals[0].startswith("$MQTT_none: ")
    assert "stream not found" in refusals[0]
    assert refusals[1].startswith("$MQTT_msgs > none: ")
    assert "consumer not found" in refusals[1]
    port = free_port()
    with pytest.raises(NatsClusterError, match=rf"cannot connect to nats://127.0.0.1:{port}"):
        _step_down(port, ["$MQTT_msgs"])
