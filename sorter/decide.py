"""From what the scanners read to a chute: classification, multi-read resolution, the kernel.

One `Decider` per loaded plan. Everything here is synchronous and allocation-light, since
it runs once per item on the event loop between a PLC poll and the reply write.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sorter.barcodes import CodeKind, Label, classify
from sorter.fastpath import FastFeatures, signed_mask
from sorter.fastpath_entry import DecideCall
from sorter.feeds import LiveManifest, Source
from sorter.kernel import ChuteState, ItemFeatures, Kernel
from sorter.manifest import Manifest, ManifestRow
from sorter.plan import CompiledPlan, SortPlan, letters_index
from sorter.ports import Reason, SortRequest
from sorter.postcode import NO_POSTCODE, postcode_features

__all__ = [
    "NOT_MEASURED",
    "Choice",
    "Decider",
    "Measures",
    "MinuteClock",
    "chute_owners",
    "measures_of",
]

# Which code names the item when a parcel carries several labels: a carrier tracking number
# before a logistics unit number, and those before codes nobody recognises.
_OK = int(Reason.OK)
_CUSTOMS_HOLD = int(Reason.CUSTOMS_HOLD)
_TRACKING_PRIORITY = {CodeKind.S10: 0, CodeKind.UPS: 1, CodeKind.DHL: 2, CodeKind.LP: 3}
_CARRIERS = frozenset(_TRACKING_PRIORITY)
# sorter.manifest.delta's source codes, as sorter.fastpath answers them.
_SOURCES: tuple[Source | None, ...] = (None, Source.FILE, Source.FEED, Source.CUSTOMS)
_REASONS = tuple(Reason(i) for i in range(len(Reason)))  # by value


# One item of each path through classification and multi-read resolution (biip parses
# the unusual GS1 labels; its first call loads its tables).
_WARM_ITEMS: tuple[tuple[str, ...], ...] = (
    ("RB123456785GB",),
    ("]C100061110010001000012420" + "20250",),
    ("(00)106141411234567897(421)25075001",),
    ("]C10106141411234567897" + "10ABC",),  # GTIN + batch: the biip path
    ("RB123456785GB", "1Z999AA10123456784", "]C142020250"),
    ("RB123456784GB",),
)


# length_mm, width_mm, height_mm, weight_g of one item as the PLC reported them (0: not
# measured).
Measures = tuple[int, int, int, int]
NOT_MEASURED: Measures = (0, 0, 0, 0)


def measures_of(request: SortRequest) -> Measures:
    return request.length_mm, request.width_mm, request.height_mm, request.weight_g


@dataclass(frozen=True, slots=True)
class Choice:
    """What the decider chose for one item."""

    destination: str
    chute: int
    reason: Reason
    barcode: str
    # Who decided the pre-advice the item was routed with (file, feed, customs); None
    # when it had none (P/cmd/tracking). Not compared: two choices are equal when they
    # route alike.
    source: Source | None = field(default=None, compare=False)


def _unread(reason: Reason, recirculations: int, minute: int, dims: Measures) -> ItemFeatures:
    """Features of an item whose reason is known before any rule (no destination)."""
    return ItemFeatures(int(reason), -1, 0, -1, -1, -1, 0, recirculations, minute, -1, *dims)


def _naming_candidates(valid: Sequence[Label]) -> list[Label | None]:
    """The codes that may name the item, best first: carrier codes by priority, else the
    SSCCs of GS1 labels, else codes nobody recognises; [None] when none is left."""
    carriers = [lab for lab in valid if lab.kind in _CARRIERS]
    if carriers:
        carriers.sort(key=lambda lab: _TRACKING_PRIORITY[lab.kind])
        return [*carriers]
    names: list[Label | None] = [lab for lab in valid if lab.kind is CodeKind.GS1 and lab.barcode]
    return names or [lab for lab in valid if lab.kind is CodeKind.UNKNOWN] or [None]


class MinuteClock:
    """The site-local minute of the day, worked out once a minute.

    The time zone conversion (zoneinfo, or the machine's local time) costs 1-2 us; this
    runs for every item. The minute is kept until the next local minute boundary, and
    recomputed there, so that it is exact across a change of UTC offset (DST changes at a
    local minute boundary, and every offset in the tz database is whole seconds). A clock
    stepped backwards recomputes too.
    """

    __slots__ = ("_from_ns", "_minute", "_tz", "_until_ns")

    def __init__(self, tz: ZoneInfo | None) -> None:
        self._tz = tz
        self._minute = -1
        self._from_ns = self._until_ns = 0

    def minute(self, now_ns: int | None = None) -> int:
        """The minute of the day at `now_ns` (ns since the epoch; default now)."""
        t = time.time_ns() if now_ns is None else now_ns
        if self._from_ns <= t < self._until_ns:
            return self._minute
        seconds = t // 1_000_000_000
        if self._tz is not None:
            local = dt.datetime.fromtimestamp(seconds, self._tz)
            hour, minute, second = local.hour, local.minute, local.second
        else:
            tm = time.localtime(seconds)
            hour, minute, second = tm.tm_hour, tm.tm_min, tm.tm_sec
        start = seconds - second  # this local minute began on a whole epoch second
        self._from_ns = start * 1_000_000_000
        self._until_ns = (start + 60) * 1_000_000_000
        self._minute = hour * 60 + minute
        return self._minute


def chute_owners(plan: SortPlan) -> dict[int, str]:
    """Which destination owns each chute (first owner wins), then the function chutes under
    their reason's word, for P/chutes/N."""
    owners: dict[int, str] = {}
    for d in plan.destinations:
        for c in (*d.chutes, *d.overflow):
            owners.setdefault(c, d.name)
    for reason, c in plan.functions.items():
        owners.setdefault(c, reason.word)
    return owners


class Decider:
    """Decides chutes with one compiled plan and the line's live chute state.

    `site_country`: ISO 3166-1 alpha-2 of the site, the destination country of an AI 420
    (domestic) label and of pre-advice that gives a postcode without a country.
    `fast_path`: `decide` tries sorter.fastpath first (False: the Python path alone, which
    the tests hold the fast path to).
    """

    def __init__(
        self,
        plan: CompiledPlan,
        state: ChuteState,
        timezone: str | None = None,
        kernel: Kernel | None = None,
        site_country: str | None = None,
        fast_path: bool = True,
    ) -> None:
        self.plan = plan
        self.kernel = kernel or Kernel(plan)
        self.state = state
        self._clock = MinuteClock(ZoneInfo(timezone) if timezone else None)
        self.sort_plan = sort_plan = plan.plan
        self._has_cutoffs = any(d.cutoff_min >= 0 for d in sort_plan.destinations)
        self._names = [d.name for d in sort_plan.destinations]
        self._regexes = sort_plan.regexes
        self._site_country = letters_index(site_country) if site_country else -1
        self._manifest: Manifest | None = None
        self._live: LiveManifest | None = None
        self._source: Source | None = None  # of the last lookup that found a row
        self.manifest_lookups = 0
        self.manifest_hits = 0
        # Invalid codes read beside valid ones, and ignored (P/stats `codes`).
        self.invalid_ignored = 0
        self._decide_call = DecideCall(self.kernel)
        self._fast = (
            FastFeatures(plan, self.kernel._tables, self._site_country) if fast_path else None
        )

    @property
    def destination_names(self) -> list[str]:
        return list(self._names)

    def use_manifest(self, manifest: Manifest | LiveManifest | None) -> None:
        """Swap the pre-advice in one assignment: decisions never see half an index. A
        LiveManifest (files and feeds) is used as it changes, under this plan's names
        (its destinations are set to them: a plan reload's new decider remaps it)."""
        if isinstance(manifest, LiveManifest):
            manifest.set_destinations(self._names)
            self._live, self._manifest = manifest, None
        else:
            self._live = None
            self._manifest = None if manifest is None else manifest.for_destinations(self._names)
        if self._fast is not None:
            self._fast.use_manifest(self._live if self._live is not None else self._manifest)

    @property
    def manifest(self) -> Manifest | None:
        """The file manifest (under a LiveManifest: its files), for P/stats."""
        return self._live.files if self._live is not None else self._manifest

    @property
    def live(self) -> LiveManifest | None:
        return self._live

    def warm(self) -> None:
        """Everything the first item would otherwise pay for: the kernels (compiled or
        loaded from numba's cache), biip's tables, the regexes, a multi-read."""
        self.kernel.warm()
        state = self.state
        self.state = ChuteState(state.flags.copy(), state.load.copy())
        lookups, hits = self.manifest_lookups, self.manifest_hits
        try:
            for codes in _WARM_ITEMS:
                self.decide(codes)
        finally:
            self.state = state
            self.kernel.rr_next[:] = 0
            self.manifest_lookups, self.manifest_hits = lookups, hits
        # The warm-up decided with a copy of the state: bound to the line's own arrays now,
        # the first item does not look up the compiled entry point (0.2 ms).
        self._decide_call.bind(state)

    def minute_of_day(self) -> int:
        """Site-local minute of the day for cut-off times; -1 when the plan has none."""
        return self._clock.minute() if self._has_cutoffs else -1

    def _features(
        self, labels: Sequence[Label], recirculations: int, minute: int, dims: Measures
    ) -> tuple[ItemFeatures, str]:
        """Pick the code that names the item and combine it with the ship-to labels.

        A carrier code (S10, UPS, DHL, LP) names the item, else the SSCC of a GS1 label,
        else a code nobody recognises. Every naming candidate is combined with every
        ship-to label (AI 420/421), so that two ship-to labels that lead to different
        destinations conflict whatever else was read. Candidates agree when they lead to
        the same destination; one that leads nowhere (no rule) does not disagree with one
        that does. Origin and S10 service come from the naming code when it is an S10, else
        from the item's first S10 code.
        """
        valid = [lab for lab in labels if lab.valid]
        self.invalid_ignored += len(labels) - len(valid)
        names = _naming_candidates(valid)
        ship_to = [lab for lab in valid if lab.kind is CodeKind.GS1 and lab.ship_to]
        s10 = next((lab for lab in valid if lab.kind is CodeKind.S10), None)
        # One pre-advice lookup per naming code, however many ship-to labels it pairs with.
        looked_up = [(t, self._lookup(t, valid), self._source) for t in names]
        candidates = [(t, p, row, src) for t, row, src in looked_up for p in (ship_to or (None,))]
        if len(candidates) == 1:
            t, p, row, self._source = candidates[0]
            return self._build(t, p, s10, row, recirculations, minute, dims)
        built = [
            self._build(t, p, s10, row, recirculations, minute, dims) for t, p, row, _ in candidates
        ]
        dests = [self.kernel.match(f) for f, _ in built]
        if len({d for d in dests if d >= 0}) > 1:
            self._source = None
            return _unread(Reason.MULTI_READ_CONFLICT, recirculations, minute, dims), built[0][1]
        chosen = next((i for i, d in enumerate(dests) if d >= 0), 0)
        self._source = candidates[chosen][3]
        return built[chosen]

    def _lookup(self, t: Label | None, valid: Sequence[Label]) -> ManifestRow | None:
        """The pre-advice under the naming code, else under any other code of the item;
        who decided it in self._source."""
        self._source = None
        live = self._live
        manifest = live if live is not None else self._manifest
        if manifest is None or not manifest.size:
            return None
        codes = [t.barcode] if t is not None and t.barcode else []
        codes += [lab.barcode for lab in valid if lab is not t and lab.barcode]
        if not codes:
            return None
        self.manifest_lookups += 1
        for code in codes:
            if live is not None:
                row, source = live.lookup_source(code)
            else:
                row, source = manifest.lookup(code), Source.FILE
            if row is not None:
                self.manifest_hits += 1
                self._source = source
                return row
        return None

    def _build(
        self,
        t: Label | None,
        p: Label | None,
        s10: Label | None,
        row: ManifestRow | None,
        recirculations: int,
        minute: int,
        dims: Measures,
    ) -> tuple[ItemFeatures, str]:
        # Runs once per item: positional construction and few calls on purpose.
        service = origin = country = -1
        pc, digits = NO_POSTCODE, 0
        # Origin and service: the naming code's own when it is an S10, else the item's S10
        # (a UPS or shipper's code beside it names no other origin).
        if t is not None and t.kind is CodeKind.S10:
            s10 = t
        if s10 is not None:
            service = letters_index(s10.s10_service)
            origin = letters_index(s10.origin)
        if p is not None:
            # The label's ship-to wins as a whole: AI 421 names the country, AI 420 is
            # domestic (the site's country).
            pc, digits = postcode_features(p.postcode)
            country = letters_index(p.country) if p.country else self._site_country
        reason = _OK
        dest = -1
        if row is not None:
            # Pre-advice fills in what the labels lack; a customs hold overrides the rest.
            if row.customs_hold:
                reason = _CUSTOMS_HOLD
            if p is None:
                pc, digits = row.postcode, row.postcode_digits
                if row.country >= 0:
                    country = row.country
                elif row.postcode != NO_POSTCODE:
                    country = self._site_country
            if origin < 0:
                origin = row.origin
            if service < 0:
                service = row.service
            if p is None:
                # A ship-to label wins as a whole: AI 420 makes the item domestic whatever
                # the manifest says, its destination included.
                dest = row.destination
        barcode = t.barcode if t is not None else p.raw if p is not None else ""
        mask = self._regex_mask(t, p) if self._regexes else 0
        return ItemFeatures(
            reason, pc, digits, service, country, origin, mask, recirculations, minute, dest,
            *dims,
        ), barcode  # fmt: skip

    def _regex_mask(self, t: Label | None, p: Label | None) -> int:
        """Bit i set when the plan's barcode regex i finds itself in any text of the item's
        naming code (as read, and its tracking code) or of its ship-to label."""
        raws: tuple[str, ...]
        if t is not None:
            raws = (t.raw,) if t.raw == t.barcode else (t.raw, t.barcode)
            if p is not None and p is not t:
                raws = (*raws, p.raw)
        elif p is not None:
            raws = (p.raw,)
        else:
            return 0
        mask = 0
        bit = 1
        for pattern in self._regexes:
            for raw in raws:
                if pattern.search(raw):
                    mask |= bit
                    break
            bit <<= 1
        return signed_mask(mask)

    def features(
        self,
        codes: Sequence[str],
        recirculations: int,
        minute: int | None = None,
        dims: Measures = NOT_MEASURED,
        identifiers: bool = False,
    ) -> tuple[ItemFeatures, str]:
        """Kernel input for one item and the barcode that names it. `minute`: site-local
        minute of the day for cut-offs (-1 applies none); default now. `dims`: the
        request's length_mm, width_mm, height_mm, weight_g. `identifiers`: the codes come
        from heads that always send AIM symbology identifiers (bare digits are not GS1)."""
        if minute is None:
            minute = self.minute_of_day()
        self._source = None
        if len(codes) == 1:
            # One code, by far the common case: no multi-read resolution to do.
            lab = classify(codes[0], identifiers)
            if lab.valid:
                if lab.kind is CodeKind.GS1:
                    t = lab if lab.barcode else None
                    p = lab if lab.ship_to else None
                    row = self._lookup(t, (lab,))
                    return self._build(t, p, None, row, recirculations, minute, dims)
                s10 = lab if lab.kind is CodeKind.S10 else None
                row = self._lookup(lab, (lab,))
                return self._build(lab, None, s10, row, recirculations, minute, dims)
            labels = [lab]
        elif not codes:
            return _unread(Reason.NO_READ, recirculations, minute, dims), ""
        else:
            labels = [classify(c, identifiers) for c in codes]
        if not any(lab.valid for lab in labels):
            return _unread(Reason.INVALID_CODE, recirculations, minute, dims), (
                labels[0].barcode or labels[0].raw
            )
        return self._features(labels, recirculations, minute, dims)

    def decide(
        self,
        codes: Sequence[str],
        recirculations: int = 0,
        dims: Measures = NOT_MEASURED,
        identifiers: bool = False,
        minute: int | None = None,
    ) -> Choice:
        """The chute for an item's codes (`features`, then the kernel): through
        sorter.fastpath when it can, else the Python path, which decides alike. `minute`:
        as for `features` (default now)."""
        fast = self._fast.features(codes, identifiers, dims) if self._fast is not None else None
        if fast is None:
            features, barcode = self.features(codes, recirculations, minute, dims, identifiers)
            return self.decide_features(features, barcode, self._source)
        out, joined = fast
        (_, reason, pc, digits, service, country, origin, mask, dest, bs, be, source,
         lookups, hits, invalid) = out  # fmt: skip
        if lookups:
            self.manifest_lookups += lookups
            self.manifest_hits += hits
        if invalid:
            self.invalid_ignored += invalid
        self._source = src = _SOURCES[source]
        d, c, r = self._decide_call(
            reason, pc, digits, service, country, origin, mask, recirculations,
            self.minute_of_day() if minute is None else minute, dest, *dims, state=self.state,
        )  # fmt: skip
        return Choice(self._names[d] if d >= 0 else "", c, _REASONS[r], joined[bs:be], src)

    def decide_timeout(self, recirculations: int, dims: Measures = NOT_MEASURED) -> Choice:
        """An item whose scan did not come in time: timeout, unless it used up its
        recirculations or is out of range (the kernel's order, as for every other item)."""
        return self.decide_features(_unread(Reason.TIMEOUT, recirculations, -1, dims), "")

    def decide_features(
        self, features: ItemFeatures, barcode: str, source: Source | None = None
    ) -> Choice:
        """`source`: who decided the pre-advice in `features` (`last_source` after
        `features`), carried into the Choice."""
        dest, chute, reason = self._decide_call(*features, state=self.state)
        return Choice(
            self._names[dest] if dest >= 0 else "", chute, _REASONS[reason], barcode, source
        )

    @property
    def last_source(self) -> Source | None:
        """Who decided the pre-advice of the item `features` last built; None without."""
        return self._source

    def function_chute(self, reason: Reason) -> int:
        return int(self.plan.function_chute[int(reason)])

    def destination_of_chute(self) -> dict[int, str]:
        """Which destination owns each chute (first owner wins), for P/chutes/N."""
        return chute_owners(self.sort_plan)
