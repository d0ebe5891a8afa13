"""The first item after start-up decides like the thousandth: the warm-up leaves nothing
to look up or load on it."""

from __future__ import annotations

from typing import Any

import pytest

import sorter.fastpath_entry
from benchmarks.common import PLAN
from sorter.decide import Decider
from sorter.kernel import ChuteState
from sorter.plan import compile_plan, load_plan


def test_the_first_decision_after_the_warm_up_looks_up_no_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = compile_plan(load_plan(PLAN))
    decider = Decider(plan, ChuteState.for_plan(plan), "Africa/Casablanca", site_country="MA")
    decider.warm()
    lookups: list[Any] = []
    real = sorter.fastpath_entry.compiled_entry

    def counted(dispatcher: Any, args: tuple[Any, ...]) -> Any:
        lookups.append(dispatcher)
        return real(dispatcher, args)

    monkeypatch.setattr(sorter.fastpath_entry, "compiled_entry", counted)
    choice = decider.decide(("RB123456785GB",))
    assert choice.chute > 0
    assert lookups == []
    # Another state (a plan reload's) is bound by its first decision, as before.
    decider.state = ChuteState.for_plan(plan)
    decider.decide(("RB123456785GB",))
    assert len(lookups) == 1
