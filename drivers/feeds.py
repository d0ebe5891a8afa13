"""The live feeds' subscription (docs/interfaces.md section 7): QoS 1, a persistent session,
and each message acknowledged only once the daemon has applied and journaled it.

A connection of its own, beside the publisher's (drivers/mqtt.py): its session is
persistent (clean_session False, a stable client id), so the broker keeps what is published
while the daemon is down and sends it when it is back, and it holds what was delivered but
not acknowledged, which the broker sends again on the next connection. The command
subscription stays on the publisher's clean session: a chute command from hours ago must
not run at a restart.

aiomqtt 2.5 acknowledges a message on arrival and has no public manual acknowledgement
(its issue #345); paho-mqtt underneath has `manual_ack_set` and `ack`, reached here through
the aiomqtt client as that issue's workaround. Messages are taken in batches (every message
already received, up to `max_batch`) and handed to `handler`, which applies and journals
them; the batch is acknowledged when the handler says it is durable. A batch that is not
(the journal cannot write) is applied but never acknowledged: the broker still owes it, and
sends it again on the next connection. So the subscription then drops the connection and
connects again (after the backoff, which grows while batches keep failing): a broker sends
a client only so many un-acknowledged messages (mosquitto's max_inflight_messages, 20 by
default) and would otherwise send nothing more on this connection.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiomqtt
import structlog

from drivers.mqtt_nodes import MqttNodes
from sorter.backoff import Backoff

__all__ = [
    "MAX_AHEAD_BATCHES",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_MESSAGES",
    "NOT_DURABLE_REASON",
    "FeedHandler",
    "FeedLinkStats",
    "FeedMessage",
    "FeedSubscriber",
]

log = structlog.get_logger(__name__)

# Messages handled (and committed to the journal) together: every message already
# received, up to these. One disk sync for many small ones, and a batch grows while the
# handler is behind (a commit, its sync and the index pages it writes cost per batch, not
# per row: ~20 % of a row's cost at 30 messages of 100 rows). The handler gives the loop
# back between chunks of rows (sorterd/feeds.py).
MAX_BATCH_MESSAGES: Final = 256
MAX_BATCH_BYTES: Final = 1 << 20
# Batches handled and not yet acknowledged (still being applied) besides the one at hand.
MAX_AHEAD_BATCHES: Final = 1
# P/devices/feeds detail while the link reconnects for the broker to send again what was
# not acknowledged.
NOT_DURABLE_REASON: Final = "a batch could not be journaled: reconnecting for its re-delivery"


@dataclass(frozen=True, slots=True)
class FeedMessage:
    """One message as it arrived: `arrival_ns` is the wall clock when it came off the
    socket (the start of its apply lag)."""

    topic: str
    payload: bytes
    retained: bool
    arrival_ns: int


class FeedHandler(Protocol):
    async def __call__(self, batch: Sequence[FeedMessage]) -> bool | Awaitable[bool]:
        """Apply and journal `batch`; True when it is durable (then it is acknowledged).
        Or an awaitable of that, when the batch is durable and still being applied
        elsewhere (the daemon's index, from its feeds worker): the next batch already
        received is handled meanwhile, and this one acknowledged once it ends."""
        ...


@dataclass(slots=True)
class FeedLinkStats:
    received: int = 0
    acknowledged: int = 0
    not_acknowledged: int = 0  # applied, not durable: the broker sends them again
    connects: int = 0
    errors: int = 0
    redelivery_reconnects: int = 0  # connections dropped after a batch that was not durable


class FeedSubscriber:
    """Subscribes `topics` at QoS 1 in the persistent session `client_id`; reconnects with
    backoff, to the next node of a clustered broker (drivers/mqtt_nodes.py), which holds
    the same session. `url`, credentials and TLS files as for the publisher."""

    def __init__(
        self,
        url: str | Sequence[str],
        topics: Sequence[str],
        handler: FeedHandler,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 10,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        on_state: Callable[[bool, str], None] | None = None,
        max_batch: int = MAX_BATCH_MESSAGES,
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
        self.topics = tuple(topics)
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.handler = handler
        self.on_state = on_state
        self.max_batch = max_batch
        self.stats = FeedLinkStats()
        self.connected = False
        self.subscribed = False
        self.last_error: str | None = None
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        # The last connection ended after a batch that was not durable: the backoff grows
        # until a batch is durable again.
        self._redelivering = False

    @property
    def url(self) -> str:
        """The current node, no password (for logs)."""
        return self.nodes.shown

    def _client(self) -> aiomqtt.Client:
        client = self.nodes.client(
            identifier=self.client_id,
            clean_session=False,
            keepalive=self.keepalive_s,
            queue_type=_StampedQueue,
        )
        _paho(client).manual_ack_set(True)
        return client

    def _set_state(
        self, connected: bool, subscribed: bool, reason: str, *, force: bool = False
    ) -> None:
        changed = force or connected != self.connected or subscribed != self.subscribed
        self.connected, self.subscribed = connected, subscribed
        if changed:
            log.info("feeds link", url=self.url, connected=connected, subscribed=subscribed)
            if self.on_state is not None:
                self.on_state(connected and subscribed, reason)

    async def run(self) -> None:
        """Connect, subscribe and hand over messages until cancelled; reconnect with backoff."""
        while True:
            try:
                async with self._client() as client:
                    self.stats.connects += 1
                    self._set_state(True, False, "connected")
                    # Subscribed on every connect: a broker that lost the session (restarted
                    # without persistence) has forgotten the subscription.
                    refused = [
                        problem
                        for topic in self.topics
                        if (problem := _suback_problem(topic, await client.subscribe(topic, qos=1)))
                    ]
                    if refused:
                        # Not what the feeds need (a refused topic sends nothing, QoS 0 loses
                        # what arrives while the daemon is down): said on P/devices/feeds and
                        # in the log; what does arrive is still applied.
                        self.stats.errors += 1
                        self.last_error = "; ".join(refused)
                        log.error("feeds subscription refused", url=self.url, problems=refused)
                        self._set_state(True, False, self.last_error, force=True)
                    else:
                        self._set_state(True, True, "subscribed")
                    if not self._redelivering:
                        self._backoff.reset()
                    await self._receive(client)
                _raise_if_cancelled()
                # A batch was not durable: the connection is dropped, so that the broker
                # sends what was not acknowledged again on the next one.
                self.stats.redelivery_reconnects += 1
                log.warning("feeds reconnect for re-delivery", url=self.url)
                self._set_state(False, False, NOT_DURABLE_REASON)
            except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
                self.stats.errors += 1
                self.last_error = str(exc) or type(exc).__name__
                log.warning("feeds connection lost", url=self.url, error=self.last_error)
                self._set_state(False, False, self.last_error)
                self.nodes.failed(self.last_error)
            await asyncio.sleep(self._backoff.next_delay_s())

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Hand batches to the handler until one is not durable (then return: the caller
        reconnects) or the connection fails. While the handler's last batch is still being
        applied, the next one (if already received) is handled: the acknowledgements go
        in order, and none waits for a message that has not come."""
        queue = _queue(client)
        paho = _paho(client)
        ahead: deque[tuple[list[aiomqtt.Message], Awaitable[bool]]] = deque()
        async for first in client.messages:
            _read_waiting(paho, queue, self.max_batch)
            batch = [first]
            size = len(first.payload) if isinstance(first.payload, bytes) else 0
            while len(batch) < self.max_batch and size < MAX_BATCH_BYTES and not queue.empty():
                message = queue.get_nowait()
                batch.append(message)
                size += len(message.payload) if isinstance(message.payload, bytes) else 0
            self.stats.received += len(batch)
            messages = [
                FeedMessage(str(m.topic), _bytes(m.payload), bool(m.retain), _arrival_ns(m))
                for m in batch
            ]
            ahead.append((batch, await self._handle(messages)))
            # The oldest batch is settled (awaited, then acknowledged or not) when more than
            # MAX_AHEAD_BATCHES wait, and all are when nothing more has come: a PUBACK
            # must not wait for the next message (a broker's window of unacknowledged
            # messages would stop it sending).
            while ahead and (len(ahead) > MAX_AHEAD_BATCHES or queue.empty()):
                done, durable = ahead.popleft()
                if not self._settle(paho, done, await _outcome(durable, len(done))):
                    return
            # One batch, then the PLC's turn: a backlog after a restart must not hold the
            # loop for longer than one batch takes.
            await asyncio.sleep(0)

    async def _handle(self, messages: list[FeedMessage]) -> Awaitable[bool]:
        """The handler's answer for a batch, as an awaitable."""
        try:
            result = await self.handler(messages)
        except Exception:
            # A bug of ours, not the sender's (bad payloads are counted, not raised):
            # logged with its traceback; the batch stays unacknowledged, the line goes on.
            self.stats.errors += 1
            log.exception("feed handler failed", messages=len(messages))
            result = False
        if isinstance(result, bool):
            settled: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            settled.set_result(result)
            return settled
        return result

    def _settle(self, paho: Any, batch: list[aiomqtt.Message], durable: bool) -> bool:
        """Acknowledge a durable batch; False (the caller reconnects) when it is not."""
        if durable:
            for m in batch:
                if m.qos > 0:
                    paho.ack(m.mid, m.qos)
            self.stats.acknowledged += len(batch)
            if self._redelivering:
                self._redelivering = False
                self._backoff.reset()
            return True
        self.stats.not_acknowledged += len(batch)
        self._redelivering = True
        return False


async def _outcome(durable: Awaitable[bool], messages: int) -> bool:
    """Whether a batch the handler took is durable and applied (False when its
    application failed: a bug of ours, logged)."""
    try:
        return await durable
    except Exception:
        log.exception("feed handler failed", messages=messages)
        return False


_READS_PER_MESSAGE: Final = 4


def _read_waiting(paho: Any, queue: asyncio.Queue[aiomqtt.Message], limit: int) -> None:
    """Read what the socket already holds into the client's queue (each message stamped
    there: `_StampedQueue`), until `limit` messages wait or it holds no more. aiomqtt reads
    one packet per turn of the event loop: while the handler is busy, messages would wait
    in the socket's buffer, where their apply lag has not started (docs/feeds.md)."""
    sock = paho.socket()
    if sock is None:
        return
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    # A read takes one packet or a part of one (a message of megabytes takes many): bounded
    # in reads too, so that a stream of large messages is not all read in at once.
    for _ in range(_READS_PER_MESSAGE * limit):
        if queue.qsize() >= limit:
            return
        buffered = getattr(sock, "pending", None)  # TLS: decoded bytes not read yet
        if not poll.poll(0) and not (buffered is not None and buffered() > 0):
            return
        try:
            if paho.loop_read() != 0:  # not MQTT_ERR_SUCCESS: the link's own read says
                return
        except Exception:
            # The same error comes again in aiomqtt's own read, which ends the connection.
            return


def _suback_problem(topic: str, granted: Sequence[Any]) -> str | None:
    """What is wrong with a subscription's SUBACK codes (granted QoS, 128 and above a
    refusal; paho gives ints or ReasonCodes); None when QoS 1 or 2 was granted."""
    for code in granted:
        value = int(getattr(code, "value", code))
        if value >= 0x80:
            return f"the broker refused the subscription to {topic!r} (code {value})"
        if value < 1:
            return f"the broker granted {topic!r} QoS {value} only (QoS 1 is needed)"
    return None


def _raise_if_cancelled() -> None:
    """A cancel that came while aiomqtt waited for its clean disconnect: Python 3.11's
    asyncio.wait_for returns the finished result and drops the cancellation, and the loop
    would reconnect for ever under a caller waiting for it to end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _StampedQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's queue of received messages, each stamped with the wall clock when it came
    off the socket: the apply lag starts there, queueing included."""

    def put_nowait(self, item: aiomqtt.Message) -> None:
        item.arrival_ns = time.time_ns()  # type: ignore[attr-defined]
        super().put_nowait(item)


def _arrival_ns(message: aiomqtt.Message) -> int:
    stamp = getattr(message, "arrival_ns", None)
    return stamp if isinstance(stamp, int) else time.time_ns()


def _bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    return str(payload).encode()


def _paho(client: aiomqtt.Client) -> Any:
    """The paho-mqtt client inside aiomqtt's (aiomqtt issue #345's workaround)."""
    paho = getattr(client, "_client", None)
    if paho is None or not hasattr(paho, "manual_ack_set"):
        raise RuntimeError("this aiomqtt has no paho client with manual acknowledgement")
    return paho


def _queue(client: aiomqtt.Client) -> asyncio.Queue[aiomqtt.Message]:
    """aiomqtt's queue of received messages, drained in batches: its iterator makes a task
    per message."""
    queue: asyncio.Queue[aiomqtt.Message] = client._queue
    return queue
