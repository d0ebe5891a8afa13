"""The PLC ring handshake (docs/interfaces.md section 3) as a state machine without I/O.

Like pymodbus's framers or h11: registers go in, the reads and writes to make and what
happened come out; nothing here awaits, sleeps or reads a clock (times are passed in).
`drivers.plc.PlcLink` does the awaits: it reads the header, asks `plan_requests` which
slots to read, reads them, hands them to `take_requests`, writes what `reply_writes` says,
and so on. tests/test_plc_handshake.py drives it with plain lists of register values.

What it owns: the ring positions (req_ack, rep_head, conf_ack, resynchronised from the PLC
on every connect), the replies queued and not yet in the PLC, the confirmations already
delivered (a re-read slot is a duplicate, not a second result), the PLC heartbeat watch, the
host heartbeat value; and which reads fetch the chute status block.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from drivers import registers as R  # noqa: N812  (R.X reads like the register map)
from sorter.bounded import BoundedMap
from sorter.errors import SorterdError, SorterdTimeoutError
from sorter.ports import Confirmation, Ring, SortRequest

__all__ = [
    "Handshake",
    "LinkChange",
    "PlcError",
    "PlcStats",
    "PlcTimeoutError",
    "Read",
    "RingRead",
    "Write",
    "chute_reads",
    "chute_status",
    "ring_reads",
]

log = structlog.get_logger("drivers.plc")

DELIVERED_MEMORY = 4096  # confirmations remembered to drop re-reads: 64 rings' worth
_BAD_LOG_INTERVAL_NS = 1_000_000_000


class PlcError(SorterdError):
    """The PLC link failed: no answer, a Modbus exception, or an answer that makes no sense."""


class PlcTimeoutError(PlcError, SorterdTimeoutError):
    """The PLC did not answer in time (also a `TimeoutError`)."""


@dataclass(frozen=True, slots=True)
class Read:
    """Read `count` holding registers from `address`."""

    address: int
    count: int

    def fit(self, regs: Sequence[int]) -> list[int]:
        """The answer cut to what was asked; PlcError when the PLC sent fewer registers."""
        if len(regs) < self.count:
            raise PlcError(f"read {self.count} registers at {self.address}: got {len(regs)}")
        return list(regs[: self.count])


@dataclass(frozen=True, slots=True)
class Write:
    """Write `values` to consecutive holding registers from `address`."""

    address: int
    values: list[int]


@dataclass(frozen=True, slots=True)
class RingRead:
    """The unread messages first..first+count-1 of one ring, and the reads that fetch them.

    `jumped`: the head was more than a ring past the ack (a PLC restart with its counters
    reset, or an overrun): only the newest 64 slots are read.
    """

    ring: Ring
    first: int
    count: int
    head: int
    jumped: bool
    reads: tuple[Read, ...]


@dataclass(frozen=True, slots=True)
class LinkChange:
    """The PLC heartbeat froze or moved again: the device is down or up."""

    connected: bool
    reason: str


@dataclass(slots=True)
class PlcStats:
    cycles: int = 0
    requests: int = 0
    confirmations: int = 0
    replies: int = 0
    errors: int = 0
    reconnects: int = 0
    counter_jumps: int = 0  # a head more than a ring past our ack: PLC restart or overrun
    duplicate_confirmations: int = 0
    bad_confirmations: int = 0
    bad_requests: int = 0
    last_seen_ns: int = 0
    last_error: str = ""
    plc_state: int = -1
    io_ms_max: float = 0.0


def ring_reads(base: int, size: int, first: int, count: int) -> tuple[Read, ...]:
    """Reads of the slots of messages first..first+count-1: as few as 125 registers allow,
    none across the ring's end."""
    reads: list[Read] = []
    per_read = R.MAX_READ_REGS // size
    k = first
    while count:
        s = R.slot(k)
        n = min(count, R.RING_SLOTS - s, per_read)
        reads.append(Read(base + size * s, size * n))
        k += n
        count -= n
    return tuple(reads)


def chute_reads(max_chute: int) -> list[Read]:
    """Reads of the status of chutes 1..max_chute, 125 registers at most each."""
    reads = []
    chute = 1
    while chute <= max_chute:
        count = min(R.MAX_READ_REGS, max_chute - chute + 1)
        reads.append(Read(R.CHUTE_BASE + chute, count))
        chute += count
    return reads


def chute_status(reads: Sequence[Read], blocks: Sequence[Sequence[int]]) -> list[int]:
    """The status words of the chutes from the answers to `chute_reads`."""
    if len(blocks) != len(reads):
        raise PlcError(f"chute status: {len(blocks)} answers to {len(reads)} reads")
    return [v for read, block in zip(reads, blocks, strict=True) for v in read.fit(block)]


def _slots(plan: RingRead, blocks: Sequence[Sequence[int]], size: int) -> list[list[int]]:
    """The answers to `plan.reads`, split into one list per slot."""
    if len(blocks) != len(plan.reads):
        raise PlcError(f"{plan.ring} ring: {len(blocks)} answers to {len(plan.reads)} reads")
    regs = [v for read, block in zip(plan.reads, blocks, strict=True) for v in read.fit(block)]
    return [regs[i : i + size] for i in range(0, len(regs), size)]


class Handshake:
    """The host's side of the rings, heartbeats and chute block; one per PLC link, kept
    across reconnects (queued replies and delivered confirmations outlive a session)."""

    def __init__(self, *, heartbeat_timeout_ns: int) -> None:
        self.heartbeat_timeout_ns = heartbeat_timeout_ns
        self.stats = PlcStats()
        self.intake = True  # False: requests stay in the PLC's ring (graceful stop)
        # Ring positions; synchronised from the PLC's registers on every connect.
        self.req_ack = 0
        self.rep_head = 0
        self.conf_ack = 0
        self.host_heartbeat = 0
        self.heartbeat_alive = False
        self._last_plc_heartbeat = -1
        self._plc_heartbeat_changed_ns = 0
        self._bad_logged_ns = -(10**18)
        self._delivered: BoundedMap[tuple[int, int], None] = BoundedMap(DELIVERED_MEMORY)
        self._replies: deque[list[int]] = deque()
        self._in_flight: tuple[int, int] | None = None  # (first, n) replies whose head write is out
        self._sessions = 0

    # ------------------------------------------------------------------ connect

    def resume(self, header: Sequence[int], now_ns: int) -> bool:
        """A new session read `header` (registers 0..14): take the ring positions from it.

        True when the PLC lost its memory of this host (a power cycle that reset every
        register): both rings then count as jumped. PlcError for an interface version
        other than 1.
        """
        header = Read(0, R.HEADER_COUNT).fit(header)
        if header[R.INTERFACE_VERSION] != R.INTERFACE_VERSION_V1:
            raise PlcError(
                f"PLC interface_version is {header[R.INTERFACE_VERSION]}, this host speaks 1"
            )
        self._sessions += 1
        lost = self._sessions > 1 and self._host_registers_lost(header)
        if self._in_flight is not None:
            first, n = self._in_flight
            self._in_flight = None
            if R.counter_diff(header[R.REP_HEAD], first) == n:
                for _ in range(min(n, len(self._replies))):
                    self._replies.popleft()  # that head write did land
                self.stats.replies += n
        # Resume where the PLC says we were: unconsumed requests and confirmations between
        # ack and head are processed now; replies continue after the PLC's rep_head.
        self.req_ack = header[R.REQ_ACK]
        self.rep_head = header[R.REP_HEAD]
        self.conf_ack = header[R.CONF_ACK]
        self.host_heartbeat = header[R.HOST_HEARTBEAT]
        self._last_plc_heartbeat = header[R.PLC_HEARTBEAT]
        self._plc_heartbeat_changed_ns = now_ns
        self.heartbeat_alive = True
        return lost

    def _host_registers_lost(self, header: list[int]) -> bool:
        """After a reconnect, the acks the PLC holds are ours, or at most a ring behind (a
        write lost with the link). Anything else means the PLC lost its memory of us: its
        ids and seqs start again."""
        req_behind = R.counter_diff(self.req_ack, header[R.REQ_ACK])
        conf_behind = R.counter_diff(self.conf_ack, header[R.CONF_ACK])
        if req_behind <= R.RING_SLOTS and conf_behind <= R.RING_SLOTS:
            return False
        self.stats.counter_jumps += 1
        log.warning(
            "plc registers reset",
            req_ack=header[R.REQ_ACK],
            req_ack_was=self.req_ack,
            conf_ack=header[R.CONF_ACK],
            conf_ack_was=self.conf_ack,
        )
        self._delivered.clear()
        return True

    # ------------------------------------------------------------------ heartbeats

    def watch_heartbeat(self, header: Sequence[int], now_ns: int) -> LinkChange | None:
        """The PLC heartbeat of a cycle's header: did the device go down or come back?"""
        self.stats.plc_state = header[R.PLC_STATE]
        beat = header[R.PLC_HEARTBEAT]
        if beat != self._last_plc_heartbeat:
            self._last_plc_heartbeat = beat
            self._plc_heartbeat_changed_ns = now_ns
            if not self.heartbeat_alive:
                self.heartbeat_alive = True
                return LinkChange(connected=True, reason="plc heartbeat resumed")
        elif (
            self.heartbeat_alive
            and now_ns - self._plc_heartbeat_changed_ns > self.heartbeat_timeout_ns
        ):
            self.heartbeat_alive = False
            self.stats.errors += 1
            self.stats.last_error = "plc heartbeat frozen"
            return LinkChange(connected=False, reason="plc heartbeat frozen")
        return None

    def heartbeat_write(self) -> Write:
        """The next host heartbeat."""
        self.host_heartbeat = (self.host_heartbeat + 1) % R.COUNTER_MOD
        return Write(R.HOST_HEARTBEAT, [self.host_heartbeat])

    # ------------------------------------------------------------------ rings

    def _unread(self, ring: Ring, head: int, ack: int, base: int, size: int) -> RingRead | None:
        """More than a ring ahead means the PLC restarted with its counters reset (the head
        went back) or overran the ring: only the last 64 slots can hold live messages, and
        the takers keep just those (requests by seq, confirmations by identity)."""
        n = R.counter_diff(head, ack)
        if n == 0:
            return None
        first, jumped = ack, False
        if n > R.RING_SLOTS:
            self.stats.counter_jumps += 1
            log.warning("plc counter jumped", ring=str(ring), head=head, ack=ack)
            first, n, jumped = (head - R.RING_SLOTS) % R.COUNTER_MOD, R.RING_SLOTS, True
        return RingRead(ring, first, n, head, jumped, ring_reads(base, size, first, n))

    def plan_requests(self, header: Sequence[int]) -> RingRead | None:
        """The request slots to read, or None. When it says `jumped`, the caller tells the
        line before it takes the requests (they may reuse old (tracking_id, seq) pairs)."""
        if not self.intake:
            return None
        return self._unread(
            Ring.REQUESTS, header[R.REQ_HEAD], self.req_ack, R.REQUEST_BASE, R.REQUEST_SIZE
        )

    def take_requests(
        self,
        plan: RingRead,
        blocks: Sequence[Sequence[int]],
        now_ns: int,
        earliest_ns: int = 0,
    ) -> list[SortRequest] | None:
        """The requests of the slots read for `plan`; None when intake stopped meanwhile
        (then nothing is handed over or acknowledged). Moves req_ack to the head: the next
        `reply_writes(ack=True)` carries it. `earliest_ns`: the soonest each can have been
        written (0: unknown)."""
        if not self.intake:
            return None
        requests = []
        for i, regs in enumerate(_slots(plan, blocks, R.REQUEST_SIZE)):
            # A request's seq is its message number: a slot that says otherwise was not
            # written for this message (a PLC restarted without its memory, a stale ring).
            expected = (plan.first + i) % R.COUNTER_MOD
            if regs[0] != expected:
                if not plan.jumped:
                    self.stats.bad_requests += 1
                    self._warn_bad(now_ns, "request slot with wrong seq skipped", expected=expected)
                continue
            requests.append(R.decode_request(regs, now_ns, earliest_ns))
        self.req_ack = plan.head
        self.stats.requests += len(requests)
        return requests

    def plan_confirmations(self, header: Sequence[int]) -> RingRead | None:
        """The confirmation slots to read, or None."""
        return self._unread(
            Ring.CONFIRMATIONS, header[R.CONF_HEAD], self.conf_ack, R.CONF_BASE, R.CONF_SIZE
        )

    def take_confirmations(
        self, plan: RingRead, blocks: Sequence[Sequence[int]], now_ns: int
    ) -> tuple[list[Confirmation], Write]:
        """The new confirmations of the slots read for `plan` (bad slots and re-reads
        dropped), and the conf_ack write to make once they are handed over. After a jump
        the caller tells the line, after handing these over."""
        confirmations = []
        for regs in _slots(plan, blocks, R.CONF_SIZE):
            try:
                conf = R.decode_confirmation(regs, now_ns)
            except R.RegisterError as exc:
                if not plan.jumped:
                    self.stats.bad_confirmations += 1
                    self._warn_bad(
                        now_ns, "bad confirmation slot skipped", error=str(exc), regs=regs
                    )
                continue
            # Read again after a reconnect whose conf_ack write was lost, or a stale slot
            # after a counter jump: one item, one confirmation.
            if not self._delivered.add((conf.tracking_id, conf.seq)):
                self.stats.duplicate_confirmations += 1
                continue
            confirmations.append(conf)
        self.conf_ack = plan.head
        self.stats.confirmations += len(confirmations)
        if plan.jumped:
            # The stale slots of the jump are filtered out above and will not be read
            # again: from now on a known (tracking_id, seq) is a new item's confirmation.
            self._delivered.clear()
        return confirmations, Write(R.CONF_ACK, [self.conf_ack])

    # ------------------------------------------------------------------ replies

    def queue_reply(self, seq: int, tracking_id: int, chute: int) -> None:
        self._replies.append(R.encode_reply(seq, tracking_id, chute))

    @property
    def pending_replies(self) -> int:
        return len(self._replies)

    def reply_writes(self, *, ack: bool = False) -> list[Write]:
        """The writes that put every queued reply into the PLC: the reply slots, then
        `req_ack` and `rep_head` together (the PLC sees a head only after its slots). With
        nothing queued, only `req_ack` when `ack`. Call `replies_written` once they land."""
        # One ring's worth at a time: the 65th reply of one write would land in the slot
        # of the first before the PLC could read it. The rest go with the next head.
        pending = min(len(self._replies), R.RING_SLOTS)
        if not pending:
            return [Write(R.REQ_ACK, [self.req_ack])] if ack else []
        writes = []
        k = first = self.rep_head
        i = 0
        per_write = R.MAX_WRITE_REGS // R.REPLY_SIZE
        while i < pending:
            s = R.slot(k)
            n = min(pending - i, R.RING_SLOTS - s, per_write)
            values = [v for j in range(i, i + n) for v in self._replies[j]]
            writes.append(Write(R.REPLY_BASE + R.REPLY_SIZE * s, values))
            k += n
            i += n
        head = (first + pending) % R.COUNTER_MOD
        writes.append(Write(R.REQ_ACK, [self.req_ack, head]))
        # The replies leave the queue only once the PLC has the head that shows them: a
        # write lost with the link would otherwise lose them (the reconnect takes rep_head
        # from the PLC). If the write landed but its answer was lost, the next `resume`
        # sees that in the PLC's rep_head and drops them then.
        self._in_flight = (first, pending)
        return writes

    def replies_written(self) -> int:
        """Every write of the last `reply_writes` landed: how many replies left the queue."""
        if self._in_flight is None:
            return 0
        first, n = self._in_flight
        self._in_flight = None
        for _ in range(n):
            self._replies.popleft()
        self.rep_head = (first + n) % R.COUNTER_MOD
        self.stats.replies += n
        return n

    # ------------------------------------------------------------------ logging

    def _warn_bad(self, now_ns: int, event: str, **fields: object) -> None:
        """At most one warning a second: a PLC writing garbage must not flood the log."""
        if now_ns - self._bad_logged_ns >= _BAD_LOG_INTERVAL_NS:
            self._bad_logged_ns = now_ns
            log.warning(
                event,
                bad_requests=self.stats.bad_requests,
                bad_confirmations=self.stats.bad_confirmations,
                **fields,
            )
