"""`sorterd demo`: a whole line on this machine, with live progress and an honest summary.

The simulated PLC, conveyor and scan tunnel, a broker, and the real daemon all run on
loopback; an independent MQTT subscriber counts what reached the broker. The exit code is
0 only when every inducted item reached a terminal outcome and every decision and every
confirmation arrived on MQTT exactly once (by message id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from rich.console import Console
from rich.live import Live
from rich.table import Table

from drivers.broker import LocalBroker, free_port
from drivers.telegram import get_format
from simulators.feeds import FeedMix, FeedPlan, FeedPublisher, FeedSite, line_plan, publish_stream
from simulators.line import DEMO_PARAMS, HeadSpec, SimulatedLine
from sorter.config import Site, SiteConfig, load_site
from sorter.errors import SorterdError
from sorter.plan import load_plan
from sorterd.archive import Archiver
from sorterd.daemon import Daemon

__all__ = [
    "HEAD_NAMES",
    "MIN_WINDOW_MS",
    "DemoError",
    "DemoFeeds",
    "Observer",
    "demo_config_dir",
    "demo_heads",
    "feeds_supported",
    "head_format",
    "run_demo",
    "window_tracking",
    "write_site",
]

DRAIN_TIMEOUT_S = 120.0
MQTT_SETTLE_S = 15.0


def demo_config_dir() -> Path:
    """config/demo of a source checkout, or the copy packaged into the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "config" / "demo", here / "demo_config"):
        if (candidate / "sortplan.toml").is_file():
            return candidate
    raise FileNotFoundError("the demo sort plan is missing from this installation")


def write_site(
    folder: Path,
    *,
    plc_port: int,
    scanner_port: int,
    mqtt_url: str | Sequence[str],
    plan: Path,
    prefix: str,
    manifests: str | None = None,
    manifest_poll_s: float = 5.0,
    extra: str = "",
    plc_url: str | None = None,
    scanners: Sequence[tuple[str, int, str | None]] = (),
    silence_timeout_s: float | None = None,
    formats: Mapping[str, str] | None = None,
    scanner_keys: Mapping[str, str] | None = None,
    feeds: tuple[str, str] | None = None,
    line: str = "demo",
) -> Path:
    """A site config for a line on loopback ports chosen at run time.

    `plc_url` wins over `plc_port` (a PLC on a serial line). `scanners`: (name, port,
    tunnel) of each head; default one head `tunnel-1` on `scanner_port`. `formats`: the
    telegram preset of each head by name (default `index`), with the preset's defaults;
    `scanner_keys` more TOML lines for a head's table (`'max_frame_bytes = 64\n'`).
    `feeds`: the (preadvice, customs) topics of a `[feeds]` table. `mqtt_url`: one broker,
    or a list of the nodes of one clustered broker (docs/interfaces.md section 9).
    `line`: `[site] line`, which names the daemon's MQTT session: daemons on one broker
    need different ones.
    """
    site = folder / "site.toml"
    scanner_tables = _scanner_tables(
        scanners or [("tunnel-1", scanner_port, None)],
        silence_timeout_s,
        formats or {},
        scanner_keys or {},
    )
    manifest_table = (
        f"\n[manifest]\nfiles = [{json.dumps(manifests)}]\npoll_interval_s = {manifest_poll_s}\n"
        if manifests
        else ""
    )
    feeds_table = (
        f"\n[feeds]\npreadvice = {json.dumps(feeds[0])}\ncustoms = {json.dumps(feeds[1])}\n"
        if feeds
        else ""
    )
    site.write_text(
        _site_toml(
            plc_url or f"tcp://127.0.0.1:{plc_port}", scanner_tables, mqtt_url, prefix, plan, line
        )
        + manifest_table
        + feeds_table
        + extra
    )
    return site


def _site_toml(
    plc_url: str,
    scanner_tables: str,
    mqtt_url: str | Sequence[str],
    prefix: str,
    plan: Path,
    line: str,
) -> str:
    """The fixed tables of `write_site`'s config around its scanner tables."""
    return f"""[site]
name = "casablanca-hub"
line = {json.dumps(line)}
timezone = "Africa/Casablanca"
country = "MA"

[plc]
url = "{plc_url}"
poll_interval_ms = 5

{scanner_tables}[mqtt]
url = {json.dumps(mqtt_url if isinstance(mqtt_url, str) else list(mqtt_url))}
topic_prefix = "{prefix}"
stats_interval_s = 2

[plan]
file = {json.dumps(str(plan))}

[journal]
path = "journal.sqlite"
"""


def _scanner_tables(
    scanners: Sequence[tuple[str, int, str | None]],
    silence_timeout_s: float | None,
    formats: Mapping[str, str],
    scanner_keys: Mapping[str, str],
) -> str:
    """The `[[scanner]]` tables of `write_site`, one per (name, port, tunnel)."""
    return "".join(
        f'[[scanner]]\nname = "{name}"\nurl = "tcp://127.0.0.1:{port}"\n'
        f'format = "{formats.get(name, "index")}"\n'
        + (f'tunnel = "{tunnel}"\n' if tunnel else "")
        + (f"silence_timeout_s = {silence_timeout_s}\n" if silence_timeout_s else "")
        + scanner_keys.get(name, "")
        + "\n"
        for name, port, tunnel in scanners
    )


class DemoError(SorterdError):
    """The demo cannot go on: its broker cannot be reached, a daemon did not come up."""


@dataclass(slots=True)
class Observer:
    """An independent MQTT consumer: counts messages by id, as a real consumer dedupes."""

    prefix: str
    decision_ids: set[str] = field(default_factory=set)
    result_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    status: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    devices: dict[str, bool] = field(default_factory=dict)  # P/devices/NAME: connected
    # (wall-clock time, barcode, reason) of every decision, for the feeds' summary.
    decided: list[tuple[float, str, str]] = field(default_factory=list)

    async def run(self, url: str, ready: asyncio.Event) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        try:
            async with aiomqtt.Client(
                host, int(port), identifier=f"demo-observer-{time.time_ns()}"
            ) as c:
                await c.subscribe(f"{self.prefix}/#", qos=1)
                ready.set()
                async for message in c.messages:
                    self.on_message(str(message.topic), message.payload)
        except aiomqtt.MqttError as exc:
            # A wrong --mqtt, or the broker gone: the user's setup, not a bug.
            raise DemoError(f"the broker at {url} cannot be reached or went away: {exc}") from exc

    def on_message(self, topic: str, payload: Any) -> None:
        kind = topic[len(self.prefix) + 1 :]
        if kind.startswith("feeds/"):
            return  # the simulated feeds, some of them bad on purpose: not the daemon's
        data = json.loads(payload) if isinstance(payload, (bytes, bytearray)) else {}
        if kind == "decisions":
            if data["id"] in self.decision_ids:
                self.duplicates += 1
            else:
                self.decision_ids.add(data["id"])
                self.reasons[data["reason"]] += 1
                self.decided.append((time.time(), data.get("barcode") or "", data["reason"]))
        elif kind == "results":
            if data["id"] in self.result_ids:
                self.duplicates += 1
            else:
                self.result_ids.add(data["id"])
                self.outcomes[data["outcome"]] += 1
        elif kind == "status":
            self.status = data.get("state", "")
        elif kind == "stats":
            self.stats = data
        elif kind.startswith("devices/"):
            self.devices[kind.removeprefix("devices/")] = data.get("connected") is True


def feeds_supported() -> bool:
    """Whether this daemon's site config has a `[feeds]` table (issue 14 adds it): the
    demo publishes feeds only to a daemon that subscribes to them."""
    return "feeds" in SiteConfig.model_fields


@dataclass(slots=True)
class DemoFeeds:
    """The simulated hub feeds beside the demo line: the line's own items pre-advised and
    held by customs (simulators/feeds.py), published from the first induction on."""

    site: FeedSite
    plan: FeedPlan
    publisher: FeedPublisher = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.publisher = FeedPublisher(self.site, identifier=f"demo-feeds-{time.time_ns()}")

    @classmethod
    def for_line(
        cls,
        prefix: str,
        mqtt_url: str,
        seed: int,
        rate_per_h: float,
        duration_s: float,
        destinations: Sequence[str],
    ) -> DemoFeeds:
        count = int(rate_per_h * duration_s / 3600) + 1
        mix = FeedMix(destinations=tuple(destinations))
        plan = line_plan(seed, rate_per_h, DEMO_PARAMS, count, mix)
        return cls(FeedSite(mqtt_url, f"{prefix}/feeds/preadvice", f"{prefix}/feeds/customs"), plan)

    @property
    def topics(self) -> tuple[str, str]:
        return (self.site.preadvice, self.site.customs)

    def start(self, tg: asyncio.TaskGroup) -> None:
        """From now on (stream time 0, the line's first induction)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            tg.create_task(self.publisher.run(), name="demo-feeds-publisher"),
            tg.create_task(
                publish_stream(self.publisher, self.plan.messages, start_s=loop.time()),
                name="demo-feeds-stream",
            ),
        ]

    async def stop(self) -> None:
        """The stream ends with the line (releases due later are not sent); what was
        sent is acknowledged within 10 s."""
        runner, stream = self._tasks
        stream.cancel()
        await asyncio.wait([stream])
        await self.publisher.close()
        try:
            async with asyncio.timeout(10):
                await asyncio.shield(runner)
        except TimeoutError:
            runner.cancel()

    def summary_rows(self, obs: Observer) -> list[tuple[str, object]]:
        counts = self.publisher.log.counts()
        daemon = obs.stats.get("feeds", {})
        bad = daemon.get("bad_rows", "-")
        advised = held = released = 0
        feed_log = self.publisher.log
        for wall_s, barcode, reason in obs.decided:
            state = feed_log.state(barcode, wall_s) if barcode else None
            if state is None:
                continue
            advised += reason == "ok" and state.fields is not None
            held += reason == "customs_hold"
            released += reason == "ok" and any(
                dict(row.fields).get("status") == "release"
                for sent, row in feed_log.timeline(barcode)
                if sent.acked_s is not None and sent.acked_s <= wall_s
            )
        return [
            (
                "feeds published",
                f"{counts['rows']} pre-advice rows, {counts['customs']} customs, "
                f"{counts['bad']} bad rows, {counts['duplicates']} duplicates",
            ),
            (
                "feeds applied (daemon's P/stats)",
                f"{daemon.get('rows_applied', '-')} rows, {daemon.get('customs_applied', '-')} "
                f"customs, bad {bad}, lag ms p50/p99 {daemon.get('lag_ms_p50', '-')} / "
                f"{daemon.get('lag_ms_p99', '-')}",
            ),
            (
                "decided with the feeds",
                f"{advised} routed with their pre-advice, {held} held by customs, "
                f"{released} routed after a customs release",
            ),
        ]


def _progress_table(line: SimulatedLine, daemon: Daemon, obs: Observer, elapsed_s: float) -> Table:
    ledger = line.ledger
    stats = daemon.pipeline.stats
    lat = stats.latency_percentiles()
    table = Table(title=f"sorterd demo - {elapsed_s:5.1f} s", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("items/h", f"{stats.items_per_h(time.monotonic_ns()):,.0f}")
    table.add_row("inducted / in flight", f"{ledger.inducted} / {ledger.in_flight}")
    table.add_row("sorted", str(ledger.terminal.get("sorted", 0)))
    table.add_row("rejected", str(sum(n for w, n in ledger.terminal.items() if w != "sorted")))
    table.add_row("recirculations", str(ledger.recirculations))
    table.add_row("reasons", ", ".join(f"{k} {v}" for k, v in sorted(obs.reasons.items())) or "-")
    table.add_row(
        "decision latency ms", f"p50 {lat['p50']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}"
    )
    table.add_row("on MQTT", f"{len(obs.decision_ids)} decisions, {len(obs.result_ids)} results")
    return table


HEAD_NAMES = ("tunnel-1", "tunnel-1-side", "tunnel-1-bottom", "tunnel-1-left", "tunnel-1-right")


def demo_heads(count: int, read_rate: float, telegram_format: str = "index") -> list[HeadSpec]:
    """`count` heads of one tunnel `tunnel-1`, each reading with `read_rate` and speaking
    the preset `telegram_format` (with its default settings)."""
    names = [*HEAD_NAMES, *(f"tunnel-1-{i}" for i in range(len(HEAD_NAMES), count))][:count]
    return [
        HeadSpec(name, read_rate=read_rate, tunnel="tunnel-1", telegram_format=telegram_format)
        for name in names
    ]


# The simulated tunnel's reads come within about +-15 ms of their request (scan offset,
# PLC poll, loopback): a window narrower than this would lose reads.
MIN_WINDOW_MS = 15


def window_tracking(rate_per_h: float, telegram_format: str) -> str:
    """The demo site's [tracking] table for heads without tracking id: a window that fits
    the item spacing at this rate (the default 50 + 50 ms when it does), and the spacing
    itself, which the config check holds the window against. ValueError when items would
    come too close for any window."""
    if get_format(telegram_format).carries_tracking_id:
        return ""
    params = DEMO_PARAMS
    spacing_ms = 1000 * max(3600 / rate_per_h, params.item_pitch_m / params.belt_speed_m_s)
    side_ms = min(50, int(spacing_ms * 0.4))
    if side_ms < MIN_WINDOW_MS:
        most = int(3600_000 / (MIN_WINDOW_MS / 0.4))
        raise ValueError(
            f"--rate {rate_per_h:,.0f} puts items {spacing_ms:.0f} ms apart: too close to match "
            f"reads without tracking id ({telegram_format}) by window; use --rate {most} or less"
        )
    return (
        f"\n[tracking]\nitem_spacing_ms = {int(spacing_ms)}\n"
        f"window_before_ms = {side_ms}\nwindow_after_ms = {side_ms}\n"
    )


def head_format(spec: HeadSpec, default: str = "index") -> str:
    """The preset name of a simulated head, for its `[[scanner]]` table."""
    fmt = spec.telegram_format
    if fmt is None:
        return default
    return fmt if isinstance(fmt, str) else fmt.format


async def run_demo(
    *,
    duration_s: float,
    rate_per_h: float,
    seed: int,
    mqtt: str | None = None,
    heads: int = 1,
    read_rate: float = 1.0,
    kill_head_after_s: float | None = None,
    telegram_format: str = "index",
    archive: str | None = None,
) -> int:
    console = Console(stderr=False)
    try:
        tracking = window_tracking(rate_per_h, telegram_format)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config_dir = demo_config_dir()
    plan_path = config_dir / "sortplan.toml"
    plan = load_plan(plan_path)
    prefix = f"sortcentre/casablanca-hub/demo-{time.time_ns() % 10**6}"
    async with contextlib.AsyncExitStack() as stack:
        if mqtt is None:
            broker = await stack.enter_async_context(LocalBroker())
            mqtt_url = broker.url
            console.print(f"broker: {broker.kind} on {mqtt_url}")
        else:
            mqtt_url = mqtt
        specs = demo_heads(heads, read_rate, telegram_format)
        line = await stack.enter_async_context(
            SimulatedLine(sorted(plan.machine_chutes), seed=seed, heads=specs)
        )
        if archive is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sorterd-demo-")))
        else:
            # Kept: the trace command printed at the end reads this site config.
            tmp = Path(tempfile.mkdtemp(prefix="sorterd-demo-"))
        feeds = None
        if feeds_supported():
            names = [d.name for d in plan.destinations]
            feeds = DemoFeeds.for_line(prefix, mqtt_url, seed, rate_per_h, duration_s, names)
        site_path = write_site(
            tmp,
            plc_port=line.plc.port,
            scanner_port=free_port(),  # unused: every head is listed
            mqtt_url=mqtt_url,
            plan=plan_path,
            prefix=prefix,
            scanners=[(h.name, line.heads[h.name].port or 0, h.tunnel) for h in specs],
            formats={h.name: head_format(h) for h in specs},
            extra=tracking + _archive_table(archive, prefix),
            feeds=feeds.topics if feeds else None,
        )
        run = _DemoRun(console, line, Observer(prefix), feeds)
        return await run.run(
            load_site(site_path), mqtt_url, rate_per_h, duration_s, kill_head_after_s
        )
    return 1


def _archive_table(url: str | None, prefix: str) -> str:
    if url is None:
        return ""
    return f"\n[archive]\nurl = {json.dumps(url)}\nlines = [{json.dumps(prefix)}]\n"


@dataclass(slots=True)
class _DemoRun:
    """The demo once its line, daemon and observer exist: induct, watch, settle, sum up."""

    console: Console
    line: SimulatedLine
    observer: Observer
    feeds: DemoFeeds | None = None
    _archive_task: asyncio.Task[None] | None = None

    async def run(
        self,
        site: Site,
        mqtt_url: str,
        rate_per_h: float,
        duration_s: float,
        kill_head_after_s: float | None,
    ) -> int:
        line, observer, console = self.line, self.observer, self.console
        observer_ready = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            obs_task = tg.create_task(observer.run(mqtt_url, observer_ready), name="observer")
            await asyncio.wait_for(observer_ready.wait(), 10)
            archiver = await self._start_archiver(site, tg)
            daemon = Daemon(site)
            daemon_task = tg.create_task(daemon.run(), name="daemon")
            await asyncio.wait_for(daemon.ready.wait(), 60)
            console.print(
                f"daemon ready in {daemon.times.total_ms:.0f} ms; inducting at "
                f"{rate_per_h:,.0f} items/h for {duration_s:g} s"
            )
            if self.feeds is not None and daemon.parts.feeds is not None:
                # The feeds worker subscribes beside the running line: its session (what
                # the broker keeps for it) begins there.
                worker = daemon.parts.feeds.worker
                await asyncio.wait_for(worker.subscribed.wait(), 60)
            t0 = time.monotonic()
            if self.feeds is not None:
                self.feeds.start(tg)
            induct = tg.create_task(line.run(rate_per_h, duration_s=duration_s), name="induct")
            deadline = t0 + duration_s + DRAIN_TIMEOUT_S
            drained = await self._watch(daemon, induct, t0, deadline, kill_head_after_s)
            await self._settle(daemon)
            if self.feeds is not None:
                await self.feeds.stop()
            offline = {name for name in line.heads if not daemon.heads.online(name)}
            daemon.request_stop()
            await daemon_task
            await asyncio.sleep(0.2)
            obs_task.cancel()
            if archiver is not None:
                await self._stop_archiver(archiver, daemon)
        extra = self.feeds.summary_rows(observer) if self.feeds is not None else []
        code = _summary(
            console, line, daemon, observer, drained, time.monotonic() - t0, offline, extra
        )
        if archiver is not None:
            _trace_hint(console, site, archiver)
        return code

    async def _start_archiver(self, site: Site, tg: asyncio.TaskGroup) -> Archiver | None:
        """`--archive`: an archiver in this process, subscribed before the line starts."""
        if site.config.archive is None:
            return None
        archiver = Archiver(site, client_id=f"sorterd-demo-{os.getpid()}")
        task = tg.create_task(archiver.run(), name="archiver")
        ready = tg.create_task(archiver.ready.wait())
        await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # its error (a wrong password, no server) ends the demo
        self._archive_task = task
        return archiver

    async def _stop_archiver(self, archiver: Archiver, daemon: Daemon) -> None:
        """Until every decision and result is in the archive (30 s at most), then stop."""
        want = daemon.pipeline.counters.decisions + sum(self.line.ledger.confirmations.values())
        end = time.monotonic() + 30
        stats = archiver.stats
        while time.monotonic() < end and stats.rows + stats.duplicates < want:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        archiver.request_stop()
        if self._archive_task is not None:
            await self._archive_task
        self.console.print(f"archive: {stats.rows:,} rows written of {want:,} messages")

    async def _watch(
        self,
        daemon: Daemon,
        induct: asyncio.Task[int],
        t0: float,
        deadline: float,
        kill_head_after_s: float | None,
    ) -> bool:
        """Show progress until the belt is empty after induction (True) or the deadline."""
        line, console = self.line, self.console
        killed = False
        live_ctx = (
            Live(console=console, refresh_per_second=4)
            if console.is_terminal
            else contextlib.nullcontext()
        )
        with live_ctx as live:
            last_print = 0.0
            while time.monotonic() < deadline:
                elapsed = time.monotonic() - t0
                if kill_head_after_s is not None and not killed and elapsed >= kill_head_after_s:
                    killed = True
                    name = list(line.heads)[-1]
                    await line.kill_head(name)
                    console.print(f"switched head {name} off")
                if isinstance(live, Live):
                    live.update(_progress_table(line, daemon, self.observer, elapsed))
                elif elapsed - last_print >= 5:
                    last_print = elapsed
                    console.print(
                        f"{elapsed:5.0f} s  inducted {line.ledger.inducted}  "
                        f"in flight {line.ledger.in_flight}  "
                        f"decisions on MQTT {len(self.observer.decision_ids)}"
                    )
                if induct.done() and line.ledger.in_flight == 0:
                    return True
                await asyncio.sleep(0.25)
        return False

    async def _settle(self, daemon: Daemon) -> None:
        """Let the last messages reach the broker and the observer."""
        observer, ledger = self.observer, self.line.ledger
        settle_end = time.monotonic() + MQTT_SETTLE_S
        while time.monotonic() < settle_end and (  # noqa: ASYNC110 - counts, not an event
            len(observer.decision_ids) < daemon.pipeline.counters.decisions
            or len(observer.result_ids) < sum(ledger.confirmations.values())
        ):
            await asyncio.sleep(0.1)


def _trace_hint(console: Console, site: Site, archiver: Archiver) -> None:
    code = archiver.example_code
    if code is None:
        return
    console.print(
        "trace an item of this run (with SORTERD_ARCHIVE_PASSWORD set as for the demo):\n"
        f"  sorterd trace -c {shlex.quote(str(site.path))} {shlex.quote(code)}",
        markup=False,
        highlight=False,
    )


def _summary_rows(
    line: SimulatedLine, daemon: Daemon, obs: Observer, elapsed_s: float, offline: set[str]
) -> list[tuple[str, object]]:
    ledger = line.ledger
    confirmations = sum(ledger.confirmations.values())
    decisions = daemon.pipeline.counters.decisions
    lat = daemon.pipeline.stats.latency_percentiles()
    return [
        ("inducted", ledger.inducted),
        ("terminal outcomes", ledger.terminal.total()),
        ("  " + ", ".join(f"{k} {v}" for k, v in sorted(ledger.terminal.items())), ""),
        ("still in flight", ledger.in_flight),
        ("recirculations", ledger.recirculations),
        ("late replies", ledger.late_replies),
        ("decisions (daemon / on MQTT)", f"{decisions} / {len(obs.decision_ids)}"),
        ("confirmations (PLC / results on MQTT)", f"{confirmations} / {len(obs.result_ids)}"),
        ("duplicates seen by consumer", obs.duplicates),
        ("reasons", ", ".join(f"{k} {v}" for k, v in sorted(obs.reasons.items()))),
        ("decision latency ms", f"p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.2f}"),
        ("read rate (items)", daemon.pipeline.stats.snapshot(time.monotonic_ns())["read_rate"]),
        *(
            (
                f"head {name}",
                f"reads {h.reads} noreads {h.noreads} missed {h.missed} late {h.late}"
                + (f" orphans {h.orphans}" if h.window else "")
                + (" (offline)" if name in offline else ""),
            )
            for name, h in daemon.tracker.heads.items()
        ),
        ("elapsed s", f"{elapsed_s:.1f}"),
    ]


def _summary(
    console: Console,
    line: SimulatedLine,
    daemon: Daemon,
    obs: Observer,
    drained: bool,
    elapsed_s: float,
    offline: set[str],
    extra: Sequence[tuple[str, object]] = (),
) -> int:
    ledger = line.ledger
    confirmations = sum(ledger.confirmations.values())
    decisions = daemon.pipeline.counters.decisions
    table = Table(title="sorterd demo summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in [*_summary_rows(line, daemon, obs, elapsed_s, offline), *extra]:
        table.add_row(key, str(value))
    console.print(table)
    ok = (
        drained
        and ledger.in_flight == 0
        and len(obs.decision_ids) == decisions
        and len(obs.result_ids) == confirmations
        and ledger.inducted > 0
    )
    if ok:
        console.print(
            "[green]OK[/green]: every inducted item reached a terminal outcome, "
            "every decision and result reached the broker"
        )
        return 0
    console.print("[red]FAILED[/red]: see the counts above", style="red")
    print("demo failed", file=sys.stderr)
    return 1
