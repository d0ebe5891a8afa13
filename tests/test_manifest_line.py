"""Pre-advice added while the line runs: picked up and used, every request still answered.

Whether loading a large file in the background delays replies is a benchmark's question
(BENCHMARKS.md): a late reply here would say as much about the test machine's load.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from drivers.broker import LocalBroker
from simulators.labels import GeneratedCode
from simulators.manifests import naming_code, write_manifest
from simulators.traffic import Traffic
from tests.linekit import FAST_LINE, line_with_daemon, wait_until

FAST = FAST_LINE
SEED = 11
FILLER_ROWS = 200_000  # a day's file is large: loading it must not stall decisions


async def test_manifest_added_while_running(broker: LocalBroker, tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    # The items the line will induct, in order (the simulator uses the same seed).
    items = list(Traffic(seed=SEED).items(300))
    # A ship-to label wins over the pre-advice, its destination included: only the items
    # without one go where the manifest says.
    later = {
        naming_code(item)
        for item in items[150:]
        # What the generator put on the labels, not the daemon's reading of them.
        if not any(isinstance(code, GeneratedCode) and code.ship_to for code in item.codes)
    } - {None}
    async with line_with_daemon(
        broker, tmp_path, params=FAST, seed=SEED, manifests=str(folder / "*.csv*")
    ) as rig:
        line, daemon, sub = rig.line, rig.daemon, rig.sub
        assert daemon.manifest is not None
        assert daemon.manifest.rows == 0
        first = asyncio.create_task(line.run(60_000, count=150))
        await wait_until(lambda: line.ledger.inducted >= 30, what="the line running")
        # Mid-run: every later item pre-advised to RABAT, among many other rows.
        rows = [(code, "", "", "", "", "", "RABAT") for code in sorted(later)]
        rows += [(f"FILLER{i:010d}", "20000", "MA", "", "", "500", "") for i in range(FILLER_ROWS)]
        write_manifest(folder / "day.csv", rows, header=(*_HEADER, "destination"))
        await first
        await wait_until(lambda: daemon.manifest is not None and daemon.manifest.rows > 0, 20)
        assert daemon.manifest is not None
        assert daemon.manifest.rows == len(rows)
        assert daemon.manifest.bad_rows == 0
        await line.run(60_000, count=150)
        assert await line.drain(30)
        passes = {(rec.tracking_id, p.seq) for rec in line.ledger.items for p in rec.passes}
        await wait_until(
            lambda: {(d["tracking_id"], d["seq"]) for d in sub.of("decisions")} >= passes,
            what="a decision for every request",
        )
        await wait_until(
            lambda: ((sub.last("stats") or {}).get("manifest", {}).get("hit_rate") or 0) > 0,
            what="P/stats with the manifest's hit rate",
        )

    ledger = line.ledger
    assert ledger.in_flight == 0
    decisions = sub.of("decisions")
    assert len(decisions) == len(passes)  # one each
    after = [d for d in decisions if d["barcode"] in later and d["reason"] == "ok"]
    assert after
    assert all(d["destination"] == "RABAT" for d in after)
    stats = sub.last("stats")
    assert stats is not None
    assert stats["manifest"]["rows"] == len(rows)


_HEADER = ("barcode", "postcode", "country", "service", "customs", "weight_g")
