"""The per-item pipeline: PLC requests and scanner reads in, replies and MQTT messages out.

Runs on one event loop and does no I/O itself: the PLC driver calls the `on_*` methods,
scanner reads arrive through `run_scanner`, replies leave through the `reply` callable the
PLC driver provides, and messages through `publish` (the MQTT outbox). Everything per item
is synchronous, so a request whose scan is already here is answered within the same poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from sorter import __version__
from sorter.decide import Decider, measures_of
from sorter.ports import (
    Confirmation,
    Durable,
    LineObserver,
    MessageKind,
    Outcome,
    Outgoing,
    Publish,
    Recovered,
    ScanRead,
    SortRequest,
)
from sorter.stats import LineStats
from sorter.tracker import Match, Tracker

log = structlog.get_logger(__name__)

CHUTE_STATUS_MASK = 0b111
CHUTE_DISABLED_BIT = 0b010
CHUTE_FULL_BIT = 0b001
# Bounds that keep a process that runs for years flat in memory. A confirmation comes
# within minutes of its decision, and an item is on the belt for minutes: 100,000 entries
# is hours at 40,000 items/h. Queries of a tracking id's last decision reach back 10,000.
MAX_REMEMBERED = 100_000  # decisions awaiting confirmation, recirculation counts
MAX_QUERYABLE = 10_000  # ~10 MB of decision messages at most
MAX_ANSWERED = 4096  # re-reads come from one 64-slot ring: 64 rings' worth


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


def iso_now() -> str:
    """ISO 8601 UTC with milliseconds, as every MQTT payload carries."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def status_payload(state: str) -> dict[str, Any]:
    """P/status: online or offline, with the version and since when."""
    return {"state": state, "version": __version__, "since": iso_now()}


def iso_from_ns(wall_ns: int) -> str:
    stamp = dt.datetime.fromtimestamp(wall_ns / 1e9, dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}/decisions"

    @property
    def results(self) -> str:
        return f"{self.prefix}/results"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/stats"

    @property
    def cmd(self) -> str:
        return f"{self.prefix}/cmd"

    @property
    def cmd_result(self) -> str:
        return f"{self.prefix}/cmd-result"

    def chute(self, n: int) -> str:
        return f"{self.prefix}/chutes/{n}"

    def device(self, name: str) -> str:
        return f"{self.prefix}/devices/{name}"


@dataclass(slots=True)
class DeviceState:
    connected: bool = False
    errors: int = 0
    last_seen: str | None = None
    detail: str = ""
    published: tuple[bool, int] | None = None


@dataclass(slots=True)
class _Assigned:
    barcode: str
    destination: str
    chute: int


@dataclass(slots=True)
class PipelineCounters:
    requests: int = 0
    decisions: int = 0
    confirmations: int = 0
    results_unmatched: int = 0  # confirmations for items this process never decided
    replies_repeated: int = 0  # requests re-read after a reconnect or restart, re-answered
    duplicate_results: int = 0  # confirmations already recorded (re-read after a restart)
    recovered_pending: int = 0  # requests taken before a restart and decided after it
    plc_restarts: int = 0  # request counters that jumped (PLC restarted, ring overrun)
    chute_changes: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Pipeline:
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
        self.topics = topics
        self.clock_ns = clock_ns
        self.stats = LineStats()
        self.counters = PipelineCounters()
        self.devices: dict[str, DeviceState] = {}
        self._reply: Callable[[int, int, int], None] | None = None
        # Figures of the parts around the pipeline (MQTT outbox, PLC link), for P/stats.
        self.extra_stats: Callable[[], dict[str, Any]] | None = None
        self.observers: list[LineObserver] = []
        self._assigned: OrderedDict[tuple[int, int], _Assigned] = OrderedDict()
        self._recirculations: OrderedDict[int, int] = OrderedDict()
        self._last_decision: OrderedDict[int, dict[str, Any]] = OrderedDict()
        # Replies given, to answer a re-read request the same way without deciding again,
        # and results recorded, to drop a re-read confirmation: both within a few rings.
        self._answered: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._results_seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._chute_sorted: dict[int, int] = {}
        self._chute_state_known = False
        self._plc_bits: dict[int, int] = {}
        self._host_bits: dict[int, int] = {}
        self._owners = decider.destination_of_chute()
        self._timer_wake = asyncio.Event()
        # Message ids: unique per message, and the same on every re-send of that message.
        self._id_prefix = f"{os.getpid():x}{time.time_ns() // 1_000_000:x}"
        self._ids = itertools.count(1)

    def bind_reply(self, reply: Callable[[int, int, int], None]) -> None:
        """The PLC driver's `queue_reply(seq, tracking_id, chute)`."""
        self._reply = reply

    def _next_id(self, kind: str) -> str:
        return f"{kind}-{self._id_prefix}-{next(self._ids)}"

    # --- PLC handler ------------------------------------------------------------------

    def restore(self, rec: Recovered) -> None:
        """Carry on from a previous process: call before the PLC link starts."""
        for key, chute in rec.answered.items():
            self._remember(self._answered, key, chute, MAX_ANSWERED)
        for key, (barcode, destination, chute) in rec.assigned.items():
            self._remember(self._assigned, key, _Assigned(barcode, destination, chute))
        for tid, recirc in rec.recirculations.items():
            self._remember(self._recirculations, tid, recirc)
        for key in rec.results_seen:
            self._remember(self._results_seen, key, None, MAX_ANSWERED)
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
        for req in requests:
            self.counters.requests += 1
            chute = self._answered.get((req.tracking_id, req.seq))
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
        for conf in confirmations:
            key = (conf.tracking_id, conf.seq)
            if key in self._results_seen:
                self.counters.duplicate_results += 1
                continue
            self._remember(self._results_seen, key, None, MAX_ANSWERED)
            self.counters.confirmations += 1
            assigned = self._assigned.pop(key, None)
            if assigned is None:
                self.counters.results_unmatched += 1
                assigned = _Assigned("", "", 0)
            elif assigned.chute > 0:
                load = self.decider.state.load
                if assigned.chute < load.shape[0] and load[assigned.chute] > 0:
                    load[assigned.chute] -= 1
            if conf.outcome.terminal:
                self._recirculations.pop(conf.tracking_id, None)
            else:
                self._remember(self._recirculations, conf.tracking_id, conf.recirculations)
            if conf.outcome is Outcome.SORTED and conf.chute_actual > 0:
                self._chute_sorted[conf.chute_actual] = (
                    self._chute_sorted.get(conf.chute_actual, 0) + 1
                )
            self.stats.on_result(conf.outcome)
            for observer in self.observers:
                observer.on_result(conf.outcome.word, conf.chute_actual)
            self.durable.record(
                Outgoing(
                    MessageKind.RESULT,
                    conf.tracking_id,
                    conf.seq,
                    chute=conf.chute_actual,
                    barcode=assigned.barcode,
                    destination=assigned.destination,
                    recirculations=conf.recirculations,
                    outcome=int(conf.outcome),
                    topic=self.topics.results,
                    payload={
                        "id": self._next_id("r"),
                        "ts": iso_now(),
                        "tracking_id": conf.tracking_id,
                        "seq": conf.seq,
                        "barcode": assigned.barcode,
                        "destination": assigned.destination,
                        "chute_assigned": assigned.chute,
                        "chute_actual": conf.chute_actual,
                        "outcome": conf.outcome.word,
                        "recirculations": conf.recirculations,
                    },
                )
            )
        self.durable.commit()

    def on_chute_status(self, first_chute: int, status: Sequence[int]) -> None:
        plc_bits = self._plc_bits
        for i, value in enumerate(status):
            chute = first_chute + i
            bits = value & CHUTE_STATUS_MASK
            if plc_bits.get(chute) != bits or not self._chute_state_known:
                plc_bits[chute] = bits
                self._apply_chute(chute)
        self._chute_state_known = True

    def set_host_disabled(self, chute: int, disabled: bool) -> None:
        """A chute the host (an operator's command) takes out of service, or back."""
        self._set_host_bit(chute, CHUTE_DISABLED_BIT, disabled)

    def set_host_full(self, chute: int, full: bool) -> None:
        """An operator marks a chute full by hand (a sensor that fails to), or emptied:
        emptied also restarts its count."""
        if not full:
            self._chute_sorted[chute] = 0
        self._set_host_bit(chute, CHUTE_FULL_BIT, full)
        if not full:
            self._apply_chute(chute, force=True)  # republish the count even if unchanged

    def _set_host_bit(self, chute: int, bit: int, on: bool) -> None:
        bits = self._host_bits.get(chute, 0)
        bits = bits | bit if on else bits & ~bit
        if bits:
            self._host_bits[chute] = bits
        else:
            self._host_bits.pop(chute, None)
        self._apply_chute(chute)

    def _apply_chute(self, chute: int, force: bool = False) -> None:
        """Effective state = the PLC's bits or the host's; publish when it changes."""
        flags = self.decider.state.flags
        if chute >= flags.shape[0]:
            return
        bits = self._plc_bits.get(chute, 0) | self._host_bits.get(chute, 0)
        if bits == flags[chute] and self._chute_state_known and not force:
            return
        flags[chute] = bits
        if chute in self.decider.plan.plan.machine_chutes:
            self.counters.chute_changes += 1
            self._publish_chute(chute, int(bits), self._owners)

    def swap_decider(self, decider: Decider) -> None:
        """Use a new sort plan from the next decision on; chute state carries over.

        Decisions already made stay as they were (results join on the stored decision);
        requests still waiting for their scan are decided with the new plan.
        """
        old = self.decider.state
        new = decider.state
        n = min(old.flags.shape[0], new.flags.shape[0])
        new.load[:n] = old.load[:n]
        self.decider = decider
        self._owners = decider.destination_of_chute()
        for chute in sorted(decider.plan.plan.machine_chutes):
            self._apply_chute(chute, force=True)

    def _publish_chute(self, chute: int, bits: int, owners: dict[int, str]) -> None:
        state = "fault" if bits & 4 else "disabled" if bits & 2 else "full" if bits & 1 else "ok"
        self.publish(
            self.topics.chute(chute),
            {
                "state": state,
                "destination": owners.get(chute, ""),
                "count": self._chute_sorted.get(chute, 0),
            },
            qos=1,
            retain=True,
        )

    def on_counters_jumped(self, ring: str) -> None:
        """A PLC restarted with its counters reset starts its seqs again, and may start its
        tracking ids again too: a (tracking_id, seq) seen before is then a new item, not a
        re-read. Forget the replies given (or a new item would get an old item's chute)
        and the results recorded (or its confirmation would be dropped as a duplicate)."""
        if ring == "request":
            self.counters.plc_restarts += 1
            self._answered.clear()
            self.tracker.forget_requests()
        else:
            self._results_seen.clear()

    def on_link_state(self, connected: bool, reason: str) -> None:
        self.device_state("plc", connected=connected, detail=reason)

    # --- devices ----------------------------------------------------------------------

    def device_state(
        self,
        name: str,
        *,
        connected: bool | None = None,
        errors: int | None = None,
        last_seen_wall_ns: int | None = None,
        detail: str | None = None,
        force: bool = False,
    ) -> None:
        """Record a device's health; publish P/devices/NAME when it changed."""
        dev = self.devices.setdefault(name, DeviceState())
        if connected is not None:
            dev.connected = connected
        if errors is not None:
            dev.errors = errors
        elif connected is False:
            dev.errors += 1
        if last_seen_wall_ns is not None:
            dev.last_seen = iso_from_ns(last_seen_wall_ns)
        elif connected:
            dev.last_seen = iso_now()
        if detail is not None:
            dev.detail = detail
        key = (dev.connected, dev.errors)
        for observer in self.observers:
            observer.on_device(name, dev.connected, dev.errors)
        if key != dev.published or force:
            dev.published = key
            self.publish(
                self.topics.device(name),
                {
                    "connected": dev.connected,
                    "errors": dev.errors,
                    "last_seen": dev.last_seen,
                    "detail": dev.detail,
                },
                qos=1,
                retain=True,
            )

    # --- scans and timeouts -----------------------------------------------------------

    def on_scan(self, read: ScanRead) -> None:
        for match in self.tracker.on_scan(read, self.clock_ns()):
            self._decide(match)
        self.durable.commit()
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
        snap = self.stats.snapshot(self.clock_ns())
        snap["ts"] = iso_now()
        manifest = self.decider.manifest
        lookups = self.decider.manifest_lookups
        snap["manifest"] = {
            "rows": manifest.rows if manifest is not None else 0,
            "barcodes": manifest.size if manifest is not None else 0,
            "files": len(manifest.reports) if manifest is not None else 0,
            "bad_rows": manifest.bad_rows if manifest is not None else 0,
            "lookups": lookups,
            "hit_rate": round(self.decider.manifest_hits / lookups, 4) if lookups else None,
        }
        # Invalid codes read beside valid ones and ignored (a misread second label).
        snap["codes"] = {"invalid_ignored": self.decider.invalid_ignored}
        snap["tracker"] = self.tracker.snapshot()
        if self.extra_stats is not None:
            snap.update(self.extra_stats())
        self.publish(self.topics.stats, snap, qos=0, retain=True)

    # --- the decision -----------------------------------------------------------------

    @staticmethod
    def _remember(
        store: OrderedDict[Any, Any], key: Any, value: Any, limit: int = MAX_REMEMBERED
    ) -> None:
        store[key] = value
        store.move_to_end(key)
        if len(store) > limit:
            store.popitem(last=False)

    def _decide(self, match: Match) -> None:
        req = match.request
        recirculations = self._recirculations.get(req.tracking_id, 0)
        dims = measures_of(req)
        if match.scan is None:
            codes: tuple[str, ...] = ()
            # max_recirc and out_of_range still come first, as for an item with a scan.
            choice = self.decider.decide_timeout(recirculations, dims)
        else:
            codes = match.scan.codes
            # Per item, over the merged heads of its tunnel (per head rates: P/stats scanners).
            self.stats.on_read(noread=not codes)
            identifiers = match.scan.scanner in self.identifier_sources
            choice = self.decider.decide(codes, recirculations, dims, identifiers)
        chute, reason = choice.chute, choice.reason
        destination, barcode = choice.destination, choice.barcode
        now = self.clock_ns()
        latency_ms = (now - req.received_ns) / 1e6 if req.received_ns else 0.0
        key = (req.tracking_id, req.seq)
        # The reply is queued now but reaches the PLC only after the caller's commit: the
        # PLC driver runs on this loop and cannot write before this step returns.
        if self._reply is not None:
            self._reply(req.seq, req.tracking_id, chute)
        self._remember(self._answered, key, chute, MAX_ANSWERED)
        self._remember(self._assigned, key, _Assigned(barcode, destination, chute))
        self.counters.decisions += 1
        self.stats.on_decision(reason, latency_ms, now)
        for observer in self.observers:
            observer.on_decision(reason.word, destination, chute, latency_ms)
        message = {
            "id": self._next_id("d"),
            "ts": iso_now(),
            "tracking_id": req.tracking_id,
            "seq": req.seq,
            "codes": list(codes),
            "barcode": barcode,
            "destination": destination,
            "chute": chute,
            "reason": reason.word,
            "recirculations": recirculations,
            "latency_ms": round(latency_ms, 3),
        }
        self._remember(self._last_decision, req.tracking_id, message, MAX_QUERYABLE)
        self.durable.record(
            Outgoing(
                MessageKind.DECISION,
                req.tracking_id,
                req.seq,
                chute=chute,
                barcode=barcode,
                destination=destination,
                recirculations=recirculations,
                outcome=0,
                topic=self.topics.decisions,
                payload=message,
            )
        )

    def last_decision(self, tracking_id: int) -> dict[str, Any] | None:
        """The last decision published for a tracking id (operators asking "where did it
        go?"); None when this process has made none for it recently."""
        return self._last_decision.get(tracking_id)
