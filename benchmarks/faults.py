"""The fault-injection suite (`tests/faults/`) as a results section: its table, generated.

`python -m benchmarks --only faults --fault-scale 10` runs `pytest tests/faults` at that
scale (faults last 4 s x scale; `make faults` is the same suite without a results file)
and records each fault's figures as the harness reports them (`tests.faults.harness
.Report`): items inducted, requests, decisions, confirmations, results, duplicates dropped,
lost (must be 0), recovery seconds. Not part of a plain `make bench`: at scale 10 it takes
over 20 minutes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from benchmarks.results import ROOT, Section

__all__ = ["Options", "report", "run"]

SCALE = 1.0


@dataclass(frozen=True, slots=True)
class Options:
    scale: float = SCALE
    select: str = ""  # pytest -k expression: a subset of the faults


class _Collect:
    """A pytest plugin that keeps the harness's reports when the session ends."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.failed = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed += 1

    def pytest_sessionfinish(self) -> None:
        harness = sys.modules.get("tests.faults.harness")
        for r in getattr(harness, "REPORTS", []):
            self.reports.append(dataclasses.asdict(r))


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    os.environ["SORTERD_FAULT_SCALE"] = f"{opts.scale:g}"
    collect = _Collect()
    args = [str(ROOT / "tests" / "faults"), "-p", "no:randomly", "-q", "-p", "no:cacheprovider"]
    if opts.select:
        args += ["-k", opts.select]
    code = pytest.main(args, plugins=[collect])
    section = Section(
        params={"scale": opts.scale, "select": opts.select, "rate_per_h": 20_000},
        details={"reports": collect.reports, "pytest_exit": int(code), "failed": collect.failed},
    )
    for r in collect.reports:
        fault = r["fault"].strip()
        for key in ("inducted", "requests", "decisions", "confirmations", "results",
                    "duplicates_dropped", "dropped_by_plc", "lost"):  # fmt: skip
            if key in r:
                section.add(f"{key}@{fault}", r[key], "items" if key != "lost" else "messages")
        if r.get("recover_s") is not None:
            section.add(f"recover_s@{fault}", r["recover_s"], "s", "recovery", better="lower")
    return section


def report(section: Section) -> list[str]:
    d = section.details
    lines = [f"scale {section.params['scale']:g}: pytest exit {d['pytest_exit']}, "
             f"{d['failed']} failed"]  # fmt: skip
    for r in d["reports"]:
        recover = "-" if r.get("recover_s") is None else f"{r['recover_s']:.2f}"
        lines.append(
            f"  {r['fault']:<24} inducted {r.get('inducted')} requests {r.get('requests')} "
            f"decisions {r.get('decisions')} results {r.get('results')} duplicates "
            f"{r.get('duplicates_dropped')} lost {r.get('lost')} recover {recover} s"
        )
    return lines
