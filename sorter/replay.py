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
import itertools
import multiprocessing
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from sorter.config import ConfigError, Problem
from sorter.decide import Decider
from sorter.events import NOREAD, Reason
from sorter.kernel import ItemFeatures

CHUNK_ROWS = 16_384
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


class ScanRow(NamedTuple):
    """One row of SCANS.csv (a NamedTuple: a million of them are built per replay)."""

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


FeatureChunk = tuple[npt.NDArray[np.int64], list[str]]

_worker_decider: Decider | None = None


def _init_worker(plan_path: str, timezone: str | None) -> None:
    """Each worker process builds its own decider from the same plan file."""
    global _worker_decider  # noqa: PLW0603 - one decider per worker process
    from sorter.kernel import ChuteState  # noqa: PLC0415
    from sorter.plan import compile_plan, load_plan  # noqa: PLC0415

    plan = compile_plan(load_plan(plan_path))
    _worker_decider = Decider(plan, ChuteState.for_plan(plan), timezone)
    _worker_decider.warm()


def _worker_features(rows: list[tuple[tuple[str, ...], int, int]]) -> FeatureChunk:
    assert _worker_decider is not None
    return features_of(_worker_decider, rows)


def features_of(decider: Decider, rows: list[tuple[tuple[str, ...], int, int]]) -> FeatureChunk:
    """Kernel input for a chunk of rows: an (n, 8) array in ItemFeatures order, barcodes."""
    features = decider.features
    decided = [features(codes, recirc, minute) for codes, recirc, minute in rows]
    if not decided:
        return np.zeros((0, len(ItemFeatures._fields)), np.int64), []
    feats, barcodes = zip(*decided, strict=True)
    # ItemFeatures is a NamedTuple of ints: transpose in C, one array per column.
    table = np.array([np.array(col, dtype=np.int64) for col in zip(*feats, strict=True)]).T
    return np.ascontiguousarray(table), list(barcodes)


class Replay:
    """Runs rows through the decider in chunks and counts what it decided.

    Feature extraction (classification, multi-reads) is the Python part of a decision and
    runs in `workers` processes for large inputs; the kernel runs here, in input order, so
    round-robin balancing gives the same chutes whatever the number of workers.
    """

    def __init__(
        self,
        decider: Decider,
        out: IO[str] | None = None,
        *,
        plan_path: Path | None = None,
        timezone: str | None = None,
        workers: int = 1,
    ) -> None:
        self.decider = decider
        self.counts = ReplayCounts()
        self._writer = csv.writer(out, lineterminator="\n") if out is not None else None
        if self._writer is not None:
            self._writer.writerow(["tracking_id", "barcode", "destination", "chute", "reason"])
        self._names = [d.name for d in decider.plan.plan.destinations]
        self._words = [r.word for r in Reason]
        self._plan_path = plan_path
        self._timezone = timezone
        self._workers = workers if plan_path is not None else 1

    def run(
        self, rows: Iterator[ScanRow], progress: Callable[[int], None] | None = None
    ) -> ReplayCounts:
        chunks = _chunked(rows, CHUNK_ROWS)
        first = next(chunks, None)
        if first is None:
            return self.counts
        if self._workers <= 1 or len(first) < CHUNK_ROWS:
            for chunk in itertools.chain([first], chunks):
                self._count(chunk, features_of(self.decider, _inputs(chunk)))
                if progress is not None:
                    progress(len(chunk))
            return self.counts
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        with ProcessPoolExecutor(
            self._workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(str(self._plan_path), self._timezone),
        ) as pool:
            pending: deque[tuple[list[ScanRow], Future[FeatureChunk]]] = deque()
            for chunk in itertools.chain([first], chunks):
                pending.append((chunk, pool.submit(_worker_features, _inputs(chunk))))
                while len(pending) > self._workers * 2:
                    self._finish(pending.popleft(), progress)
            while pending:
                self._finish(pending.popleft(), progress)
        return self.counts

    def _finish(
        self,
        item: tuple[list[ScanRow], Future[FeatureChunk]],
        progress: Callable[[int], None] | None,
    ) -> None:
        chunk, future = item
        self._count(chunk, future.result())
        if progress is not None:
            progress(len(chunk))

    def _count(self, rows: list[ScanRow], chunk: FeatureChunk) -> None:
        table, barcodes = chunk
        n = len(rows)
        col = {name: table[:, i] for i, name in enumerate(ItemFeatures._fields)}
        dest, chute, reason = self.decider.kernel.decide_batch(
            col["reason_in"].astype(np.int32),
            np.ascontiguousarray(col["pc"]),
            col["pc_digits"].astype(np.int32),
            col["service"].astype(np.int32),
            col["country"].astype(np.int32),
            np.ascontiguousarray(col["regex_mask"]),
            col["recirculations"].astype(np.int32),
            col["minute_of_day"].astype(np.int32),
            self.decider.state,
        )
        counts = self.counts
        counts.items += n
        names, words = self._names, self._words
        dest_names = [names[d] if d >= 0 else "" for d in dest.tolist()]
        reason_words = [words[r] for r in reason.tolist()]
        chutes = chute.tolist()
        counts.destinations.update(dest_names)
        counts.chutes.update(chutes)
        counts.reasons.update(reason_words)
        if self._writer is not None:
            self._writer.writerows(
                zip(
                    (row.tracking_id for row in rows),
                    barcodes,
                    dest_names,
                    chutes,
                    reason_words,
                    strict=True,
                )
            )


def _inputs(rows: list[ScanRow]) -> list[tuple[tuple[str, ...], int, int]]:
    return [(row.codes, row.recirculations, row.minute_of_day) for row in rows]


def _chunked(rows: Iterator[ScanRow], size: int) -> Iterator[list[ScanRow]]:
    chunk: list[ScanRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
