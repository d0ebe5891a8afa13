"""The physical line: items on a belt past a scan tunnel and chutes, driving a PlcSimulator.

Everything is in real seconds and metres; tests get speed by choosing a fast belt and short
distances, not by scaling time. One scheduler task pops timed events from a heap, so the
model costs a few heap operations per item and keeps up with 200,000 items/h.

Geometry (positions measured along the belt from the scan tunnel):

    induction --induct_to_scan_m--> scan tunnel --scan_to_first_chute_m--> chute[0]
      --chute_pitch_m--> chute[1] ... chute[-1] --chute_pitch_m--> end of line (reject)

`LineParams.chutes` lists the chutes in belt order. A recirculating item is back at the
scan tunnel `loop_length_m` after its previous pass there.

What the PLC does with an item on one pass (docs/interfaces.md section 3):
- at the scan tunnel it writes a sort request (new seq) and the scanner sends its read, a
  few ms before or after the request;
- the host's reply counts only if it arrives before the item reaches the assigned chute;
  the first reply taken in for (tracking_id, seq) is latched, as PLCs do;
- chute 0 or a chute that does not exist: reject at the end of line (outcome 5);
- at the chute: fault or disabled -> recirc_disabled (4), full -> recirc_full (2), host
  heartbeat dead -> no divert to host chutes, reject at end of line (5), else sorted (1);
- no usable reply by the last chute -> recirc_late (3);
- a recirculation beyond `max_plc_recirculations` becomes a reject at the end of line, so
  every item terminates; with `lost_probability` the tracking is lost (6) before the first
  chute.
A confirmation's `recirculations` counts the item's recirculations including the one it
reports (so a first recirc_late says 1, and the final sorted after it says 1 too).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
import random
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Final, Self

from simulators.plc import PlcReply, PlcSimulator
from simulators.plc_map import LAST_CHUTE
from sorter.ports import ChuteFlag, Confirmation, Outcome

__all__ = [
    "Conveyor",
    "ItemRecord",
    "Ledger",
    "LineParams",
    "PassRecord",
    "ScannerSink",
    "SimItem",
]


# Called as an item passes the scan tunnel: (tracking_id, codes on the item). It may return
# what each head sent (head -> codes, empty for a no-read; a head that sent nothing is
# absent), which the ledger keeps with the pass.
ScannerSink = Callable[[int, Sequence[str]], Mapping[str, tuple[str, ...]] | None]
_TRACKING_ID_LIMIT: Final = 1 << 32


@dataclass(frozen=True, slots=True)
class LineParams:
    """The line's geometry and behaviour, in metres and seconds."""

    belt_speed_m_s: float = 2.5
    # Minimum distance between inducted items; caps the induction rate at speed/pitch.
    item_pitch_m: float = 1.2
    induct_to_scan_m: float = 2.0
    scan_to_first_chute_m: float = 10.0
    chute_pitch_m: float = 1.0
    # Scan tunnel back to scan tunnel; must be longer than the way to the end of line.
    loop_length_m: float = 300.0
    chutes: Sequence[int] = tuple(range(1, 241))
    chute_capacity: int | None = 200  # items until full; None: never fills
    empty_after_s: float | None = 60.0  # operator empties a full chute; None: never
    scan_before_request_probability: float = 0.5
    scan_offset_max_ms: float = 5.0
    max_plc_recirculations: int = 5
    lost_probability: float = 0.0
    tracking_id_start: int = 1  # PLC tracking ids count up from here, wrap past 2**32 - 1

    def __post_init__(self) -> None:
        # Normalise to a tuple so the frozen params cannot change under the conveyor.
        object.__setattr__(self, "chutes", tuple(int(c) for c in self.chutes))
        problems = [problem for broken, problem in self._checks() if broken]
        if problems:
            raise ValueError("; ".join(problems))

    def _checks(self) -> list[tuple[bool, str]]:
        """(broken, what is wrong) for every rule the params must keep."""
        positive = ("belt_speed_m_s", "item_pitch_m", "chute_pitch_m", "loop_length_m")
        non_negative = ("induct_to_scan_m", "scan_to_first_chute_m", "scan_offset_max_ms")
        probabilities = ("scan_before_request_probability", "lost_probability")
        capacity, empty_after_s = self.chute_capacity, self.empty_after_s
        return [
            *((getattr(self, name) <= 0, f"{name} must be > 0") for name in positive),
            *((getattr(self, name) < 0, f"{name} must be >= 0") for name in non_negative),
            *(
                (not 0.0 <= getattr(self, name) <= 1.0, f"{name} must be within 0..1")
                for name in probabilities
            ),
            (not self.chutes, "chutes must not be empty"),
            (len(set(self.chutes)) != len(self.chutes), "chutes must be unique"),
            (
                any(not 1 <= c <= LAST_CHUTE for c in self.chutes),
                f"chutes must be within 1..{LAST_CHUTE}",
            ),
            (capacity is not None and capacity < 1, "chute_capacity must be >= 1 or None"),
            (empty_after_s is not None and empty_after_s < 0, "empty_after_s must be >= 0 or None"),
            (self.max_plc_recirculations < 0, "max_plc_recirculations must be >= 0"),
            (
                not 1 <= self.tracking_id_start < _TRACKING_ID_LIMIT,
                "tracking_id_start must be within 1..2**32-1",
            ),
            (
                bool(self.chutes) and self.loop_length_m <= self.end_of_line_m,
                f"loop_length_m {self.loop_length_m} must exceed the end of line "
                f"at {self.end_of_line_m} m",
            ),
        ]

    @property
    def last_chute_m(self) -> float:
        return self.scan_to_first_chute_m + (len(self.chutes) - 1) * self.chute_pitch_m

    @property
    def end_of_line_m(self) -> float:
        return self.last_chute_m + self.chute_pitch_m

    def chute_position_m(self, chute: int) -> float | None:
        """Distance from the scan tunnel to `chute`; None when the chute does not exist."""
        try:
            rank = tuple(self.chutes).index(chute)
        except ValueError:
            return None
        return self.scan_to_first_chute_m + rank * self.chute_pitch_m


@dataclass(frozen=True, slots=True)
class SimItem:
    """One parcel as the simulation knows it, including what the test expects for it."""

    tracking_id: int | None = None  # None: the conveyor assigns the PLC's next id
    codes: tuple[str, ...] = ()  # what the scanner reads; empty: a no-read
    expected_destination: str | None = None
    expected_chutes: tuple[int, ...] = ()
    expected_reason: str | None = None
    length_mm: int = 0
    width_mm: int = 0
    height_mm: int = 0
    weight_g: int = 0
    induction: int = 1


@dataclass(slots=True)
class PassRecord:
    """One trip of an item past the scan tunnel: its request, reply and outcome."""

    seq: int
    recirculations_before: int
    scan_s: float  # event-loop time the item was at the scan tunnel (request written)
    reply_chute: int | None = None
    reply_s: float | None = None
    reply_late: bool = False  # reply came after the item passed its chute
    outcome: Outcome | None = None
    chute_actual: int = 0
    confirmed_s: float | None = None
    # What each scanner head sent for this pass (head -> codes, () for a no-read; a head
    # that sent no telegram is absent); None when the scanner sink does not say.
    reads: dict[str, tuple[str, ...]] | None = None

    @property
    def codes_read(self) -> tuple[str, ...] | None:
        """The codes of all heads merged (each once, head order); None: no head sent any
        telegram, or the sink does not say."""
        if not self.reads:
            return None
        merged: dict[str, None] = {}
        for codes in self.reads.values():
            merged.update(dict.fromkeys(codes))
        return tuple(merged)


@dataclass(slots=True)
class ItemRecord:
    """Everything that happened to one inducted item."""

    index: int  # induction order, unique even when tracking ids repeat
    item: SimItem
    tracking_id: int
    inducted_s: float
    passes: list[PassRecord] = field(default_factory=list)
    confirmations: list[Confirmation] = field(default_factory=list)
    final_outcome: Outcome | None = None
    final_s: float | None = None

    @property
    def recirculations(self) -> int:
        return sum(1 for c in self.confirmations if not c.outcome.terminal)

    @property
    def final_chute(self) -> int | None:
        """The chute the item ended in when sorted, else None."""
        if self.final_outcome is Outcome.SORTED and self.confirmations:
            return self.confirmations[-1].chute_actual
        return None


@dataclass(slots=True)
class Ledger:
    """The ground truth of a simulated run, to hold the daemon's view against."""

    items: list[ItemRecord] = field(default_factory=list)
    inducted: int = 0
    terminal: Counter[str] = field(default_factory=Counter)  # outcome word -> items
    confirmations: Counter[str] = field(default_factory=Counter)  # every confirmation
    recirculations: int = 0
    late_replies: int = 0  # replies that came after the item passed its chute
    no_reply_passes: int = 0  # passes that reached the last chute with no reply at all
    unmatched_replies: int = 0  # replies for no item on the belt (unknown or finished)

    @property
    def in_flight(self) -> int:
        return self.inducted - self.terminal.total()

    def induct(self, item: SimItem, tracking_id: int, inducted_s: float) -> ItemRecord:
        """A new item on the belt."""
        record = ItemRecord(
            index=self.inducted, item=item, tracking_id=tracking_id, inducted_s=inducted_s
        )
        self.items.append(record)
        self.inducted += 1
        return record

    def confirm(self, record: ItemRecord, conf: Confirmation, now_s: float) -> None:
        """The PLC confirmed one pass of `record`; a terminal outcome is its last."""
        record.confirmations.append(conf)
        self.confirmations[conf.outcome.word] += 1
        if conf.outcome.terminal:
            record.final_outcome = conf.outcome
            record.final_s = now_s
            self.terminal[conf.outcome.word] += 1

    def summary(self) -> dict[str, int]:
        out = {
            "inducted": self.inducted,
            "in_flight": self.in_flight,
            "recirculations": self.recirculations,
            "late_replies": self.late_replies,
            "no_reply_passes": self.no_reply_passes,
            "unmatched_replies": self.unmatched_replies,
        }
        out.update({f"terminal_{word}": n for word, n in sorted(self.terminal.items())})
        return out


class _State(enum.Enum):
    AWAITING = "awaiting"  # on the way to the chutes, no usable reply yet
    DIVERTING = "diverting"  # reply latched, heading for its chute or end of line
    LATE = "late"  # reply came too late; recirculates at the last chute
    LOST = "lost"
    DONE = "done"  # this pass has its outcome


@dataclass(slots=True)
class _PassScan:
    """Joins a pass's scan and its request, whichever of the two happens first."""

    reads: dict[str, tuple[str, ...]] | None = None
    pass_: PassRecord | None = None

    def scanned(self, sent: Mapping[str, tuple[str, ...]] | None) -> None:
        """The scanner sent its telegrams (each head's codes), or does not say."""
        if sent is None:
            return
        self.reads = dict(sent)
        if self.pass_ is not None:
            self.pass_.reads = self.reads


@dataclass(slots=True)
class _Flight:
    record: ItemRecord
    recirculations: int = 0
    current: PassRecord | None = None
    state: _State = _State.DONE
    keys: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _BeltTimes:
    """Seconds of belt from the scan tunnel (or induction) to each place on the line."""

    induct_to_scan_s: float
    to_first_chute_s: float
    to_last_chute_s: float
    to_end_of_line_s: float
    loop_s: float
    chute_offset_s: dict[int, float]

    @classmethod
    def of(cls, params: LineParams) -> _BeltTimes:
        speed = params.belt_speed_m_s
        return cls(
            induct_to_scan_s=params.induct_to_scan_m / speed,
            to_first_chute_s=params.scan_to_first_chute_m / speed,
            to_last_chute_s=params.last_chute_m / speed,
            to_end_of_line_s=params.end_of_line_m / speed,
            loop_s=params.loop_length_m / speed,
            chute_offset_s={
                chute: (params.scan_to_first_chute_m + rank * params.chute_pitch_m) / speed
                for rank, chute in enumerate(params.chutes)
            },
        )


class _Passes:
    """The passes of the items on the belt, by the (tracking_id, seq) of their requests."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[int, int], tuple[_Flight, PassRecord]] = {}

    def add(self, flight: _Flight, pass_: PassRecord, key: tuple[int, int]) -> None:
        flight.keys.append(key)
        self._by_key[key] = (flight, pass_)

    def get(self, key: tuple[int, int]) -> tuple[_Flight, PassRecord] | None:
        return self._by_key.get(key)

    def retire(self, flight: _Flight) -> None:
        """The item left the belt; a later item may reuse its keys."""
        for key in flight.keys:
            if self._by_key.get(key, (None, None))[0] is flight:
                del self._by_key[key]


class _Scheduler:
    """Timed actions run on one task, from a heap of (when, tiebreak, action)."""

    def __init__(self, on_failure: Callable[[], None]) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._tiebreak = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._on_failure = on_failure

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="conveyor-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def at(self, when_s: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when_s, next(self._tiebreak), action))
        self._wake.set()

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError("conveyor scheduler failed") from self._failure

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while self._heap and self._heap[0][0] <= loop.time():
                    _, _, action = heapq.heappop(self._heap)
                    action()
                self._wake.clear()
                timeout_s = self._heap[0][0] - loop.time() if self._heap else None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await self._wake.wait()
        except Exception as exc:
            # A bug in the model: make drain()/run() raise it instead of hanging.
            self._failure = exc
            self._on_failure()
            raise


class _TrackingIds:
    """The PLC's tracking ids: count up from `start`, wrap past 2**32 - 1 to 1.

    0 is skipped so an all-zero slot never looks like an item; ids of items still on the
    belt are skipped too, as a PLC does when its id range wraps.
    """

    def __init__(self, start: int) -> None:
        self._next = start
        self._live: Counter[int] = Counter()

    def allocate(self) -> int:
        for _ in range(len(self._live) + 1):
            candidate = self._next
            self._next = candidate + 1
            if self._next >= _TRACKING_ID_LIMIT:
                self._next = 1
            if candidate not in self._live:
                return candidate
        raise RuntimeError("no free tracking id")  # unreachable: more ids than items

    def take(self, wanted: int | None) -> int:
        """`wanted`, or the next free id when None; held until `release`."""
        tracking_id = self.allocate() if wanted is None else wanted
        if not 0 <= tracking_id < _TRACKING_ID_LIMIT:
            raise ValueError(f"tracking_id {tracking_id} does not fit 32 bits")
        self._live[tracking_id] += 1
        return tracking_id

    def release(self, tracking_id: int) -> None:
        self._live[tracking_id] -= 1
        if self._live[tracking_id] <= 0:
            del self._live[tracking_id]


class _ChuteFill:
    """Items in each chute; a chute at capacity is set full at the PLC, and emptied by an
    operator `empty_after_s` later."""

    def __init__(self, plc: PlcSimulator, params: LineParams, scheduler: _Scheduler) -> None:
        self._plc = plc
        self._capacity = params.chute_capacity
        self._empty_after_s = params.empty_after_s
        self._scheduler = scheduler
        self._fill: dict[int, int] = dict.fromkeys(params.chutes, 0)
        self._filled_by_us: set[int] = set()

    def add(self, chute: int) -> None:
        self._fill[chute] += 1
        if self._capacity is None or self._fill[chute] < self._capacity:
            return
        self._plc.set_chute_full(chute, True)
        if chute in self._filled_by_us:
            return
        self._filled_by_us.add(chute)
        if self._empty_after_s is not None:
            self._scheduler.at(
                asyncio.get_running_loop().time() + self._empty_after_s,
                lambda: self._empty(chute),
            )

    def _empty(self, chute: int) -> None:
        self._fill[chute] = 0
        self._filled_by_us.discard(chute)
        self._plc.set_chute_full(chute, False)


class Conveyor:
    """The line model. Use `async with Conveyor(plc, params, scanner_send) as line:`.

    `scanner_send(tracking_id, codes)` is called when an item passes the scan tunnel (each
    pass); `codes` is empty for a no-read. What it returns (each head's telegram) is kept in
    the pass's `PassRecord.reads`.
    """

    def __init__(
        self,
        plc: PlcSimulator,
        params: LineParams,
        scanner_send: ScannerSink,
        *,
        seed: int | None = None,
    ) -> None:
        self.plc = plc
        self.params = params
        self._scanner_send = scanner_send
        self._rng = random.Random(seed)
        self.ledger = Ledger()
        self._belt = _BeltTimes.of(params)
        self._progress = asyncio.Event()
        self._scheduler = _Scheduler(on_failure=self._progress.set)
        self._at = self._scheduler.at
        self._chutes = _ChuteFill(plc, params, self._scheduler)
        self._tracking_ids = _TrackingIds(params.tracking_id_start)
        self._inducting = 0
        self._passes = _Passes()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._scheduler.running:
            return
        self.plc.add_reply_listener(self._on_reply)
        self._scheduler.start()

    async def stop(self) -> None:
        """Stop the belt; items still on it stay in the ledger as in flight. Safe twice."""
        self.plc.remove_reply_listener(self._on_reply)
        await self._scheduler.stop()

    # ------------------------------------------------------------------ driving

    async def run(
        self,
        items: AsyncIterator[SimItem] | Iterable[SimItem],
        rate_items_per_h: float,
        duration_s: float | None = None,
        count: int | None = None,
    ) -> int:
        """Induct items at `rate_items_per_h` until `duration_s`, `count` or the items end.

        Returns the number inducted. Items keep travelling afterwards; `drain()` waits for
        them. The rate is capped by `item_pitch_m` (one item per pitch of belt).
        """
        if not self._scheduler.running:
            raise RuntimeError("Conveyor is not started; use `async with Conveyor(...)`")
        if rate_items_per_h <= 0:
            raise ValueError("rate_items_per_h must be > 0")
        interval_s = max(
            3600.0 / rate_items_per_h, self.params.item_pitch_m / self.params.belt_speed_m_s
        )
        paced = _paced(items, interval_s, duration_s, count, self._scheduler.raise_failure)
        inducted = 0
        self._inducting += 1
        try:
            async with contextlib.aclosing(paced):
                async for item, due_s in paced:
                    self._induct(item, due_s)
                    inducted += 1
        finally:
            self._inducting -= 1
            self._progress.set()
        return inducted

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every inducted item has a terminal outcome; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._inducting or self.ledger.in_flight:
                    self._scheduler.raise_failure()
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        self._scheduler.raise_failure()
        return True

    def induct(self, item: SimItem) -> ItemRecord:
        """Put one item on the belt now (outside `run`)."""
        if not self._scheduler.running:
            raise RuntimeError("Conveyor is not started")
        return self._induct(item, asyncio.get_running_loop().time())

    # ------------------------------------------------------------------ item life

    def _induct(self, item: SimItem, inducted_s: float) -> ItemRecord:
        tracking_id = self._tracking_ids.take(item.tracking_id)
        record = self.ledger.induct(item, tracking_id, inducted_s)
        flight = _Flight(record)
        self._schedule_pass(flight, inducted_s + self._belt.induct_to_scan_s)
        return record

    def _schedule_pass(self, flight: _Flight, scan_s: float) -> None:
        """The item reaches the scan tunnel at scan_s: request and read, in random order."""
        offset_s = self._rng.uniform(0.0, self.params.scan_offset_max_ms / 1000.0)
        if self._rng.random() < self.params.scan_before_request_probability:
            offset_s = -offset_s
        joint = _PassScan()
        record = flight.record
        self._at(
            scan_s + offset_s,
            lambda: joint.scanned(self._scanner_send(record.tracking_id, record.item.codes)),
        )
        self._at(scan_s, lambda: self._request(flight, scan_s, joint))

    def _request(self, flight: _Flight, scan_s: float, joint: _PassScan) -> None:
        record, item = flight.record, flight.record.item
        seq = self.plc.submit_request(
            record.tracking_id,
            item.induction,
            item.length_mm,
            item.width_mm,
            item.height_mm,
            item.weight_g,
        )
        pass_ = PassRecord(
            seq=seq, recirculations_before=flight.recirculations, scan_s=scan_s, reads=joint.reads
        )
        joint.pass_ = pass_
        record.passes.append(pass_)
        flight.current = pass_
        self._passes.add(flight, pass_, (record.tracking_id, seq))
        if self._rng.random() < self.params.lost_probability:
            flight.state = _State.LOST
            self._at(
                scan_s + self._belt.to_first_chute_s,
                lambda: self._finish(flight, pass_, Outcome.LOST, 0),
            )
            return
        flight.state = _State.AWAITING
        self._at(scan_s + self._belt.to_last_chute_s, lambda: self._last_chute(flight, pass_))

    def _on_reply(self, reply: PlcReply) -> None:
        """PLC listener: a reply came in; latch it if the item can still use it."""
        entry = self._passes.get((reply.tracking_id, reply.seq))
        if entry is None:
            self.ledger.unmatched_replies += 1
            return
        flight, pass_ = entry
        if pass_.reply_s is not None:
            return  # a repeated reply; the first one is latched
        pass_.reply_chute = reply.chute
        pass_.reply_s = reply.received_s
        if flight.current is not pass_ or flight.state is not _State.AWAITING:
            if flight.state is not _State.LOST:
                pass_.reply_late = True
                self.ledger.late_replies += 1
            return
        now_s = reply.received_s
        chute_offset_s = self._belt.chute_offset_s.get(reply.chute)
        if reply.chute == 0 or chute_offset_s is None:
            # No decision or no such chute: the item rides to the end of line.
            flight.state = _State.DIVERTING
            self._reject_at_end_of_line(flight, pass_)
            return
        divert_s = pass_.scan_s + chute_offset_s
        if now_s >= divert_s:
            flight.state = _State.LATE
            pass_.reply_late = True
            self.ledger.late_replies += 1
            return
        flight.state = _State.DIVERTING
        self._at(divert_s, lambda: self._divert(flight, pass_, reply.chute))

    def _divert(self, flight: _Flight, pass_: PassRecord, chute: int) -> None:
        if not self.plc.host_alive:
            # The PLC stops diverting to host chutes while the host heartbeat is frozen.
            self._reject_at_end_of_line(flight, pass_)
            return
        flags = ChuteFlag(self.plc.chute_flags(chute))
        if flags & (ChuteFlag.FAULT | ChuteFlag.DISABLED):
            self._recirculate(flight, pass_, Outcome.RECIRC_DISABLED)
        elif ChuteFlag.FULL in flags:
            self._recirculate(flight, pass_, Outcome.RECIRC_FULL)
        else:
            self._chutes.add(chute)
            self._finish(flight, pass_, Outcome.SORTED, chute)

    def _reject_at_end_of_line(
        self, flight: _Flight, pass_: PassRecord, not_before_s: float | None = None
    ) -> None:
        when_s = pass_.scan_s + self._belt.to_end_of_line_s
        if not_before_s is not None:
            when_s = max(when_s, not_before_s)
        self._at(when_s, lambda: self._finish(flight, pass_, Outcome.REJECT, 0))

    def _last_chute(self, flight: _Flight, pass_: PassRecord) -> None:
        if flight.current is not pass_ or flight.state not in (_State.AWAITING, _State.LATE):
            return
        if flight.state is _State.AWAITING:
            self.ledger.no_reply_passes += 1
        self._recirculate(flight, pass_, Outcome.RECIRC_LATE)

    def _recirculate(self, flight: _Flight, pass_: PassRecord, outcome: Outcome) -> None:
        if flight.recirculations >= self.params.max_plc_recirculations:
            # The PLC's own limit: the item goes to the end of line instead of around again.
            flight.state = _State.DIVERTING
            self._reject_at_end_of_line(
                flight, pass_, not_before_s=asyncio.get_running_loop().time()
            )
            return
        flight.recirculations += 1
        self._finish(flight, pass_, outcome, 0)
        self.ledger.recirculations += 1
        self._schedule_pass(flight, pass_.scan_s + self._belt.loop_s)

    def _finish(self, flight: _Flight, pass_: PassRecord, outcome: Outcome, chute: int) -> None:
        """Write the confirmation for this pass; retire the item if the outcome is terminal."""
        now_s = asyncio.get_running_loop().time()
        record = flight.record
        flight.state = _State.DONE
        pass_.outcome = outcome
        pass_.chute_actual = chute
        pass_.confirmed_s = now_s
        self.plc.submit_confirmation(
            pass_.seq, record.tracking_id, chute, outcome, flight.recirculations
        )
        conf = Confirmation(
            seq=pass_.seq,
            tracking_id=record.tracking_id,
            chute_actual=chute,
            outcome=outcome,
            recirculations=flight.recirculations,
        )
        self.ledger.confirm(record, conf, now_s)
        if not outcome.terminal:
            return
        self._passes.retire(flight)
        self._tracking_ids.release(record.tracking_id)
        self._progress.set()


async def _paced(
    items: AsyncIterator[SimItem] | Iterable[SimItem],
    interval_s: float,
    duration_s: float | None,
    count: int | None,
    check: Callable[[], None],
) -> AsyncGenerator[tuple[SimItem, float], None]:
    """The items, each with the time it is due: one every `interval_s` until `duration_s`,
    `count` or the items end; `check` runs before each item is taken."""
    loop = asyncio.get_running_loop()
    start_s = loop.time()
    deadline_s = None if duration_s is None else start_s + duration_s
    source = _aiter(items)
    for n in itertools.count() if count is None else range(count):
        # Absolute schedule: a late wake-up does not shift every later item.
        due_s = start_s + n * interval_s
        if deadline_s is not None and due_s >= deadline_s:
            return
        delay_s = due_s - loop.time()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        check()
        try:
            item = await anext(source)
        except StopAsyncIteration:
            return
        yield item, due_s


async def _aiter(items: AsyncIterator[SimItem] | Iterable[SimItem]) -> AsyncIterator[SimItem]:
    if isinstance(items, AsyncIterator):
        async for item in items:
            yield item
        return
    iterator: Iterator[SimItem] = iter(items)
    for item in iterator:
        yield item
