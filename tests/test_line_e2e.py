"""The whole line end to end: simulated PLC and scanner, the real daemon, a real broker.

Everything crosses real sockets: Modbus TCP to the pymodbus server, telegrams over TCP,
MQTT through the broker to an independent subscriber. The checks are the product's promise:
one decision per sort request, one result per confirmation, one terminal outcome per item,
and every chute as the sort plan says.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from drivers.broker import LocalBroker
from simulators.line import DEMO_PARAMS
from sorter.decide import Decider
from sorter.events import Reason
from sorter.kernel import ChuteState
from sorter.plan import compile_plan, load_plan
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


async def test_500_items_through_the_line(broker: LocalBroker, tmp_path: Path) -> None:
    plan = load_plan(PLAN_PATH)
    async with line_with_daemon(broker, tmp_path, params=FAST, seed=7) as rig:
        line, daemon, sub = rig.line, rig.daemon, rig.sub
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

    # Exactly one decision per sort request: ids unique, (tracking_id, seq) unique, and the
    # set of requests equals the set the PLC simulator wrote.
    assert len({d["id"] for d in decisions}) == len(decisions)
    decided = Counter((d["tracking_id"], d["seq"]) for d in decisions)
    assert max(decided.values()) == 1
    requested = {(rec.tracking_id, p.seq) for rec in ledger.items for p in rec.passes}
    assert set(decided) == requested

    # Exactly one result per confirmation, matching the PLC's outcome.
    assert len({r["id"] for r in results}) == len(results) == sum(ledger.confirmations.values())
    plc_outcomes = Counter(
        (rec.tracking_id, c.seq, c.outcome.word) for rec in ledger.items for c in rec.confirmations
    )
    assert Counter((r["tracking_id"], r["seq"], r["outcome"]) for r in results) == plc_outcomes

    # The reply the PLC latched is the chute the decision published.
    by_key = {(d["tracking_id"], d["seq"]): d for d in decisions}
    for rec in ledger.items:
        for p in rec.passes:
            if p.reply_chute is not None:
                assert by_key[(rec.tracking_id, p.seq)]["chute"] == p.reply_chute

    # Each chute as the plan says: destination and reason recomputed from the codes by a
    # separate decider; the chute must belong to that destination (or its function chute).
    compiled = compile_plan(plan)
    check = Decider(compiled, ChuteState.for_plan(compiled), site_country="MA")
    dests = {d.name: d for d in plan.destinations}
    codes_of = {
        (rec.tracking_id, p.seq): rec.item.codes for rec in ledger.items for p in rec.passes
    }
    reasons: Counter[str] = Counter()
    for d in decisions:
        reasons[d["reason"]] += 1
        key = (d["tracking_id"], d["seq"])
        if d["reason"] == "timeout":
            assert d["chute"] == plan.functions[Reason.TIMEOUT]
            continue
        assert tuple(d["codes"]) == tuple(dict.fromkeys(codes_of[key]))
        expected = check.decide(d["codes"], d["recirculations"])
        assert d["reason"] in (expected.reason.word, "no_chute"), d
        assert d["destination"] == expected.destination, d
        if d["reason"] == "ok":
            dest = dests[d["destination"]]
            assert d["chute"] in dest.chutes + dest.overflow, d
        else:
            assert d["chute"] == plan.functions[Reason[d["reason"].upper()]], d

    # The traffic mix exercised the interesting paths, not only the happy one.
    assert reasons["ok"] > 300
    for reason in ("no_read", "invalid_code", "no_rule", "multi_read_conflict"):
        assert reasons[reason] > 0, reasons
    assert ledger.recirculations > 0  # chutes filled up
    assert ledger.terminal["sorted"] > 400

    # Results carry what was decided.
    for r in results:
        d = by_key[(r["tracking_id"], r["seq"])]
        assert r["chute_assigned"] == d["chute"]
        assert r["destination"] == d["destination"]
        if r["outcome"] == "sorted":
            assert r["chute_actual"] == d["chute"]

    # Retained device and chute state, and the status will/online/offline.
    assert sub.of("status")[-1]["state"] == "offline"
    assert any(k.startswith("devices/plc") for k in sub.messages)
    assert any(k.startswith("devices/tunnel-1") for k in sub.messages)
    assert any(k.startswith("chutes/") for k in sub.messages)
