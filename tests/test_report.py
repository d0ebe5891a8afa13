"""Replay report: a self-contained HTML file whose numbers are the replay's."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from simulators.traffic import Traffic
from sorter.decide import Decider
from sorter.kernel import ChuteState
from sorter.plan import SortPlan, build_plan, compile_plan, load_plan
from sorter.ports import Reason
from sorterd.report import TIME_BUCKETS, ReportData, write_report

PLAN = Path(__file__).resolve().parents[1] / "config" / "demo" / "sortplan.toml"
ITEMS = 3000
CHUNK = 257  # not a divisor of ITEMS: chunks end anywhere
HOSTILE = '<script>alert("x")</script> & RABAT'
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}


@dataclass
class Replayed:
    data: ReportData
    destinations: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    chutes: Counter[int] = field(default_factory=Counter)
    per_hour: Counter[int] = field(default_factory=Counter)


def _replay(plan: SortPlan, minute_of: Callable[[int], int] | None = None) -> Replayed:
    """Traffic through the live decider one item at a time, fed to ReportData in chunks,
    counted independently on the side."""
    compiled = compile_plan(plan)
    decider = Decider(compiled, ChuteState.for_plan(compiled), site_country="MA")
    decider.warm()
    out = Replayed(ReportData())
    dests: list[str] = []
    chutes: list[int] = []
    reasons: list[str] = []
    minutes: list[int] = []

    def flush() -> None:
        out.data.add(dests, chutes, reasons, minutes if minute_of is not None else None)
        dests.clear()
        chutes.clear()
        reasons.clear()
        minutes.clear()

    for i, item in enumerate(Traffic(seed=1).items(ITEMS)):
        if minute_of is None:
            choice = decider.decide(item.codes)
        else:
            minute = minute_of(i)
            features, barcode = decider.features(item.codes, 0, minute)
            choice = decider.decide_features(features, barcode)
            minutes.append(minute)
            if minute >= 0:
                out.per_hour[minute // 60] += 1
        dests.append(choice.destination)
        chutes.append(choice.chute)
        reasons.append(choice.reason.word)
        out.destinations[choice.destination] += 1
        out.reasons[choice.reason.word] += 1
        out.chutes[choice.chute] += 1
        if len(dests) == CHUNK:
            flush()
    flush()
    return out


class _Page(HTMLParser):
    """Tag balance, the <svg> elements, link attributes, text, and the summary's numbers."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.svgs: list[dict[str, str]] = []
        self.links: list[str] = []
        self.tags: Counter[str] = Counter()
        self.text: list[str] = []
        self.summary: dict[str, int] = {}
        self._row: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags[tag] += 1
        self.links += [v for k, v in a.items() if k in ("src", "href", "xlink:href", "action")]
        if tag == "svg":
            self.svgs.append(a)
        if tag == "tr":
            self._row = a.get("data-key")
        if tag == "td" and self._row is not None and "data-value" in a:
            self.summary[self._row] = int(a["data-value"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _check_page(path: Path) -> tuple[str, _Page]:
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    page = _Page()
    page.feed(html)
    page.close()
    assert page.errors == []
    assert page.stack == []
    # Self-contained: nothing fetched from anywhere, no script at all.
    assert "http://" not in html
    assert "https://" not in html
    assert page.links == []
    assert page.tags["script"] == 0
    assert not re.search(r"<script\b", html, re.IGNORECASE)
    assert page.tags["img"] == 0
    assert page.tags["link"] == 0
    assert "@import" not in html
    # One chart per <svg>: destinations, reasons, chute x time heatmap, chute fill.
    assert len(page.svgs) >= 4
    assert page.tags["svg"] == len(page.svgs)
    return html, page


def _assert_summary(page: _Page, run: Replayed) -> None:
    assert page.summary["items"] == ITEMS
    assert page.summary["ok"] == run.reasons[Reason.OK.word]
    for reason in Reason:
        assert page.summary[f"reason:{reason.word}"] == run.reasons[reason.word], reason
    assert page.summary["chutes"] == len(run.chutes)
    assert sum(page.summary[f"reason:{r.word}"] for r in Reason) == ITEMS


def test_report_of_a_replay_is_self_contained_and_counts_match(tmp_path: Path) -> None:
    plan = load_plan(PLAN)
    run = _replay(plan)
    data = run.data
    assert data.items == ITEMS
    assert data.destinations == run.destinations
    assert data.reasons == run.reasons
    assert data.chutes == run.chutes

    out = tmp_path / "report.html"
    write_report(out, data, plan, title="Replay of day scans", scans_file="scans.csv")
    _, page = _check_page(out)
    assert len(page.svgs) == 4
    text = "".join(page.text)
    for name, n in run.destinations.items():
        if n and name:
            assert name in text
    for reason in Reason:
        assert reason.word in text
    assert "(no destination)" in text  # no-reads and the like reach no destination
    assert "Replay of day scans" in text
    assert "scans.csv" in text
    _assert_summary(page, run)
    served = sum(1 for d in plan.destinations if run.destinations[d.name])
    assert page.summary["destinations"] == served
    for svg in page.svgs:
        assert float(svg["width"]) <= 1400

    # Without a time column, time is the position in the input: ~48 buckets, all items.
    axis = data.time_axis(sorted(run.chutes))
    assert axis.kind == "position"
    assert TIME_BUCKETS // 2 <= len(axis.labels) <= TIME_BUCKETS
    assert axis.labels[0] == "1"
    assert axis.bucket_items * len(axis.labels) >= ITEMS
    assert int(axis.counts.sum()) == ITEMS
    assert axis.not_shown == 0
    for i, c in enumerate(axis.chutes):
        assert int(axis.counts[:, i].sum()) == run.chutes[c]
    assert f"input position ({axis.bucket_items:,} items per row)" in text


def test_minutes_bucket_the_heatmap_by_hour_and_apply_cutoffs(tmp_path: Path) -> None:
    raw: dict[str, Any] = tomllib.loads(PLAN.read_text(encoding="utf-8"))
    for d in raw["destination"]:
        if d["name"] == "CASABLANCA":
            d["cutoff"] = "12:00"
    plan = build_plan(raw, "cutoff-plan.toml")

    def minute_of(i: int) -> int:
        if i % 100 == 99:
            return -1  # a row without a time
        return 6 * 60 + i * 12 * 60 // ITEMS  # 06:00 to 17:59

    run = _replay(plan, minute_of)
    assert run.reasons[Reason.AFTER_CUTOFF.word] > 0
    out = tmp_path / "report.html"
    write_report(
        out, run.data, plan, title="Cut-off check", scans_file="timed.csv", chute_capacity=150
    )
    _, page = _check_page(out)
    _assert_summary(page, run)

    axis = run.data.time_axis(sorted(run.chutes))
    assert axis.kind == "clock"
    assert axis.labels == tuple(f"{h:02d}:00" for h in range(6, 18))
    assert [int(n) for n in axis.counts.sum(axis=1)] == [run.per_hour[h] for h in range(6, 18)]
    untimed = ITEMS // 100
    assert axis.untimed == untimed
    assert axis.not_shown == untimed
    text = "".join(page.text)
    for label in axis.labels:
        assert label in text
    assert "site-local time (hour)" in text
    assert f"{untimed:,} items without a time" in text
    assert "12:00" in text  # the cut-off, in the destination table
    assert page.summary["over-capacity"] == sum(1 for n in run.chutes.values() if n > 150)


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    raw: dict[str, Any] = tomllib.loads(PLAN.read_text(encoding="utf-8"))
    raw["name"] = "<b>plan</b>"
    for d in raw["destination"]:
        if d["name"] == "RABAT":
            d["name"] = HOSTILE
    for r in raw["rule"]:
        if r["destination"] == "RABAT":
            r["destination"] = HOSTILE
    plan = build_plan(raw, "<img src=x onerror=alert(1)>.toml")
    run = _replay(plan)
    assert run.destinations[HOSTILE] > 0
    out = tmp_path / "report.html"
    write_report(
        out, run.data, plan, title="<script>alert(1)</script>", scans_file='"><script>x</script>'
    )
    html, page = _check_page(out)  # no <script>, no <img>, balanced tags
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; RABAT" in html
    assert "<b>" not in html
    text = "".join(page.text)
    assert HOSTILE in text  # shown as text, as written in the plan
    assert "<b>plan</b>" in text
    _assert_summary(page, run)


def test_240_chutes_stay_readable_and_memory_stays_bounded(tmp_path: Path) -> None:
    destinations = [
        {"name": f"D{i:03d}", "chutes": [2 * i + 1, 2 * i + 2], "overflow": [221 + i % 10]}
        for i in range(110)
    ]
    raw: dict[str, Any] = {
        "version": 2,
        "name": "big",
        "machine": {"chutes": "1-240"},
        "functions": {r.word: 230 + i for i, r in enumerate(Reason) if r is not Reason.OK},
        "destination": destinations,
    }
    plan = build_plan(raw)
    data = ReportData()
    n_items = 0
    for chunk in range(40):
        chutes = [(chunk * 7919 + k * 31) % 240 + 1 for k in range(5000)]
        names = [f"D{(c - 1) // 2:03d}" if c <= 220 else "" for c in chutes]
        reasons = ["ok" if c <= 220 else "no_rule" for c in chutes]
        data.add(names, chutes, reasons)
        n_items += len(chutes)
        assert data._by_position.shape[0] == 2 * TIME_BUCKETS  # buckets merge, never grow
    out = tmp_path / "big.html"
    write_report(out, data, plan, title="big", scans_file="big.csv", chute_capacity=1000)
    html, page = _check_page(out)
    assert page.summary["items"] == n_items
    assert page.summary["chutes"] == 240
    assert len(out.read_bytes()) < 3_000_000
    for svg in page.svgs:
        assert float(svg["width"]) <= 1400
    axis = data.time_axis(list(range(1, 241)))
    assert len(axis.labels) <= TIME_BUCKETS
    assert int(axis.counts.sum()) == n_items
    # Chute numbers under the chart are spaced out, not 240 overlapping labels.
    ticks = re.findall(r'class="tick" text-anchor="middle">(\d+)</text>', html)
    assert 10 <= len(set(ticks)) <= 60


def test_empty_and_mismatched_input(tmp_path: Path) -> None:
    plan = load_plan(PLAN)
    data = ReportData()
    data.add([], [], [])
    out = tmp_path / "empty.html"
    write_report(out, data, plan, title="nothing", scans_file="empty.csv")
    _, page = _check_page(out)
    assert page.summary["items"] == 0
    assert "no items" in "".join(page.text)
    with pytest.raises(ValueError, match="length"):
        data.add(["A"], [1, 2], ["ok"])


def test_clock_axis_spans_midnight_and_skips_items_without_time() -> None:
    data = ReportData()
    data.add(["A", "B", "A"], [1, 5, 1], ["ok", "ok", "ok"], [None, 23 * 60 + 59, 5])
    data.add(["A"], [2], ["ok"], None)  # a chunk without times
    axis = data.time_axis([1, 2, 5])
    assert axis.kind == "clock"
    assert axis.labels == ("23:00", "00:00")  # a night shift reads as one span
    assert axis.counts.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert axis.untimed == 2
