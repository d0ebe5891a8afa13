"""The journal on its own and under the MQTT outbox: what is written stays until sent."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.broker import LocalBroker, free_port
from drivers.journal import PRUNE_BATCH_ROWS, Journal, JournalError, JournalOutbox
from drivers.journal import Unsent as Row
from drivers.mqtt import MqttPublisher, MqttStats, Outbox, OutMessage, encode
from sorter.ports import MessageKind, Outgoing, SortRequest
from tests.linekit import wait_until


def _msg(kind: str, tid: int, seq: int, *, chute: int = 5, outcome: int = 0) -> Outgoing:
    payload = {"id": f"{kind[0]}-{tid}-{seq}", "tracking_id": tid, "seq": seq}
    recirculations = 1 if outcome == 2 else 0
    return Outgoing(
        MessageKind(kind),
        tid,
        seq,
        chute,
        f"B{tid}",
        "CASABLANCA",
        recirculations,
        outcome,
        f"t/{kind}s",
        payload,
    )


def _append(j: Journal, kind: str, tid: int, seq: int, *, chute: int = 5, outcome: int = 0) -> int:
    msg = _msg(kind, tid, seq, chute=chute, outcome=outcome)
    rowid = j.append(msg, encode(msg.payload))
    assert rowid is not None
    return rowid


async def _observe(
    broker: LocalBroker, topic: str, field: str, got: list[Any]
) -> asyncio.Task[None]:
    """An independent consumer of `topic/#`, appending each message's `field` to `got`;
    subscribed when this returns."""
    ready = asyncio.Event()

    async def observe() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"{topic}-obs") as c:
            await c.subscribe(f"{topic}/#", qos=1)
            ready.set()
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                got.append(json.loads(m.payload)[field])

    observer = asyncio.create_task(observe())
    await asyncio.wait_for(ready.wait(), 10)
    return observer


def test_recover_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.sqlite"  # the folder is created
    j = Journal(path)
    waiting = SortRequest(
        seq=70,
        tracking_id=7,
        induction=1,
        length_mm=300,
        width_mm=200,
        height_mm=100,
        weight_g=1500,
    )
    j.add_pending(waiting)
    j.add_pending(
        SortRequest(
            seq=80, tracking_id=8, induction=1, length_mm=0, width_mm=0, height_mm=0, weight_g=0
        )
    )
    _append(j, "decision", 8, 80, chute=12)  # decided: no longer pending
    _append(j, "decision", 9, 90, chute=13)
    _append(j, "result", 9, 90, chute=13, outcome=1)
    _append(j, "decision", 10, 100, chute=14)
    _append(j, "result", 10, 100, chute=0, outcome=2)  # recirculated: comes back
    j.commit()
    j.close()  # a crash leaves the same: every commit is in the file

    j = Journal(path)
    rec = j.recover()
    assert rec.pending == [waiting]
    assert rec.answered == {(8, 80): 12, (9, 90): 13, (10, 100): 14}
    assert rec.assigned == {(8, 80): ("B8", "CASABLANCA", 12)}  # 9 and 10 are confirmed
    assert rec.results_seen == {(9, 90), (10, 100)}
    assert rec.recirculations == {10: 1}
    assert j.stats.recovered_unsent == 5


def test_a_killed_process_leaves_what_it_committed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    code = f"""
import os, signal
from drivers.journal import Journal
from sorter.ports import MessageKind, Outgoing
j = Journal({str(path)!r})
def add(n):
    j.append(Outgoing(MessageKind.DECISION, n, n, 1, "", "", 0, 0, "t", {{}}), b"{{}}")
add(1)
j.commit()
add(2)  # not committed when the process dies
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert set(Journal(path).recover().answered) == {(1, 1)}


def test_second_process_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    first = Journal(tmp_path / "j.sqlite")
    with pytest.raises(JournalError, match=f"in use by another process \\(pid {os.getpid()}\\)"):
        Journal(tmp_path / "j.sqlite")
    first.close()
    Journal(tmp_path / "j.sqlite").close()  # free again


def test_unsent_and_watermark(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    rows = [_append(j, "decision", i, i) for i in range(1, 11)]
    j.commit()
    assert [u.rowid for u in j.unsent(0, 4)] == rows[:4]
    j.mark_sent(rows[5])
    assert [u.rowid for u in j.unsent(0, 100)] == rows[6:]
    assert [u.rowid for u in j.unsent(rows[7], 100)] == rows[8:]
    j.close()  # the watermark is persisted on close
    assert Journal(tmp_path / "j.sqlite").count_unsent() == 4


def test_prune_keeps_unsent_rows(tmp_path: Path) -> None:
    now = [10**18]
    j = Journal(tmp_path / "j.sqlite", retention_h=1.0, wall_clock_ns=lambda: now[0])
    rows = [_append(j, "decision", i, i) for i in range(1, 101)]
    j.commit()
    j.mark_sent(rows[49])
    now[0] += 2 * 3600 * 10**9  # past retention
    assert j.prune() == 50
    assert [u.rowid for u in j.unsent(0, 1000)] == rows[50:]
    assert j.prune() == 0


def test_prune_works_in_slices_of_at_most_prune_batch_rows(tmp_path: Path) -> None:
    """A prune holds the event loop for one slice; the daemon repeats it, yielding between
    slices, until a slice comes back short."""
    now = [10**18]
    j = Journal(tmp_path / "j.sqlite", retention_h=1.0, wall_clock_ns=lambda: now[0])
    total = PRUNE_BATCH_ROWS * 2 + PRUNE_BATCH_ROWS // 2
    rows = [_append(j, "result", i, i) for i in range(total + 10)]
    j.commit()
    j.mark_sent(rows[total - 1])
    now[0] += 2 * 3600 * 10**9  # past retention
    slices = []
    while (deleted := j.prune()) == PRUNE_BATCH_ROWS:
        slices.append(deleted)
    slices.append(deleted)
    assert slices == [PRUNE_BATCH_ROWS, PRUNE_BATCH_ROWS, PRUNE_BATCH_ROWS // 2]
    assert [u.rowid for u in j.unsent(0, 10_000)] == rows[total:]
    assert j.stats.pruned == total
    j.close()


def test_full_journal_refuses_then_recovers_after_prune(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite", max_size_mb=0.3)
    written = []
    for i in range(10_000):
        rowid = j.append(_msg("decision", i, i), b"x" * 400)
        if rowid is None or not j.commit():
            break
        written.append(rowid)
    assert not j.healthy
    assert "full" in j.last_error
    assert j.stats.failed >= 1
    alarms = j.check_space()
    assert "journal_full" in alarms
    assert "journal_error" in alarms
    # Nothing sent yet: pruning may not free a thing.
    assert j.prune() == 0
    j.mark_sent(written[-1])
    assert j.prune() > 0
    assert not j.healthy  # a prune (or a watermark) committing proves nothing about writes
    assert _append(j, "decision", 1, 1) > written[-1]
    assert j.commit()
    assert j.healthy
    assert "journal_error" not in j.check_space()


def test_disk_low_alarm_follows_the_free_space(tmp_path: Path) -> None:
    """The alarm the fault suite's full disk (a file size limit) cannot raise: statvfs."""
    free_mb = shutil.disk_usage(tmp_path).free / 2**20
    assert "disk_low" in Journal(tmp_path / "a.sqlite", min_free_mb=2 * free_mb).check_space()
    assert "disk_low" not in Journal(tmp_path / "b.sqlite", min_free_mb=0).check_space()


def test_unreadable_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is not a database, it is a text file" * 100)
    j = Journal(path)
    assert j.healthy
    assert len(j.stats.set_aside) == 1
    assert Path(j.stats.set_aside[0]).read_bytes().startswith(b"this is not")
    assert j.recover().answered == {}


def test_unusable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match="journal folder"):
        Journal(blocker / "sub" / "j.sqlite")


async def test_outbox_spills_to_disk_and_sends_everything_in_order(tmp_path: Path) -> None:
    """A broker that is not there: more messages than memory holds wait on disk, then all
    go out once, in order, with their ids, and the watermark follows the PUBACKs."""
    port = free_port()
    j = Journal(tmp_path / "j.sqlite", synchronous="normal")
    pub = MqttPublisher(
        f"mqtt://127.0.0.1:{port}",
        client_id="spill-test",
        store=j,
        max_memory=50,
        backoff_max_s=0.2,
    )
    for i in range(400):
        payload = {"id": f"d-{i}", "n": i}
        data = encode(payload)
        rowid = j.append(replace(_msg("decision", i, i), topic="spill/decisions"), data)
        j.commit()
        pub.publish_raw(OutMessage("spill/decisions", data, 1, False), rowid)
    # A publisher with a store looks at the disk first: nothing waits in memory yet.
    assert pub.backlog == 0
    assert pub.spilled
    got: list[int] = []
    async with LocalBroker(port=port) as broker:
        observer = await _observe(broker, "spill", "n", got)
        runner = asyncio.create_task(pub.run())
        try:
            await wait_until(lambda: len(got) >= 400, 30)
            assert await pub.flush(10)
        finally:
            runner.cancel()
            observer.cancel()
            await asyncio.gather(runner, observer, return_exceptions=True)
    assert got == list(range(400))
    assert not pub.spilled
    assert j.count_unsent() == 0


async def test_steps_the_journal_cannot_write_still_reach_the_broker_once(
    tmp_path: Path,
) -> None:
    """A journal that fills mid-run: steps that fail go out as memory-only messages, those
    that commit go out from the journal; each message exactly once, ids never reused."""
    journal = Journal(tmp_path / "j.sqlite", max_size_mb=0.25, synchronous="normal")
    got: list[str] = []
    async with LocalBroker() as broker:
        pub = MqttPublisher(broker.url, client_id="fill-test", store=journal, backoff_max_s=0.2)
        outbox = JournalOutbox(journal, pub)
        observer = await _observe(broker, "fill", "id", got)
        # The publisher is not running yet: nothing is sent, nothing is pruned, the journal
        # fills up and refuses; the steps after that are memory-only.
        ids = []
        for step in range(100):
            for k in range(3):
                msg_id = f"m-{step}-{k}"
                ids.append(msg_id)
                # Small, small, large: the step that fills the journal has rows written
                # before the one that fails, which the failure rolls back.
                payload = {"id": msg_id, "pad": "x" * (300 if k < 2 else 6000)}
                outbox.record(
                    Outgoing(
                        MessageKind.DECISION, step, k, 1, "", "", 0, 0, "fill/decisions", payload
                    )
                )
            outbox.commit()
        assert not journal.healthy
        runner = asyncio.create_task(pub.run())
        try:
            await wait_until(lambda: len(got) >= len(ids), 30)
            # A last message after everything is acknowledged reaches the observer after
            # everything before it: a message sent twice would have arrived by then.
            assert await pub.flush(30)
            pub.publish("fill/end", {"id": "end"})
            await wait_until(lambda: "end" in got, 30)
        finally:
            runner.cancel()
            observer.cancel()
            await asyncio.gather(runner, observer, return_exceptions=True)
    assert got[-1] == "end"
    assert sorted(got[:-1]) == sorted(ids)


def test_a_decision_the_journal_refused_does_not_leave_its_request_pending(
    tmp_path: Path,
) -> None:
    """Found in review: the failed step rolled back the deletion of the pending row, and
    the next start decided the request a second time."""
    path = tmp_path / "j.sqlite"
    j = Journal(path, max_size_mb=0.25, synchronous="normal")
    outbox = JournalOutbox(j, MqttPublisher("mqtt://127.0.0.1:1", store=j))
    waiting = SortRequest(
        seq=3, tracking_id=9, induction=1, length_mm=0, width_mm=0, height_mm=0, weight_g=0
    )
    outbox.add_pending(waiting)
    outbox.commit()
    filler = 0
    while j.healthy:  # fill the journal with unsent rows until it refuses
        filler += 1
        outbox.record(_msg("result", 1000 + filler, filler))
        outbox.commit()
    big = replace(_msg("decision", 9, 3), payload={"id": "d-9-3", "pad": "x" * 20_000})
    outbox.record(big)  # refused: the step goes out memory-only
    outbox.commit()
    assert not j.healthy
    j.mark_sent(10**9)  # the broker took everything; pruning makes room again
    while j.prune():
        pass
    outbox.record(_msg("result", 1, 1))
    outbox.commit()
    assert j.healthy
    j.close()
    assert Journal(path).recover().pending == []


def test_recovery_answers_only_recent_requests_again_and_resends_recent_replies(
    tmp_path: Path,
) -> None:
    now = [10**18]
    j = Journal(tmp_path / "j.sqlite", wall_clock_ns=lambda: now[0])
    _append(j, "decision", 1, 1, chute=11)
    now[0] += 60 * 10**9  # a minute later
    _append(j, "decision", 2, 2, chute=12)
    _append(j, "result", 2, 2, chute=12, outcome=1)
    now[0] += 4 * 10**9
    _append(j, "decision", 3, 3, chute=13)  # the last one before the crash
    j.commit()
    rec = j.recover()
    # (1, 1) is a minute old: a PLC that restarted too may use the pair for a new item.
    assert rec.answered == {(2, 2): 12, (3, 3): 13}
    # Replies of the last seconds may have died in the link's queue; (2, 2) was confirmed.
    assert rec.replies == [(3, 3, 13)]
    assert set(rec.assigned) == {(1, 1), (3, 3)}


class FlakyStore:
    """An OutboxStore whose first read fails, as a journal on a failing disk would."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.reads = 0
        self.sent_upto = 0

    def mark_sent(self, upto_rowid: int) -> None:
        self.sent_upto = max(self.sent_upto, upto_rowid)

    def unsent(self, after_rowid: int, limit: int) -> list[Row] | None:
        self.reads += 1
        if self.reads == 1:
            return None
        return [r for r in self.rows if r.rowid > after_rowid][:limit]


async def test_a_failed_read_of_the_journal_does_not_skip_what_waits_there() -> None:
    """Found in review: a read error looked like the end of the spill, the next message
    went out first and moved the watermark past rows never sent."""
    store = FlakyStore([Row(i, "flaky/decisions", encode({"n": i})) for i in (1, 2, 3)])
    got: list[int] = []
    async with LocalBroker() as broker:
        pub = MqttPublisher(broker.url, client_id="flaky", store=store, backoff_max_s=0.2)
        observer = await _observe(broker, "flaky", "n", got)
        runner = asyncio.create_task(pub.run())
        try:
            await wait_until(lambda: store.reads >= 1, 10)  # the failed read
            # A new message is journaled and handed over after the failed read.
            row = Row(4, "flaky/decisions", encode({"n": 4}))
            store.rows.append(row)
            pub.publish_raw(OutMessage(row.topic, row.payload, 1, False), row.rowid)
            await wait_until(lambda: len(got) >= 4 and store.sent_upto >= 4, 10)
        finally:
            runner.cancel()
            observer.cancel()
            await asyncio.gather(runner, observer, return_exceptions=True)
    assert got == [1, 2, 3, 4]
    assert store.sent_upto == 4


# ---------------------------------------------------------------- the sync off the loop


async def test_commits_made_together_share_one_sync_and_wait_for_it(tmp_path: Path) -> None:
    """`deferred_sync` (the daemon's journal at "full"): SQLite commits at "normal", and
    one fdatasync of the WAL in a thread covers every commit made before it started."""
    j = Journal(tmp_path / "j.sqlite", deferred_sync=True)
    assert j.sync is not None
    assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert j.sync.syncs == 1  # at open: what the file holds already
    order: list[str] = []
    for tid in range(10):  # ten steps in one go of the loop, as a burst of requests makes
        _append(j, "decision", tid, tid)
        assert j.commit()
        j.after_sync(lambda tid=tid: order.append(f"published {tid}"))  # type: ignore[misc]
    assert order == []  # nothing leaves before the disk has it
    assert j.sync.commits == 10
    await j.synced()
    assert j.sync.synced == 10
    # The first commit's sync went to the thread at once; the nine made while it ran
    # share the next one.
    assert j.sync.syncs == 3
    assert order == [f"published {tid}" for tid in range(10)]
    # With nothing committed since, a wait is free and a callback runs at once.
    await j.synced()
    j.after_sync(lambda: order.append("now"))
    assert order[-1] == "now"
    assert j.sync.syncs == 3
    # Checkpoints run in a thread of their own after a sync, never inside a COMMIT.
    assert j._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    await wait_until(lambda: j.sync is not None and j.sync.checkpoints == 1, 10)
    j.close()
    assert set(Journal(tmp_path / "j.sqlite").recover().answered) == {(t, t) for t in range(10)}


def test_without_deferred_sync_the_journal_syncs_inside_the_commit(tmp_path: Path) -> None:
    """The feeds worker's journal (and the default): "full" stays SQLite's own."""
    j = Journal(tmp_path / "j.sqlite")
    assert j.sync is None
    assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    called: list[int] = []
    _append(j, "decision", 1, 1)
    j.commit()
    j.after_sync(lambda: called.append(1))
    assert called == [1]
    j.close()


async def test_a_step_paged_in_before_its_sync_is_sent_once(tmp_path: Path) -> None:
    """The outbox pages journal rows in after a spill; a step committed but not yet synced
    can be among them. Its own publish, when the sync ends, must not queue it again."""
    j = Journal(tmp_path / "j.sqlite", synchronous="normal")
    rows = [_append(j, "decision", tid, tid) for tid in range(3)]
    j.commit()
    outbox = Outbox(MqttStats(), max_outbox=10, store=j, max_memory=50)
    batch, retained = await outbox.take(10)  # a store is looked at first: the 3 rows
    assert (len(batch), retained) == (3, False)
    for rowid in rows:  # the step's publish, after its sync
        outbox.add(OutMessage("t/decisions", b"{}", 1, False), rowid)
    assert outbox.backlog == 3
    j.close()


def _record_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The real fdatasync, noting the file each call was for."""
    synced: list[str] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return synced


def test_a_deferred_journal_syncs_what_a_killed_predecessor_left_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon killed between a COMMIT (at "normal") and its sync leaves rows that are in
    the page cache only. The next start replies to the PLC and publishes from them (the
    recovery, the outbox's page-in): the journal syncs them before it reads anything."""
    path = tmp_path / "j.sqlite"
    code = f"""
import os, signal
from drivers.journal import Journal
from sorter.ports import MessageKind, Outgoing
j = Journal({str(path)!r}, deferred_sync=True)
j.append(Outgoing(MessageKind.DECISION, 1, 1, 1, "", "", 0, 0, "t", {{}}), b"{{}}")
j.commit()  # no loop running: synced in place, as "full" would
j.sync.committed = lambda *_: None  # the next commit's sync never happens: killed first
j.append(Outgoing(MessageKind.DECISION, 2, 2, 1, "", "", 0, 0, "t", {{}}), b"{{}}")
j.commit()
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert Path(f"{path}-wal").stat().st_size > 0
    synced = _record_syncs(monkeypatch)
    j = Journal(path, deferred_sync=True)
    assert f"{path}-wal" in synced  # before a row was read
    assert set(j.recover().answered) == {(1, 1), (2, 2)}
    assert [u.rowid for u in j.unsent(0, 10)] == [1, 2]  # from before: on the disk now
    j.close()


async def test_a_failed_sync_keeps_the_journal_unhealthy_until_a_sync_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit at "normal" proves nothing about the disk: after a failed fdatasync only a
    sync that works brings the journal back, or a disk that fails every sync would show
    healthy between two of them (and the alarm would flap). The line goes on meanwhile."""
    real = os.fdatasync
    failing = [True]

    def fdatasync(fd: int) -> None:
        if failing[0]:
            raise OSError(5, "Input/output error")
        real(fd)

    j = Journal(tmp_path / "j.sqlite", deferred_sync=True)
    changes: list[bool] = []
    j.health.on_change = lambda: changes.append(j.healthy)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    _append(j, "decision", 1, 1)
    assert j.commit()
    await j.synced()  # returns: the line does not stop for a disk that fails
    assert not j.healthy
    assert j.last_error == "sync: [Errno 5] Input/output error"
    _append(j, "decision", 2, 2)
    assert j.commit()
    assert not j.healthy  # committed, not on the disk
    await j.synced()
    assert not j.healthy
    failing[0] = False
    _append(j, "decision", 3, 3)
    assert j.commit()
    assert not j.healthy
    await j.synced()
    assert j.healthy
    assert changes == [False, True]
    j.close()
    assert set(Journal(tmp_path / "j.sqlite").recover().answered) == {(t, t) for t in (1, 2, 3)}


async def test_the_outbox_pages_in_no_row_before_its_sync(tmp_path: Path) -> None:
    """A spilled outbox reads journal rows to send; a step committed and not yet synced is
    not among them (its own publish brings it once synced), so the broker never has a
    decision a power cut could take from the journal."""
    j = Journal(tmp_path / "j.sqlite", deferred_sync=True)
    first = [_append(j, "decision", tid, tid) for tid in range(3)]
    j.commit()
    await j.synced()
    later = [_append(j, "decision", tid, tid) for tid in range(3, 5)]
    j.commit()  # its sync has not run: nothing has yielded to the loop
    assert [u.rowid for u in j.unsent(0, 10)] == first
    outbox = Outbox(MqttStats(), max_outbox=10, store=j, max_memory=50)
    batch, _ = await outbox.take(10)
    assert len(batch) == len(first)
    await j.synced()
    assert [u.rowid for u in j.unsent(0, 10)] == first + later
    j.close()


async def test_a_journal_closed_during_a_sync_starts_no_checkpoint_after(
    tmp_path: Path,
) -> None:
    """close() while a sync runs: the sync ends on the loop after it and must not open a
    checkpoint thread and connection again on a closed journal (nobody would close them)."""
    j = Journal(tmp_path / "j.sqlite", deferred_sync=True)
    sync = j.sync
    assert sync is not None
    _append(j, "decision", 1, 1)
    j.commit()
    assert sync._syncing  # the commit handed the fdatasync to the thread
    j.close()
    await wait_until(lambda: not sync._syncing, 10)
    await asyncio.sleep(0)
    assert sync._checkpointer is None
    assert sync._checkpoint_db is None
    assert set(Journal(tmp_path / "j.sqlite").recover().answered) == {(1, 1)}


async def test_the_plc_waiting_for_a_sync_wakes_before_the_outbox_publishes(
    tmp_path: Path,
) -> None:
    """The PLC driver waits for the sync before it moves its heads, the MQTT outbox
    publishes after it: the driver must not be left behind the publish. A waiter cancelled
    meanwhile (its task stopped) disturbs neither."""
    j = Journal(tmp_path / "j.sqlite", deferred_sync=True)
    sync = j.sync
    assert sync is not None
    order: list[str] = []
    queued = asyncio.Event()  # the MQTT outbox's sender wakes on its queue, as here

    async def sender() -> None:
        await queued.wait()
        order.append("outbox")

    async def plc() -> None:
        await j.synced()
        order.append("plc")

    _append(j, "decision", 1, 1)
    j.commit()
    j.after_sync(queued.set)
    outbox = asyncio.create_task(sender())
    gone = asyncio.create_task(j.synced())
    waiter = asyncio.create_task(plc())
    await asyncio.sleep(0)  # all three wait now
    gone.cancel()
    await asyncio.gather(waiter, outbox)
    assert order == ["plc", "outbox"]
    assert gone.cancelled()
    assert sync.synced == sync.commits == 1
    j.close()


def test_a_loop_that_stops_with_a_sync_in_flight_leaves_no_commit_unsynced(
    tmp_path: Path,
) -> None:
    """The loop that handed a sync to the thread stopped before the sync's end came back
    to it (a tool's or a test's loop, a daemon's loop that ended): that end never comes.
    A commit made after it with no loop must still be synced in place, as at "full", and
    a wait on the next loop must return, not hang."""
    j = Journal(tmp_path / "j.sqlite", deferred_sync=True)
    sync = j.sync
    assert sync is not None
    busy = threading.Event()

    async def commit_while_the_thread_is_busy() -> None:
        _append(j, "decision", 1, 1)
        j.commit()
        await j.synced()  # the sync thread exists from here on
        assert sync._executor is not None
        # The real sync thread, kept busy so that the next sync is in flight for sure
        # when this loop stops (an fdatasync on a slow disk).
        sync._executor.submit(busy.wait)
        _append(j, "decision", 2, 2)
        j.commit()
        assert sync._syncing

    loop = asyncio.new_event_loop()
    loop.run_until_complete(commit_while_the_thread_is_busy())
    loop.close()
    busy.set()
    _append(j, "decision", 3, 3)
    j.commit()  # no loop now
    assert sync.synced == sync.commits == 3
    published: list[int] = []
    j.after_sync(lambda: published.append(3))
    assert published == [3]

    async def commit_and_wait() -> None:
        _append(j, "decision", 4, 4)
        j.commit()
        async with asyncio.timeout(30):  # a hang fails here rather than stop the run
            await j.synced()

    asyncio.run(commit_and_wait())
    assert sync.synced == sync.commits == 4
    j.close()
    assert set(Journal(tmp_path / "j.sqlite").recover().answered) == {(t, t) for t in range(1, 5)}


async def test_commits_that_never_let_the_sync_rest_still_get_checkpoints(
    tmp_path: Path,
) -> None:
    """SQLite's own checkpoint is off; the sync thread's end starts one (at most every
    CHECKPOINT_INTERVAL_S). On a line busy enough that every sync ends with commits made
    while it ran (a commit on every turn of the loop here), a checkpoint must still come,
    or the WAL grows for as long as the line runs."""
    j = Journal(tmp_path / "j.sqlite", deferred_sync=True)
    sync = j.sync
    assert sync is not None
    tid = 0
    while sync.syncs < 20:  # the open's sync, then the thread's: each ends behind a commit
        tid += 1
        _append(j, "decision", tid, tid)
        j.commit()
        await asyncio.sleep(0)
        assert sync.synced < sync.commits  # the sync never rests
    await wait_until(lambda: sync._checkpointing is None, 10)
    assert sync.checkpoints >= 1
    j.close()
