"""`python -m benchmarks [--only NAME,...] [options]`: run benchmarks, print their figures
and write them to `benchmarks/results/<YYYY-MM-DD>-<shortcommit>.json`.

NAME is one of: decide, replay, manifest, journal, rtu, line, feeds (all of them by
default), or faults (the fault-injection suite, only when named: it is long), before (the
decision and line figures of this commit against an earlier one, `--before REV`),
optimise (`sorterd plan optimise`), archive (PostgreSQL and mosquitto needed), hub
(several lines, each its own `sorterd run`, on one broker), web (the web console in
headless Chromium; mosquitto, chromium and chromedriver needed), failover (the connected
node of a NATS cluster killed; nats-server needed) or soak (45 minutes at 200,000 items/h,
sampled every minute), each only when named. The live
manifest's lookups and memory at hub scale run on their own:
`python -m benchmarks.feeds_index`.
Names may also be given as plain arguments (`python -m benchmarks decide line`).
`--quick` runs every benchmark at a small scale, to check that it works; its figures are
recorded with their sizes but are not the published ones.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import results

__all__ = ["main"]

DEFAULT = ("decide", "replay", "manifest", "journal", "rtu", "line", "feeds")
KNOWN = (
    *DEFAULT, "faults", "before", "optimise", "archive", "hub", "web", "failover", "soak",
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run")
    p.add_argument("--only", default="", help="comma-separated benchmarks to run")
    p.add_argument("--quick", action="store_true", help="small sizes: check, do not publish")
    p.add_argument("--no-write", action="store_true", help="print only, no results file")
    p.add_argument("--results-dir", type=Path, default=results.RESULTS_DIR)
    g = p.add_argument_group("manifest")
    g.add_argument("--manifest-rows", type=int, help="rows (default 1,000,000)")
    g.add_argument("--hub", action="store_true", help="5,000,000 manifest rows")
    g.add_argument("--no-daemon-memory", action="store_true", help="skip `sorterd run` memory")
    g = p.add_argument_group("line and rtu")
    g.add_argument("--line-rates", help="items/h, comma-separated (default 20k,40k,100k,200k)")
    g.add_argument("--line-duration", type=float, help="seconds of induction per rate")
    g.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the reference host (feeds: the run of the line without the feeds)",
    )
    g.add_argument("--scans-first", action="store_true", help="line: every scan before its request")
    g.add_argument("--rtu-bauds", help="comma-separated (default 19200,115200)")
    g.add_argument("--rtu-duration", type=float, help="seconds at 20,000 items/h per baud")
    g = p.add_argument_group("feeds")
    g.add_argument("--feeds-rows", type=float, help="rows/s asked for (default 50,000)")
    g.add_argument("--feeds-duration", type=float, help="seconds of stream and line (default 30)")
    g = p.add_argument_group("journal")
    g.add_argument("--journal-dir", type=Path, help="folder on the disk to fsync on")
    g = p.add_argument_group("before")
    g.add_argument("--before", help="the earlier commit (default: 8314da3, before the house)")
    g.add_argument("--before-rounds", type=int, help="alternations of before and after")
    g.add_argument("--before-no-line", action="store_true", help="decision figures only")
    g = p.add_argument_group("archive")
    g.add_argument("--archive-rows", type=int, help="rows for trace (default 5,000,000)")
    g.add_argument(
        "--archive-trace-only", action="store_true", help="trace and report only (archive-trace)"
    )
    g.add_argument(
        "--archive-fresh",
        action="store_true",
        help="generate the trace archive again, not the cached one (benchmarks/archive_gen.py)",
    )
    g = p.add_argument_group("soak")
    g.add_argument("--soak-minutes", type=float, help="minutes of induction (default 45)")
    g.add_argument("--soak-rate", type=float, help="items/h (default 200,000)")
    g = p.add_argument_group("faults")
    g.add_argument("--fault-scale", type=float, default=1.0)
    g.add_argument("--fault-select", default="", help="pytest -k expression")
    return p


def _manifest_changes(args: argparse.Namespace, module: Any) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.hub:
        changes["rows"] = 5_000_000
    if args.manifest_rows:
        changes["rows"] = args.manifest_rows
    if args.no_daemon_memory:
        changes["daemon"] = False
    return changes


def _line_changes(args: argparse.Namespace, module: Any) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.quick:
        changes.update(rates=module.QUICK_RATES, duration_s=module.QUICK_DURATION_S)
    if args.line_rates:
        changes["rates"] = tuple(float(r) for r in args.line_rates.split(","))
    if args.line_duration:
        changes["duration_s"] = args.line_duration
    if args.no_reference:
        changes["reference"] = False
    if args.scans_first:
        changes["scans_first"] = True
    return changes


def _rtu_changes(args: argparse.Namespace, module: Any) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.rtu_bauds:
        changes["bauds"] = tuple(int(b) for b in args.rtu_bauds.split(","))
    if args.rtu_duration:
        changes["duration_s"] = args.rtu_duration
    if args.no_reference:
        changes["reference"] = False
    return changes


def _feeds_changes(args: argparse.Namespace, module: Any) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.feeds_rows:
        changes["rows_per_s"] = args.feeds_rows
    if args.feeds_duration:
        changes["duration_s"] = args.feeds_duration
    if args.no_reference:
        changes["baseline"] = False
    return changes


def _before_changes(args: argparse.Namespace, module: Any) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.before:
        changes["before"] = args.before
    if args.before_rounds:
        changes["rounds"] = args.before_rounds
    if args.before_no_line:
        changes["line"] = False
    return changes


def _archive_changes(args: argparse.Namespace, module: Any) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.archive_rows:
        changes["rows"] = args.archive_rows
    if args.archive_trace_only:
        changes["ingest"] = False
    if args.archive_fresh:
        changes["fresh"] = True
    return changes


# What each benchmark takes from the command line; the others take nothing but --quick.
_CHANGES: dict[str, Callable[[argparse.Namespace, Any], dict[str, Any]]] = {
    "manifest": _manifest_changes,
    "line": _line_changes,
    "feeds": _feeds_changes,
    "rtu": _rtu_changes,
    "journal": lambda args, _: {"journal_dir": args.journal_dir} if args.journal_dir else {},
    "faults": lambda args, _: {"scale": args.fault_scale, "select": args.fault_select},
    "before": _before_changes,
    "archive": _archive_changes,
    "soak": lambda args, _: {
        k: v for k, v in (("minutes", args.soak_minutes), ("rate", args.soak_rate)) if v
    },
}


def _options(name: str, module: Any, args: argparse.Namespace) -> Any:
    """The module's Options from the command line (its QUICK preset under --quick)."""
    import dataclasses

    base = module.QUICK if args.quick and hasattr(module, "QUICK") else module.Options()
    changes = _CHANGES[name](args, module) if name in _CHANGES else {}
    return dataclasses.replace(base, **changes) if changes else base


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    names = [n for n in args.only.split(",") if n] + list(args.names)
    names = names or list(DEFAULT)
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(KNOWN)}")
        return 2
    command = "python -m benchmarks " + shlex.join(argv)
    c = results.commit()
    print(f"machine: {results.describe_machine(results.machine())}")
    print(f"commit: {c.short}{' (dirty)' if c.dirty else ''}   versions: {results.versions()}")
    broker = results.broker_info(results.default_broker_kind())
    print(f"broker: {broker['kind']} {broker.get('version', '')}")
    print(f"date: {results.now_iso()}   load average: {results.load_avg()}")
    sections: dict[str, dict[str, Any]] = {}
    path: Path | None = None
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        opts = _options(name, module, args)
        print(f"\n== {name}  {opts}", flush=True)
        started, before = results.now_iso(), results.load_avg()
        t0 = time.perf_counter()
        section = module.run(opts)
        seconds = time.perf_counter() - t0
        section.params["quick"] = bool(args.quick)
        for line in module.report(section):
            print(line)
        print(f"({seconds:.0f} s)", flush=True)
        key = module.section_name(opts) if hasattr(module, "section_name") else name
        sections[key] = results.section_json(
            section, command=command, started=started, seconds=seconds, before=before
        )
        if not args.no_write:
            # Written after each benchmark: a long run that fails later keeps what it has.
            path = results.write(sections, broker=broker, folder=args.results_dir)
        # What one benchmark leaves (millions of objects) must not be collected during the
        # next one's timed part: collected there, it paused the line benchmark for 1 s.
        del section
        gc.collect()
    if path is not None:
        shown = path.relative_to(results.ROOT) if path.is_relative_to(results.ROOT) else path
        print(f"\nresults: {shown}")
        print("tables: python -m benchmarks.report (make bench-report)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
