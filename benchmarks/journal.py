"""What the journal costs per item: the line core with and without it, in the same run.

One item is what the daemon does for it: the scan arrives, the PLC's request is decided
and answered, the confirmation becomes a result. Baseline: the line core publishing into an
MQTT outbox that is never connected (JSON encoding and queueing, as before the journal).
Then the same items through the journal (JournalOutbox into an
MQTT outbox that is never connected) with `synchronous = "normal"` and `"full"` (the
default: every commit on the disk). Per item, the line core commits twice (after the
request's step and after the confirmation's), so "full" costs two disk syncs an item.
The figure that matters on a line is the step time (a poll's requests until the replies
may be written): its p99 is reported for each mode.

What a sync costs depends on the filesystem under the journal (free on tmpfs, a round trip
to the host on a virtual disk): the results record it (`findmnt -T`). The journal goes
into a temporary folder under `--journal-dir` (default: the system's temporary folder);
give the disk a site's journal would live on.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import decider, percentiles_us, traffic_codes
from benchmarks.results import Section, filesystem
from drivers.journal import Journal, JournalOutbox
from drivers.mqtt import MqttPublisher
from sorter.contract import Topics
from sorter.line import Line
from sorter.ports import Confirmation, Durable, Outcome, ScanRead, SortRequest
from sorter.tracker import Tracker

__all__ = ["ITEMS", "MODES", "QUICK", "Options", "run"]

ITEMS = {"none": 20_000, "normal": 20_000, "full": 4_000}
MODES = tuple(ITEMS)


@dataclass(frozen=True, slots=True)
class Options:
    items: dict[str, int] = field(default_factory=lambda: dict(ITEMS))
    journal_dir: Path | None = None  # None: tempfile's default folder


QUICK = Options(items={"none": 4_000, "normal": 4_000, "full": 1_000})


def _run(mode: str, folder: Path, codes: list[tuple[str, ...]], n: int) -> dict[str, Any]:
    journal: Journal | None = None
    durable: Durable | None = None
    mqtt = MqttPublisher("mqtt://127.0.0.1:1")
    if mode != "none":
        journal = Journal(folder / f"{mode}.sqlite", synchronous=mode)
        mqtt = MqttPublisher("mqtt://127.0.0.1:1", store=journal, max_memory=10**7)
        durable = JournalOutbox(journal, mqtt)
    line = Line(
        decider(),
        Tracker(scan_wait_ns=200_000_000, scan_ttl_ns=30 * 10**9),
        mqtt.publish,
        Topics("bench"),
        durable=durable,
    )
    chutes: list[int] = []
    line.bind_reply(lambda seq, tid, chute: chutes.append(chute))
    steps_ns: list[int] = []
    t0 = time.perf_counter()
    for i in range(n):
        tid, seq = i + 1, i % 65536
        now = time.monotonic_ns()
        line.on_scan(ScanRead("tunnel-1", tid, codes[i % len(codes)], now))
        s0 = time.perf_counter_ns()
        line.on_requests([SortRequest(seq, tid, 1, 0, 0, 0, 0, received_ns=now)])
        steps_ns.append(time.perf_counter_ns() - s0)
        line.on_confirmations([Confirmation(seq, tid, chutes[-1], Outcome.SORTED, 0)])
    elapsed_s = time.perf_counter() - t0
    if journal is not None:
        journal.close()
    return {"items": n, "per_item_us": elapsed_s / n * 1e6, "step_us": percentiles_us(steps_ns)}


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    codes = traffic_codes(20_000, seed=3)
    parent = opts.journal_dir or Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="sorterd-bench-journal-", dir=parent) as tmp:
        folder = Path(tmp)
        fs = filesystem(folder)
        _run("none", folder, codes[:2000], 2000)  # warm the kernels and the code paths
        results = {mode: _run(mode, folder, codes, opts.items[mode]) for mode in MODES}
    base = results["none"]["per_item_us"]
    for r in results.values():
        r["ratio"] = r["per_item_us"] / base
    print(f"  journal on {fs.get('fstype') or fs['stat_type']} ({fs.get('source', '')}, {parent})")
    section = Section(
        params={"items": opts.items, "journal_dir": str(parent)},
        details={"modes": results},
        filesystems={"journal": fs},
    )
    for mode in ("normal", "full"):
        r = results[mode]
        section.add(
            f"per_item_us_{mode}",
            r["per_item_us"],
            "us",
            f"pipeline per item, journal synchronous = {mode}",
            better="lower",
            baselines={"none": base},
            baseline_labels={"none": "no journal (JSON into an unconnected MQTT outbox)"},
        )
    for mode in MODES:
        for q in ("p50", "p99"):
            section.add(
                f"step_us_{q}_{mode}",
                results[mode]["step_us"][q],
                "us",
                f"request step {q}, journal {mode}",
                better="lower",
                baselines=None if mode == "none" else {"none": results["none"]["step_us"][q]},
            )
    return section


def report(section: Section) -> list[str]:
    fs = section.filesystems["journal"]
    lines = [f"journal folder on {fs.get('fstype') or fs['stat_type']} ({fs.get('source', '')})"]
    for mode, res in section.details["modes"].items():
        step = res["step_us"]
        lines.append(
            f"journal {mode:<6}  {res['items']:>6} items  {res['per_item_us']:8.1f} us/item"
            f"  x{res['ratio']:6.1f} of none   request step p50 {step['p50']:.0f} us"
            f"  p99 {step['p99']:.0f} us"
        )
    return lines


if __name__ == "__main__":
    for line in report(run()):
        print(line)
