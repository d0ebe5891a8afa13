"""What-if replay: recorded scans through a sort plan, offline (`sorterd replay`).

The same path as the live daemon: `Decider.features` (classification, multi-read
resolution, the site's manifests and country) for every row, then the same numba
`decide_one`, run over chunks of rows by `decide_batch`. Chute state starts all usable (no
PLC), so round robin and least-loaded balancing spread items as they would on an empty line.
Codes are taken byte-exact between the `;` separators (no trimming: a GS1 FNC1 is the raw
byte 0x1D inside the cell); empty codes between separators are skipped.

SCANS.csv: header with `tracking_id,codes` (codes joined by `;`, `NOREAD` for a no-read),
optional `length_mm,width_mm,height_mm,weight_g,recirculations,time`. `time` (ISO 8601, or
`HH:MM[:SS]`, site local time) applies cut-offs; without it cut-offs are not applied.
Dimensions and weight are whole numbers, empty or 0 for "not measured"; a value above
65535 (more than a PLC register holds) is kept as 65536, out of every machine's range. One
row per line: a quoted field may not contain a line break (codes never do).

Large files are parsed and classified in worker processes, a block of lines each; the
kernel runs in this process over the blocks in input order, so round-robin balancing gives
the same chutes whatever the number of workers.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import multiprocessing
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, NamedTuple, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from sorter.config import ConfigError, Problem
from sorter.decide import NOT_MEASURED, Decider, Measures
from sorter.kernel import ItemFeatures
from sorter.plan import MAX_MEASURE, MEASURES
from sorter.ports import NOREAD, Reason

__all__ = [
    "BLOCK_LINES",
    "Layout",
    "Replay",
    "ReplayCounts",
    "ReplaySink",
    "ScanRow",
    "WorkerSetup",
    "features_of",
    "parse_header",
    "parse_lines",
    "read_blocks",
    "read_scans",
]

BLOCK_LINES = 16_384
MAX_PROBLEMS = 20
REQUIRED = ("tracking_id", "codes")


@dataclass(slots=True)
class ReplayCounts:
    items: int = 0
    destinations: Counter[str] = field(default_factory=Counter)
    chutes: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


class ScanRow(NamedTuple):
    """One row of SCANS.csv (a NamedTuple: a million of them are built per replay)."""

    line: int
    tracking_id: str
    codes: tuple[str, ...]
    recirculations: int
    minute_of_day: int
    dims: Measures = NOT_MEASURED


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the columns are, from the header line."""

    file: str
    width: int
    i_id: int
    i_codes: int
    i_recirc: int
    i_time: int
    i_measures: tuple[int, ...]  # column of each of MEASURES, -1 when absent
    timezone: str | None


def parse_header(line: str, file: str, timezone: str | None) -> Layout:
    header = [h.strip() for h in next(csv.reader([line]), [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ConfigError([Problem(file, "line 1", f"header lacks column(s) {', '.join(missing)}")])
    return Layout(
        file=file,
        width=len(header),
        i_id=header.index("tracking_id"),
        i_codes=header.index("codes"),
        i_recirc=header.index("recirculations") if "recirculations" in header else -1,
        i_time=header.index("time") if "time" in header else -1,
        i_measures=tuple(header.index(m) if m in header else -1 for m in MEASURES),
        timezone=timezone,
    )


def _minute_of_day(text: str, tz: ZoneInfo | None) -> int:
    text = text.strip()
    if not text:
        return -1
    if len(text) <= 8 and ":" in text:
        parts = text.split(":")
        hour, minute = int(parts[0]), int(parts[1])
        if not (0 <= hour < 24 and 0 <= minute < 60):
            raise ValueError(f"time {text!r} is not HH:MM[:SS]")
        return hour * 60 + minute
    stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is not None and tz is not None:
        stamp = stamp.astimezone(tz)
    return stamp.hour * 60 + stamp.minute


def _measure(text: str, column: str) -> int:
    text = text.strip()
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{column} {value} is negative (0 means not measured)")
    return min(value, MAX_MEASURE + 1)


def parse_lines(
    layout: Layout, first_line: int, lines: list[str]
) -> tuple[list[ScanRow], list[Problem]]:
    """Rows of a block of data lines; problems name the file and line."""
    tz = ZoneInfo(layout.timezone) if layout.timezone else None
    rows: list[ScanRow] = []
    problems: list[Problem] = []
    width, i_id, i_codes = layout.width, layout.i_id, layout.i_codes
    i_recirc, i_time = layout.i_recirc, layout.i_time
    measured = [
        (k, i, name)
        for k, (i, name) in enumerate(zip(layout.i_measures, MEASURES, strict=True))
        if i >= 0
    ]
    try:
        for line_no, row in enumerate(csv.reader(lines), start=first_line):
            if len(row) != width:
                if row:
                    problems.append(
                        Problem(
                            layout.file, f"line {line_no}", f"{len(row)} fields, header has {width}"
                        )
                    )
                continue
            try:
                recirc = int(row[i_recirc]) if i_recirc >= 0 and row[i_recirc] else 0
                minute = _minute_of_day(row[i_time], tz) if i_time >= 0 else -1
                dims = NOT_MEASURED
                if measured:
                    found = [0, 0, 0, 0]
                    for k, i, name in measured:
                        found[k] = _measure(row[i], name)
                    dims = (found[0], found[1], found[2], found[3])
            except (ValueError, OverflowError) as exc:
                # OverflowError: a year-1 or year-9999 stamp moved across midnight by the zone.
                problems.append(Problem(layout.file, f"line {line_no}", str(exc)))
                continue
            codes = tuple(c for c in row[i_codes].split(";") if c)
            if codes == (NOREAD,):
                codes = ()
            rows.append(ScanRow(line_no, row[i_id], codes, recirc, minute, dims))
    except csv.Error as exc:
        problems.append(Problem(layout.file, f"line {first_line}", f"CSV: {exc}"))
    return rows, problems


def read_blocks(
    path: Path, timezone: str | None = None, block_lines: int = BLOCK_LINES
) -> tuple[Layout, Iterator[tuple[int, list[str]]]]:
    """The header's layout and (first line number, lines) blocks of the data."""
    shown = str(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
        header = handle.readline()
    except OSError as exc:
        raise ConfigError([Problem(shown, "", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(shown, "line 1", f"not UTF-8 text: {exc.reason}")]) from exc
    try:
        layout = parse_header(header, shown, timezone)
    except ConfigError:
        handle.close()
        raise

    def blocks() -> Iterator[tuple[int, list[str]]]:
        line = 2
        with handle:
            while True:
                try:
                    lines = list(itertools.islice(handle, block_lines))
                except UnicodeDecodeError as exc:
                    raise ConfigError(
                        [Problem(shown, f"near line {line}", f"not UTF-8 text: {exc.reason}")]
                    ) from exc
                if not lines:
                    return
                yield line, lines
                line += len(lines)

    return layout, blocks()


def read_scans(path: Path, timezone: str | None = None) -> Iterator[ScanRow]:
    """Every row of a SCANS.csv in order; raises ConfigError naming file and line."""
    layout, blocks = read_blocks(path, timezone)
    problems: list[Problem] = []
    for first, lines in blocks:
        rows, bad = parse_lines(layout, first, lines)
        problems.extend(bad)
        if problems:
            break
        yield from rows
    if problems:
        raise ConfigError(problems[:MAX_PROBLEMS])


Inputs = list[tuple[tuple[str, ...], int, int, Measures]]


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a spawned worker needs to build the same decider as this process."""

    plan_path: str
    timezone: str | None
    site_country: str | None = None
    manifest_globs: tuple[str, ...] = ()
    identifiers: bool = False


FeatureChunk = tuple[npt.NDArray[np.int64], list[str]]
WorkerResult = tuple[list[str], npt.NDArray[np.int64], list[str], list[Problem]]

_worker_decider: Decider | None = None
_worker_identifiers = False


def _init_worker(setup: WorkerSetup) -> None:
    """Each worker process builds its own decider from the same plan and manifest files (a
    forked worker already has the parent's)."""
    global _worker_decider, _worker_identifiers  # noqa: PLW0603 - one per worker process
    _worker_identifiers = setup.identifiers
    if _worker_decider is not None:
        return
    from sorter.kernel import ChuteState  # noqa: PLC0415
    from sorter.manifest import ManifestSource  # noqa: PLC0415
    from sorter.plan import compile_plan, load_plan  # noqa: PLC0415

    plan = compile_plan(load_plan(setup.plan_path))
    _worker_decider = Decider(
        plan, ChuteState.for_plan(plan), setup.timezone, site_country=setup.site_country
    )
    if setup.manifest_globs:
        names = _worker_decider.destination_names
        _worker_decider.use_manifest(ManifestSource(setup.manifest_globs).build(names))
    _worker_decider.warm()


def _worker_block(layout: Layout, first_line: int, lines: list[str]) -> WorkerResult:
    assert _worker_decider is not None
    rows, problems = parse_lines(layout, first_line, lines)
    table, barcodes = features_of(_worker_decider, _inputs(rows), _worker_identifiers)
    return [row.tracking_id for row in rows], table, barcodes, problems


def features_of(decider: Decider, rows: Inputs, identifiers: bool = False) -> FeatureChunk:
    """Kernel input for a chunk of rows: an array with ItemFeatures' columns, barcodes.
    `identifiers`: the scans come from heads that always send AIM identifiers."""
    features = decider.features
    decided = [
        features(codes, recirc, minute, dims, identifiers) for codes, recirc, minute, dims in rows
    ]
    if not decided:
        return np.zeros((0, len(ItemFeatures._fields)), np.int64), []
    feats, barcodes = zip(*decided, strict=True)
    return np.array(feats, dtype=np.int64), list(barcodes)


def _inputs(rows: list[ScanRow]) -> Inputs:
    return [(row.codes, row.recirculations, row.minute_of_day, row.dims) for row in rows]


class ReplaySink(Protocol):
    """Something that wants every decision of a replay (the HTML report)."""

    def add(
        self,
        destinations: Sequence[str],
        chutes: Sequence[int],
        reasons: Sequence[str],
        minutes: Sequence[int | None] | None = None,
    ) -> None: ...


class Replay:
    """Runs scans through the decider and counts what it decided."""

    def __init__(
        self,
        decider: Decider,
        out: IO[str] | None = None,
        *,
        plan_path: Path | None = None,
        workers: int = 1,
        sink: ReplaySink | None = None,
        setup: WorkerSetup | None = None,
    ) -> None:
        self.decider = decider
        self.counts = ReplayCounts()
        self._writer = csv.writer(out, lineterminator="\n") if out is not None else None
        if self._writer is not None:
            self._writer.writerow(["tracking_id", "barcode", "destination", "chute", "reason"])
        self._names = decider.destination_names
        self._words = [r.word for r in Reason]
        if setup is None and plan_path is not None:
            setup = WorkerSetup(str(plan_path), None)
        self._setup = setup
        self._identifiers = setup.identifiers if setup is not None else False
        self._workers = workers if setup is not None else 1
        self._sink = sink

    def run(
        self, rows: Iterator[ScanRow], progress: Callable[[int], None] | None = None
    ) -> ReplayCounts:
        """Rows already parsed, in this process."""
        block: list[ScanRow] = []
        for row in itertools.chain(rows, [None]):
            if row is not None:
                block.append(row)
            if block and (row is None or len(block) == BLOCK_LINES):
                table, barcodes = features_of(self.decider, _inputs(block), self._identifiers)
                self._count([r.tracking_id for r in block], table, barcodes)
                if progress is not None:
                    progress(len(block))
                block = []
        return self.counts

    def run_file(
        self,
        path: Path,
        timezone: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ReplayCounts:
        """A SCANS.csv; raises ConfigError (file and line) for bad rows, after the run."""
        layout, blocks = read_blocks(path, timezone)
        first = next(blocks, None)
        if first is None:
            return self.counts
        if self._workers <= 1 or len(first[1]) < BLOCK_LINES:
            return self.run(read_scans(path, timezone), progress)
        problems: list[Problem] = []
        assert self._setup is not None
        setup = replace(self._setup, timezone=timezone)
        global _worker_decider  # noqa: PLW0603 - handed to forked workers
        if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
            # Forked workers inherit the warmed decider: no second numba start-up per
            # worker. Forking is safe only while this process runs no other thread.
            context = multiprocessing.get_context("fork")
            _worker_decider = self.decider
        else:
            context = multiprocessing.get_context("spawn")  # type: ignore[assignment]
        with ProcessPoolExecutor(
            self._workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(setup,),
        ) as pool:
            pending: deque[Future[WorkerResult]] = deque()
            for start, lines in itertools.chain([first], blocks):
                pending.append(pool.submit(_worker_block, layout, start, lines))
                while len(pending) > self._workers * 2:
                    self._finish(pending.popleft(), problems, progress)
            while pending:
                self._finish(pending.popleft(), problems, progress)
        _worker_decider = None
        if problems:
            raise ConfigError(problems[:MAX_PROBLEMS])
        return self.counts

    def _finish(
        self,
        future: Future[WorkerResult],
        problems: list[Problem],
        progress: Callable[[int], None] | None,
    ) -> None:
        ids, table, barcodes, bad = future.result()
        problems.extend(bad)
        if not problems:
            self._count(ids, table, barcodes)
        if progress is not None:
            progress(len(ids))

    def _count(
        self, tracking_ids: list[str], table: npt.NDArray[np.int64], barcodes: list[str]
    ) -> None:
        n = len(tracking_ids)
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
            col["destination"].astype(np.int32),
            np.ascontiguousarray(np.column_stack([col[m] for m in MEASURES]), dtype=np.int32),
            col["origin"].astype(np.int32),
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
        if self._sink is not None:
            minutes = col["minute_of_day"].tolist()
            self._sink.add(dest_names, chutes, reason_words, minutes)
        if self._writer is not None:
            self._writer.writerows(
                zip(tracking_ids, barcodes, dest_names, chutes, reason_words, strict=True)
            )
