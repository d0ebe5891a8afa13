"""Manifests at hub scale: load 5,000,000 rows, memory per row, lookups.

Baseline, measured in the same run on the same file: Python's csv module into a dict
(barcode -> row), the obvious way to write it.
"""

from __future__ import annotations

import csv
import gc
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import percentiles_us, traffic_codes
from simulators.manifests import write_manifest
from sorter.manifest import encode_keys, load_manifests
from sorter.manifest import warm as warm_manifest
from sorter.runtime import tune_gc

ROWS = 5_000_000
LOOKUPS = 1_000_000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        import os

        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rows(n: int) -> list[tuple[str, ...]]:
    """Realistic shapes (S10, UPS, DHL, LP, SSCC) made unique by their serial digits."""
    rng = random.Random(7)
    templates = [c[0] for c in traffic_codes(20_000, seed=9) if c and len(c[0]) <= 32]
    out = []
    for i in range(n):
        code = templates[i % len(templates)]
        serial = f"{i:09d}"
        code = code[:2] + serial + code[11:] if code[:2].isalpha() else serial + code[9:]
        out.append(
            (code, f"{rng.randint(10000, 99999)}", "MA", "", "", str(rng.randint(50, 30000)))
        )
    return out


def run() -> dict[str, Any]:
    warm_manifest()
    with tempfile.TemporaryDirectory(prefix="sorterd-bench-") as tmp:
        path = Path(tmp) / "manifest.csv"
        rows = _rows(ROWS)
        write_manifest(path, rows)
        size_mb = path.stat().st_size / 1e6

        gc.collect()
        before = _rss_bytes()
        t0 = time.perf_counter()
        manifest = load_manifests([path], [])
        load_s = time.perf_counter() - t0
        gc.collect()
        ours_rss = _rss_bytes() - before

    assert manifest.rows == ROWS
    rng = random.Random(3)
    hits = [rows[rng.randrange(ROWS)][0] for _ in range(LOOKUPS // 2)]
    queries = hits + [h + "X" for h in hits]  # half present, half near-misses
    rng.shuffle(queries)
    keys = encode_keys(queries)
    manifest.find_batch(keys[:8])
    best = min(_timed(lambda: manifest.find_batch(keys)) for _ in range(3))
    found = manifest.find_batch(keys)
    assert int((found >= 0).sum()) == len(hits)

    tune_gc()
    clock = time.perf_counter_ns
    samples = []
    for q in queries[:200_000]:
        t0 = clock()
        manifest.lookup(q)
        samples.append(clock() - t0)
    # The baseline last: freeing its 3 GB of dicts disturbs whatever runs after it.
    with tempfile.TemporaryDirectory(prefix="sorterd-bench-") as tmp:
        path = Path(tmp) / "manifest.csv"
        write_manifest(path, rows)
        gc.collect()
        before = _rss_bytes()
        t0 = time.perf_counter()
        table: dict[str, dict[str, str]] = {}
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                table[row["barcode"]] = row
        baseline_s = time.perf_counter() - t0
        gc.collect()
        baseline_rss = _rss_bytes() - before
        del table
        gc.collect()

    return {
        "rows": ROWS,
        "file_mb": size_mb,
        "load_s": load_s,
        "baseline_load_s": baseline_s,
        "bytes_per_row": manifest.nbytes() / ROWS,
        "rss_per_row": ours_rss / ROWS,
        "baseline_rss_per_row": baseline_rss / ROWS,
        "batch_lookups_per_s": len(queries) / best,
        "one_lookup_us": percentiles_us(samples),
    }


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def report(r: dict[str, Any]) -> list[str]:
    one = r["one_lookup_us"]
    return [
        f"load {r['rows']:,} rows ({r['file_mb']:.0f} MB CSV):  {r['load_s']:6.2f} s   "
        f"(target <= 5 s); csv->dict baseline {r['baseline_load_s']:.2f} s: "
        f"{r['baseline_load_s'] / r['load_s']:.1f} x faster (target >= 5 x)",
        f"memory of the index: {r['bytes_per_row']:.1f} B/row by array sizes, "
        f"{r['rss_per_row']:.1f} B/row resident (target <= 64); baseline "
        f"{r['baseline_rss_per_row']:.0f} B/row: {r['rss_per_row'] / r['baseline_rss_per_row']:.2f}"
        " of it (target <= 1/3)",
        f"batch lookups (half near-misses): {r['batch_lookups_per_s'] / 1e6:.1f} M/s "
        "(target >= 5 M/s)",
        f"one lookup: p50 {one['p50']:.1f} us, p99 {one['p99']:.1f} us, max {one['max']:.0f} us "
        "(target p99 <= 5 us)",
    ]
