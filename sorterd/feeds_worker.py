"""The feeds worker: the live hub feeds off the line's event loop (docs/feeds.md "The
feeds worker").

A child process of the daemon (multiprocessing, spawned) holds the feeds' subscription
(drivers/feeds.py), parses and checks every message (sorter/feeds.py), journals it in the
feeds journal (drivers/journal_feeds.py, a SQLite file of its own beside the line's
journal) and packs what applies (`sorter.feeds.FeedPacker`: key words, postcode and a
code word per row or customs decision). The packed update goes to the daemon over a
socket pair; the daemon's event loop merges it into the line's index
(`LiveManifest.apply_packed`, one numba call per 2,048 entries) and answers; only then
does the worker acknowledge the messages to the broker: a row is durable and seen by the
decisions before its PUBACK. The worker also reports the feeds' figures and the link's
state.

At the start the daemon spawns the worker before anything else (its imports take a
second or more) and replays the feeds journal into its index itself (a read-only
connection, before the line runs: the worker writes nothing before the daemon's first
message); once the worker holds the journal's lock it says `ready`, the daemon merges what
was journaled after its replay or after the last update it merged (`FeedWorker._catch_up`),
and its answer gives the plan's names and the index's list of destination names; the
worker reads the journal back for its ids and counts.

What the line's loop does per batch is therefore a copy of the arrays and their merge
(~0.1-0.3 us an entry), not JSON, checks or SQLite (~17 us a row on one loop before).

The worker ends when the daemon does (the socket closes, also after a kill -9 of the
daemon); a worker that ends while the daemon runs is started again (the index merges what
the dead worker journaled and it lacks; what that worker had not acknowledged the broker
sends again).

Frames on the socket: a 4-byte length, then a pickled tuple. Daemon -> worker:
("start", plan names, known destination names), ("applied", seq), ("plan", names).
Worker -> daemon: ("ready",), ("apply", seq, PackedUpdate, journal seq on an update's last
frame else None), ("figures", dict), ("state", connected, reason, errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import pickle
import socket
import sqlite3
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from drivers.journal import Journal, JournalError
from drivers.journal_feeds import adopt_line_feeds, counts_file, replay_file
from sorter.backoff import Backoff
from sorter.config import Site, SiteConfig
from sorter.contract import feeds_figures
from sorter.errors import SorterdError
from sorter.feeds import FeedBatch, FeedPacker, LiveManifest, PackedUpdate
from sorter.stats import FeedStats
from sorterd.feeds import FeedService, feed_subscriber

__all__ = [
    "APPLY_CHUNK_ENTRIES",
    "FRAME_ENTRIES",
    "WORKER_GC_THRESHOLD",
    "FeedWorker",
    "Spawned",
    "WorkerSpec",
    "adopt_old_feeds",
    "feeds_journal_path",
    "spawn_worker",
    "worker_main",
]

log = structlog.get_logger(__name__)

# Entries merged into the line's index per turn of its event loop (~0.5 ms).
APPLY_CHUNK_ENTRIES: Final = 2048
# Entries per frame on the socket: a large message's update is read and unpickled by the
# line's loop a frame at a time (~1 MB, ~1 ms).
FRAME_ENTRIES: Final = 16384
FIGURES_EVERY_S: Final = 0.5
JOURNAL_BUSY_S: Final = 10.0  # a worker of a killed daemon may still hold the file briefly
STOP_WAIT_S: Final = 3.0
WORKER_NICE: Final = 5  # added to the worker's niceness
WORKER_GC_THRESHOLD: Final = (50_000, 20, 20)  # gc.set_threshold in the worker
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
    log_level: str = "info"  # the daemon's


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

Spawned = tuple[multiprocessing.process.BaseProcess, socket.socket]


def _log_level() -> str:
    """The level the daemon logs at (sorterd/logs.py), for its worker to log at too."""
    wrapper = structlog.get_config()["wrapper_class"]
    try:  # a filtering bound logger's class method (it does not read `self`)
        level = wrapper.get_effective_level(None)
    except (AttributeError, TypeError):
        level = logging.INFO
    names = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}
    return names.get(level, "info") if isinstance(level, int) else "info"


def adopt_old_feeds(site: Site) -> int:
    """At the daemon's start, before its worker: the feed entries an earlier sorterd kept
    in the line's journal, into the feeds journal when it has never been used
    (drivers.journal_feeds.adopt_line_feeds; docs/feeds.md). The entries adopted."""
    path = feeds_journal_path(site.journal_path)

    def open_journal() -> Journal:
        deadline = time.monotonic() + JOURNAL_BUSY_S
        while True:
            try:
                return Journal(path, synchronous=site.config.journal.synchronous)
            except JournalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    adopted = adopt_line_feeds(site.journal_path, path, open_journal)
    if adopted:
        log.warning("feeds journal: entries of the line's journal adopted", entries=adopted)
    return adopted


def spawn_worker(site: Site, destinations: Sequence[str], known: Sequence[str]) -> Spawned:
    """A worker process for the site's feeds and the daemon's end of its socket. The
    daemon starts it before anything else (its imports take a second or more), with the
    plan's names still unknown: they come first on the socket (`FeedWorker.start`)."""
    spec = WorkerSpec(
        site.config,
        feeds_journal_path(site.journal_path),
        tuple(destinations),
        tuple(known),
        _log_level(),
    )
    ours, theirs = socket.socketpair()
    process = multiprocessing.get_context("spawn").Process(
        target=worker_main, args=(spec, theirs), name="sorterd-feeds", daemon=True
    )
    process.start()
    theirs.close()
    return process, ours


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
        self.connected = False  # the worker's link is up and subscribed
        self.subscribed = asyncio.Event()  # it has been, once
        self.restarts = 0
        self._figures: dict[str, Any] = feeds_figures(FeedStats(), 0)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._channel: _Channel | None = None
        self._socket: socket.socket | None = None  # ours, until `start` reads it
        self._backoff = Backoff(0.5, 10.0)
        # The journal's seq up to which every entry is in the index: what a worker that
        # ends had journaled after it is read back from the journal (`_catch_up`).
        self._merged_seq = 0
        live.on_destinations = self._send_plan

    def _send_plan(self, names: tuple[str, ...]) -> None:
        if self._channel is not None:
            self._channel.send(("plan", names))

    def figures(self) -> dict[str, Any]:
        """P/stats `feeds`: the worker's counts, the index's delta size."""
        return {**self._figures, "delta_rows": self.live.delta_rows}

    def spawn(self, early: Spawned | None = None) -> None:
        """Start the worker process (or take one `spawn_worker` started before the daemon
        had its plan): its imports and journal opening overlap the daemon's own start;
        `start` waits for its replay."""
        if self._process is not None:
            return
        if early is None:
            early = spawn_worker(self.site, self.live.destinations, self.live.known_names)
        self._process, self._socket = early

    async def start(self, *, replay: bool = True) -> int:
        """The journal's entries replayed into the index (`replay`: at the daemon's start,
        before the line runs; read here, beside the worker, which writes nothing before the
        daemon's first message), then the worker's socket taken. Once the worker holds the
        journal's lock it says `ready`: the daemon reads back what was journaled after this
        replay (a worker of a killed daemon committing as it ended) or after the last update
        merged (a worker that ended), then tells it the plan's names and the index's names
        of destinations, which it goes on from (`_handle`). The entries replayed."""
        entries = self._replay() if replay else 0
        self.spawn()
        assert self._socket is not None
        reader, writer = await asyncio.open_unix_connection(sock=self._socket, limit=1 << 20)
        self._socket = None
        self._channel = _Channel(reader, writer)
        # The plan's names and the index's go once the worker is ready (`_handle`).
        return entries

    def _replay(self) -> int:
        live = self.live
        live.reserve(self.site.config.feeds.expected_rows)
        entries = 0
        path = feeds_journal_path(self.site.journal_path)
        counts: dict[str, int] = {}
        try:
            for run in replay_file(path):
                live.apply(run.batch, run.arrival_ns, replay=True)
                entries += len(run.batch.rows) + len(run.batch.customs)
                self._merged_seq = run.seq
            counts = counts_file(path)
        except sqlite3.Error as exc:
            # Damaged (the worker sets it aside and starts a new one, as for the line's
            # journal), or not readable beside its writer: the rest is read once the worker
            # is ready (`_catch_up`, from the last entry read here).
            log.error("feeds journal not read at the start", path=str(path), error=str(exc))  # noqa: TRY400 (no traceback)
        # P/stats until the worker reports: the counts go on from the journal's.
        stats = FeedStats(replayed=entries)
        stats.rows_applied = counts.get("rows_applied", 0)
        stats.customs_applied = counts.get("customs_applied", 0)
        self._figures = feeds_figures(stats, 0)
        # The ids are the worker's to remember: the index's own packer starts afresh.
        live.packer = FeedPacker(live.destinations, known=live.known_names)
        return entries

    async def _catch_up(self) -> int:
        """The entries a worker that ended had journaled after the last update the index
        merged (it died between its commit and the merge, or between two frames of an
        update): read back from the journal, in order, before the next worker goes on. The
        broker sends their messages again, and the new worker skips their ids: without
        this the line would not have them until the daemon's next start. Entries of a
        partly merged update are merged again (the same entries in the same order: the
        same state). APPLY_CHUNK_ENTRIES at a time, the loop's turn in between (a large
        message's rows may be among them)."""
        live = self.live
        # The index's packer goes on from the index's names (the worker's updates added to them).
        live.packer = FeedPacker(live.destinations, known=live.known_names)
        entries = 0
        try:
            for run in replay_file(feeds_journal_path(self.site.journal_path), self._merged_seq):
                rows, customs = run.batch.rows, run.batch.customs
                for i in range(0, len(rows) + len(customs), APPLY_CHUNK_ENTRIES):
                    part = FeedBatch(
                        rows[i : i + APPLY_CHUNK_ENTRIES],
                        customs[
                            max(0, i - len(rows)) : max(0, i + APPLY_CHUNK_ENTRIES - len(rows))
                        ],
                    )
                    live.apply(part, run.arrival_ns, replay=True)
                    await asyncio.sleep(0)
                entries += len(rows) + len(customs)
                self._merged_seq = run.seq
        except sqlite3.Error as exc:
            log.error("feeds journal not read back", error=str(exc))  # noqa: TRY400 (no traceback)
        live.packer = FeedPacker(live.destinations, known=live.known_names)
        if entries:
            log.warning("feeds entries journaled by the ended worker merged", entries=entries)
        return entries

    async def run(self) -> None:
        """Serve the worker until cancelled; one that ends is started again."""
        while True:
            channel = self._channel
            while channel is not None and (message := await channel.receive()) is not None:
                await self._handle(message)
            await self._reap()
            self.restarts += 1
            self.connected = False
            log.error("feeds worker ended: starting it again", restarts=self.restarts)
            self.on_state(False, "feeds worker ended: starting it again")
            await asyncio.sleep(self._backoff.next_delay_s())
            with contextlib.suppress(OSError):
                # The index has every entry (`_catch_up`); the new worker reads its ids back.
                await self.start(replay=False)
                log.info("feeds worker started again")
                self._backoff.reset()

    async def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            # The worker holds the journal's lock: no other process writes it (a worker of
            # a killed daemon has ended). What is journaled and not merged comes first;
            # then the worker goes on from the index's names.
            await self._catch_up()
            if self._channel is not None:
                self._channel.send(("start", self.live.destinations, self.live.known_names))
        elif kind == "apply":
            _, seq, update, journal_seq = message
            await self._apply(update)
            if journal_seq is not None:  # the update's last frame: all of it is merged
                self._merged_seq = journal_seq
            if self._channel is not None:
                self._channel.send(("applied", seq))
        elif kind == "figures":
            self._figures = message[1]
        elif kind == "state":
            _, connected, reason, errors = message
            self.link_errors, self.connected = errors, connected
            if connected:
                self.subscribed.set()
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
        if self._socket is not None:
            self._socket.close()
            self._socket = None
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

    setup_logging(level=spec.log_level)
    # Each feed row makes a few short-lived objects (~15 a row, 50,000 rows a second): the
    # collector's default (a pass every 700 allocations) ran ~1,000 times a second here.
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    # The PLC's replies come first: on a machine short of cores the worker waits, the line
    # does not (the feeds' lag grows instead; P/stats shows it).
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICE)
    try:
        asyncio.run(_serve(spec, sock))
    except KeyboardInterrupt:
        pass
    except SorterdError as exc:  # the feeds journal cannot be opened: the set-up's problem
        log.error("feeds worker cannot run", error=str(exc))  # noqa: TRY400 (no traceback)


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
        # The journal's newest seq (FeedStore.last_seq): sent with each update's last frame.
        self.journal_seq: Callable[[], int | None] = lambda: None
        # The daemon's first message: the plan's names and the index's destination names.
        self.started: asyncio.Future[tuple[tuple[str, ...], tuple[str, ...]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._seq = 0
        self._waiting: dict[int, asyncio.Future[None]] = {}

    def apply(self, update: PackedUpdate) -> asyncio.Future[list[None]]:
        """The FeedService's sink: `update` sent now (after what was sent before); the
        future ends once the daemon has merged it."""
        waiting: list[asyncio.Future[None]] = []
        # Every entry journaled up to it is in this update or an earlier one (an entry is
        # packed before it is journaled; the packer's updates go out in order).
        journal_seq = self.journal_seq()
        for start in range(0, update.size, FRAME_ENTRIES):
            self._seq += 1
            done = asyncio.get_running_loop().create_future()
            self._waiting[self._seq] = done
            waiting.append(done)
            stop = min(start + FRAME_ENTRIES, update.size)
            last = journal_seq if stop == update.size else None
            self.channel.send(("apply", self._seq, update.part(start, stop), last))
        return asyncio.gather(*waiting)

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
            elif message[0] == "start" and not self.started.done():
                self.started.set_result((message[1], message[2]))
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
    channel.send(("ready",))  # the daemon reads back what is journaled and not merged
    packer = FeedPacker(spec.destinations, known=spec.known)
    worker = _Worker(channel, packer)
    service = FeedService(cfg.feeds, journal, packer, sink=worker.apply)
    worker.journal_seq = service.store.last_seq
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(worker.read())
            # The ids and counts back from the journal (the daemon applies its entries itself).
            t0 = time.perf_counter()
            entries = service.replay()
            # What stays for the worker's life (modules, the ids replayed) is not looked at
            # again by every full collection.
            gc.freeze()
            log.info(
                "feeds ids replayed", entries=entries, ms=round((time.perf_counter() - t0) * 1e3)
            )
            destinations, known = await worker.started
            packer.set_destinations(destinations)
            packer.adopt_known(known)
            channel.send(("figures", service.figures()))
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
