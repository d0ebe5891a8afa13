"""Replay of 1,000,000 recorded scans end to end: read the CSV, classify, decide, count.

The scans are the traffic generator's labels (100,000 distinct items written ten times
with fresh tracking ids; nothing is cached by code, so repeats cost the same). Timed as
`sorterd replay` runs it (worker processes for parsing and classification, the kernel in
order in the parent), against two baselines from the same run: the same replay in one
process, and Python's csv module merely reading the file.
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import PLAN, decider, traffic_codes
from benchmarks.results import Section
from sorter.replay import Replay

__all__ = ["QUICK", "Options", "report", "run"]

ROWS = 1_000_000
DISTINCT = 100_000


@dataclass(frozen=True, slots=True)
class Options:
    rows: int = ROWS


QUICK = Options(rows=100_000)


def write_scans(path: Path, rows: int = ROWS) -> None:
    codes = traffic_codes(DISTINCT, seed=4)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tracking_id", "codes", "recirculations"])
        for i in range(rows):
            w.writerow([i + 1, ";".join(codes[i % DISTINCT]) or "NOREAD", 0])


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    rows = opts.rows
    with tempfile.TemporaryDirectory(prefix="sorterd-bench-") as tmp:
        scans = Path(tmp) / "scans.csv"
        write_scans(scans, rows)
        t0 = time.perf_counter()
        with scans.open(newline="") as f:
            n_read = sum(1 for _ in csv.reader(f)) - 1
        csv_s = time.perf_counter() - t0

        workers = max(1, min(2, os.cpu_count() or 1))
        t0 = time.perf_counter()
        counts = Replay(decider(), plan_path=PLAN, workers=workers).run_file(scans)
        parallel_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        single = Replay(decider()).run_file(scans)
        single_s = time.perf_counter() - t0
    assert counts.items == single.items == n_read == rows
    assert counts.reasons == single.reasons
    section = Section(
        params={"rows": rows, "distinct": DISTINCT, "workers": workers},
        details={"replay_s": parallel_s, "one_process_s": single_s, "csv_read_s": csv_s},
    )
    section.add(
        "replay_s",
        parallel_s,
        "s",
        f"replay of {rows:,} scans end to end, {workers} workers",
        better="lower",
        target="<= 10 s at 1 M scans",
        baselines={"one_process": single_s, "csv_read": csv_s},
        baseline_labels={
            "one_process": "the same replay in one process",
            "csv_read": "Python's csv module only reading the file",
        },
    )
    return section


def report(section: Section) -> list[str]:
    p, r = section.params, section.details
    return [
        f"replay of {p['rows']:,} scans, {p['workers']} workers: {r['replay_s']:6.2f} s"
        "   (target <= 10 s at 1 M)",
        f"same replay in one process:           {r['one_process_s']:6.2f} s"
        f"   (workers: {r['one_process_s'] / r['replay_s']:.2f} x faster)",
        f"csv module reading the file only:     {r['csv_read_s']:6.2f} s"
        f"   (replay = {r['replay_s'] / r['csv_read_s']:.1f} x a bare read)",
    ]
