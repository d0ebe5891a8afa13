"""Failover of the clustered broker (docs/cluster.md, issue 16): a simulated line at
40,000 items/h, `sorterd run` as its own process with the three nodes of a NATS cluster
(sorterd/natscluster.py) in `[mqtt] url`, and the node it is connected to killed.

Figures, as a consumer and the PLC see them (the fault rig of tests/faults/harness.py with
the cluster of tests/cluster/clusterkit.py): `publishing_again_s`, from the kill to the
observer (a persistent session on the third node) receiving the first decision the daemon
made after it (target <= 5 s); `reconnect_s`, from the kill to the daemon's log saying it
is connected to another node; `lost` (decisions and results the ledger has and the
observer never got) and `duplicates` (ids the observer got twice and dropped: re-sends);
`late_replies`, replies the simulated PLC got after the item passed its chute (target 0:
the line never waits for the broker). Opt-in (`--only failover`): it needs nats-server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.results import Section
from tests.cluster.clusterkit import (
    ClusterBroker,
    connected_node,
    lead_from_observer_node,
    now_pair,
    publishing_again_s,
)
from tests.faults.harness import DaemonProcess, FaultRig

__all__ = ["QUICK", "Options", "report", "run"]


@dataclass(frozen=True, slots=True)
class Options:
    rate_per_h: int = 40_000
    lead_s: float = 10.0  # traffic before the kill
    tail_s: float = 15.0  # traffic after it
    runs: int = 3  # a new cluster each
    leader_runs: int = 1  # the node leading JetStream killed instead (not the daemon's)


QUICK = Options(lead_s=3.0, tail_s=8.0, runs=1, leader_runs=0)

# The leader-killed runs: leaders on the second node, the daemon on the first, the
# observer on the third; the second is killed.
LEADER_NODE = 1


async def _one(folder: Path, opts: Options, *, kill_leader: bool = False) -> dict[str, Any]:
    broker = ClusterBroker(folder)
    async with FaultRig(folder, broker=broker).running() as rig:
        if kill_leader:
            await asyncio.to_thread(broker.cluster.place_leaders, LEADER_NODE)
        else:
            await lead_from_observer_node(broker)
        rig.start_traffic(opts.lead_s + opts.tail_s, rate_per_h=opts.rate_per_h)
        await asyncio.sleep(opts.lead_s)
        node = LEADER_NODE if kill_leader else connected_node(rig, broker.cluster)
        assert node is not None
        killed_led = sorted(g for g, n in broker.cluster.leaders().items() if n == f"n{node + 1}")
        wall_s, loop_s = now_pair()
        await asyncio.to_thread(broker.cluster.kill, node)
        await asyncio.sleep(opts.tail_s)
        result = await rig.finish("cluster_node_killed", recover_s=None)
        assert rig.daemon is not None
        connects, story = _publisher_after(rig.daemon, wall_s)
    return {
        "killed": "the node leading JetStream" if kill_leader else "the daemon's node",
        "publishing_again_s": publishing_again_s(rig, wall_s, loop_s),
        "reconnect_s": connects[0] if connects else None,
        "lost": result.lost,
        "duplicates": result.duplicates_dropped,
        "late_replies": result.late_replies,
        "decisions": result.decisions,
        "results": result.results,
        "problems": result.notes[:10],
        "killed_node_led": killed_led,
        "publisher_after_kill": story,
    }


def _publisher_after(daemon: DaemonProcess, wall_s: float) -> tuple[list[float], list[str]]:
    """Seconds from the kill to each connection the publisher made after it, and what it
    did after the kill (its log lines), for a slow failover's why."""
    connects = [
        t - wall_s
        for e in daemon.log_events("mqtt state")
        if e.get("connected") is True and (t := _wall_s(str(e.get("timestamp", "")))) > wall_s
    ]
    story = [
        f"{_wall_s(str(e.get('timestamp', ''))) - wall_s:+.2f} s {event} "
        f"{e.get('url', '')} {str(e.get('error', ''))[:80]}"
        for event in ("mqtt connection lost", "mqtt state")
        for e in daemon.log_events(event)
        if _wall_s(str(e.get("timestamp", ""))) > wall_s
    ]
    return connects, sorted(story, key=lambda line: float(line.split(" s ")[0]))[:12]


def _wall_s(iso: str) -> float:
    try:
        return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    runs: list[dict[str, Any]] = []
    for i in range(opts.runs + opts.leader_runs):
        with tempfile.TemporaryDirectory(prefix="sorterd-failover-") as folder:
            runs.append(asyncio.run(_one(Path(folder), opts, kill_leader=i >= opts.runs)))
        print(f"  run {i + 1}: {runs[-1]}", flush=True)
    leader_runs, runs = runs[opts.runs :], runs[: opts.runs]
    section = Section(
        params={"rate_per_h": opts.rate_per_h, "lead_s": opts.lead_s, "tail_s": opts.tail_s,
                "runs": opts.runs, "leader_runs": opts.leader_runs, "nodes": 3,
                "broker": "nats-server (JetStream, R3, leaders on the third node)"},
        details={"runs": runs, "leader_runs": leader_runs},
    )  # fmt: skip
    again = [r["publishing_again_s"] for r in runs if r["publishing_again_s"] is not None]
    if again:
        section.add(
            "publishing_again_s_max", max(again), "s", "publishing again", better="lower",
            target="<= 5 s",
        )  # fmt: skip
        section.add("publishing_again_s_median", statistics.median(again), "s", better="lower")
    reconnect = [r["reconnect_s"] for r in runs if r["reconnect_s"] is not None]
    if reconnect:
        section.add("reconnect_s_max", max(reconnect), "s", "connected again", better="lower")
    for key in ("lost", "duplicates", "late_replies"):
        section.add(
            key, sum(r[key] for r in runs), "messages" if key != "late_replies" else "items"
        )
    section.add("runs_without_publishing_again", len(runs) - len(again), "runs")
    # What the death of the node leading JetStream costs (no daemon on it): an election.
    stalls = [r["publishing_again_s"] for r in leader_runs if r["publishing_again_s"] is not None]
    if stalls:
        section.add(
            "leader_killed_publishing_again_s_max", max(stalls), "s",
            "publishing again, the leading node killed", better="lower",
        )  # fmt: skip
    return section


def report(section: Section) -> list[str]:
    lines = []
    for i, r in enumerate(section.details["runs"] + section.details.get("leader_runs", [])):
        again = r["publishing_again_s"]
        reconnect = r["reconnect_s"]
        killed = r.get("killed", "the daemon's node")
        lines.append(
            f"  run {i + 1}, {killed} killed: "
            f"publishing again {'-' if again is None else f'{again:.2f}'} s "
            f"(connected again {'-' if reconnect is None else f'{reconnect:.2f}'} s), "
            f"lost {r['lost']}, ids twice {r['duplicates']}, late replies {r['late_replies']}, "
            f"decisions {r['decisions']}, results {r['results']}"
        )
    return lines
