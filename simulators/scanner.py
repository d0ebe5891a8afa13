"""A fixed-mount scanner on the other end of a real TCP socket and/or pty.

It speaks any telegram preset of docs/interfaces.md section 4 (`index` by default), with
the simulators' own encoder (simulators/telegrams.py), not the daemon's codec: the daemon
is tested against bytes it did not make. Like a real scanner it listens on TCP and sends
each telegram to whoever is connected at that moment: with nobody connected the
telegram is lost (counted in `dropped`), never queued for a later client. Over a pty the
bytes go to the tty buffer; the client (pyserial) flushes stale input when it opens the
device, as a real serial port behaves. Faults are injected with `send_raw`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tty
from collections.abc import Sequence
from typing import Final, Self

import structlog

from simulators.telegrams import TelegramEncoder, encoder_for
from sorter.telegram_options import TelegramOptions

__all__ = ["DEFAULT_MAX_BUFFER_BYTES", "ScannerSimulator"]

log = structlog.get_logger(__name__)

# A client that lets this much pile up in its send buffer is not reading: further telegrams
# are dropped for it rather than buffered without bound.
DEFAULT_MAX_BUFFER_BYTES: Final = 65536
_CLOSE_TIMEOUT_S: Final = 1.0


class _Link(asyncio.Protocol):
    """One outgoing byte stream: a TCP client (with an owner) or the pty master."""

    def __init__(self, owner: ScannerSimulator | None = None) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._owner is not None:
            self._owner._link_made(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._owner is not None:
            self._owner._link_lost(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        pass  # the daemon has nothing to say to a scanner in this preset

    def write(self, data: bytes, max_buffer_bytes: int) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > max_buffer_bytes:
            return False
        transport.write(data)
        return True

    def close(self) -> None:
        transport = self.transport
        if transport is None:
            return
        # Pending bytes would keep a stalled link open forever; a scanner switched off does
        # not finish its sentence either.
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()


async def _close_links(links: list[_Link]) -> None:
    """Close every link; abort those still open after `_CLOSE_TIMEOUT_S`."""
    for link in links:
        link.close()
    if not links:
        return
    _, pending = await asyncio.wait([link.lost for link in links], timeout=_CLOSE_TIMEOUT_S)
    for link in links:
        if not link.lost.done() and link.transport is not None:
            link.transport.abort()
    if pending:
        await asyncio.wait(pending, timeout=_CLOSE_TIMEOUT_S)


class ScannerSimulator:
    """Serves telegrams over TCP (`port`, 0 picks a free one) and/or a pty.

    `port=None` disables TCP; `pty=True` adds a pty whose device path is `pty_path` once
    started (a new path at every start). A restart keeps the TCP port first bound, so a
    client can reconnect to the same URL. `telegram_format`: a preset name (its default
    settings) or a preset's resolved settings (`sorter.telegram_options.resolve`).
    `heartbeat_interval_s` sends the preset's heartbeat periodically; a preset without
    one sends none, as the real scanner would not.
    """

    def __init__(
        self,
        name: str = "scanner-sim",
        *,
        host: str = "127.0.0.1",
        port: int | None = 0,
        pty: bool = False,
        heartbeat_interval_s: float | None = None,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        telegram_format: str | TelegramOptions = "index",
    ) -> None:
        if port is None and not pty:
            raise ValueError("enable TCP (port) or the pty, or both")
        if heartbeat_interval_s is not None and heartbeat_interval_s <= 0:
            raise ValueError("heartbeat_interval_s must be positive or None")
        self.format: TelegramEncoder = encoder_for(telegram_format)
        self._heartbeat = self.format.encode_heartbeat()
        self.name = name
        self.host = host
        self.heartbeat_interval_s = heartbeat_interval_s if self._heartbeat else None
        self.max_buffer_bytes = max_buffer_bytes
        self.sent = 0  # telegrams (or raw chunks) that reached at least one link
        self.dropped = 0  # ... that reached none
        self._port = port
        self._use_pty = pty
        self._server: asyncio.Server | None = None
        self._clients: set[_Link] = set()
        self._clients_changed = asyncio.Event()
        self._pty_link: _Link | None = None
        self._pty_slave_fd: int | None = None
        self._pty_path: str | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._log = log.bind(simulator=name)

    @property
    def running(self) -> bool:
        return self._server is not None or self._pty_link is not None

    @property
    def port(self) -> int | None:
        """The bound TCP port (after the first start), None without TCP."""
        return self._port

    @property
    def tcp_url(self) -> str:
        if self._port is None or self._port == 0:
            raise RuntimeError("TCP is disabled or the simulator was never started")
        return f"tcp://{self.host}:{self._port}"

    @property
    def pty_path(self) -> str | None:
        """The pty device to open as a serial port, while running with `pty=True`."""
        return self._pty_path

    @property
    def clients(self) -> int:
        """TCP clients connected now."""
        return len(self._clients)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.running:
            return
        try:
            if self._port is not None:
                await self._start_tcp()
            if self._use_pty:
                await self._start_pty()
        except BaseException:
            await self.stop()
            raise
        if self.heartbeat_interval_s is not None:
            self._heartbeat_task = asyncio.create_task(
                self._heartbeats(self.heartbeat_interval_s), name=f"{self.name}:heartbeat"
            )
        self._log.info("scanner simulator started", port=self._port, pty=self._pty_path)

    async def _start_tcp(self) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Link(self),
            self.host,
            self._port,
            reuse_address=True,  # restart on the same port despite TIME_WAIT sockets
        )
        self._server = server
        self._port = server.sockets[0].getsockname()[1]

    async def _start_pty(self) -> None:
        master_fd, slave_fd = os.openpty()
        try:
            # Raw: no echo, no CR/LF translation, no line buffering; STX/ETX pass untouched.
            tty.setraw(slave_fd)
            self._pty_path = os.ttyname(slave_fd)
            pipe = os.fdopen(master_fd, "wb", buffering=0)
        except BaseException:
            os.close(master_fd)
            os.close(slave_fd)
            raise
        # Holding the slave open keeps the pty (and its raw settings) alive between clients.
        self._pty_slave_fd = slave_fd
        link = _Link()
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_write_pipe(lambda: link, pipe)
        except BaseException:
            pipe.close()
            raise
        self._pty_link = link

    async def stop(self) -> None:
        """Stop serving and close every link; safe to call at any time, more than once."""
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # unlike `await task`, never swallows our own cancel
        links = list(self._clients)
        server, self._server = self._server, None
        if server is not None:
            server.close()
        pty_link, self._pty_link = self._pty_link, None
        if pty_link is not None:
            links.append(pty_link)
        await _close_links(links)
        if server is not None:
            await server.wait_closed()
        slave_fd, self._pty_slave_fd = self._pty_slave_fd, None
        if slave_fd is not None:
            os.close(slave_fd)
        self._pty_path = None
        if server is not None or pty_link is not None:
            self._log.info("scanner simulator stopped", sent=self.sent, dropped=self.dropped)

    def _link_made(self, link: _Link) -> None:
        if self._server is None and link.transport is not None:
            # Accepted just before stop() closed the server: refuse it like a dead scanner.
            link.transport.abort()
            return
        self._clients.add(link)
        self._clients_changed.set()

    def _link_lost(self, link: _Link) -> None:
        self._clients.discard(link)
        self._clients_changed.set()

    async def wait_for_clients(self, count: int = 1) -> None:
        """Return once at least `count` TCP clients are connected (bound it with a timeout)."""
        while len(self._clients) < count:
            self._clients_changed.clear()
            await self._clients_changed.wait()

    def send_read(self, tracking_id: int, codes: Sequence[str]) -> bool:
        """Send a read telegram; no codes sends the no-read. True if any link took it.

        The tracking id is left out for presets that carry none. TelegramEncodeError for a
        code the preset cannot carry.
        """
        carried = tracking_id if self.format.carries_tracking_id else None
        return self.send_raw(self.format.encode_read(carried, codes))

    @property
    def has_heartbeat(self) -> bool:
        """Whether the preset has a heartbeat telegram at all."""
        return self._heartbeat is not None

    def send_heartbeat(self) -> bool:
        """Send the preset's heartbeat; ValueError for a preset that has none."""
        if self._heartbeat is None:
            raise ValueError(f"telegram format {self.format.name} has no heartbeat")
        return self.send_raw(self._heartbeat)

    def send_raw(self, data: bytes) -> bool:
        """Send bytes as they are (garbage, cut frames, oversize frames: fault injection)."""
        links = list(self._clients)
        if self._pty_link is not None:
            links.append(self._pty_link)
        delivered = False
        for link in links:
            delivered = link.write(data, self.max_buffer_bytes) or delivered
        if delivered:
            self.sent += 1
        else:
            self.dropped += 1
        return delivered

    async def _heartbeats(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.send_heartbeat()
