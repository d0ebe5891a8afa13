"""The tracker's parts on their own: the heads' book, what waits, the reads by id."""

from __future__ import annotations

from sorter.ports import ScanRead, SortRequest
from sorter.tracker_heads import HeadBook, TrackerStats
from sorter.tracker_store import Item, ReadsById, WaitingItems

MS = 1_000_000


def _item(tid: int, seq: int, number: int, deadline_ns: int) -> Item:
    req = SortRequest(seq, tid, 1, 300, 200, 100, 1000)
    return Item(req, (tid, seq), number, 0, deadline_ns)


def test_book_groups_heads_into_tunnels_in_merge_order() -> None:
    book = HeadBook(TrackerStats(), 3, {"top": "t1", "side": "t1", "cam": "t2"})
    assert [h.name for h in book.tunnels["t1"]] == ["top", "side"]
    assert [h.order for h in book.by_name.values()] == [0, 1, 2]
    # A head not configured is its own tunnel, added on first sight.
    stray = book.get("stray")
    assert stray.stats.tunnel == "stray"
    assert book.tunnels["stray"] == [stray]
    assert book.get("stray") is stray


def test_a_head_is_awaited_until_it_misses_the_limit_or_goes_offline() -> None:
    stats = TrackerStats()
    book = HeadBook(stats, 2, {"a": "t"})
    a = book.by_name["a"]
    assert book.awaited(a)
    book.missed(a, 1, 1, 0)
    assert book.awaited(a)
    book.missed(a, 2, 2, 0)
    assert not book.awaited(a)
    assert (a.stats.missed, stats.head_misses) == (2, 2)
    book.late(a, 2, 2, 0)  # slow, not dead
    assert book.awaited(a)
    assert (a.stats.late, stats.reads_late) == (1, 1)
    book.set_alive("a", False)
    assert not book.awaited(a)
    book.missed(a, 3, 3, 0)
    book.missed(a, 4, 4, 0)
    book.set_alive("a", True)  # back: its misses while away do not count
    assert book.awaited(a)


def test_only_window_heads_can_say_they_sent_nothing() -> None:
    book = HeadBook(TrackerStats(), 3, {"a": "t", "b": "t"})
    assert not book.only_windows_left({"a", "b"})  # id heads: they may still send
    book.reads_by_window(book.by_name["a"])
    book.reads_by_window(book.by_name["b"])
    book.reads_by_window(book.by_name["b"])
    assert [h.name for h in book.window_heads] == ["a", "b"]
    assert not book.only_windows_left({"a"})
    assert book.only_windows_left({"a", "b"})
    book.set_alive("b", False)
    assert book.only_windows_left({"a"})
    book.set_alive("a", False)
    assert not book.only_windows_left(set())  # nobody awaited: the deadline decides


def test_orphans_are_counted_per_head_and_in_total() -> None:
    stats = TrackerStats()
    book = HeadBook(stats, 3, {"a": "t"})
    for _ in range(3):
        book.orphan(book.by_name["a"], ScanRead("a", None, ("X",), 0), 0)
    assert (book.by_name["a"].stats.orphans, stats.reads_orphaned) == (3, 3)


def test_waiting_items_by_key_and_by_id() -> None:
    waiting = WaitingItems()
    first, again = _item(7, 1, 0, 100), _item(7, 2, 1, 200)
    waiting.add(first)
    waiting.add(again)
    assert len(waiting) == 2
    assert (7, 1) in waiting
    assert waiting.keys() == {(7, 1), (7, 2)}
    assert list(waiting.with_id(7) or ()) == [first, again]
    waiting.remove(first)
    assert list(waiting.with_id(7) or ()) == [again]
    waiting.remove(again)
    assert waiting.with_id(7) is None
    assert len(waiting) == 0


def test_deadlines_come_in_order_and_skip_decided_or_superseded_items() -> None:
    waiting = WaitingItems()
    a, b, c = _item(1, 1, 0, 300), _item(2, 2, 1, 100), _item(3, 3, 2, 200)
    for item in (a, b, c):
        waiting.add(item)
        waiting.schedule(item.deadline_ns, item)
    # a's first read opened a merge window shorter than its wait.
    a.merge_deadline_ns = 150
    waiting.schedule(150, a)
    b.decided = True
    assert waiting.next_due_ns() == 150
    assert waiting.pop_due(149) is None
    assert waiting.pop_due(1000) is a
    a.decided = True
    assert waiting.pop_due(1000) is c
    c.decided = True
    assert waiting.pop_due(1000) is None  # a's own later entry: decided, dropped
    assert waiting.next_due_ns() is None


def test_reads_by_id_wait_their_ttl_and_the_newest_of_a_head_wins() -> None:
    stats = TrackerStats()
    reads = ReadsById(ttl_ns=1000 * MS, max_reads=100, stats=stats)
    old = ScanRead("a", 5, ("OLD",), 0)
    new = ScanRead("a", 5, ("NEW",), 10 * MS)
    other = ScanRead("b", 5, ("B",), 20 * MS)
    reads.put("a", old, 5)
    reads.put("a", new, 5)
    reads.put("b", other, 5)
    assert stats.scans_replaced == 1
    assert len(reads) == 3  # entries in time order, the replaced one among them
    assert dict(reads.take(5, 30 * MS)) == {"a": new, "b": other}
    assert dict(reads.take(5, 30 * MS)) == {}
    assert stats.scans_unmatched == 0
    reads.put("a", ScanRead("a", 6, ("X",), 30 * MS), 6)
    assert dict(reads.take(6, 1030 * MS)) == {}  # past its TTL: not this pass's
    assert stats.scans_unmatched == 1


def test_reads_by_id_are_bounded_and_cleared_as_unmatched() -> None:
    stats = TrackerStats()
    reads = ReadsById(ttl_ns=10**12, max_reads=2, stats=stats)
    for tid in range(3):
        reads.put("a", ScanRead("a", tid, ("X",), tid), tid)
    reads.expire(0)
    assert len(reads) == 2
    assert stats.scans_unmatched == 1
    reads.clear()
    assert len(reads) == 0
    assert stats.scans_unmatched == 3
