"""The ledger checks of the e2e test and the fault suite catch what they say they catch."""

from __future__ import annotations

from typing import Any

from simulators.conveyor import ItemRecord, Ledger, PassRecord, SimItem
from sorter.ports import Confirmation, Outcome
from tests.ledgercheck import pairing_problems, result_problems


def _ledger() -> Ledger:
    """Item 1 read with two codes, item 2 a no-read, item 3 whose read never left the
    scanner; item 1 sorted to chute 4, item 2 recirculated once, then rejected."""
    ledger = Ledger()
    reads: list[dict[str, tuple[str, ...]]] = [{"top": ("A1", "B1")}, {"top": ()}, {}]
    for i, read in enumerate(reads, start=1):
        rec = ItemRecord(index=i - 1, item=SimItem(codes=("A1", "B1")), tracking_id=i, inducted_s=0)
        rec.passes.append(PassRecord(seq=10 + i, recirculations_before=0, scan_s=0, reads=read))
        ledger.items.append(rec)
    ledger.items[0].confirmations.append(Confirmation(11, 1, 4, Outcome.SORTED, 0))
    ledger.items[1].confirmations += [
        Confirmation(12, 2, 0, Outcome.RECIRC_FULL, 1),
        Confirmation(12, 2, 0, Outcome.REJECT, 1),
    ]
    return ledger


def _decision(tid: int, codes: list[str], reason: str, chute: int = 4) -> dict[str, Any]:
    return {"tracking_id": tid, "seq": 10 + tid, "codes": codes, "reason": reason, "chute": chute}


def _result(
    tid: int, outcome: str, chute_actual: int, recirc: int, assigned: int
) -> dict[str, Any]:
    return {
        "tracking_id": tid,
        "seq": 10 + tid,
        "outcome": outcome,
        "chute_actual": chute_actual,
        "recirculations": recirc,
        "chute_assigned": assigned,
    }


def test_right_pairings_pass() -> None:
    decisions = [
        _decision(1, ["A1", "B1"], "ok"),
        _decision(2, [], "no_read", 59),
        _decision(3, [], "timeout", 56),
    ]
    assert pairing_problems(_ledger(), decisions) == []
    # Decided without its scan: a read that came too late.
    assert pairing_problems(_ledger(), [_decision(1, [], "timeout", 56)]) == []


def test_wrong_pairings_are_caught() -> None:
    ledger = _ledger()
    # Another item's codes, part of them, codes for a pass with none, an unknown request.
    assert pairing_problems(ledger, [_decision(2, ["A1", "B1"], "ok")])
    assert pairing_problems(ledger, [_decision(1, ["A1"], "ok")])
    assert pairing_problems(ledger, [_decision(3, ["A1", "B1"], "ok")])
    assert pairing_problems(ledger, [_decision(9, [], "timeout")])
    # No codes, yet decided as if it had read nothing while its codes were sent.
    assert pairing_problems(ledger, [_decision(1, [], "no_read", 59)])


def test_results_against_the_confirmations() -> None:
    ledger = _ledger()
    decisions = [_decision(1, ["A1", "B1"], "ok"), _decision(2, [], "no_read", 59)]
    right = [
        _result(1, "sorted", 4, 0, 4),
        _result(2, "recirc_full", 0, 1, 59),
        _result(2, "reject", 0, 1, 59),
    ]
    assert result_problems(ledger, right, decisions) == []
    assert result_problems(ledger, [_result(1, "reject", 4, 0, 4)], decisions)  # outcome
    assert result_problems(ledger, [_result(1, "sorted", 5, 0, 4)], decisions)  # chute_actual
    assert result_problems(ledger, [_result(1, "sorted", 4, 1, 4)], decisions)  # recirculations
    assert result_problems(ledger, [_result(1, "sorted", 4, 0, 7)], decisions)  # chute_assigned
    assert result_problems(ledger, [_result(3, "sorted", 4, 0, 4)], decisions)  # no confirmation


def test_plan_problems_catch_a_decision_the_plan_does_not_give() -> None:
    from tests.ledgercheck import plan_problems
    from tests.linekit import PLAN_PATH

    casablanca = "]C100061110010001000012" + "42020250"  # AI 420: domestic, Casablanca
    right = {
        "tracking_id": 1, "seq": 1, "codes": [casablanca], "recirculations": 0,
        "destination": "CASABLANCA", "chute": 3, "reason": "ok",
        "barcode": "061110010001000012",
    }  # fmt: skip
    assert plan_problems([((casablanca,), right)], PLAN_PATH) == []
    full = {**right, "reason": "no_chute", "chute": 60}  # the line had no usable chute
    assert plan_problems([((casablanca,), full)], PLAN_PATH) == []
    for wrong in (
        {**right, "destination": "RABAT"},
        {**right, "chute": 7},  # a chute of RABAT
        {**right, "reason": "no_rule", "destination": "", "chute": 57},
        {**right, "barcode": casablanca},
        {**full, "chute": 59},
    ):
        assert len(plan_problems([((casablanca,), wrong)], PLAN_PATH)) == 1, wrong
