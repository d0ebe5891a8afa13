"""Faults of a three-node NATS cluster (issue 16) under a line at 20,000 items/h (two
nodes killed one after the other: tests/cluster/test_failover.py, at 40,000): the rig
of tests/faults/harness.py with the cluster of tests/cluster/clusterkit.py as its broker.
The daemon has every node in `[mqtt] url`; the observer keeps its persistent session on the
third node. After each fault the ledger is held against what reached the observer: every
decision and result exactly once by id (a re-sent id is dropped by the consumer, counted),
nothing lost. Recovery times are reported, never asserted. SORTERD_FAULT_SCALE stretches
every duration (the whole cluster down for a minute: SORTERD_FAULT_SCALE=15).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cluster.clusterkit import ClusterBroker, connected_node, now_pair, publishing_again_s
from tests.faults.harness import REPORTS, FaultRig, Report, print_report, scaled

LEAD_S = 3.0
FAULT_S = 4.0
TAIL_S = 4.0
FROZEN_S = 12.0  # past the daemon's keepalive (10 s): the frozen node is noticed

pytestmark = [
    pytest.mark.requires("nats-server"),
    pytest.mark.timeout(int(300 + 4 * scaled(LEAD_S + FAULT_S + FROZEN_S + TAIL_S))),
]


def _check(report: Report) -> None:
    REPORTS.append(report)
    print_report(report)
    assert report.lost == 0, report.notes
    assert not report.notes, report.notes
    assert report.decisions > 0


async def test_a_node_frozen_and_one_unreachable_from_the_start(tmp_path: Path) -> None:
    """The list starts with an address where nothing listens (skipped at start-up); then the
    node the daemon is on is frozen (SIGSTOP: half-open, noticed by keepalive or a PUBACK
    that does not come) and thawed after FROZEN_S."""
    broker = ClusterBroker(tmp_path, unreachable_first=True)
    async with FaultRig(tmp_path, broker=broker).running() as rig:
        node = connected_node(rig, broker.cluster)
        assert node == 0  # the unreachable address was skipped
        rig.start_traffic(scaled(LEAD_S + FROZEN_S + TAIL_S))
        await asyncio.sleep(scaled(LEAD_S))
        wall_s, loop_s = now_pair()
        broker.cluster.freeze(node)
        await asyncio.sleep(scaled(FROZEN_S))
        broker.cluster.thaw(node)
        await asyncio.sleep(scaled(TAIL_S))
        report = await rig.finish("cluster_node_frozen", recover_s=None)
    report.recover_s = publishing_again_s(rig, wall_s, loop_s)
    _check(report)


async def test_the_whole_cluster_down_and_back(tmp_path: Path) -> None:
    """Every node stopped for FAULT_S (a minute at SORTERD_FAULT_SCALE=15): the line goes
    on, the outbox waits (journaled), and is sent when the cluster is back."""
    broker = ClusterBroker(tmp_path)
    async with FaultRig(tmp_path, broker=broker).running() as rig:
        rig.start_traffic(scaled(LEAD_S + FAULT_S + TAIL_S))
        await asyncio.sleep(scaled(LEAD_S))
        await asyncio.to_thread(broker.cluster.stop)
        await asyncio.sleep(scaled(FAULT_S))
        wall_s, loop_s = now_pair()
        await asyncio.to_thread(broker.cluster.start)
        await asyncio.sleep(scaled(TAIL_S))
        report = await rig.finish("cluster_down_and_back", recover_s=None)
    report.recover_s = publishing_again_s(rig, wall_s, loop_s)
    _check(report)
