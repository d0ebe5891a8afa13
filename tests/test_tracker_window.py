"""The tracker with made-up clocks: reads by tracking id, reads by window, tunnel merges.

A small driver replays timed events the way the pipeline's timer does: every deadline due
before an event is expired first, at its own time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.scanner import InMemoryScanner
from sorter.contract import Topics
from sorter.decide import Decider
from sorter.kernel import ChuteState
from sorter.line import Line
from sorter.plan import compile_plan, load_plan
from sorter.ports import ScanRead, SortRequest
from sorter.tracker import Match, Tracker
from sorterd.demo import demo_config_dir
from tests.waiting import wait_until

MS = 1_000_000


def req(seq: int, t_ns: int, tracking_id: int | None = None) -> SortRequest:
    tid = seq if tracking_id is None else tracking_id
    return SortRequest(seq, tid, 1, 300, 200, 100, 1000, t_ns)


def read(head: str, t_ns: int, *codes: str, tracking_id: int | None = None) -> ScanRead:
    return ScanRead(head, tracking_id, tuple(codes), t_ns)


@dataclass(slots=True)
class Decided:
    match: Match
    at_ns: int


class Driver:
    """Feeds events in time order and runs the timer in between, like the pipeline."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.now_ns = 0
        self.decided: list[Decided] = []

    def _take(self, matches: Iterable[Match]) -> None:
        self.decided.extend(Decided(m, self.now_ns) for m in matches)

    def advance(self, to_ns: int) -> None:
        while True:
            due = self.tracker.next_deadline_ns()
            if due is None or due > to_ns:
                break
            self.now_ns = max(self.now_ns, due)
            self._take(self.tracker.expire(self.now_ns))
        self.now_ns = max(self.now_ns, to_ns)

    def request(self, r: SortRequest) -> None:
        self.advance(r.received_ns)
        self._take(self.tracker.on_request(r, self.now_ns))

    def scan(self, s: ScanRead) -> None:
        self.advance(s.received_ns)
        self._take(self.tracker.on_scan(s, self.now_ns))

    def feed(self, events: Sequence[SortRequest | ScanRead]) -> None:
        def when(e: SortRequest | ScanRead) -> int:
            return e.received_ns

        for e in sorted(events, key=when):  # stable: same-time events keep their order
            if isinstance(e, SortRequest):
                self.request(e)
            else:
                self.scan(e)

    def finish(self) -> None:
        self.advance(self.now_ns + 10_000 * MS)

    def by_seq(self) -> dict[int, Decided]:
        out: dict[int, Decided] = {}
        for d in self.decided:
            assert d.match.request.seq not in out, "a request decided twice"
            out[d.match.request.seq] = d
        return out


def window_tracker(heads: dict[str, str], **kw: int) -> Tracker:
    args = {
        "scan_wait_ns": 200 * MS,
        "scan_ttl_ns": 30_000 * MS,
        "window_before_ns": 50 * MS,
        "window_after_ns": 50 * MS,
        "merge_window_ns": 60 * MS,
    } | kw
    return Tracker(heads=heads, **args)


# --- by tracking id --------------------------------------------------------------------------


def test_one_head_by_id_scan_first_and_request_first() -> None:
    d = Driver(Tracker(scan_wait_ns=200 * MS, scan_ttl_ns=30_000 * MS))
    d.feed([read("t1", 1 * MS, "A", tracking_id=1), req(1, 3 * MS)])
    d.feed([req(2, 10 * MS), read("t1", 12 * MS, "B", tracking_id=2)])
    got = d.by_seq()
    assert got[1].match.scan is not None
    assert got[1].match.scan.codes == ("A",)
    assert got[1].at_ns == 3 * MS  # decided as the request came: nothing else to wait for
    assert got[2].match.scan is not None
    assert got[2].match.scan.codes == ("B",)
    assert got[2].at_ns == 12 * MS


def test_request_without_read_times_out() -> None:
    d = Driver(Tracker(scan_wait_ns=200 * MS, scan_ttl_ns=30_000 * MS))
    d.feed([req(1, 0)])
    d.finish()
    got = d.by_seq()[1]
    assert got.match.scan is None
    assert got.at_ns == 200 * MS
    assert d.tracker.stats.timeouts == 1


def test_three_heads_merge_noread_plus_read_is_a_read_duplicates_once() -> None:
    heads = {"top": "t", "side": "t", "bottom": "t"}
    d = Driver(window_tracker(heads))
    d.feed(
        [
            req(1, 10 * MS),
            read("side", 11 * MS, tracking_id=1),  # no-read
            read("top", 12 * MS, "RB1", tracking_id=1),
            read("bottom", 14 * MS, "RB1", "PC2", tracking_id=1),
        ]
    )
    got = d.by_seq()[1]
    assert got.at_ns == 14 * MS  # all three heads spoke: no need to wait longer
    assert got.match.scan is not None
    assert got.match.scan.codes == ("RB1", "PC2")  # head order, each code once
    assert got.match.scan.scanner == "t"
    assert {r.scanner for r in got.match.reads} == set(heads)
    stats = d.tracker.heads
    assert (stats["side"].noreads, stats["top"].reads, stats["bottom"].reads) == (1, 1, 1)


def test_merge_waits_at_most_the_merge_window_for_a_silent_head() -> None:
    heads = {"top": "t", "side": "t", "bottom": "t"}
    d = Driver(window_tracker(heads, merge_window_ns=40 * MS, head_miss_limit=2))
    events: list[SortRequest | ScanRead] = []
    for i in range(1, 6):
        t = i * 1000 * MS
        events += [req(i, t), read("top", t + 2 * MS, f"C{i}", tracking_id=i)]
        events += [read("side", t + 3 * MS, f"C{i}", tracking_id=i)]  # bottom is dead
    d.feed(events)
    d.advance(6000 * MS)
    got = d.by_seq()
    # The first two items wait the merge window for the bottom head, then it is not
    # waited for any more: the next items are decided as soon as the live heads spoke.
    assert [got[i].at_ns - i * 1000 * MS for i in range(1, 6)] == [42 * MS, 42 * MS] + [3 * MS] * 3
    assert all(got[i].match.scan.codes == (f"C{i}",) for i in got)  # type: ignore[union-attr]
    assert d.tracker.heads["bottom"].missed == 5
    # It speaks again: waited for again.
    d.feed([req(6, 7000 * MS), read("bottom", 7001 * MS, "C6", tracking_id=6)])
    d.feed([read("top", 7002 * MS, "C6", tracking_id=6)])
    assert 6 not in d.by_seq()  # side not yet
    d.feed([read("side", 7003 * MS, "C6", tracking_id=6)])
    assert d.by_seq()[6].at_ns == 7003 * MS


def test_a_head_reported_offline_is_not_waited_for() -> None:
    heads = {"top": "t", "bottom": "t"}
    d = Driver(window_tracker(heads))
    d.tracker.set_head_alive("bottom", False)
    d.feed([req(1, 10 * MS), read("top", 11 * MS, "A", tracking_id=1)])
    assert d.by_seq()[1].at_ns == 11 * MS


def test_late_read_of_a_decided_item_is_not_kept_for_the_next_pass() -> None:
    heads = {"top": "t", "bottom": "t"}
    d = Driver(window_tracker(heads, merge_window_ns=20 * MS))
    d.feed([req(1, 0, 7), read("top", 1 * MS, "A", tracking_id=7)])
    d.advance(100 * MS)
    d.feed([read("bottom", 110 * MS, "A", tracking_id=7)])  # after the merge: late
    assert d.tracker.stats.reads_late == 1
    # The same tracking id on its next pass: must not take the late read.
    d.feed([req(2, 20_000 * MS, 7)])
    d.finish()
    assert d.by_seq()[2].match.scan is None


def test_separate_tunnels_by_default() -> None:
    d = Driver(window_tracker({}))
    d.feed([req(1, 0), read("a", 1 * MS, "A", tracking_id=1)])
    assert d.by_seq()[1].at_ns == 1 * MS  # b is another tunnel: not waited for


# --- by window ----------------------------------------------------------------------------------


def test_window_pairs_in_order_and_a_missing_read_does_not_shift() -> None:
    d = Driver(window_tracker({"cam": "t"}))
    # Items 120 ms apart; the read of item 2 is missing.
    d.feed(
        [
            req(1, 1000 * MS),
            read("cam", 1010 * MS, "C1"),
            req(2, 1120 * MS),
            req(3, 1240 * MS),
            read("cam", 1230 * MS, "C3"),  # 10 ms before its request
            req(4, 1360 * MS),
            read("cam", 1400 * MS, "C4"),  # 40 ms after its request
        ]
    )
    d.finish()
    got = d.by_seq()
    codes = {seq: (x.match.scan.codes if x.match.scan else None) for seq, x in got.items()}
    assert codes == {1: ("C1",), 2: None, 3: ("C3",), 4: ("C4",)}
    # Item 2 is decided as soon as its window closed, not after the whole scan wait.
    assert got[2].at_ns <= 1120 * MS + 50 * MS + 1
    assert d.tracker.heads["cam"].missed == 1
    assert d.tracker.stats.window_matched == 3


def test_window_read_outside_every_window_is_an_orphan() -> None:
    d = Driver(window_tracker({"cam": "t"}))
    d.feed([read("cam", 500 * MS, "X"), req(1, 1000 * MS), read("cam", 1005 * MS, "C1")])
    d.finish()
    assert d.by_seq()[1].match.scan.codes == ("C1",)  # type: ignore[union-attr]
    assert d.tracker.stats.reads_orphaned == 1
    assert d.tracker.heads["cam"].orphans == 1


def test_window_read_before_its_request_waits_for_it() -> None:
    d = Driver(window_tracker({"cam": "t"}))
    d.feed([read("cam", 990 * MS, "C1"), req(1, 1000 * MS)])
    assert d.by_seq()[1].at_ns == 1000 * MS
    assert d.tracker.stats.reads_orphaned == 0


def test_window_and_index_heads_merge_in_one_tunnel() -> None:
    d = Driver(window_tracker({"top": "t", "cam": "t"}))
    d.feed([req(1, 1000 * MS), read("top", 1001 * MS, tracking_id=1), read("cam", 1020 * MS, "C")])
    got = d.by_seq()[1]
    assert got.match.scan is not None
    assert got.match.scan.codes == ("C",)
    assert got.at_ns == 1020 * MS


def test_no_head_read_the_item_on_a_window_only_line() -> None:
    d = Driver(window_tracker({"a": "t", "b": "t"}))
    d.feed([req(1, 0), read("a", 5 * MS, "C1"), read("b", 6 * MS, "C1")])  # teaches the modes
    d.feed([req(2, 1000 * MS)])
    d.finish()
    got = d.by_seq()[2]
    assert got.match.scan is None  # reason timeout ...
    assert got.at_ns == 1000 * MS + 50 * MS + 1  # ... as soon as both windows closed


# --- property: never a wrong pairing ------------------------------------------------------------


def run_line(
    seed: int,
    n_items: int,
    heads: Sequence[str],
    drop: float,
    jitter_ms: float,
    miss_limit: int,
) -> tuple[Driver, dict[int, set[str]]]:
    """Items 300 mm apart at 2.5 m/s (120 ms) or more; each head reads each item with
    probability 1 - drop, its telegram `jitter_ms` around the request at most."""
    rng = random.Random(seed)
    tracker = window_tracker(
        dict.fromkeys(heads, "t"),
        window_before_ns=55 * MS,
        window_after_ns=55 * MS,
        merge_window_ns=60 * MS,
        head_miss_limit=miss_limit,
    )
    d = Driver(tracker)
    events: list[SortRequest | ScanRead] = []
    sent: dict[int, set[str]] = {}
    t = 1000 * MS
    for seq in range(1, n_items + 1):
        t += 120 * MS + rng.choice([0, 0, 0, rng.randrange(0, 400)]) * MS
        events.append(req(seq, t))
        sent[seq] = set()
        for head in heads:
            if rng.random() < drop:
                continue
            offset = int(rng.uniform(-jitter_ms, jitter_ms) * MS)
            codes = () if rng.random() < 0.1 else (f"I{seq}",)  # some explicit no-reads
            events.append(read(head, t + offset, *codes))
            sent[seq].add(head)
    d.feed(events)
    d.finish()
    return d, sent


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    drop=st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]),
    jitter_ms=st.sampled_from([0.0, 10.0, 30.0, 50.0]),
    n_heads=st.integers(1, 3),
)
def test_window_never_pairs_a_read_with_the_wrong_item(
    seed: int, drop: float, jitter_ms: float, n_heads: int
) -> None:
    heads = ["top", "side", "bottom"][:n_heads]
    d, sent = run_line(seed, 80, heads, drop, jitter_ms, miss_limit=10**6)
    got = d.by_seq()
    assert set(got) == set(sent)  # every request decided exactly once
    for seq, decided in got.items():
        for r in decided.match.reads:
            assert r.codes in ((), (f"I{seq}",)), f"item {seq} got {r}"
        # Every head is waited for, so each item has every read its heads sent.
        assert {r.scanner for r in decided.match.reads} == sent[seq]
        if decided.match.scan is not None:
            assert set(decided.match.scan.codes) <= {f"I{seq}"}
        else:
            assert not sent[seq]
    stats = d.tracker.stats
    assert stats.reads_orphaned == 0
    assert stats.head_misses == sum(len(heads) - len(s) for s in sent.values())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), drop=st.sampled_from([0.1, 0.5, 0.9]))
def test_heads_given_up_on_still_never_mispair(seed: int, drop: float) -> None:
    """A head that misses items in a row is not waited for; its reads may then come late,
    but they are never merged into another item."""
    d, sent = run_line(seed, 80, ["top", "side", "bottom"], drop, 30.0, miss_limit=1)
    got = d.by_seq()
    assert set(got) == set(sent)
    for seq, decided in got.items():
        for r in decided.match.reads:
            assert r.codes in ((), (f"I{seq}",))
        assert {r.scanner for r in decided.match.reads} <= sent[seq]
    assert d.tracker.stats.reads_orphaned == 0


# --- through the pipeline, on a real event loop ------------------------------------------------


async def test_pipeline_decides_window_reads_and_merges_on_time() -> None:
    """Reads without tracking id from an in-memory head, the pipeline's own timer: a merge
    deadline earlier than the scan wait wakes the timer, a missing read does not shift."""
    plan = compile_plan(load_plan(demo_config_dir() / "sortplan.toml"))
    published: list[dict[str, Any]] = []

    def publish(topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False) -> None:
        if topic.endswith("/decisions"):
            published.append(payload)

    tracker = Tracker(
        scan_wait_ns=3_000 * MS,  # long: a decision before it proves the merge deadline
        scan_ttl_ns=30_000 * MS,
        heads={"cam": "t", "top": "t"},
        window_before_ns=50 * MS,
        window_after_ns=50 * MS,
        merge_window_ns=30 * MS,
    )
    pipeline = Line(
        Decider(plan, ChuteState.for_plan(plan), site_country="MA"), tracker, publish, Topics("p")
    )
    timer = asyncio.create_task(pipeline.run_timer(), name="timer")
    cam = InMemoryScanner("cam")
    try:
        async with cam:
            feeder = asyncio.create_task(pipeline.run_scanner(cam.reads()), name="cam")
            now = time.monotonic_ns
            # Item 1: the camera reads it, the index head "top" never answers.
            pipeline.on_requests([req(1, now(), 501)])
            cam.put(ScanRead("cam", None, ("RB123456785GB",), now()))
            # Item 2: the camera sends nothing for it. (The sleeps are the scenario: items
            # at least 150 ms apart on the belt, beyond each other's 50 ms windows.)
            await asyncio.sleep(0.15)
            pipeline.on_requests([req(2, now(), 502)])
            await asyncio.sleep(0.15)
            # Item 3: read again.
            pipeline.on_requests([req(3, now(), 503)])
            cam.put(ScanRead("cam", None, ("LX100339074US",), now()))
            await wait_until(lambda: len(published) == 3, what="three decisions")
            feeder.cancel()
            await asyncio.wait([feeder])
    finally:
        timer.cancel()
        await asyncio.wait([timer])
    # 503, asked for after 502, was decided before it: its merge deadline (30 ms) woke the
    # timer long before 502's scan wait (3 s) ran out. Item 2: nobody read it, and the
    # index head might still have: it gets the full wait.
    assert [d["tracking_id"] for d in published] == [501, 503, 502]
    by_id = {d["tracking_id"]: d for d in published}
    # The payloads as the pipeline hands them over: codes a tuple (an array once encoded).
    assert by_id[501]["codes"] == ("RB123456785GB",)
    assert by_id[502]["codes"] == ()
    assert by_id[503]["codes"] == ("LX100339074US",)
    assert by_id[502]["reason"] == "timeout"
    assert by_id[502]["latency_ms"] >= 3000
    assert tracker.heads["cam"].missed == 1


def test_a_late_read_of_one_pass_does_not_decide_the_next() -> None:
    """Found in review: a read that came after its item was decided waited (30 s) for the
    next request of its id and decided the item's next pass at once, on the old read."""
    tracker = Tracker(scan_wait_ns=200 * MS, scan_ttl_ns=2_000 * MS)
    first = SortRequest(1, 17, 1, 0, 0, 0, 0, received_ns=0)
    assert tracker.on_request(first, 0) == []
    [timed_out] = tracker.expire(300 * MS)
    assert timed_out.scan is None
    # The read of pass 1 comes 400 ms after its decision: too late for it.
    tracker.on_scan(ScanRead("cam", 17, ("PASS-1",), 700 * MS), 700 * MS)
    # Pass 2, twenty seconds later (it recirculated): decided on its own read, not that one.
    t = 20_700 * MS
    second = SortRequest(2, 17, 1, 0, 0, 0, 0, received_ns=t)
    assert tracker.on_request(second, t) == []
    [match] = tracker.on_scan(ScanRead("cam", 17, ("PASS-2",), t + 5 * MS), t + 5 * MS)
    assert match.scan is not None
    assert match.scan.codes == ("PASS-2",)


def test_reads_waiting_at_a_plc_restart_are_not_a_new_parcels() -> None:
    tracker = Tracker(scan_wait_ns=200 * MS, scan_ttl_ns=2_000 * MS)
    tracker.on_scan(ScanRead("cam", 17, ("PARCEL-OLD",), 0), 0)
    tracker.forget_requests()  # the PLC restarted: tracking id 17 is a new parcel next
    assert tracker.on_request(SortRequest(0, 17, 1, 0, 0, 0, 0, received_ns=MS), MS) == []
    [match] = tracker.on_scan(ScanRead("cam", 17, ("PARCEL-NEW",), 2 * MS), 2 * MS)
    assert match.scan is not None
    assert match.scan.codes == ("PARCEL-NEW",)
