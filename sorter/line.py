"""The line core: PLC requests, scanner reads and confirmations in; replies and messages out.

Runs on one event loop and does no I/O itself: the PLC driver calls the `on_*` methods
(the `drivers.plc.PlcHandler` it takes), scanner reads arrive through `run_scanner`, replies
leave through the `reply` callable the PLC driver binds, decisions and results through
`Durable` (journal first, then MQTT) and chute, device and stats messages through `publish`
(the MQTT outbox). Everything per item is synchronous, so a request whose scan is already
here is answered within the same poll.

Who owns what: the tracker joins requests with reads (`sorter.tracker`), the decider picks
chutes (`sorter.decide`), the chute book owns chute flags, load and counts
(`sorter.chutes`), the device board owns device health (`sorter.devices`), `LineMemory`
owns what is remembered of items (`sorter.memory`), `Messages` turns events into MQTT
messages and owns message ids (`sorter.contract`). The line core owns the order of the
steps, the counters, and the timer that decides requests whose scan did not come.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sorter.chutes import ChuteBook
from sorter.contract import Messages, Topics
from sorter.decide import Decider, measures_of
from sorter.devices import DeviceBoard
from sorter.line_events import Assignment, ChuteChange, Decided, ResultRecorded
from sorter.memory import LineMemory
from sorter.ports import (
    Confirmation,
    Durable,
    LineObserver,
    Outgoing,
    Publish,
    Recovered,
    Ring,
    ScanRead,
    SortRequest,
)
from sorter.stats import LineStats
from sorter.tracker import Match, Tracker

__all__ = ["Line", "LineCounters", "PublishOnly"]

# The assignment of an item this process never decided (confirmed after a restart whose
# journal did not know it): its result says so with empty strings and chute 0.
_UNASSIGNED = Assignment("", "", 0)


class PublishOnly:
    """A Durable that only publishes (tests and tools without a journal)."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    def add_pending(self, req: SortRequest) -> None:
        pass

    def record(self, msg: Outgoing) -> None:
        self._publish(msg.topic, msg.payload, qos=1)

    def commit(self) -> None:
        pass


@dataclass(slots=True)
class LineCounters:
    requests: int = 0
    decisions: int = 0
    confirmations: int = 0
    results_unmatched: int = 0  # confirmations for items this process never decided
    replies_repeated: int = 0  # requests re-read after a reconnect or restart, re-answered
    duplicate_results: int = 0  # confirmations already recorded (re-read after a restart)
    recovered_pending: int = 0  # requests taken before a restart and decided after it
    plc_restarts: int = 0  # request counters that jumped (PLC restarted, ring overrun)
    chute_changes: int = 0  # P/chutes/N messages published


def _chute_plan(decider: Decider) -> tuple[Collection[int], Mapping[int, str]]:
    """The machine's chutes and the destination owning each, for the chute book."""
    return decider.sort_plan.machine_chutes, decider.destination_of_chute()


class Line:
    """Joins, decides, replies and publishes. Implements the PLC driver's handler."""

    def __init__(
        self,
        decider: Decider,
        tracker: Tracker,
        publish: Publish,
        topics: Topics,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        durable: Durable | None = None,
    ) -> None:
        self.decider = decider
        self.tracker = tracker
        # Heads (and tunnels) that always send AIM symbology identifiers: their bare codes
        # are never GS1 (sorter.config.identifier_sources).
        self.identifier_sources: frozenset[str] = frozenset()
        self.publish = publish
        self.durable: Durable = durable if durable is not None else PublishOnly(publish)
        self.messages = Messages(topics)
        self.clock_ns = clock_ns
        self.stats = LineStats()
        self.counters = LineCounters()
        self.chutes = ChuteBook(decider.state, *_chute_plan(decider))
        self.memory = LineMemory()
        self.observers: list[LineObserver] = []
        self.devices = DeviceBoard(publish, self.messages, self.observers)
        # Figures of the parts around the line (MQTT outbox, PLC link), for P/stats.
        self.extra_stats: Callable[[], dict[str, Any]] | None = None
        self._reply: Callable[[int, int, int], None] | None = None
        # The PLC driver's `expect_request()`: a read came whose request is not read yet.
        self.on_read_ahead: Callable[[], None] | None = None
        self._timer_wake = asyncio.Event()

    def bind_reply(self, reply: Callable[[int, int, int], None]) -> None:
        """The PLC driver's `queue_reply(seq, tracking_id, chute)`."""
        self._reply = reply

    # --- PLC handler ------------------------------------------------------------------

    def restore(self, rec: Recovered) -> None:
        """Carry on from a previous process: call before the PLC link starts."""
        self.memory.restore(rec)
        if self._reply is not None:
            for seq, tid, chute in rec.replies:
                self._reply(seq, tid, chute)
        # Requests taken (and maybe acknowledged) before the crash but never decided: their
        # scans died with the process, so they wait scan_wait_ms once more, then time out.
        now = self.clock_ns()
        for req in rec.pending:
            if (req.tracking_id, req.seq) in rec.answered:
                continue  # decided; only its pending row's deletion was lost
            self.counters.recovered_pending += 1
            for match in self.tracker.on_request(replace(req, received_ns=now), now):
                self._decide(match)
        self.durable.commit()
        if self.tracker.next_deadline_ns() is not None:
            self._timer_wake.set()

    def on_requests(self, requests: Sequence[SortRequest]) -> None:
        now = self.clock_ns()
        answered = self.memory.answered
        for req in requests:
            self.counters.requests += 1
            chute = answered.get((req.tracking_id, req.seq))
            if chute is not None:
                # Decided before, but the PLC did not see the reply (a reconnect or a restart
                # between writing the journal and the ring): the same answer again, once
                # more on the wire, never a second decision.
                self.counters.replies_repeated += 1
                if self._reply is not None:
                    self._reply(req.seq, req.tracking_id, chute)
                continue
            for match in self.tracker.on_request(req, now):
                self._decide(match)
            if self.tracker.is_waiting(req.tracking_id, req.seq):
                self.durable.add_pending(req)
        self.durable.commit()
        if self.tracker.waiting:
            self._timer_wake.set()

    def on_confirmations(self, confirmations: Sequence[Confirmation]) -> None:
        memory = self.memory
        for conf in confirmations:
            key = (conf.tracking_id, conf.seq)
            if not memory.results_seen.add(key):
                self.counters.duplicate_results += 1
                continue
            self.counters.confirmations += 1
            assigned = memory.assigned.pop(key)
            if assigned is None:
                self.counters.results_unmatched += 1
                assigned = _UNASSIGNED
            self.chutes.on_confirmed(assigned.chute, conf.outcome, conf.chute_actual)
            if conf.outcome.terminal:
                memory.recirculations.pop(conf.tracking_id)
            else:
                memory.recirculations[conf.tracking_id] = conf.recirculations
            self.stats.on_result(conf.outcome)
            for observer in self.observers:
                observer.on_result(conf.outcome.word, conf.chute_actual)
            self.durable.record(self.messages.result(ResultRecorded(conf, assigned)))
        self.durable.commit()

    def on_chute_status(self, first_chute: int, status: Sequence[int]) -> None:
        self._announce(self.chutes.on_plc_status(first_chute, status))

    def on_counters_jumped(self, ring: Ring) -> None:
        """A PLC restarted with its counters reset starts its seqs again, and may start its
        tracking ids again too: a (tracking_id, seq) seen before is then a new item, not a
        re-read. Forget the replies given (or a new item would get an old item's chute)
        and the results recorded (or its confirmation would be dropped as a duplicate)."""
        if ring is Ring.REQUESTS:
            self.counters.plc_restarts += 1
            self.memory.answered.clear()
            self.tracker.forget_requests()
        else:
            self.memory.results_seen.clear()

    def on_link_state(self, connected: bool, reason: str) -> None:
        self.devices.report("plc", connected=connected, detail=reason)

    # --- chutes and plan --------------------------------------------------------------

    def set_host_disabled(self, chute: int, disabled: bool) -> None:
        """P/cmd/chute/N/disable and enable (sorter.chutes.ChuteBook.set_host_disabled)."""
        self._announce(self.chutes.set_host_disabled(chute, disabled))

    def set_host_full(self, chute: int, full: bool) -> None:
        """P/cmd/chute/N/full and emptied (sorter.chutes.ChuteBook.set_host_full)."""
        self._announce(self.chutes.set_host_full(chute, full))

    def swap_decider(self, decider: Decider) -> None:
        """Use a new sort plan from the next decision on; chute state carries over.

        Decisions already made stay as they were (results join on the stored decision);
        requests still waiting for their scan are decided with the new plan.
        """
        self.decider = decider
        self._announce(self.chutes.adopt(decider.state, *_chute_plan(decider)))

    def _announce(self, changes: list[ChuteChange]) -> None:
        for change in changes:
            self.counters.chute_changes += 1
            topic, payload = self.messages.chute(change)
            self.publish(topic, payload, qos=1, retain=True)

    # --- scans, timeouts, stats -------------------------------------------------------

    def on_scan(self, read: ScanRead) -> None:
        for match in self.tracker.on_scan(read, self.clock_ns()):
            self._decide(match)
        self.durable.commit()
        tracking_id = read.tracking_id
        if (
            tracking_id is not None
            and self.on_read_ahead is not None
            and self.tracker.holds_read(tracking_id)
        ):
            # The read was put aside for its request, which is in the PLC's ring or about
            # to be: read it now rather than at the next poll. A read that joined a
            # waiting request (the other head of its tunnel still to come) or came late
            # makes no match either, but has nothing to poll for.
            self.on_read_ahead()
        if self.tracker.next_deadline_ns() is not None:
            self._timer_wake.set()  # a merge deadline or a window may be due before the next

    async def run_scanner(self, reads: AsyncIterable[ScanRead]) -> None:
        async for read in reads:
            self.on_scan(read)

    async def run_timer(self) -> None:
        """Decide every request whose scan did not come within scan_wait_ms."""
        while True:
            for match in self.tracker.expire(self.clock_ns()):
                self._decide(match)
            self.durable.commit()
            deadline = self.tracker.next_deadline_ns()
            self._timer_wake.clear()
            if deadline is None:
                await self._timer_wake.wait()
                continue
            delay_ns = deadline - self.clock_ns()
            if delay_ns > 0:
                # Woken early when a new deadline (a merge window) comes before this one.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_ns / 1e9):
                        await self._timer_wake.wait()

    def answer_waiting(self) -> int:
        """Decide every request still waiting for its scan now (graceful stop)."""
        matches = self.tracker.expire(2**62)
        for match in matches:
            self._decide(match)
        self.durable.commit()
        return len(matches)

    async def run_stats(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.publish_stats()

    def publish_stats(self) -> None:
        line = self.stats.snapshot(self.clock_ns())
        links = None if self.extra_stats is None else self.extra_stats()
        topic, payload = self.messages.stats(line, self.decider, self.tracker.snapshot(), links)
        self.publish(topic, payload, qos=0, retain=True)

    # --- the decision -----------------------------------------------------------------

    def _decide(self, match: Match) -> None:
        req = match.request
        memory = self.memory
        recirculations = memory.recirculations.get(req.tracking_id, 0)
        dims = measures_of(req)
        scan = match.scan
        if scan is None:
            codes: tuple[str, ...] = ()
            # max_recirc and out_of_range still come first, as for an item with a scan.
            choice = self.decider.decide_timeout(recirculations, dims)
        else:
            codes = scan.codes
            # Per item, over the merged heads of its tunnel (per head rates: P/stats scanners).
            self.stats.on_read(noread=not codes)
            identifiers = scan.scanner in self.identifier_sources
            choice = self.decider.decide(codes, recirculations, dims, identifiers)
        chute, reason = choice.chute, choice.reason
        now = self.clock_ns()
        latency_ms = (now - req.received_ns) / 1e6 if req.received_ns else 0.0
        key = (req.tracking_id, req.seq)
        # The reply is queued now but reaches the PLC only after the caller's commit: the
        # PLC driver runs on this loop and cannot write before this step returns.
        if self._reply is not None:
            self._reply(req.seq, req.tracking_id, chute)
        memory.answered[key] = chute
        memory.assigned[key] = Assignment(choice.barcode, choice.destination, chute)
        self.counters.decisions += 1
        self.stats.on_decision(reason, latency_ms, now)
        for observer in self.observers:
            observer.on_decision(reason.word, choice.destination, chute, latency_ms)
        msg = self.messages.decision(Decided(req, codes, choice, recirculations, latency_ms))
        source = choice.source
        memory.last_decision[req.tracking_id] = (
            msg.payload,
            None if source is None else source.value,
        )
        self.durable.record(msg)

    def last_decision(self, tracking_id: int) -> dict[str, Any] | None:
        """The last decision published for a tracking id (operators asking "where did it
        go?"); None when this process has made none for it recently."""
        found = self.memory.last_decision.get(tracking_id)
        return None if found is None else found[0]

    def last_source(self, tracking_id: int) -> str | None:
        """Which pre-advice the last decision of a tracking id was routed with: "file",
        "feed" or "customs" (docs/interfaces.md section 7); None when it had none."""
        found = self.memory.last_decision.get(tracking_id)
        return None if found is None else found[1]
