"""The optimiser's HTML report: every text from the plan or a file is escaped."""

from __future__ import annotations

from simulators.chute_day import DayFigures
from sorter.optimise import Allocation, Instance
from sorterd.optimise_report import OptimiseReport, render_optimise_report


def test_names_are_escaped_and_figures_shown() -> None:
    inst = Instance(
        destinations=("<b>A</b>", "B&C"),
        hourly_items=((0,) * 23 + (500,), (0,) * 24),
        current=(frozenset({1}), frozenset({2})),
        fixed=((), ()),
        free_chutes=(1, 2, 3),
        min_chutes=(1, 1),
        capacity_items=60,
        clear_interval_min=20,
    )
    result = Allocation(
        chutes=((1, 3), (2,)),
        status="OPTIMAL",
        estimate_before=320.0,
        estimate_after=140.0,
        moved=((3, "", "<b>A</b>"),),
        objective=150.0,
        bound=150.0,
        wall_time_s=0.01,
    )
    before = DayFigures(items=500, sorted_items=200, full_passes=400, gave_up=300)
    before.full_passes_by_hour[23] = 400
    after = DayFigures(items=500, sorted_items=400, full_passes=100, gave_up=100)
    text = render_optimise_report(
        OptimiseReport("<plan>", "v&.csv", inst, result, before, after, seed=3)
    )
    assert "<b>A</b>" not in text
    assert "&lt;b&gt;A&lt;/b&gt;" in text
    assert "B&amp;C" in text
    assert "&lt;plan&gt;" in text
    assert "v&amp;.csv" in text
    assert "<td>simulated recirculations caused by full chutes</td><td>400</td><td>100</td>" in text
    assert "23:00 before: 400" in text
    assert "1 of 3 chutes moved" in text
