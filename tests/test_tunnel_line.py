"""A three-head scan tunnel end to end: simulated heads over real TCP, the real daemon, MQTT.

One head is switched off mid-run: the line keeps its read rate from the other two, the dead
head shows offline on P/devices/NAME and in P/stats, and every decision carries exactly the
codes the live heads sent for its item (the ledger knows what each head sent).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from drivers.broker import LocalBroker
from simulators.conveyor import ItemRecord, Ledger, PassRecord
from simulators.line import HeadSpec
from tests.linekit import FAST_LINE, Rig, Subscriber, line_with_daemon
from tests.waiting import wait_until

HEADS = [
    HeadSpec("top", read_rate=0.85, tunnel="tunnel-1"),
    HeadSpec("side", read_rate=0.85, tunnel="tunnel-1"),
    HeadSpec("bottom", read_rate=0.85, tunnel="tunnel-1"),
]
# Generous waits: a loaded test machine must not make a head's read miss the merge. Items
# still reach their chute 600 ms after the tunnel on the fast line.
TRACKING = "\n[tracking]\nscan_wait_ms = 300\nmerge_window_ms = 150\n"


def device(sub: Subscriber, name: str) -> dict[str, Any]:
    return sub.last(f"devices/{name}") or {}


async def test_three_heads_one_switched_off_mid_run(broker: LocalBroker, tmp_path: Path) -> None:
    async with line_with_daemon(
        broker, tmp_path, params=FAST_LINE, seed=11, heads=HEADS, extra_config=TRACKING
    ) as rig:
        killed_at = await _run_killing_bottom_midway(rig)
    sub = rig.sub
    passes, heads_seen = _check_decisions(rig.line.ledger, sub, killed_at)
    late_passes = [p for rec, p in passes if rec.index >= killed_at + 5]
    _check_stats(sub, passes, heads_seen, missed_at_least=len(late_passes))

    # P/devices/NAME of the dead head: offline, with the reason.
    bottom = device(sub, "bottom")
    assert bottom["connected"] is False
    assert "link down" in bottom["detail"]
    assert device(sub, "top")["connected"] is True


async def _run_killing_bottom_midway(rig: Rig) -> int:
    """240 items, the bottom head killed after 120; returns the items inducted by then."""
    line, daemon, sub = rig.line, rig.daemon, rig.sub
    await wait_until(lambda: all(device(sub, h.name).get("connected") for h in HEADS), 10)
    run = asyncio.create_task(line.run(120_000, count=240))
    await wait_until(lambda: line.ledger.inducted >= 120, 30)
    await line.kill_head("bottom")
    killed_at = line.ledger.inducted
    assert await run == 240
    assert await line.drain(60), line.ledger.summary()
    await wait_until(lambda: device(sub, "bottom").get("connected") is False, 10)
    confirmations = sum(line.ledger.confirmations.values())
    await wait_until(
        lambda: (
            len(sub.of("results")) >= confirmations
            and len(sub.of("decisions")) >= daemon.pipeline.counters.decisions
        ),
        20,
    )
    # The stats after the kill: the dead head is offline there too.
    await wait_until(
        lambda: (
            ((sub.last("stats") or {}).get("scanners", {}).get("bottom", {}).get("online")) is False
            and (sub.last("stats") or {}).get("decisions") == daemon.pipeline.counters.decisions
        ),
        10,
    )
    return killed_at


Passes = list[tuple[ItemRecord, PassRecord]]


def _check_decisions(
    ledger: Ledger, sub: Subscriber, killed_at: int
) -> tuple[Passes, Counter[str]]:
    """Every item ended once, and each decision carries the merged codes of exactly the
    heads that sent a telegram for it; returns the passes and the telegrams per head."""
    decisions = {(d["tracking_id"], d["seq"]): d for d in sub.of("decisions")}
    assert len(decisions) == len(sub.of("decisions"))  # one decision per request

    # Every item ended exactly once.
    assert ledger.in_flight == 0
    assert ledger.terminal.total() == 240
    assert all(rec.final_outcome is not None for rec in ledger.items)

    # Each decision carries the merged codes of exactly the heads that sent a telegram.
    passes = [(rec, p) for rec in ledger.items for p in rec.passes]
    assert set(decisions) == {(rec.tracking_id, p.seq) for rec, p in passes}
    heads_seen: Counter[str] = Counter()
    for rec, p in passes:
        d = decisions[(rec.tracking_id, p.seq)]
        assert p.reads is not None
        assert d["codes"] == list(p.codes_read or ()), (rec.index, p.reads, d)
        if not p.reads:
            assert d["reason"] == "timeout"
        heads_seen.update(p.reads.keys())
    assert heads_seen["bottom"] > 0  # it did read before it was switched off ...
    late_passes = [p for rec, p in passes if rec.index >= killed_at + 5]
    assert late_passes
    assert all("bottom" not in (p.reads or {}) for p in late_passes)  # ... and not after

    # The read rate stays up with two heads of three: items carrying codes were read.
    with_codes = [(rec, p) for rec, p in passes if rec.index >= killed_at and rec.item.codes]
    read = sum(1 for rec, p in with_codes if decisions[(rec.tracking_id, p.seq)]["codes"])
    assert read / len(with_codes) >= 0.9, (read, len(with_codes))
    return passes, heads_seen


def _check_stats(
    sub: Subscriber, passes: Passes, heads_seen: Counter[str], *, missed_at_least: int
) -> None:
    """P/stats: the line's read rate is per item, over the merged heads; the dead head is
    offline and missed the items after its death."""
    stats = sub.last("stats")
    assert stats is not None
    items_read = [p.codes_read for _, p in passes if p.reads]
    expected_rate = sum(1 for c in items_read if c) / len(items_read)
    assert stats["read_rate"] == round(expected_rate, 4)
    scanners = stats["scanners"]
    assert set(scanners) == {"top", "side", "bottom"}
    assert scanners["bottom"]["online"] is False
    assert scanners["top"]["online"] is True
    for name in ("top", "side", "bottom"):
        assert scanners[name]["tunnel"] == "tunnel-1"
        assert scanners[name]["reads"] + scanners[name]["noreads"] == heads_seen[name]
    assert scanners["bottom"]["missed"] >= missed_at_least
    assert scanners["top"]["heartbeats"] > 0


async def test_a_silent_head_goes_offline_and_back(broker: LocalBroker, tmp_path: Path) -> None:
    heads = HEADS[:2]
    async with line_with_daemon(
        broker, tmp_path, params=FAST_LINE, heads=heads, silence_timeout_s=1.5
    ) as rig:
        line, daemon, sub = rig.line, rig.daemon, rig.sub
        await wait_until(lambda: device(sub, "side").get("connected") is True, 10)
        line.mute_head("side")  # link up, nothing sent: no read, no heartbeat
        await wait_until(lambda: device(sub, "side").get("connected") is False, 10)
        assert "silent" in device(sub, "side")["detail"]
        assert device(sub, "top")["connected"] is True  # heartbeats keep it online
        # Items go on being decided from the live head, without waiting for the silent one.
        assert await line.run(50_000, count=20) == 20
        assert await line.drain(30)
        assert all("side" not in (p.reads or {}) for r in line.ledger.items for p in r.passes)
        line.mute_head("side", muted=False)
        await wait_until(lambda: device(sub, "side").get("connected") is True, 10)
        assert daemon.heads.online("side")
