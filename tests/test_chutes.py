"""The chute book (sorter.chutes): PLC bits and host marks, load and counts, plan swaps."""

from __future__ import annotations

import numpy as np

from sorter.chutes import STATUS_BITS, ChuteBook
from sorter.kernel import ChuteState
from sorter.line_events import ChuteChange
from sorter.ports import ChuteFlag, Outcome

MACHINE = frozenset({1, 2, 3, 4})
OWNERS = {1: "A", 2: "A", 3: "B"}


def book(n_slots: int = 6) -> ChuteBook:
    state = ChuteState(np.zeros(n_slots, np.uint8), np.zeros(n_slots, np.int64))
    return ChuteBook(state, MACHINE, OWNERS)


def test_the_status_bits_are_those_of_the_register_map() -> None:
    # docs/interfaces.md section 3: bit 0 full, bit 1 disabled, bit 2 fault.
    assert (ChuteFlag.FULL, ChuteFlag.DISABLED, ChuteFlag.FAULT) == (1, 2, 4)
    assert STATUS_BITS == 0b111


def test_the_first_status_read_announces_every_machine_chute() -> None:
    b = book()
    changes = b.on_plc_status(1, [0, ChuteFlag.FULL, 0, 0, 0])
    # Chute 5 is read but not on the machine: set, never announced.
    assert [c.chute for c in changes] == [1, 2, 3, 4]
    assert changes[1] == ChuteChange(2, ChuteFlag.FULL, "A", 0)
    assert changes[3].destination == ""
    assert b.on_plc_status(1, [0, ChuteFlag.FULL, 0, 0, 0]) == []  # nothing changed


def test_unknown_bits_are_ignored_and_flags_reach_the_kernel_array() -> None:
    b = book()
    b.on_plc_status(1, [0b1000, ChuteFlag.FAULT | 0b10000])
    assert b.state.flags[1] == 0
    assert b.state.flags[2] == ChuteFlag.FAULT
    assert b.usable(1)
    assert not b.usable(2)
    assert b.flags(99) == ChuteFlag(0)  # beyond the arrays: no flags


def test_host_marks_and_plc_bits_add_up() -> None:
    b = book()
    b.on_plc_status(1, [0, 0, 0, 0])
    [change] = b.set_host_disabled(3, True)
    assert change.flags == ChuteFlag.DISABLED
    assert b.on_plc_status(3, [ChuteFlag.FULL]) == [
        ChuteChange(3, ChuteFlag.FULL | ChuteFlag.DISABLED, "B", 0)
    ]
    [change] = b.set_host_disabled(3, False)
    assert change.flags == ChuteFlag.FULL  # the PLC still says full
    assert not b.usable(3)
    assert b.set_host_disabled(3, False) == []  # already enabled: nothing to say


def test_emptied_restarts_the_count_and_is_announced_even_when_unchanged() -> None:
    b = book()
    b.on_plc_status(1, [0, 0, 0, 0])
    for _ in range(3):
        b.on_confirmed(2, Outcome.SORTED, 2)
    assert b.count(2) == 3
    [full] = b.set_host_full(2, True)
    assert full == ChuteChange(2, ChuteFlag.FULL, "A", 3)
    emptied = b.set_host_full(2, False)
    # The mark cleared (a change), then the count announced again: both say ok, count 0.
    assert emptied == [ChuteChange(2, ChuteFlag(0), "A", 0)] * 2
    assert b.set_host_full(2, False) == [ChuteChange(2, ChuteFlag(0), "A", 0)]


def test_load_goes_down_at_confirmation_never_below_zero() -> None:
    b = book()
    b.state.load[1] = 2  # as the kernel's decision step leaves it
    b.on_confirmed(1, Outcome.RECIRC_FULL, 0)
    assert b.state.load[1] == 1
    assert b.count(1) == 0  # recirculated: not sorted anywhere
    b.on_confirmed(1, Outcome.SORTED, 3)  # sorted into another chute than assigned
    b.on_confirmed(1, Outcome.SORTED, 3)
    assert b.state.load[1] == 0
    assert b.count(3) == 2
    b.on_confirmed(0, Outcome.SORTED, 0)  # a result this process never decided
    b.on_confirmed(99, Outcome.SORTED, 0)  # a chute beyond the arrays
    assert b.state.load.tolist() == [0] * 6


def test_a_new_plan_keeps_load_and_flags_and_announces_its_machine() -> None:
    b = book()
    b.on_plc_status(1, [ChuteFlag.FULL, 0, 0, 0])
    b.set_host_disabled(2, True)
    b.state.load[3] = 5
    new = ChuteState(np.zeros(4, np.uint8), np.zeros(4, np.int64))  # fewer slots
    changes = b.adopt(new, frozenset({1, 2, 3}), {1: "C"})
    assert b.state is new
    assert new.load.tolist() == [0, 0, 0, 5]
    assert new.flags.tolist() == [0, ChuteFlag.FULL, ChuteFlag.DISABLED, 0]
    assert changes == [
        ChuteChange(1, ChuteFlag.FULL, "C", 0),
        ChuteChange(2, ChuteFlag.DISABLED, "", 0),
        ChuteChange(3, ChuteFlag(0), "", 0),
    ]
