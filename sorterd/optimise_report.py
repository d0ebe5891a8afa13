"""`sorterd plan optimise --report FILE.html`: the current and the optimised allocation
side by side, by the model's estimate and by the simulated day (simulators/chute_day.py).

One self-contained HTML file, like the replay report (sorterd/report.py): inline CSS and
SVG, no script, no link outside the file; every text from a plan or a file is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from simulators.chute_day import DayFigures
from sorter.optimise import Allocation, Instance, estimate_items

__all__ = ["OptimiseReport", "render_optimise_report", "write_optimise_report"]

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.meta { color: #555; }
.before { fill: #c0504d; } .after { fill: #4f81bd; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
"""


@dataclass(frozen=True, slots=True)
class OptimiseReport:
    plan_name: str
    volumes_file: str
    inst: Instance
    result: Allocation
    before: DayFigures
    after: DayFigures
    seed: int


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _row(cells: Sequence[object], head: bool = False) -> str:
    tag = "th" if head else "td"
    return "<tr>" + "".join(f"<{tag}>{_e(c)}</{tag}>" for c in cells) + "</tr>"


def _change(old: float, new: float) -> str:
    return f"{(new - old) / old:+.1%}" if old else "-"


def _summary(r: OptimiseReport) -> str:
    res = r.result
    moved = len(res.moved)
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
        + f"<p>{moved} of {len(r.inst.free_chutes)} chutes moved; solver {_e(res.status)} in "
        f"{res.wall_time_s:.2f} s, gap to its bound {res.gap:.2%}.</p>"
    )


def _hour_chart(before: Sequence[int], after: Sequence[int]) -> str:
    """Full passes per hour, current (red) and optimised (blue) side by side."""
    width, height, left, bottom = 760.0, 220.0, 50.0, 30.0
    top = max(max(before, default=0), max(after, default=0), 1)
    slot = (width - left - 10) / 24
    bar = slot * 0.4
    plot_h = height - bottom - 10
    out = [
        f'<svg width="{width:.0f}" height="{height:.0f}" role="img" '
        'aria-label="full passes per hour"><title>full passes per hour</title>',
        f'<text x="{left - 6:.0f}" y="16" text-anchor="end">{top:,}</text>',
        f'<text x="{left - 6:.0f}" y="{height - bottom:.0f}" text-anchor="end">0</text>',
    ]
    for h in range(24):
        x = left + h * slot
        for i, (values, cls) in enumerate(((before, "before"), (after, "after"))):
            v = values[h]
            bh = plot_h * v / top
            out.append(
                f'<rect class="{cls}" x="{x + i * bar:.1f}" y="{height - bottom - bh:.1f}" '
                f'width="{bar:.1f}" height="{bh:.1f}"><title>{h:02d}:00 {cls}: {v:,}'
                "</title></rect>"
            )
        out.append(
            f'<text x="{x + bar:.1f}" y="{height - bottom + 14:.0f}" '
            f'text-anchor="middle">{h:02d}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _destinations(r: OptimiseReport) -> str:
    inst, res = r.inst, r.result
    columns = ("destination", "items/day", "peak hour", "chutes now", "chutes after")
    rows = [_row((*columns, "estimate now", "estimate after"), head=True)]
    for d, name in enumerate(inst.destinations):
        items = inst.hourly_items[d]
        peak = max(range(24), key=lambda h: items[h]) if any(items) else None

        def est(n: int, items: tuple[int, ...] = items) -> str:
            value = estimate_items(items, n, inst.capacity_items, inst.clear_interval_min)
            return f"{value:,.0f}"

        rows.append(
            _row(
                (
                    name,
                    f"{sum(items):,}",
                    f"{peak:02d}:00 ({items[peak]:,})" if peak is not None else "-",
                    len(inst.current[d]),
                    len(res.chutes[d]),
                    est(len(inst.current[d])),
                    est(len(res.chutes[d])),
                )
            )
        )
    return "<table>" + "".join(rows) + "</table>"


def _moves(r: OptimiseReport) -> str:
    if not r.result.moved:
        return "<p>No chute moves.</p>"
    rows = [_row(("chute", "from", "to"), head=True)]
    rows += [_row((c, was or "(none)", now or "(none)")) for c, was, now in r.result.moved]
    return "<table>" + "".join(rows) + "</table>"


def render_optimise_report(r: OptimiseReport) -> str:
    title = f"Chute allocation of {r.plan_name}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            '<head><meta charset="utf-8">',
            f"<title>{_e(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{_e(title)}</h1>",
            f'<p class="meta">Volumes {_e(r.volumes_file)}: {sum(map(sum, r.inst.hourly_items)):,}'
            f" items; a chute holds {r.inst.capacity_items} items and is emptied every "
            f"{r.inst.clear_interval_min} min. Simulated day: seed {r.seed}, the same "
            "arrivals through both allocations.</p>",
            "<h2>Summary</h2>",
            _summary(r),
            "<h2>Simulated full passes per hour</h2>",
            "<figure>",
            _hour_chart(r.before.full_passes_by_hour, r.after.full_passes_by_hour),
            "<figcaption>Passes that found every chute of their destination full, per hour: "
            "current plan (red), optimised (blue).</figcaption>",
            "</figure>",
            "<h2>Destinations</h2>",
            _destinations(r),
            "<h2>Chutes that move</h2>",
            _moves(r),
            "</body>",
            "</html>",
            "",
        ]
    )


def write_optimise_report(path: Path, report: OptimiseReport) -> None:
    path.write_text(render_optimise_report(report), encoding="utf-8")
