"""MQTT publisher with an outbox: publish() never blocks, nothing is dropped on a reconnect.

aiomqtt has no automatic reconnect (LIBRARIES.md): `run()` wraps the connection and its
sender/receiver tasks in one TaskGroup inside a retry loop with capped, jittered backoff.
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
import random
import ssl
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiomqtt
import structlog

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


class MqttPublisher:
    """One connection to the broker for the whole daemon."""

    def __init__(
        self,
        url: str,
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
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"MQTT URL {url!r} must be mqtt://host:port or mqtts://host:port")
        # Logged and shown as host:port only: a password in the URL never reaches a log.
        self.url = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")
        self.host = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.tls = parts.scheme == "mqtts"
        self.client_id = client_id
        self.username = username if username is not None else parts.username
        self.password = password if password is not None else parts.password
        self.keepalive_s = keepalive_s
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.will = will
        self.birth = birth
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.on_state = on_state
        self.max_outbox = max_outbox
        self.store = store
        self.max_memory = max_memory
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stats = MqttStats()
        self.connected = False
        # Why the last connection attempt failed or ended (bad password, TLS verify...).
        self.last_error: str | None = None
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
        """Messages waiting in memory; `spilled` says whether more wait on disk."""
        return len(self._queue) + len(self._retained)

    @property
    def spilled(self) -> bool:
        return self._spilled

    def publish(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False
    ) -> None:
        """Queue a JSON message; returns at once. Matches sorter.pipeline.Publish."""
        self.publish_raw(OutMessage(topic, encode(payload), qos, retain))

    def publish_raw(self, msg: OutMessage, rowid: int | None = None) -> None:
        """Queue a message; `rowid` when it is in the journal (then it is never dropped)."""
        if msg.retain:
            self._retained[msg.topic] = msg
            self._retained.move_to_end(msg.topic)
        elif rowid is not None:
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

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def _client(self) -> aiomqtt.Client:
        will = None
        if self.will is not None:
            will = aiomqtt.Will(
                self.will.topic, self.will.payload, qos=self.will.qos, retain=self.will.retain
            )
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=self.client_id,
            keepalive=self.keepalive_s,
            will=will,
            tls_context=self._tls_context(),
            timeout=self.ack_timeout_s,
            max_inflight_messages=self.window,
        )
        # Otherwise aiomqtt logs a warning per publish above 10 in flight.
        client.pending_calls_threshold = self.window * 4
        return client

    def _set_connected(self, connected: bool, reason: str) -> None:
        if connected != self.connected:
            self.connected = connected
            log.info("mqtt state", url=self.url, connected=connected, reason=reason)
            if self.on_state is not None:
                self.on_state(connected, reason)

    async def run(self) -> None:
        delay_s = self.backoff_initial_s
        while True:
            try:
                async with self._client() as client:
                    self.stats.connects += 1
                    delay_s = self.backoff_initial_s
                    self._set_connected(True, "connected")
                    if self.birth is not None:
                        self.publish_raw(self.birth())
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1)
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
            await asyncio.sleep(delay_s * random.uniform(0.8, 1.2))
            delay_s = min(delay_s * 2, self.backoff_max_s)

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

    async def _send(self, client: aiomqtt.Client) -> None:
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
                states = list(self._retained.values())[: self.window]
                await self._publish_all(client, states)
                for msg in states:
                    # Only remove what was sent: a newer value may have replaced it meanwhile.
                    if self._retained.get(msg.topic) is msg:
                        del self._retained[msg.topic]
                continue
            n = min(self.window, len(self._queue))
            batch = [self._queue[i] for i in range(n)]
            await self._publish_all(client, [msg for _, msg in batch])
            for _ in range(n):
                # Only the sender removes, and only from the left.
                if self._queue.popleft()[0] is None:
                    self._memory_only -= 1
            if self.store is not None:
                rows = [rowid for rowid, _ in batch if rowid is not None]
                if rows:
                    # In row order: every journaled row up to the batch's last is sent.
                    self.store.mark_sent(rows[-1])

    async def _publish_all(self, client: aiomqtt.Client, batch: list[OutMessage]) -> None:
        # The TaskGroup in run() cancels these when the receiver sees the broker go, so a
        # publish stuck waiting for its PUBACK does not wait out the whole timeout.
        await asyncio.gather(
            *(
                client.publish(
                    m.topic, m.payload, qos=m.qos, retain=m.retain, timeout=self.ack_timeout_s
                )
                for m in batch
            )
        )
        self.stats.published += len(batch)
