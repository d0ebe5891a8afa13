"""The feeds worker: the live hub feeds off the line's event loop (docs/feeds.md "The
feeds worker").

A child process of the daemon (multiprocessing, spawned) holds the feeds' subscription
(drivers/feeds.py), parses and checks every message (sorter/feeds.py), journals it in the
feeds journal (drivers/journal_feeds.py, a SQLite file of its own beside the line's
journal) and packs what applies (`sorter.feeds.FeedPacker`: key words, postcode and a
code word per row or customs decision). The packed update goes to the daemon over a
socket pair; the daemon's event loop merges it into the line's index
(`LiveManifest.apply_packed`, one numba call per few thousand entries) and answers; only
then does the worker acknowledge the messages to the broker: a row is durable and seen by
the decisions before its PUBACK. A replay at the start goes the same way, before the line
runs. The worker also reports the feeds' figures and the link's state.

What the line's loop does per batch is therefore a copy of the arrays and their merge
(~0.1-0.3 us an entry), not JSON, checks or SQLite (~17 us a row on one loop before).

The worker ends when the daemon does (the socket closes, also after a kill -9 of the
daemon); a worker that ends while the daemon runs is started again (with the index's
names of destinations, and a replay of the journal, which ends in the state the index
already has; what the dead worker had not acknowledged the broker sends again).

Frames on the socket: a 4-byte length, then a pickled tuple. Daemon -> worker:
("applied", seq), ("plan", names). Worker -> daemon: ("apply", seq, PackedUpdate),
("replayed", entries), ("figures", dict), ("state", connected, reason, errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from drivers.journal import Journal, JournalError
from sorter.backoff import Backoff
from sorter.config import Site, SiteConfig
from sorter.contract import feeds_figures
from sorter.errors import SorterdError
from sorter.feeds import FeedPacker, LiveManifest, PackedUpdate
from sorter.stats import FeedStats
from sorterd.feeds import FeedService, feed_subscriber

__all__ = [
    "APPLY_CHUNK_ENTRIES",
    "FRAME_ENTRIES",
    "FeedWorker",
    "WorkerSpec",
    "feeds_journal_path",
    "worker_main",
]

log = structlog.get_logger(__name__)

# Entries merged into the line's index per turn of its event loop (~0.5 ms).
APPLY_CHUNK_ENTRIES: Final = 2048
# Entries per frame on the socket: a large message's update is read and unpickled by the
# line's loop a frame at a time (~1 MB, ~1 ms).
FRAME_ENTRIES: Final = 16384
FIGURES_EVERY_S: Final = 0.5
START_TIMEOUT_S: Final = 120.0  # spawn, imports and the replay of a day's journal
JOURNAL_BUSY_S: Final = 10.0  # a worker of a killed daemon may still hold the file briefly
STOP_WAIT_S: Final = 3.0
WORKER_NICE: Final = 5  # added to the worker's niceness
_FRAME: Final = struct.Struct("!I")


def feeds_journal_path(journal_path: Path) -> Path:
    """The feeds journal beside the line's: journal.sqlite -> journal.feeds.sqlite."""
    return journal_path.with_name(f"{journal_path.stem}.feeds{journal_path.suffix}")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the worker process needs (pickled to it)."""

    config: SiteConfig
    journal_path: Path
    destinations: tuple[str, ...]
    known: tuple[str, ...]  # the index's destination names (a restarted worker goes on)


class _Channel:
    """Length-prefixed pickles over a stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, message: tuple[Any, ...]) -> None:
        if self.writer.is_closing():
            return
        data = pickle.dumps(message, protocol=5)
        self.writer.write(_FRAME.pack(len(data)) + data)

    async def receive(self) -> tuple[Any, ...] | None:
        """The next message; None once the other end has closed."""
        try:
            (size,) = _FRAME.unpack(await self.reader.readexactly(_FRAME.size))
            message = pickle.loads(await self.reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return message  # type: ignore[no-any-return]

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.close()


# --- the daemon's side ------------------------------------------------------------------


class FeedWorker:
    """Starts the worker process, merges what it sends into `live`, and starts it again if
    it ends. `on_state(connected, reason)`: the link's state for P/devices/feeds."""

    def __init__(
        self, site: Site, live: LiveManifest, on_state: Callable[[bool, str], None]
    ) -> None:
        self.site = site
        self.live = live
        self.on_state = on_state
        self.link_errors = 0
        self.restarts = 0
        self._figures: dict[str, Any] = feeds_figures(FeedStats(), 0)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._channel: _Channel | None = None
        self._backoff = Backoff(0.5, 10.0)
        live.on_destinations = self._send_plan

    def _send_plan(self, names: tuple[str, ...]) -> None:
        if self._channel is not None:
            self._channel.send(("plan", names))

    def figures(self) -> dict[str, Any]:
        """P/stats `feeds`: the worker's counts, the index's delta size."""
        return {**self._figures, "delta_rows": self.live.delta_rows}

    async def start(self) -> int:
        """Spawn the worker and apply its replay of the journal; the entries replayed."""
        cfg = self.site.config
        self.live.reserve(cfg.feeds.expected_rows)
        spec = WorkerSpec(
            cfg,
            feeds_journal_path(self.site.journal_path),
            self.live.destinations,
            self.live.known_names,
        )
        ours, theirs = socket.socketpair()
        process = multiprocessing.get_context("spawn").Process(
            target=worker_main, args=(spec, theirs), name="sorterd-feeds", daemon=True
        )
        process.start()
        theirs.close()
        self._process = process
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 20)
        self._channel = _Channel(reader, writer)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    message = await self._channel.receive()
                    if message is None:
                        raise SorterdError("the feeds worker ended at its start (see its log)")
                    if message[0] == "replayed":
                        return int(message[1])
                    await self._handle(message)
        except TimeoutError:
            raise SorterdError(
                f"the feeds worker did not start within {START_TIMEOUT_S:.0f} s"
            ) from None

    async def run(self) -> None:
        """Serve the worker until cancelled; one that ends is started again."""
        while True:
            channel = self._channel
            while channel is not None and (message := await channel.receive()) is not None:
                await self._handle(message)
            await self._reap()
            self.restarts += 1
            log.error("feeds worker ended: starting it again", restarts=self.restarts)
            self.on_state(False, "feeds worker ended: starting it again")
            await asyncio.sleep(self._backoff.next_delay_s())
            with contextlib.suppress(SorterdError, OSError):
                entries = await self.start()
                log.info("feeds worker started again", replayed=entries)
                self._backoff.reset()

    async def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "apply":
            _, seq, update = message
            await self._apply(update)
            if self._channel is not None:
                self._channel.send(("applied", seq))
        elif kind == "figures":
            self._figures = message[1]
        elif kind == "state":
            _, connected, reason, errors = message
            self.link_errors = errors
            self.on_state(connected, reason)

    async def _apply(self, update: PackedUpdate) -> None:
        """Merge an update, APPLY_CHUNK_ENTRIES at a time, the loop's turn in between: a
        decision never sees half an entry (it may see half of a large message)."""
        for start in range(0, update.size, APPLY_CHUNK_ENTRIES):
            if start:
                await asyncio.sleep(0)
            self.live.apply_packed(update, start, min(start + APPLY_CHUNK_ENTRIES, update.size))

    async def _reap(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        process, self._process = self._process, None
        if process is None:
            return
        await asyncio.to_thread(process.join, STOP_WAIT_S)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, STOP_WAIT_S)

    async def stop(self) -> None:
        """Close the socket (the worker ends) and wait for the process."""
        await self._reap()


# --- the worker's side ------------------------------------------------------------------


class _ParentGoneError(Exception):
    """The daemon closed the socket (it stopped, or was killed)."""


def worker_main(spec: WorkerSpec, sock: socket.socket) -> None:
    """The worker process's entry point."""
    from sorterd.logs import setup_logging  # noqa: PLC0415 (the child configures its own)

    setup_logging()
    # The PLC's replies come first: on a machine short of cores the worker waits, the line
    # does not (the feeds' lag grows instead; P/stats shows it).
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICE)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(spec, sock))


async def _open_journal(path: Path, synchronous: str) -> Journal:
    deadline = time.monotonic() + JOURNAL_BUSY_S
    while True:
        try:
            return Journal(path, synchronous=synchronous)
        except JournalError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.1)


class _Worker:
    """The worker's end of the socket: hands packed updates over and waits for them."""

    def __init__(self, channel: _Channel, packer: FeedPacker) -> None:
        self.channel = channel
        self.packer = packer
        self.link_errors: Callable[[], int] = lambda: 0
        self._seq = 0
        self._waiting: dict[int, asyncio.Future[None]] = {}

    async def apply(self, update: PackedUpdate) -> None:
        """The FeedService's sink: returns once the daemon has merged `update`."""
        waiting: list[asyncio.Future[None]] = []
        for start in range(0, update.size, FRAME_ENTRIES):
            self._seq += 1
            done = asyncio.get_running_loop().create_future()
            self._waiting[self._seq] = done
            waiting.append(done)
            part = update.part(start, min(start + FRAME_ENTRIES, update.size))
            self.channel.send(("apply", self._seq, part))
        for done in waiting:
            await done

    def on_state(self, connected: bool, reason: str) -> None:
        self.channel.send(("state", connected, reason, self.link_errors()))

    async def read(self) -> None:
        """The daemon's answers and plan changes, until it closes the socket."""
        while (message := await self.channel.receive()) is not None:
            if message[0] == "applied":
                done = self._waiting.pop(message[1], None)
                if done is not None and not done.done():
                    done.set_result(None)
            elif message[0] == "plan":
                self.packer.set_destinations(message[1])
        raise _ParentGoneError


async def _report(channel: _Channel, service: FeedService) -> None:
    while True:
        await asyncio.sleep(FIGURES_EVERY_S)
        channel.send(("figures", service.figures()))


async def _serve(spec: WorkerSpec, sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
    channel = _Channel(reader, writer)
    cfg = spec.config
    journal = await _open_journal(spec.journal_path, cfg.journal.synchronous)
    packer = FeedPacker(spec.destinations, known=spec.known)
    worker = _Worker(channel, packer)
    service = FeedService(cfg.feeds, journal, packer, sink=worker.apply)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(worker.read())
            t0 = time.perf_counter()
            entries = await service.replay_to_sink()
            log.info("feeds replayed", entries=entries, ms=round((time.perf_counter() - t0) * 1e3))
            channel.send(("figures", service.figures()))
            channel.send(("replayed", entries))
            link = feed_subscriber(cfg, service, worker.on_state)
            worker.link_errors = lambda: link.stats.errors
            group.create_task(link.run())
            group.create_task(service.upkeep())
            group.create_task(_report(channel, service))
    except* _ParentGoneError:
        pass
    finally:
        journal.close()
        log.info("feeds worker stopped", pid=os.getpid())
