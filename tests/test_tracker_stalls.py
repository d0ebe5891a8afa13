"""Reads without tracking id on a daemon short of CPU, with made-up clocks.

The daemon takes every time itself, when it gets to a telegram or to a poll of the PLC, so
a starved daemon takes them late: found in tests/test_idless_line.py under a load average
of 8, where the PLC poll (several Modbus round trips) fell 40 to 250 ms behind the scanner
links and reads went to the neighbouring item. Here the host is modelled: stalls during
which nothing runs (what arrives is taken at the stall's end, the timer fires late), a
slow PLC poll (each request is seen by the first poll answered after it was written,
`earliest_ns` being when the poll before went out, as drivers/plc.py stamps it). A read
may be dropped (counted), never paired with another item.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from sorter.ports import ScanRead, SortRequest
from tests.test_tracker_window import MS, Driver, read, window_tracker


def polled(seq: int, received_ns: int, earliest_ns: int) -> SortRequest:
    return SortRequest(seq, seq, 1, 300, 200, 100, 1000, received_ns, earliest_ns)


def codes_of(d: Driver) -> dict[int, tuple[str, ...] | None]:
    return {
        seq: (x.match.scan.codes if x.match.scan is not None else None)
        for seq, x in d.by_seq().items()
    }


def test_a_slow_poll_never_gives_a_read_to_the_item_before() -> None:
    """What the loaded test showed: items 120 ms apart, the camera's reads on time, each
    request seen 90 ms late by a slow poll. Before the fix each read waited 50 ms for a
    request, was dropped, and the next item's read went to this one's late window."""
    d = Driver(window_tracker({"cam": "t"}))
    for seq in range(1, 8):
        t = 1000 * MS + seq * 120 * MS
        d.scan(read("cam", t + 1 * MS, f"C{seq}"))
        d.request(polled(seq, t + 90 * MS, t - 10 * MS))
    d.finish()
    assert codes_of(d) == {seq: (f"C{seq}",) for seq in range(1, 8)}
    assert d.tracker.stats.reads_orphaned == 0


def test_a_burst_after_a_slow_poll_drops_a_read_two_requests_could_hold() -> None:
    """Three requests seen by one poll 250 ms late; the camera sent nothing for the first:
    its read of the second could be either's. Dropped, not given to the first."""
    d = Driver(window_tracker({"cam": "t"}))
    t0 = 1000 * MS
    d.feed([read("cam", t0 + 1 * MS, "C1"), polled(1, t0 + 5 * MS, t0 - 2 * MS)])
    t = [t0 + k * 120 * MS for k in range(5)]  # items 2, 3, 4 at t[1], t[2], t[3]
    d.scan(read("cam", t[2] + 1 * MS, "C3"))  # nothing for item 2
    d.scan(read("cam", t[3] + 1 * MS, "C4"))
    poll = t[3] + 20 * MS
    for seq in (2, 3, 4):
        d.request(polled(seq, poll, t[1] - 3 * MS))
    d.finish()
    got = codes_of(d)
    assert got[1] == ("C1",)
    assert got[2] is None  # never C3
    # C3 could be 2's or 3's, C4 3's or 4's (the poll says nothing of when each came).
    assert got[3] is None
    assert got[4] is None
    assert d.tracker.stats.reads_ambiguous == 2
    assert d.tracker.heads["cam"].orphans == 2


def test_a_stall_of_the_daemon_drops_the_reads_it_held_up() -> None:
    """The daemon stalls 190 ms just after item 1's request: the camera's reads of items 1
    and 2, sent 12 ms after their requests, are taken at the stall's end, after item 1's
    window; the timer that should have closed that window ran late. Before the fix item
    1's read went to item 2, polled just after the stall."""
    d = Driver(window_tracker({"cam": "t"}))
    t1 = 1000 * MS
    d.feed([polled(0, t1 - 120 * MS, t1 - 125 * MS), read("cam", t1 - 119 * MS, "C0")])
    d.request(polled(1, t1, t1 - 5 * MS))
    d.advance(t1 + 10 * MS)
    d.now_ns = t1 + 200 * MS  # the stall: nothing ran, not even the timer
    d.scan(read("cam", t1 + 200 * MS, "C1"))
    d.scan(read("cam", t1 + 200 * MS, "C2"))
    d.request(polled(2, t1 + 201 * MS, t1 + 5 * MS))
    t3 = t1 + 360 * MS  # the host runs again: item 3 as usual
    d.feed([polled(3, t3 + 3 * MS, t3 - 2 * MS), read("cam", t3 + 1 * MS, "C3")])
    d.finish()
    got = codes_of(d)
    assert got[0] == ("C0",)
    assert got[1] is None
    assert got[2] is None  # either read could be item 2's: neither is given to it
    assert got[3] == ("C3",)
    assert d.tracker.stats.reads_ambiguous == 2


def test_on_a_healthy_host_the_poll_span_costs_no_read() -> None:
    """A 5 ms poll, reads 12 ms before to 14 ms after their request (as measured on the
    line): every read paired, each item decided as soon as its read and request are in."""
    rng = random.Random(3)
    d = Driver(window_tracker({"cam": "t"}))
    events: list[SortRequest | ScanRead] = []
    for seq in range(1, 200):
        t = 1000 * MS + seq * 120 * MS
        events.append(polled(seq, t + 4 * MS, t - 2 * MS))
        events.append(read("cam", t + rng.randint(-12, 14) * MS, f"C{seq}"))
    d.feed(events)
    d.finish()
    got = d.by_seq()
    assert codes_of(d) == {seq: (f"C{seq}",) for seq in range(1, 200)}
    assert d.tracker.stats.reads_orphaned == 0
    for seq, decided in got.items():
        t = 1000 * MS + seq * 120 * MS
        assert decided.at_ns <= t + 14 * MS  # paired at once: nothing waited for


# --- property: a starved host never pairs a read with the wrong item -------------------------


@dataclass(slots=True)
class Host:
    """When the daemon runs: stalls during which it does nothing."""

    stalls: list[tuple[int, int]] = field(default_factory=list)

    def taken(self, t_ns: int) -> int:
        """When the daemon gets to what arrived at t: at once, or at the end of a stall."""
        for start, end in self.stalls:
            if start <= t_ns < end:
                return end
        return t_ns


class StalledDriver(Driver):
    """The timer fires late when its deadline falls in a stall."""

    def __init__(self, host: Host, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.host = host

    def advance(self, to_ns: int) -> None:
        while True:
            due = self.tracker.next_deadline_ns()
            if due is None:
                break
            at = self.host.taken(max(due, self.now_ns))
            if at > to_ns:
                break
            self.now_ns = max(self.now_ns, at)
            self._take(self.tracker.expire(self.now_ns))
        self.now_ns = max(self.now_ns, to_ns)


def starved_line(
    seed: int, n_items: int, heads: list[str], drop: float, rtt_ms: int, stalls: int
) -> tuple[StalledDriver, dict[int, set[str]]]:
    rng = random.Random(seed)
    truth: list[int] = []
    t = 1000 * MS
    for _ in range(n_items):
        t += 120 * MS + rng.choice([0, 0, 0, rng.randrange(0, 300)]) * MS
        truth.append(t)
    end = truth[-1] + 1000 * MS
    host = Host()
    for _ in range(stalls):
        start = rng.randrange(1000 * MS, end)
        host.stalls.append((start, start + rng.randrange(20, 400) * MS))
    host.stalls.sort()
    events: list[SortRequest | ScanRead] = []
    sent: dict[int, set[str]] = {}
    for seq, t_item in enumerate(truth, 1):
        sent[seq] = set()
        for head in heads:
            if rng.random() < drop:
                continue
            arrived = t_item + rng.randint(-5, 5) * MS
            events.append(read(head, host.taken(arrived), f"I{seq}"))
            sent[seq].add(head)
    # The poll: sent 5 ms after the last answer (or when the host runs again), answered
    # one round trip later; it sees the requests written before the PLC answered.
    polls: list[tuple[int, int]] = []
    send = 900 * MS
    while send < end:
        answered = host.taken(send + rng.randint(1, rtt_ms) * MS)
        polls.append((send, answered))
        send = host.taken(answered + 5 * MS)
    p = 0
    for seq, t_item in enumerate(truth, 1):
        while polls[p][0] < t_item:  # the PLC answers this poll (at its send, say)
            p += 1
        events.append(polled(seq, polls[p][1], polls[p - 1][0]))
    d = StalledDriver(host, window_tracker(dict.fromkeys(heads, "t"), head_miss_limit=10**6))
    d.feed(events)
    d.finish()
    return d, sent


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    drop=st.sampled_from([0.0, 0.12, 0.5]),
    rtt_ms=st.sampled_from([2, 60, 250]),
    stalls=st.sampled_from([0, 5, 30]),
    n_heads=st.integers(1, 3),
)
def test_a_starved_host_never_pairs_a_read_with_the_wrong_item(
    seed: int, drop: float, rtt_ms: int, stalls: int, n_heads: int
) -> None:
    heads = ["top", "side", "bottom"][:n_heads]
    d, sent = starved_line(seed, 60, heads, drop, rtt_ms, stalls)
    got = d.by_seq()
    assert set(got) == set(sent)  # every request decided exactly once
    paired = 0
    for seq, decided in got.items():
        for r in decided.match.reads:
            assert r.codes == (f"I{seq}",), f"item {seq} got {r}"
            assert r.scanner in sent[seq]
        paired += len(decided.match.reads)
    stats = d.tracker.stats
    total = sum(len(s) for s in sent.values())
    assert paired + stats.reads_orphaned + stats.reads_late == total
    if rtt_ms == 2 and stalls == 0:
        assert paired == total  # a healthy host loses nothing
