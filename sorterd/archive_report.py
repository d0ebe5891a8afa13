"""`sorterd report --from T --to T [--html FILE]`: a shift report from the archive
(docs/interfaces.md section 8, docs/archive.md).

Definitions, as P/stats has them where it has them (sorter/stats.py): items are first
passes (decisions with recirculations 0); the read rate is the share of decisions with at
least one code; the sort rate is the share of results `sorted`; the recirculation rate the
share of results `recirc_*`. Every query is one pass over the partitions of the period.
The HTML report draws its charts with the replay report's code (sorterd/report.py).
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import psycopg

from drivers.archive_db import SCHEMA, ArchiveDbError, connect_sync, describe_error
from drivers.archive_rows import iso
from sorter.config import Site
from sorter.errors import SorterdError
from sorterd.archive import archive_section

# The replay report's chart code and style: one look for both reports.
from sorterd.report import _CSS, _Bar, _e, _hbar_chart

__all__ = ["LineFigures", "ReportError", "Summary", "parse_time", "query", "render_html", "report"]

TOP = 10
_PIECES = f"{SCHEMA}.pieces"


class ReportError(SorterdError):
    """A period that cannot be reported on (bad times)."""


@dataclass(frozen=True, slots=True)
class LineFigures:
    line: str
    items: int
    decisions: int
    read: int
    results: int
    sorted: int
    recirculated: int

    def rates(self) -> tuple[float | None, float | None, float | None]:
        """read, sort and recirculation rates; None without decisions / results."""
        read = self.read / self.decisions if self.decisions else None
        sort = self.sorted / self.results if self.results else None
        recirc = self.recirculated / self.results if self.results else None
        return read, sort, recirc


@dataclass(frozen=True, slots=True)
class Summary:
    start: dt.datetime
    end: dt.datetime
    zone: str  # of the busiest hours
    lines: list[LineFigures]
    destinations: list[tuple[str, int, int]]  # name, decisions, sorted
    reasons: list[tuple[str, int]]
    outcomes: list[tuple[str, int]]
    chutes: list[tuple[str, int, int]]  # line, chute, items sorted into it
    hours: list[tuple[str, int]]  # local hour, items (first passes)

    def total(self) -> LineFigures:
        sums = [sum(getattr(f, k) for f in self.lines) for k in _FIGURES]
        return LineFigures("all lines", *sums)


_FIGURES = ("items", "decisions", "read", "results", "sorted", "recirculated")


def parse_time(text: str, zone: dt.tzinfo) -> dt.datetime:
    """ISO 8601; without an offset, in `zone` (the site's)."""
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(f"{text!r} is not an ISO 8601 time (2026-12-07T06:00)") from None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=zone)


def _site_zone(site: Site) -> tuple[dt.tzinfo, str | dt.timedelta]:
    """The zone of times without an offset, and how PostgreSQL is told it: the site's name,
    else the system's current offset (an interval: ISO 8601's sign, unlike POSIX names)."""
    name = site.config.site.timezone
    if name is not None:
        return ZoneInfo(name), name
    local = dt.datetime.now().astimezone().tzinfo
    assert local is not None
    return local, dt.datetime.now(local).utcoffset() or dt.timedelta(0)


def _zone_label(zone: str | dt.timedelta) -> str:
    if isinstance(zone, str):
        return zone
    minutes = int(zone.total_seconds() // 60)
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{'-' if minutes < 0 else '+'}{hours:02d}:{rest:02d}"


_LINES = f"""
SELECT line,
    count(*) FILTER (WHERE kind = 'decision' AND recirculations = 0),
    count(*) FILTER (WHERE kind = 'decision'),
    count(*) FILTER (WHERE kind = 'decision' AND cardinality(codes) > 0),
    count(*) FILTER (WHERE kind = 'result'),
    count(*) FILTER (WHERE kind = 'result' AND outcome = 'sorted'),
    count(*) FILTER (WHERE kind = 'result' AND outcome LIKE 'recirc%%')
FROM {_PIECES} WHERE ts >= %(start)s AND ts < %(end)s GROUP BY line ORDER BY line
"""
_DESTINATIONS = f"""
SELECT coalesce(destination, '(none)'),
    count(*) FILTER (WHERE kind = 'decision'),
    count(*) FILTER (WHERE kind = 'result' AND outcome = 'sorted')
FROM {_PIECES} WHERE ts >= %(start)s AND ts < %(end)s GROUP BY 1 ORDER BY 2 DESC, 1
"""
_REASONS = f"""
SELECT reason, count(*) FROM {_PIECES}
WHERE ts >= %(start)s AND ts < %(end)s AND kind = 'decision' GROUP BY 1 ORDER BY 2 DESC, 1
"""
_OUTCOMES = f"""
SELECT outcome, count(*) FROM {_PIECES}
WHERE ts >= %(start)s AND ts < %(end)s AND kind = 'result' GROUP BY 1 ORDER BY 2 DESC, 1
"""
_CHUTES = f"""
SELECT line, chute_actual, count(*) FROM {_PIECES}
WHERE ts >= %(start)s AND ts < %(end)s AND kind = 'result' AND outcome = 'sorted'
GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT {TOP}
"""
_HOURS = f"""
SELECT to_char(date_trunc('hour', ts AT TIME ZONE %(zone)s), 'YYYY-MM-DD HH24:00'), count(*)
FROM {_PIECES}
WHERE ts >= %(start)s AND ts < %(end)s AND kind = 'decision' AND recirculations = 0
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {TOP}
"""


def query(
    conn: psycopg.Connection[tuple[Any, ...]],
    start: dt.datetime,
    end: dt.datetime,
    zone: str | dt.timedelta,
) -> Summary:
    """The summary of [start, end); hours in `zone` (a name, or an offset east of UTC);
    empty when the archive has no table yet."""
    params = {"start": start, "end": end, "zone": zone}
    label = _zone_label(zone)

    def rows(statement: str) -> list[tuple[Any, ...]]:
        return conn.execute(statement.encode(), params).fetchall()

    try:
        lines = [LineFigures(*row) for row in rows(_LINES)]
    except psycopg.errors.UndefinedTable:
        return Summary(start, end, label, [], [], [], [], [], [])
    return Summary(
        start,
        end,
        label,
        lines,
        [(str(a), int(b), int(c)) for a, b, c in rows(_DESTINATIONS)],
        [(str(a), int(b)) for a, b in rows(_REASONS)],
        [(str(a), int(b)) for a, b in rows(_OUTCOMES)],
        [(str(a), int(b), int(c)) for a, b, c in rows(_CHUTES)],
        [(str(a), int(b)) for a, b in rows(_HOURS)],
    )


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _table(title: str, head: tuple[str, ...], body: list[tuple[object, ...]], out: TextIO) -> None:
    cells = [head, *[tuple(f"{c:,}" if isinstance(c, int) else str(c) for c in r) for r in body]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    print(f"\n{title}", file=out)
    for r in cells:
        line = "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        print(f"  {line.rstrip()}", file=out)


def _line_rows(summary: Summary) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for f in [*summary.lines, summary.total()]:
        read, sort, recirc = f.rates()
        out.append((f.line, f.items, f.results, _rate(read), _rate(sort), _rate(recirc)))
    return out


def print_summary(summary: Summary, out: TextIO) -> None:
    print(f"archive report {iso(summary.start)} to {iso(summary.end)}", file=out)
    head = ("line", "items", "results", "read rate", "sort rate", "recirculation rate")
    _table("per line", head, _line_rows(summary), out)
    _table("per destination", ("destination", "decisions", "sorted"), [*summary.destinations], out)
    _table("per reason", ("reason", "decisions"), [*summary.reasons], out)
    _table("per outcome", ("outcome", "results"), [*summary.outcomes], out)
    _table("busiest chutes", ("line", "chute", "items sorted"), [*summary.chutes], out)
    _table(f"busiest hours ({summary.zone})", ("hour", "items"), [*summary.hours], out)


def _bars(pairs: list[tuple[str, int]], cls: str) -> list[_Bar]:
    return [_Bar(name, n, cls, f"{name}: {n:,}") for name, n in pairs]


def render_html(summary: Summary) -> str:
    """The report with charts, one self-contained file (as the replay report)."""
    total = summary.total()
    title = f"Archive report {iso(summary.start)} to {iso(summary.end)}"
    head = ("line", "items", "results", "read rate", "sort rate", "recirculation rate")
    table = "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
    for row in _line_rows(summary):
        table += (
            "<tr>"
            + "".join(
                f'<td class="num">{v:,}</td>' if isinstance(v, int) else f"<td>{_e(v)}</td>"
                for v in row
            )
            + "</tr>"
        )
    table += "</table>"
    charts = [
        _hbar_chart(
            "Decisions per destination", "decisions", "destination",
            _bars([(d, n) for d, n, _ in summary.destinations], "dest"), total.decisions,
        ),
        _hbar_chart(
            "Decisions per reason", "decisions", "reason",
            [_Bar(r, n, "ok" if r == "ok" else "problem", f"{r}: {n:,}")
             for r, n in summary.reasons],
            total.decisions,
        ),
        _hbar_chart(
            "Results per outcome", "results", "outcome",
            [_Bar(o, n, "ok" if o == "sorted" else "problem", f"{o}: {n:,}")
             for o, n in summary.outcomes],
            total.results,
        ),
        _hbar_chart(
            "Busiest chutes", "items sorted", "chute",
            _bars([(f"{line} #{c}", n) for line, c, n in summary.chutes], "chute"), total.sorted,
        ),
        _hbar_chart(
            f"Busiest hours ({summary.zone})", "items", "hour", _bars(summary.hours, "dest"),
            total.items,
        ),
    ]  # fmt: skip
    figures = "".join(f"<figure>\n{svg}\n</figure>" for svg in charts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n<h2>Per line</h2>\n{table}\n<h2>Charts</h2>\n{figures}\n"
        "</body>\n</html>\n"
    )


def report(site: Site, start_text: str, end_text: str, html_path: str | None) -> int:
    section = archive_section(site)
    zone, zone_name = _site_zone(site)
    start, end = parse_time(start_text, zone), parse_time(end_text, zone)
    if end <= start:
        raise ReportError(f"--to {end_text} is not after --from {start_text}")
    with connect_sync(section.url, section.password) as conn:
        try:
            summary = query(conn, start, end, zone_name)
        except psycopg.Error as exc:
            raise ArchiveDbError(
                f"archive database: {describe_error(exc, section.password)}"
            ) from None
    print_summary(summary, sys.stdout)
    if html_path is not None:
        Path(html_path).write_text(render_html(summary), encoding="utf-8")
        print(f"\nHTML report: {html_path}")
    return 0
