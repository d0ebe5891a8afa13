"""`sorterd archive`: every decision and result of the hub's lines, from MQTT into PostgreSQL
(docs/archive.md, docs/interfaces.md section 8).

A message is acknowledged (PUBACK) only after the transaction holding its row committed:
until then the broker keeps it in this archiver's persistent session and sends it again
after a reconnect, so an outage of the broker, the database or the archiver delays rows and
never loses one. Rows are keyed by the message id, so the redelivery changes nothing.
The MQTT session is drivers/archive_mqtt.py (its docstring says why not paho-mqtt): it hands
over the messages of each chunk read, and the acknowledgements of a batch go in one write.
A message id (mid) belongs to one connection: acknowledgements of messages received on a
connection that has since gone are not sent (the broker sends those again).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from drivers.archive_db import day_of
from drivers.archive_mqtt import Connect, MqttSession, MqttSessionError, Received, open_session
from drivers.archive_rows import BadMessageError, iso, row_values, split_topic
from drivers.mqtt_nodes import MqttNodes
from sorter.backoff import Backoff
from sorter.config import ArchiveSection, Site
from sorter.errors import SorterdError
from sorterd.archive_store import Store

if TYPE_CHECKING:
    from collections.abc import Callable

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
# Batches written at once, each on its own connection: PostgreSQL's share of a row (the
# indexes, the conflict check) is most of its cost, and two server processes take it on
# two cores while the archiver receives (BENCHMARKS.md, "The archive"). Rows are inserted
# in id order, so two batches holding one redelivered message cannot deadlock.
WRITERS = 2
# A SUBACK comes after the messages that waited in the session: minutes of backlog.
SUBSCRIBE_TIMEOUT_S = 600.0
_TOPIC_CACHE_MAX = 10_000  # distinct topics remembered decoded (a hub has a few dozen)


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
    values: tuple[Any, ...]  # the row, as drivers.archive_rows.COLUMNS
    mid: int
    qos: int
    connection: int
    arrived: float  # monotonic

    @property
    def ts(self) -> dt.datetime:
        stamp: dt.datetime = self.values[1]
        return stamp


@dataclass(slots=True)
class _State:
    word: str = "starting"
    since: str = field(default_factory=lambda: iso(dt.datetime.now(dt.UTC)))
    lag_s: float = 0.0


async def _connect(
    site: Site,
    nodes: MqttNodes,
    client_id: str,
    status_topic: str,
    on_messages: Callable[[list[Received]], None],
) -> MqttSession:
    """A session to the current node of [mqtt] with a persistent session (module
    docstring)."""
    node = nodes.current
    offline = {"state": "offline", "archiver": client_id}
    connect = Connect(
        client_id=client_id,
        keepalive_s=site.config.mqtt.keepalive_s,
        username=nodes.username,
        password=nodes.password,
        will_topic=status_topic,
        will_payload=json.dumps(offline).encode(),
    )
    return await open_session(node.host, node.port, connect, on_messages, tls=nodes.tls_context())


class _Routes(dict[bytes, tuple[str, str] | None]):
    """topic -> (line, kind), None for a topic that is not a line's decisions or results:
    each distinct topic decoded once."""

    def __missing__(self, topic: bytes) -> tuple[str, str] | None:
        if len(self) >= _TOPIC_CACHE_MAX:
            self.clear()
        try:
            where = split_topic(topic.decode())
        except UnicodeDecodeError:
            where = None
        self[topic] = where
        return where


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
        self._session: MqttSession | None = None
        # Acknowledgements due on the connection being made: what waited in the session can
        # come in the CONNACK's read, before the session is known here.
        self._early_acks: list[tuple[int, int, int]] = []
        self._topics = _Routes()
        self._connection = 0  # which connection the client is: acks only go on their own
        self._state = _State()
        self._stores = [Store(self.section) for _ in range(WRITERS)]
        # Batches being written: their sizes and oldest message times, by batch.
        self._writing: dict[int, tuple[int, dt.datetime]] = {}
        self._next_retention = 0.0
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
        oldest = [ts for _, ts in self._writing.values()]
        if self._waiting:
            oldest.append(self._waiting[0].ts)
        if oldest:
            return max(0.0, (dt.datetime.now(dt.UTC) - min(oldest)).total_seconds())
        return self._state.lag_s

    def waiting(self) -> int:
        """Messages received and not yet committed."""
        return len(self._waiting) + sum(n for n, _ in self._writing.values())

    def status(self) -> dict[str, object]:
        return {
            "state": self._state.word,
            "lag_s": round(self.lag_s(), 3),
            "rows": self.stats.rows,
            "since": self._state.since,
            "archiver": self.client_id,
            "waiting": self.waiting(),
            "duplicates": self.stats.duplicates,
            "bad": self.stats.bad,
        }

    async def _publish_status(self, session: MqttSession) -> None:
        payload = json.dumps(self.status(), separators=(",", ":")).encode()
        await session.publish(self.status_topic, payload, retain=True, timeout_s=10)

    # --- the run --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect to the database (an error here is fatal: a wrong password, no server),
        then consume and write until `request_stop`."""
        try:
            for store in self._stores:
                version, dropped = await store.open()
                if store is self._stores[0]:
                    log.info(
                        "archive ready",
                        schema_version=version,
                        dropped=dropped,
                        lines=self.section.lines,
                    )
            self._set_state("online")
            async with asyncio.TaskGroup() as tg:
                mqtt = tg.create_task(self._mqtt_loop(), name="archive-mqtt")
                await self._write_loop()
                mqtt.cancel()
        finally:
            for store in self._stores:
                await store.close()

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
        nodes = MqttNodes.of(self.site.config.mqtt)  # the next node after a failure
        shared = self.site.config.mqtt.shares
        while True:
            shown = nodes.shown
            session = None
            try:
                # Messages are taken from the first byte on: what waited in the session
                # comes at once, before the SUBACK, and a large backlog must not wait.
                connection = self._connection + 1
                session = await _connect(
                    self.site, nodes, self.client_id, self.status_topic, self._receiver(connection)
                )
                self._connection = connection
                self._session = session
                early, self._early_acks = self._early_acks, []
                self._ack(early)
                backoff.reset()
                topics = subscriptions(self.section.lines, shared=shared)
                await session.subscribe(topics, qos=1, timeout_s=SUBSCRIBE_TIMEOUT_S)
                log.info("mqtt connected", url=shown, client_id=self.client_id)
                self.ready.set()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._status_loop(session), name="archive-status")
                    await session.closed()
            except* (MqttSessionError, OSError, ssl.SSLError) as group:
                reason = "; ".join(str(e) for e in group.exceptions)
                log.warning("mqtt connection lost", url=shown, error=reason)
                nodes.failed(reason)
            finally:
                self._session = None
                if session is not None:
                    session.close()
            await asyncio.sleep(backoff.next_delay_s())

    async def _status_loop(self, session: MqttSession) -> None:
        while True:
            self._state_changed.clear()
            await self._publish_status(session)
            # Every few seconds for the lag, at once when the state changes.
            await _wait(self._state_changed, STATUS_INTERVAL_S)

    def _receiver(self, connection: int) -> Callable[[list[Received]], None]:
        return lambda received: self._received(received, connection)

    def _received(self, received: list[Received], connection: int) -> None:
        """The messages of one chunk read: rows to write; bad ones counted, logged, acked."""
        waiting, topics = self._waiting, self._topics
        before = len(waiting)
        now = time.monotonic()
        for topic, payload, mid, qos in received:
            where = topics[topic]
            try:
                values = row_values(where[0], where[1], payload) if where else None
            except BadMessageError as exc:
                values, why = None, str(exc)
            else:
                why = "not a decisions or results topic"
            if values is None:
                self.stats.bad += 1
                shown = topic.decode(errors="replace")
                log.warning("message skipped", topic=shown, why=why, bad=self.stats.bad)
                self._ack([(mid, qos, connection)])
                continue
            waiting.append(_Waiting(values, mid, qos, connection, now))
        # The writer waits for the first row of a batch, then for a full one.
        if len(waiting) > before and (before == 0 or len(waiting) >= self.section.batch_rows):
            self._arrived.set()

    def _ack(self, acks: list[tuple[int, int, int]]) -> None:
        """PUBACK of (mid, qos, connection): in one write, only those of this connection
        (another connection's mid means nothing here) and of QoS 1; while connecting, those
        of the connection being made wait for it."""
        session = self._session
        if session is None:
            self._early_acks.extend(a for a in acks if a[2] > self._connection)
            return
        current = self._connection
        session.ack(mid for mid, qos, connection in acks if qos and connection == current)

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
        take = min(section.batch_rows, len(self._waiting))
        return [self._waiting.popleft() for _ in range(take)]

    async def _write_loop(self) -> None:
        """Batches to the free connections, each written and acknowledged on its own, until
        stopped and nothing is left (or the time to write it is over)."""
        free: asyncio.Queue[Store] = asyncio.Queue()
        for store in self._stores:
            free.put_nowait(store)
        # The first pass at once: it also fills in the codes of the days of an older schema,
        # one day a pass and the next pass right after, on one connection while the other
        # writes (drivers/archive_db.py).
        self._next_retention = time.monotonic()
        retention: asyncio.Task[None] | None = None
        async with asyncio.TaskGroup() as tg:
            while not (self._stopping.is_set() and (not self._waiting or self._give_up())):
                store = await free.get()
                if time.monotonic() >= self._next_retention and not self._stopping.is_set():
                    self._next_retention = float("inf")  # until this pass ends
                    retention = tg.create_task(self._retention(store, free))
                    continue
                batch = await self._next_batch()
                if batch:
                    tg.create_task(self._write(store, batch, free))
                else:
                    free.put_nowait(store)
            if retention is not None:
                retention.cancel()  # a day being filled in is filled in again next time
        await self._say_offline()

    async def _retention(self, store: Store, free: asyncio.Queue[Store]) -> None:
        more = await store.retention()
        self._next_retention = time.monotonic() + (0.0 if more else RETENTION_INTERVAL_S)
        free.put_nowait(store)
        self._arrived.set()  # the loop may wait for messages: the next pass is due now

    async def _write(self, store: Store, batch: list[_Waiting], free: asyncio.Queue[Store]) -> None:
        await self._commit(store, batch)
        free.put_nowait(store)

    async def _commit(self, store: Store, batch: list[_Waiting]) -> bool:
        """Write the batch until it commits (reconnecting as long as it takes), then ack;
        False when a stop came first."""
        first_day = day_of(dt.datetime.now(dt.UTC)) - dt.timedelta(days=self.section.retention_days)
        cutoff = dt.datetime(first_day.year, first_day.month, first_day.day, tzinfo=dt.UTC)
        rows = [w.values for w in batch if w.values[1] >= cutoff]
        key = id(batch)
        self._writing[key] = (len(batch), min(w.ts for w in batch))
        try:
            new = await store.write(rows, self._give_up, self._set_state) if rows else 0
        finally:
            del self._writing[key]
        if new is None:
            return False  # unacknowledged: the broker sends them again
        self.stats.expired += len(batch) - len(rows)
        self._ack([(w.mid, w.qos, w.connection) for w in batch])
        self.stats.batches += 1
        self.stats.rows += new
        self.stats.duplicates += len(rows) - new
        if self.example_code is None:
            self.example_code = next((r[6] for r in rows if r[6]), None)  # a barcode
        if rows:
            oldest = min(r[1] for r in rows)
            self._state.lag_s = (dt.datetime.now(dt.UTC) - oldest).total_seconds()
        return True

    async def _say_offline(self) -> None:
        self._set_state("offline")
        session = self._session
        if session is not None:
            with contextlib.suppress(MqttSessionError):
                await self._publish_status(session)
        log.info("archive stopped", rows=self.stats.rows, waiting=self.waiting())


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
