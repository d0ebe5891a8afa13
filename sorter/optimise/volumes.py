"""VOLUMES.csv: the expected items of each destination in each hour of the day.

`destination,hour,items` with a header (contract section 11): hour 0-23 in site local
time, items a whole number >= 0. A destination or hour the file leaves out expects no
items. Every problem is listed, each with file, line and value, so that an engineer fixes
a spreadsheet export in one pass.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sorter.config import ConfigError, Problem

__all__ = [
    "COLUMNS",
    "HOURS",
    "MAX_ITEMS_PER_HOUR",
    "HourlyCounts",
    "Volumes",
    "load_volumes",
    "parse_volumes",
]

COLUMNS: Final = ("destination", "hour", "items")
HOURS: Final = 24
# The fastest sorters induct about 40,000 items an hour; a count far beyond that in one
# destination's hour is a spreadsheet slip (a pasted total, an extra digit).
MAX_ITEMS_PER_HOUR: Final = 1_000_000
MAX_PROBLEMS: Final = 50  # a wholly wrong file says so without printing every line


@dataclass(frozen=True, slots=True)
class Volumes:
    """Expected items per destination and hour; destinations the file left out are absent."""

    path: str
    items: dict[str, tuple[int, ...]]  # destination -> 24 hourly counts

    def of(self, destination: str) -> tuple[int, ...]:
        return self.items.get(destination, (0,) * HOURS)

    @property
    def total(self) -> int:
        return sum(sum(hours) for hours in self.items.values())


def _whole(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


class _Reader:
    def __init__(self, path: str, destinations: Iterable[str]) -> None:
        self.path = path
        self.known = list(destinations)
        self.known_set = set(self.known)
        self.problems: list[Problem] = []
        self.seen: dict[tuple[str, int], int] = {}  # (destination, hour) -> line
        self.items: dict[str, list[int]] = {}

    def add(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, f"line {line}", message))

    def header(self, row: list[str] | None) -> bool:
        if row is None:
            self.add(1, f"empty file: expected the header {','.join(COLUMNS)}")
            return False
        names = [name.strip().lower() for name in row]
        if names != list(COLUMNS):
            self.add(1, f"header {','.join(row)!r}: expected {','.join(COLUMNS)}")
            return False
        return True

    def row(self, line: int, row: list[str]) -> None:
        if not any(cell.strip() for cell in row):
            return  # a blank line, as spreadsheets leave at the end
        if len(row) != len(COLUMNS):
            self.add(line, f"{len(row)} fields, expected 3 ({','.join(COLUMNS)}): {row!r}")
            return
        name, hour_text, items_text = (cell.strip() for cell in row)
        ok = True
        if name not in self.known_set:
            self.add(line, f"unknown destination {name!r}: not in the sort plan")
            ok = False
        hour = _whole(hour_text)
        if hour is None or hour >= HOURS:
            self.add(line, f"hour {hour_text!r}: a whole hour 0-23 (site local time)")
            ok = False
        items = _whole(items_text)
        if items is None:
            negative = items_text.startswith("-") and _whole(items_text[1:]) is not None
            what = "is negative" if negative else "is not a whole number of items"
            self.add(line, f"items {items_text!r} {what}")
            ok = False
        elif items > MAX_ITEMS_PER_HOUR:
            self.add(line, f"items {items_text!r}: more than {MAX_ITEMS_PER_HOUR:,} in an hour")
            ok = False
        if not ok or hour is None or items is None:
            return
        first = self.seen.setdefault((name, hour), line)
        if first != line:
            self.add(line, f"{name} hour {hour} is given twice (first on line {first})")
            return
        self.items.setdefault(name, [0] * HOURS)[hour] = items


def parse_volumes(text: str, path: str, destinations: Iterable[str]) -> Volumes:
    """Volumes from the file's text; raise ConfigError listing every problem."""
    reader = _Reader(path, destinations)
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        if reader.header(next(rows, None)):
            for row in rows:
                reader.row(rows.line_num, row)
    except csv.Error as exc:
        reader.add(rows.line_num, f"not CSV: {exc}")
    if reader.problems:
        shown = reader.problems[:MAX_PROBLEMS]
        if len(reader.problems) > MAX_PROBLEMS:
            more = len(reader.problems) - MAX_PROBLEMS
            shown.append(Problem(path, "", f"{more} more problem(s) not shown"))
        raise ConfigError(shown)
    return Volumes(path, {name: tuple(hours) for name, hours in reader.items.items()})


def load_volumes(path: str | Path, destinations: Iterable[str]) -> Volumes:
    """Read VOLUMES.csv, checking its destinations against the plan's."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM from spreadsheet exports
    except OSError as exc:
        raise ConfigError([Problem(shown, "", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(shown, "", f"not UTF-8 text: {exc.reason}")]) from exc
    return parse_volumes(text, shown, destinations)


# Decisions that put an item into its destination's chutes: sorted, or turned away only
# because every chute was full (a replay starts with every chute usable).
_CHUTE_REASONS: Final = frozenset({"ok", "no_chute"})


class HourlyCounts:
    """Volumes counted from a replay's decisions (sorter.replay.ReplaySink): the items each
    destination's chutes took in each hour of the scans' `time`, the file taken as one day."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.items: dict[str, list[int]] = {}
        self.untimed = 0  # decisions without a time: no hour to count them in

    def add(
        self,
        destinations: Sequence[str],
        chutes: Sequence[int],
        reasons: Sequence[str],
        minutes: Sequence[int | None] | None = None,
    ) -> None:
        del chutes  # the current plan's chutes: what is being re-cut
        times = minutes if minutes is not None else [None] * len(destinations)
        for name, reason, minute in zip(destinations, reasons, times, strict=True):
            if not name or reason not in _CHUTE_REASONS:
                continue
            if minute is None or minute < 0:
                self.untimed += 1
                continue
            self.items.setdefault(name, [0] * HOURS)[minute // 60 % HOURS] += 1

    def volumes(self) -> Volumes:
        return Volumes(self.path, {name: tuple(hours) for name, hours in self.items.items()})
