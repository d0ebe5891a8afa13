"""The chute book: the one owner of every chute's state on the host.

Who writes what:
- the PLC's status bits (its chute status block) and the host's own marks (an operator's
  disable or full): here only, and their sum is the chute's effective flags;
- `ChuteState.flags`, the array the numba kernel reads: here only;
- `ChuteState.load`, items sent to a chute and not yet confirmed: the kernel's decision
  step adds one for the chute it picks (inside `sorter.kernel.decide_one`, so a batch
  balances as it goes); everything else, the removal at the item's confirmation and the
  carry-over to a reloaded plan, happens here;
- the count of items confirmed sorted into each chute (P/chutes/N `count`): here only.

Every change a consumer should see comes back as a `ChuteChange`; the caller publishes it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from sorter.kernel import ChuteState
from sorter.line_events import ChuteChange
from sorter.ports import ChuteFlag, Outcome

__all__ = ["STATUS_BITS", "ChuteBook"]

# The bits of a status word sorterd knows (docs/interfaces.md section 3); others are ignored.
STATUS_BITS = int(ChuteFlag.FULL | ChuteFlag.DISABLED | ChuteFlag.FAULT)


class ChuteBook:
    """Chute flags, load and sorted counts of one line, across plan reloads."""

    def __init__(
        self, state: ChuteState, machine_chutes: Collection[int], owners: Mapping[int, str]
    ) -> None:
        self.state = state
        self._machine_chutes = machine_chutes
        self._owners = owners
        self._plc_bits: dict[int, int] = {}
        self._host_bits: dict[int, int] = {}
        self._sorted: dict[int, int] = {}
        # Until the PLC's first status read, every chute touched is announced even if its
        # flags did not change: consumers have seen nothing from this process yet.
        self._known = False

    def flags(self, chute: int) -> ChuteFlag:
        """The effective flags of a chute (PLC's and host's together)."""
        flags = self.state.flags
        return ChuteFlag(int(flags[chute]) if 0 <= chute < flags.shape[0] else 0)

    def usable(self, chute: int) -> bool:
        """Whether the kernel may send an item to the chute now."""
        return not self.flags(chute) & STATUS_BITS

    def count(self, chute: int) -> int:
        """Items confirmed sorted into the chute since the start or its last emptying."""
        return self._sorted.get(chute, 0)

    def on_plc_status(self, first_chute: int, status: Sequence[int]) -> list[ChuteChange]:
        """A read of the PLC's chute status block, starting at `first_chute`."""
        changes: list[ChuteChange] = []
        plc_bits = self._plc_bits
        for i, value in enumerate(status):
            chute = first_chute + i
            bits = value & STATUS_BITS
            if plc_bits.get(chute) != bits or not self._known:
                plc_bits[chute] = bits
                self._apply(chute, changes)
        self._known = True
        return changes

    def set_host_disabled(self, chute: int, disabled: bool) -> list[ChuteChange]:
        """A chute the host (an operator's command) takes out of service, or back."""
        changes: list[ChuteChange] = []
        self._set_host_bit(chute, ChuteFlag.DISABLED, disabled, changes)
        return changes

    def set_host_full(self, chute: int, full: bool) -> list[ChuteChange]:
        """An operator marks a chute full by hand (a sensor that fails to), or emptied:
        emptied also restarts its count, announced even when the state stays the same."""
        changes: list[ChuteChange] = []
        if not full:
            self._sorted[chute] = 0
        self._set_host_bit(chute, ChuteFlag.FULL, full, changes)
        if not full:
            self._apply(chute, changes, force=True)
        return changes

    def on_confirmed(self, chute_assigned: int, outcome: Outcome, chute_actual: int) -> None:
        """An item's confirmation: it no longer loads the chute it was sent to, and one
        sorted into a chute counts there."""
        load = self.state.load
        if 0 < chute_assigned < load.shape[0] and load[chute_assigned] > 0:
            load[chute_assigned] -= 1
        if outcome is Outcome.SORTED and chute_actual > 0:
            self._sorted[chute_actual] = self._sorted.get(chute_actual, 0) + 1

    def adopt(
        self, state: ChuteState, machine_chutes: Collection[int], owners: Mapping[int, str]
    ) -> list[ChuteChange]:
        """A reloaded plan's arrays: load and flags carry over, and every chute of the new
        machine is announced (its owner may have changed)."""
        n = min(self.state.load.shape[0], state.load.shape[0])
        state.load[:n] = self.state.load[:n]
        self.state = state
        self._machine_chutes = machine_chutes
        self._owners = owners
        changes: list[ChuteChange] = []
        for chute in sorted(machine_chutes):
            self._apply(chute, changes, force=True)
        return changes

    def _set_host_bit(
        self, chute: int, bit: ChuteFlag, on: bool, changes: list[ChuteChange]
    ) -> None:
        bits = self._host_bits.get(chute, 0)
        bits = bits | int(bit) if on else bits & ~int(bit)
        if bits:
            self._host_bits[chute] = bits
        else:
            self._host_bits.pop(chute, None)
        self._apply(chute, changes)

    def _apply(self, chute: int, changes: list[ChuteChange], force: bool = False) -> None:
        """Effective flags = the PLC's bits or the host's; a change of a machine chute is
        announced."""
        flags = self.state.flags
        if chute >= flags.shape[0]:
            return
        bits = self._plc_bits.get(chute, 0) | self._host_bits.get(chute, 0)
        if bits == flags[chute] and self._known and not force:
            return
        flags[chute] = bits
        if chute in self._machine_chutes:
            changes.append(
                ChuteChange(chute, ChuteFlag(bits), self._owners.get(chute, ""), self.count(chute))
            )
