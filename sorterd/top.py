"""`sorterd top`: a live terminal view of one line, built only from its MQTT topics.

It needs nothing but the broker: no config file, no access to the daemon's host. The
retained topics (P/status, P/stats, P/chutes/N, P/devices/NAME) give a full picture the
moment it subscribes; P/decisions and P/results add what happens while it watches.

Three parts, so each can be tested alone:

- `TopModel` holds the state and does no I/O: feed it topic suffixes and payloads.
- `render(model, width)` turns it into one rich frame.
- `follow()` keeps a `TopModel` fed from the broker (its URL parsed by
  `sorter.addresses.parse_mqtt_urls`, as the daemon parses it), reconnecting with
  jittered backoff (sorter/backoff.py);
  `run_top()` puts the two together, once (for scripts and tests) or as a live screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import secrets
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiomqtt
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from drivers.mqtt_nodes import MqttNodes
from sorter.addresses import parse_mqtt_urls
from sorter.backoff import Backoff
from sorter.wire_json import parse_object, topic_number
from sorterd.top_archive import archive_line, archive_status, archive_topic

__all__ = [
    "BrokerView",
    "Followed",
    "TopModel",
    "connect_budget_s",
    "follow",
    "render",
    "run_top",
]

REJECTS_KEPT = 20
# Decision and result ids remembered to drop at-least-once re-sends (section 5).
SEEN_IDS_KEPT = 50_000
CHUTES_PER_ROW = 20
FEED_LAG_WARN_MS = 100.0  # the contract's bound on the apply lag (docs/interfaces.md section 7)
CONNECT_TIMEOUT_S = 5.0
SUBSCRIBE_TIMEOUT_S = 10.0
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 5.0
# A piped (non-terminal) live view prints a whole frame at most this often, not every refresh.
PIPE_FRAME_INTERVAL_S = 5.0
# Incoming messages queued at most; beyond this aiomqtt drops and logs (overload is visible).
MAX_QUEUED_INCOMING = 100_000
# When the stats interval is not known yet, stats older than this are flagged stale.
STALE_STATS_S = 30.0

CHUTE_STATES = ("ok", "full", "disabled", "fault")
# The mark keeps states readable on a monochrome terminal or in a captured frame.
CHUTE_MARK = {"ok": " ", "full": "F", "disabled": "D", "fault": "X"}
CHUTE_STYLE = {"ok": "green", "full": "yellow", "disabled": "blue", "fault": "bold red"}


def _check_prefix(prefix: str) -> str:
    cleaned = prefix.strip().rstrip("/")
    if not cleaned or "+" in cleaned or "#" in cleaned:
        raise ValueError(
            f"topic prefix {prefix!r} must be the site config's mqtt.topic_prefix "
            "(non-empty, no + or # wildcards)"
        )
    return cleaned


# --- model -----------------------------------------------------------------------------------


@dataclass(slots=True)
class ChuteView:
    state: str
    destination: str = ""
    count: int = 0


@dataclass(slots=True)
class DeviceView:
    connected: bool
    errors: int = 0
    last_seen: str | None = None
    detail: str = ""


@dataclass(slots=True)
class Reject:
    """A decision whose reason was not ok; `outcome` fills in when its result arrives."""

    tracking_id: int | str
    seq: int | None
    reason: str
    chute: int | None
    barcode: str
    destination: str
    ts: str
    recirculations: int
    outcome: str = ""


@dataclass(slots=True)
class BrokerView:
    """The link of this viewer to the broker; `connected` is None before the first try."""

    connected: bool | None = None
    detail: str = ""
    since: dt.datetime | None = None
    retry_in_s: float | None = None

    def update(
        self, connected: bool, detail: str, at: dt.datetime | None, retry_in_s: float | None
    ) -> None:
        if connected != self.connected:
            self.since = at
        self.connected = connected
        self.detail = detail
        self.retry_in_s = retry_in_s


def _as_int(value: object, default: int = 0) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return default


def _as_str(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(slots=True)
class TopModel:
    """What `sorterd top` knows about one line. No I/O and no clock: feed it messages.

    Retained topics replace their previous value. Decisions and results are counted once
    per `id`, as section 5 asks of consumers, because delivery is at least once.
    Payloads of the wrong shape are counted in `ignored`, never raised: the broker is
    shared, and one bad publisher must not take the view down.
    """

    prefix: str
    status: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    stats_interval_s: float | None = None
    chutes: dict[int, ChuteView] = field(default_factory=dict)
    devices: dict[str, DeviceView] = field(default_factory=dict)
    rejects: deque[Reject] = field(default_factory=lambda: deque(maxlen=REJECTS_KEPT))
    decisions_seen: int = 0
    results_seen: int = 0
    duplicates: int = 0
    ignored: int = 0
    reasons_seen: Counter[str] = field(default_factory=Counter)
    outcomes_seen: Counter[str] = field(default_factory=Counter)
    broker: BrokerView = field(default_factory=BrokerView)
    # The hub archiver's status (sorterd/top_archive.py).
    archive: dict[str, Any] = field(default_factory=dict)
    _seen_ids: OrderedDict[str, None] = field(default_factory=OrderedDict, init=False, repr=False)

    def on_raw(self, topic_suffix: str, payload: bytes) -> None:
        """A message as it comes off the wire: JSON bytes, or empty to clear a retained topic."""
        if not payload:
            self.forget(topic_suffix)
            return
        data = parse_object(payload)
        if data is None:
            self.ignored += 1
            return
        self.on_message(topic_suffix, data)

    def on_message(self, topic_suffix: str, payload: dict[str, Any]) -> None:
        """One decoded message; `topic_suffix` is the topic after "P/" (e.g. "chutes/12")."""
        kind, _, rest = topic_suffix.partition("/")
        if kind == "status" and not rest:
            self.status = payload
        elif kind == "stats" and not rest:
            self._on_stats(payload)
        elif kind == "chutes" and rest:
            self._on_chute(rest, payload)
        elif kind == "devices" and rest:
            last_seen = payload.get("last_seen")
            self.devices[rest] = DeviceView(
                connected=payload.get("connected") is True,
                errors=_as_int(payload.get("errors")),
                last_seen=last_seen if isinstance(last_seen, str) else None,
                detail=_as_str(payload.get("detail")),
            )
        elif kind == "decisions" and not rest:
            self._on_decision(payload)
        elif kind == "results" and not rest:
            self._on_result(payload)
        # Commands, command results and anything newer are not this view's business.

    def forget(self, topic_suffix: str) -> None:
        """A retained topic was cleared (empty payload)."""
        kind, _, rest = topic_suffix.partition("/")
        if kind == "status" and not rest:
            self.status = {}
        elif kind == "stats" and not rest:
            self.stats = {}
        elif kind == "chutes" and (number := topic_number(rest)) is not None:
            self.chutes.pop(number, None)
        elif kind == "devices" and rest:
            self.devices.pop(rest, None)

    def on_broker(
        self,
        connected: bool,
        detail: str = "",
        *,
        at: dt.datetime | None = None,
        retry_in_s: float | None = None,
    ) -> None:
        """The viewer's own link to the broker went up or down."""
        self.broker.update(connected, detail, at, retry_in_s)

    def _on_stats(self, payload: dict[str, Any]) -> None:
        old = _parse_ts(self.stats.get("ts"))
        new = _parse_ts(payload.get("ts"))
        if old is not None and new is not None and new > old:
            self.stats_interval_s = (new - old).total_seconds()
        self.stats = payload

    def _on_chute(self, number: str, payload: dict[str, Any]) -> None:
        chute = topic_number(number)
        if chute is None:
            self.ignored += 1
            return
        self.chutes[chute] = ChuteView(
            state=_as_str(payload.get("state")) or "unknown",
            destination=_as_str(payload.get("destination")),
            count=_as_int(payload.get("count")),
        )

    def _first_time(self, message_id: object) -> bool:
        if not isinstance(message_id, str):
            return True  # nothing to dedupe by; count it
        if message_id in self._seen_ids:
            self.duplicates += 1
            return False
        self._seen_ids[message_id] = None
        if len(self._seen_ids) > SEEN_IDS_KEPT:
            self._seen_ids.popitem(last=False)
        return True

    def _on_decision(self, payload: dict[str, Any]) -> None:
        if not self._first_time(payload.get("id")):
            return
        reason = _as_str(payload.get("reason")) or "unknown"
        self.decisions_seen += 1
        self.reasons_seen[reason] += 1
        if reason == "ok":
            return
        tracking = payload.get("tracking_id")
        self.rejects.append(
            Reject(
                tracking_id=tracking if isinstance(tracking, int | str) else "?",
                seq=_opt_int(payload.get("seq")),
                reason=reason,
                chute=_opt_int(payload.get("chute")),
                barcode=_as_str(payload.get("barcode")),
                destination=_as_str(payload.get("destination")),
                ts=_as_str(payload.get("ts")),
                recirculations=_as_int(payload.get("recirculations")),
            )
        )

    def _on_result(self, payload: dict[str, Any]) -> None:
        if not self._first_time(payload.get("id")):
            return
        outcome = _as_str(payload.get("outcome")) or "unknown"
        self.results_seen += 1
        self.outcomes_seen[outcome] += 1
        tracking, seq = payload.get("tracking_id"), _opt_int(payload.get("seq"))
        for reject in self.rejects:
            if reject.tracking_id == tracking and reject.seq == seq:
                reject.outcome = outcome
                break


# --- rendering -------------------------------------------------------------------------------


def _parse_ts(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=dt.UTC)


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min {int(seconds % 60)} s"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"


def _clock(stamp: dt.datetime) -> str:
    return stamp.astimezone(dt.UTC).strftime("%H:%M:%SZ")


def _when(value: object, now: dt.datetime) -> str:
    """ "05:27:17Z (3 min 2 s ago)", or "-"."""
    stamp = _parse_ts(value)
    if stamp is None:
        return "-"
    return f"{_clock(stamp)} ({_age((now - stamp).total_seconds())} ago)"


def _number(value: object, fmt: str = ",.0f") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return format(value, fmt)


def _rate(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value * 100:.1f} %"


def _header(model: TopModel, now: dt.datetime) -> Text:
    text = Text()
    text.append("sorterd top  ", style="bold")
    text.append(model.prefix, style="bold cyan")
    text.append("\n")
    _broker_line(text, model.broker)
    _status_line(text, model.status, now)
    text.append("   stats: ")
    _stats_age(text, model, now)
    archive_line(text, model.archive)
    return text


def _broker_line(text: Text, broker: BrokerView) -> None:
    """The viewer's own link, when it is not up: what follows is then the last known."""
    if broker.connected is False:
        text.append("broker unreachable", style="bold white on red")
        if broker.detail:
            text.append(f": {broker.detail}", style="red")
        if broker.since is not None:
            text.append(f"  since {_clock(broker.since)}")
        if broker.retry_in_s is not None:
            text.append(f"  retry in {broker.retry_in_s:.1f} s")
        text.append("\nlast known: ", style="dim")
    elif broker.connected is None:
        text.append("connecting to the broker...", style="yellow")
        text.append("\n")


def _status_line(text: Text, status: dict[str, Any], now: dt.datetime) -> None:
    state = _as_str(status.get("state"))
    if state == "online":
        text.append("ONLINE", style="bold green")
    elif state == "offline":
        text.append("OFFLINE", style="bold red")
    elif state:
        text.append(state.upper(), style="bold yellow")
    else:
        text.append("no status yet", style="yellow")
    if status.get("since"):
        text.append(f" since {_when(status.get('since'), now)}")
    version = _as_str(status.get("version"))
    if version:
        text.append(f"  sorterd {version}", style="dim")


def _stats_age(text: Text, model: TopModel, now: dt.datetime) -> None:
    stats_at = _parse_ts(model.stats.get("ts"))
    if stats_at is None:
        text.append("none yet", style="yellow")
        return
    age_s = (now - stats_at).total_seconds()
    limit_s = max(3 * model.stats_interval_s, 5.0) if model.stats_interval_s else STALE_STATS_S
    text.append(f"{_age(age_s)} old", style="bold red" if age_s > limit_s else "green")
    if model.stats_interval_s:
        text.append(f" (every {model.stats_interval_s:.0f} s)", style="dim")


def _figures(model: TopModel) -> Table:
    stats = model.stats
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_row("items/h", _number(stats.get("items_per_h")))
    table.add_row("read rate", _rate(stats.get("read_rate")))
    table.add_row("sort rate", _rate(stats.get("sort_rate")))
    table.add_row("ok rate", _rate(stats.get("ok_rate")))
    table.add_row("recirculation", _rate(stats.get("recirculation_rate")))
    latency = stats.get("latency_ms")
    latency = latency if isinstance(latency, dict) else {}
    table.add_row(
        "latency p50/p99",
        f"{_number(latency.get('p50'), '.2f')} / {_number(latency.get('p99'), '.2f')} ms",
    )
    table.add_row("latency max", f"{_number(latency.get('max'), '.2f')} ms")
    table.add_row("decisions", _number(stats.get("decisions")))
    table.add_row("results", _number(stats.get("results")))
    table.add_row("seen live d/r", f"{model.decisions_seen:,} / {model.results_seen:,}")
    tracker = stats.get("tracker")
    if isinstance(tracker, dict):
        table.add_row(
            "waiting / timeouts",
            f"{_number(tracker.get('waiting'))} / {_number(tracker.get('timeouts'))}",
        )
    mqtt = stats.get("mqtt")
    if isinstance(mqtt, dict) and "backlog" in mqtt:
        backlog = _as_int(mqtt.get("backlog"))
        dropped = _as_int(mqtt.get("dropped"))
        cell = Text(f"{backlog:,}", style="yellow" if backlog > 1000 else "")
        if dropped:
            cell.append(f" ({dropped:,} dropped)", style="bold red")
        table.add_row("MQTT backlog", cell)
    manifest = stats.get("manifest")
    if isinstance(manifest, dict):
        table.add_row("manifest hits", _rate(manifest.get("hit_rate")))
    feeds = stats.get("feeds")
    if isinstance(feeds, dict):
        _feed_rows(table, feeds)
    return table


def _feed_rows(table: Table, feeds: dict[str, Any]) -> None:
    """The live feeds' block of P/stats (docs/interfaces.md section 7)."""
    table.add_row(
        "feed rows / customs",
        f"{_number(feeds.get('rows_applied'))} / {_number(feeds.get('customs_applied'))}",
    )
    p99 = feeds.get("lag_ms_p99")
    slow = isinstance(p99, int | float) and p99 > FEED_LAG_WARN_MS
    table.add_row(
        "feed lag p50/p99",
        Text(
            f"{_number(feeds.get('lag_ms_p50'), '.1f')} / {_number(p99, '.1f')} ms",
            style="yellow" if slow else "",
        ),
    )
    table.add_row("feed delta rows", _number(feeds.get("delta_rows")))
    bad = _as_int(feeds.get("bad_rows"))
    cell = Text(f"{bad:,}", style="yellow" if bad else "")
    reasons = _counter_of(feeds.get("bad_reasons"))
    if bad and reasons:
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:2]
        cell.append(" (" + ", ".join(f"{k} {v:,}" for k, v in top) + ")", style="dim")
    table.add_row("feed bad rows", cell)


def _counts(heading: str, counts: Mapping[str, int], good: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column(heading, no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("%", justify="right", no_wrap=True)
    total = sum(counts.values())
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        share = f"{100 * n / total:.1f}" if total else "-"
        table.add_row(Text(name, style="green" if name == good else "yellow"), f"{n:,}", share)
    if not counts:
        table.add_row(Text("none yet", style="dim"), "", "")
    return table


def _counter_of(value: object) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): _as_int(v) for k, v in value.items()}


def _reasons_outcomes(model: TopModel) -> tuple[Panel, Panel]:
    # Stats count since the daemon started; before the first stats, what this view has seen.
    panels = []
    for kind, counted, seen, good in (
        ("reasons", model.stats.get("reasons"), model.reasons_seen, "ok"),
        ("outcomes", model.stats.get("outcomes"), model.outcomes_seen, "sorted"),
    ):
        counts = _counter_of(counted)
        panels.append(
            Panel(
                _counts(kind, seen if counts is None else counts, good),
                title=kind if counts is not None else f"{kind} (seen live)",
                title_align="left",
                expand=False,
            )
        )
    return panels[0], panels[1]


def _chutes(model: TopModel, width: int) -> RenderableType:
    if not model.chutes:
        return Text("no chute status yet (P/chutes/N)", style="dim")
    numbers = sorted(model.chutes)
    digits = len(str(numbers[-1]))
    cell_w = digits + 2  # number, state mark, space
    fits = max(1, (width - 4) // cell_w)  # the panel's border and padding take 4
    # Rows of 20, else 10 or 5, so a chute's column stays easy to find; else what fits.
    per_row = next((n for n in (CHUTES_PER_ROW, 10, 5) if n <= fits), fits)
    grid = Text(no_wrap=True)
    for i, n in enumerate(numbers):
        state = model.chutes[n].state
        if i and i % per_row == 0:
            grid.append("\n")
        grid.append(
            f"{n:>{digits}}{CHUTE_MARK.get(state, '?')}",
            style=CHUTE_STYLE.get(state, "magenta"),
        )
        grid.append(" ")
    by_state = Counter(c.state for c in model.chutes.values())
    legend = Text()
    for state in (*CHUTE_STATES, *sorted(set(by_state) - set(CHUTE_STATES))):
        mark = CHUTE_MARK.get(state, "?").strip()
        legend.append(
            f"{state}{f' ({mark})' if mark else ''} ", style=CHUTE_STYLE.get(state, "magenta")
        )
        legend.append(f"{by_state.get(state, 0)}   ")
    parts: list[RenderableType] = [grid, legend]
    for state in ("fault", "full", "disabled"):
        listed = [n for n in numbers if model.chutes[n].state == state]
        if listed:
            line = Text(f"{state}: ", style=CHUTE_STYLE[state])
            line.append(", ".join(f"{n} {model.chutes[n].destination}".rstrip() for n in listed))
            parts.append(line)
    return Group(*parts)


def _devices(model: TopModel, now: dt.datetime) -> RenderableType:
    if not model.devices:
        return Text("no device status yet (P/devices/NAME)", style="dim")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("device", no_wrap=True)
    table.add_column("link", no_wrap=True)
    table.add_column("errors", justify="right")
    table.add_column("last seen", no_wrap=True)
    table.add_column("detail", overflow="fold")
    # The PLC first: without it nothing sorts.
    for name in sorted(model.devices, key=lambda d: (d != "plc", d)):
        dev = model.devices[name]
        table.add_row(
            name,
            Text("connected", style="green")
            if dev.connected
            else Text("DISCONNECTED", style="bold red"),
            Text(f"{dev.errors:,}", style="yellow" if dev.errors else ""),
            _when(dev.last_seen, now),
            dev.detail,
        )
    return table


def _rejects(model: TopModel) -> RenderableType:
    if not model.rejects:
        return Text("no rejects seen since top started", style="dim")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("time", no_wrap=True)
    table.add_column("tracking_id", justify="right", no_wrap=True)
    table.add_column("reason", no_wrap=True)
    table.add_column("chute", justify="right", no_wrap=True)
    table.add_column("recirc", justify="right", no_wrap=True)
    table.add_column("barcode", overflow="ellipsis", no_wrap=True, max_width=32)
    table.add_column("outcome", no_wrap=True)
    for r in reversed(model.rejects):
        stamp = _parse_ts(r.ts)
        table.add_row(
            stamp.astimezone(dt.UTC).strftime("%H:%M:%S.%f")[:-3] if stamp else "-",
            str(r.tracking_id),
            Text(r.reason, style="yellow"),
            "-" if r.chute is None else str(r.chute),
            str(r.recirculations),
            r.barcode or "-",
            r.outcome or "-",
        )
    return table


def render(model: TopModel, width: int, *, now: dt.datetime | None = None) -> RenderableType:
    """One frame: header, line figures, reasons and outcomes, chutes, devices, rejects.

    `width` is the console width; it decides the chute grid and whether the figure panels
    sit side by side. `now` (UTC) is for ages; the current time when not given.
    """
    now = now or dt.datetime.now(dt.UTC)
    reasons, outcomes = _reasons_outcomes(model)
    figures = Panel(_figures(model), title="line", title_align="left", expand=False)
    middle: RenderableType
    if width >= 100:
        middle = Table.grid(padding=(0, 1))
        middle.add_row(figures, reasons, outcomes)
    elif width >= 60:
        counts = Table.grid(padding=(0, 1))
        counts.add_row(reasons, outcomes)
        middle = Group(figures, counts)
    else:
        middle = Group(figures, reasons, outcomes)
    footer = Text(
        f"{model.duplicates:,} duplicate and {model.ignored:,} unreadable messages dropped",
        style="dim",
    )
    # Chute and device topics are retained: with the daemon gone they show its last word.
    stale = "" if model.status.get("state") == "online" else " - as last published"
    return Group(
        Panel(_header(model, now), box=box.HEAVY, expand=True),
        middle,
        Panel(
            _chutes(model, width),
            title=f"chutes ({len(model.chutes)}){stale}",
            title_align="left",
        ),
        Panel(_devices(model, now), title=f"devices{stale}", title_align="left"),
        Panel(
            _rejects(model),
            title=f"recent rejects (last {REJECTS_KEPT})",
            title_align="left",
        ),
        footer,
    )


# --- broker ----------------------------------------------------------------------------------


class Followed(Protocol):
    """What `follow` feeds: `TopModel`, or the hub's view (sorterd/top_hub.py)."""

    @property
    def prefix(self) -> str: ...

    def on_raw(self, topic_suffix: str, payload: bytes) -> None: ...

    def on_broker(
        self,
        connected: bool,
        detail: str = "",
        *,
        at: dt.datetime | None = None,
        retry_in_s: float | None = None,
    ) -> None: ...


async def follow(
    mqtt_url: str | Sequence[str],
    model: Followed,
    *,
    subscribed: asyncio.Event | None = None,
    backoff_initial_s: float = BACKOFF_INITIAL_S,
    backoff_max_s: float = BACKOFF_MAX_S,
    filters: Sequence[str] = ("#",),
) -> None:
    """Feed `model` from `model.prefix/F` for each F of `filters` until cancelled,
    reconnecting with jittered backoff.

    The broker going away is reported on `model.broker`, never raised. `subscribed` is set
    after every successful subscribe (retained messages follow right after it).
    """
    nodes = MqttNodes(mqtt_url)  # the next node of a cluster after a failure
    cut = len(model.prefix) + 1
    # One line's view also shows its hub's archive (the hub view lists it as a service).
    archive = archive_topic(model.prefix) if isinstance(model, TopModel) else None
    backoff = Backoff(backoff_initial_s, backoff_max_s)
    while True:
        target = nodes.current
        client = nodes.client(
            # Unique, so two viewers on one box do not throw each other off the broker.
            identifier=f"sorterd-top-{os.getpid()}-{secrets.token_hex(4)}",
            timeout=CONNECT_TIMEOUT_S,
            keepalive=10,
            max_queued_incoming_messages=MAX_QUEUED_INCOMING,
        )
        try:
            async with client:
                for topic_filter in filters:
                    await client.subscribe(
                        f"{model.prefix}/{topic_filter}", qos=1, timeout=SUBSCRIBE_TIMEOUT_S
                    )
                if archive is not None:
                    await client.subscribe(archive, qos=1, timeout=SUBSCRIBE_TIMEOUT_S)
                model.on_broker(True, target.address, at=dt.datetime.now(dt.UTC))
                backoff.reset()
                if subscribed is not None:
                    subscribed.set()
                async for message in client.messages:
                    topic = str(message.topic)
                    payload = message.payload
                    if topic == archive and isinstance(model, TopModel):
                        if isinstance(payload, bytes | bytearray):
                            model.archive = archive_status(bytes(payload))
                        continue
                    if not topic.startswith(model.prefix + "/"):
                        continue
                    # Off the wire it is always bytes; the other types are for publishing.
                    if isinstance(payload, bytes | bytearray):
                        model.on_raw(topic[cut:], bytes(payload))
        except aiomqtt.MqttError as exc:
            nodes.failed(str(exc))
            wait_s = backoff.next_delay_s()
            model.on_broker(
                False,
                str(exc) or type(exc).__name__,
                at=dt.datetime.now(dt.UTC),
                retry_in_s=wait_s,
            )
            await asyncio.sleep(wait_s)


async def run_top(
    mqtt_url: str | Sequence[str],
    prefix: str,
    *,
    once: bool = False,
    refresh_s: float = 0.5,
    console: Console | None = None,
    settle_s: float = 1.0,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> int:
    """Watch the line under `prefix` on the broker at `mqtt_url`.

    `once`: wait up to `connect_timeout_s` for the broker, then `settle_s` for the retained
    topics, print one frame and return 0; 1 when the broker could not be reached (the frame
    then says so). Otherwise redraw every `refresh_s` until cancelled (Ctrl-C: the task is
    cancelled by asyncio.run, which raises KeyboardInterrupt for the CLI to turn into exit 0);
    the broker going away shows in the header and the view keeps retrying.

    A URL that is not mqtt:// or mqtts://, or a prefix with wildcards, raises ValueError
    before anything connects.
    """
    model = TopModel(_check_prefix(prefix))
    if refresh_s <= 0 or settle_s < 0 or connect_timeout_s <= 0:
        raise ValueError("refresh_s and connect_timeout_s must be > 0, settle_s >= 0")
    connect_timeout_s = connect_budget_s(mqtt_url, connect_timeout_s)
    out = console if console is not None else Console()
    subscribed = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        feeder = tg.create_task(follow(mqtt_url, model, subscribed=subscribed), name="top-mqtt")
        try:
            if once:
                return await _once(model, out, subscribed, settle_s, connect_timeout_s)
            await _live(model, out, refresh_s, subscribed, settle_s, connect_timeout_s)
        finally:
            feeder.cancel()
    return 0


def connect_budget_s(mqtt_url: str | Sequence[str], connect_timeout_s: float) -> float:
    """How long to wait for a broker before saying there is none: `connect_timeout_s`, and
    for each further node of a cluster the time a frozen node takes (it accepts the TCP
    connection and never answers, so `follow` gives up on it only after CONNECT_TIMEOUT_S)
    and the backoff before the next. With one budget for the whole list, `--once` said "no
    broker" while the second node was up."""
    budget_s = connect_timeout_s
    for k in range(len(parse_mqtt_urls(mqtt_url)) - 1):
        budget_s += CONNECT_TIMEOUT_S + min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2.0**k)
    return budget_s


async def _settle(subscribed: asyncio.Event, settle_s: float, connect_timeout_s: float) -> bool:
    """Wait for the subscription, then for the retained topics; False: no broker."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(connect_timeout_s):
            await subscribed.wait()
    if not subscribed.is_set():
        return False
    await asyncio.sleep(settle_s)
    return True


async def _once(
    model: TopModel,
    out: Console,
    subscribed: asyncio.Event,
    settle_s: float,
    connect_timeout_s: float,
) -> int:
    reached = await _settle(subscribed, settle_s, connect_timeout_s)
    out.print(render(model, out.width))
    return 0 if reached else 1


async def _live(
    model: TopModel,
    out: Console,
    refresh_s: float,
    subscribed: asyncio.Event,
    settle_s: float,
    connect_timeout_s: float,
) -> None:
    if not out.is_terminal or out.is_dumb_terminal:
        # A pipe or a dumb terminal cannot redraw in place: a whole frame every few seconds,
        # the first once the retained topics are in (or the broker is known to be away).
        await _settle(subscribed, settle_s, connect_timeout_s)
        while True:
            out.print(render(model, out.width))
            out.rule()
            await asyncio.sleep(max(refresh_s, PIPE_FRAME_INTERVAL_S))
    # Refreshed from this task, not from rich's thread: the model is only touched on the loop.
    with Live(
        render(model, out.width),
        console=out,
        auto_refresh=False,
        screen=True,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as live:
        while True:
            await asyncio.sleep(refresh_s)
            live.update(render(model, out.width), refresh=True)
