"""The feeds worker process (sorterd/feeds_worker.py) under the daemon's `FeedWorker`, with
real spawned processes and a real feeds journal: what the worker made durable and the line
has not merged when the worker dies (or when the worker of a killed daemon commits as it
ends) is merged before the next worker goes on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from drivers.broker import free_port
from drivers.feeds import FeedMessage
from drivers.journal import Journal
from drivers.journal_feeds import FeedStore
from drivers.journal_file import take_lock
from sorter.config import load_site
from sorter.feeds import LiveManifest, Source
from sorter.plan import load_plan
from sorterd.demo import write_site
from sorterd.feeds import FeedService
from sorterd.feeds_worker import FeedWorker, adopt_old_feeds, feeds_journal_path
from tests.linekit import PLAN_PATH
from tests.waiting import wait_until


def _site(folder: Path) -> Path:
    # No broker on the port: the worker keeps trying to subscribe; nothing else is needed.
    return write_site(
        folder,
        plc_port=free_port(),
        scanner_port=free_port(),
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",
        plan=PLAN_PATH,
        prefix="test/worker",
        feeds=("test/hub/preadvice", "test/hub/customs"),
    )


def _committed_not_sent(journal: Path, barcode: str, destination: str, entry_id: str) -> None:
    """What a worker leaves that committed a batch and died before its packed update
    reached the daemon: the entry in the journal, its id claimed."""
    with sqlite3.connect(journal, timeout=10) as db:
        seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM feed").fetchone()[0]
        db.execute(
            "INSERT INTO feed (seq, kind, barcode, destination, id, arrival_ns)"
            " VALUES (?, 0, ?, ?, ?, ?)",
            (seq, barcode, destination, entry_id, time.time_ns()),
        )
        db.execute("INSERT INTO feed_id VALUES (?, ?)", (entry_id, seq))
    db.close()


async def test_what_a_dead_worker_journaled_and_the_line_lacks_is_merged(tmp_path: Path) -> None:
    site = load_site(_site(tmp_path), env={})
    names = [d.name for d in load_plan(PLAN_PATH).destinations]
    live = LiveManifest(None, names)
    worker = FeedWorker(site, live, lambda _connected, _reason: None)
    await worker.start()
    running = asyncio.create_task(worker.run())
    try:
        journal = feeds_journal_path(site.journal_path)
        # The worker has opened (made) its journal and read it back.
        await wait_until(lambda: worker.figures().get("replayed") == 0 and journal.exists(), 60)
        await wait_until(lambda: _has_feed_table(journal), 60, what="the feed tables")
        _committed_not_sent(journal, "LOST000001", names[0], "lost-1")
        process = worker._process
        assert process is not None
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        await wait_until(lambda: worker.restarts >= 1, 60, what="the worker started again")
        # The broker sends "lost-1" again (not acknowledged): the new worker finds its id in
        # the journal and skips it, so the line must have it from the journal.
        await wait_until(
            lambda: live.lookup_source("LOST000001")[0] is not None,
            60,
            what="a journaled entry the line never merged",
        )
        row, _source = live.lookup_source("LOST000001")
        assert row is not None
        assert names[row.destination] == names[0]
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.stop()


def _has_feed_table(journal: Path) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
            # The last table the schema makes (drivers/journal_feeds.py FEED_SCHEMA).
            return db.execute("SELECT count(*) FROM feed_count").fetchone() is not None
    except sqlite3.Error:
        return False


async def test_what_a_killed_daemons_worker_commits_late_is_merged(tmp_path: Path) -> None:
    """A worker of a killed daemon may still commit (its last batch, as it ends) after the
    new daemon replayed the journal: the new worker waits for the journal's lock, and the
    daemon reads back what was committed meanwhile before the new worker goes on."""
    site = load_site(_site(tmp_path), env={})
    journal = feeds_journal_path(site.journal_path)
    FeedStore(Journal(journal), remember_ids=10).journal.close()  # the file, its tables
    names = [d.name for d in load_plan(PLAN_PATH).destinations]
    live = LiveManifest(None, names)
    worker = FeedWorker(site, live, lambda _connected, _reason: None)
    orphan = take_lock(journal)  # the old worker, still ending
    try:
        await worker.start()
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(1.0)
        _committed_not_sent(journal, "LATE000001", names[0], "late-1")
    finally:
        os.close(orphan)
    try:
        await wait_until(lambda: worker.figures().get("replayed") is not None, 60)
        await wait_until(lambda: live.lookup_source("LATE000001")[0] is not None, 60)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.stop()


async def test_the_line_journals_feed_rows_are_adopted_at_the_upgrade(tmp_path: Path) -> None:
    """An earlier sorterd journaled the feeds in the line's journal: the first start with a
    feeds journal of its own takes them over (a customs hold among them), ids and counts
    included; once, and never over a feeds journal that was used."""
    site = load_site(_site(tmp_path), env={})
    names = [d.name for d in load_plan(PLAN_PATH).destinations]
    old = Journal(site.journal_path)  # the earlier daemon's way: the feeds in its journal
    service = FeedService(site.config.feeds, old, LiveManifest(None, names))
    pre, cus = site.config.feeds.preadvice, site.config.feeds.customs
    assert pre is not None
    assert cus is not None
    row = {"barcode": "OLD0000001", "destination": names[0], "id": "o1"}
    hold = {"barcode": "OLD0000001", "status": "hold", "id": "o2"}
    assert await service([FeedMessage(pre, json.dumps(row).encode(), False, 1)])
    assert await service([FeedMessage(cus, json.dumps(hold).encode(), False, 2)])
    old.close()

    assert adopt_old_feeds(site) == 2
    live = LiveManifest(None, names)
    worker = FeedWorker(site, live, lambda _connected, _reason: None)
    try:
        assert await worker.start() == 2
        found, source = live.lookup_source("OLD0000001")
        assert found is not None
        assert bool(found.customs_hold)
        assert source is Source.CUSTOMS
        assert worker.figures()["rows_applied"] == 1
        assert worker.figures()["customs_applied"] == 1
    finally:
        await worker.stop()
    assert adopt_old_feeds(site) == 0  # once
    journal = feeds_journal_path(site.journal_path)
    with contextlib.closing(sqlite3.connect(journal)) as db:
        assert db.execute("SELECT count(*) FROM feed_id").fetchone() == (2,)


async def test_a_large_catch_up_gives_the_line_its_turns(tmp_path: Path) -> None:
    """A dead worker's last message was large: its rows are merged a chunk at a time, the
    line's loop running in between (a decision never waits for all of them)."""
    site = load_site(_site(tmp_path), env={})
    names = [d.name for d in load_plan(PLAN_PATH).destinations]
    live = LiveManifest(None, names)
    worker = FeedWorker(site, live, lambda _connected, _reason: None)
    await worker.start()
    running = asyncio.create_task(worker.run())
    seen: list[int] = []

    async def ticker() -> None:
        while True:
            seen.append(live.delta_rows)
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    try:
        journal = feeds_journal_path(site.journal_path)
        await wait_until(lambda: _has_feed_table(journal), 60, what="the feed tables")
        total, now_ns = 10_000, time.time_ns()
        with contextlib.closing(sqlite3.connect(journal, timeout=10)) as db, db:
            db.executemany(
                "INSERT INTO feed (kind, barcode, destination, arrival_ns) VALUES (0, ?, ?, ?)",
                [(f"BIG{i:07d}", names[0], now_ns) for i in range(total)],
            )
        process = worker._process
        assert process is not None
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        await wait_until(lambda: live.delta_rows == total, 60, what="the large message merged")
        assert any(0 < rows < total for rows in seen), "merged in one piece"
    finally:
        ticking.cancel()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.stop()


async def test_an_unreadable_feeds_journal_does_not_stop_the_start(tmp_path: Path) -> None:
    """A feeds journal that is not a database: the daemon's start goes on (no traceback);
    its worker sets the file aside and starts a new one, as the line's journal does."""
    site = load_site(_site(tmp_path), env={})
    journal = feeds_journal_path(site.journal_path)
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_bytes(b"not a database " * 1000)
    assert adopt_old_feeds(site) == 0
    live = LiveManifest(None, [d.name for d in load_plan(PLAN_PATH).destinations])
    worker = FeedWorker(site, live, lambda _connected, _reason: None)
    assert await worker.start() == 0
    running = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: _has_feed_table(journal), 60, what="a new feeds journal")
        assert list(journal.parent.glob(f"{journal.name}.unreadable-*"))
        assert worker.restarts == 0
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.stop()
