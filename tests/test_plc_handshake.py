"""The PLC ring handshake (drivers/handshake.py) driven with plain lists of register values.

No sockets, no event loop: registers in, reads, writes and events out, as the driver
(drivers/plc.py) would see them.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import registers as R  # noqa: N812  (R.X reads like the register map)
from drivers.handshake import (
    Handshake,
    LinkChange,
    PlcError,
    PlcTimeoutError,
    Read,
    RingRead,
    Write,
    chute_reads,
    chute_status,
    ring_reads,
)
from sorter.errors import SorterdError
from sorter.ports import Confirmation, Outcome, Ring, SortRequest

SECOND_NS = 1_000_000_000


def header(**values: int) -> list[int]:
    """Registers 0..14 with interface_version 1 and the given registers by name."""
    regs = [0] * R.HEADER_COUNT
    regs[R.INTERFACE_VERSION] = 1
    for name, value in values.items():
        regs[R.register(name).address] = value
    return regs


def request_slot(seq: int, tracking_id: int) -> list[int]:
    return R.encode_request(
        SortRequest(seq, tracking_id, 1, length_mm=300, width_mm=200, height_mm=100, weight_g=5)
    )


def conf_slot(seq: int, tracking_id: int, outcome: int = Outcome.SORTED) -> list[int]:
    hi, lo = R.split32(tracking_id)
    return [seq, hi, lo, 7, outcome, 0]


def answers(plan: RingRead, slots: list[list[int]]) -> list[list[int]]:
    """The registers a PLC returns for `plan.reads` when its ring holds `slots` in message
    order from `plan.first`."""
    flat = [v for regs in slots for v in regs]
    out, at = [], 0
    for read in plan.reads:
        out.append(flat[at : at + read.count])
        at += read.count
    return out


def connected(**values: int) -> Handshake:
    hs = Handshake(heartbeat_timeout_ns=SECOND_NS)
    assert hs.resume(header(**values), 0) is False
    return hs


# ---------------------------------------------------------------------- connect


def test_resume_takes_the_ring_positions_from_the_plc() -> None:
    hs = connected(req_ack=5, rep_head=4, conf_ack=3, host_heartbeat=9)
    assert (hs.req_ack, hs.rep_head, hs.conf_ack) == (5, 4, 3)
    assert hs.heartbeat_write() == Write(R.HOST_HEARTBEAT, [10])


def test_another_interface_version_is_refused() -> None:
    hs = Handshake(heartbeat_timeout_ns=SECOND_NS)
    regs = header()
    regs[R.INTERFACE_VERSION] = 2
    with pytest.raises(PlcError, match="interface_version is 2"):
        hs.resume(regs, 0)


def test_a_short_header_is_an_error_not_an_index_error() -> None:
    hs = Handshake(heartbeat_timeout_ns=SECOND_NS)
    with pytest.raises(PlcError, match="read 15 registers at 0: got 14"):
        hs.resume(header()[:14], 0)


def test_a_plc_that_lost_the_host_registers_jumps_both_rings() -> None:
    hs = connected(conf_ack=100, conf_head=164)
    plan = hs.plan_confirmations(header(conf_head=164))
    assert plan is not None
    confs, _ = hs.take_confirmations(plan, answers(plan, [conf_slot(i, i) for i in range(64)]), 0)
    assert len(confs) == 64
    # A power cycle that reset every register: acks back to 0, more than a ring behind ours.
    assert hs.resume(header(), 0) is True
    assert hs.stats.counter_jumps == 1
    # The same (tracking_id, seq) pairs are new items now, not re-reads.
    plan = hs.plan_confirmations(header(conf_head=1))
    assert plan is not None
    confs, _ = hs.take_confirmations(plan, answers(plan, [conf_slot(0, 0)]), 0)
    assert len(confs) == 1


def test_a_reconnect_a_ring_behind_is_no_restart() -> None:
    hs = connected(req_head=64)
    plan = hs.plan_requests(header(req_head=64))
    assert plan is not None
    hs.take_requests(plan, answers(plan, [request_slot(i, i) for i in range(64)]), 0)
    # The ack write was lost with the link: the PLC still says 0, one ring behind us.
    assert hs.resume(header(req_head=64), 0) is False
    assert hs.req_ack == 0


# ---------------------------------------------------------------------- requests and replies


def test_normal_flow_requests_replies_and_the_ack_in_one_write() -> None:
    hs = connected()
    plan = hs.plan_requests(header(req_head=3))
    assert plan == RingRead(Ring.REQUESTS, 0, 3, 3, False, (Read(R.REQUEST_BASE, 24),))
    requests = hs.take_requests(plan, answers(plan, [request_slot(i, 10 + i) for i in range(3)]), 7)
    assert requests is not None
    assert [(r.seq, r.tracking_id, r.received_ns) for r in requests] == [
        (0, 10, 7),
        (1, 11, 7),
        (2, 12, 7),
    ]
    assert hs.req_ack == 3
    for r in requests:
        hs.queue_reply(r.seq, r.tracking_id, 4)
    writes = hs.reply_writes(ack=True)
    assert writes == [
        Write(R.REPLY_BASE, [0, 0, 10, 4, 1, 0, 11, 4, 2, 0, 12, 4]),
        Write(R.REQ_ACK, [3, 3]),  # req_ack and rep_head together, after the slots
    ]
    assert hs.pending_replies == 3  # not gone before the head write landed
    assert hs.replies_written() == 3
    assert (hs.pending_replies, hs.rep_head, hs.stats.replies) == (0, 3, 3)
    assert hs.plan_requests(header(req_head=3)) is None


def test_more_replies_than_the_ring_go_out_one_ring_at_a_time() -> None:
    """Replies pile up while the link waits (a slow disk sync, a stalled PLC): one write
    round never moves rep_head by more than the ring, or it would overwrite unread slots."""
    hs = connected(rep_head=10)
    for i in range(100):
        hs.queue_reply(i, 1000 + i, 3)
    first = hs.reply_writes()
    assert first[-1] == Write(R.REQ_ACK, [0, 74])
    assert sum(len(w.values) for w in first[:-1]) == 64 * R.REPLY_SIZE
    assert hs.replies_written() == 64
    second = hs.reply_writes()
    assert second[-1] == Write(R.REQ_ACK, [0, 110])
    assert second[0].values[:3] == [64, 0, 1064]  # in order, from the 65th
    assert hs.replies_written() == 36
    assert hs.pending_replies == 0


def test_nothing_queued_acks_alone_or_writes_nothing() -> None:
    hs = connected(req_ack=2)
    assert hs.reply_writes(ack=True) == [Write(R.REQ_ACK, [2])]
    assert hs.reply_writes() == []
    assert hs.replies_written() == 0


def test_counters_wrap_around_65535() -> None:
    start = 65534
    hs = connected(req_ack=start, rep_head=start)
    plan = hs.plan_requests(header(req_head=2))
    assert plan is not None
    assert (plan.first, plan.count, plan.jumped) == (start, 4, False)
    # Slots 62, 63, then 0, 1: never one read across the ring's end.
    assert plan.reads == (Read(R.REQUEST_BASE + 8 * 62, 16), Read(R.REQUEST_BASE, 16))
    seqs = [65534, 65535, 0, 1]
    requests = hs.take_requests(plan, answers(plan, [request_slot(s, s) for s in seqs]), 0)
    assert requests is not None
    assert [r.seq for r in requests] == seqs
    for r in requests:
        hs.queue_reply(r.seq, r.tracking_id, 1)
    writes = hs.reply_writes(ack=True)
    assert [w.address for w in writes] == [R.REPLY_BASE + 4 * 62, R.REPLY_BASE, R.REQ_ACK]
    assert writes[-1] == Write(R.REQ_ACK, [2, 2])
    hs.replies_written()
    assert hs.rep_head == 2


def test_replies_split_at_the_ring_end_and_at_123_registers() -> None:
    hs = connected(rep_head=50)
    for i in range(64):
        hs.queue_reply(i, i, 1)
    writes = hs.reply_writes()
    # 14 slots to the ring's end, then 30 (120 registers, 123 at most), then the last 20.
    assert [(w.address, len(w.values)) for w in writes[:-1]] == [
        (R.REPLY_BASE + 4 * 50, 56),
        (R.REPLY_BASE, 120),
        (R.REPLY_BASE + 4 * 30, 80),
    ]
    assert writes[-1] == Write(R.REQ_ACK, [0, 114])


def test_a_request_slot_with_the_wrong_seq_is_skipped_and_counted() -> None:
    hs = connected()
    plan = hs.plan_requests(header(req_head=2))
    assert plan is not None
    stale = request_slot(9, 99)  # not message 1's slot
    requests = hs.take_requests(plan, answers(plan, [request_slot(0, 1), stale]), 0)
    assert requests is not None
    assert [r.tracking_id for r in requests] == [1]
    assert hs.stats.bad_requests == 1
    assert hs.req_ack == 2  # skipped, never answered, and not read again


def test_a_plc_restart_jumps_the_request_ring_and_keeps_the_live_slots() -> None:
    hs = connected(req_ack=1000, req_head=1000)
    # Restarted with its counters reset: head 3 is "65,071 ahead" of our ack.
    plan = hs.plan_requests(header(req_head=3))
    assert plan is not None
    assert plan.jumped
    assert (plan.first, plan.count) == ((3 - 64) % 65536, 64)
    assert hs.stats.counter_jumps == 1
    slots = [request_slot(999, 1)] * 61 + [request_slot(i, 500 + i) for i in range(3)]
    requests = hs.take_requests(plan, answers(plan, slots), 0)
    assert requests is not None
    assert [r.seq for r in requests] == [0, 1, 2]
    assert hs.stats.bad_requests == 0  # stale slots of a jump are expected, not bad


def test_an_overrun_reads_only_the_newest_ring() -> None:
    hs = connected()
    plan = hs.plan_requests(header(req_head=70))
    assert plan is not None
    assert (plan.first, plan.count, plan.jumped) == (6, 64, True)


def test_intake_stopped_reads_nothing_and_acks_nothing() -> None:
    hs = connected()
    plan = hs.plan_requests(header(req_head=1))
    assert plan is not None
    hs.intake = False  # stopped while the slots were being read
    assert hs.take_requests(plan, answers(plan, [request_slot(0, 1)]), 0) is None
    assert hs.req_ack == 0
    assert hs.plan_requests(header(req_head=1)) is None


def test_a_head_write_that_landed_without_its_answer_is_not_sent_twice() -> None:
    hs = connected(rep_head=10)
    hs.queue_reply(0, 1, 2)
    hs.queue_reply(1, 2, 3)
    hs.reply_writes()  # the link died before the answer of the head write
    assert hs.resume(header(rep_head=12), 0) is False  # ...but the PLC has it
    assert (hs.pending_replies, hs.stats.replies, hs.rep_head) == (0, 2, 12)


def test_a_lost_head_write_sends_the_replies_again_after_the_reconnect() -> None:
    hs = connected(rep_head=10)
    hs.queue_reply(0, 1, 2)
    hs.reply_writes()
    hs.resume(header(rep_head=10), 0)  # the PLC never saw the head move
    assert hs.pending_replies == 1
    writes = hs.reply_writes()
    assert writes == [Write(R.REPLY_BASE + 4 * 10, [0, 0, 1, 2]), Write(R.REQ_ACK, [0, 11])]


# ---------------------------------------------------------------------- confirmations


def test_confirmations_re_read_after_a_lost_ack_are_duplicates() -> None:
    hs = connected()
    plan = hs.plan_confirmations(header(conf_head=2))
    assert plan is not None
    slots = [conf_slot(0, 5), conf_slot(1, 6, Outcome.RECIRC_FULL)]
    confs, ack = hs.take_confirmations(plan, answers(plan, slots), 3)
    assert [(c.tracking_id, c.outcome, c.received_ns) for c in confs] == [
        (5, Outcome.SORTED, 3),
        (6, Outcome.RECIRC_FULL, 3),
    ]
    assert ack == Write(R.CONF_ACK, [2])
    hs.resume(header(conf_head=2), 0)  # that ack write was lost with the link
    plan = hs.plan_confirmations(header(conf_head=2))
    assert plan is not None
    confs, _ = hs.take_confirmations(plan, answers(plan, slots), 0)
    assert confs == []
    assert hs.stats.duplicate_confirmations == 2
    assert hs.stats.confirmations == 2


@pytest.mark.parametrize("outcome", [0, 8, 0xFFFF])
def test_an_outcome_out_of_range_is_skipped_and_counted(outcome: int) -> None:
    hs = connected()
    plan = hs.plan_confirmations(header(conf_head=2))
    assert plan is not None
    slots = [conf_slot(0, 5, outcome), conf_slot(1, 6)]
    confs, ack = hs.take_confirmations(plan, answers(plan, slots), 0)
    assert [c.tracking_id for c in confs] == [6]
    assert hs.stats.bad_confirmations == 1
    assert ack == Write(R.CONF_ACK, [2])


def test_a_confirmation_ring_jump_forgets_what_was_delivered() -> None:
    hs = connected(conf_ack=500)
    plan = hs.plan_confirmations(header(conf_head=1))
    assert plan is not None
    assert plan.jumped
    slots = [conf_slot(0, 0, 0)] * 63 + [conf_slot(0, 42)]
    confs, ack = hs.take_confirmations(plan, answers(plan, slots), 0)
    assert [c.tracking_id for c in confs] == [42]
    assert hs.stats.bad_confirmations == 0
    assert ack == Write(R.CONF_ACK, [1])
    plan = hs.plan_confirmations(header(conf_head=2))
    assert plan is not None
    confs, _ = hs.take_confirmations(plan, answers(plan, [conf_slot(0, 42)]), 0)
    assert confs == [Confirmation(0, 42, 7, Outcome.SORTED, 0, 0)]  # a new item's


# ---------------------------------------------------------------------- wrong answers


def test_a_short_answer_is_an_error_and_a_long_one_is_cut() -> None:
    with pytest.raises(PlcError, match="read 8 registers at 100: got 7"):
        Read(100, 8).fit([0] * 7)
    assert Read(100, 2).fit([1, 2, 3]) == [1, 2]


def test_ring_answers_of_the_wrong_length_or_number_are_errors() -> None:
    hs = connected()
    plan = hs.plan_requests(header(req_head=2))
    assert plan is not None
    with pytest.raises(PlcError, match="got 15"):
        hs.take_requests(plan, [[0] * 15], 0)
    with pytest.raises(PlcError, match="2 answers to 1 reads"):
        hs.take_requests(plan, [[0] * 16, [0] * 16], 0)
    assert hs.req_ack == 0  # nothing taken


def test_errors_form_a_tree() -> None:
    assert issubclass(PlcError, SorterdError)
    assert issubclass(PlcTimeoutError, PlcError)
    assert issubclass(PlcTimeoutError, TimeoutError)
    assert not issubclass(PlcError, TimeoutError)


# ---------------------------------------------------------------------- heartbeats, chutes


def test_a_frozen_plc_heartbeat_takes_the_device_down_and_a_beat_brings_it_back() -> None:
    hs = connected(plc_heartbeat=7)
    assert hs.watch_heartbeat(header(plc_heartbeat=7, plc_state=1), SECOND_NS) is None
    assert hs.stats.plc_state == 1
    frozen = hs.watch_heartbeat(header(plc_heartbeat=7), SECOND_NS + 1)
    assert frozen == LinkChange(connected=False, reason="plc heartbeat frozen")
    assert hs.stats.errors == 1
    assert hs.watch_heartbeat(header(plc_heartbeat=7), 5 * SECOND_NS) is None  # said once
    back = hs.watch_heartbeat(header(plc_heartbeat=8), 5 * SECOND_NS)
    assert back == LinkChange(connected=True, reason="plc heartbeat resumed")


def test_the_host_heartbeat_wraps() -> None:
    hs = connected(host_heartbeat=65535)
    assert hs.heartbeat_write() == Write(R.HOST_HEARTBEAT, [0])


def test_the_chute_block_is_read_in_pieces_of_125() -> None:
    reads = chute_reads(300)
    assert reads == [Read(2001, 125), Read(2126, 125), Read(2251, 50)]
    status = chute_status(reads, [[1] * 125, [2] * 125, [4] * 51])
    assert status == [1] * 125 + [2] * 125 + [4] * 50
    assert chute_reads(0) == []
    with pytest.raises(PlcError):
        chute_status(reads, [[1] * 125])


@given(
    first=st.integers(0, 65535),
    count=st.integers(0, R.RING_SLOTS),
    size=st.sampled_from([R.REQUEST_SIZE, R.CONF_SIZE]),
)
def test_ring_reads_cover_each_slot_once_within_the_ring_and_the_pdu(
    first: int, count: int, size: int
) -> None:
    reads = ring_reads(R.REQUEST_BASE, size, first, count)
    covered: list[int] = []
    for read in reads:
        assert read.count % size == 0
        assert read.count <= R.MAX_READ_REGS
        start = (read.address - R.REQUEST_BASE) // size
        assert start + read.count // size <= R.RING_SLOTS  # never across the ring's end
        covered.extend(range(start, start + read.count // size))
    assert covered == [R.slot(first + i) for i in range(count)]
