"""From what the scanners read to a chute: classification, multi-read resolution, the kernel.

One `Decider` per loaded plan. Everything here is synchronous and allocation-light, since
it runs once per item on the event loop between a PLC poll and the reply write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sorter.barcodes import CodeKind, Label, classify
from sorter.events import Reason
from sorter.kernel import ChuteState, ItemFeatures, Kernel
from sorter.plan import CompiledPlan, letters_index, postcode_number

# Which code names the item when a parcel carries several labels: a carrier tracking number
# before a logistics unit number, and those before codes nobody recognises.
_TRACKING_PRIORITY = {
    CodeKind.S10: 0,
    CodeKind.UPS: 1,
    CodeKind.DHL: 2,
    CodeKind.LP: 3,
    CodeKind.GS1: 4,
    CodeKind.UNKNOWN: 5,
}


@dataclass(frozen=True, slots=True)
class Choice:
    """What the decider chose for one item."""

    destination: str
    chute: int
    reason: Reason
    barcode: str


class Decider:
    """Decides chutes with one compiled plan and the line's live chute state."""

    def __init__(
        self,
        plan: CompiledPlan,
        state: ChuteState,
        timezone: str | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        self.plan = plan
        self.kernel = kernel or Kernel(plan)
        self.state = state
        self._tz = ZoneInfo(timezone) if timezone else None
        self._has_cutoffs = any(d.cutoff_min >= 0 for d in plan.plan.destinations)
        self._names = [d.name for d in plan.plan.destinations]

    def warm(self) -> None:
        self.kernel.warm()

    def minute_of_day(self) -> int:
        """Site-local minute of the day for cut-off times; -1 when the plan has none."""
        if not self._has_cutoffs:
            return -1
        now = dt.datetime.now(self._tz) if self._tz else dt.datetime.now().astimezone()
        return now.hour * 60 + now.minute

    def _features(
        self, labels: Sequence[Label], recirculations: int, minute: int
    ) -> tuple[ItemFeatures, str]:
        """Pick the code that names the item and combine it with postcode-only labels."""
        tracking = sorted(
            (lab for lab in labels if lab.valid and lab.barcode),
            key=lambda lab: _TRACKING_PRIORITY[lab.kind],
        )
        postcodes = [lab for lab in labels if lab.valid and lab.postcode]
        candidates: list[tuple[Label | None, Label | None]] = []
        tracking_or_none: list[Label | None] = [*tracking] if tracking else [None]
        for t in tracking_or_none:
            if t is not None and t.postcode:
                candidates.append((t, t))
            elif postcodes:
                candidates.extend((t, p) for p in postcodes)
            else:
                candidates.append((t, None))
        built = [self._build(t, p, recirculations, minute) for t, p in candidates]
        if len(built) > 1:
            # Several labels agree when they lead to the same destination; a GS1 postcode
            # label beside a tracking barcode combines rather than conflicts.
            dests = {self.kernel.match(f) for f, _ in built}
            if len(dests) > 1:
                barcode = built[0][1]
                return ItemFeatures(
                    reason_in=int(Reason.MULTI_READ_CONFLICT),
                    recirculations=recirculations,
                    minute_of_day=minute,
                ), barcode
        return built[0]

    def _build(
        self, t: Label | None, p: Label | None, recirculations: int, minute: int
    ) -> tuple[ItemFeatures, str]:
        pc, digits = postcode_number(p.postcode) if p is not None else (-1, 0)
        service = letters_index(t.s10_service) if t is not None and t.s10_service else -1
        country_code = (t.country if t is not None and t.country else "") or (
            p.country if p is not None else ""
        )
        mask = 0
        raws = {lab.raw for lab in (t, p) if lab is not None}
        if t is not None:
            raws.add(t.barcode)
        for bit, pattern in enumerate(self.plan.plan.regexes):
            if any(pattern.search(raw) for raw in raws):
                mask |= 1 << bit
        barcode = t.barcode if t is not None else (p.raw if p is not None else "")
        return ItemFeatures(
            pc=pc,
            pc_digits=digits,
            service=service,
            country=letters_index(country_code) if country_code else -1,
            regex_mask=mask,
            recirculations=recirculations,
            minute_of_day=minute,
        ), barcode

    def features(self, codes: Sequence[str], recirculations: int) -> tuple[ItemFeatures, str]:
        """Kernel input for one item and the barcode that names it."""
        minute = self.minute_of_day()
        if not codes:
            return ItemFeatures(
                reason_in=int(Reason.NO_READ), recirculations=recirculations, minute_of_day=minute
            ), ""
        labels = [classify(c) for c in codes]
        if not any(lab.valid for lab in labels):
            return ItemFeatures(
                reason_in=int(Reason.INVALID_CODE),
                recirculations=recirculations,
                minute_of_day=minute,
            ), labels[0].barcode or labels[0].raw
        return self._features(labels, recirculations, minute)

    def decide(self, codes: Sequence[str], recirculations: int = 0) -> Choice:
        features, barcode = self.features(codes, recirculations)
        return self.decide_features(features, barcode)

    def decide_features(self, features: ItemFeatures, barcode: str) -> Choice:
        dest, chute, reason = self.kernel.decide(features, self.state)
        return Choice(self._names[dest] if dest >= 0 else "", chute, reason, barcode)

    def function_chute(self, reason: Reason) -> int:
        return int(self.plan.function_chute[int(reason)])

    def destination_of_chute(self) -> dict[int, str]:
        """Which destination owns each chute (first owner wins), for P/chutes/N."""
        owners: dict[int, str] = {}
        for d in self.plan.plan.destinations:
            for c in (*d.chutes, *d.overflow):
                owners.setdefault(c, d.name)
        for reason, c in self.plan.plan.functions.items():
            owners.setdefault(c, reason.word)
        return owners
