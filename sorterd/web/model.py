"""What the console knows about the lines: fed with MQTT messages, no I/O and no clock of
its own (arrival times come in), so tests drive it with plain payloads.

Every change takes the next number of one counter shared by all lines (`Versions`). A page
that last saw version v is sent what changed after v (`LineModel.delta`), so one
coalesced update carries only the chutes, devices and decisions that changed, however many
messages came in between. Payloads of the wrong shape are counted in `ignored`, never
raised: the broker is shared, and one bad publisher must not take the console down.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from sorter.wire_json import parse_object, topic_number

__all__ = [
    "CHUTE_STATES",
    "DECISIONS_SHOWN",
    "HubModel",
    "LineModel",
    "Versions",
    "decision_shown",
    "is_line_status",
    "texts",
]

CHUTE_STATES = ("ok", "full", "disabled", "fault")
DECISIONS_SHOWN = 50
MINUTES_KEPT = 60
# Decisions remembered for the search when there is no archive: about half an hour at
# 40,000 items/h, a few MB.
MEMORY_DECISIONS = 20_000
SEEN_IDS_KEPT = 50_000
_DECISION_KEYS = (
    "ts", "tracking_id", "seq", "codes", "barcode", "destination", "chute", "reason",
    "recirculations",
)  # fmt: skip


class Versions:
    """One counter for every change of every line."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: object) -> int:
    number = _num(value)
    return int(number) if number is not None else 0


def _text(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def texts(value: object) -> list[str]:
    """A list of strings for the page, whatever the line sent (the page joins it: a string
    or a number there once threw in its render and the wall stopped updating)."""
    if isinstance(value, list):
        return [_text(v) for v in value]
    return [] if value is None or value == "" else [_text(value)]


def is_line_status(payload: dict[str, Any]) -> bool:
    """Whether a retained .../status is a line's P/status (section 5: state, version,
    since), not another program's (the archiver's carries lag_s and rows)."""
    return isinstance(payload.get("state"), str) and "version" in payload and "lag_s" not in payload


def decision_shown(data: dict[str, Any]) -> dict[str, Any]:
    """A P/decisions payload as the page shows it: the keys it reads, with the types it
    expects of the ones it calls methods on (ts is sliced, codes joined)."""
    shown = {key: data.get(key) for key in _DECISION_KEYS}
    shown["ts"] = _text(shown["ts"])
    codes = shown["codes"]
    shown["codes"] = [c for c in codes if isinstance(c, str)] if isinstance(codes, list) else []
    return shown


@dataclass(slots=True)
class _Chute:
    state: str
    destination: str
    count: int
    version: int


@dataclass(slots=True)
class _Device:
    view: dict[str, Any]
    version: int


@dataclass(slots=True)
class LineModel:
    """One line, under its topic prefix."""

    prefix: str
    versions: Versions
    status: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    status_version: int = 0
    removed_version: int = 0
    chutes: dict[int, _Chute] = field(default_factory=dict)
    devices: dict[str, _Device] = field(default_factory=dict)
    # [version, decision]: a decision is sent again (new version) when its result comes.
    decisions: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=DECISIONS_SHOWN))
    # minute (epoch s // 60) -> reasons counted in it; and the line's items/h in it.
    reasons_by_minute: OrderedDict[int, Counter[str]] = field(default_factory=OrderedDict)
    items_per_h_by_minute: OrderedDict[int, float] = field(default_factory=OrderedDict)
    chart_version: int = 0
    ignored: int = 0
    duplicates: int = 0
    memory: OrderedDict[tuple[int, int], dict[str, Any]] = field(default_factory=OrderedDict)
    by_code: dict[str, tuple[int, int]] = field(default_factory=dict)
    outcomes: OrderedDict[tuple[int, int], str] = field(default_factory=OrderedDict)
    _seen: OrderedDict[str, None] = field(default_factory=OrderedDict)

    # --- input --------------------------------------------------------------------------

    def on_raw(self, suffix: str, payload: bytes, now_s: float) -> None:
        """A message as it comes off the wire; `suffix` is the topic after "P/"."""
        if not payload:
            self._forget(suffix)
            return
        data = parse_object(payload)
        if data is None:
            self.ignored += 1
            return
        self.on_message(suffix, data, now_s)

    def on_message(self, suffix: str, data: dict[str, Any], now_s: float) -> None:
        kind, _, rest = suffix.partition("/")
        number = topic_number(rest) if kind == "chutes" else None
        if number is not None:
            self._on_chute(number, data)
        elif kind == "decisions" and not rest:
            self._on_decision(data, now_s)
        elif kind == "results" and not rest:
            self._on_result(data)
        elif kind == "stats" and not rest:
            self.stats = data
            self.status_version = self.versions.next()
            items = _num(data.get("items_per_h"))
            if items is not None:
                self._minute_put(self.items_per_h_by_minute, int(now_s // 60), items)
        elif kind == "status" and not rest:
            self.status = data
            self.status_version = self.versions.next()
        elif kind == "devices" and rest:
            self.devices[rest] = _Device(data, self.versions.next())

    def _forget(self, suffix: str) -> None:
        """A retained topic cleared: pages are then sent everything again."""
        kind, _, rest = suffix.partition("/")
        removed: object = None
        number = topic_number(rest) if kind == "chutes" else None
        if number is not None:
            removed = self.chutes.pop(number, None)
        elif kind == "devices":
            removed = self.devices.pop(rest, None)
        if removed is not None:
            self.removed_version = self.versions.next()

    def _on_chute(self, number: int, data: dict[str, Any]) -> None:
        state = _text(data.get("state"))
        self.chutes[number] = _Chute(
            state=state if state in CHUTE_STATES else "fault",
            destination=_text(data.get("destination")),
            count=_int(data.get("count")),
            version=self.versions.next(),
        )

    def _first_time(self, message_id: object) -> bool:
        if not isinstance(message_id, str):
            return True
        if message_id in self._seen:
            self.duplicates += 1
            return False
        self._seen[message_id] = None
        if len(self._seen) > SEEN_IDS_KEPT:
            self._seen.popitem(last=False)
        return True

    def _on_decision(self, data: dict[str, Any], now_s: float) -> None:
        if not self._first_time(data.get("id")):
            return
        shown = decision_shown(data)
        shown["line"] = self.prefix
        reason = _text(shown["reason"]) or "unknown"
        minute = int(now_s // 60)
        counts = self.reasons_by_minute.get(minute)
        if counts is None:
            counts = Counter()
            self._minute_put(self.reasons_by_minute, minute, counts)
        counts[reason] += 1
        self.chart_version = self.versions.next()
        self.decisions.append([self.chart_version, shown])
        self._remember(shown)

    def _remember(self, shown: dict[str, Any]) -> None:
        key = (_int(shown["tracking_id"]), _int(shown["seq"]))
        self.memory[key] = shown
        self.memory.move_to_end(key)
        for code in {*shown["codes"], _text(shown["barcode"])} - {""}:
            self.by_code[code] = key
        if len(self.memory) > MEMORY_DECISIONS:
            _, old = self.memory.popitem(last=False)
            for code in {*old["codes"], _text(old["barcode"])}:
                if self.by_code.get(code) not in self.memory:
                    self.by_code.pop(code, None)

    def _on_result(self, data: dict[str, Any]) -> None:
        if not self._first_time(data.get("id")):
            return
        key = (_int(data.get("tracking_id")), _int(data.get("seq")))
        outcome = _text(data.get("outcome"))
        self._count_sorted(outcome, data.get("chute_actual"))
        self.outcomes[key] = outcome
        if len(self.outcomes) > MEMORY_DECISIONS:
            self.outcomes.popitem(last=False)
        for entry in self.decisions:
            shown = entry[1]
            if (shown["tracking_id"], shown["seq"]) == key:
                shown["outcome"] = outcome
                entry[0] = self.versions.next()  # sent again, with its outcome
                break

    def _count_sorted(self, outcome: str, chute_actual: object) -> None:
        """The daemon publishes P/chutes/N when a chute's state changes, with its count at
        that moment; between two, the wall counts the items it sees sorted there."""
        if outcome != "sorted" or not isinstance(chute_actual, int):
            return
        chute = self.chutes.get(chute_actual)
        if chute is not None:
            chute.count += 1
            chute.version = self.versions.next()

    @staticmethod
    def _minute_put(series: OrderedDict[int, Any], minute: int, value: Any) -> None:
        series[minute] = value
        series.move_to_end(minute)
        while series and next(iter(series)) <= minute - MINUTES_KEPT:
            series.popitem(last=False)

    # --- output -------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """What the header and the hub view show of the line."""
        states = Counter(c.state for c in self.chutes.values())
        stats = self.stats
        latency = stats.get("latency_ms") if isinstance(stats.get("latency_ms"), dict) else {}
        return {
            "prefix": self.prefix,
            "state": _text(self.status.get("state")) or "unknown",
            "since": self.status.get("since"),
            "version": self.status.get("version"),
            "alarms": texts(self.status.get("alarms")),
            "stats_ts": stats.get("ts"),
            "items_per_h": _num(stats.get("items_per_h")),
            "read_rate": _num(stats.get("read_rate")),
            "sort_rate": _num(stats.get("sort_rate")),
            "recirculation_rate": _num(stats.get("recirculation_rate")),
            "latency_p99_ms": _num(latency.get("p99")) if isinstance(latency, dict) else None,
            "chutes": {s: states.get(s, 0) for s in CHUTE_STATES},
            "devices_down": sorted(
                name for name, d in self.devices.items() if d.view.get("connected") is not True
            ),
        }

    def charts(self, now_s: float) -> dict[str, Any]:
        """The last hour, minute by minute (oldest first): items/h and decisions per reason."""
        minute = int(now_s // 60)
        minutes = list(range(minute - MINUTES_KEPT + 1, minute + 1))
        reasons = sorted({r for c in self.reasons_by_minute.values() for r in c})
        return {
            "minutes": [m * 60 for m in minutes],
            "items_per_h": [self.items_per_h_by_minute.get(m) for m in minutes],
            "reasons": {
                r: [self.reasons_by_minute.get(m, Counter()).get(r, 0) for m in minutes]
                for r in reasons
            },
        }

    def delta(self, since: int, now_s: float, *, charts: bool) -> dict[str, Any]:
        """What changed after version `since` (0: everything)."""
        everything = since == 0 or self.removed_version > since
        out: dict[str, Any] = {"line": self.summary()}
        out["chutes"] = [
            [n, c.state, c.destination, c.count]
            for n, c in sorted(self.chutes.items())
            if everything or c.version > since
        ]
        out["full"] = everything
        out["devices"] = {
            name: d.view
            for name, d in sorted(self.devices.items())
            if everything or d.version > since
        }
        out["decisions"] = [shown for version, shown in self.decisions if version > since]
        if charts:
            out["charts"] = self.charts(now_s)
        return out

    def search(self, code: str) -> list[dict[str, Any]]:
        """The remembered decisions of `code` (any code the item carried, or its tracking
        id), with their outcome when the result came."""
        found = []
        key = self.by_code.get(code)
        if key is not None and key in self.memory:
            found.append(key)
        if code.isdigit():
            number = int(code)
            found.extend(k for k in self.memory if k[0] == number and k not in found)
        out = []
        for k in found:
            shown = dict(self.memory[k])
            shown["outcome"] = self.outcomes.get(k)
            out.append(shown)
        return out


@dataclass(slots=True)
class HubModel:
    """Every line the console shows: the configured prefixes, and those discovered under a
    pattern with a + level from their retained P/status."""

    patterns: tuple[str, ...]
    versions: Versions = field(default_factory=Versions)
    lines: dict[str, LineModel] = field(default_factory=dict)
    broker_connected: bool | None = None
    broker_detail: str = ""
    broker_version: int = 0

    def __post_init__(self) -> None:
        for pattern in self.patterns:
            if "+" not in pattern.split("/"):
                self.lines.setdefault(pattern, LineModel(pattern, self.versions))

    def line_of(self, topic: str) -> tuple[LineModel, str] | None:
        """The line a topic belongs to and its suffix; a new line when the topic is the
        P/status of a prefix matching a pattern."""
        for prefix, line in self.lines.items():
            if topic.startswith(prefix) and topic[len(prefix) : len(prefix) + 1] == "/":
                return line, topic[len(prefix) + 1 :]
        return None

    def discovered(self, topic: str, payload: bytes) -> LineModel | None:
        """A retained status under a pattern: the new line it reveals, if it is one."""
        prefix, _, last = topic.rpartition("/")
        if last != "status" or prefix in self.lines or not self.may_show(prefix):
            return None
        data = parse_object(payload)
        if data is None or not is_line_status(data):
            return None
        line = LineModel(prefix, self.versions)
        self.lines[prefix] = line
        return line

    def may_show(self, prefix: str) -> bool:
        """Whether `prefix` is a line the console shows, or may once it is discovered."""
        if prefix in self.lines:
            return True
        levels = prefix.split("/")
        for pattern in self.patterns:
            want = pattern.split("/")
            if len(want) == len(levels) and all(
                w in ("+", level) for w, level in zip(want, levels, strict=True)
            ):
                return True
        return False

    def on_broker(self, connected: bool, detail: str) -> None:
        if connected != self.broker_connected or detail != self.broker_detail:
            self.broker_connected = connected
            self.broker_detail = detail
            self.broker_version = self.versions.next()

    def broker(self) -> dict[str, Any]:
        return {"connected": self.broker_connected, "detail": self.broker_detail}
