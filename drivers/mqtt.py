"""MQTT publisher with an outbox: publish() never blocks, nothing is dropped on a reconnect.

aiomqtt has no automatic reconnect: `run()` wraps the connection and its sender/receiver
tasks in one TaskGroup inside a retry loop with capped, jittered backoff (sorter/backoff.py);
with the nodes of a clustered broker, each attempt after a failure goes to the next node
(drivers/mqtt_nodes.py, docs/cluster.md).
A message leaves the outbox only after the broker acknowledged it (PUBACK for QoS 1), so a
broker that vanishes mid-flight costs a re-send with the same id, never a loss. Retained
state topics keep only their newest value while waiting: a chute's old state is no use.

With a `store` (the journal), journaled messages carry their row id: the sender reports
each acknowledged batch (`mark_sent`), and when more than `max_memory` journaled messages
wait (a broker down for hours) the rest stay on disk only and are paged back in, in row
order, as the queue drains. After a restart the unsent rows are paged in the same way.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt
import structlog

from drivers.mqtt_nodes import MqttNodes
from sorter.backoff import Backoff

__all__ = [
    "MqttPublisher",
    "MqttStats",
    "OutMessage",
    "Outbox",
    "OutboxStore",
    "Unsent",
    "encode",
]

log = structlog.get_logger(__name__)

PAGE_IN_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class OutboxStore(Protocol):
    """The durable side of the outbox (drivers.journal.Journal)."""

    def mark_sent(self, upto_rowid: int) -> None: ...

    def unsent(self, after_rowid: int, limit: int) -> Sequence[Unsent] | None:
        """None when the store cannot be read right now (not the end of the rows)."""
        ...


class Unsent(Protocol):
    @property
    def rowid(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


@dataclass(slots=True)
class MqttStats:
    published: int = 0
    errors: int = 0
    connects: int = 0
    dropped: int = 0  # outbox over its bound: counted and logged, see max_outbox
    received: int = 0


def encode(payload: dict[str, Any]) -> bytes:
    # "replace": a lone surrogate that slipped into a string must cost a '?', not the
    # connection (JSON text may carry one; UTF-8 cannot).
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", errors="replace")


class Outbox:
    """The messages waiting for the broker's acknowledgement, in the order they leave.

    Only the sender takes from it (`take`, then `done` once the broker acknowledged), so a
    message leaves only acknowledged; `add` never blocks.
    """

    def __init__(
        self, stats: MqttStats, *, max_outbox: int, store: OutboxStore | None, max_memory: int
    ) -> None:
        self.stats = stats
        self.max_outbox = max_outbox
        self.store = store
        self.max_memory = max_memory
        self._queue: deque[tuple[int | None, OutMessage]] = deque()  # (journal row, message)
        # Journaled messages not in the queue wait on disk: every row after _last_rowid.
        self._spilled = store is not None
        self._last_rowid = 0
        self._memory_only = 0
        self._retained: OrderedDict[str, OutMessage] = OrderedDict()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        if store is None:
            self._idle.set()  # with a store, the sender looks at the disk first

    @property
    def backlog(self) -> int:
        return len(self._queue) + len(self._retained)

    @property
    def spilled(self) -> bool:
        return self._spilled

    def add(self, msg: OutMessage, rowid: int | None = None) -> None:
        """Queue a message; `rowid` when it is in the journal (then it is never dropped)."""
        if msg.retain:
            self._retained[msg.topic] = msg
            self._retained.move_to_end(msg.topic)
        elif rowid is not None:
            if rowid <= self._last_rowid:
                # Paged in from the journal already: the journal publishes a step once its
                # sync is done, and a page-in may have read the committed rows before that.
                return
            if self._spilled or len(self._queue) >= self.max_memory:
                self._spilled = True  # on disk already; paged in when the queue drains
            else:
                self._queue.append((rowid, msg))
                self._last_rowid = rowid
        elif self._memory_only >= self.max_outbox:
            # Only messages the journal could not take (or, without a journal, all of them)
            # live in memory alone; memory bounds them. Counted and logged, never silent.
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 10_000 == 0:
                log.error("mqtt outbox full, message dropped", dropped=self.stats.dropped)
            return
        else:
            self._memory_only += 1
            self._queue.append((None, msg))
        self._idle.clear()
        self._wake.set()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty and acknowledged; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def take(self, window: int) -> tuple[list[OutMessage], bool]:
        """The next messages to send, at most `window`, and whether they are retained
        states; waits while there are none. They stay in the outbox until `done`."""
        while True:
            if not self._queue and self._spilled and not self._page_in():
                # The journal cannot be read now: what waits there is not lost, and must not
                # be skipped (the watermark would pass it). Try again in a while.
                await asyncio.sleep(PAGE_IN_RETRY_S)
                continue
            if not self._queue and not self._retained:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._retained:
                return list(self._retained.values())[:window], True
            return [self._queue[i][1] for i in range(min(window, len(self._queue)))], False

    def done(self, batch: list[OutMessage], retained: bool) -> None:
        """The broker acknowledged `batch`, as `take` gave it."""
        if retained:
            for msg in batch:
                # Only remove what was sent: a newer value may have replaced it meanwhile.
                if self._retained.get(msg.topic) is msg:
                    del self._retained[msg.topic]
            return
        last_row: int | None = None
        for _ in batch:
            # Only the sender removes, and only from the left.
            rowid = self._queue.popleft()[0]
            if rowid is None:
                self._memory_only -= 1
            else:
                last_row = rowid
        if self.store is not None and last_row is not None:
            # In row order: every journaled row up to the batch's last is sent.
            self.store.mark_sent(last_row)

    def _page_in(self) -> bool:
        """Bring the next journaled rows into the queue; the end of the spill when none.
        False when the store could not be read (the spill goes on; try again later)."""
        assert self.store is not None
        rows = self.store.unsent(self._last_rowid, self.max_memory // 2)
        if rows is None:
            return False
        for row in rows:
            self._queue.append((row.rowid, OutMessage(row.topic, row.payload, 1, False)))
            self._last_rowid = row.rowid
        if len(rows) < self.max_memory // 2:
            self._spilled = False
        return True


@dataclass(frozen=True, slots=True)
class _ClientOptions:
    """What every connection of one publisher is opened with."""

    client_id: str | None
    keepalive_s: int
    will: OutMessage | None
    window: int
    ack_timeout_s: float
    connect_timeout_s: float


class MqttPublisher:
    """One connection to the broker for the whole daemon.

    `url`: one URL or the nodes of one clustered broker, parsed by
    `sorter.addresses.parse_mqtt_urls` (as check-config and `top` parse it); a lost
    connection moves to the next node (drivers/mqtt_nodes.py), where the outbox is sent
    again from its first unacknowledged message, ids unchanged, and `birth` published anew.
    `username`/`password` win over the URL's. `will`/`birth`: the status message the
    broker publishes when the link dies / the one sent on every connect. `store`: the
    journal (see the module's docstring); `max_outbox` bounds messages in memory alone,
    `max_memory` journaled ones in memory. `window`: QoS 1 messages in flight.
    `ack_timeout_s`: how long a PUBACK may take before the connection counts as failed
    (a shorter one on a cluster was tried: it dropped connections to nodes that were
    waiting for their cluster, and sent the outbox again, without publishing sooner;
    docs/cluster.md); `connect_timeout_s` the same for the CONNACK.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 10,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        will: OutMessage | None = None,
        birth: Callable[[], OutMessage] | None = None,
        subscriptions: tuple[str, ...] = (),
        on_message: Callable[[str, bytes], None] | None = None,
        on_state: Callable[[bool, str], None] | None = None,
        max_outbox: int = 1_000_000,
        store: OutboxStore | None = None,
        max_memory: int = 20_000,
        window: int = 64,
        ack_timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.nodes = MqttNodes(
            url,
            username=username,
            password=password,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        )
        self._options = _ClientOptions(
            client_id, keepalive_s, will, window, ack_timeout_s, connect_timeout_s
        )
        # On a cluster (a list of nodes) the subscriptions are QoS 0: NATS keeps a QoS 1
        # subscription as a JetStream consumer, and a new connection of the same client id
        # must delete it first, which waits for JetStream to elect a new leader when the
        # dead node led it (measured: 6-8 s, against 0.01 s without; docs/cluster.md). The
        # session is clean anyway (a command from before a reconnect is not run).
        self.subscription_qos = 0 if len(self.nodes.endpoints) > 1 else 1
        self.birth = birth
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.on_state = on_state
        self.stats = MqttStats()
        self.connected = False
        # Why the last connection attempt failed or ended (bad password, TLS verify...).
        self.last_error: str | None = None
        self._outbox = Outbox(self.stats, max_outbox=max_outbox, store=store, max_memory=max_memory)
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)

    @property
    def url(self) -> str:
        """The current node as scheme://host:port: a password in the URL never reaches a log."""
        return self.nodes.shown

    @property
    def tls(self) -> bool:
        return self.nodes.tls

    @property
    def username(self) -> str | None:
        return self.nodes.username

    @property
    def password(self) -> str | None:
        return self.nodes.password

    @property
    def backlog(self) -> int:
        """Messages waiting in memory; `spilled` says whether more wait on disk."""
        return self._outbox.backlog

    @property
    def spilled(self) -> bool:
        return self._outbox.spilled

    def publish(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False
    ) -> None:
        """Queue a JSON message; returns at once. Matches sorter.ports.Publish."""
        self._outbox.add(OutMessage(topic, encode(payload), qos, retain))

    def publish_raw(self, msg: OutMessage, rowid: int | None = None) -> None:
        """Queue a message; `rowid` when it is in the journal (then it is never dropped)."""
        self._outbox.add(msg, rowid)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty and acknowledged; False on timeout."""
        return await self._outbox.flush(timeout_s)

    def _client(self) -> aiomqtt.Client:
        options = self._options
        will = None
        if options.will is not None:
            will = aiomqtt.Will(
                options.will.topic,
                options.will.payload,
                qos=options.will.qos,
                retain=options.will.retain,
            )
        client = self.nodes.client(
            identifier=options.client_id,
            keepalive=options.keepalive_s,
            will=will,
            # The CONNACK's wait: a frozen node (or one waiting for its cluster) is left
            # for the next sooner than a PUBACK is given up on.
            timeout=options.connect_timeout_s,
            max_inflight_messages=options.window,
        )
        # Otherwise aiomqtt logs a warning per publish above 10 in flight.
        client.pending_calls_threshold = options.window * 4
        return client

    def _set_connected(self, connected: bool, reason: str) -> None:
        if connected != self.connected:
            self.connected = connected
            log.info("mqtt state", url=self.url, connected=connected, reason=reason)
            if self.on_state is not None:
                self.on_state(connected, reason)

    async def run(self) -> None:
        """Connect, send and receive until cancelled; reconnect with backoff."""
        while True:
            try:
                async with self._client() as client:
                    self.stats.connects += 1
                    self._backoff.reset()
                    self._set_connected(True, "connected")
                    if self.birth is not None:
                        self.publish_raw(self.birth())
                    for topic in self.subscriptions:
                        await client.subscribe(
                            topic, qos=self.subscription_qos, timeout=self._options.ack_timeout_s
                        )
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._send(client), name="mqtt-send")
                        # The receiver also notices a broker that goes away while idle.
                        tg.create_task(self._receive(client), name="mqtt-receive")
            except* (aiomqtt.MqttError, OSError, ssl.SSLError) as group:
                self.stats.errors += 1
                reason = "; ".join(str(e) for e in group.exceptions)
                self.last_error = reason
                log.warning("mqtt connection lost", url=self.url, error=reason)
                self._set_connected(False, reason)
                self.nodes.failed(reason)
            await asyncio.sleep(self._backoff.next_delay_s())

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.stats.received += 1
            if self.on_message is not None:
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                try:
                    self.on_message(str(message.topic), data)
                except Exception:
                    # A message nobody should be able to send (a bug of ours): logged with
                    # its traceback, and the connection, and the line, go on.
                    self.stats.errors += 1
                    log.exception("mqtt message handler failed", topic=str(message.topic))

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            batch, retained = await self._outbox.take(self._options.window)
            await self._publish_all(client, batch)
            self._outbox.done(batch, retained)

    async def _publish_all(self, client: aiomqtt.Client, batch: list[OutMessage]) -> None:
        # The TaskGroup in run() cancels these when the receiver sees the broker go, so a
        # publish stuck waiting for its PUBACK does not wait out the whole timeout.
        timeout_s = self._options.ack_timeout_s
        await asyncio.gather(
            *(
                client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, timeout=timeout_s)
                for m in batch
            )
        )
        self.stats.published += len(batch)
