"""The live manifest index at hub scale: 5,000,000 file rows + 1,000,000 feed rows.

`python -m benchmarks.feeds_index [--file-rows N] [--feed-rows M] [--quick]`

In this process, which holds nothing else (issue 14's figures: lookups >= 5 M/s batch,
memory <= 80 B/row):

1. the kernels are compiled (or loaded from numba's cache) and a small live manifest is
   used once, then the process's VmRSS is read (after a gc): the baseline;
2. the file index: N rows built straight as arrays (S10-shaped barcodes, a postcode, a
   country; what `sorter.manifest` would parse from a CSV), `Manifest` over them;
3. the feed: M rows as JSON pre-advice messages of 500 rows, each with an `id`, through
   `parse_preadvice` and a `FeedPacker` as the daemon's feeds worker calls them, then
   `LiveManifest.apply_packed` as the line's event loop does (a fifth of them replace file
   rows, the rest are new barcodes), one customs decision per 20 rows; reported: the
   worker's rate (parse and pack, rows/s, one core) and the line's cost of a merge (us a
   row, and the worst merge of one message);
4. VmRSS again: (after - baseline) / (N + M) is the memory per row, everything the process
   holds for them included (the index, the delta, the ids remembered);
5. lookups: 2,000,000 queries (a third feed rows, a third file rows, a third absent),
   random order, through `LiveManifest.lookup_batch` (batch, M/s, best of three; beside
   it the file index alone, `Manifest.find_batch`, on the same queries: what the delta
   layer costs) and 200,000 through `lookup` one at a time (p50/p99 us).

Bounded: about a minute and ~600 MB at the default sizes; `--quick` is 200,000 + 40,000.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sorter.feeds import FeedPacker, LiveManifest, parse_customs, parse_preadvice
from sorter.manifest import KEY_BYTES, Manifest, ManifestPart, encode_keys, pack_fields

__all__ = ["main", "run"]

FILE_ROWS = 5_000_000
FEED_ROWS = 1_000_000
QUICK_FILE_ROWS = 200_000
QUICK_FEED_ROWS = 40_000
ROWS_PER_MESSAGE = 500
LOOKUPS = 2_000_000
SINGLE_LOOKUPS = 200_000
DESTINATIONS = ("CASABLANCA", "RABAT", "MARRAKECH", "TANGER", "EXPORT")


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def _s10_keys(
    prefix: bytes, serials: npt.NDArray[np.int64], suffix: bytes
) -> npt.NDArray[np.uint8]:
    """prefix + 9 digits + suffix as (n, 32) key rows, built without a string per row."""
    keys = np.zeros((serials.shape[0], KEY_BYTES), np.uint8)
    keys[:, 0:2] = np.frombuffer(prefix, np.uint8)
    for d in range(9):
        keys[:, 2 + d] = 48 + (serials // 10 ** (8 - d)) % 10
    keys[:, 11:13] = np.frombuffer(suffix, np.uint8)
    return keys


def _file_manifest(rows: int, rng: np.random.Generator) -> Manifest:
    keys = _s10_keys(b"RB", np.arange(rows, dtype=np.int64), b"MA")
    postcode = rng.integers(0, 1 << 40, rows, dtype=np.int64)
    zeros = np.zeros(rows, np.int64)
    packed = pack_fields(
        np.full(rows, 5), np.full(rows, 312), zeros - 1, rng.integers(0, 5, rows), zeros,
        zeros - 1,
    )  # fmt: skip
    return Manifest.adopting([ManifestPart(keys, postcode, packed)], [], DESTINATIONS)


def _feed_barcode(i: int, file_rows: int) -> str:
    # Every fifth feed row replaces a file row; the others are new barcodes.
    if i % 5 == 0:
        return f"RB{(i * 7919) % file_rows:09d}MA"
    return f"LX{i:09d}CN"


def _messages(feed_rows: int, file_rows: int) -> Iterator[tuple[bytes, bytes]]:
    """(pre-advice message, customs message) pairs of ROWS_PER_MESSAGE rows."""
    for start in range(0, feed_rows, ROWS_PER_MESSAGE):
        stop = min(start + ROWS_PER_MESSAGE, feed_rows)
        rows = [
            {
                "barcode": _feed_barcode(i, file_rows),
                "destination": DESTINATIONS[i % len(DESTINATIONS)],
                "postcode": f"{20000 + i % 1000}",
                "country": "MA",
                "id": f"p{i}",
            }
            for i in range(start, stop)
        ]
        customs = [
            {"barcode": _feed_barcode(i, file_rows), "status": "hold", "id": f"c{i}"}
            for i in range(start, stop, 20)
        ]
        yield json.dumps(rows).encode(), json.dumps(customs).encode()


def _warm() -> None:
    live = LiveManifest(None, DESTINATIONS)
    live.apply(parse_preadvice(b'{"barcode": "A1", "country": "MA"}'), 0)
    live.apply(parse_customs(b'{"barcode": "A1", "status": "hold"}'), 0)
    live.lookup("A1")
    live.lookup("B2")
    live.retire(["A1"])
    live.lookup_batch(encode_keys(["A1", "B2"]))


def _feed(live: LiveManifest, feed_rows: int, file_rows: int) -> dict[str, float | int]:
    packer = FeedPacker(live.destinations)
    merge_ms: list[float] = []
    applied = 0
    pack_s = 0.0
    for rows_msg, customs_msg in _messages(feed_rows, file_rows):
        t = time.perf_counter()
        applied += packer.apply(parse_preadvice(rows_msg), time.monotonic_ns()).rows
        packer.apply(parse_customs(customs_msg), time.monotonic_ns())
        update = packer.take()
        pack_s += time.perf_counter() - t
        if update is not None:
            t = time.perf_counter()
            live.apply_packed(update)
            merge_ms.append((time.perf_counter() - t) * 1000)
    return {
        "feed_rows_applied": applied,
        "worker_rows_per_s": applied / pack_s,
        "merge_us_per_row": sum(merge_ms) * 1000 / max(applied, 1),
        "merge_ms_max": max(merge_ms, default=0.0),
        "seen_ids": len(packer.seen_ids),  # in the worker's process, in the daemon
    }


def _queries(live: LiveManifest, file_rows: int, feed_rows: int, n: int) -> list[str]:
    rng = np.random.default_rng(7)
    third = n // 3
    feed = [_feed_barcode(int(i), file_rows) for i in rng.integers(0, feed_rows, third)]
    files = [f"RB{int(i):09d}MA" for i in rng.integers(0, file_rows, third)]
    absent = [f"LX{int(i):09d}CN" for i in rng.integers(feed_rows, 2 * feed_rows, n - 2 * third)]
    queries = feed + files + absent
    order = rng.permutation(len(queries))
    return [queries[i] for i in order]


def _lookups(live: LiveManifest, queries: list[str]) -> dict[str, float]:
    keys = encode_keys(queries)
    live.lookup_batch(keys[:1000])
    files = live.files
    assert files is not None
    files.find_batch(keys[:1000])
    # Best of three (the least disturbed), each beside the file index alone on the same
    # queries: what the delta layer costs on this machine now.
    batch_s = files_s = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        source, _, _ = live.lookup_batch(keys)
        batch_s = min(batch_s, time.perf_counter() - t)
        t = time.perf_counter()
        files.find_batch(keys)
        files_s = min(files_s, time.perf_counter() - t)
    single = queries[:SINGLE_LOOKUPS]
    times = np.empty(len(single))
    lookup = live.lookup
    clock = time.perf_counter_ns
    for i, code in enumerate(single):
        t0 = clock()
        lookup(code)
        times[i] = clock() - t0
    t = time.perf_counter()
    for code in single:
        lookup(code)
    single_s = time.perf_counter() - t
    return {
        "lookups_batch_m_per_s": len(queries) / batch_s / 1e6,
        "file_index_alone_batch_m_per_s": len(queries) / files_s / 1e6,
        "lookups_single_per_s": len(single) / single_s,
        "lookup_single_us_p50": float(np.percentile(times, 50)) / 1000,
        "lookup_single_us_p99": float(np.percentile(times, 99)) / 1000,
        "found_share": float(np.count_nonzero(source) / len(queries)),
    }


def run(file_rows: int = FILE_ROWS, feed_rows: int = FEED_ROWS) -> dict[str, Any]:
    _warm()
    gc.collect()
    baseline_kb = _rss_kb()
    files = _file_manifest(file_rows, np.random.default_rng(1))
    live = LiveManifest(files, DESTINATIONS)
    del files
    out: dict[str, Any] = {"file_rows": file_rows, "feed_rows": feed_rows}
    out.update(_feed(live, feed_rows, file_rows))
    gc.collect()
    rows = file_rows + feed_rows
    out["rss_b_per_row"] = (_rss_kb() - baseline_kb) * 1024 / rows
    out["index_b_per_row"] = live.nbytes() / rows
    out["delta_rows"] = live.delta_rows
    out.update(_lookups(live, _queries(live, file_rows, feed_rows, LOOKUPS)))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.feeds_index", description=__doc__)
    p.add_argument("--file-rows", type=int, default=FILE_ROWS)
    p.add_argument("--feed-rows", type=int, default=FEED_ROWS)
    p.add_argument("--quick", action="store_true", help="200,000 + 40,000 rows: a check")
    args = p.parse_args(argv)
    if args.quick:
        args.file_rows, args.feed_rows = QUICK_FILE_ROWS, QUICK_FEED_ROWS
    out = run(args.file_rows, args.feed_rows)
    targets = {"lookups_batch_m_per_s": ">= 5", "rss_b_per_row": "<= 80"}
    for name, value in out.items():
        text = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
        target = f"   (issue 14: {targets[name]})" if name in targets else ""
        print(f"{name:32} {text:>16}{target}")


if __name__ == "__main__":
    main()
