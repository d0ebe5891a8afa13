"""What the tracker remembers of decided items: enough to spot a late read, in a form the
cyclic GC does not have to walk (a GC pass over tens of thousands of remembered items
stalled the line)."""

from __future__ import annotations

import gc

from sorter.ports import ScanRead, SortRequest
from sorter.tracker import Match, Tracker

MS = 1_000_000


def _tracker() -> Tracker:
    return Tracker(100 * MS, 2_000 * MS, 20_000, heads={"a": "t1", "b": "t1"})


def _request(tracking_id: int, seq: int) -> SortRequest:
    return SortRequest(seq, tracking_id, 1, 300, 200, 100, 1_000)


def _read(head: str, tracking_id: int, now_ns: int) -> ScanRead:
    return ScanRead(head, tracking_id, (f"RB{tracking_id:09d}GB",), now_ns)


def _pass(tracker: Tracker, tracking_id: int, seq: int, now_ns: int) -> Match:
    """A request whose head a reads it and head b does not: decided at its merge deadline."""
    assert tracker.on_request(_request(tracking_id, seq), now_ns) == []
    assert tracker.on_scan(_read("a", tracking_id, now_ns), now_ns) == []
    [match] = tracker.expire(now_ns + tracker.merge_window_ns)
    return match


def test_a_read_just_after_its_item_was_decided_is_late_and_joins_nothing() -> None:
    tracker = _tracker()
    assert _pass(tracker, 8, 1, 0).request.seq == 1
    tracker.on_scan(_read("b", 8, 60 * MS), 60 * MS)
    assert tracker.stats.reads_late == 1
    # The item's next pass does not get b's late read of the previous one.
    assert tracker.on_request(_request(8, 2), 70 * MS) == []
    [match] = tracker.expire(70 * MS + tracker.scan_wait_ns)
    assert (match.request.seq, match.scan) == (2, None)


def test_a_read_long_after_the_decision_waits_for_the_next_pass() -> None:
    tracker = _tracker()
    _pass(tracker, 8, 1, 0)
    tracker.on_scan(_read("b", 8, 900 * MS), 900 * MS)
    assert tracker.stats.reads_late == 0
    tracker.on_request(_request(8, 2), 901 * MS)
    [match] = tracker.expire(901 * MS + tracker.scan_wait_ns)
    assert match.request.seq == 2
    assert match.scan is not None
    assert match.scan.codes == ("RB000000008GB",)


def test_a_head_that_read_the_item_reading_it_again_is_not_late() -> None:
    tracker = _tracker()
    _pass(tracker, 8, 1, 0)
    tracker.on_scan(_read("a", 8, 60 * MS), 60 * MS)
    assert tracker.stats.reads_late == 0


def test_decided_items_leave_nothing_for_the_gc_to_walk() -> None:
    tracker = _tracker()
    n = 3_000
    gc.collect()
    before = len(gc.get_objects())
    for i in range(n):
        t = i * 10 * MS
        tracker.on_scan(_read("a", i, t), t)
        tracker.on_scan(_read("b", i, t), t)
        assert len(tracker.on_request(_request(i, i), t + MS)) == 1
        # The pipeline's timer, after each event.
        assert tracker.expire(t + MS) == []
        tracker.next_deadline_ns()
    # A pass over a tuple of ints and strings stops tracking it; one that holds such a tuple
    # may need the next pass (the daemon's GC pacer makes one every half second).
    gc.collect()
    gc.collect()
    grown = len(gc.get_objects()) - before
    # Kept as the items themselves, the 3,000 items remembered were 21,000 objects.
    assert grown < n // 10, grown
