"""`sorterd demo --lines N`: a hub of N simulated lines on one broker.

Each line is what the one-line demo runs (a simulated PLC, conveyor and scan tunnel, on
loopback ports of its own) with its own daemon: a `sorterd run` process with its own site
config and journal in its own folder, as a hub runs one daemon per line. All daemons talk
to one broker, under one hub prefix (docs/operations.md, "Running a hub"):

    <hub>/line-1/status, <hub>/line-1/decisions, ...    <hub>/line-N/...

with `<hub>` = `sortcentre/demo-hub-<run>` (a run number, so two runs on a shared broker
do not mix their retained topics). `sorterd top --hub <hub>` watches them all.

An independent MQTT observer per line counts what reached the broker by message id. The
exit code is 0 only when, on every line, every inducted item reached a terminal outcome,
every decision the daemon counted and every confirmation the PLC made arrived on MQTT,
and the daemon stopped cleanly.

`hub_brokers` is the one place that decides which broker the lines get: the demo's own
(mosquitto, else embedded), the site's (`--mqtt`), or a three-node cluster (`--cluster`,
sorterd/natscluster.py, docs/cluster.md). On a cluster the demo does what the tests and the
failover benchmark do (docs/cluster.md "Where the leaders are"): every daemon lists the last
node last and is given one of the others first (`line_nodes`), the observers are on the last
node, and once daemons and observers are connected every MQTT stream and consumer is led
from it; the death of a daemon's node then costs no JetStream election.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.table import Table

from drivers.broker import LocalBroker, free_port
from simulators.conveyor import Ledger
from simulators.line import HeadSpec, SimulatedLine
from sorter.plan import load_plan
from sorterd.demo import (
    DRAIN_TIMEOUT_S,
    MQTT_SETTLE_S,
    DemoError,
    Observer,
    demo_config_dir,
    demo_heads,
    head_format,
    window_tracking,
    write_site,
)
from sorterd.natscluster import NatsCluster

__all__ = [
    "MAX_LINES",
    "HubBrokers",
    "HubDemoError",
    "HubLine",
    "hub_brokers",
    "hub_prefix",
    "line_nodes",
    "line_prefix",
    "plc_reply_ms",
    "run_hub_demo",
]

# Each line is a daemon process plus its simulators in this one: the bound for a 2-core
# machine (benchmarks/hub.py measures four lines at 40,000 items/h).
MAX_LINES = 4
DAEMON_ONLINE_TIMEOUT_S = 120.0
DAEMON_STOP_TIMEOUT_S = 15.0
CLUSTER_NODES = 3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class HubDemoError(DemoError):
    """The hub demo cannot start: no cluster support, a daemon that did not come up."""


def hub_prefix(run: int) -> str:
    """The hub's topic prefix for one demo run."""
    return f"sortcentre/demo-hub-{run}"


def line_prefix(hub: str, index: int) -> str:
    """The topic prefix of line `index` (1-based) under the hub's: `<hub>/line-<index>`."""
    return f"{hub}/line-{index}"


def line_nodes(urls: Sequence[str], index: int) -> list[str]:
    """The broker URLs line `index` (1-based) is given, in order: on a cluster the nodes but
    the last, from its k-th on (the daemons spread over them), then the last node, the one
    that leads JetStream and no daemon is given first (docs/cluster.md "Where the leaders
    are"); one URL as it is."""
    *others, last = urls
    shift = (index - 1) % len(others) if others else 0
    return [*others[shift:], *others[:shift], last]


@dataclass(frozen=True, slots=True)
class HubBrokers:
    """What `hub_brokers` made: every node's URL, the leading node last; the cluster, when
    the demo started one (to place its leaders)."""

    urls: list[str]
    cluster: NatsCluster | None = None


@contextlib.asynccontextmanager
async def hub_brokers(
    *, mqtt: str | None, cluster: bool, base_dir: Path, console: Console
) -> AsyncIterator[HubBrokers]:
    """The broker URL(s) the lines are given: one URL, or the nodes of a cluster.

    `cluster`: three NATS servers with MQTT (the cluster's own module starts and stops
    them); else `mqtt`, the site's broker; else the demo's own (mosquitto when installed,
    an embedded broker otherwise), stopped at the end.
    """
    if cluster:
        # Blocking start (a few seconds, until a QoS 1 message has crossed the nodes):
        # nothing else runs on the loop yet.
        with NatsCluster(base_dir / "cluster", nodes=CLUSTER_NODES) as nodes:
            urls = list(nodes.mqtt_urls)
            console.print(f"broker: {len(urls)}-node NATS cluster on {', '.join(urls)}")
            yield HubBrokers(urls, nodes)
    elif mqtt is not None:
        yield HubBrokers([mqtt])
    else:
        async with LocalBroker() as broker:
            console.print(f"broker: {broker.kind} on {broker.url}")
            yield HubBrokers([broker.url])


def plc_reply_ms(ledger: Ledger) -> dict[str, float]:
    """Request (on the PLC's ring) to reply (read by the PLC) of every answered pass, as
    the PLC sees it; zeros before any."""
    samples = np.array(
        [
            (p.reply_s - p.scan_s) * 1000
            for rec in ledger.items
            for p in rec.passes
            if p.reply_s is not None
        ]
    )
    if samples.size == 0:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    p50, p99 = np.percentile(samples, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(samples.max())}


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None where not readable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(slots=True)
class HubLine:
    """One line of the hub: its simulators, its observer, its `sorterd run` process."""

    index: int
    prefix: str
    folder: Path
    line: SimulatedLine
    observer: Observer
    mqtt_urls: list[str]
    heads: list[HeadSpec]
    process: asyncio.subprocess.Process | None = None
    exit_code: int | None = None
    cpu_start_s: float | None = None
    cpu_used_s: float | None = None
    _observer_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"line-{self.index}"

    @property
    def log(self) -> Path:
        return self.folder / "daemon.log"

    def write_site(self, plan: Path, tracking: str) -> Path:
        """The line's site config, journal beside it in its folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return write_site(
            self.folder,
            plc_port=self.line.plc.port,
            scanner_port=free_port(),  # unused: every head is listed
            mqtt_url=self.mqtt_urls if len(self.mqtt_urls) > 1 else self.mqtt_urls[0],
            plan=plan,
            prefix=self.prefix,
            scanners=[(h.name, self.line.heads[h.name].port or 0, h.tunnel) for h in self.heads],
            formats={h.name: head_format(h) for h in self.heads},
            extra=tracking,
            # The daemon's MQTT session is named after its line: one per daemon.
            line=self.name,
        )

    async def observe(self, tg: asyncio.TaskGroup) -> None:
        """Subscribe this line's observer (on the last node of a cluster: the leading one,
        which no daemon is given first) before its daemon publishes anything."""
        ready = asyncio.Event()
        self._observer_task = tg.create_task(
            self.observer.run(self.mqtt_urls[-1], ready), name=f"observer-{self.name}"
        )
        await asyncio.wait_for(ready.wait(), 10)

    async def start_daemon(self, site: Path) -> None:
        """`sorterd run -c site` as its own process, logging warnings into daemon.log."""
        env = {**os.environ, "SORTERD_LOG_LEVEL": os.environ.get("SORTERD_LOG_LEVEL", "warning")}
        with open(self.log, "wb") as log:  # noqa: ASYNC230 - once, before the spawn
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sorterd.cli", "run", "-c", str(site),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=log, env=env,
            )  # fmt: skip

    async def wait_online(self, timeout_s: float) -> None:
        """Until the daemon says online with its PLC and every head connected."""
        proc, obs = self.process, self.observer
        assert proc is not None
        try:
            async with asyncio.timeout(timeout_s):
                while not (obs.status == "online" and obs.devices.get("plc") is True):
                    if proc.returncode is not None:
                        raise HubDemoError(
                            f"{self.name}: sorterd run exited with {proc.returncode} before "
                            f"it was online; the end of its log:\n{_tail(self.log)}"
                        )
                    await asyncio.sleep(0.05)
                for spec in self.heads:
                    await self.line.heads[spec.name].wait_for_clients(1)
        except TimeoutError as exc:
            raise HubDemoError(
                f"{self.name}: sorterd run was not online with its PLC and scanners within "
                f"{timeout_s:.0f} s; the end of its log:\n{_tail(self.log)}"
            ) from exc
        self.cpu_start_s = _cpu_s(proc.pid)

    async def stop_daemon(self) -> None:
        """SIGTERM (a clean stop), SIGKILL after DAEMON_STOP_TIMEOUT_S."""
        proc = self.process
        if proc is None:
            return
        if proc.returncode is None:
            used = _cpu_s(proc.pid)
            if used is not None and self.cpu_start_s is not None:
                self.cpu_used_s = used - self.cpu_start_s
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DAEMON_STOP_TIMEOUT_S):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        self.exit_code = proc.returncode

    def stop_observer(self) -> None:
        if self._observer_task is not None:
            self._observer_task.cancel()

    # --- what the line says ----------------------------------------------------------------

    @property
    def daemon_decisions(self) -> int | None:
        """Decisions the daemon counted, from its last P/stats."""
        value = self.observer.stats.get("decisions")
        return value if isinstance(value, int) else None

    @property
    def confirmations(self) -> int:
        return sum(self.ledger.confirmations.values())

    @property
    def ledger(self) -> Ledger:
        return self.line.ledger

    def settled(self) -> bool:
        """Everything the daemon did is on the broker and its P/stats says so."""
        obs = self.observer
        return (
            self.daemon_decisions == len(obs.decision_ids)
            and len(obs.result_ids) == self.confirmations
            and obs.stats.get("results") == self.confirmations
        )

    def ok(self, drained: bool) -> bool:
        return (
            drained
            and self.ledger.inducted > 0
            and self.ledger.in_flight == 0
            and self.settled()
            and self.exit_code == 0
        )


def _tail(path: Path, lines: int = 10) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


async def run_hub_demo(
    *,
    lines: int,
    duration_s: float,
    rate_per_h: float,
    seed: int,
    mqtt: str | None = None,
    cluster: bool = False,
    heads: int = 1,
    read_rate: float = 1.0,
    telegram_format: str = "index",
) -> int:
    """The hub demo; `rate_per_h` is each line's. The exit code of the module docstring."""
    console = Console()
    if not 1 <= lines <= MAX_LINES:
        print(f"error: --lines must be within 1..{MAX_LINES}, got {lines}", file=sys.stderr)
        return 2
    try:
        tracking = window_tracking(rate_per_h, telegram_format)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plan_path = demo_config_dir() / "sortplan.toml"
    chutes = sorted(load_plan(plan_path).machine_chutes)
    hub = hub_prefix(time.time_ns() % 10**6)
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(_quiet_simulated_plcs())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sorterd-hub-")))
        brokers = await stack.enter_async_context(
            hub_brokers(mqtt=mqtt, cluster=cluster, base_dir=tmp, console=console)
        )
        hub_lines = []
        for index in range(1, lines + 1):
            specs = demo_heads(heads, read_rate, telegram_format)
            sim = await stack.enter_async_context(
                SimulatedLine(chutes, seed=seed + index - 1, heads=specs)
            )
            prefix = line_prefix(hub, index)
            nodes = line_nodes(brokers.urls, index)
            folder = tmp / f"line-{index}"
            hub_lines.append(HubLine(index, prefix, folder, sim, Observer(prefix), nodes, specs))
        run = _HubRun(console, hub, hub_lines, brokers)
        return await run.run(plan_path, tracking, rate_per_h, duration_s)
    return 1


@contextlib.contextmanager
def _quiet_simulated_plcs() -> Iterator[None]:
    """pymodbus in this process is only the simulated PLCs' server. It logs a client that
    goes away mid-exchange (every daemon, as the demo stops it) as an error with a dump of
    its frames: the demo's own doing, not the line's. The daemons log in their own files."""
    logger = logging.getLogger("pymodbus")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass(slots=True)
class _HubRun:
    """The hub demo once its broker and lines exist: start, induct, watch, settle, sum up."""

    console: Console
    hub: str
    lines: list[HubLine]
    brokers: HubBrokers

    async def run(self, plan: Path, tracking: str, rate_per_h: float, duration_s: float) -> int:
        console = self.console
        drained = False
        t0 = time.monotonic()
        try:
            async with asyncio.TaskGroup() as tg:
                for hl in self.lines:
                    await hl.observe(tg)
                try:
                    await self._start(plan, tracking)
                    await self._place_leaders()
                    console.print(
                        f"{len(self.lines)} lines online under {self.hub}; inducting at "
                        f"{rate_per_h:,.0f} items/h each for {duration_s:g} s\n"
                        f"watch them: sorterd top --hub {self.hub} --mqtt {self.brokers.urls[-1]}",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,  # the command stays one line to copy
                    )
                    t0 = time.monotonic()
                    induct = [
                        tg.create_task(hl.line.run(rate_per_h, duration_s=duration_s))
                        for hl in self.lines
                    ]
                    drained = await self._watch(induct, t0, t0 + duration_s + DRAIN_TIMEOUT_S)
                    await self._settle()
                finally:
                    # The simulators first: a PLC whose host stops answering says so in the
                    # console; a daemon whose PLC goes away says so in its own log.
                    for hl in self.lines:
                        await hl.line.stop()
                    for hl in self.lines:
                        await hl.stop_daemon()
                    await asyncio.sleep(0.2)  # the offline status reaches the observers
                    for hl in self.lines:
                        hl.stop_observer()
        except ExceptionGroup as group:
            matched, rest = group.split(DemoError)
            if matched is None or rest is not None:
                raise
            for exc in matched.exceptions:
                print(f"error: {exc}", file=sys.stderr)
            return 1
        return _summary(console, self.hub, self.lines, drained, time.monotonic() - t0)

    async def _start(self, plan: Path, tracking: str) -> None:
        """Every daemon spawned at once (they load and compile in parallel), then each
        waited for until online."""
        for hl in self.lines:
            await hl.start_daemon(hl.write_site(plan, tracking))
        for hl in self.lines:
            await hl.wait_online(DAEMON_ONLINE_TIMEOUT_S)

    async def _place_leaders(self) -> None:
        """On a cluster: every MQTT stream and consumer led from the last node, the one
        every daemon lists last and the observers are on (docs/cluster.md "Where the
        leaders are"), as tests/cluster and the failover benchmark do. After the daemons
        and observers connected: a QoS 1 subscription is a consumer with a leader of its
        own, placed by chance when it is made. Before induction: a step-down pauses the
        QoS 1 publishes of its group for a moment. A placement that does not finish is a
        warning, not a failure: the lines work as well, only a node's death may cost
        an election."""
        cluster, urls = self.brokers.cluster, self.brokers.urls
        if cluster is None:
            return
        node = len(urls) - 1
        elsewhere = await asyncio.to_thread(cluster.place_leaders, node)
        if elsewhere:
            self.console.print(
                f"warning: not every MQTT stream and consumer is led from node {node + 1} "
                f"({urls[node]}): {elsewhere}; a daemon's node that dies may cost a "
                "JetStream election (4 to 9 s, docs/cluster.md)",
                style="yellow",
                markup=False,
                highlight=False,
            )
            return
        self.console.print(
            f"leaders: every MQTT stream and consumer led from node {node + 1} ({urls[node]}), "
            "the one every daemon lists last",
            markup=False,
            highlight=False,
        )

    async def _watch(self, induct: Sequence[asyncio.Task[int]], t0: float, deadline: float) -> bool:
        """Progress until every belt is empty after induction (True) or the deadline."""
        console = self.console
        live_ctx = (
            Live(console=console, refresh_per_second=4)
            if console.is_terminal
            else contextlib.nullcontext()
        )
        with live_ctx as live:
            last_print = 0.0
            while time.monotonic() < deadline:
                elapsed = time.monotonic() - t0
                if isinstance(live, Live):
                    live.update(_progress_table(self.lines, elapsed))
                elif elapsed - last_print >= 5:
                    last_print = elapsed
                    console.print(
                        f"{elapsed:5.0f} s  "
                        + "  ".join(
                            f"{hl.name}: inducted {hl.ledger.inducted} in flight "
                            f"{hl.ledger.in_flight} on MQTT {len(hl.observer.decision_ids)}"
                            for hl in self.lines
                        )
                    )
                if all(t.done() for t in induct) and all(
                    hl.ledger.in_flight == 0 for hl in self.lines
                ):
                    return True
                await asyncio.sleep(0.25)
        return False

    async def _settle(self) -> None:
        """Until every line's messages and its next P/stats are on the broker."""
        end = time.monotonic() + MQTT_SETTLE_S
        while time.monotonic() < end and not all(hl.settled() for hl in self.lines):  # noqa: ASYNC110
            await asyncio.sleep(0.1)


def _progress_table(lines: Sequence[HubLine], elapsed_s: float) -> Table:
    table = Table(title=f"sorterd demo - hub of {len(lines)} lines - {elapsed_s:5.1f} s")
    for column in ("line", "items/h", "inducted", "in flight", "sorted", "late", "on MQTT d/r"):
        table.add_column(column, justify="left" if column == "line" else "right")
    for hl in lines:
        stats, ledger, obs = hl.observer.stats, hl.ledger, hl.observer
        items_h = stats.get("items_per_h")
        table.add_row(
            hl.name,
            f"{items_h:,.0f}" if isinstance(items_h, int | float) else "-",
            str(ledger.inducted),
            str(ledger.in_flight),
            str(ledger.terminal.get("sorted", 0)),
            str(ledger.late_replies),
            f"{len(obs.decision_ids)} / {len(obs.result_ids)}",
        )
    return table


def _rate(value: object) -> str:
    return f"{value * 100:.1f} %" if isinstance(value, int | float) else "-"


def _line_column(hl: HubLine) -> list[str]:
    ledger, obs = hl.ledger, hl.observer
    lat = hl.observer.stats.get("latency_ms") or {}
    plc = plc_reply_ms(ledger)
    decisions = hl.daemon_decisions
    return [
        str(ledger.inducted),
        str(ledger.terminal.total()),
        str(ledger.terminal.get("sorted", 0)),
        str(ledger.in_flight),
        str(ledger.recirculations),
        str(ledger.late_replies),
        f"{'-' if decisions is None else decisions} / {len(obs.decision_ids)}",
        f"{hl.confirmations} / {len(obs.result_ids)}",
        str(obs.duplicates),
        _rate(obs.stats.get("read_rate")),
        _rate(obs.stats.get("sort_rate")),
        f"{plc['p50']:.1f} / {plc['p99']:.1f}",
        f"{lat.get('p50', 0):.2f} / {lat.get('p99', 0):.2f}",
        "-" if hl.cpu_used_s is None else f"{hl.cpu_used_s:.1f}",
        "-" if hl.exit_code is None else str(hl.exit_code),
    ]


_ROWS = (
    "inducted",
    "terminal outcomes",
    "sorted",
    "still in flight",
    "recirculations",
    "late replies",
    "decisions (daemon / on MQTT)",
    "confirmations (PLC / results on MQTT)",
    "duplicates seen by consumer",
    "read rate (daemon)",
    "sort rate (daemon)",
    "PLC request->reply ms p50 / p99",
    "daemon decision ms p50 / p99",
    "daemon CPU s",
    "daemon exit code",
)
# The rows the hub column adds up (the others are per line only).
_SUMMED = {0, 1, 2, 3, 4, 5, 8, 13}


def _hub_column(columns: Sequence[list[str]], lines: Sequence[HubLine]) -> list[str]:
    out = []
    for row, _ in enumerate(_ROWS):
        if row in _SUMMED:
            values = [c[row] for c in columns if c[row] != "-"]
            total = sum(float(v) for v in values)
            out.append(f"{total:.1f}" if row == 13 else f"{total:.0f}")
        else:
            out.append("")
    decisions = sum(len(hl.observer.decision_ids) for hl in lines)
    results = sum(len(hl.observer.result_ids) for hl in lines)
    out[6] = f"{decisions} on MQTT"
    out[7] = f"{results} on MQTT"
    worst = max((plc_reply_ms(hl.ledger)["p99"] for hl in lines), default=0.0)
    out[11] = f"worst p99 {worst:.1f}"
    return out


def _summary(
    console: Console, hub: str, lines: Sequence[HubLine], drained: bool, elapsed_s: float
) -> int:
    table = Table(title=f"sorterd demo summary - hub {hub}", title_justify="left")
    table.add_column("")
    for hl in lines:
        table.add_column(hl.name, justify="right")
    table.add_column("hub", justify="right", style="bold")
    columns = [_line_column(hl) for hl in lines]
    hub_column = _hub_column(columns, lines)
    for row, name in enumerate(_ROWS):
        table.add_row(name, *(c[row] for c in columns), hub_column[row])
    verdicts = {hl.name: hl.ok(drained) for hl in lines}
    table.add_row(
        "verdict",
        *("OK" if verdicts[hl.name] else "FAILED" for hl in lines),
        "OK" if all(verdicts.values()) else "FAILED",
    )
    console.print(table)
    console.print(f"elapsed {elapsed_s:.1f} s")
    if all(verdicts.values()):
        console.print(
            "[green]OK[/green]: on every line every inducted item reached a terminal outcome, "
            "every decision and result reached the broker, and the daemon stopped cleanly"
        )
        return 0
    failed = ", ".join(name for name, ok in verdicts.items() if not ok)
    console.print(f"[red]FAILED[/red]: {failed}; see the counts above", style="red")
    for hl in lines:
        if not verdicts[hl.name] and hl.exit_code not in (0, None):
            console.print(f"{hl.name} daemon log ({hl.log}):\n{_tail(hl.log)}", markup=False)
    print("demo failed", file=sys.stderr)
    return 1
