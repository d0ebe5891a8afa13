"""The feeds in the journal (drivers/journal_feeds.py) and the daemon's feed handler
(sorterd/feeds.py), on a real SQLite file: order kept across a reopen, ids remembered
across a reopen, replaced entries pruned without changing what a replay gives; and file
and plan reloads of a running daemon that keep the feed rows."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import aiomqtt
import pytest
from structlog.testing import capture_logs

from drivers.broker import LocalBroker
from drivers.feeds import FeedMessage
from drivers.journal import Journal
from drivers.journal_feeds import FEED_PRUNE_ROWS, FEED_RETIRE_ROWS, FeedStore
from simulators.manifests import write_manifest
from sorter.config import ConfigError, FeedsSection, load_site, topic_filters_overlap
from sorter.feeds import (
    BadRow,
    CustomsUpdate,
    FeedBatch,
    FeedPacker,
    FeedRow,
    LiveManifest,
    PackedUpdate,
    Source,
)
from sorterd.demo import write_site
from sorterd.feeds import PARSE_INLINE_BYTES, BadLog, FeedService, topic_matches
from tests.linekit import PLAN_PATH, line_with_daemon, wait_until

DESTS = ["RABAT", "FES"]
PRE, CUS = "hub/preadvice", "hub/customs"


def _row(barcode: str, dest: str, customs: str | None = None, rid: str | None = None) -> FeedRow:
    return FeedRow(barcode, dest, None, None, None, customs, rid)


def _service(path: Path) -> tuple[Journal, FeedService]:
    journal = Journal(path)
    live = LiveManifest(None, DESTS)
    return journal, FeedService(FeedsSection(preadvice=PRE, customs=CUS), journal, live)


def _msg(topic: str, payload: object, at_ns: int = 1) -> FeedMessage:
    return FeedMessage(topic, json.dumps(payload).encode(), False, at_ns)


def _live(service: FeedService) -> LiveManifest:
    assert isinstance(service.live, LiveManifest)
    return service.live


def _state(
    live: LiveManifest | FeedPacker, barcode: str
) -> tuple[str | None, bool | None, Source | None]:
    assert isinstance(live, LiveManifest)
    row, source = live.lookup_source(barcode)
    if row is None:
        return None, None, source
    dest = DESTS[row.destination] if row.destination >= 0 else None
    return dest, bool(row.customs_hold), source


async def test_applied_rows_survive_a_reopen_in_arrival_order(tmp_path: Path) -> None:
    journal, service = _service(tmp_path / "j.sqlite")
    assert await service([_msg(PRE, [{"barcode": "A1", "destination": "RABAT", "id": "r1"}])])
    assert await service([_msg(CUS, {"barcode": "A1", "status": "hold", "id": "c1"}, 2)])
    assert await service([_msg(PRE, {"barcode": "A1", "destination": "FES", "id": "r2"}, 3)])
    assert _state(service.live, "A1") == ("FES", True, Source.CUSTOMS)
    journal.close()  # what kill -9 leaves is the committed rows: the same here

    journal, again = _service(tmp_path / "j.sqlite")
    assert again.replay() == 3
    # The customs hold made by a customs message outlives a later row without customs.
    assert _state(again.live, "A1") == ("FES", True, Source.CUSTOMS)
    # The same ids delivered again after the restart are not applied a second time.
    assert await again([_msg(PRE, {"barcode": "A1", "destination": "RABAT", "id": "r1"}, 4)])
    assert await again([_msg(CUS, {"barcode": "A1", "status": "release", "id": "c1"}, 5)])
    # The counts since the journal began: r1 and r2, c1; the re-sent ids add nothing.
    assert again.stats.rows_applied == 2
    assert again.stats.customs_applied == 1
    assert again.stats.duplicates == 2
    assert _state(again.live, "A1") == ("FES", True, Source.CUSTOMS)
    journal.close()


async def test_bad_rows_counted_by_reason_and_the_rest_applied(tmp_path: Path) -> None:
    journal, service = _service(tmp_path / "j.sqlite")
    payload = [
        {"barcode": "B1", "destination": "RABAT"},
        {"destination": "RABAT"},
        {"barcode": "B2", "destination": 7},
        {"barcode": "B3", "destination": "NOWHERE"},
    ]
    assert await service([_msg(PRE, payload), FeedMessage(PRE, b"{not json", False, 1)])
    assert await service([_msg(CUS, {"barcode": "B1", "status": "maybe"})])
    assert await service([FeedMessage(PRE, b'{"barcode": "B4", "destination": "FES"}', True, 1)])
    stats = service.stats
    assert stats.rows_applied == 1
    assert dict(stats.bad_reasons) == {
        "no_barcode": 1,
        "wrong_type": 1,
        "bad_value": 1,
        "bad_json": 1,
        "unknown_status": 1,
        "retained": 1,
    }
    figures = service.figures()
    assert list(figures)[:6] == [
        "rows_applied",
        "customs_applied",
        "bad_rows",
        "lag_ms_p50",
        "lag_ms_p99",
        "delta_rows",
    ]
    assert figures["bad_rows"] == 6
    assert figures["delta_rows"] == 1
    assert _state(service.live, "B1") == ("RABAT", False, Source.FEED)
    journal.close()


def test_prune_keeps_what_a_replay_needs(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    store = FeedStore(journal, remember_ids=1000)
    live = LiveManifest(None, DESTS)
    batches = [
        FeedBatch(customs=[CustomsUpdate("C1", True, None)]),
        # States customs: ends the hold above; the row after it does not, and keeps that.
        FeedBatch(rows=[_row("C1", "RABAT", "release")]),
        FeedBatch(rows=[_row("C1", "FES")]),
        FeedBatch(rows=[_row("D1", "RABAT", rid="d1")]),
        FeedBatch(rows=[_row("D1", "FES", rid="d2")]),
        FeedBatch(customs=[CustomsUpdate("D1", True, None)]),
        FeedBatch(customs=[CustomsUpdate("D1", False, None)]),
    ]
    for i, batch in enumerate(batches):
        assert store.add(batch, i)
        live.apply(batch, i)
    assert journal.commit()
    before = {b: _state(live, b) for b in ("C1", "D1")}
    assert before == {"C1": ("FES", False, Source.FEED), "D1": ("FES", False, Source.CUSTOMS)}
    while True:
        assert store.prune_step() is not None
        if store.prune_wrapped:
            break
    with sqlite3.connect(path) as db:
        kept = db.execute("SELECT kind, barcode, destination FROM feed ORDER BY seq").fetchall()
        ids = {r[0] for r in db.execute("SELECT id FROM feed_id")}
    # D1's first row and first customs decision are replaced; C1's rows are not (the
    # second stated customs, the third does not).
    assert kept == [
        (1, "C1", None),
        (0, "C1", "RABAT"),
        (0, "C1", "FES"),
        (0, "D1", "FES"),
        (1, "D1", None),
    ]
    assert ids == {"d1", "d2"}  # claimed by add; pruning an entry keeps its id
    replayed = LiveManifest(None, DESTS)
    for run in store.replay():
        replayed.apply(run.batch, run.arrival_ns)
    assert {b: _state(replayed, b) for b in ("C1", "D1")} == before
    journal.close()


def test_ids_are_bounded(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    store = FeedStore(journal, remember_ids=1000)
    for i in range(3000):
        batch = store.fresh(FeedBatch(rows=[_row(f"E{i}", "RABAT", rid=f"e{i}")]))
        assert batch is not None
        assert store.add(batch, i)
    assert journal.commit()
    assert store.fresh(FeedBatch(rows=[_row("E1", "RABAT", rid="e2999")])) == FeedBatch([], [], [])
    assert store.prune_step() is not None
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        (left,) = db.execute("SELECT count(*) FROM feed_id").fetchone()
    assert 1000 <= left <= 1001
    # An old id forgotten: applied again (the bound says how far back the memory goes).
    again = store.fresh(FeedBatch(rows=[_row("E0", "FES", rid="e0")]))
    assert again is not None
    assert len(again.rows) == 1
    journal.close()


def test_ids_are_pruned_a_bounded_number_per_step(tmp_path: Path) -> None:
    """A step deletes at most FEED_PRUNE_ROWS ids (the event loop's turn stays short),
    the oldest first; further steps reach the bound."""
    journal = Journal(tmp_path / "j.sqlite")
    store = FeedStore(journal, remember_ids=1000)
    count = 3 * FEED_PRUNE_ROWS + 1000
    batch = FeedBatch(rows=[_row(f"G{i}", "RABAT", rid=f"g{i:06d}") for i in range(count)])
    for i, row in enumerate(batch.rows):
        assert store.add(FeedBatch(rows=[row]), i)
    assert journal.commit()

    def ids() -> list[str]:
        with sqlite3.connect(tmp_path / "j.sqlite") as db:
            return [r[0] for r in db.execute("SELECT id FROM feed_id ORDER BY seq")]

    assert store.prune_step() is not None
    left = ids()
    assert len(left) == count - FEED_PRUNE_ROWS
    assert left[0] == f"g{FEED_PRUNE_ROWS:06d}"
    for _ in range(3):
        assert store.prune_step() is not None
    assert 1000 <= len(ids()) <= 1001
    journal.close()


def test_topic_filters() -> None:
    assert topic_matches("hub/preadvice", "hub/preadvice")
    assert topic_matches("hub/+/preadvice", "hub/x/preadvice")
    assert topic_matches("hub/#", "hub/x/y")
    assert not topic_matches("hub/+", "hub/x/y")
    assert not topic_matches("hub/preadvice", "hub/customs")


def test_feeds_config_checked(tmp_path: Path) -> None:
    def site(extra: str) -> Path:
        return write_site(
            tmp_path,
            plc_port=1,
            scanner_port=2,
            mqtt_url="mqtt://127.0.0.1:1883",
            plan=PLAN_PATH,
            prefix="p",
            extra=extra,
        )

    loaded = load_site(site('\n[feeds]\npreadvice = "hub/pre"\n'))
    assert loaded.config.feeds.topics == ("hub/pre",)
    assert load_site(site("")).config.feeds.topics == ()
    with pytest.raises(ConfigError) as err:
        load_site(site('\n[feeds]\npreadvice = "hub/#/x"\ncustoms = "a+"\ntopic = "x"\n'))
    text = str(err.value)
    assert "feeds.preadvice" in text
    assert "feeds.customs" in text
    assert "feeds.topic: unknown key" in text
    with pytest.raises(ConfigError, match=r"feeds\.customs"):
        load_site(site('\n[feeds]\npreadvice = "hub/x"\ncustoms = "hub/x"\n'))
    # Filters that share topics: refused, naming both values.
    with pytest.raises(ConfigError, match=r"feeds\.customs: 'hub/customs' and .*'hub/#'"):
        load_site(site('\n[feeds]\npreadvice = "hub/#"\ncustoms = "hub/customs"\n'))
    with pytest.raises(ConfigError, match=r"feeds\.customs"):
        load_site(site('\n[feeds]\npreadvice = "hub/+/pre"\ncustoms = "hub/a/+"\n'))
    loaded = load_site(site('\n[feeds]\npreadvice = "hub/+/pre"\ncustoms = "hub/+/cus"\n'))
    assert loaded.config.feeds.topics == ("hub/+/pre", "hub/+/cus")
    assert loaded.config.feeds.retention_h == 72.0
    loaded = load_site(site('\n[feeds]\npreadvice = "hub/pre"\nretention_h = 0.5\n'))
    assert loaded.config.feeds.retention_h == 0.5
    for bad in ("0", "-1", "9000", '"72h"'):
        with pytest.raises(ConfigError, match=r"feeds\.retention_h"):
            load_site(site(f'\n[feeds]\npreadvice = "hub/pre"\nretention_h = {bad}\n'))


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("hub/#", "hub/customs", True),
        ("hub/#", "hub", True),  # "#" matches its parent level too
        ("#", "x/y", True),
        ("hub/+", "hub/a/b", False),
        ("hub/+/x", "hub/a/+", True),
        ("hub/pre", "hub/cus", False),
        ("hub/pre", "hub/pre/x", False),
        ("+/pre", "hub/+", True),
    ],
)
def test_topic_filters_overlap(first: str, second: str, overlap: bool) -> None:
    assert topic_filters_overlap(first, second) is overlap
    assert topic_filters_overlap(second, first) is overlap


async def test_file_and_plan_reloads_keep_the_feed_rows(
    broker: LocalBroker, tmp_path: Path
) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    x, y = "RB111111115GB", "RB222222225GB"
    header = ("barcode", "destination")
    write_manifest(folder / "a.csv", [(x, "FES")], header=header)
    extra = '\n[feeds]\npreadvice = "hub/preadvice"\ncustoms = "hub/customs"\n'
    async with line_with_daemon(
        broker, tmp_path, manifests=str(folder / "*.csv"), extra_config=extra
    ) as rig:
        daemon = rig.daemon
        assert daemon.parts.feeds is not None
        live = daemon.parts.feeds.live
        worker = daemon.parts.feeds.worker
        assert daemon.decider.decide([x]).destination == "FES"
        # The feeds worker subscribes beside the running line (its session begins then).
        await wait_until(lambda: worker.connected, 60, what="the feeds worker subscribed")
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            row = {"barcode": x, "destination": "RABAT", "id": "x1"}
            await client.publish("hub/preadvice", json.dumps(row).encode(), qos=1)
        await wait_until(lambda: live.source_of(x) is Source.FEED, 10)
        assert daemon.decider.decide([x]).destination == "RABAT"

        # A file reload: the feed's row still wins over the file's; new file rows count.
        write_manifest(folder / "b.csv", [(x, "FES"), (y, "FES")], header=header)
        await wait_until(lambda: live.source_of(y) is Source.FILE, 20, what="file reload")
        choice = daemon.decider.decide([x])
        assert (choice.destination, choice.source) == ("RABAT", Source.FEED)
        assert daemon.decider.decide([y]).destination == "FES"

        # A plan reload: a new decider, the same live index under the new plan's names.
        old = daemon.decider
        daemon.request_reload("r1")
        await wait_until(lambda: daemon.decider is not old, 60, what="plan reload")
        choice = daemon.decider.decide([x])
        assert (choice.destination, choice.source) == ("RABAT", Source.FEED)
        assert daemon.decider.decide([y]).destination == "FES"


async def test_a_large_message_in_chunks_and_an_id_twice_in_it(tmp_path: Path) -> None:
    journal, service = _service(tmp_path / "j.sqlite")
    rows = [{"barcode": f"L{i}", "destination": "FES", "id": f"l{i}"} for i in range(3000)]
    rows.append({"barcode": "L0", "destination": "RABAT", "id": "l0"})  # a re-send inside
    payload = json.dumps(rows).encode()
    assert len(payload) > PARSE_INLINE_BYTES  # parsed in a thread
    assert await service([FeedMessage(PRE, payload, False, 1)])
    assert service.stats.rows_applied == 3000
    assert service.stats.duplicates == 1
    assert _state(service.live, "L0") == ("FES", False, Source.FEED)
    assert _state(service.live, "L2999") == ("FES", False, Source.FEED)
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT count(*) FROM feed").fetchone() == (3000,)
        assert db.execute("SELECT count(*) FROM feed_id").fetchone() == (3000,)
    journal.close()


async def test_a_batch_the_journal_cannot_take_is_applied_not_acknowledged(
    tmp_path: Path,
) -> None:
    journal, service = _service(tmp_path / "j.sqlite")
    message = _msg(PRE, {"barcode": "F1", "destination": "RABAT", "id": "f1"})
    journal._db.execute("PRAGMA query_only = ON")  # every write now fails
    assert not await service([message])
    assert _state(service.live, "F1") == ("RABAT", False, Source.FEED)  # the line has it
    assert not journal.healthy
    journal._db.execute("PRAGMA query_only = OFF")
    # The broker sends the unacknowledged message again: journaled now, not applied twice.
    assert await service([message])
    assert service.stats.rows_applied == 1
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT barcode, id FROM feed").fetchall() == [("F1", "f1")]
    journal.close()


async def test_a_refused_row_is_not_journaled(tmp_path: Path) -> None:
    """A row the index refuses (a destination the plan lacks) is neither journaled nor
    claims its id: it cannot replace the applied row of its barcode in the journal."""
    journal, service = _service(tmp_path / "j.sqlite")
    assert await service([_msg(PRE, {"barcode": "A1", "destination": "RABAT", "id": "r1"}, 1)])
    assert await service([_msg(PRE, {"barcode": "A1", "destination": "NOWHERE", "id": "r2"}, 2)])
    assert service.stats.bad_reasons == {"bad_value": 1}
    assert _state(service.live, "A1") == ("RABAT", False, Source.FEED)
    await service._prune_pass()
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT barcode, destination, id FROM feed").fetchall() == [
            ("A1", "RABAT", "r1")
        ]
        assert db.execute("SELECT id FROM feed_id").fetchall() == [("r1",)]
    journal.close()
    journal, again = _service(tmp_path / "j.sqlite")
    again.replay()
    assert _state(again.live, "A1") == ("RABAT", False, Source.FEED)
    # The refused id is free: sent again with a destination the plan has, it applies.
    assert await again([_msg(PRE, {"barcode": "A1", "destination": "FES", "id": "r2"}, 3)])
    assert _state(again.live, "A1") == ("FES", False, Source.FEED)
    journal.close()


async def test_a_replay_keeps_a_row_whose_destination_the_plan_dropped(tmp_path: Path) -> None:
    """Replay ends where the live index was: a journaled row whose destination the plan of
    the restart lacks has no destination, and has it again when a plan brings it back."""
    journal, service = _service(tmp_path / "j.sqlite")
    row = {"barcode": "A1", "destination": "FES", "country": "MA", "id": "r1"}
    assert await service([_msg(PRE, row, 1)])
    _live(service).set_destinations(["RABAT"])  # a plan reload drops FES
    live_row = _live(service).lookup_source("A1")
    journal.close()
    journal = Journal(tmp_path / "j.sqlite")
    again = FeedService(
        FeedsSection(preadvice=PRE, customs=CUS), journal, LiveManifest(None, ["RABAT"])
    )
    assert again.replay() == 1
    assert _live(again).lookup_source("A1") == live_row
    assert live_row[0] is not None
    assert live_row[0].destination == -1
    _live(again).set_destinations(DESTS)
    assert _state(again.live, "A1") == ("FES", False, Source.FEED)
    journal.close()


async def test_what_a_failed_batch_applied_is_journaled_in_the_order_applied(
    tmp_path: Path,
) -> None:
    """A hold applied while the journal could not write, a release after it journaled, the
    hold re-delivered: live and the journal's replay both say released, and the counts
    agree (docs/feeds.md "Order")."""
    journal, service = _service(tmp_path / "j.sqlite")
    assert await service([_msg(PRE, {"barcode": "X1", "destination": "RABAT", "id": "r1"}, 1)])
    hold = _msg(CUS, {"barcode": "X1", "status": "hold", "id": "c1"}, 2)
    journal._db.execute("PRAGMA query_only = ON")  # every write now fails
    assert not await service([hold])
    journal._db.execute("PRAGMA query_only = OFF")
    assert await service([_msg(CUS, {"barcode": "X1", "status": "release", "id": "c2"}, 3)])
    assert await service([hold])  # the broker's re-delivery: a duplicate
    assert _state(service.live, "X1") == ("RABAT", False, Source.CUSTOMS)
    assert (service.stats.customs_applied, service.stats.duplicates) == (2, 1)
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT kind, hold, id FROM feed ORDER BY seq").fetchall() == [
            (0, None, "r1"),
            (1, 1, "c1"),
            (1, 0, "c2"),
        ]
    journal.close()
    journal, again = _service(tmp_path / "j.sqlite")
    again.replay()
    assert _state(again.live, "X1") == ("RABAT", False, Source.CUSTOMS)
    assert again.stats.customs_applied == 2
    journal.close()


def test_bad_rows_logged_at_most_once_per_interval() -> None:
    bad_log = BadLog()
    second = 10**9
    with capture_logs() as logs:
        bad_log.add([BadRow("no_barcode", "row 2: no barcode")], PRE, 0)  # logged at once
        bad_log.add([BadRow("bad_json", "not JSON")], PRE, 3 * second)  # held back
        bad_log.add([BadRow("bad_json", "not JSON")], PRE, 9 * second)
        bad_log.flush_due(9 * second)  # not yet
        bad_log.flush_due(10 * second)  # now, with what was held back
        bad_log.flush_due(30 * second)  # nothing new: nothing logged
    lines = [e for e in logs if e["event"] == "feed bad rows"]
    assert [e["counts"] for e in lines] == [{"no_barcode": 1}, {"bad_json": 2}]
    assert lines[1]["examples"] == {"bad_json": f"{PRE}: not JSON"}


async def test_what_is_owed_to_the_journal_is_bounded(tmp_path: Path) -> None:
    """While the journal cannot write, applied rows wait in memory for it, up to a bound:
    past it no message is taken (not applied, not acknowledged: the broker keeps it);
    once the journal writes again, every row is journaled and applied once."""
    journal = Journal(tmp_path / "j.sqlite")
    config = FeedsSection(preadvice=PRE, customs=CUS)
    service = FeedService(config, journal, LiveManifest(None, DESTS), max_owed_rows=2)
    messages = [_msg(PRE, {"barcode": f"F{i}", "destination": "RABAT", "id": f"f{i}"}, i)
                for i in range(4)]  # fmt: skip
    journal._db.execute("PRAGMA query_only = ON")  # every write now fails
    assert not await service([messages[0]])
    assert not await service([messages[1]])
    assert service.owed_rows == 2
    assert not await service([messages[2]])  # full: not taken
    assert not await service([messages[3]])
    assert (service.owed_rows, service.refused_full) == (2, 2)
    assert _state(service.live, "F1") == ("RABAT", False, Source.FEED)
    assert _state(service.live, "F2") == (None, None, None)  # not applied
    journal._db.execute("PRAGMA query_only = OFF")
    # The broker sends what was not acknowledged again, in its order.
    for message in messages:
        assert await service([message])
    assert service.owed_rows == 0
    assert (service.stats.rows_applied, service.stats.duplicates) == (4, 2)
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT id FROM feed ORDER BY seq").fetchall() == [
            ("f0",), ("f1",), ("f2",), ("f3",),
        ]  # fmt: skip
    journal.close()


async def test_old_entries_are_retired_from_the_journal_and_the_index(tmp_path: Path) -> None:
    """A barcode whose newest entry is older than retention_h leaves the journal and the
    index (its file row decides again); one with a recent entry keeps all of its
    entries; a step looks at FEED_RETIRE_ROWS entries at most; a replay agrees."""
    hour_ns = 3600 * 10**9
    now_ns = [10 * hour_ns]
    journal = Journal(tmp_path / "j.sqlite")
    config = FeedsSection(preadvice=PRE, customs=CUS, retention_h=2)
    live = LiveManifest(None, DESTS)
    service = FeedService(config, journal, live, wall_ns=lambda: now_ns[0])
    old = [{"barcode": f"O{i}", "destination": "RABAT"} for i in range(FEED_RETIRE_ROWS + 500)]
    assert await service([_msg(PRE, old, 1 * hour_ns)])
    assert await service([_msg(CUS, {"barcode": "K1", "status": "hold"}, 1 * hour_ns)])
    assert await service([_msg(PRE, {"barcode": "K1", "destination": "FES"}, 9 * hour_ns)])
    assert await service([_msg(PRE, {"barcode": "N1", "destination": "FES"}, 9 * hour_ns)])
    assert live.delta_rows == len(old) + 2

    first = service.store.retire_step(now_ns[0] - 2 * hour_ns)
    assert first is not None
    assert len(first) == FEED_RETIRE_ROWS  # bounded
    assert not service.store.retire_wrapped
    assert await service.retire_pass() == 500  # the rest of the old barcodes
    live.retire(first)  # what the first step retired leaves the index too
    assert live.delta_rows == 2
    assert _state(live, "O0") == (None, None, None)
    assert _state(live, "K1") == ("FES", True, Source.CUSTOMS)  # its old hold stays
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT barcode, kind FROM feed ORDER BY seq").fetchall() == [
            ("K1", 1), ("K1", 0), ("N1", 0),
        ]  # fmt: skip
    journal.close()
    journal, again = _service(tmp_path / "j.sqlite")
    assert again.replay() == 3
    assert _state(again.live, "K1") == ("FES", True, Source.CUSTOMS)
    assert _live(again).delta_rows == 2
    journal.close()


async def test_over_a_packer_a_batch_is_done_once_the_index_has_merged_it(
    tmp_path: Path,
) -> None:
    """The feeds worker's way (sorterd/feeds_worker.py): a batch journaled, then its packed
    update handed to the sink; the handler says it is durable (and the link acknowledges
    it) only once the sink has merged it into the index, in the order of arrival."""
    journal = Journal(tmp_path / "j.sqlite")
    live = LiveManifest(None, DESTS)
    merged = asyncio.Event()
    release = asyncio.Event()

    async def sink(update: PackedUpdate) -> None:
        await release.wait()  # the daemon's loop is busy
        live.apply_packed(update)
        merged.set()

    packer = FeedPacker(DESTS)
    config = FeedsSection(preadvice=PRE, customs=CUS)
    service = FeedService(config, journal, packer, sink=sink)
    batch = [
        _msg(PRE, {"barcode": "P1", "destination": "RABAT", "id": "p1"}, 1),
        _msg(CUS, {"barcode": "P1", "status": "hold", "id": "q1"}, 2),
        _msg(PRE, {"barcode": "P1", "destination": "FES", "id": "p2"}, 3),
    ]
    answer = await service(batch)
    assert not isinstance(answer, bool)  # durable, handed over: the link goes on meanwhile
    handling = asyncio.ensure_future(answer)
    await asyncio.sleep(0.2)
    assert not handling.done()  # durable already, not yet in the index: no ack
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT count(*) FROM feed").fetchone() == (3,)
    assert _state(live, "P1") == (None, None, None)
    assert service.stats.lag_n == 0  # the lag ends in the index
    release.set()
    assert await handling
    assert merged.is_set()
    assert _state(live, "P1") == ("FES", True, Source.CUSTOMS)
    assert service.stats.lag_n == 3
    # The same ids again (the broker's re-delivery): nothing new for the index.
    merged.clear()
    assert await service(batch) is True  # nothing to hand over: answered at once
    assert not merged.is_set()
    assert service.stats.duplicates == 3
    journal.close()
