"""Manifests at hub scale: load, resident memory, lookups; and what `sorterd run` holds.

One CSV file of N rows (default 1,000,000; `--manifest-rows 5000000` for hub scale) with
realistic barcode shapes (S10, UPS, DHL, LP, SSCC) made unique by their serials, a Moroccan
postcode, country, weight. Four ways to hold it, each in a fresh process of its own that
the benchmark watches from outside (/proc/PID/status):

- `sorterd`: the numba index (`sorter.manifest.load_manifests`);
- `dict_tuples`: `csv.reader` into a dict of barcode -> tuple of the other fields, what a
  Python programmer would write for speed;
- `sqlite`: a file database beside the CSV, table `WITHOUT ROWID` keyed by barcode
  (the primary key is the index), loaded with one `executemany` in one transaction,
  looked up by primary key; its data lives on disk and in the page cache, not in the
  process;
- `dictreader`: `csv.DictReader` into a dict of barcode -> dict of six strings (the
  heaviest; the baseline this benchmark used to have).

Per way: load time; resident memory per row once loaded (VmRSS after minus VmRSS before,
after a gc); the peak during the load (VmHWM minus VmRSS before); one lookup at a time from
Python (p50/p99), and lookups per second one at a time; for sorterd also the batch lookup
(`find_batch`). Queries: half present, half near-misses (a present barcode + "X"), random
order.

Then the daemon: `sorterd run` as its own process (the line's simulators and broker as in
the line benchmark, no traffic), once without a manifest and once with this file; from
outside, its VmRSS once online (+2 s) and its VmHWM: (with - without) / rows. The load as
the daemon does it: its own log line `manifests loaded` (ms), and the start-up with minus
without (noisier: it holds the whole start-up's jitter).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import PLAN, percentiles_us, traffic_codes
from benchmarks.daemon import (
    PREFIX,
    daemon_process,
    log_events,
    memory_kb,
    observing,
    wait_for,
)
from benchmarks.results import Section, broker_info
from drivers.broker import LocalBroker
from simulators.line import DEMO_PARAMS, SimulatedLine
from simulators.manifests import write_manifest
from sorter.plan import load_plan
from sorterd.demo import write_site

__all__ = ["QUICK", "Options", "main", "report", "run"]

ROWS = 1_000_000
HUB_ROWS = 5_000_000
LOOKUPS = 1_000_000
SINGLE_LOOKUPS = 200_000
KINDS = ("sorterd", "dict_tuples", "sqlite", "dictreader")
LABELS = {
    "sorterd": "sorterd index (numba)",
    "dict_tuples": "csv.reader -> dict of tuples",
    "sqlite": "SQLite file, barcode primary key",
    "dictreader": "csv.DictReader -> dict of dicts",
}
SETTLE_S = 2.0


@dataclass(frozen=True, slots=True)
class Options:
    rows: int = ROWS
    lookups: int = LOOKUPS
    single_lookups: int = SINGLE_LOOKUPS
    daemon: bool = True  # also measure `sorterd run` with and without the manifest


QUICK = Options(rows=100_000, lookups=100_000, single_lookups=50_000)


def _rows(n: int) -> Iterator[tuple[str, ...]]:
    """Realistic shapes (S10, UPS, DHL, LP, SSCC) made unique by their serial digits."""
    rng = random.Random(7)
    templates = [c[0] for c in traffic_codes(20_000, seed=9) if c and len(c[0]) <= 32]
    for i in range(n):
        code = templates[i % len(templates)]
        serial = f"{i:09d}"
        code = code[:2] + serial + code[11:] if code[:2].isalpha() else serial + code[9:]
        yield (code, f"{rng.randint(10000, 99999)}", "MA", "", "", str(rng.randint(50, 30000)))


def write_files(folder: Path, opts: Options) -> tuple[Path, Path, int]:
    """The manifest CSV and the query list (one barcode a line); returns the hit count."""
    path = folder / "manifest.csv"
    rng = random.Random(3)
    n_hits = opts.lookups // 2
    wanted = sorted(rng.randrange(opts.rows) for _ in range(n_hits))
    hits: list[str] = []

    def rows() -> Iterator[tuple[str, ...]]:
        k = 0
        for i, row in enumerate(_rows(opts.rows)):
            while k < len(wanted) and wanted[k] == i:
                hits.append(row[0])
                k += 1
            yield row

    write_manifest(path, rows())
    queries = hits + [h + "X" for h in hits]  # half present, half near-misses
    rng.shuffle(queries)
    query_path = folder / "queries.txt"
    query_path.write_text("\n".join(queries) + "\n")
    return path, query_path, len(hits)


# ---------------------------------------------------------------------------- the workers


def _load(kind: str, csv_path: Path, db_path: Path) -> tuple[Any, Callable[[str], Any], int]:
    """(what holds the rows, one lookup, rows) for one way of holding the manifest."""
    if kind == "sorterd":
        from sorter.manifest import load_manifests

        manifest = load_manifests([csv_path], [])
        return manifest, manifest.lookup, manifest.rows
    if kind == "dict_tuples":
        with csv_path.open(newline="") as f:
            reader = csv.reader(f)
            next(reader)
            table = {row[0]: tuple(row[1:]) for row in reader}
        return table, table.get, len(table)
    if kind == "dictreader":
        with csv_path.open(newline="") as f:
            big = {row["barcode"]: row for row in csv.DictReader(f)}
        return big, big.get, len(big)
    if kind == "sqlite":
        db_path.unlink(missing_ok=True)
        conn = sqlite3.connect(db_path)
        conn.execute(
            "CREATE TABLE manifest (barcode TEXT PRIMARY KEY, postcode TEXT, country TEXT,"
            " service TEXT, customs TEXT, weight_g TEXT) WITHOUT ROWID"
        )
        with csv_path.open(newline="") as f, conn:
            reader = csv.reader(f)
            next(reader)
            conn.executemany("INSERT OR REPLACE INTO manifest VALUES (?, ?, ?, ?, ?, ?)", reader)
        query = (
            "SELECT postcode, country, service, customs, weight_g FROM manifest WHERE barcode = ?"
        )

        def lookup(barcode: str) -> Any:
            return conn.execute(query, (barcode,)).fetchone()

        (rows,) = conn.execute("SELECT count(*) FROM manifest").fetchone()
        return conn, lookup, int(rows)
    raise ValueError(f"unknown manifest kind {kind!r}")


def worker(kind: str, csv_path: Path, query_path: Path, db_path: Path, single: int) -> None:
    """One way of holding the manifest, driven line by line on stdin by the parent, which
    reads this process's memory between the steps."""
    if kind == "sorterd":
        from sorter.manifest import warm

        warm()
    queries = query_path.read_text().splitlines()
    gc.collect()
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    holder, lookup, rows = _load(kind, csv_path, db_path)
    load_s = time.perf_counter() - t0
    gc.collect()
    print(json.dumps({"load_s": load_s, "rows": rows}), flush=True)
    sys.stdin.readline()

    from sorter.runtime import tune_gc

    tune_gc()  # as the daemon runs
    found = sum(1 for q in queries if lookup(q) is not None)
    clock = time.perf_counter_ns
    samples = []
    for q in queries[:single]:
        t0 = clock()
        lookup(q)
        samples.append(clock() - t0)

    def loop() -> None:
        for q in queries:
            lookup(q)

    best = min(_timed(loop) for _ in range(3))
    out: dict[str, Any] = {
        "found": found,
        "one_lookup_us": percentiles_us(samples),
        "loop_lookups_per_s": len(queries) / best,
    }
    if kind == "sorterd":
        from sorter.manifest import encode_keys

        keys = encode_keys(queries)
        holder.find_batch(keys[:8])
        best = min(_timed(lambda: holder.find_batch(keys)) for _ in range(3))
        out["batch_lookups_per_s"] = len(queries) / best
    if kind == "sqlite":
        out["db_bytes"] = db_path.stat().st_size
    print(json.dumps(out), flush=True)
    sys.stdin.readline()


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(kind: str, csv_path: Path, query_path: Path, single: int) -> dict[str, Any]:
    """Run one worker and read its memory from outside between its steps."""
    db_path = csv_path.with_name("manifest.sqlite")
    command = [sys.executable, "-m", "benchmarks.manifest", "--worker", kind,
               str(csv_path), str(query_path), str(db_path), str(single)]  # fmt: skip
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None

        def step() -> str:
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            return proc.stdout.readline()

        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"manifest worker {kind} did not start")
        idle = memory_kb(proc.pid)
        loaded = json.loads(step())
        after = memory_kb(proc.pid)
        looked = json.loads(step())
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait(60)
    db_path.unlink(missing_ok=True)
    rows = loaded["rows"]
    return {
        "kind": kind,
        "rows": rows,
        "load_s": loaded["load_s"],
        "idle_rss_kb": idle["VmRSS"],
        "rss_kb": after["VmRSS"],
        "hwm_kb": after["VmHWM"],
        "rss_b_per_row": (after["VmRSS"] - idle["VmRSS"]) * 1024 / rows,
        "peak_b_per_row": (after["VmHWM"] - idle["VmRSS"]) * 1024 / rows,
        **looked,
    }


# ---------------------------------------------------------------------------- the daemon


async def daemon_memory(csv_path: Path, rows: int) -> dict[str, Any]:
    """`sorterd run` without and with the manifest, measured from outside."""
    plan = load_plan(PLAN)
    out: dict[str, Any] = {}
    async with (
        LocalBroker() as broker,
        SimulatedLine(sorted(plan.machine_chutes), params=DEMO_PARAMS, seed=5) as line,
        observing(broker) as obs,
    ):
        out["broker"] = broker_info(broker.kind)
        assert line.scanner is not None
        assert line.scanner.port is not None
        for label, manifest in (("without", None), ("with", str(csv_path))):
            with tempfile.TemporaryDirectory(prefix="sorterd-bench-") as tmp:
                site = write_site(
                    Path(tmp),
                    plc_port=line.plc.port,
                    scanner_port=line.scanner.port,
                    mqtt_url=broker.url,
                    plan=PLAN,
                    prefix=PREFIX,
                    manifests=manifest,
                    manifest_poll_s=3600,
                )
                log = Path(tmp) / "daemon.log"
                async with daemon_process(site, obs, log=log) as daemon:
                    obs.stats.clear()
                    await wait_for(lambda: obs.stats, 30)
                    manifest_rows = obs.stats[-1].get("manifest", {}).get("rows", 0)
                    await asyncio.sleep(SETTLE_S)
                    memory = memory_kb(daemon.pid)
                    out[label] = {
                        "startup_s": daemon.startup_s,
                        "rss_kb": memory["VmRSS"],
                        "hwm_kb": memory["VmHWM"],
                        "sampled_peak_kb": daemon.memory.peak_kb,
                        "manifest_rows": manifest_rows,
                    }
                loaded = log_events(log, "manifests loaded")
                if loaded:
                    out[label]["manifest_load_s"] = float(loaded[0].get("ms", 0)) / 1000
    if out["with"]["manifest_rows"] != rows:
        raise RuntimeError(f"the daemon loaded {out['with']['manifest_rows']} rows, not {rows}")
    w, wo = out["with"], out["without"]
    out["rss_b_per_row"] = (w["rss_kb"] - wo["rss_kb"]) * 1024 / rows
    out["peak_b_per_row"] = (w["hwm_kb"] - wo["hwm_kb"]) * 1024 / rows
    out["startup_diff_s"] = w["startup_s"] - wo["startup_s"]
    out["load_s"] = w.get("manifest_load_s", out["startup_diff_s"])
    return out


# ---------------------------------------------------------------------------- the run


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    with tempfile.TemporaryDirectory(prefix="sorterd-bench-") as tmp:
        csv_path, query_path, n_hits = write_files(Path(tmp), opts)
        size_mb = csv_path.stat().st_size / 1e6
        ways = {}
        for kind in KINDS:
            ways[kind] = measure(kind, csv_path, query_path, opts.single_lookups)
            if ways[kind]["found"] != n_hits:
                raise AssertionError(f"{kind} found {ways[kind]['found']} of {n_hits}")
            print(f"  {kind:<12} " + _way_line(ways[kind]), flush=True)
        daemon = asyncio.run(daemon_memory(csv_path, opts.rows)) if opts.daemon else None
    section = Section(
        params={
            "rows": opts.rows,
            "file_mb": round(size_mb, 1),
            "lookups": opts.lookups,
            "single_lookups": opts.single_lookups,
        },
        details={"ways": ways, "daemon": daemon},
    )
    add_figures(section, ways, daemon)
    return section


def add_figures(
    section: Section, ways: dict[str, dict[str, Any]], daemon: dict[str, Any] | None
) -> None:
    ours = ways["sorterd"]
    others = [k for k in KINDS if k != "sorterd"]

    def add(name: str, key: str, unit: str, label: str, **kw: Any) -> None:
        section.add(
            name,
            ours[key],
            unit,
            label,
            baselines={k: ways[k][key] for k in others},
            baseline_labels={k: LABELS[k] for k in others},
            **kw,
        )

    add("load_s", "load_s", "s", "load", better="lower", target="<= 5 s at 5 M rows")
    add("rss_b_per_row", "rss_b_per_row", "B/row", "resident once loaded", better="lower",
        target="<= 64 B/row")  # fmt: skip
    add("peak_b_per_row", "peak_b_per_row", "B/row", "resident at the peak of the load",
        better="lower")  # fmt: skip
    for q in ("p50", "p99"):
        section.add(
            f"one_lookup_us_{q}",
            ours["one_lookup_us"][q],
            "us",
            f"one lookup from Python, {q}",
            better="lower",
            target="<= 5 us" if q == "p99" else "",
            baselines={k: ways[k]["one_lookup_us"][q] for k in others},
            baseline_labels={k: LABELS[k] for k in others},
        )
    add("loop_lookups_per_s", "loop_lookups_per_s", "lookups/s", "lookups one at a time",
        better="higher")  # fmt: skip
    section.add(
        "batch_lookups_per_s",
        ours["batch_lookups_per_s"],
        "lookups/s",
        "batch lookups (find_batch)",
        better="higher",
        target=">= 5 M/s",
        baselines={"dict_tuples": ways["dict_tuples"]["loop_lookups_per_s"]},
        baseline_labels={"dict_tuples": "dict of tuples, one .get() at a time"},
    )
    sqlite = ways["sqlite"]
    section.add("sqlite_disk_b_per_row", sqlite["db_bytes"] / sqlite["rows"], "B/row",
                "SQLite database file on disk")  # fmt: skip
    if daemon is not None:
        _add_daemon_figures(section, ways, daemon)


def _add_daemon_figures(
    section: Section, ways: dict[str, dict[str, Any]], daemon: dict[str, Any]
) -> None:
    """`sorterd run`'s memory and load time with the manifest, against the baselines'."""
    base = {k: ways[k]["rss_b_per_row"] for k in ("dict_tuples", "sqlite")}
    labels = {k: LABELS[k] + ", resident once loaded" for k in base}
    section.add(
        "daemon_rss_b_per_row",
        daemon["rss_b_per_row"],
        "B/row",
        "sorterd run: VmRSS with the manifest - without, per row",
        better="lower",
        target="<= 64 B/row",
        baselines=base,
        baseline_labels=labels,
    )
    section.add(
        "daemon_peak_b_per_row",
        daemon["peak_b_per_row"],
        "B/row",
        "sorterd run: VmHWM with the manifest - without, per row",
        better="lower",
        baselines={k: ways[k]["peak_b_per_row"] for k in ("dict_tuples", "sqlite")},
        baseline_labels={k: LABELS[k] + ", peak of the load" for k in base},
    )
    section.add(
        "daemon_load_s",
        daemon["load_s"],
        "s",
        "sorterd run: the load, as its log line `manifests loaded` times it",
        better="lower",
        baselines={k: ways[k]["load_s"] for k in ("dict_tuples", "sqlite")},
        baseline_labels={k: LABELS[k] + ", load" for k in base},
    )
    section.add("daemon_rss_mb_without", daemon["without"]["rss_kb"] / 1024, "MB",
                "sorterd run without a manifest, VmRSS")  # fmt: skip
    section.add("daemon_rss_mb_with", daemon["with"]["rss_kb"] / 1024, "MB",
                "sorterd run with the manifest, VmRSS")  # fmt: skip


def _way_line(w: dict[str, Any]) -> str:
    one = w["one_lookup_us"]
    text = (
        f"load {w['load_s']:7.2f} s  resident {w['rss_b_per_row']:6.1f} B/row  "
        f"peak {w['peak_b_per_row']:6.1f} B/row  lookup p50 {one['p50']:.2f} us p99 "
        f"{one['p99']:.2f} us  {w['loop_lookups_per_s'] / 1e6:.2f} M/s one at a time"
    )
    if "batch_lookups_per_s" in w:
        text += f", {w['batch_lookups_per_s'] / 1e6:.1f} M/s batch"
    return text


def report(section: Section) -> list[str]:
    p = section.params
    ways = section.details["ways"]
    lines = [f"{p['rows']:,} rows ({p['file_mb']:.0f} MB of CSV)"]
    lines += [f"  {kind:<12} {_way_line(ways[kind])}" for kind in KINDS]
    sqlite = ways["sqlite"]
    lines.append(f"  sqlite file on disk: {sqlite['db_bytes'] / sqlite['rows']:.0f} B/row")
    d = section.details.get("daemon")
    if d:
        ours, tuples = ways["sorterd"], ways["dict_tuples"]
        lines += [
            f"sorterd run: VmRSS {d['without']['rss_kb'] / 1024:.0f} MB without the manifest, "
            f"{d['with']['rss_kb'] / 1024:.0f} MB with it: {d['rss_b_per_row']:.1f} B/row "
            f"(target <= 64); at the peak of the load {d['peak_b_per_row']:.1f} B/row",
            f"sorterd run: start-up {d['without']['startup_s']:.2f} s without, "
            f"{d['with']['startup_s']:.2f} s with; its log times the load at "
            f"{d['load_s']:.2f} s; "
            f"dict of tuples loads in {tuples['load_s']:.2f} s "
            f"({tuples['load_s'] / d['load_s']:.1f} x the daemon's load, "
            f"{tuples['load_s'] / ours['load_s']:.1f} x the index's own in its process)",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.manifest")
    parser.add_argument("--worker", nargs=5, metavar=("KIND", "CSV", "QUERIES", "DB", "SINGLE"))
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--no-daemon", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        kind, csv_path, query_path, db_path, single = args.worker
        worker(kind, Path(csv_path), Path(query_path), Path(db_path), int(single))
        return 0
    print("\n".join(report(run(Options(rows=args.rows, daemon=not args.no_daemon)))))
    print("(no results file: `python -m benchmarks --only manifest` writes one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
