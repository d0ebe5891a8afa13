"""`sorterd top --hub PREFIX`: every line of a hub on one screen, from the broker alone.

A hub runs one daemon per line, each with its own topic prefix directly under the hub's
(`<hub>/<line>`, docs/operations.md "Running a hub"). This view subscribes to the retained
topics of every line at once (`<hub>/+/status`, `<hub>/+/stats`, `<hub>/+/devices/+`):
a line appears as soon as one of them is on the broker, and nothing else (decisions,
results, feeds) is received, so the view stays light however busy the lines are.

Per line: state (online/offline and since when), items/h, read rate, sort rate, late
replies (P/stats outcomes `recirc_late`: the PLC recirculated an item because its reply
came too late), decision latency p99, MQTT backlog, devices in fault (P/devices/NAME
not connected) and the age of its P/stats; a hub row adds them up.

Drilling into a line: `--line NAME` shows that line's own `sorterd top` view; in the live
view, the digit keys 1-9 open the line of that row and `h` (or Escape) comes back to the
hub, `q` quits. Like the one-line view: `HubModel` holds the state without I/O,
`render_hub` draws it, `run_hub_top` feeds it through `sorterd.top.follow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sorter.addresses import parse_mqtt_urls
from sorter.wire_json import parse_object
from sorterd.top import (
    CONNECT_TIMEOUT_S,
    PIPE_FRAME_INTERVAL_S,
    BrokerView,
    TopModel,
    connect_budget_s,
    follow,
    render,
    run_top,
)

__all__ = [
    "HUB_FILTERS",
    "HubModel",
    "LineView",
    "render_hub",
    "run_hub_top",
]

# The retained topics of every line directly under the hub prefix.
HUB_FILTERS = ("+/status", "+/stats", "+/devices/+")
STALE_STATS_S = 30.0  # when a line's stats interval is not known yet
BACK_KEYS = frozenset({"h", "\x1b", "\x7f", "\x08"})
QUIT_KEYS = frozenset({"q", "Q"})


def _check_hub(prefix: str) -> str:
    cleaned = prefix.strip().rstrip("/")
    if not cleaned or "+" in cleaned or "#" in cleaned:
        raise ValueError(
            f"hub prefix {prefix!r} must be the part of the lines' mqtt.topic_prefix before "
            "the line (non-empty, no + or # wildcards)"
        )
    return cleaned


def _parse_ts(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=dt.UTC)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(slots=True)
class LineView:
    """What the hub view knows of one line: its retained status, stats and devices."""

    name: str
    status: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    stats_interval_s: float | None = None
    devices: dict[str, bool] = field(default_factory=dict)  # name -> connected

    @property
    def state(self) -> str:
        state = self.status.get("state")
        return state if isinstance(state, str) else ""

    @property
    def faulted(self) -> list[str]:
        """Devices not connected, the PLC first."""
        down = [d for d, up in self.devices.items() if not up]
        return sorted(down, key=lambda d: (d != "plc", d))

    @property
    def late_replies(self) -> int | None:
        outcomes = self.stats.get("outcomes")
        if not isinstance(outcomes, dict):
            return None
        late = _number(outcomes.get("recirc_late", 0))
        return None if late is None else int(late)

    @property
    def empty(self) -> bool:
        return not (self.status or self.stats or self.devices)

    @property
    def is_line(self) -> bool:
        """A sorter's daemon publishes stats and devices; another service of the hub that
        keeps a status beside the lines (the archive's `<hub>/archive/status`) does not."""
        return bool(self.stats or self.devices)

    def stats_age_s(self, now: dt.datetime) -> float | None:
        stamp = _parse_ts(self.stats.get("ts"))
        return None if stamp is None else (now - stamp).total_seconds()

    def stale(self, now: dt.datetime) -> bool:
        age = self.stats_age_s(now)
        limit = max(3 * self.stats_interval_s, 5.0) if self.stats_interval_s else STALE_STATS_S
        return age is None or age > limit


def _natural(name: str) -> tuple[Any, ...]:
    """line-2 before line-10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


@dataclass(slots=True)
class HubModel:
    """Every line under the hub prefix. No I/O, no clock: feed it topic suffixes after
    "<hub>/" and payloads. Bad payloads are counted in `ignored`, never raised."""

    prefix: str
    lines: dict[str, LineView] = field(default_factory=dict)
    broker: BrokerView = field(default_factory=BrokerView)
    ignored: int = 0

    def names(self) -> list[str]:
        """The lines in display order (the row numbers the digit keys select)."""
        return sorted((n for n, v in self.lines.items() if v.is_line), key=_natural)

    def services(self) -> list[str]:
        """What has a status under the hub and is no line (the archive)."""
        return sorted((n for n, v in self.lines.items() if not v.is_line), key=_natural)

    def on_raw(self, topic_suffix: str, payload: bytes) -> None:
        name, _, rest = topic_suffix.partition("/")
        if not name or not (rest in ("status", "stats") or rest.startswith("devices/")):
            return  # another topic under the hub (feeds, a deeper prefix): not a line's
        if not payload:
            self._forget(name, rest)
            return
        data = parse_object(payload)
        if data is None:
            self.ignored += 1
            return
        self.on_message(name, rest, data)

    def on_message(self, name: str, rest: str, payload: dict[str, Any]) -> None:
        """One decoded retained message of line `name`; `rest` is "status", "stats" or
        "devices/NAME"."""
        line = self.lines.setdefault(name, LineView(name))
        if rest == "status":
            line.status = payload
        elif rest == "stats":
            old, new = _parse_ts(line.stats.get("ts")), _parse_ts(payload.get("ts"))
            if old is not None and new is not None and new > old:
                line.stats_interval_s = (new - old).total_seconds()
            line.stats = payload
        else:
            line.devices[rest.removeprefix("devices/")] = payload.get("connected") is True

    def _forget(self, name: str, rest: str) -> None:
        line = self.lines.get(name)
        if line is None:
            return
        if rest == "status":
            line.status = {}
        elif rest == "stats":
            line.stats = {}
        else:
            line.devices.pop(rest.removeprefix("devices/"), None)
        if line.empty:
            del self.lines[name]

    def on_broker(
        self,
        connected: bool,
        detail: str = "",
        *,
        at: dt.datetime | None = None,
        retry_in_s: float | None = None,
    ) -> None:
        self.broker.update(connected, detail, at, retry_in_s)


# --- rendering -------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def _state_cell(line: LineView, now: dt.datetime) -> Text:
    state = line.state
    style = {"online": "bold green", "offline": "bold red"}.get(state, "yellow")
    text = Text(state.upper() if state else "no status", style=style)
    since = _parse_ts(line.status.get("since"))
    if since is not None:
        text.append(f" {_age((now - since).total_seconds())}", style="dim")
    return text


def _weighted(lines: list[LineView], rate: str, weight: str) -> float | None:
    """A hub-wide rate: each line's weighted by its count (sort rate by results: exact)."""
    total = weighted = 0.0
    for line in lines:
        value, count = _number(line.stats.get(rate)), _number(line.stats.get(weight))
        if value is not None and count:
            total += count
            weighted += value * count
    return weighted / total if total else None


def _line_row(number: int, line: LineView, now: dt.datetime) -> list[RenderableType]:
    stats = line.stats
    items = _number(stats.get("items_per_h"))
    latency = stats.get("latency_ms")
    p99 = _number(latency.get("p99")) if isinstance(latency, dict) else None
    mqtt = stats.get("mqtt")
    backlog = _number(mqtt.get("backlog")) if isinstance(mqtt, dict) else None
    late = line.late_replies
    faulted = line.faulted
    age = line.stats_age_s(now)
    return [
        str(number) if number <= 9 else "",
        Text(line.name, style="bold cyan"),
        _state_cell(line, now),
        "-" if items is None else f"{items:,.0f}",
        _pct(_number(stats.get("read_rate"))),
        _pct(_number(stats.get("sort_rate"))),
        Text("-" if late is None else f"{late:,}", style="bold yellow" if late else ""),
        "-" if p99 is None else f"{p99:.2f}",
        Text(
            "-" if backlog is None else f"{backlog:,.0f}",
            style="yellow" if backlog and backlog > 1000 else "",
        ),
        Text(", ".join(faulted) or "none", style="bold red" if faulted else "green"),
        Text(_age(age), style="bold red" if line.stale(now) else "green"),
    ]


def _hub_row(lines: list[LineView], now: dt.datetime) -> list[RenderableType]:
    online = sum(line.state == "online" for line in lines)
    items = [n for n in (_number(line.stats.get("items_per_h")) for line in lines) if n is not None]
    late = [n for n in (line.late_replies for line in lines) if n is not None]
    faulted = sum(len(line.faulted) for line in lines)
    stale = sum(line.stale(now) for line in lines)
    return [
        "",
        Text("hub", style="bold"),
        Text(
            f"{online}/{len(lines)} online",
            style="bold green" if online == len(lines) else "bold red",
        ),
        f"{sum(items):,.0f}" if items else "-",
        _pct(_weighted(lines, "read_rate", "decisions")),
        _pct(_weighted(lines, "sort_rate", "results")),
        Text(f"{sum(late):,}" if late else "-", style="bold yellow" if sum(late) else ""),
        "",
        "",
        Text(f"{faulted} devices" if faulted else "none", style="bold red" if faulted else "green"),
        Text(f"{stale} stale" if stale else "", style="bold red"),
    ]


def _services(model: HubModel) -> Text:
    """One line: the hub's other services with their state (and lag, as the archive's)."""
    text = Text("also under the hub: ", style="bold")
    for i, name in enumerate(model.services()):
        view = model.lines[name]
        state = view.state or "?"
        text.append(", " if i else "")
        text.append(f"{name} ")
        text.append(state, style="green" if state == "online" else "bold red")
        lag = _number(view.status.get("lag_s"))
        if lag is not None:
            text.append(f" (lag {lag:.1f} s)")
    return text


def _header(model: HubModel) -> Text:
    text = Text()
    text.append("sorterd top --hub  ", style="bold")
    text.append(model.prefix, style="bold cyan")
    text.append(f"   {len(model.names())} lines")
    broker = model.broker
    if broker.connected is False:
        text.append("\nbroker unreachable", style="bold white on red")
        if broker.detail:
            text.append(f": {broker.detail}", style="red")
        if broker.retry_in_s is not None:
            text.append(f"  retry in {broker.retry_in_s:.1f} s")
        text.append("  (last known below)", style="dim")
    elif broker.connected is None:
        text.append("\nconnecting to the broker...", style="yellow")
    return text


COLUMNS = (
    ("#", "right"),
    ("line", "left"),
    ("state", "left"),
    ("items/h", "right"),
    ("read rate", "right"),
    ("sort rate", "right"),
    ("late replies", "right"),
    ("decision p99 ms", "right"),
    ("MQTT backlog", "right"),
    ("devices in fault", "left"),
    ("stats age", "right"),
)
# What a narrower terminal leaves out, in this order: the rest keeps a line's health.
DROPPED_WHEN_NARROW = ("MQTT backlog", "decision p99 ms", "stats age", "sort rate", "read rate")
WIDTH_PER_DROP = 14  # about what each of them takes, padding included
FULL_WIDTH = 132


def _shown_columns(width: int) -> list[int]:
    """The indexes into COLUMNS that fit `width`."""
    drops = max(0, min(len(DROPPED_WHEN_NARROW), -(-(FULL_WIDTH - width) // WIDTH_PER_DROP)))
    hidden = set(DROPPED_WHEN_NARROW[:drops])
    return [i for i, (name, _) in enumerate(COLUMNS) if name not in hidden]


def render_hub(
    model: HubModel,
    width: int = FULL_WIDTH,
    *,
    now: dt.datetime | None = None,
    hint: str | None = None,
) -> RenderableType:
    """One frame: a header and a row per line with a hub row under them. `width` (the
    console's) decides which columns fit; `hint`: the footer line (how to drill into a
    line); `now` (UTC) is for ages."""
    now = now or dt.datetime.now(dt.UTC)
    shown = _shown_columns(width)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i in shown:
        name, justify = COLUMNS[i]
        table.add_column(name, justify=justify, no_wrap=name != "devices in fault")  # type: ignore[arg-type]
    lines = [model.lines[name] for name in model.names()]
    for number, line in enumerate(lines, 1):
        cells = _line_row(number, line, now)
        table.add_row(*(cells[i] for i in shown))
    body: RenderableType
    if lines:
        table.add_section()
        cells = _hub_row(lines, now)
        table.add_row(*(cells[i] for i in shown))
        body = table
    else:
        body = Text(
            f"no line under {model.prefix}/ yet (retained <line>/status or <line>/stats)",
            style="yellow",
        )
    parts: list[RenderableType] = [Panel(_header(model), box=box.HEAVY), body]
    if model.services():
        parts.append(_services(model))
    footer = hint or f"a line's view: sorterd top --hub {model.prefix} --line NAME"
    parts.append(Text(footer, style="dim"))
    if model.ignored:
        parts.append(Text(f"{model.ignored:,} unreadable messages dropped", style="dim"))
    return Group(*parts)


# --- running ---------------------------------------------------------------------------------


async def run_hub_top(
    mqtt_url: str | Sequence[str],
    hub: str,
    *,
    line: str | None = None,
    once: bool = False,
    refresh_s: float = 0.5,
    console: Console | None = None,
    settle_s: float = 1.0,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    keys: asyncio.Queue[str] | None = None,
) -> int:
    """Watch every line under `hub` on the broker at `mqtt_url` (`line`: only that one,
    with the one-line view). `once`: one frame after the retained topics came in, 0, or 1
    when the broker could not be reached. Live: until cancelled or `q`; keys come from
    the terminal (stdin, when it is one) or from `keys`.

    A URL that is not mqtt:// or mqtts://, or a prefix or line with wildcards, raises
    ValueError before anything connects.
    """
    parse_mqtt_urls(mqtt_url)
    hub = _check_hub(hub)
    if line is not None:
        if not line.strip("/") or any(c in line for c in "+#/"):
            raise ValueError(f"line {line!r} must be one level of topic (no /, + or #)")
        return await run_top(
            mqtt_url,
            f"{hub}/{line}",
            once=once,
            refresh_s=refresh_s,
            console=console,
            settle_s=settle_s,
            connect_timeout_s=connect_timeout_s,
        )
    model = HubModel(hub)
    out = console if console is not None else Console()
    subscribed = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        feeder = tg.create_task(
            follow(mqtt_url, model, subscribed=subscribed, filters=HUB_FILTERS), name="top-hub"
        )
        try:
            reached = await _settle(
                subscribed, settle_s, connect_budget_s(mqtt_url, connect_timeout_s)
            )
            if once:
                out.print(render_hub(model, out.width))
                return 0 if reached else 1
            if not out.is_terminal or out.is_dumb_terminal:
                while True:
                    out.print(render_hub(model, out.width))
                    out.rule()
                    await asyncio.sleep(max(refresh_s, PIPE_FRAME_INTERVAL_S))
            with _keyboard(keys) as typed:
                await _Screen(model, mqtt_url, out, typed).run(tg, refresh_s)
        finally:
            feeder.cancel()
    return 0


async def _settle(subscribed: asyncio.Event, settle_s: float, connect_timeout_s: float) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(connect_timeout_s):
            await subscribed.wait()
    if not subscribed.is_set():
        return False
    await asyncio.sleep(settle_s)
    return True


@contextlib.contextmanager
def _keyboard(keys: asyncio.Queue[str] | None) -> Iterator[asyncio.Queue[str]]:
    """`keys` as given, else the terminal's keys one by one (cbreak mode, restored after);
    a queue that stays empty when stdin is no terminal."""
    if keys is not None:
        yield keys
        return
    queue: asyncio.Queue[str] = asyncio.Queue()
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        yield queue
        return
    import termios  # noqa: PLC0415 - POSIX only, and only for a live terminal
    import tty  # noqa: PLC0415

    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def read_key() -> None:
        # Unbuffered: what the terminal has, no more (a buffered read could wait for more).
        with contextlib.suppress(OSError):
            for char in os.read(fd, 64).decode(errors="replace"):
                queue.put_nowait(char)

    tty.setcbreak(fd)
    loop.add_reader(fd, read_key)
    try:
        yield queue
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@dataclass(slots=True)
class _Screen:
    """The live screen: the hub, or one line drilled into, switched by keys."""

    model: HubModel
    mqtt_url: str | Sequence[str]
    out: Console
    keys: asyncio.Queue[str]
    line: TopModel | None = None
    _line_task: asyncio.Task[None] | None = None

    def frame(self) -> RenderableType:
        if self.line is None:
            return render_hub(
                self.model,
                self.out.width,
                hint="1-9: open the line of that row   h: back to the hub   q: quit",
            )
        return Group(
            render(self.line, self.out.width),
            Text("h or Esc: back to the hub   q: quit", style="dim"),
        )

    async def run(self, tg: asyncio.TaskGroup, refresh_s: float) -> None:
        with Live(
            self.frame(),
            console=self.out,
            auto_refresh=False,
            screen=True,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live:
            try:
                while True:
                    key = None
                    with contextlib.suppress(TimeoutError):
                        key = await asyncio.wait_for(self.keys.get(), refresh_s)
                    if key in QUIT_KEYS:
                        return
                    if key is not None:
                        self._on_key(key, tg)
                    live.update(self.frame(), refresh=True)
            finally:
                self._back()

    def _on_key(self, key: str, tg: asyncio.TaskGroup) -> None:
        if key in BACK_KEYS:
            self._back()
        elif key.isdigit() and key != "0":
            names = self.model.names()
            index = int(key) - 1
            if index < len(names):
                self._back()
                self.line = TopModel(f"{self.model.prefix}/{names[index]}")
                self._line_task = tg.create_task(
                    follow(self.mqtt_url, self.line), name="top-hub-line"
                )

    def _back(self) -> None:
        if self._line_task is not None:
            self._line_task.cancel()
        self._line_task = None
        self.line = None
