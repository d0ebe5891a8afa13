"""`sorterd plan optimise --report FILE.html`: the current and the optimised allocation
side by side, by the model's estimate and by the simulated day (simulators/chute_day.py).

One self-contained HTML file drawn with the replay report's own charts and style
(sorterd/report.py: the items-per-chute heatmap over the hours, the chute fill chart and
its horizontal bar chart), fed with the simulated day's per-item outcomes through the
replay report's `ReportData`: inline CSS and SVG, no script, no link outside the file;
every text from a plan or a file is escaped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulators.chute_day import OUTCOME_GAVE_UP, DayFigures
from sorter.optimise import Allocation, Instance, estimate_of
from sorter.plan import SortPlan
from sorter.ports import Reason

# The replay report's drawing functions, reused as they are (one look for both reports).
from sorterd.report import (
    _CSS,
    ReportData,
    _Bar,
    _chute_axis,
    _e,
    _fill_chart,
    _hbar_chart,
    _heatmap,
)

__all__ = ["OptimiseReport", "render_optimise_report", "simulated_data", "write_optimise_report"]

_EXTRA_CSS = "td.num { text-align: right; } tr.moved td { background: #fff7e6; }"


@dataclass(frozen=True, slots=True)
class OptimiseReport:
    plan_name: str
    volumes_file: str
    inst: Instance
    result: Allocation
    before: DayFigures
    after: DayFigures
    seed: int
    plan: SortPlan | None = None  # the current plan: the chute axes' roles (None: no charts)


def simulated_data(day: DayFigures) -> ReportData:
    """A simulated day as the replay report's per-item data: sorted and overflow items are
    `ok` in the chute they landed in, items that gave up `max_recirc`."""
    data = ReportData()
    if day.item_chute.size == 0:
        return data
    names = np.asarray([*day.destinations, ""], dtype=object)
    reasons = np.where(day.item_outcome == OUTCOME_GAVE_UP, Reason.MAX_RECIRC.word, "ok")
    data.add(
        names[day.item_destination].tolist(),
        day.item_chute.tolist(),
        reasons.tolist(),
        day.item_minute.tolist(),
    )
    return data


def _reallocated(plan: SortPlan, chutes: Sequence[Sequence[int]]) -> SortPlan:
    destinations = tuple(
        dataclasses.replace(d, chutes=tuple(c))
        for d, c in zip(plan.destinations, chutes, strict=True)
    )
    return dataclasses.replace(plan, destinations=destinations)


def _row(cells: Sequence[object], head: bool = False) -> str:
    tag = "th" if head else "td"
    return "<tr>" + "".join(f"<{tag}>{_e(c)}</{tag}>" for c in cells) + "</tr>"


def _change(old: float, new: float) -> str:
    return f"{(new - old) / old:+.1%}" if old else "-"


def _summary(r: OptimiseReport) -> str:
    res = r.result
    rows = [
        _row(("", "current plan", "optimised", "change"), head=True),
        _row(
            (
                "estimated items finding their chutes full",
                f"{res.estimate_before:,.0f}",
                f"{res.estimate_after:,.0f}",
                _change(res.estimate_before, res.estimate_after),
            )
        ),
    ]
    for label, name in (
        ("simulated recirculations caused by full chutes", "full_recirculations"),
        ("simulated items to the max_recirc chute", "gave_up"),
        ("simulated items to overflow chutes", "overflow_items"),
        ("simulated chute-full events", "chute_full_events"),
    ):
        old, new = getattr(r.before, name), getattr(r.after, name)
        rows.append(_row((label, f"{old:,}", f"{new:,}", _change(old, new))))
    rows.append(
        _row(
            (
                "simulated peak fill of a chute",
                f"{r.before.peak_fill:.0%}",
                f"{r.after.peak_fill:.0%}",
                "",
            )
        )
    )
    return (
        "<table>"
        + "".join(rows)
        + "</table>"
        + f"<p>{len(res.moved)} of {len(r.inst.free_chutes)} chutes moved; solver "
        f"{_e(res.status)} in {res.wall_time_s:.2f} s, gap to its bound {res.gap:.2%}.</p>"
    )


def _operators(r: OptimiseReport) -> str:
    """Per zone: items per operator over the day and in the busiest hour, old and new."""
    rows = [
        _row(
            (
                "zone",
                "operators",
                "items per operator, current",
                "optimised",
                "busiest hour, current",
                "optimised",
            ),
            head=True,
        )
    ]
    b, a = r.before, r.after
    for i, name in enumerate(b.zones):
        rows.append(
            _row(
                (
                    name,
                    b.operators[i],
                    f"{b.operator_items()[i]:,.0f}",
                    f"{a.operator_items()[i]:,.0f}",
                    f"{b.operator_peak_hour()[i]:,.0f}",
                    f"{a.operator_peak_hour()[i]:,.0f}",
                )
            )
        )
    return "<table>" + "".join(rows) + "</table>"


def _operator_bars(r: OptimiseReport) -> list[_Bar]:
    bars = []
    for i, name in enumerate(r.before.zones):
        for day, word, cls in ((r.before, "current", "problem"), (r.after, "optimised", "dest")):
            value = round(day.operator_items()[i])
            label = f"{name} ({day.operators[i]}), {word}"
            bars.append(_Bar(label, value, cls, f"{label}: {value:,} items per operator"))
    return bars


def _hour_bars(r: OptimiseReport) -> list[_Bar]:
    """Full passes per hour, current and optimised, for the hours with any."""
    bars = []
    for h in range(24):
        old, new = r.before.full_passes_by_hour[h], r.after.full_passes_by_hour[h]
        if old or new:
            bars.append(_Bar(f"{h:02d}:00 current", old, "problem", f"{h:02d}:00 before: {old:,}"))
            bars.append(_Bar(f"{h:02d}:00 optimised", new, "dest", f"{h:02d}:00 after: {new:,}"))
    return bars


def _destinations(r: OptimiseReport) -> str:
    inst, res = r.inst, r.result
    columns = ("destination", "items/day", "peak hour", "chutes now", "chutes after")
    rows = [_row((*columns, "estimate now", "estimate after"), head=True)]
    for d, name in enumerate(inst.destinations):
        items = inst.hourly_items[d]
        peak = max(range(24), key=lambda h: items[h]) if any(items) else None
        rows.append(
            _row(
                (
                    name,
                    f"{sum(items):,}",
                    f"{peak:02d}:00 ({items[peak]:,})" if peak is not None else "-",
                    len(inst.current[d]),
                    len(res.chutes[d]),
                    f"{estimate_of(inst, d, inst.current[d]):,.0f}",
                    f"{estimate_of(inst, d, res.chutes[d]):,.0f}",
                )
            )
        )
    return "<table>" + "".join(rows) + "</table>"


def _moves(r: OptimiseReport) -> str:
    if not r.result.moved:
        return "<p>No chute moves.</p>"
    rows = [_row(("chute", "zone", "from", "to"), head=True)]
    rows += [
        _row((c, r.inst.zone_names[r.inst.zone(c)], was or "(none)", now or "(none)"))
        for c, was, now in r.result.moved
    ]
    return "<table>" + "".join(rows) + "</table>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>\n{svg}\n<figcaption>{_e(caption)}</figcaption>\n</figure>"


def _chute_charts(r: OptimiseReport) -> list[str]:
    """The replay report's heatmap and fill chart, current plan then optimised."""
    if r.plan is None:
        return []
    out = []
    clearings = 24 * 60 // r.inst.clear_interval_min
    day_capacity = r.inst.capacity_items * clearings
    for word, plan, day in (
        ("current", r.plan, r.before),
        ("optimised", _reallocated(r.plan, r.result.chutes), r.after),
    ):
        data = simulated_data(day)
        axis = _chute_axis(plan, data)
        out.append(f"<h3>{_e(word)} plan</h3>")
        out.append(
            _figure(
                _heatmap(axis, data.time_axis(axis.chutes)),
                f"Simulated items per chute and hour, {word} plan. Columns line up with the "
                "fill chart below.",
            )
        )
        out.append(
            _figure(
                _fill_chart(axis, data, day_capacity),
                f"Simulated items into each chute over the day, {word} plan, against what a "
                f"chute takes in a day when emptied on every round ({r.inst.capacity_items} "
                f"items x {clearings} rounds).",
            )
        )
    return out


def render_optimise_report(r: OptimiseReport) -> str:
    title = f"Chute allocation of {r.plan_name}"
    total = sum(map(sum, r.inst.hourly_items))
    hour_bars = _hour_bars(r)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}{_EXTRA_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Volumes {_e(r.volumes_file)}: {total:,}'
        f" items; a chute holds {r.inst.capacity_items} items and is emptied every "
        f"{r.inst.clear_interval_min} min. Simulated day: seed {r.seed}, the same "
        "arrivals through both allocations.</p>",
        "<h2>Summary</h2>",
        _summary(r),
        "<h2>Simulated full passes per hour</h2>",
        _figure(
            _hbar_chart(
                "Full passes per hour",
                "passes that found every chute of the destination full",
                "hour",
                hour_bars,
                sum(b.value for b in hour_bars),
            ),
            "Passes that found every chute of their destination full, per hour: current plan "
            "(orange), optimised (blue).",
        ),
        "<h2>Operators</h2>",
        _operators(r),
        _figure(
            _hbar_chart(
                "Items per operator over the day",
                "items",
                "zone (operators)",
                _operator_bars(r),
                r.before.items,
            ),
            "Items that land in each zone's chutes, per operator of the zone: current plan "
            "(orange), optimised (blue).",
        ),
        "<h2>Chutes that move</h2>",
        _moves(r),
        "<h2>Chutes over the day</h2>",
        *_chute_charts(r),
        "<h2>Destinations</h2>",
        _destinations(r),
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def write_optimise_report(path: Path, report: OptimiseReport) -> None:
    path.write_text(render_optimise_report(report), encoding="utf-8")
