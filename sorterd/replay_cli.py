"""`sorterd replay`: counts per destination, chute and reason; optional per-item CSV."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from sorter.config import Site, load_site
from sorter.decide import Decider
from sorter.kernel import ChuteState
from sorter.manifest import ManifestSource
from sorter.plan import SortPlan, compile_plan, load_plan
from sorter.replay import Replay, ReplayCounts, WorkerSetup
from sorterd.report import ReportData, write_report

__all__ = ["replay"]


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return max(sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b"")) - 1, 0)


def _table(title: str, counts: Counter[str] | Counter[int], total: int) -> Table:
    table = Table(title=title)
    table.add_column(title.rsplit(maxsplit=1)[-1].rstrip("s"))
    table.add_column("items", justify="right")
    table.add_column("share", justify="right")
    for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        table.add_row(str(key) if key != "" else "-", f"{n:,}", f"{n / total:.1%}")
    return table


def _decider(
    site: Site, use_manifest: bool, err: Console
) -> tuple[SortPlan, Decider, tuple[str, ...]]:
    """The site's plan, and a Decider on it with the manifests' pre-advice (unless left
    out); and the manifest globs used."""
    cfg = site.config
    plan = compile_plan(load_plan(site.plan_path))
    decider = Decider(
        plan, ChuteState.for_plan(plan), cfg.site.timezone, site_country=cfg.site.country
    )
    globs = tuple(site.manifest_globs) if use_manifest else ()
    if globs:
        # The live daemon's pre-advice, so that the what-if decides as the line would.
        manifest = ManifestSource(globs).build(decider.destination_names)
        for file_report in manifest.reports:
            if not file_report.readable:
                for problem in file_report.problems:
                    err.print(f"warning: {problem}", markup=False, highlight=False)
        decider.use_manifest(manifest)
        err.print(
            f"manifests: {len(manifest.reports)} file(s), {manifest.rows:,} rows",
            markup=False,
            highlight=False,
        )
    decider.warm()
    return plan.plan, decider, globs


def _run(runner: Replay, scans_path: Path, tz: str | None, err: Console) -> ReplayCounts:
    """The replay over the scans file, with a progress bar on a terminal."""
    if not err.is_terminal:
        return runner.run_file(scans_path, tz)
    # Refreshed by hand, not by rich's thread: replay forks its workers, which is only
    # safe while this process runs a single thread.
    with Progress(
        "replay",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        auto_refresh=False,
    ) as progress:
        task = progress.add_task("rows", total=_count_lines(scans_path))

        def advance(n: int) -> None:
            progress.advance(task, n)
            progress.refresh()

        return runner.run_file(scans_path, tz, advance)


def replay(
    config: str,
    scans: str,
    out: str | None,
    report: str | None = None,
    chute_capacity: int = 400,
    use_manifest: bool = True,
) -> int:
    site = load_site(config)
    cfg = site.config
    err = Console(stderr=True)
    plan, decider, globs = _decider(site, use_manifest, err)
    # The same reading of bare digits as the line: only when every head promises AIM
    # identifiers are bare codes never GS1.
    identifiers = all(s.symbology_identifiers for s in cfg.scanner)
    setup = WorkerSetup(
        str(site.plan_path), cfg.site.timezone, cfg.site.country, globs, identifiers
    )
    scans_path = Path(scans)
    report_data = ReportData() if report else None
    console = Console()
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        out_file = (
            stack.enter_context(open(out, "w", newline="", encoding="utf-8")) if out else None
        )
        runner = Replay(
            decider,
            out_file,
            workers=max(1, min(2, os.cpu_count() or 1)),
            sink=report_data,
            setup=setup,
        )
        counts = _run(runner, scans_path, cfg.site.timezone, err)
    elapsed_s = time.perf_counter() - t0
    if counts.items == 0:
        print(f"error: {scans}: no scans", file=sys.stderr)
        return 1
    console.print(
        f"{counts.items:,} items through plan {plan.name} in {elapsed_s:.2f} s "
        f"({counts.items / elapsed_s:,.0f} items/s)"
    )
    console.print(_table("by destination", counts.destinations, counts.items))
    console.print(_table("by reason", counts.reasons, counts.items))
    console.print(_table("by chute", counts.chutes, counts.items))
    if out:
        console.print(f"decisions written to {out}")
    if report and report_data is not None:
        write_report(
            Path(report),
            report_data,
            plan,
            title=f"Replay of {scans_path.name} through {plan.name}",
            scans_file=str(scans_path),
            chute_capacity=chute_capacity,
        )
        console.print(f"report written to {report}")
    return 0
