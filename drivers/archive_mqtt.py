"""The archiver's MQTT session (docs/archive.md): a lean MQTT 3.1.1 client that receives a
backlog at tens of thousands of messages a second and acknowledges them when told.

Why not paho-mqtt (through aiomqtt) as every other client of the house: its receive path
costs about 22 us a message in Python even with the socket out of the way (a packet read in
three small reads into a dict, a message object, topic matching, callbacks under locks), and
4 us more for each PUBACK queued on its own; the archiver's whole budget at 20,000
messages/s is 50 us a message, writing to PostgreSQL included (BENCHMARKS.md, "The
archive"). This session cuts each read chunk into packets in one loop, hands the PUBLISH
packets over as a list, and writes the acknowledgements of a committed batch in one write.

What it does of MQTT 3.1.1, and nothing else: CONNECT (client id, clean session off, user
and password, a retained QoS 1 will), CONNACK, one SUBSCRIBE of several filters and its
SUBACK (a refused filter is an error), receiving PUBLISH at QoS 0 and 1, PUBACK when the
application says (`ack`), PUBLISH QoS 1 (the status) and its PUBACK, PINGREQ when idle, a
broker that stays silent past 1.5 keepalives is dropped, DISCONNECT at a clean stop. TLS
through asyncio's ssl. The archiver subscribes at QoS 1, so no QoS 2 PUBLISH comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sorter.errors import SorterdError

__all__ = ["Connect", "MqttSession", "MqttSessionError", "Received", "open_session"]

# (topic, payload, packet id, QoS) of one PUBLISH, the topic undecoded: the archiver decodes
# each distinct topic once.
Received = tuple[bytes, bytes, int, int]

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 1, 2, 3, 4
_SUBSCRIBE, _SUBACK, _PINGREQ, _PINGRESP, _DISCONNECT = 8, 9, 12, 13, 14
_CONNACK_REFUSED = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}
_MAX_LENGTH = 268_435_455  # the largest remaining length MQTT can say


class MqttSessionError(SorterdError):
    """The broker refused, broke the protocol, went silent, or the connection is gone."""


@dataclass(frozen=True, slots=True)
class Connect:
    """What the CONNECT packet says."""

    client_id: str
    keepalive_s: int
    username: str | None = None
    password: str | None = None
    will_topic: str | None = None
    will_payload: bytes = b""


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _text(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _length(len(body)) + body


def connect_packet(c: Connect) -> bytes:
    flags = 0x00  # clean session off: what arrives while away waits in the session
    payload = _text(c.client_id)
    if c.will_topic is not None:
        flags |= 0x04 | (1 << 3) | 0x20  # will, QoS 1, retained
        payload += _text(c.will_topic) + _text(c.will_payload)
    if c.username is not None:
        flags |= 0x80
        payload += _text(c.username)
        if c.password is not None:
            flags |= 0x40
            payload += _text(c.password)
    header = _text("MQTT") + bytes([4, flags]) + struct.pack("!H", c.keepalive_s)
    return _packet(_CONNECT << 4, header + payload)


class _Protocol(asyncio.Protocol):
    """Cuts what arrives into packets: PUBLISH go to `on_messages` by the chunk, the rest
    answer what the session waits for."""

    def __init__(self, on_messages: Callable[[list[Received]], None]) -> None:
        self.on_messages = on_messages
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.waiting: dict[tuple[int, int], asyncio.Future[bytes]] = {}
        self.last_in = time.monotonic()
        self._rest = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(MqttSessionError(f"connection lost: {exc}" if exc else "connection closed"))

    def fail(self, error: MqttSessionError) -> None:
        futures: list[asyncio.Future[Any]] = [self.connack, self.closed, *self.waiting.values()]
        for future in futures:
            if not future.done():
                future.set_exception(error)
            # Retrieved here so that a future nobody awaits any more logs nothing.
            if not future.cancelled():
                future.exception()
        self.waiting.clear()
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.last_in = time.monotonic()
        buf = self._rest + data if self._rest else data
        end = len(buf)
        pos = 0
        messages: list[Received] = []
        while end - pos >= 2:
            first = buf[pos]
            # The remaining length: 1 to 4 bytes, 7 bits each, low first.
            length = shift = 0
            at = pos + 1
            while at < end:
                byte = buf[at]
                at += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    self.fail(MqttSessionError("malformed packet length from the broker"))
                    return
            else:
                break  # the length is not all here yet
            head = at - pos
            stop = pos + head + length
            if stop > end:
                break
            if first >> 4 == _PUBLISH:
                start = pos + head
                topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
                qos = (first >> 1) & 0x03
                if qos:
                    mid = (buf[topic_end] << 8) | buf[topic_end + 1]
                    messages.append(
                        (buf[start + 2 : topic_end], buf[topic_end + 2 : stop], mid, qos)
                    )
                else:
                    messages.append((buf[start + 2 : topic_end], buf[topic_end:stop], 0, 0))
            else:
                self._control(first >> 4, buf[pos + head : stop])
            pos = stop
        self._rest = buf[pos:]
        if messages:
            self.on_messages(messages)

    def _control(self, kind: int, body: bytes) -> None:
        if kind == _CONNACK and len(body) == 2:
            if not self.connack.done():
                self.connack.set_result(body[1])
        elif kind in (_PUBACK, _SUBACK) and len(body) >= 2:
            future = self.waiting.pop((kind, (body[0] << 8) | body[1]), None)
            if future is not None and not future.done():
                future.set_result(body[2:])
        elif kind == _PINGRESP:
            pass  # last_in is what keepalive looks at
        else:
            self.fail(MqttSessionError(f"unexpected packet type {kind} from the broker"))


class MqttSession:
    """One connection to the broker; `closed` fails when it is gone."""

    def __init__(self, protocol: _Protocol, keepalive_s: int) -> None:
        self._protocol = protocol
        self._keepalive_s = keepalive_s
        self._next_id = 0
        self._last_out = time.monotonic()

    def _write(self, data: bytes) -> None:
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise MqttSessionError("connection closed")
        transport.write(data)
        self._last_out = time.monotonic()

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def _request(self, answer: int, first: int, body: bytes, timeout_s: float) -> bytes:
        mid = self._packet_id()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._protocol.waiting[(answer, mid)] = future
        self._write(_packet(first, struct.pack("!H", mid) + body))
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise MqttSessionError(f"no answer from the broker in {timeout_s:g} s") from None
        finally:
            self._protocol.waiting.pop((answer, mid), None)

    async def subscribe(self, topics: list[str], qos: int, timeout_s: float) -> None:
        body = b"".join(_text(t) + bytes([qos]) for t in topics)
        granted = await self._request(_SUBACK, (_SUBSCRIBE << 4) | 0x02, body, timeout_s)
        refused = [t for t, code in zip(topics, granted, strict=False) if code >= 0x80]
        if refused or len(granted) != len(topics):
            raise MqttSessionError(f"subscription refused by the broker: {', '.join(refused)}")

    async def publish(self, topic: str, payload: bytes, *, retain: bool, timeout_s: float) -> None:
        """At QoS 1: until the broker's PUBACK."""
        first = (_PUBLISH << 4) | (1 << 1) | (1 if retain else 0)
        mid = self._packet_id()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._protocol.waiting[(_PUBACK, mid)] = future
        self._write(_packet(first, _text(topic) + struct.pack("!H", mid) + payload))
        try:
            async with asyncio.timeout(timeout_s):
                await future
        except TimeoutError:
            raise MqttSessionError(f"no answer from the broker in {timeout_s:g} s") from None
        finally:
            self._protocol.waiting.pop((_PUBACK, mid), None)

    def ack(self, mids: Iterable[int]) -> None:
        """PUBACK these QoS 1 messages, in one write; nothing when the connection is gone
        (the broker sends them again on the next one)."""
        data = b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids)
        with contextlib.suppress(MqttSessionError):
            if data:
                self._write(data)

    async def closed(self) -> None:
        """Until the connection is gone: raises MqttSessionError saying why. Sends PINGREQ
        when nothing went out for half a keepalive; drops a broker silent for 1.5."""
        protocol = self._protocol
        interval_s = max(0.5, self._keepalive_s / 2)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await asyncio.shield(protocol.closed)
            now = time.monotonic()
            if now - protocol.last_in > 1.5 * self._keepalive_s:
                protocol.fail(MqttSessionError("the broker stopped answering (keepalive)"))
                continue
            if now - self._last_out >= interval_s:
                self._write(bytes([_PINGREQ << 4, 0]))

    def close(self) -> None:
        """DISCONNECT (the will is not sent) and close."""
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.write(bytes([_DISCONNECT << 4, 0]))
            transport.close()


async def open_session(
    host: str,
    port: int,
    connect: Connect,
    on_messages: Callable[[list[Received]], None],
    *,
    tls: ssl.SSLContext | None = None,
    timeout_s: float = 10.0,
) -> MqttSession:
    """Connect and wait for the CONNACK; MqttSessionError (or OSError) when it fails."""
    loop = asyncio.get_running_loop()
    protocol = _Protocol(on_messages)
    try:
        async with asyncio.timeout(timeout_s):
            await loop.create_connection(
                lambda: protocol, host, port, ssl=tls, server_hostname=host if tls else None
            )
            assert protocol.transport is not None
            protocol.transport.write(connect_packet(connect))
            code = await protocol.connack
    except TimeoutError:
        protocol.fail(MqttSessionError("no CONNACK"))
        raise MqttSessionError(f"no answer from the broker in {timeout_s:g} s") from None
    if code != 0:
        protocol.fail(MqttSessionError("refused"))
        raise MqttSessionError(
            f"connection refused by the broker: {_CONNACK_REFUSED.get(code, f'code {code}')}"
        )
    return MqttSession(protocol, connect.keepalive_s)
