"""`sorterd archive`: every decision and result of the hub's lines, from MQTT into PostgreSQL
(docs/archive.md, docs/interfaces.md section 8).

A message is acknowledged (PUBACK) only after the transaction holding its row committed:
until then the broker keeps it in this archiver's persistent session and sends it again
after a reconnect, so an outage of the broker, the database or the archiver delays rows and
never loses one. Rows are keyed by the message id, so the redelivery changes nothing.
aiomqtt has no public manual acknowledgement (its issue #345); paho-mqtt underneath has
one (`manual_ack_set`, `ack(mid, qos)`), reached through aiomqtt's client as that issue
suggests. A message id (mid) belongs to one connection: acknowledgements of messages
received on a connection that has since gone are not sent (the broker sends those again).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field

import aiomqtt
import structlog

from drivers.archive_db import day_of
from drivers.archive_rows import BadMessageError, Row, iso, parse_message
from drivers.mqtt_nodes import MqttNodes
from sorter.backoff import Backoff
from sorter.config import ArchiveSection, Site
from sorter.errors import SorterdError
from sorterd.archive_store import Store

__all__ = [
    "SHARE_GROUP",
    "ArchiveStats",
    "Archiver",
    "archive_section",
    "hub_prefix",
    "run_archive",
    "subscriptions",
]

log = structlog.get_logger(__name__)

SHARE_GROUP = "$share/sorterd-archive/"
STATUS_INTERVAL_S = 5.0
RETENTION_INTERVAL_S = 3600.0
STOP_FLUSH_S = 10.0
# A SUBACK comes after the messages that waited in the session: minutes of backlog.
SUBSCRIBE_TIMEOUT_S = 600.0


class _NoTraceback(logging.Filter):
    """aiomqtt logs a late SUBACK (one that comes after a stop cancelled its subscribe) with
    a traceback; the line says what happened, the traceback only alarms."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


_MQTT_LOG = logging.getLogger("sorterd.archive.mqtt")
_MQTT_LOG.addFilter(_NoTraceback())


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    """Until `event` is set or `timeout_s` passed. Not asyncio.wait_for: on Python 3.11 it
    can swallow a cancellation that comes as the event is set, and a stop then hangs."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


class ArchiveConfigError(SorterdError):
    """The site config has no usable [archive] table."""


def archive_section(site: Site) -> ArchiveSection:
    section = site.config.archive
    if section is None:
        raise ArchiveConfigError(f"{site.path}: no [archive] table (docs/archive.md)")
    return section


def subscriptions(lines: list[str], *, shared: bool = True) -> list[str]:
    """The subscriptions of every line's decisions and results: shared ones when the broker
    has them (`[mqtt] shared_subscriptions`; NATS has not, docs/cluster.md: then every
    archiver gets every message, and the rows' keys drop the second copy)."""
    group = SHARE_GROUP if shared else ""
    return [f"{group}{line}/{kind}" for line in lines for kind in ("decisions", "results")]


def hub_prefix(lines: list[str]) -> str:
    """The first line's prefix without its last level: where the status goes."""
    head, _, _ = lines[0].rpartition("/")
    return head or lines[0]


@dataclass(slots=True)
class ArchiveStats:
    rows: int = 0  # committed and new
    duplicates: int = 0  # committed, already there (a redelivery)
    bad: int = 0  # not the contract's JSON: skipped
    expired: int = 0  # older than the retention: skipped
    batches: int = 0


@dataclass(slots=True)
class _Waiting:
    row: Row
    mid: int
    qos: int
    connection: int
    arrived: float  # monotonic


@dataclass(slots=True)
class _State:
    word: str = "starting"
    since: str = field(default_factory=lambda: iso(dt.datetime.now(dt.UTC)))
    lag_s: float = 0.0


def _mqtt_nodes(site: Site) -> MqttNodes:
    mqtt = site.config.mqtt
    return MqttNodes(
        mqtt.url,
        username=mqtt.username,
        password=mqtt.password,
        ca_file=mqtt.ca_file,
        cert_file=mqtt.cert_file,
        key_file=mqtt.key_file,
    )


def _mqtt_client(site: Site, nodes: MqttNodes, client_id: str, status_topic: str) -> aiomqtt.Client:
    """A client with a persistent session, acknowledging only when told (module docstring)."""
    offline = {"state": "offline", "archiver": client_id}
    client = nodes.client(
        identifier=client_id,
        clean_session=False,  # what arrives while we are away waits in the session
        keepalive=site.config.mqtt.keepalive_s,
        will=aiomqtt.Will(status_topic, json.dumps(offline), qos=1, retain=True),
        timeout=10,
        logger=_MQTT_LOG,
    )
    # See the module's docstring: PUBACK only once the row committed.
    client._client.manual_ack_set(True)
    client.pending_calls_threshold = 1000
    return client


class Archiver:
    """One archiver: an MQTT consumer, a batch writer, and its status."""

    def __init__(self, site: Site, *, client_id: str | None = None) -> None:
        self.site = site
        self.section = archive_section(site)
        self.client_id = (
            client_id or self.section.client_id or f"sorterd-archive-{socket.gethostname()}"
        )
        self.stats = ArchiveStats()
        self.status_topic = f"{hub_prefix(self.section.lines)}/archive/status"
        self._waiting: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._connection = 0  # which connection the client is: acks only go on their own
        self._state = _State()
        self._store = Store(self.section)
        self._stopping = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._stop_by = 0.0
        # Set once subscribed (the demo starts the line after it).
        self.ready = asyncio.Event()
        # A barcode it wrote: what `sorterd demo --archive` offers to trace.
        self.example_code: str | None = None

    # --- status -----------------------------------------------------------------------

    def _set_state(self, word: str) -> None:
        if word != self._state.word:
            log.info("archive state", state=word)
            self._state.word = word
            self._state.since = iso(dt.datetime.now(dt.UTC))
            self._state_changed.set()

    def lag_s(self) -> float:
        """How far behind the lines: the age of the oldest message not yet committed, else
        how old the last batch's oldest message was when it committed."""
        if self._waiting:
            oldest = self._waiting[0].row.ts
            return max(0.0, (dt.datetime.now(dt.UTC) - oldest).total_seconds())
        return self._state.lag_s

    def status(self) -> dict[str, object]:
        return {
            "state": self._state.word,
            "lag_s": round(self.lag_s(), 3),
            "rows": self.stats.rows,
            "since": self._state.since,
            "archiver": self.client_id,
            "waiting": len(self._waiting),
            "duplicates": self.stats.duplicates,
            "bad": self.stats.bad,
        }

    async def _publish_status(self, client: aiomqtt.Client) -> None:
        payload = json.dumps(self.status(), separators=(",", ":"))
        await client.publish(self.status_topic, payload, qos=1, retain=True, timeout=10)

    # --- the run --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect to the database (an error here is fatal: a wrong password, no server),
        then consume and write until `request_stop`."""
        version, dropped = await self._store.open()
        log.info("archive ready", schema_version=version, dropped=dropped, lines=self.section.lines)
        self._set_state("online")
        try:
            async with asyncio.TaskGroup() as tg:
                mqtt = tg.create_task(self._mqtt_loop(), name="archive-mqtt")
                await self._write_loop()
                mqtt.cancel()
        finally:
            await self._store.close()

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            self._stop_by = time.monotonic() + STOP_FLUSH_S
        self._stopping.set()
        self._arrived.set()

    def _give_up(self) -> bool:
        """Stopping, and the time to write what was received is over: what is left stays
        unacknowledged, and the broker sends it again to the next archiver of this id."""
        return self._stopping.is_set() and time.monotonic() > self._stop_by

    # --- MQTT -----------------------------------------------------------------------------

    async def _mqtt_loop(self) -> None:
        backoff = Backoff(0.1, 5.0)
        nodes = _mqtt_nodes(self.site)
        shared = self.site.config.mqtt.shares
        while True:
            shown = nodes.shown
            try:
                client = _mqtt_client(self.site, nodes, self.client_id, self.status_topic)
                async with client:
                    self._connection += 1
                    self._client = client
                    backoff.reset()
                    async with asyncio.TaskGroup() as tg:
                        # Receiving first: what waited in the session comes at once, before
                        # the SUBACKs, and a large backlog must not hold them up.
                        tg.create_task(self._receive(client, self._connection), name="receive")
                        for topic in subscriptions(self.section.lines, shared=shared):
                            await client.subscribe(topic, qos=1, timeout=SUBSCRIBE_TIMEOUT_S)
                        log.info("mqtt connected", url=shown, client_id=self.client_id)
                        self.ready.set()
                        tg.create_task(self._status_loop(client), name="archive-status")
            except* (aiomqtt.MqttError, OSError, ssl.SSLError) as group:
                reason = "; ".join(str(e) for e in group.exceptions)
                log.warning("mqtt connection lost", url=shown, error=reason)
                nodes.failed(reason)
            finally:
                self._client = None
            await asyncio.sleep(backoff.next_delay_s())

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        while True:
            self._state_changed.clear()
            await self._publish_status(client)
            # Every few seconds for the lag, at once when the state changes.
            await _wait(self._state_changed, STATUS_INTERVAL_S)

    async def _receive(self, client: aiomqtt.Client, connection: int) -> None:
        async for message in client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload).encode()
            try:
                row = parse_message(str(message.topic), data)
            except BadMessageError as exc:
                self.stats.bad += 1
                log.warning(
                    "message skipped", topic=str(message.topic), why=str(exc), bad=self.stats.bad
                )
                self._ack(message.mid, message.qos, connection)
                continue
            waiting = self._waiting
            waiting.append(_Waiting(row, message.mid, message.qos, connection, time.monotonic()))
            # The writer waits for the first row of a batch, then for a full one.
            if len(waiting) == 1 or len(waiting) >= self.section.batch_rows:
                self._arrived.set()

    def _ack(self, mid: int, qos: int, connection: int) -> None:
        client = self._client
        if qos == 0 or client is None or connection != self._connection:
            return  # QoS 0 wants none; another connection's mid means nothing here
        client._client.ack(mid, qos)

    # --- the database ---------------------------------------------------------------------

    async def _next_batch(self) -> list[_Waiting]:
        """Wait for a batch: batch_rows messages, or the oldest waited batch_wait_ms."""
        section = self.section
        while not self._waiting and not self._stopping.is_set():
            self._arrived.clear()
            await _wait(self._arrived, RETENTION_INTERVAL_S)
            if not self._waiting:
                return []
        if not self._waiting:
            return []
        deadline = self._waiting[0].arrived + section.batch_wait_ms / 1000
        while len(self._waiting) < section.batch_rows and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._arrived.clear()
            await _wait(self._arrived, left)
        return [self._waiting[i] for i in range(min(section.batch_rows, len(self._waiting)))]

    async def _write_loop(self) -> None:
        next_retention = time.monotonic() + RETENTION_INTERVAL_S
        while not (self._stopping.is_set() and (not self._waiting or self._give_up())):
            batch = await self._next_batch()
            if batch and not await self._commit(batch):
                break
            if time.monotonic() >= next_retention:
                next_retention = time.monotonic() + RETENTION_INTERVAL_S
                await self._store.retention()
        await self._say_offline()

    async def _commit(self, batch: list[_Waiting]) -> bool:
        """Write the batch until it commits (reconnecting as long as it takes), then ack;
        False when a stop came first."""
        cutoff = day_of(dt.datetime.now(dt.UTC)) - dt.timedelta(days=self.section.retention_days)
        rows = [w.row for w in batch if day_of(w.row.ts) >= cutoff]
        new = await self._store.write(rows, self._give_up, self._set_state) if rows else 0
        if new is None:
            return False
        self.stats.expired += len(batch) - len(rows)
        for _ in batch:
            self._waiting.popleft()
        for w in batch:
            self._ack(w.mid, w.qos, w.connection)
        self.stats.batches += 1
        self.stats.rows += new
        self.stats.duplicates += len(rows) - new
        if self.example_code is None:
            self.example_code = next((r.barcode for r in rows if r.barcode), None)
        if rows:
            self._state.lag_s = (dt.datetime.now(dt.UTC) - min(r.ts for r in rows)).total_seconds()
        return True

    async def _say_offline(self) -> None:
        self._set_state("offline")
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await self._publish_status(client)
        log.info("archive stopped", rows=self.stats.rows, waiting=len(self._waiting))


async def run_archive(site: Site, client_id: str | None, stop: asyncio.Event) -> int:
    """`sorterd archive`: until `stop` is set."""
    archiver = Archiver(site, client_id=client_id)
    runner = asyncio.create_task(archiver.run(), name="archiver")
    stopper = asyncio.create_task(stop.wait(), name="archive-stop")
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stopper in done:
        archiver.request_stop()
        await runner
    else:
        stopper.cancel()
        runner.result()
    return 0
