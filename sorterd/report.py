"""Replay report (`sorterd replay --report FILE.html`): what a sort plan does to recorded scans.

One self-contained HTML file: inline CSS and inline SVG charts drawn here, no script, no
font, no image and no link to anything outside the file, so it opens from a mail or a USB
stick on a site PC without network. Every text that comes from a plan or a file (plan,
destination and file names) is escaped.

`ReportData` accumulates the replay's per-item results chunk by chunk in bounded memory:
counters per destination, reason and chute, and item counts per (time bucket, chute).
Time is the site-local hour of the day when the scans had a time column, else the item's
position in the input, in about `TIME_BUCKETS` buckets whose width doubles as the input
grows.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from sorter.plan import MAX_CHUTE_NUMBER, SortPlan
from sorter.ports import Reason

__all__ = [
    "NO_DESTINATION",
    "TIME_BUCKETS",
    "ReportData",
    "TimeAxis",
    "render_report",
    "write_report",
]

TIME_BUCKETS = 48  # the position axis shows at most this many buckets (at least half of it)
_FINE = 2 * TIME_BUCKETS  # position buckets kept while accumulating, merged pairwise
_SLOT_BLOCK = 64  # per-chute arrays grow in blocks of this many chute numbers
MINUTES_PER_DAY = 24 * 60
NO_DESTINATION = "(no destination)"  # how items without a destination show in the report

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class TimeAxis:
    """Items per (time bucket, chute), ready to draw."""

    kind: Literal["clock", "position"]
    labels: tuple[str, ...]  # one per bucket: "06:00" (clock) or the first item's number
    spans: tuple[str, ...]  # one per bucket, for tooltips: "06:00-07:00", "items 1-64"
    chutes: tuple[int, ...]
    counts: I64  # [bucket, chute index]
    bucket_items: int  # items per bucket on the position axis, 0 on the clock axis
    untimed: int  # items without a time: not on the clock axis
    not_shown: int  # items in no cell: without a time (clock axis), or a chute not asked for


class ReportData:
    """Per-item replay results, accumulated in chunks with memory bounded by the number of
    chutes (not of items)."""

    def __init__(self) -> None:
        self.items = 0
        self.destinations: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.chutes: Counter[int] = Counter()
        self.destination_chutes: Counter[tuple[str, int]] = Counter()
        self.timed = 0  # items that came with a minute of the day
        self._slots = _SLOT_BLOCK
        self._per_bucket = 1  # items per position bucket, a power of two
        self._by_position: I64 = np.zeros((_FINE, self._slots), np.int64)
        self._by_hour: I64 = np.zeros((24, self._slots), np.int64)
        self._hour_items: I64 = np.zeros(24, np.int64)

    def add(
        self,
        destinations: Sequence[str],
        chutes: Sequence[int],
        reasons: Sequence[str],
        minutes: Sequence[int | None] | None = None,
    ) -> None:
        """One chunk of items in input order: destination name ("" for none), chute, reason
        word, and the site-local minute of the day (-1 or None for an item without a time;
        `minutes=None` when the scans had no time column)."""
        n = len(destinations)
        if len(chutes) != n or len(reasons) != n or (minutes is not None and len(minutes) != n):
            raise ValueError("destinations, chutes, reasons and minutes differ in length")
        if n == 0:
            return
        chute = np.asarray(chutes, dtype=np.int64).reshape(n)
        chute_list: list[int] = chute.tolist()
        start = self.items
        self.items += n
        self.destinations.update(destinations)
        self.reasons.update(reasons)
        self.chutes.update(chute_list)
        self.destination_chutes.update(zip(destinations, chute_list, strict=True))

        has_chute = (chute >= 0) & (chute <= MAX_CHUTE_NUMBER)
        top = int(chute[has_chute].max(initial=-1))
        if top >= self._slots:
            self._grow(top + 1)
        slots = self._slots

        while (self.items - 1) // self._per_bucket >= _FINE:
            merged = self._by_position[0::2] + self._by_position[1::2]
            self._by_position = np.concatenate([merged, np.zeros_like(merged)])
            self._per_bucket *= 2
        bucket = (start + np.arange(n, dtype=np.int64)) // self._per_bucket
        flat = bucket[has_chute] * slots + chute[has_chute]
        self._by_position += np.bincount(flat, minlength=_FINE * slots).reshape(_FINE, slots)

        if minutes is None:
            return
        try:
            minute = np.asarray(minutes, dtype=np.int64).reshape(n)
        except TypeError:  # None for some items
            minute = np.array([-1 if m is None else m for m in minutes], np.int64)
        timed = (minute >= 0) & (minute < MINUTES_PER_DAY)
        if not timed.any():
            return
        hour = minute // 60
        self.timed += int(timed.sum())
        self._hour_items += np.bincount(hour[timed], minlength=24)
        both = timed & has_chute
        flat = hour[both] * slots + chute[both]
        self._by_hour += np.bincount(flat, minlength=24 * slots).reshape(24, slots)

    def _grow(self, need: int) -> None:
        slots = -(-need // _SLOT_BLOCK) * _SLOT_BLOCK
        extra = slots - self._slots
        self._by_position = np.pad(self._by_position, ((0, 0), (0, extra)))
        self._by_hour = np.pad(self._by_hour, ((0, 0), (0, extra)))
        self._slots = slots

    def time_axis(self, chutes: Sequence[int]) -> TimeAxis:
        """Items per time bucket for these chutes: by site-local hour when any item had a
        time (the hours from the first to the last busy one, across midnight for a night
        shift), else by position in the input in at most TIME_BUCKETS buckets."""
        cols = np.asarray(chutes, dtype=np.int64).reshape(len(chutes))
        known = (cols >= 0) & (cols < self._slots)
        if self.timed:
            hours = _busy_hours(self._hour_items)
            table = self._by_hour[hours]
            labels = tuple(f"{h:02d}:00" for h in hours)
            spans = tuple(f"{h:02d}:00-{(h + 1) % 24:02d}:00" for h in hours)
            width = 0
        else:
            used = -(-self.items // self._per_bucket)
            group = max(1, -(-used // TIME_BUCKETS))
            rows = -(-used // group)
            fine = self._by_position
            if rows * group > _FINE:
                fine = np.pad(fine, ((0, rows * group - _FINE), (0, 0)))
            table = fine[: rows * group].reshape(rows, group, self._slots).sum(axis=1)
            width = group * self._per_bucket
            firsts = [i * width + 1 for i in range(rows)]
            labels = tuple(f"{f:,}" for f in firsts)
            spans = tuple(f"items {f:,}-{min(f + width - 1, self.items):,}" for f in firsts)
        counts: I64 = np.zeros((len(labels), len(cols)), np.int64)
        counts[:, known] = table[:, cols[known]]
        shown = int(counts.sum())
        return TimeAxis(
            kind="clock" if self.timed else "position",
            labels=labels,
            spans=spans,
            chutes=tuple(int(c) for c in cols),
            counts=counts,
            bucket_items=width,
            untimed=self.items - self.timed if self.timed else 0,
            not_shown=self.items - shown,
        )


def _busy_hours(per_hour: I64) -> list[int]:
    """Hours from the first to the last with items, skipping the longest quiet stretch of
    the day (so 22:00-02:00 is one span)."""
    busy = [h for h in range(24) if per_hour[h] > 0]
    if not busy:
        return []
    best_gap, start = -1, busy[0]
    for i, h in enumerate(busy):
        nxt = busy[(i + 1) % len(busy)]
        gap = (nxt - h - 1) % 24 if len(busy) > 1 else 23
        if gap > best_gap:
            best_gap, start = gap, nxt
    return [(start + i) % 24 for i in range(24 - best_gap)]


# ---------------------------------------------------------------------------- drawing

_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
_CSS = f"""
body {{ font-family: {_FONT}; margin: 24px; color: #1f2933; background: #fff; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }}
h2 {{ font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #d9dee3; }}
p.meta {{ color: #52606d; margin: 0 0 12px; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 4px 0 12px; }}
th, td {{ border: 1px solid #d9dee3; padding: 3px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f5f7fa; font-weight: 600; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.warn td {{ color: #b42318; }}
figure {{ margin: 8px 0 20px; overflow-x: auto; }}
figcaption {{ font-size: 12px; color: #52606d; max-width: 1100px; }}
svg {{ max-width: 100%; height: auto; font-family: {_FONT}; }}
svg .title {{ font-size: 15px; font-weight: 600; fill: #1f2933; }}
svg .axis-label {{ font-size: 12px; fill: #3e4c59; }}
svg .tick {{ font-size: 10px; fill: #52606d; }}
svg .value {{ font-size: 11px; fill: #1f2933; }}
svg .axis {{ stroke: #7b8794; stroke-width: 1; }}
svg .grid {{ stroke: #e4e7eb; stroke-width: 1; }}
svg .empty {{ font-size: 13px; fill: #7b8794; }}
svg .ok {{ fill: #2f855a; }}
svg .problem {{ fill: #dd6b20; }}
svg .dest {{ fill: #3a6ea5; }}
svg .nodest {{ fill: #9aa5b1; }}
svg .chute {{ fill: #3a6ea5; }}
svg .overflow-chute {{ fill: #805ad5; }}
svg .function-chute {{ fill: #dd6b20; }}
svg .spare-chute {{ fill: #9aa5b1; }}
svg .over {{ fill: #d62728; }}
svg .capacity {{ stroke: #d62728; stroke-width: 1.5; stroke-dasharray: 6 4; }}
svg .heat-bg {{ fill: #eef1f4; }}
ul.warnings {{ font-size: 13px; color: #8a4b08; }}
"""

# Sequential palette (light yellow to dark blue) for the heatmap, interpolated in RGB.
_HEAT = ((255, 255, 217), (199, 233, 180), (65, 182, 196), (34, 94, 168), (8, 29, 88))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _n(value: int) -> str:
    return f"{value:,}"


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _heat(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(_HEAT) - 1)
    i = min(int(t), len(_HEAT) - 2)
    f = t - i
    a, b = _HEAT[i], _HEAT[i + 1]
    r, g, bl = (round(x + (y - x) * f) for x, y in zip(a, b, strict=True))
    return f"#{r:02x}{g:02x}{bl:02x}"


def _ticks(top: float, count: int = 5) -> list[int]:
    """Round tick values from 0 to at least `top`."""
    if top <= 0:
        return [0, 1]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(int(step), 1)
    return list(range(0, math.ceil(top / step) * step + 1, step))


def _svg_open(width: float, height: float, label: str) -> list[str]:
    return [
        f'<svg width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{_e(label)}">',
        f"<title>{_e(label)}</title>",
    ]


def _text(x: float, y: float, text: str, cls: str, anchor: str = "start", extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}"{extra}>'
        f"{_e(text)}</text>"
    )


def _rect(
    x: float, y: float, w: float, h: float, cls: str = "", fill: str = "", tip: str = ""
) -> str:
    attrs = f'x="{x:.2f}" y="{y:.2f}" width="{max(w, 0):.2f}" height="{max(h, 0):.2f}"'
    if cls:
        attrs += f' class="{cls}"'
    if fill:
        attrs += f' fill="{fill}"'
    if tip:
        return f"<rect {attrs}><title>{_e(tip)}</title></rect>"
    return f"<rect {attrs}/>"


def _y_label(label: str, ymid: float) -> str:
    """A y-axis label, turned to read upwards along the axis."""
    return _text(14, ymid, label, "axis-label", "middle", f' transform="rotate(-90 14 {ymid:.1f})"')


@dataclass(frozen=True, slots=True)
class _Bar:
    label: str
    value: int
    cls: str
    tip: str


def _hbar_chart(title: str, x_label: str, y_label: str, bars: list[_Bar], total: int) -> str:
    """Horizontal bars, one labelled row per bar, values and shares at the bar ends."""
    left, right, top, row = 220, 130, 44, 20
    plot_w = 560
    height = top + max(len(bars), 1) * row + 56
    width = left + plot_w + right
    out = _svg_open(width, height, title)
    out.append(_text(10, 22, title, "title"))
    plot_h = max(len(bars), 1) * row
    if not bars or total == 0:
        out.append(_text(left + plot_w / 2, top + plot_h / 2 + 5, "no items", "empty", "middle"))
    top_value = max((b.value for b in bars), default=0)
    ticks = _ticks(top_value)
    scale = plot_w / ticks[-1]
    for t in ticks:
        x = left + t * scale
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" class="grid"/>')
        out.append(_text(x, top + plot_h + 14, _n(t), "tick", "middle"))
    for i, b in enumerate(bars):
        y = top + i * row
        out.append(_text(left - 8, y + row / 2 + 4, _short(b.label, 30), "tick", "end"))
        out.append(_rect(left, y + 3, b.value * scale, row - 6, b.cls, tip=b.tip))
        out.append(
            _text(
                left + b.value * scale + 5,
                y + row / 2 + 4,
                f"{_n(b.value)} ({_share(b.value, total)})",
                "value",
            )
        )
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" class="axis"/>')
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'class="axis"/>'
    )
    out.append(_text(left + plot_w / 2, top + plot_h + 34, x_label, "axis-label", "middle"))
    out.append(_y_label(y_label, top + plot_h / 2))
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True, slots=True)
class _ChuteAxis:
    """Chutes along x, shared by the heatmap and the fill chart so their columns line up."""

    chutes: tuple[int, ...]
    kinds: tuple[str, ...]  # css class per chute
    roles: tuple[str, ...]  # what the chute is for, for tooltips
    left: float = 90.0
    col: float = 10.0

    @property
    def width(self) -> float:
        return len(self.chutes) * self.col

    def x(self, i: int) -> float:
        return self.left + i * self.col

    def draw(self, y: float, out: list[str]) -> None:
        """Axis line, chute numbers that fit, and a role marker under every chute."""
        out.append(
            f'<line x1="{self.left}" y1="{y:.1f}" x2="{self.left + self.width:.1f}" y2="{y:.1f}" '
            'class="axis"/>'
        )
        step = next((s for s in (1, 2, 5, 10, 20, 25, 50, 100) if s * self.col >= 26), 100)
        last = -1e9
        for i, c in enumerate(self.chutes):
            cx = self.x(i) + self.col / 2
            if (step == 1 or c % step == 0) and cx - last >= 26:
                out.append(
                    f'<line x1="{cx:.1f}" y1="{y:.1f}" x2="{cx:.1f}" y2="{y + 4:.1f}" '
                    'class="axis"/>'
                )
                out.append(_text(cx, y + 15, str(c), "tick", "middle"))
                last = cx
            if self.kinds[i] != "chute":
                out.append(
                    _rect(
                        self.x(i) + 0.5,
                        y + 20,
                        max(self.col - 1, 2),
                        5,
                        self.kinds[i],
                        tip=f"chute {c}: {self.roles[i]}",
                    )
                )


def _chute_axis(plan: SortPlan, data: ReportData) -> _ChuteAxis:
    function_of: dict[int, list[str]] = {}
    for reason, c in plan.functions.items():
        function_of.setdefault(c, []).append(reason.word)
    main_of: dict[int, list[str]] = {}
    overflow_of: dict[int, list[str]] = {}
    for d in plan.destinations:
        for c in d.chutes:
            main_of.setdefault(c, []).append(d.name)
        for c in d.overflow:
            overflow_of.setdefault(c, []).append(d.name)
    every = (
        set(plan.machine_chutes)
        | set(function_of)
        | set(main_of)
        | set(overflow_of)
        | {c for c in data.chutes if c >= 0}
    )
    chutes = tuple(sorted(every))
    kinds: list[str] = []
    roles: list[str] = []
    for c in chutes:
        kind, parts = _chute_role(function_of.get(c), main_of.get(c), overflow_of.get(c))
        if c not in plan.machine_chutes and plan.machine_chutes:
            parts.append("not on the machine")
        kinds.append(kind)
        roles.append("; ".join(parts))
    col = min(max(1000 / max(len(chutes), 1), 4.0), 22.0)
    return _ChuteAxis(chutes, tuple(kinds), tuple(roles), col=col)


def _chute_role(
    functions: list[str] | None, mains: list[str] | None, overflows: list[str] | None
) -> tuple[str, list[str]]:
    """A chute's css class and the parts of its role text, from what it serves."""
    parts = []
    if functions:
        parts.append("function chute (" + ", ".join(functions) + ")")
    if mains:
        parts.append(", ".join(mains))
    if overflows:
        parts.append("overflow of " + ", ".join(overflows))
    if functions:
        return "function-chute", parts
    if mains:
        return "chute", parts
    if overflows:
        return "overflow-chute", parts
    return "spare-chute", [*parts, "in no destination"]


def _legend(x: float, y: float, entries: list[tuple[str, str]], out: list[str]) -> None:
    for cls, label in entries:
        out.append(_rect(x, y - 9, 12, 10, cls))
        out.append(_text(x + 16, y, label, "tick"))
        x += 22 + 6.2 * len(label)


def _heatmap(axis: _ChuteAxis, time: TimeAxis) -> str:
    title = "Items per chute over time"
    rows = len(time.labels)
    row_h = 14.0
    top = 62.0
    plot_h = max(rows, 1) * row_h
    right = 80.0
    width = axis.left + axis.width + right
    height = top + plot_h + 80
    out = _svg_open(max(width, 700), height, title)
    out.append(_text(10, 22, title, "title"))
    peak = int(time.counts.max()) if time.counts.size else 0
    _heat_legend(axis.left, peak, out)
    out.append(_text(axis.left + axis.width + 6, top - 4, "total", "tick"))
    out.append(_rect(axis.left, top, axis.width, plot_h, "heat-bg"))
    if rows == 0 or peak == 0:
        out.append(
            _text(axis.left + axis.width / 2, top + plot_h / 2 + 5, "no items", "empty", "middle")
        )
    else:
        _heat_rows(axis, time, top, row_h, peak, out)
    axis.draw(top + plot_h, out)
    out.append(
        _text(axis.left + axis.width / 2, top + plot_h + 44, "chute", "axis-label", "middle")
    )
    if time.kind == "clock":
        y_label = "site-local time (hour)"
    else:
        y_label = f"input position ({_n(time.bucket_items)} items per row)"
    out.append(_y_label(y_label, top + plot_h / 2))
    _legend(
        axis.left,
        top + plot_h + 66,
        [
            ("function-chute", "function chute"),
            ("overflow-chute", "overflow chute"),
            ("spare-chute", "chute in no destination"),
        ],
        out,
    )
    out.append("</svg>")
    return "\n".join(out)


def _heat_legend(lx: float, peak: int, out: list[str]) -> None:
    """The colour legend: a gradient from the lightest to the darkest cell."""
    out.append(
        '<defs><linearGradient id="heat-scale" x1="0" x2="1" y1="0" y2="0">'
        + "".join(
            f'<stop offset="{t:.2f}" stop-color="{_heat(t)}"/>'
            for t in (i / (len(_HEAT) - 1) for i in range(len(_HEAT)))
        )
        + "</linearGradient></defs>"
    )
    out.append(_text(lx, 42, "items per cell:", "tick"))
    out.append(_rect(lx + 80, 33, 12, 10, "heat-bg"))
    out.append(_text(lx + 96, 42, "0", "tick"))
    out.append(f'<rect x="{lx + 112}" y="33" width="160" height="10" fill="url(#heat-scale)"/>')
    out.append(_text(lx + 112, 56, "1", "tick", "middle"))
    if peak >= 8:
        out.append(_text(lx + 192, 56, _n(round(peak / 4)), "tick", "middle"))
    out.append(_text(lx + 272, 56, _n(max(peak, 1)), "tick", "middle"))
    out.append(_text(lx + 285, 42, "(square-root scale: hover a cell for its count)", "tick"))


def _heat_rows(
    axis: _ChuteAxis, time: TimeAxis, top: float, row_h: float, peak: int, out: list[str]
) -> None:
    """One row of cells per time bucket, its label on the left and its total on the right."""
    rows = len(time.labels)
    label_every = 1 if rows <= 24 else 2
    for r in range(rows):
        y = top + r * row_h
        if r % label_every == 0:
            out.append(_text(axis.left - 6, y + row_h - 3, time.labels[r], "tick", "end"))
        row_total = int(time.counts[r].sum())
        out.append(_text(axis.left + axis.width + 6, y + row_h - 3, _n(row_total), "tick"))
        for i, value in enumerate(time.counts[r].tolist()):
            if value:
                c = axis.chutes[i]
                out.append(
                    _rect(
                        axis.x(i),
                        y,
                        axis.col,
                        row_h,
                        fill=_heat(math.sqrt(value / peak)),
                        tip=f"chute {c}, {time.spans[r]}: {_n(value)} items",
                    )
                )


def _fill_chart(axis: _ChuteAxis, data: ReportData, capacity: int) -> str:
    title = f"Chute fill: items sorted into each chute against a capacity of {capacity:,}"
    top, plot_h, right = 62.0, 260.0, 110.0
    width = axis.left + axis.width + right
    height = top + plot_h + 80
    out = _svg_open(max(width, 700), height, title)
    out.append(_text(10, 22, title, "title"))
    _legend(
        axis.left,
        44,
        [
            ("chute", "destination chute"),
            ("overflow-chute", "overflow chute"),
            ("function-chute", "function chute"),
            ("spare-chute", "other"),
            ("over", "above capacity"),
        ],
        out,
    )
    values = [data.chutes.get(c, 0) for c in axis.chutes]
    ticks = _ticks(max([*values, capacity, 1]) * 1.05)
    scale = plot_h / ticks[-1]
    bottom = top + plot_h
    for t in ticks:
        y = bottom - t * scale
        out.append(
            f'<line x1="{axis.left}" y1="{y:.1f}" x2="{axis.left + axis.width:.1f}" y2="{y:.1f}" '
            'class="grid"/>'
        )
        out.append(_text(axis.left - 6, y + 3, _n(t), "tick", "end"))
    _fill_bars(axis, values, capacity, bottom, scale, out)
    if capacity > 0:
        cy = bottom - capacity * scale
        out.append(
            f'<line x1="{axis.left}" y1="{cy:.1f}" x2="{axis.left + axis.width:.1f}" '
            f'y2="{cy:.1f}" class="capacity"/>'
        )
        out.append(_text(axis.left + axis.width + 4, cy + 4, f"capacity {capacity:,}", "tick"))
    if not data.items:
        out.append(
            _text(axis.left + axis.width / 2, top + plot_h / 2, "no items", "empty", "middle")
        )
    out.append(f'<line x1="{axis.left}" y1="{top}" x2="{axis.left}" y2="{bottom}" class="axis"/>')
    axis.draw(bottom, out)
    out.append(_text(axis.left + axis.width / 2, bottom + 44, "chute", "axis-label", "middle"))
    out.append(_y_label("items sorted", top + plot_h / 2))
    out.append("</svg>")
    return "\n".join(out)


def _fill_bars(
    axis: _ChuteAxis,
    values: Sequence[int],
    capacity: int,
    bottom: float,
    scale: float,
    out: list[str],
) -> None:
    """One bar per chute with items; the part above capacity drawn apart, in red."""
    bar_w = max(axis.col * 0.8, min(axis.col, 3.0))
    pad = (axis.col - bar_w) / 2
    for i, (c, v) in enumerate(zip(axis.chutes, values, strict=True)):
        if not v:
            continue
        x = axis.x(i) + pad
        tip = (
            f"chute {c} ({axis.roles[i]}): {_n(v)} items, {v / capacity:.0%} of capacity"
            if capacity > 0
            else f"chute {c}: {_n(v)} items"
        )
        within = min(v, capacity) if capacity > 0 else v
        out.append(_rect(x, bottom - within * scale, bar_w, within * scale, axis.kinds[i], tip=tip))
        if v > within:
            out.append(_rect(x, bottom - v * scale, bar_w, (v - within) * scale, "over", tip=tip))


def _reason_words(data: ReportData) -> list[str]:
    words = [r.word for r in Reason]
    return words + sorted(w for w in data.reasons if w not in words)


def _summary(
    data: ReportData, plan: SortPlan, scans_file: str, capacity: int, time: TimeAxis
) -> str:
    total = data.items
    ok = data.reasons.get(Reason.OK.word, 0)
    names = [d.name for d in plan.destinations]
    served = sum(1 for name in names if data.destinations.get(name, 0))
    used = sum(1 for c, n in data.chutes.items() if c >= 0 and n)
    over = sum(1 for c, n in data.chutes.items() if c >= 0 and capacity > 0 and n > capacity)
    rows: list[tuple[str, str, int | None, str, str]] = [
        ("plan", "Sort plan", None, f"{plan.name} ({plan.path})", ""),
        ("scans", "Scans", None, scans_file, ""),
        ("items", "Items", total, _n(total), ""),
        ("ok", "Sorted to a destination (ok)", ok, _n(ok), _share(ok, total)),
    ]
    for word in _reason_words(data):
        n = data.reasons.get(word, 0)
        rows.append((f"reason:{word}", f"reason {word}", n, _n(n), _share(n, total)))
    rows += [
        (
            "destinations",
            "Destinations with items",
            served,
            f"{served:,} of {len(names):,}",
            "",
        ),
        ("chutes", "Chutes with items", used, _n(used), ""),
        (
            "over-capacity",
            f"Chutes above capacity ({capacity:,} items)",
            over,
            _n(over),
            "",
        ),
    ]
    if time.kind == "clock":
        axis = "site-local hour"
        if time.untimed:
            axis += f"; {time.untimed:,} items without a time are not in the chart"
    else:
        axis = f"input position, {time.bucket_items:,} items per row (the scans have no time)"
    rows.append(("time-axis", "Time axis", None, axis, ""))
    out = ['<table id="summary"><tr><th>what</th><th>value</th><th>share</th></tr>']
    for key, label, value, shown, share in rows:
        cls = ' class="warn"' if key == "over-capacity" and over else ""
        num = f' class="num" data-value="{value}"' if value is not None else ""
        out.append(
            f'<tr data-key="{_e(key)}"{cls}><th>{_e(label)}</th><td{num}>{_e(shown)}</td>'
            f'<td class="num">{_e(share)}</td></tr>'
        )
    out.append("</table>")
    return "\n".join(out)


def _chute_list(chutes: Sequence[int], name: str, data: ReportData) -> str:
    if not chutes:
        return "-"
    return ", ".join(f"{c} ({data.destination_chutes.get((name, c), 0):,})" for c in chutes)


def _plan_tables(plan: SortPlan, data: ReportData) -> str:
    out = [
        '<table id="destinations"><tr><th>destination</th><th>items</th><th>share</th>'
        "<th>chutes (items)</th><th>overflow (items)</th><th>into overflow</th>"
        "<th>elsewhere (after cut-off...)</th><th>cut-off</th></tr>"
    ]
    for d in plan.destinations:
        n = data.destinations.get(d.name, 0)
        into_over = sum(data.destination_chutes.get((d.name, c), 0) for c in d.overflow)
        own = sum(data.destination_chutes.get((d.name, c), 0) for c in {*d.chutes, *d.overflow})
        cutoff = f"{d.cutoff_min // 60:02d}:{d.cutoff_min % 60:02d}" if d.cutoff_min >= 0 else "-"
        out.append(
            f'<tr><td>{_e(d.name)}</td><td class="num">{n:,}</td>'
            f'<td class="num">{_share(n, data.items)}</td>'
            f"<td>{_e(_chute_list(d.chutes, d.name, data))}</td>"
            f"<td>{_e(_chute_list(d.overflow, d.name, data))}</td>"
            f'<td class="num">{_share(into_over, n)}</td>'
            f'<td class="num">{n - own:,}</td><td>{_e(cutoff)}</td></tr>'
        )
    out.append("</table>")
    out.append(
        '<table id="functions"><tr><th>reason</th><th>function chute</th>'
        "<th>items for this reason</th></tr>"
    )
    for reason, c in sorted(plan.functions.items()):
        n = data.reasons.get(reason.word, 0)
        out.append(
            f'<tr><td>{_e(reason.word)}</td><td class="num">{c}</td><td class="num">{n:,}</td></tr>'
        )
    out.append("</table>")
    return "\n".join(out)


def _chute_table(axis: _ChuteAxis, data: ReportData, capacity: int) -> str:
    out = [
        "<details><summary>Items per chute (table)</summary>",
        '<table id="chutes"><tr><th>chute</th><th>role</th><th>items</th><th>of capacity</th></tr>',
    ]
    for c, role in zip(axis.chutes, axis.roles, strict=True):
        n = data.chutes.get(c, 0)
        fill = f"{n / capacity:.0%}" if capacity > 0 else "-"
        cls = ' class="warn"' if capacity > 0 and n > capacity else ""
        out.append(
            f'<tr{cls}><td class="num">{c}</td><td>{_e(role)}</td>'
            f'<td class="num">{n:,}</td><td class="num">{fill}</td></tr>'
        )
    out.append("</table></details>")
    return "\n".join(out)


def render_report(
    data: ReportData,
    plan: SortPlan,
    *,
    title: str,
    scans_file: str,
    chute_capacity: int = 400,
) -> str:
    """The report as one HTML document."""
    total = data.items
    axis = _chute_axis(plan, data)
    time = data.time_axis(axis.chutes)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Sort plan {_e(plan.name)} ({_e(plan.path)}), scans {_e(scans_file)}: '
        f"{total:,} items replayed with every chute usable.</p>",
        "<h2>Summary</h2>",
        _summary(data, plan, scans_file, chute_capacity, time),
    ]
    if plan.warnings:
        parts.append("<h2>Plan warnings</h2>")
        parts.append(
            '<ul class="warnings">' + "".join(f"<li>{_e(w)}</li>" for w in plan.warnings) + "</ul>"
        )
    parts.append("<h2>Charts</h2>")
    for svg, caption in _charts(data, plan, axis, time, chute_capacity):
        parts.append(f"<figure>\n{svg}\n<figcaption>{_e(caption)}</figcaption>\n</figure>")
    parts += [
        "<h2>Destinations and chutes</h2>",
        _plan_tables(plan, data),
        _chute_table(axis, data, chute_capacity),
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def _destination_bars(data: ReportData, plan: SortPlan) -> list[_Bar]:
    """Every destination of the plan (and any other that got items), busiest first; the
    items without a destination last."""
    plan_names = [d.name for d in plan.destinations]
    order = {name: i for i, name in enumerate(plan_names)}
    dest_names = plan_names + sorted(n for n in data.destinations if n not in order and n)
    dest_bars = [
        _Bar(
            name,
            data.destinations.get(name, 0),
            "dest",
            f"{name}: {data.destinations.get(name, 0):,} items",
        )
        for name in dest_names
    ]
    dest_bars.sort(key=lambda b: (-b.value, order.get(b.label, len(order))))
    none = data.destinations.get("", 0)
    if none:
        dest_bars.append(
            _Bar(
                NO_DESTINATION, none, "nodest", f"no destination (function chutes): {none:,} items"
            )
        )
    return dest_bars


def _charts(
    data: ReportData, plan: SortPlan, axis: _ChuteAxis, time: TimeAxis, chute_capacity: int
) -> list[tuple[str, str]]:
    """The report's charts, each with its caption."""
    total = data.items
    reason_bars = [
        _Bar(
            w,
            data.reasons.get(w, 0),
            "ok" if w == Reason.OK.word else "problem",
            f"{w}: {data.reasons.get(w, 0):,} items",
        )
        for w in _reason_words(data)
    ]
    dest_bars = _destination_bars(data, plan)
    return [
        (
            _hbar_chart("Volume per destination", "items", "destination", dest_bars, total),
            "Every destination of the plan, busiest first; items that reached no destination "
            "(no read, no rule, conflicts...) went to function chutes.",
        ),
        (
            _hbar_chart("Items per reason", "items", "reason", reason_bars, total),
            "Why each item went where it went: ok is a destination chute, every other reason "
            "a function chute.",
        ),
        (
            _heatmap(axis, time),
            "Darker cells carry more items; hover a cell for its count. Columns line up with "
            "the chute fill chart below.",
        ),
        (
            _fill_chart(axis, data, chute_capacity),
            "Items sorted into each chute over the whole replay; the part above the dashed "
            "capacity line is red. Hover a bar for the chute's role and count.",
        ),
    ]


def write_report(
    path: Path,
    data: ReportData,
    plan: SortPlan,
    *,
    title: str,
    scans_file: str,
    chute_capacity: int = 400,
) -> None:
    """Write the self-contained HTML report (UTF-8) to `path`."""
    text = render_report(
        data, plan, title=title, scans_file=scans_file, chute_capacity=chute_capacity
    )
    Path(path).write_text(text, encoding="utf-8")
