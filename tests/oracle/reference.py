"""The oracle: the sort decision written again from the specifications alone.

Plain Python, no speed tricks, and nothing borrowed from the product: a bug in the
product's parsing or decision logic has to be written twice, the same way, to go unseen.
Section letters (A-E) refer to the working spec SPEC-v2-decision.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tests.oracle.codes import Code, Kind, classify, normalise_postcode
from tests.oracle.iso3166 import ISO_ALPHA2
from tests.oracle.plan import Destination, Plan, Rule, SizeClass, parse_plan

FULL, DISABLED, FAULT = 1, 2, 4
HOLD_WORDS = frozenset({"hold", "yes"})
CUSTOMS_WORDS = HOLD_WORDS | {"no", "clear", "release", "none", ""}
# Naming codes in order of preference (D.2); GS1 codes name an item only by their SSCC.
NAMING_ORDER = {Kind.S10: 0, Kind.UPS: 1, Kind.DHL: 2, Kind.LP: 3}


class OracleDecision(NamedTuple):
    """One decision; a tuple, so `tuple(d)` compares with the product's four fields."""

    destination: str  # "" for none (function-chute reasons other than after_cutoff/no_chute)
    chute: int
    reason: str  # the reason word
    barcode: str


@dataclass(frozen=True, slots=True)
class ManifestRow:
    barcode: str
    destination: str = ""
    postcode: str = ""
    country: str = ""
    origin: str = ""
    service: str = ""
    hold: bool = False


def parse_manifest_row(row: Mapping[str, str], names: Mapping[str, object]) -> ManifestRow | None:
    """A manifest row, or None when it is bad (a bad row is skipped whole)."""
    get = {k: row.get(k) or "" for k in ("barcode", "destination", "postcode", "country")}
    origin, service = row.get("origin") or "", row.get("service") or ""
    customs = (row.get("customs") or "").lower()
    barcode = get["barcode"]
    if not barcode or len(barcode) > 32 or not all(" " <= c <= "~" for c in barcode):
        return None
    if any(v and v.upper() not in ISO_ALPHA2 for v in (get["country"], origin)):
        return None
    if service and not (len(service) == 2 and service.isascii() and service.isalpha()):
        return None
    if customs not in CUSTOMS_WORDS or (get["destination"] and get["destination"] not in names):
        return None
    # The contract: "at least one of destination, postcode, country, origin".
    postcode_given = normalise_postcode(get["postcode"]) != ""  # blanks, hyphens: none
    if not (get["destination"] or postcode_given or get["country"] or origin):
        return None
    return ManifestRow(
        barcode,
        get["destination"],
        get["postcode"],
        get["country"].upper(),
        origin.upper(),
        service.upper(),
        customs in HOLD_WORDS,
    )


@dataclass(frozen=True, slots=True)
class Features:
    """What the rules see of one candidate reading of an item (D.5)."""

    barcode: str = ""
    postcode: str = ""  # normalised, "" for none
    country: str = ""  # "" for unknown
    origin: str = ""
    s10_service: str = ""
    destination: str = ""  # pre-advised by the manifest
    hold: bool = False
    texts: tuple[str, ...] = ()  # what a `barcode` rule searches
    size_class: str | None = None


def size_class_of(classes: Sequence[SizeClass], dims: tuple[int, int, int, int]) -> str | None:
    """The first class whose every limit the item fits; None when it has none.

    A limit on a value that was not measured (0) leaves the class unknown, and the item
    gets no class, unless a measured value already rules that class out.
    """
    length, width, height, weight = dims
    single = {"max_length_mm": length, "max_width_mm": width, "max_height_mm": height}
    single["max_weight_g"] = weight
    for size in classes:
        out = unknown = False
        for key, limit in size.limits.items():
            # max_side_mm: the longest side measured, unknown only when none was.
            side = max(length, width, height)
            values = [side] if key == "max_side_mm" else [single[key]]
            out |= any(v > limit for v in values if v > 0)
            unknown |= any(v <= 0 for v in values)
        if out:
            continue
        return None if unknown else size.name
    return None


def out_of_range(limits: Mapping[str, int], dims: tuple[int, int, int, int]) -> bool:
    """A measured (> 0) value below a machine `min_` or above a `max_` limit."""
    for name, value in zip(("length_mm", "width_mm", "height_mm", "weight_g"), dims, strict=True):
        low, high = limits.get(f"min_{name}", 0), limits.get(f"max_{name}", 1 << 30)
        if value > 0 and not low <= value <= high:
            return True
    return False


def rule_matches(rule: Rule, f: Features) -> bool:
    """Every condition of the rule holds for these features (C)."""
    if rule.postcode is not None and not any(p.matches(f.postcode) for p in rule.postcode):
        return False
    for letters, value in (
        (rule.country, f.country),
        (rule.origin, f.origin),
        (rule.s10_service, f.s10_service),
    ):
        if letters is not None and not letters.matches(value):
            return False
    if rule.barcode is not None and not any(rule.barcode.search(t) for t in f.texts):
        return False
    return rule.size_class is None or f.size_class in rule.size_class


def candidates(valid: Sequence[Code]) -> list[tuple[Code | None, Code | None]]:
    """(naming code, ship-to label) pairs in order (D.2-D.4): carrier codes name the item,
    else SSCCs, else unknown codes; each is paired with every ship-to label."""
    carriers = sorted(
        (c for c in valid if c.kind in NAMING_ORDER), key=lambda c: NAMING_ORDER[c.kind]
    )
    ssccs = [c for c in valid if c.kind == Kind.GS1 and c.barcode]
    unknown = [c for c in valid if c.kind == Kind.UNKNOWN]
    naming: list[Code | None] = [*carriers] or [*ssccs] or [*unknown] or [None]
    labels: list[Code | None] = [c for c in valid if c.kind == Kind.GS1 and c.ship_to]
    return [(t, s) for t in naming for s in (labels or [None])]


class Oracle:
    """The sort decision of one line, from the plan text, a site country and a manifest.

    `flags` (chute -> status bits) may be changed between calls; round-robin pointers and
    per-chute load persist across calls as they do on the line.
    """

    def __init__(
        self,
        plan_text: str,
        site_country: str | None = None,
        manifest_rows: Sequence[Mapping[str, str]] = (),
        identifiers: bool = False,
    ) -> None:
        self.plan: Plan = parse_plan(plan_text)
        self.site_country = site_country or ""
        self.identifiers = identifiers
        self.manifest: dict[str, ManifestRow] = {}
        for row in manifest_rows:
            parsed = parse_manifest_row(row, self.plan.destinations)
            if parsed is not None:  # a later row replaces an earlier one of the same barcode
                self.manifest[parsed.barcode] = parsed
        self.flags: dict[int, int] = {}
        self.load: dict[int, int] = {}
        self.pointer: dict[str, int] = {}

    def _row(self, t: Code | None, valid: Sequence[Code]) -> ManifestRow | None:
        # The naming code first, then every other valid code in read order (D.5).
        keys = [t.barcode] if t is not None else []
        keys += [c.barcode for c in valid if c is not t and c.barcode]
        return next((self.manifest[k] for k in keys if k in self.manifest), None)

    def features(
        self, t: Code | None, s: Code | None, valid: Sequence[Code], size: str | None
    ) -> Features:
        """The features of one candidate (D.5)."""
        row = self._row(t, valid)
        if s is not None:  # the label's ship-to data wins as a whole
            postcode, country = s.postcode, s.country or self.site_country
        elif row is not None:
            postcode = row.postcode
            given = normalise_postcode(row.postcode) != ""  # blanks and hyphens are none
            country = row.country or (self.site_country if given else "")
        else:
            postcode = country = ""
        # Origin and service: the naming S10's, else the item's first S10's (a UPS or a
        # shipper's code beside an S10 does not make the origin unknown).
        s10 = t if t is not None and t.kind == Kind.S10 else None
        s10 = s10 or next((c for c in valid if c.kind == Kind.S10), None)
        texts = (t.raw, t.barcode) if t is not None else ()
        return Features(
            barcode=t.barcode if t is not None else (s.raw if s is not None else ""),
            postcode=normalise_postcode(postcode),
            country=country,
            origin=s10.origin if s10 else (row.origin if row else ""),
            s10_service=s10.s10_service if s10 else (row.service if row else ""),
            # A ship-to label wins as a whole, over the pre-advised destination too.
            destination=row.destination if row and s is None else "",
            hold=row.hold if row else False,
            texts=texts + ((s.raw,) if s is not None else ()),
            size_class=size,
        )

    def destination_of(self, f: Features) -> str:
        """Pre-advised, else the first matching rule's, else "" (no chute state involved)."""
        if f.destination:
            return f.destination
        return next((r.destination for r in self.plan.rules if rule_matches(r, f)), "")

    def item(self, codes: Sequence[str], dims: tuple[int, int, int, int]) -> tuple[str, Features]:
        """(reason word or "" to go on, features of the chosen candidate) (D)."""
        if not codes:
            return "no_read", Features()
        read = [classify(c, self.identifiers) for c in codes]
        valid = [c for c in read if c.valid]
        if not valid:
            return "invalid_code", Features(barcode=read[0].barcode or read[0].raw)
        size = size_class_of(self.plan.size_classes, dims)
        options = [self.features(t, s, valid, size) for t, s in candidates(valid)]
        if len(options) == 1:
            return ("customs_hold" if options[0].hold else ""), options[0]
        found = [self.destination_of(f) for f in options]
        if len({d for d in found if d}) > 1:
            return "multi_read_conflict", Features(barcode=options[0].barcode)
        chosen = next((f for f, d in zip(options, found, strict=True) if d), options[0])
        return ("customs_hold" if chosen.hold else ""), chosen

    def _usable(self, chute: int) -> bool:
        return not self.flags.get(chute, 0) & (FULL | DISABLED | FAULT)

    def choose_chute(self, dest: Destination) -> int | None:
        """A usable chute of the destination, else a usable overflow, else None (E.6)."""
        n = len(dest.chutes)
        if self.plan.balance == "round_robin":
            start = self.pointer.get(dest.name, 0)
            for step in range(n):
                i = (start + step) % n
                if self._usable(dest.chutes[i]):
                    self.pointer[dest.name] = (i + 1) % n
                    return dest.chutes[i]
        else:
            usable = [i for i in range(n) if self._usable(dest.chutes[i])]
            if usable:
                best = min(usable, key=lambda i: (self.load.get(dest.chutes[i], 0), i))
                return dest.chutes[best]
        return next((c for c in dest.overflow if self._usable(c)), None)

    def decide(
        self,
        codes: Sequence[str],
        recirculations: int = 0,
        dims: tuple[int, int, int, int] = (0, 0, 0, 0),
        minute_of_day: int = -1,
        timeout: bool = False,
    ) -> OracleDecision:
        """Decide one sort request (E); `timeout` means its scan never arrived."""
        functions = self.plan.functions
        reason, f = ("timeout", Features()) if timeout else self.item(codes, dims)
        if recirculations >= self.plan.max_recirculations:
            return OracleDecision("", functions["max_recirc"], "max_recirc", f.barcode)
        if out_of_range(self.plan.limits, dims):
            chute = functions.get("out_of_range", functions["max_recirc"])
            return OracleDecision("", chute, "out_of_range", f.barcode)
        if reason:
            return OracleDecision("", functions[reason], reason, f.barcode)
        name = self.destination_of(f)
        if not name:
            return OracleDecision("", functions["no_rule"], "no_rule", f.barcode)
        dest = self.plan.destinations[name]
        if dest.cutoff_minute is not None and 0 <= dest.cutoff_minute <= minute_of_day:
            return OracleDecision(name, functions["after_cutoff"], "after_cutoff", f.barcode)
        chosen = self.choose_chute(dest)
        if chosen is None:
            return OracleDecision(name, functions["no_chute"], "no_chute", f.barcode)
        self.load[chosen] = self.load.get(chosen, 0) + 1
        return OracleDecision(name, chosen, "ok", f.barcode)
