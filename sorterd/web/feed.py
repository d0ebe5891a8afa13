"""The console's one MQTT connection: it keeps the `HubModel` fed (like `sorterd top`'s
`follow`, with jittered reconnects) and carries the operators' commands to the lines
(P/cmd/..., answered on P/cmd-result, docs/interfaces.md section 5).

Lines named exactly are subscribed at once; a prefix with a + level subscribes to
`<pattern>/status`, and each line whose retained P/status turns up there is subscribed
then. Only the topics the console shows are subscribed (never `#` under the hub, which
would carry the hub's pre-advice feeds too).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from typing import Any

import aiomqtt
import structlog

from drivers.mqtt_nodes import MqttNodes
from sorter.backoff import Backoff
from sorter.config import MqttSection
from sorter.errors import SorterdError
from sorter.wire_json import parse_object
from sorterd.web.model import HubModel, LineModel

__all__ = ["BrokerAwayError", "Changes", "LineFeed", "line_topics"]

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 5.0
SUBSCRIBE_TIMEOUT_S = 10.0
MAX_QUEUED_INCOMING = 100_000
# The QoS of each subscription: retained state and events at 1, stats as published (0).
_LINE_TOPICS = (
    ("status", 1),
    ("stats", 0),
    ("chutes/+", 1),
    ("devices/+", 1),
    ("decisions", 1),
    ("results", 1),
    ("cmd-result", 1),
)


class BrokerAwayError(SorterdError):
    """A command while the console has no broker connection."""


def line_topics(prefix: str) -> list[tuple[str, int]]:
    return [(f"{prefix}/{suffix}", qos) for suffix, qos in _LINE_TOPICS]


class Changes:
    """Wakes every page waiting for a change; each then takes what changed since it last
    looked (the model's versions), so a burst of messages is one wake-up."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class LineFeed:
    """`mqtt`: the site's [mqtt] table: its URL, and its credentials and TLS files as the
    daemon uses them (`username`/`password` win over the URL's)."""

    def __init__(self, mqtt: MqttSection, hub: HubModel, changes: Changes) -> None:
        self.mqtt = mqtt
        # The nodes of the site's broker (one, or a cluster's): the next after a failure.
        self.nodes = MqttNodes.of(mqtt)
        self.hub = hub
        self.changes = changes
        self._client: aiomqtt.Client | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Until cancelled: connect, subscribe, feed the model; the broker going away is
        shown on the model (and so on every page), never raised."""
        nodes = self.nodes
        backoff = Backoff(0.2, 5.0)
        while True:
            target = nodes.current
            client = nodes.client(
                identifier=f"sorterd-web-{os.getpid()}-{secrets.token_hex(4)}",
                timeout=CONNECT_TIMEOUT_S,
                keepalive=10,
                max_queued_incoming_messages=MAX_QUEUED_INCOMING,
            )
            try:
                async with client:
                    await self._subscribe_all(client)
                    self._client = client
                    self.connected.set()
                    self.hub.on_broker(True, target.address)
                    self.changes.notify()
                    backoff.reset()
                    await self._receive(client)
            except aiomqtt.MqttError as exc:
                self._lost()
                nodes.failed(str(exc))
                wait_s = backoff.next_delay_s()
                log.warning("broker unreachable", error=str(exc), retry_in_s=round(wait_s, 2))
                self.hub.on_broker(False, str(exc) or type(exc).__name__)
                self.changes.notify()
                await asyncio.sleep(wait_s)
            finally:
                self._lost()

    def _lost(self) -> None:
        """No connection: commands waiting for their answer fail now, not at their timeout."""
        self._client = None
        self.connected.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrokerAwayError("the broker went away"))

    async def _subscribe_all(self, client: aiomqtt.Client) -> None:
        topics: list[tuple[str, int]] = []
        for pattern in self.hub.patterns:
            if "+" in pattern.split("/"):
                topics.append((f"{pattern}/status", 1))
        for prefix in self.hub.lines:
            topics.extend(line_topics(prefix))
        await client.subscribe(topics, timeout=SUBSCRIBE_TIMEOUT_S)

    async def _receive(self, client: aiomqtt.Client) -> None:
        hub = self.hub
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            topic = str(message.topic)
            found = hub.line_of(topic)
            if found is None:
                line = hub.discovered(topic, bytes(payload))
                if line is None:
                    continue
                log.info("line discovered", prefix=line.prefix)
                # Its own topics, its status included again (retained): found, then fed.
                await client.subscribe(line_topics(line.prefix), timeout=SUBSCRIBE_TIMEOUT_S)
                continue
            line, suffix = found
            if suffix == "cmd-result":
                self._answer(line, bytes(payload))
                continue
            line.on_raw(suffix, bytes(payload), time.time())
            self.changes.notify()

    def _answer(self, line: LineModel, payload: bytes) -> None:
        data = parse_object(payload)
        if data is None:
            return
        future = self._pending.get(f"{line.prefix}|{data.get('id')}")
        if future is not None and not future.done():
            future.set_result(data)

    async def command(self, prefix: str, suffix: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """Publish P/cmd/`suffix` to the line `prefix` and return its P/cmd-result.
        BrokerAwayError without a broker; TimeoutError when the line does not answer."""
        client = self._client
        if client is None:
            raise BrokerAwayError("the console is not connected to the broker")
        request_id = f"web-{secrets.token_hex(8)}"
        key = f"{prefix}|{request_id}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            async with asyncio.timeout(timeout_s):
                await client.publish(
                    f"{prefix}/cmd/{suffix}", json.dumps({"id": request_id}), qos=1
                )
                return await future
        except aiomqtt.MqttError as exc:
            raise BrokerAwayError(f"the broker refused the command: {exc}") from None
        finally:
            self._pending.pop(key, None)
            if not future.done():
                future.cancel()
