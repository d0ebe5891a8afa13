"""The three-node NATS cluster (sorterd/natscluster.py) as the fault rig's broker
(tests/faults/harness.py): the daemon gets every node's URL, starting with node 1; the
observer keeps its persistent session on node 3, so what it sees went through the cluster.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from drivers.broker import free_port
from sorterd.natscluster import NatsCluster
from tests.faults.harness import FaultRig

__all__ = [
    "OBSERVER_NODE",
    "ClusterBroker",
    "connected_node",
    "lead_from_observer_node",
    "now_pair",
    "publishing_again_s",
]

OBSERVER_NODE = 2  # 0-based: the third node


class ClusterBroker:
    """The rig's broker (harness.RigBroker) made of a NatsCluster."""

    def __init__(
        self, folder: Path, *, unreachable_first: bool = False, observer_apart: bool = False
    ) -> None:
        self.cluster = NatsCluster(folder / "nats", nodes=3)
        # The daemon's list: the nodes in order, after an address where nothing listens
        # when `unreachable_first` (a node down at start-up). `observer_apart`: without the
        # observer's node, so that killing the daemon's node never kills the observer's
        # (the observer "on a third node"; a node still electing a leader can make
        # the daemon skip to the last node of its list).
        dead = [f"mqtt://127.0.0.1:{free_port()}"] if unreachable_first else []
        nodes = self.cluster.mqtt_urls
        if observer_apart:
            nodes = [url for i, url in enumerate(nodes) if i != OBSERVER_NODE]
        self.site_urls = dead + nodes

    @property
    def port(self) -> int:
        return self.cluster.mqtt_port(OBSERVER_NODE)

    @property
    def url(self) -> str:
        return self.cluster.mqtt_urls[OBSERVER_NODE]

    async def start(self) -> None:
        await asyncio.to_thread(self.cluster.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self.cluster.stop)


async def lead_from_observer_node(broker: ClusterBroker) -> None:
    """Every MQTT stream and consumer led from the observer's node, the one the daemon
    lists last (docs/cluster.md "Where the leaders are"): then the node under the daemon
    leads nothing, and its death costs no JetStream election. Called once the daemon and
    the observer are subscribed (a QoS 1 subscription is a consumer with a leader)."""
    elsewhere = await asyncio.to_thread(broker.cluster.place_leaders, OBSERVER_NODE)
    assert not elsewhere, f"leaders not on the observer's node: {elsewhere}"


def connected_node(rig: FaultRig, cluster: NatsCluster) -> int | None:
    """The node the daemon's publisher is connected to, by its last "mqtt state" log line."""
    assert rig.daemon is not None
    states = [e for e in rig.daemon.log_events("mqtt state") if e.get("connected") is True]
    if not states:
        return None
    url = str(states[-1].get("url", ""))
    return cluster.node_of_port(int(url.rsplit(":", 1)[1]))


def publishing_again_s(rig: FaultRig, fault_wall_s: float, fault_loop_s: float) -> float | None:
    """From the fault to the observer receiving the first decision the daemon made after
    it (its `ts` later than the fault): the daemon publishing again, as a consumer sees it."""
    decisions = rig.seen.of("decisions")
    times = rig.seen.received_s.get("decisions", [])
    for message, received_s in zip(decisions, times, strict=True):
        if _wall_s(str(message.get("ts", ""))) > fault_wall_s:
            return received_s - fault_loop_s
    return None


def _wall_s(iso: str) -> float:
    try:
        return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def now_pair() -> tuple[float, float]:
    """(wall clock, loop clock) of one moment."""
    return time.time(), asyncio.get_running_loop().time()
