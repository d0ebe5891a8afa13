"""The feed simulator: its stream read back against the contract, and published for real.

The stream is held to what the hub feeds contract says a message is (a JSON object or
array of rows whose values are all strings, with a barcode; customs with a status of hold
or release) by a reader written here from the contract, so that its good rows are good
and its bad rows are bad for the reason it says. Publishing goes to a real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.broker import LocalBroker
from simulators.feeds import (
    BAD_KINDS,
    FeedError,
    FeedLog,
    FeedMessage,
    FeedMix,
    FeedPlan,
    FeedPublisher,
    FeedRow,
    FeedSite,
    Filler,
    Published,
    RowState,
    fold,
    publish_stream,
    read_feed_site,
)
from sorterd.demo import DemoFeeds, Observer
from tests.feedledger import feed_count_problems, feed_decision_problems
from tests.linekit import PLAN_PATH
from tests.waiting import wait_until

MIX = FeedMix(destinations=("CASABLANCA", "RABAT"), oversized_bytes=64 * 1024)
INTERVAL_S = 0.18  # 20,000 items/h


def _plan(count: int = 1500, seed: int = 3, mix: FeedMix = MIX) -> FeedPlan:
    return FeedPlan(seed=seed, interval_s=INTERVAL_S, count=count, mix=mix)


def _read_rows(
    message: FeedMessage, oversized_bytes: int
) -> tuple[list[dict[str, str]], list[str]]:
    """The message as the contract reads it: (good rows, reasons of the bad ones)."""
    if len(message.payload) > oversized_bytes:
        return [], ["oversized"]
    try:
        data = json.loads(message.payload)
    except ValueError:
        return [], ["bad_json"]
    values = data if isinstance(data, list) else [data]
    good, bad = [], []
    for value in values:
        reason = _row_problem(value, message.kind)
        if reason:
            bad.append(reason)
        else:
            good.append(value)
    return good, bad


def _row_problem(value: Any, kind: str) -> str:
    if not isinstance(value, dict):
        return "wrong_types"
    if "barcode" not in value:
        return "no_barcode"
    if not all(isinstance(v, str) for v in value.values()):
        return "wrong_types"
    if kind == "customs" and value.get("status") not in ("hold", "release"):
        return "unknown_status"
    return ""


def test_the_stream_is_the_same_for_a_seed_and_another_for_another_seed() -> None:
    a, b, c = _plan(300), _plan(300), _plan(300, seed=4)
    assert [m.payload for m in a.messages] == [m.payload for m in b.messages]
    assert [m.payload for m in a.messages] != [m.payload for m in c.messages]


def test_every_message_reads_as_the_contract_says_with_the_bad_rows_it_declares() -> None:
    plan = _plan()
    declared: Counter[str] = Counter()
    for message in plan.messages:
        good, bad = _read_rows(message, MIX.oversized_bytes)
        assert sorted(bad) == sorted(message.bad), message.payload[:300]
        assert [r["id"] for r in good] == [r.id for r in message.rows]
        assert good == [r.as_json() for r in message.rows]
        declared.update(message.bad)
    # Every kind of bad row is in a stream of this size.
    assert set(declared) == set(BAD_KINDS), declared


def test_ids_are_unique_and_a_duplicate_repeats_an_earlier_message() -> None:
    plan = _plan()
    ids = [r.id for r in plan.rows()]
    assert len(ids) == len(set(ids))
    first: dict[bytes, float] = {}
    duplicates = 0
    for m in plan.messages:
        if m.duplicate:
            duplicates += 1
            assert m.payload in first
            assert first[m.payload] < m.at_s
        else:
            first[m.payload] = m.at_s
    assert duplicates > 0


def test_a_duplicate_comes_after_the_next_row_of_its_barcode() -> None:
    """So that applying it again would undo that row: a dedup bug shows in a decision."""
    plan = _plan()
    checked = 0
    for m in plan.messages:
        if not m.duplicate:
            continue
        for row in m.rows:
            times = [t for t, r in plan.timeline[row.barcode]]
            mine = next(t for t, r in plan.timeline[row.barcode] if r.id == row.id)
            later = [t for t in times if t > mine]
            if later:
                checked += 1
                assert m.at_s > min(later)
    assert checked > 0


def test_items_are_pre_advised_before_the_tunnel_seconds_to_hours_ahead() -> None:
    plan = _plan()
    leads = []
    for barcode, scan_s in plan.scan_s.items():
        rows = [(t, r) for t, r in plan.timeline[barcode] if r.kind == "preadvice"]
        for t, _ in rows:
            assert t < scan_s
            leads.append(scan_s - t)
    assert leads
    assert min(leads) >= MIX.lead_min_s
    assert max(leads) > 3600  # hours ahead: in the backlog before stream time 0
    assert any(m.at_s < 0 for m in plan.messages)
    assert any(m.at_s >= 0 for m in plan.messages)
    share = len([b for b in plan.scan_s if plan.state_at(b, plan.scan_s[b]).fields]) / 1500
    assert 0.5 < share < 0.95  # most readable items; no-reads and unknown codes have none


def test_customs_holds_some_and_releases_them_before_or_after_their_first_pass() -> None:
    plan = _plan()
    held_at_tunnel = released_before = 0
    for barcode, scan_s in plan.scan_s.items():
        kinds = [
            dict(r.fields).get("status") or dict(r.fields).get("customs")
            for _, r in plan.timeline[barcode]
        ]
        if "hold" not in kinds:
            continue
        assert kinds[-1] == "release"  # every hold is released in the end
        if plan.state_at(barcode, scan_s).held:
            held_at_tunnel += 1
            assert not plan.state_at(barcode, scan_s + 31).held
        else:
            released_before += 1
    assert held_at_tunnel > 5
    assert released_before > 5


def test_fold_later_wins_by_arrival() -> None:
    def row(kind: str, **fields: str) -> FeedRow:
        return FeedRow(f"id-{len(fields)}-{kind}", kind, "RB1", tuple(fields.items()))  # type: ignore[arg-type]

    advice = row("preadvice", postcode="20250", country="MA")
    held_row = row("preadvice", postcode="10000", customs="hold")
    hold, release = row("customs", status="hold"), row("customs", status="release")
    assert fold([]) == RowState()
    assert fold([hold]) == RowState(None, held=True)
    assert fold([advice, hold]) == RowState({"postcode": "20250", "country": "MA"}, held=True)
    assert fold([advice, hold, release]).held is False
    assert fold([held_row]).held is True
    assert fold([held_row, release]) == RowState({"postcode": "10000", "customs": "hold"}, False)
    assert fold([hold, advice]).held is False  # a row replaces what was known


def test_filler_rows_are_good_rows_with_new_ids() -> None:
    filler = Filler(seed=1, pool=10)
    rows = json.loads(filler.message(25).payload) + json.loads(filler.message(25).payload)
    assert len({r["id"] for r in rows}) == 50
    assert all(_row_problem(r, "preadvice") == "" for r in rows)
    assert filler.rows_made == 50


def test_the_site_config_names_the_topics(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[mqtt]\nurl = "mqtt://127.0.0.1:1884"\ntopic_prefix = "a/b"\n')
    with pytest.raises(FeedError, match=r"no \[feeds\] table"):
        read_feed_site(site)
    site.write_text(site.read_text() + '[feeds]\npreadvice = "hub/preadvice"\n')
    with pytest.raises(FeedError, match="customs"):
        read_feed_site(site)
    site.write_text(site.read_text() + 'customs = "hub/customs"\n')
    got = read_feed_site(site)
    assert (got.url, got.preadvice, got.customs) == (
        "mqtt://127.0.0.1:1884",
        "hub/preadvice",
        "hub/customs",
    )
    site.write_text('[mqtt]\nurl = "http://x"\n[feeds]\npreadvice = "p"\ncustoms = "c"\n')
    with pytest.raises(FeedError, match=r"mqtt\.url"):
        read_feed_site(site)


async def _subscriber(
    port: int, topics: tuple[str, str], got: list[tuple[str, bytes]], ready: asyncio.Event
) -> None:
    """A consumer with a persistent session, reconnecting across a broker restart."""
    while True:
        try:
            async with aiomqtt.Client(
                "127.0.0.1", port, identifier="feed-test-sub", clean_session=False, keepalive=5
            ) as client:
                for topic in topics:
                    await client.subscribe(topic, qos=1)
                ready.set()
                async for m in client.messages:
                    assert isinstance(m.payload, bytes)
                    got.append((str(m.topic), m.payload))
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)


def _ids(got: list[tuple[str, bytes]], oversized_bytes: int) -> Counter[str]:
    out: Counter[str] = Counter()
    for topic, payload in got:
        message = FeedMessage(0.0, "customs" if topic.endswith("customs") else "preadvice", payload)
        good, _ = _read_rows(message, oversized_bytes)
        out.update(r["id"] for r in good)
    return out


async def _publish_plan(
    plan: FeedPlan, site: FeedSite, *, during: Any = None, rows_per_s: float = 2000
) -> tuple[FeedLog, float]:
    """Publish the plan in stream time compressed to now (everything due at once, paced
    by the rate), running `during` meanwhile; the log and the loop time it ended."""
    publisher = FeedPublisher(site, window=16)
    runner = asyncio.create_task(publisher.run(), name="feed-publisher")
    loop = asyncio.get_running_loop()
    start = loop.time() - max(m.at_s for m in plan.messages)  # all due now
    try:
        feeding = publish_stream(publisher, plan.messages, start_s=start, rows_per_s=rows_per_s)
        await asyncio.gather(feeding, during or asyncio.sleep(0))
        await publisher.close()
        await asyncio.wait_for(runner, 60)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    return publisher.log, loop.time()


@pytest.mark.requires("mosquitto")
async def test_published_to_a_real_broker_every_id_arrives(tmp_path: Path) -> None:
    plan = _plan(300, mix=FeedMix(oversized_bytes=64 * 1024))
    async with LocalBroker(kind="mosquitto") as broker:
        site = FeedSite(broker.url, "hub/preadvice", "hub/customs")
        got: list[tuple[str, bytes]] = []
        ready = asyncio.Event()
        sub = asyncio.create_task(
            _subscriber(broker.port, ("hub/preadvice", "hub/customs"), got, ready)
        )
        try:
            await asyncio.wait_for(ready.wait(), 10)
            feed_log, _ = await _publish_plan(plan, site)
            want = {r.id for r in plan.rows()}
            await wait_until(lambda: set(_ids(got, 64 * 1024)) >= want, 20)
        finally:
            sub.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub
    counts = feed_log.counts()
    assert counts["rows"] + counts["customs"] == len(want)
    assert counts["bad"] == sum(len(m.bad) for m in plan.messages)
    assert counts["duplicates"] == sum(m.duplicate for m in plan.messages) > 0
    assert all(p.acked_s is not None for p in feed_log.published)
    # Arrival order is send order on one connection: each barcode's rows come as sent.
    assert [p.seq for p in feed_log.published] == sorted(p.seq for p in feed_log.published)
    barcode = next(iter(plan.scan_s))
    assert feed_log.state(barcode, 1e12) == plan.state_at(barcode, 1e12)


@pytest.mark.requires("mosquitto")
async def test_broker_down_while_publishing_the_publisher_sends_again(tmp_path: Path) -> None:
    """The broker stops mid-stream; what it did not acknowledge goes again after it is
    back, and every id reaches a persistent subscriber."""
    plan = _plan(600, mix=FeedMix(oversized_bytes=64 * 1024))
    (tmp_path / "broker").mkdir()
    broker = LocalBroker(kind="mosquitto", persistence_dir=tmp_path / "broker")
    await broker.start()
    got: list[tuple[str, bytes]] = []
    ready = asyncio.Event()
    sub = asyncio.create_task(
        _subscriber(broker.port, ("hub/preadvice", "hub/customs"), got, ready)
    )

    async def outage() -> None:
        await asyncio.sleep(0.3)  # the scenario: the broker goes mid-stream
        await broker.stop()
        await asyncio.sleep(1.5)
        await broker.start()

    try:
        await asyncio.wait_for(ready.wait(), 10)
        feed_log, _ = await _publish_plan(
            plan,
            FeedSite(broker.url, "hub/preadvice", "hub/customs"),
            during=outage(),
            rows_per_s=300,  # a few seconds of stream, the outage in the middle
        )
        want = {r.id for r in plan.rows()}
        await wait_until(lambda: set(_ids(got, 64 * 1024)) >= want, 30)
    finally:
        sub.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sub
        await broker.stop()
    assert feed_log.reconnects >= 1
    assert all(p.acked_s is not None for p in feed_log.published)
    assert feed_log.counts()["retried"] >= 1 or any(
        p.first_sent_s is not None and p.first_sent_s > 0 for p in feed_log.published
    )


# --- the feed ledger (tests/feedledger.py) catches what it must --------------------------


def _published(seq: int, sent_s: float, *rows: FeedRow) -> Published:
    message = FeedMessage(0.0, rows[0].kind, b"", rows=rows)
    return Published(seq, message, first_sent_s=sent_s, acked_s=sent_s + 0.01, attempts=1)


def _decision(code: str, at_s: float, destination: str, chute: int, reason: str) -> dict[str, Any]:
    ts = datetime.fromtimestamp(at_s, UTC).isoformat(timespec="milliseconds")
    return {
        "tracking_id": 1, "seq": 1, "ts": ts, "codes": [code], "barcode": code,
        "destination": destination, "chute": chute, "reason": reason, "recirculations": 0,
    }  # fmt: skip


LP = "LP00123456789012"  # a Cainiao code: CAINIAO-MANUAL by the plan, a city with an address
ADVICE = FeedRow("a1", "preadvice", LP, (("postcode", "20250"), ("country", "MA")))
HOLD_ROW = FeedRow("h1", "customs", LP, (("status", "hold"),))


def _check(feed_log: FeedLog, *decisions: dict[str, Any], **kw: Any) -> list[str]:
    pairs = [((LP,), d) for d in decisions]
    return feed_decision_problems(feed_log, pairs, PLAN_PATH, margin_s=1.0, **kw)


def test_the_feed_ledger_holds_a_decision_to_the_rows_that_had_arrived() -> None:
    feed_log = FeedLog([_published(0, 100.0, ADVICE)])
    by_rule = _decision(LP, 99.0, "CAINIAO-MANUAL", 32, "ok")
    by_advice = _decision(LP, 102.0, "CASABLANCA", 1, "ok")
    assert _check(feed_log, by_rule, by_advice) == []
    # Surely arrived: deciding by the rule alone is wrong; not yet sent: the advice is.
    assert len(_check(feed_log, _decision(LP, 102.0, "CAINIAO-MANUAL", 32, "ok"))) == 1
    assert len(_check(feed_log, _decision(LP, 99.0, "CASABLANCA", 1, "ok"))) == 1
    # Within the margin either is right.
    assert _check(feed_log, _decision(LP, 100.5, "CAINIAO-MANUAL", 32, "ok")) == []
    assert _check(feed_log, _decision(LP, 100.5, "CASABLANCA", 2, "ok")) == []
    # A chute of another destination is wrong even with the right name.
    assert len(_check(feed_log, _decision(LP, 102.0, "CASABLANCA", 32, "ok"))) == 1


def test_the_feed_ledger_knows_holds_releases_duplicates_and_outages() -> None:
    release = FeedRow("r1", "customs", LP, (("status", "release"),))
    feed_log = FeedLog(
        [
            _published(0, 100.0, ADVICE),
            _published(1, 200.0, HOLD_ROW),
            _published(2, 250.0, ADVICE),  # the same id again: must not undo the hold
            _published(3, 300.0, release),
        ]
    )
    held = _decision(LP, 260.0, "", 54, "customs_hold")
    assert _check(feed_log, held, _decision(LP, 302.0, "CASABLANCA", 3, "ok")) == []
    assert len(_check(feed_log, _decision(LP, 260.0, "CASABLANCA", 1, "ok"))) == 1
    assert len(_check(feed_log, _decision(LP, 302.0, "", 54, "customs_hold"))) == 1
    # The daemon was down from 299 to 310: the release is surely there only after 311.
    outage = [(299.0, 310.0)]
    assert _check(feed_log, _decision(LP, 305.0, "", 54, "customs_hold"), outages=outage) == []
    late = _decision(LP, 312.0, "", 54, "customs_hold")
    assert len(_check(feed_log, late, outages=outage)) == 1


def test_the_feed_ledger_counts_each_id_once_and_every_bad_delivery() -> None:
    bad = Published(3, FeedMessage(0.0, "preadvice", b"[", bad=("bad_json",)), 0, 1.0, 1.1, 1)
    feed_log = FeedLog(
        [
            _published(0, 1.0, ADVICE),
            _published(1, 2.0, HOLD_ROW),
            _published(2, 3.0, ADVICE),
            bad,
        ]
    )
    right = {"rows_applied": 1, "customs_applied": 1, "bad_rows": {"bad_json": 1}}
    assert feed_count_problems(feed_log, right) == []
    assert len(feed_count_problems(feed_log, {**right, "rows_applied": 2})) == 1
    assert len(feed_count_problems(feed_log, {**right, "bad_rows": 0})) == 1
    assert feed_count_problems(feed_log, {**right, "bad_rows": 2}, bad_exact=False) == []


@pytest.mark.requires("mosquitto")
async def test_sorterd_simulate_feeds_publishes_to_the_sites_topics(tmp_path: Path) -> None:
    """The command as a user runs it: the topics from the site's [feeds], the rate filled
    up with other lines' rows, a summary of what the broker acknowledged, exit 0."""
    async with LocalBroker(kind="mosquitto") as broker:
        site = tmp_path / "site.toml"
        site.write_text(
            f'[mqtt]\nurl = "{broker.url}"\ntopic_prefix = "hub/line"\n'
            '[feeds]\npreadvice = "hub/preadvice"\ncustoms = "hub/customs"\n'
        )
        got: list[tuple[str, bytes]] = []
        ready = asyncio.Event()
        sub = asyncio.create_task(
            _subscriber(broker.port, ("hub/preadvice", "hub/customs"), got, ready)
        )
        try:
            await asyncio.wait_for(ready.wait(), 10)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sorterd.cli", "simulate", "feeds", "-c", str(site),
                "--duration", "2", "--rate", "1000", "--items-rate", "40000",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            summary = out.decode().splitlines()[-1]
            rows = int(summary.split()[1].replace(",", ""))
            assert rows >= 1000  # two seconds at 1,000 rows/s, and the line's own
            await wait_until(lambda: sum(_ids(got, 1 << 20).values()) >= rows, 20)
        finally:
            sub.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub
    assert {topic for topic, _ in got} <= {"hub/preadvice", "hub/customs"}


async def test_sorterd_simulate_feeds_without_feeds_topics_says_so(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[mqtt]\nurl = "mqtt://127.0.0.1:1"\ntopic_prefix = "a"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sorterd.cli", "simulate", "feeds", "-c", str(site),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "no [feeds] table" in err.decode()
    assert "Traceback" not in err.decode()


@pytest.mark.requires("mosquitto")
async def test_the_demo_feeds_publish_the_lines_stream_and_sum_it_up() -> None:
    async with LocalBroker(kind="mosquitto") as broker:
        feeds = DemoFeeds.for_line("demo/x", broker.url, 1, 40_000, 3.0, ["CASABLANCA"])
        assert feeds.topics == ("demo/x/feeds/preadvice", "demo/x/feeds/customs")
        obs = Observer("demo/x")
        async with asyncio.TaskGroup() as tg:
            feeds.start(tg)
            await asyncio.sleep(1.0)  # a second of the stream (the scenario)
            await feeds.stop()
    counts = feeds.publisher.log.counts()
    assert counts["rows"] > 0
    assert all(p.acked_s is not None for p in feeds.publisher.log.published)
    # Messages on the feed topics are not the daemon's: the observer leaves them alone.
    obs.on_message("demo/x/feeds/preadvice", b"[not json")
    assert obs.decision_ids == set()
    rows = dict(feeds.summary_rows(obs))
    assert f"{counts['rows']} pre-advice rows" in str(rows["feeds published"])
