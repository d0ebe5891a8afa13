"""What-if replay: recorded scans through a sort plan, offline (`sorterd replay`).

The same path as the live daemon: `Decider.features` (classification, multi-read
resolution) for every row, then the same numba `decide_one`, run over chunks of rows by
`decide_batch`. Chute state starts all usable (no PLC), so round robin and least-loaded
balancing spread items as they would on an empty line.

SCANS.csv: header with `tracking_id,codes` (codes joined by `;`, `NOREAD` for a no-read),
optional `length_mm,width_mm,height_mm,weight_g,recirculations,time`. `time` (ISO 8601, or
`HH:MM[:SS]`, site local time) applies cut-offs; without it cut-offs are not applied.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

import numpy as np

from sorter.config import ConfigError, Problem
from sorter.decide import Decider
from sorter.events import NOREAD, Reason

CHUNK_ROWS = 65_536
MAX_PROBLEMS = 20
REQUIRED = ("tracking_id", "codes")
OPTIONAL = ("length_mm", "width_mm", "height_mm", "weight_g", "recirculations", "time")


@dataclass(slots=True)
class ReplayCounts:
    items: int = 0
    destinations: Counter[str] = field(default_factory=Counter)
    chutes: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


def _minute_of_day(text: str, tz: ZoneInfo | None) -> int:
    text = text.strip()
    if not text:
        return -1
    if len(text) <= 8 and ":" in text:
        parts = text.split(":")
        return int(parts[0]) * 60 + int(parts[1])
    stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is not None and tz is not None:
        stamp = stamp.astimezone(tz)
    return stamp.hour * 60 + stamp.minute


@dataclass(frozen=True, slots=True)
class ScanRow:
    line: int
    tracking_id: str
    codes: tuple[str, ...]
    recirculations: int
    minute_of_day: int


def read_scans(path: Path, timezone: str | None = None) -> Iterator[ScanRow]:
    """Rows of a SCANS.csv; raises ConfigError naming file and line for bad input."""
    shown = str(path)
    tz = ZoneInfo(timezone) if timezone else None
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(shown, "", f"cannot read: {exc.strerror or exc}")]) from exc
    problems: list[Problem] = []
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise ConfigError(
                    [Problem(shown, "line 1", f"header lacks column(s) {', '.join(missing)}")]
                )
            i_id, i_codes = header.index("tracking_id"), header.index("codes")
            i_recirc = header.index("recirculations") if "recirculations" in header else -1
            i_time = header.index("time") if "time" in header else -1
            width = len(header)
            for row in reader:
                line = reader.line_num
                if len(row) != width:
                    if not row:
                        continue
                    problems.append(
                        Problem(shown, f"line {line}", f"{len(row)} fields, header has {width}")
                    )
                else:
                    try:
                        recirc = int(row[i_recirc]) if i_recirc >= 0 and row[i_recirc] else 0
                        minute = _minute_of_day(row[i_time], tz) if i_time >= 0 else -1
                    except ValueError as exc:
                        problems.append(Problem(shown, f"line {line}", str(exc)))
                    else:
                        codes = tuple(c for c in (p.strip() for p in row[i_codes].split(";")) if c)
                        if codes == (NOREAD,):
                            codes = ()
                        yield ScanRow(line, row[i_id], codes, recirc, minute)
                if len(problems) >= MAX_PROBLEMS:
                    break
        except (UnicodeDecodeError, csv.Error) as exc:
            problems.append(Problem(shown, f"line {reader.line_num + 1}", str(exc)))
    if problems:
        raise ConfigError(problems)


class Replay:
    """Runs rows through the decider in chunks and counts what it decided."""

    def __init__(self, decider: Decider, out: IO[str] | None = None) -> None:
        self.decider = decider
        self.counts = ReplayCounts()
        self._writer = csv.writer(out, lineterminator="\n") if out is not None else None
        if self._writer is not None:
            self._writer.writerow(["tracking_id", "barcode", "destination", "chute", "reason"])
        self._names = [d.name for d in decider.plan.plan.destinations]

    def run(
        self, rows: Iterator[ScanRow], progress: Callable[[int], None] | None = None
    ) -> ReplayCounts:
        chunk: list[ScanRow] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == CHUNK_ROWS:
                self._decide(chunk)
                if progress is not None:
                    progress(len(chunk))
                chunk = []
        if chunk:
            self._decide(chunk)
            if progress is not None:
                progress(len(chunk))
        return self.counts

    def _decide(self, rows: list[ScanRow]) -> None:
        n = len(rows)
        reason_in = np.empty(n, np.int32)
        pc = np.empty(n, np.int64)
        pc_digits = np.empty(n, np.int32)
        service = np.empty(n, np.int32)
        country = np.empty(n, np.int32)
        regex_mask = np.empty(n, np.int64)
        recirc = np.empty(n, np.int32)
        minute = np.empty(n, np.int32)
        barcodes: list[str] = []
        features = self.decider.features
        for i, row in enumerate(rows):
            f, barcode = features(row.codes, row.recirculations, minute=row.minute_of_day)
            reason_in[i] = f.reason_in
            pc[i] = f.pc
            pc_digits[i] = f.pc_digits
            service[i] = f.service
            country[i] = f.country
            regex_mask[i] = f.regex_mask
            recirc[i] = f.recirculations
            minute[i] = f.minute_of_day
            barcodes.append(barcode)
        dest, chute, reason = self.decider.kernel.decide_batch(
            reason_in, pc, pc_digits, service, country, regex_mask, recirc, minute,
            self.decider.state,
        )  # fmt: skip
        counts = self.counts
        counts.items += n
        names = self._names
        dest_names = [names[d] if d >= 0 else "" for d in dest.tolist()]
        reason_words = [Reason(r).word for r in reason.tolist()]
        chutes = chute.tolist()
        counts.destinations.update(dest_names)
        counts.chutes.update(chutes)
        counts.reasons.update(reason_words)
        if self._writer is not None:
            self._writer.writerows(
                (row.tracking_id, bc, d, c, r)
                for row, bc, d, c, r in zip(
                    rows, barcodes, dest_names, chutes, reason_words, strict=True
                )
            )
