"""The whole line end to end: simulated PLC and scanner, the real daemon, a real broker.

Everything crosses real sockets: Modbus TCP to the pymodbus server, telegrams over TCP,
MQTT through the broker to an independent subscriber. The checks are the product's promise:
one decision per sort request with the codes of that very item, one result per confirmation
saying what the PLC confirmed, one terminal outcome per item, and every reason as the sort
plan says for the item's codes and the chutes usable at that moment.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from drivers.broker import LocalBroker
from simulators.conveyor import Ledger
from simulators.line import DEMO_PARAMS
from sorter.decide import Decider
from sorter.kernel import ChuteState
from sorter.plan import SortPlan, compile_plan, load_plan
from sorter.ports import Reason
from sorterd.daemon import Daemon
from tests.ledgercheck import (
    decision_pairs,
    pairing_problems,
    plan_problems,
    result_problems,
)
from tests.linekit import PLAN_PATH, line_with_daemon, wait_until

# A fast line: 10 m/s belt, chutes that fill after 25 items and are emptied after a second,
# so full chutes, overflow and recirculation all happen within a few hundred items.
FAST = replace(
    DEMO_PARAMS,
    belt_speed_m_s=10.0,
    item_pitch_m=0.2,
    chute_capacity=25,
    empty_after_s=1.0,
)


class ChuteWitness:
    """In the daemon's process, at each decision: which chutes of the destination the
    daemon could use then, by its own chute state (what it decided with, a chute-status
    read behind the PLC). Holds no_chute to 'none of them' and ok to 'a usable one'."""

    def __init__(self, daemon: Daemon, plan: SortPlan) -> None:
        self.daemon = daemon
        self.chutes = {d.name: (*d.chutes, *d.overflow) for d in plan.destinations}
        self.no_chute: Counter[str] = Counter()  # destination -> no_chute decisions
        self.wrong: list[str] = []

    def on_decision(self, reason: str, destination: str, chute: int, latency_ms: float) -> None:
        del latency_ms
        book = self.daemon.pipeline.chutes
        usable = [c for c in self.chutes.get(destination, ()) if book.usable(c)]
        if reason == "no_chute":
            self.no_chute[destination] += 1
            if usable:
                self.wrong.append(f"no_chute for {destination} while {usable} were usable")
        elif reason == "ok" and chute not in usable:
            self.wrong.append(f"ok to chute {chute} of {destination}, usable were {usable}")

    def on_result(self, outcome: str, chute_actual: int) -> None:
        pass

    def on_device(self, name: str, connected: bool, errors: int) -> None:
        pass


async def test_500_items_through_the_line(broker: LocalBroker, tmp_path: Path) -> None:
    plan = load_plan(PLAN_PATH)
    async with line_with_daemon(broker, tmp_path, params=FAST, seed=7) as rig:
        line, daemon, sub = rig.line, rig.daemon, rig.sub
        witness = ChuteWitness(daemon, plan)
        daemon.pipeline.observers.append(witness)
        inducted = await line.run(150_000, count=500)
        assert inducted == 500
        assert await line.drain(60), line.ledger.summary()
        confirmations = sum(line.ledger.confirmations.values())
        await wait_until(
            lambda: (
                len(sub.of("results")) >= confirmations
                and len(sub.of("decisions")) >= daemon.pipeline.counters.decisions
            ),
            20,
        )

    ledger = line.ledger
    decisions = sub.of("decisions")
    results = sub.of("results")

    # Every item ended exactly once.
    assert ledger.in_flight == 0
    assert ledger.terminal.total() == 500
    assert all(rec.final_outcome is not None for rec in ledger.items)
    _check_one_message_per_event(ledger, decisions, results)
    reasons = _check_reasons(plan, ledger, decisions, witness)

    # The traffic mix exercised the interesting paths, not only the happy one.
    assert reasons["ok"] > 300
    for reason in ("no_read", "invalid_code", "no_rule", "multi_read_conflict"):
        assert reasons[reason] > 0, reasons
    assert ledger.recirculations > 0  # chutes filled up
    assert ledger.terminal["sorted"] > 400

    # Retained device and chute state, and the status will/online/offline.
    assert sub.of("status")[-1]["state"] == "offline"
    assert any(k.startswith("devices/plc") for k in sub.messages)
    assert any(k.startswith("devices/tunnel-1") for k in sub.messages)
    assert any(k.startswith("chutes/") for k in sub.messages)


Message = dict[str, Any]


def _check_one_message_per_event(
    ledger: Ledger, decisions: list[Message], results: list[Message]
) -> None:
    # Exactly one decision per sort request: ids unique, (tracking_id, seq) unique, and the
    # set of requests equals the set the PLC simulator wrote.
    assert len({d["id"] for d in decisions}) == len(decisions)
    decided = Counter((d["tracking_id"], d["seq"]) for d in decisions)
    assert max(decided.values()) == 1
    requested = {(rec.tracking_id, p.seq) for rec in ledger.items for p in rec.passes}
    assert set(decided) == requested

    # Exactly one result per confirmation, saying what the PLC confirmed (outcome,
    # chute_actual, recirculations) and carrying the chute its decision assigned.
    assert len({r["id"] for r in results}) == len(results) == sum(ledger.confirmations.values())
    confirmed = {(rec.tracking_id, c.seq) for rec in ledger.items for c in rec.confirmations}
    assert {(r["tracking_id"], r["seq"]) for r in results} == confirmed
    assert result_problems(ledger, results, decisions) == []

    # Each decision carries the codes the scanner sent for that pass, or none (checked for
    # the decisions without codes too).
    assert pairing_problems(ledger, decisions) == []

    # The reply the PLC latched is the chute the decision published.
    by_key = {(d["tracking_id"], d["seq"]): d for d in decisions}
    for rec in ledger.items:
        for p in rec.passes:
            if p.reply_chute is not None:
                assert by_key[(rec.tracking_id, p.seq)]["chute"] == p.reply_chute

    # Results carry what was decided.
    for r in results:
        d = by_key[(r["tracking_id"], r["seq"])]
        assert r["destination"] == d["destination"]
        if r["outcome"] == "sorted":
            assert r["chute_actual"] == d["chute"]


def _check_reasons(
    plan: SortPlan, ledger: Ledger, decisions: list[Message], witness: ChuteWitness
) -> Counter[str]:
    """Each reason as the plan says: destination and reason recomputed from the codes by a
    second decider, and no_chute exactly where the daemon had no usable chute for that
    destination (the witness); the chute belongs to the destination, or is the reason's
    function chute. This second decider is the daemon's own code (sorter.decide): which
    chute is right for the plan is for the independent oracle behind plan_problems.
    Returns the decisions counted by reason."""
    compiled = compile_plan(plan)
    check = Decider(compiled, ChuteState.for_plan(compiled), site_country="MA")
    dests = {d.name: d for d in plan.destinations}
    items = {(rec.tracking_id, p.seq): rec.item for rec in ledger.items for p in rec.passes}
    reasons: Counter[str] = Counter()
    for d in decisions:
        reasons[d["reason"]] += 1
        item = items[(d["tracking_id"], d["seq"])]
        dims = (item.length_mm, item.width_mm, item.height_mm, item.weight_g)
        if d["reason"] == "timeout" and not d["codes"]:
            expected = check.decide_timeout(d["recirculations"], dims)
        else:
            expected = check.decide(d["codes"], d["recirculations"], dims)
        want = expected.reason.word
        if want == "ok" and d["reason"] == "no_chute":
            want = "no_chute"  # none of the destination's chutes usable: the witness says
        assert d["reason"] == want, (d, expected)
        assert d["destination"] == expected.destination, d
        if d["reason"] == "ok":
            dest = dests[d["destination"]]
            assert d["chute"] in dest.chutes + dest.overflow, d
        else:
            assert d["chute"] == plan.functions[Reason[d["reason"].upper()]], d
    assert witness.wrong == []
    no_chute = Counter(d["destination"] for d in decisions if d["reason"] == "no_chute")
    assert no_chute == witness.no_chute
    assert plan_problems(decision_pairs(ledger, decisions), PLAN_PATH) == []
    return reasons
