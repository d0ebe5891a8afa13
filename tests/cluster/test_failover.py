"""Failover at a line's rate (issue 16): a three-node NATS cluster, `sorterd run` as its
own process on a simulated line at 40,000 items/h, and the node the daemon is connected to
killed; once it is back, the node the daemon moved to is killed too (one at a time: two of
three nodes down is a cluster without a quorum). The daemon publishes again on another
node; the observer, with its persistent session on the third node, sees every decision and
result (the ledger, tests/ledgercheck.py, holds them to what the PLC and the scanner did),
no request decided twice, a re-sent id counted; the PLC sees no late reply (the line never
waits for the broker). Times are reported, never asserted. The other cluster faults are in
tests/faults/test_cluster_faults.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cluster.clusterkit import (
    ClusterBroker,
    connected_node,
    lead_from_observer_node,
    now_pair,
    publishing_again_s,
)
from tests.faults.harness import REPORTS, FaultRig, print_report, scaled

RATE_PER_H = 40_000
LEAD_S = 3.0
FAULT_S = 5.0
TAIL_S = 4.0
RECOVERY_MARGIN_S = 10.0

pytestmark = [
    pytest.mark.requires("nats-server"),
    pytest.mark.timeout(int(420 + 4 * scaled(LEAD_S + 2 * FAULT_S + TAIL_S))),
]


async def _kill_connected(rig: FaultRig, broker: ClusterBroker) -> int:
    """Kill the node the daemon is on, wait until it is on another; the node killed."""
    node = connected_node(rig, broker.cluster)
    assert node is not None
    await asyncio.to_thread(broker.cluster.kill, node)
    await rig.wait_for(
        lambda: connected_node(rig, broker.cluster) not in (None, node), 60, "another node"
    )
    return node


async def _publishing_again(rig: FaultRig, wall_s: float, loop_s: float) -> None:
    """Until the observer has a decision the daemon made after the kill: the second kill
    comes after the cluster and the daemon got over the first."""
    await rig.wait_for(
        lambda: publishing_again_s(rig, wall_s, loop_s) is not None, 60, "publishing again"
    )


async def test_the_connected_node_killed_then_the_next_at_40000_items_per_hour(
    tmp_path: Path,
) -> None:
    broker = ClusterBroker(tmp_path, observer_apart=True)
    async with FaultRig(tmp_path, broker=broker).running() as rig:
        assert connected_node(rig, broker.cluster) == 0  # the first node of the list
        await lead_from_observer_node(broker)
        # Traffic through both kills even when publishing takes a while to come back.
        traffic_s = scaled(LEAD_S + 2 * FAULT_S + TAIL_S) + RECOVERY_MARGIN_S
        rig.start_traffic(traffic_s, rate_per_h=RATE_PER_H)
        await asyncio.sleep(scaled(LEAD_S))
        fault_wall_s, fault_loop_s = now_pair()
        first = await _kill_connected(rig, broker)
        await _publishing_again(rig, fault_wall_s, fault_loop_s)
        await asyncio.sleep(scaled(FAULT_S))
        await asyncio.to_thread(broker.cluster.restart, first)
        await lead_from_observer_node(broker)  # (a check: leaders stay where they are)
        second_wall_s, second_loop_s = now_pair()
        second = await _kill_connected(rig, broker)
        await _publishing_again(rig, second_wall_s, second_loop_s)
        await asyncio.sleep(scaled(FAULT_S))
        await asyncio.to_thread(broker.cluster.restart, second)
        await asyncio.sleep(scaled(TAIL_S))
        report = await rig.finish("cluster_node_killed_x2", recover_s=None)
    # After the drain: every decision made after a kill has reached the observer.
    report.recover_s = publishing_again_s(rig, fault_wall_s, fault_loop_s)
    again_second_s = publishing_again_s(rig, second_wall_s, second_loop_s)
    if report.recover_s is None or again_second_s is None:
        report.notes.append("no decision published after a kill")
    REPORTS.append(report)
    print_report(report)
    late = rig.line.ledger.late_replies
    print(f"  publishing again after {report.recover_s} s and {again_second_s} s")
    print(f"  ids seen twice (dropped) {report.duplicates_dropped}, late replies at the PLC {late}")
    assert report.lost == 0, report.notes
    assert not report.notes, report.notes
    assert first != second
    assert late == 0
    # Online again on each new node (and the first time at the start).
    online = [m for m in rig.seen.of("status") if m.get("state") == "online"]
    assert len(online) >= 3, rig.seen.of("status")
