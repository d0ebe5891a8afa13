"""The line core with a real journal: re-reads, restarts of the daemon and of the PLC."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from drivers.journal import Journal, JournalOutbox
from drivers.mqtt import MqttPublisher
from sorter.contract import Topics
from sorter.decide import Decider
from sorter.kernel import ChuteState
from sorter.line import Line
from sorter.plan import compile_plan, load_plan
from sorter.ports import Confirmation, Outcome, Ring, ScanRead, SortRequest
from sorter.tracker import Tracker
from sorterd.demo import demo_config_dir

MS = 1_000_000
CODES = ("RB123456785GB",)  # demo plan: an S10 code from Great Britain, ok


class Rig:
    """A line core as the daemon builds it, with the PLC's replies recorded."""

    def __init__(self, path: Path, heads: dict[str, str] | None = None) -> None:
        plan = compile_plan(load_plan(demo_config_dir() / "sortplan.toml"))
        self.journal = Journal(path, synchronous="normal")
        # Never run: messages stay in the journal, which is what a restart finds.
        self.mqtt = MqttPublisher("mqtt://127.0.0.1:1", store=self.journal)
        self.now_ns = 10**12
        self.replies: list[tuple[int, int, int]] = []
        self.core = Line(
            Decider(plan, ChuteState.for_plan(plan), site_country="MA"),
            Tracker(scan_wait_ns=200 * MS, scan_ttl_ns=30_000 * MS, heads=heads),
            self._publish,
            Topics("p"),
            clock_ns=lambda: self.now_ns,
            durable=JournalOutbox(self.journal, self.mqtt),
        )
        self.core.bind_reply(lambda seq, tid, chute: self.replies.append((seq, tid, chute)))

    def _publish(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False
    ) -> None:
        pass

    def request(self, tid: int, seq: int) -> SortRequest:
        return SortRequest(seq, tid, 1, 0, 0, 0, 0, received_ns=self.now_ns)

    def decisions(self) -> list[tuple[int, int]]:
        return self.rows("decision")

    def rows(self, kind: str) -> list[tuple[int, int]]:
        """(tracking_id, seq) of the journal's messages of a kind, read as another process
        would read the file."""
        with contextlib.closing(sqlite3.connect(self.journal.path)) as db:
            rows = db.execute(
                "SELECT tracking_id, seq FROM message WHERE kind=? ORDER BY id", (kind,)
            ).fetchall()
        return [(int(t), int(s)) for t, s in rows]


def test_a_request_read_again_gets_the_same_reply_and_no_second_decision(tmp_path: Path) -> None:
    line = Rig(tmp_path / "j.sqlite")
    line.core.on_scan(ScanRead("tunnel-1", 7, CODES, line.now_ns))
    line.core.on_requests([line.request(7, 1)])
    assert len(line.replies) == 1
    line.core.on_requests([line.request(7, 1)])  # the req_ack write was lost
    assert line.replies == [line.replies[0]] * 2
    assert line.decisions() == [(7, 1)]
    assert line.core.counters.replies_repeated == 1


def test_a_restarted_daemon_answers_as_before_and_drops_known_results(tmp_path: Path) -> None:
    first = Rig(tmp_path / "j.sqlite")
    first.core.on_scan(ScanRead("tunnel-1", 7, CODES, first.now_ns))
    first.core.on_requests([first.request(7, 1), first.request(8, 2)])  # 8 waits
    chute_7 = first.replies[0][2]
    first.core.on_confirmations([Confirmation(1, 7, chute_7, Outcome.SORTED, 0)])
    first.journal.close()  # the process dies: every step was committed already

    second = Rig(tmp_path / "j.sqlite")
    second.core.restore(second.journal.recover())
    # The PLC presents 7 again (its ack was lost) and the confirmation again.
    second.core.on_requests([second.request(7, 1)])
    second.core.on_confirmations([Confirmation(1, 7, chute_7, Outcome.SORTED, 0)])
    assert second.replies[0] == (1, 7, chute_7)
    assert second.core.counters.duplicate_results == 1
    # 8 was taken but not decided: it is decided now (as when its new scan wait runs out).
    second.core.answer_waiting()
    assert [(seq, tid) for seq, tid, _ in second.replies] == [(1, 7), (2, 8)]
    assert second.decisions() == [(7, 1), (8, 2)]
    assert second.rows("result") == [(7, 1)]


def test_after_a_plc_restart_a_reused_pair_is_a_new_item(tmp_path: Path) -> None:
    line = Rig(tmp_path / "j.sqlite")
    line.core.on_scan(ScanRead("tunnel-1", 1, CODES, line.now_ns))
    line.core.on_requests([line.request(1, 0)])
    chute = line.replies[-1][2]
    line.core.on_confirmations([Confirmation(0, 1, chute, Outcome.SORTED, 0)])
    line.core.on_counters_jumped(Ring.REQUESTS)  # the PLC restarted: ids and seqs anew
    line.core.on_counters_jumped(Ring.CONFIRMATIONS)
    line.now_ns += 1000 * MS
    line.core.on_scan(ScanRead("tunnel-1", 1, ("RB000000005MA",), line.now_ns))
    line.core.on_requests([line.request(1, 0)])
    assert line.decisions() == [(1, 0), (1, 0)]  # decided afresh, not answered from memory
    assert len(line.replies) == 2
    assert line.core.counters.replies_repeated == 0
    line.core.on_confirmations([Confirmation(0, 1, line.replies[-1][2], Outcome.SORTED, 0)])
    assert line.rows("result") == [(1, 0), (1, 0)]  # not dropped as a duplicate


def test_a_read_before_its_request_asks_the_plc_link_to_poll_for_it(tmp_path: Path) -> None:
    """A read whose request is not here yet calls `on_read_ahead` (the PLC link then polls
    for the request at once); a read that completes a waiting request decides instead."""
    line = Rig(tmp_path / "j.sqlite")
    asked: list[int] = []
    line.core.on_read_ahead = lambda: asked.append(len(line.replies))
    line.core.on_scan(ScanRead("tunnel-1", 7, CODES, line.now_ns))  # the read first
    assert asked == [0]
    line.core.on_requests([line.request(7, 1)])
    line.core.on_requests([line.request(8, 2)])  # the request first: it waits
    line.core.on_scan(ScanRead("tunnel-1", 8, CODES, line.now_ns))
    assert asked == [0]  # decided at once: nothing to poll for
    assert [(seq, tid) for seq, tid, _ in line.replies] == [(1, 7), (2, 8)]


def test_a_read_whose_request_is_here_already_asks_for_no_poll(tmp_path: Path) -> None:
    """A tunnel of two heads, the request first: the first head's read joins it and the
    item waits for the other head's, so the read makes no match yet, but it has no
    request to poll for: the link must not poll every millisecond for it (a few header
    reads for every item of a two-head tunnel)."""
    line = Rig(tmp_path / "j.sqlite", heads={"tunnel-1": "t", "tunnel-2": "t"})
    asked: list[int] = []
    line.core.on_read_ahead = lambda: asked.append(len(line.replies))
    line.core.on_requests([line.request(8, 1)])
    line.core.on_scan(ScanRead("tunnel-1", 8, CODES, line.now_ns))
    assert line.replies == []  # waits for the tunnel's other head
    line.core.on_scan(ScanRead("tunnel-2", 8, CODES, line.now_ns))
    assert [(seq, tid) for seq, tid, _ in line.replies] == [(1, 8)]
    assert asked == []
    line.core.on_scan(ScanRead("tunnel-1", 9, CODES, line.now_ns))  # the read first
    assert asked == [1]


def test_reads_first_ask_for_a_poll_on_a_line_that_has_run_a_while(tmp_path: Path) -> None:
    """Every read that comes before its request asks, also once the tracker's store of
    reads is in its steady state (each new read as an old one leaves it by its age)."""
    line = Rig(tmp_path / "j.sqlite")
    asked: list[int] = []
    line.core.on_read_ahead = lambda: asked.append(len(line.replies))
    items = 45  # one a second: the first reads pass the tracker's 30 s before the last
    for tid in range(1, items + 1):
        line.now_ns += 1000 * MS
        line.core.on_scan(ScanRead("tunnel-1", tid, CODES, line.now_ns))
        line.core.on_requests([line.request(tid, tid)])
    assert asked == list(range(items))
