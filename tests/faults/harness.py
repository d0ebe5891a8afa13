"""The fault rig: a simulated line at 20,000 items/h, `sorterd run` as its own process, a
mosquitto process, and an observer that keeps its MQTT session across broker restarts.

Faults are real: processes are killed, stopped (SIGSTOP) and restarted, sockets closed,
simulators stopped and started on the same ports, bytes thrown at the daemon, its writes to
disk refused by the kernel. After the fault the line drains, the daemon stops gracefully,
and the ledger is held against everything that reached the broker (tests/ledgercheck.py):
every inducted item has exactly one terminal outcome, every request the PLC put in its ring
has exactly one decision (one id) carrying the codes the scanner sent for that item or
none, every reply the PLC latched was published with the same chute, every confirmation
has exactly one result, saying what the PLC confirmed.

Durations scale with SORTERD_FAULT_SCALE (default 1: the CI run; 10 or more on demand).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiomqtt

from drivers.broker import LocalBroker, free_port
from simulators.conveyor import Ledger
from simulators.line import DEMO_PARAMS, SimulatedLine
from sorter.plan import load_plan
from sorterd.demo import write_site
from tests.ledgercheck import decision_pairs, pairing_problems, plan_problems, result_problems
from tests.linekit import PLAN_PATH
from tests.waiting import wait_until

PREFIX = "faults/hub/line"
RATE_PER_H = 20_000
SCALE = float(os.environ.get("SORTERD_FAULT_SCALE", "1"))
REPO = Path(__file__).resolve().parents[2]


def scaled(seconds: float) -> float:
    return seconds * SCALE


@dataclass
class Observed:
    """Everything the observer received, and what it says about duplicates."""

    by_kind: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0  # same id again: at-least-once delivery, dropped by the consumer
    received_s: dict[str, list[float]] = field(default_factory=dict)

    def add(self, kind: str, payload: dict[str, Any], now_s: float) -> None:
        msg_id = payload.get("id")
        if isinstance(msg_id, str):
            if msg_id in self.ids:
                self.duplicates += 1
                return
            self.ids.add(msg_id)
        self.by_kind.setdefault(kind, []).append(payload)
        self.received_s.setdefault(kind, []).append(now_s)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self.by_kind.get(kind, [])

    def last(self, kind: str) -> dict[str, Any]:
        got = self.of(kind)
        return got[-1] if got else {}

    def first_after(self, kind: str, t_s: float) -> float | None:
        return next((t for t in self.received_s.get(kind, []) if t >= t_s), None)


async def observe(broker: RigBroker, seen: Observed, ready: asyncio.Event) -> None:
    """A consumer with a persistent session (clean_session False): it reconnects after a
    broker restart and gets what was queued for it meanwhile."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            async with aiomqtt.Client(
                "127.0.0.1",
                broker.port,
                identifier="fault-observer",
                clean_session=False,
                keepalive=5,
            ) as client:
                await client.subscribe(f"{PREFIX}/#", qos=1)
                ready.set()
                async for m in client.messages:
                    assert isinstance(m.payload, bytes)
                    kind = str(m.topic)[len(PREFIX) + 1 :]
                    seen.add(kind, json.loads(m.payload), loop.time())
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)


class DaemonProcess:
    """`sorterd run -c SITE` as a child process, its log in a file.

    The log goes through a pipe that this process copies to the file: the daemon itself
    writes to no file but its journal, so a file size limit (`limit_file_size`) is a full
    disk for the journal alone, as when the journal has a disk of its own."""

    def __init__(self, site: Path, env: dict[str, str], log_path: Path) -> None:
        self.site = site
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._log_copy: asyncio.Task[None] | None = None
        self._fsize_before: tuple[int, int] | None = None  # RLIMIT_FSIZE before the limit

    async def start(self) -> None:
        await self._log_copied()  # a killed process's last lines first
        self.starts += 1
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sorterd.cli",
            "run",
            "-c",
            str(self.site),
            cwd=REPO,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        self._log_copy = asyncio.create_task(self._copy_log(self.proc.stdout), name="daemon-log")

    async def _copy_log(self, stream: asyncio.StreamReader) -> None:
        with self.log_path.open("ab") as log:
            while chunk := await stream.read(65536):
                log.write(chunk)
                log.flush()

    async def _log_copied(self) -> None:
        task, self._log_copy = self._log_copy, None
        if task is not None:
            await task  # ends at the pipe's end, when the process has gone

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout_s: float) -> int:
        """The exit code once the process has ended and its last lines are in the log."""
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        await self._log_copied()
        return code

    async def stop(self) -> int | None:
        """SIGTERM (a graceful stop) and its exit code; SIGKILL after 20 s (None)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            await self._log_copied()
            return proc.returncode if proc is not None else None
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            return await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
        finally:
            await self._log_copied()

    def ignores_sigxfsz(self) -> bool:
        """Whether the process ignores SIGXFSZ (CPython does from its start): else the
        kernel kills it at its first write past a file size limit, instead of failing it."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        ignored = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn"))
        return bool(int(ignored, 16) >> (signal.SIGXFSZ - 1) & 1)

    def limit_file_size(self, limit_bytes: int | None) -> None:
        """Set the running process's RLIMIT_FSIZE (prlimit(2): no privilege needed for a
        child of ours, below its hard limit): no byte past `limit_bytes` of any file can be
        written, the write fails with EFBIG. None puts back the limit it had."""
        assert self.proc is not None
        if limit_bytes is None:
            if self._fsize_before is not None:
                resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, self._fsize_before)
                self._fsize_before = None
            return
        before = resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (limit_bytes, before[1]))
        if self._fsize_before is None:
            self._fsize_before = before

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The log's JSON lines (the daemon logs JSON when not on a terminal) of `event`."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == event:
                    found.append(entry)
        return found

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Report:
    """The figures one fault run prints and BENCHMARKS.md records."""

    fault: str
    inducted: int = 0
    requests: int = 0
    decisions: int = 0
    results: int = 0
    confirmations: int = 0
    duplicates_dropped: int = 0
    lost: int = 0
    dropped_by_plc: int = 0  # requests/confirmations a restarting PLC itself threw away
    recover_s: float | None = None
    notes: list[str] = field(default_factory=list)
    late_replies: int = 0  # replies the PLC got after the item passed its chute

    def line(self) -> str:
        recover = "-" if self.recover_s is None else f"{self.recover_s:.2f}"
        return (
            f"{self.fault:<22} inducted={self.inducted:<5} requests={self.requests:<5} "
            f"decisions={self.decisions:<5} confirmations={self.confirmations:<5} "
            f"results={self.results:<5} duplicates_dropped={self.duplicates_dropped:<4} "
            f"dropped_by_plc={self.dropped_by_plc:<3} lost={self.lost} recover_s={recover}"
        )


DecisionCheck = Callable[[list[tuple[tuple[str, ...], Mapping[str, Any]]]], list[str]]


class RigBroker(Protocol):
    """What the rig needs of its broker: mosquitto (drivers/broker.py's LocalBroker) or a
    cluster (tests/cluster/clusterkit.py). `port`: where the observer and the end marker
    go; `url`: the site's `[mqtt] url` (or `site_urls`, a cluster's nodes, when it has it)."""

    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def use_url_list(site: Path, urls: list[str]) -> None:
    """Put a list of node URLs in the site's `[mqtt] url` (write_site writes one)."""
    lines = site.read_text().splitlines()
    table = ""
    for i, line in enumerate(lines):
        if line.startswith("["):
            table = line.strip()
        elif table == "[mqtt]" and line.startswith("url ="):
            lines[i] = f"url = {json.dumps(urls)}"
    site.write_text("\n".join(lines) + "\n")


class FaultRig:
    """`feeds`: the site's [feeds] topics; `decision_check` replaces the check of each
    decision against the plan (the feed scenarios hold them to the feeds' rows too)."""

    def __init__(
        self,
        folder: Path,
        *,
        seed: int = 11,
        extra_env: dict[str, str] | None = None,
        feeds: tuple[str, str] | None = None,
        broker: RigBroker | None = None,
    ):
        self.folder = folder
        self.seed = seed
        self.feeds = feeds
        self.decision_check: DecisionCheck | None = None
        self.plan = load_plan(PLAN_PATH)
        self.line = SimulatedLine(
            sorted(self.plan.machine_chutes),
            params=DEMO_PARAMS,
            plc_port=free_port(),
            scanner_port=free_port(),
            seed=seed,
        )
        # Persistence on, so that a broker that is stopped keeps the observer's queue
        # across its restart: losses the broker itself would cause are not the daemon's.
        (folder / "broker").mkdir(parents=True, exist_ok=True)
        self.broker: RigBroker = broker or LocalBroker(
            kind="mosquitto", persistence_dir=folder / "broker"
        )
        self.seen = Observed()
        self.extra_env = extra_env or {}
        self.daemon: DaemonProcess | None = None
        self._observer: asyncio.Task[None] | None = None
        self._feeder: asyncio.Task[int] | None = None
        # Requests and confirmations unread in the PLC's rings when it restarted.
        self.unread_at_reset = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FaultRig]:
        await self.broker.start()
        await self.line.start()
        ready = asyncio.Event()
        self._observer = asyncio.create_task(observe(self.broker, self.seen, ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            assert self.line.scanner is not None
            assert self.line.scanner.port is not None
            site = write_site(
                self.folder,
                plc_port=self.line.plc.port,
                scanner_port=self.line.scanner.port,
                mqtt_url=self.broker.url,
                plan=PLAN_PATH,
                prefix=PREFIX,
                feeds=self.feeds,
            )
            site_urls = getattr(self.broker, "site_urls", None)
            if site_urls:
                use_url_list(site, list(site_urls))
            self.daemon = DaemonProcess(site, self.extra_env, self.folder / "daemon.log")
            await self.daemon.start()
            await self.wait_for(lambda: self.seen.last("status").get("state") == "online", 60)
            await self.wait_for(lambda: self.seen.last("devices/plc").get("connected") is True)
            await self.wait_for(lambda: self.seen.last("devices/tunnel-1").get("connected") is True)
            yield self
        finally:
            if self._feeder is not None:
                self._feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._feeder
            if self.daemon is not None:
                await self.daemon.stop()
            self._observer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._observer
            await self.line.stop()
            await self.broker.stop()

    async def wait_for(
        self, predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = ""
    ) -> float:
        """Wait until predicate holds; the loop time when it did."""
        try:
            await wait_until(predicate, timeout_s, what)
        except TimeoutError as exc:
            tail = self.daemon.log_tail() if self.daemon else ""
            raise AssertionError(f"{exc}; daemon log:\n{tail}") from None
        return asyncio.get_running_loop().time()

    def start_traffic(self, duration_s: float, rate_per_h: int = RATE_PER_H) -> None:
        self._feeder = asyncio.create_task(self.line.run(rate_per_h, duration_s=duration_s))

    async def finish(self, fault: str, *, recover_s: float | None) -> Report:
        """Let traffic end, drain the line, let the messages arrive, and hold the ledger
        against them."""
        assert self._feeder is not None
        await self._feeder
        self._feeder = None
        line = self.line
        drained = await line.drain(scaled(60) + 60)
        assert drained, f"items still on the line: {line.ledger.summary()}"
        ledger = line.ledger
        passes = [(rec.tracking_id, p) for rec in ledger.items for p in rec.passes]
        confirmations = [c for rec in ledger.items for c in rec.confirmations]
        plc_replies = dict(line.plc.replies)

        def settled() -> bool:
            decided = {(d["tracking_id"], d["seq"]) for d in self.seen.of("decisions")}
            resulted = {(r["tracking_id"], r["seq"]) for r in self.seen.of("results")}
            return all(key in decided for key in plc_replies) and all(
                (c.tracking_id, c.seq) in resulted for c in confirmations
            )

        with contextlib.suppress(AssertionError):
            await self.wait_for(settled, 30, "every decision and result seen")
        await self._everything_seen()

        decisions = self.seen.of("decisions")
        results = self.seen.of("results")
        report = Report(
            fault,
            inducted=ledger.inducted,
            requests=len(passes),
            decisions=len(decisions),
            results=len(results),
            confirmations=len(confirmations),
            duplicates_dropped=self.seen.duplicates,
            recover_s=recover_s,
            late_replies=ledger.late_replies,
        )
        # One terminal outcome per inducted item.
        assert ledger.in_flight == 0, ledger.summary()
        assert all(rec.final_outcome is not None for rec in ledger.items)
        # One decision per request: a second id for the same (tracking_id, seq) would be a
        # request decided twice.
        by_key = Counter((d["tracking_id"], d["seq"]) for d in decisions)
        twice = [key for key, n in by_key.items() if n > 1]
        assert not twice, f"requests decided more than once: {twice[:10]}"
        decided = {(d["tracking_id"], d["seq"]): d for d in decisions}
        # Every reply the PLC latched was published, with the same chute.
        for key, reply in plc_replies.items():
            msg = decided.get(key)
            if msg is None:
                report.lost += 1
                report.notes.append(f"reply without a decision message: {key}")
            elif msg["chute"] != reply.chute:
                report.notes.append(f"{key}: PLC got chute {reply.chute}, published {msg}")
        # Every request the PLC put in its ring got its decision. Requests a restarting PLC
        # dropped before the daemon could read them are the PLC's, counted apart.
        unanswered = [(tid, p.seq) for tid, p in passes if (tid, p.seq) not in decided]
        report.dropped_by_plc = min(len(unanswered), self._plc_dropped())
        report.lost += len(unanswered) - report.dropped_by_plc
        if len(unanswered) > report.dropped_by_plc:
            report.notes.append(f"requests without a decision: {unanswered[:10]}")
        # Never a wrong pairing, decisions without codes included; each result says what
        # the PLC confirmed; each decision as the plan says (a hook, see plan_problems).
        report.notes += pairing_problems(ledger, decisions)
        report.notes += result_problems(ledger, results, decisions)
        report.notes += self._decision_notes(ledger, decisions)
        # One result per confirmation, one id each.
        res_key = Counter((r["tracking_id"], r["seq"]) for r in results)
        twice = [key for key, n in res_key.items() if n > 1]
        assert not twice, f"confirmations published twice: {twice[:10]}"
        missing = [
            (c.tracking_id, c.seq) for c in confirmations if (c.tracking_id, c.seq) not in res_key
        ]
        plc_conf_dropped = max(0, self._plc_dropped() - report.dropped_by_plc)
        report.dropped_by_plc += min(len(missing), plc_conf_dropped)
        lost_results = len(missing) - min(len(missing), plc_conf_dropped)
        report.lost += lost_results
        if lost_results:
            report.notes.append(f"confirmations without a result: {missing[:10]}")
        return report

    def _decision_notes(self, ledger: Ledger, decisions: list[dict[str, Any]]) -> list[str]:
        """Each decision as the plan (or `decision_check`) says (a hook, see plan_problems)."""
        pairs = decision_pairs(ledger, decisions)
        if self.decision_check is not None:
            return self.decision_check(pairs)
        return plan_problems(pairs, PLAN_PATH)

    async def _everything_seen(self) -> None:
        """Stop the daemon gracefully (it flushes its outbox: everything it published is
        acknowledged by the broker), then publish a marker: the broker queues it for the
        observer after all that came before, so once it is seen, so is every message the
        daemon sent, re-sends and second decisions included."""
        assert self.daemon is not None
        code = await self.daemon.stop()
        assert code == 0, f"graceful stop: exit {code}; daemon log:\n{self.daemon.log_tail()}"
        stopped = self.daemon.log_events("sorterd stopped")
        assert [e.get("flushed") for e in stopped[-1:]] == [True], f"not flushed: {stopped}"
        marker = f"end-{uuid.uuid4().hex}"
        async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier="fault-end") as c:
            await c.publish(f"{PREFIX}/end", json.dumps({"id": marker}), qos=1)
        await self.wait_for(lambda: marker in self.seen.ids, what="the end marker")

    def _plc_dropped(self) -> int:
        """Messages the PLC simulator threw away itself (restart with counters reset),
        plus what sat unread in its rings when it restarted."""
        return self.line.plc.stats.dropped_on_reset + self.unread_at_reset


REPORTS: list[Report] = []  # every run of this session, for the terminal summary


def print_report(report: Report) -> None:
    # Printed so that `pytest -s` (and the CI log with -rA) shows the figures.
    print(f"\nFAULT {report.line()}")
    for note in report.notes[:10]:
        print(f"  note: {note}")
