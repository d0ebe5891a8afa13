"""Seeded cross-border items for the Casablanca v2 plan, each with its ground truth.

The truth of an item comes from the scenario that made it ("a parcel from China for a
Madrid address" -> ES-MADRID), through the hand-written tables of `places`, never from
evaluating the plan's rules: that would be a second implementation of the same reading.
Nothing from sorter/, drivers/, simulators/ or sorterd/ is imported.

    items = generate(10_000, seed=1)
    item.codes            # what the scan tunnel reads, () for a no-read
    item.manifest         # the pre-advice rows the item contributes (dicts, MANIFEST_COLUMNS)
    item.truth            # Truth(destination, reason, barcode) with the manifests applied
    item.without_manifest # the same with the manifests left out (`replay --no-manifest`)

Each scenario is a function of a `Generator` (the seeded source of unique codes); the
shares in SCENARIOS are exact per run (largest remainder), then the items are shuffled.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from tests.crossborder import codes as c
from tests.crossborder.places import (
    BAD_S10_SUFFIXES,
    CHINA_POSTCODES,
    EXPORT_PLACES,
    ISO_NUMERIC,
    MOROCCAN_CITIES,
    ORIGIN_WEIGHTS,
    ORIGINS,
    PREADVICE_DESTINATIONS,
    S10_SERVICES,
    SITE_COUNTRY,
    UNMAPPED_MOROCCO,
    label_postcode,
    postal_lane,
)

MANIFEST_COLUMNS: Final = ("barcode", "destination", "postcode", "country", "origin", "customs")


@dataclass(frozen=True, slots=True)
class Truth:
    destination: str  # "" when the reason sends the item to a function chute
    reason: str
    barcode: str


@dataclass(frozen=True, slots=True)
class Item:
    scenario: str
    variant: str
    codes: tuple[str, ...]
    manifest: tuple[Mapping[str, str], ...]
    truth: Truth
    without_manifest: Truth
    forms: tuple[str, ...] = ()  # the GS1 label forms on the item

    @property
    def manifest_dependent(self) -> bool:
        return self.truth != self.without_manifest


def routed(destination: str, barcode: str) -> Truth:
    """The item goes to `destination`; none -> the no_rule function chute."""
    return Truth(destination, "ok" if destination else "no_rule", barcode)


def function(reason: str, barcode: str) -> Truth:
    return Truth("", reason, barcode)


@dataclass(frozen=True, slots=True)
class Tracking:
    """A carrier code on the parcel: its text as read and the barcode it names."""

    code: str
    barcode: str
    kind: str  # S10, UPS, DHL, LP, UNKNOWN
    service: str = ""
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Place:
    """A ship-to address: destination country (MA domestic), postcode as written, lane."""

    country: str
    postcode: str
    lane: str


class Generator:
    """The seeded source of codes and places; every code it makes is unique in its run,
    so that manifest rows of one item never name another item's code."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._seen: set[str] = set()

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, weighted: Mapping[str, float]) -> str:
        return self.rng.choices(list(weighted), weights=list(weighted.values()))[0]

    def fresh(self, make: Callable[[random.Random], str]) -> str:
        while (code := make(self.rng)) in self._seen:
            pass
        self._seen.add(code)
        return code

    def shuffled(self, *codes: str) -> tuple[str, ...]:
        # Tunnels report codes in the order the heads saw them.
        out = list(codes)
        self.rng.shuffle(out)
        return tuple(out)

    # --- carrier codes ----------------------------------------------------------------

    def origin(self, *, abroad: bool = False) -> str:
        while (o := self.rng.choices(ORIGINS, weights=ORIGIN_WEIGHTS)[0]) == SITE_COUNTRY:
            if not abroad:
                break
        return o

    def s10(
        self, lane: str | None = None, origin: str | None = None, *, aim: bool = False
    ) -> Tracking:
        """An S10 code; `lane` EMS/REGISTERED/PACKETS/NONE, `aim`: with a `]C0` prefix."""
        lane = lane or self.pick({"EMS": 2, "REGISTERED": 3, "PACKETS": 5})
        service = self.rng.choice(S10_SERVICES[lane])
        origin = origin or self.origin()
        code = self.fresh(lambda r: c.s10(r, service, origin))
        return Tracking(("]C0" if aim else "") + code, code, "S10", service, origin)

    def carrier(self, kind: str) -> Tracking:
        make = {"UPS": c.ups, "DHL": c.dhl, "LP": c.lp}[kind]
        code = self.fresh(make)
        return Tracking(code, code, kind)

    def tracking(self, weights: Mapping[str, float], origin: str | None = None) -> Tracking:
        """A tracking code of a kind drawn from `weights` (S10, AIM-S10, UPS, DHL, LP)."""
        kind = self.pick(weights)
        if kind in ("S10", "AIM-S10"):
            return self.s10(origin=origin, aim=kind == "AIM-S10")
        return self.carrier(kind)

    def unknown(self) -> Tracking:
        alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ0123456789"
        code = self.fresh(lambda r: "X" + "".join(r.choice(alphabet) for _ in range(11)))
        return Tracking(code, code, "UNKNOWN")

    # --- places -------------------------------------------------------------------------

    def moroccan(self, city: str | None = None) -> Place:
        city = city or self.rng.choice(list(MOROCCAN_CITIES))
        low, high = self.rng.choice(MOROCCAN_CITIES[city])
        return Place(SITE_COUNTRY, str(self.rng.randint(low, high)), city)

    def unmapped_moroccan(self) -> Place:
        low, high = self.rng.choice(UNMAPPED_MOROCCO)
        return Place(SITE_COUNTRY, str(self.rng.randint(low, high)), "")

    def abroad(self, group: str | None = None) -> Place:
        group = group or self.rng.choice(list(EXPORT_PLACES))
        return Place(*self.rng.choice(EXPORT_PLACES[group]))

    def chinese(self) -> Place:
        return Place("CN", self.rng.choice(CHINA_POSTCODES), "RETURNS-CN")

    # --- GS1 labels ---------------------------------------------------------------------

    def label(
        self,
        ship_to: tuple[str, str] | None,
        *,
        with_sscc: bool = True,
        sscc_ok: bool = True,
        bare: bool = True,
    ) -> c.Gs1Label:
        """A GS1 label with an SSCC and/or a ship-to element (AI, value), in a drawn form;
        `bare=False` keeps it off the bare-digits form (where a wrong check digit makes the
        code UNKNOWN rather than invalid GS1)."""
        sscc = self.fresh(lambda r: c.sscc(r, valid_check=sscc_ok)) if with_sscc else ""
        elements = [("00", sscc)] if sscc else []
        if ship_to is not None:
            elements.insert(self.rng.randint(0, len(elements)), ship_to)
        if len(elements) > 1 and self.chance(0.2):
            # A routing code (AI 403) between the others: GS placement, nothing to route on.
            elements.insert(1, ("403", self.rng.choice(("CMN", "CMN01", "7"))))
        forms = [f for f in c.FORMS if f != "bare" or (bare and c.bare_possible(elements))]
        form = self.rng.choice(forms)
        code = c.render(elements, form)
        self._seen.add(code)
        return c.Gs1Label(code, form, sscc)

    def ship_to(self, place: Place, *, domestic_ai: bool | None = None) -> tuple[str, str]:
        """The label element for `place`: AI 420 (domestic) or AI 421 (numeric country)."""
        if place.country == SITE_COUNTRY and (
            domestic_ai or (domestic_ai is None and self.chance(0.6))
        ):
            return ("420", label_postcode(place.postcode))
        return ("421", ISO_NUMERIC[place.country] + label_postcode(place.postcode))


def row(barcode: str, **fields: str) -> dict[str, str]:
    """A manifest row; the columns not given are empty."""
    return {col: fields.get(col, "") for col in MANIFEST_COLUMNS} | {"barcode": barcode}


def written(g: Generator, postcode: str) -> str:
    """A postcode as a shipper's system writes it in a CSV: sometimes lower case."""
    return postcode.lower() if g.chance(0.2) else postcode


# --- scenarios ----------------------------------------------------------------------------

IMPORT_TRACKING: Final = {"S10": 70, "AIM-S10": 5, "LP": 15, "UPS": 5, "DHL": 5}
EXPORT_TRACKING: Final = {"S10": 55, "UPS": 10, "DHL": 10, "LP": 10, "none": 15}


def _consistent_row(
    g: Generator, key: str, place: Place, t: Tracking | None
) -> tuple[dict[str, str], ...]:
    """Most parcels are pre-advised with what their label says: changes nothing."""
    if not key or not g.chance(0.3):
        return ()
    origin = t.origin if t is not None else ""
    return (row(key, country=place.country, postcode=place.postcode, origin=origin),)


def _item(
    scenario: str,
    variant: str,
    codes: tuple[str, ...],
    truth: Truth,
    *,
    rows: tuple[Mapping[str, str], ...] = (),
    without: Truth | None = None,
    labels: tuple[c.Gs1Label, ...] = (),
) -> Item:
    forms = tuple(lab.form for lab in labels)
    return Item(scenario, variant, codes, rows, truth, without or truth, forms)


def make_import(g: Generator) -> Item:
    """A parcel from abroad (mostly China) for a Moroccan city: tracking code + GS1 label."""
    place = g.moroccan()
    t = g.tracking(IMPORT_TRACKING)
    element = g.ship_to(place)
    lab = g.label(element, with_sscc=g.chance(0.8))
    rows = _consistent_row(g, t.barcode, place, t)
    variant = f"{t.kind.lower()}+{element[0]}"
    return _item("import", variant, g.shuffled(t.code, lab.code), routed(place.lane, t.barcode),
                 rows=rows, labels=(lab,))  # fmt: skip


def make_import_sscc(g: Generator) -> Item:
    """A GS1 label alone: named by its SSCC; without one, by the label's own text."""
    place = g.moroccan()
    if g.chance(0.75):
        lab = g.label(g.ship_to(place))
        return _item("import-sscc", "sscc", (lab.code,), routed(place.lane, lab.sscc),
                     rows=_consistent_row(g, lab.sscc, place, None), labels=(lab,))  # fmt: skip
    # Ship-to only, e.g. a bare `420` + postcode: no SSCC, so the label's raw text names it.
    lab = g.label(g.ship_to(place), with_sscc=False)
    return _item("import-sscc", "no-sscc", (lab.code,), routed(place.lane, lab.code), labels=(lab,))


def make_import_unmapped(g: Generator) -> Item:
    """A Moroccan address with no city lane: the hub's domestic catch-all, MA-OTHER (a
    manual desk), whatever else the parcel carries; never an export or postal lane."""
    place = g.unmapped_moroccan()
    lab = g.label(g.ship_to(place), with_sscc=True)
    if g.chance(0.5):
        lane = g.pick({"EMS": 1, "REGISTERED": 1, "PACKETS": 2, "NONE": 1})
        t = g.s10(lane, g.origin(abroad=True))
        truth = routed("MA-OTHER", t.barcode)
        return _item("import-unmapped", "s10", g.shuffled(t.code, lab.code), truth, labels=(lab,))
    return _item("import-unmapped", "sscc", (lab.code,), routed("MA-OTHER", lab.sscc),
                 labels=(lab,))  # fmt: skip


def _export_parts(g: Generator, group: str) -> tuple[Place, Tracking | None, c.Gs1Label]:
    place = g.abroad(group)
    kind = g.pick(EXPORT_TRACKING)
    t = None if kind == "none" else g.tracking({kind: 1})
    lab = g.label(g.ship_to(place), with_sscc=t is None or g.chance(0.7))
    return place, t, lab


def make_export(group: str) -> Callable[[Generator], Item]:
    """Parcels for abroad, by country group: tracking code (or none) + AI 421 label."""

    def make(g: Generator) -> Item:
        if group == "WORLD" and g.chance(0.2):
            return _to_china_not_a_return(g)
        place, t, lab = _export_parts(g, group)
        barcode = t.barcode if t is not None else lab.sscc
        codes = (lab.code,) if t is None else g.shuffled(t.code, lab.code)
        variant = f"{place.country}:{t.kind.lower() if t else 'sscc'}"
        return _item(f"export-{group.lower()}", variant, codes, routed(place.lane, barcode),
                     rows=_consistent_row(g, barcode, place, t), labels=(lab,))  # fmt: skip

    return make


def _to_china_not_a_return(g: Generator) -> Item:
    """To China, but not posted in Morocco (or origin unknown): the world lane."""
    place = g.chinese()
    lab = g.label(g.ship_to(place))
    if g.chance(0.5):
        t = g.s10(origin=g.origin(abroad=True))
        codes, barcode = g.shuffled(t.code, lab.code), t.barcode
    else:
        codes, barcode = (lab.code,), lab.sscc
    return _item("export-world", "CN:not-return", codes, routed("EXPORT-WORLD", barcode),
                 labels=(lab,))  # fmt: skip


def make_return(g: Generator) -> Item:
    """Posted in Morocco, going back to China: RETURNS-CN, by label or by pre-advice."""
    place = g.chinese()
    variant = g.pick({"s10+label": 45, "s10+manifest": 25, "lp+manifest": 10, "sscc+origin": 20})
    if variant == "s10+label":
        t = g.s10(origin=SITE_COUNTRY)
        lab = g.label(g.ship_to(place))
        return _item("returns", variant, g.shuffled(t.code, lab.code),
                     routed("RETURNS-CN", t.barcode), labels=(lab,))  # fmt: skip
    if variant == "s10+manifest":
        t = g.s10(origin=SITE_COUNTRY)
        without = routed(postal_lane(t.service, t.origin), t.barcode)
        rows = (row(t.barcode, country="CN", postcode=place.postcode),)
    elif variant == "lp+manifest":
        t = g.carrier("LP")
        without = routed("CAINIAO-NO-ADDRESS", t.barcode)
        rows = (row(t.barcode, country="CN", origin=SITE_COUNTRY),)
    else:
        # The label gives the ship-to (CN), the pre-advice under its SSCC the origin.
        lab = g.label(g.ship_to(place), with_sscc=True)
        return _item("returns", variant, (lab.code,), routed("RETURNS-CN", lab.sscc),
                     rows=(row(lab.sscc, origin=SITE_COUNTRY),),
                     without=routed("EXPORT-WORLD", lab.sscc), labels=(lab,))  # fmt: skip
    return _item("returns", variant, (t.code,), routed("RETURNS-CN", t.barcode), rows=rows,
                 without=without)  # fmt: skip


def _unaddressed_tracking(g: Generator) -> tuple[Tracking, Truth]:
    """A tracking code with no label, and where it goes with no pre-advice."""
    kind = g.pick({"S10": 70, "AIM-S10": 10, "LP": 20})
    t = g.tracking({kind: 1})
    lane = "CAINIAO-NO-ADDRESS" if t.kind == "LP" else postal_lane(t.service, t.origin)
    return t, routed(lane, t.barcode)


def make_preadvice(g: Generator) -> Item:
    """No address label: the destination comes from the shipper's manifest only."""
    t, without = _unaddressed_tracking(g)
    variant = g.pick(
        {"country+postcode": 40, "postcode-only": 25, "destination": 20, "by-sscc": 15}
    )
    codes: tuple[str, ...] = (t.code,)
    labels: tuple[c.Gs1Label, ...] = ()
    key = t.barcode
    if variant == "destination":
        dest = g.rng.choice([d for d in PREADVICE_DESTINATIONS if d != without.destination])
        return _item("preadvice", variant, codes, routed(dest, t.barcode),
                     rows=(row(key, destination=dest),), without=without)  # fmt: skip
    if variant == "postcode-only":
        # A postcode without a country is domestic: the site's country (MA).
        place = g.moroccan()
        rows = (row(key, postcode=place.postcode),)
    else:
        place = g.moroccan() if g.chance(0.3) else g.abroad()
        if variant == "by-sscc":
            # The label carries only an SSCC; the pre-advice is filed under it.
            lab = g.label(None)
            codes, labels, key = g.shuffled(t.code, lab.code), (lab,), lab.sscc
        rows = (row(key, country=place.country, postcode=written(g, place.postcode)),)
    return _item("preadvice", f"{variant}:{t.kind.lower()}", codes, routed(place.lane, t.barcode),
                 rows=rows, without=without, labels=labels)  # fmt: skip


def make_label_wins(g: Generator) -> Item:
    """A ship-to label and a pre-advice that disagrees: the label wins as a whole."""
    if g.chance(0.5):
        place = g.moroccan()
        t = g.s10(origin=SITE_COUNTRY if g.chance(0.3) else None)
        lab = g.label(("420", place.postcode))  # AI 420: domestic whatever the manifest says
        other = g.abroad()
        fields = g.rng.choice(({"country": other.country, "postcode": other.postcode},
                               {"country": other.country}, {"country": "CN"}))  # fmt: skip
        variant = "420-vs-" + "+".join(fields)
    else:
        place, t0, lab = _export_parts(g, g.rng.choice(list(EXPORT_PLACES)))
        t = t0 or g.s10()
        fields = {"postcode": g.moroccan().postcode}
        variant = "421-vs-postcode"
    rows = (row(t.barcode, **fields),)
    return _item("label-wins", variant, g.shuffled(t.code, lab.code), routed(place.lane, t.barcode),
                 rows=rows, labels=(lab,))  # fmt: skip


def make_customs_hold(g: Generator) -> Item:
    """The pre-advice says customs hold: the customs cage, whatever the address."""
    base = g.pick({"import": 45, "export": 30, "unaddressed": 25})
    if base == "unaddressed":
        bare, _ = _unaddressed_tracking(g)
        abroad = g.abroad()
        rows = (row(bare.barcode, country=abroad.country, postcode=abroad.postcode,
                    customs="hold"),)  # fmt: skip
        return _item("customs-hold", base, (bare.code,), function("customs_hold", bare.barcode),
                     rows=rows, without=routed(postal_or_lp(bare), bare.barcode))  # fmt: skip
    if base == "import":
        place = g.moroccan()
        t: Tracking | None = g.s10()
        lab = g.label(g.ship_to(place), with_sscc=True)
    else:
        place, t, lab = _export_parts(g, g.rng.choice(list(EXPORT_PLACES)))
    barcode = t.barcode if t is not None else lab.sscc
    codes = (lab.code,) if t is None else g.shuffled(t.code, lab.code)
    # Filed under the SSCC: found by looking up the item's other codes after the tracking one.
    key = lab.sscc if t is not None and lab.sscc and g.chance(0.3) else barcode
    variant = base + (":by-sscc" if key != barcode else "")
    rows = (row(key, country=place.country, customs="hold"),)
    return _item("customs-hold", variant, codes, function("customs_hold", barcode), rows=rows,
                 without=routed(place.lane, barcode), labels=(lab,))  # fmt: skip


def postal_or_lp(t: Tracking) -> str:
    return "CAINIAO-NO-ADDRESS" if t.kind == "LP" else postal_lane(t.service, t.origin)


def make_postal(g: Generator) -> Item:
    """An S10 item with no address anywhere: the lanes by service and origin."""
    lane = g.pick({"EMS": 3, "REGISTERED": 3, "PACKETS": 3, "NONE": 1})
    t = g.s10(lane, g.origin() if g.chance(0.6) else SITE_COUNTRY, aim=g.chance(0.1))
    variant = f"{lane.lower()}:{'export' if t.origin == SITE_COUNTRY else 'inbound'}"
    return _item("postal", variant, (t.code,), routed(postal_lane(t.service, t.origin), t.barcode))


def make_carrier(g: Generator) -> Item:
    """Carrier parcels: UPS, DHL and Cainiao lanes by barcode, or a ship-to label."""
    variant = g.pick({"ups": 25, "dhl": 25, "lp": 20, "dhl-bad-check": 5, "ups+label": 13,
                      "dhl+label": 12})  # fmt: skip
    lanes = {"ups": "UPS-EXPORT", "dhl": "DHL-EXPORT", "lp": "CAINIAO-NO-ADDRESS"}
    if variant in lanes:
        t = g.carrier(variant.upper())
        return _item("carriers", variant, (t.code,), routed(lanes[variant], t.barcode))
    if variant == "dhl-bad-check":
        # Ten digits failing mod 7 are not a DHL code but an unknown, valid one, which the
        # plan's DHL lane (a regular expression on 10 digits) still takes.
        code = g.fresh(lambda r: c.dhl(r, valid_check=False))
        return _item("carriers", variant, (code,), routed("DHL-EXPORT", code))
    t = g.carrier(variant[:3].upper())
    place = g.abroad()
    lab = g.label(g.ship_to(place), with_sscc=g.chance(0.5))
    return _item("carriers", variant, g.shuffled(t.code, lab.code), routed(place.lane, t.barcode),
                 labels=(lab,))  # fmt: skip


def make_invalid(g: Generator) -> Item:
    """The item's only code is invalid: the invalid_code chute, named by what was read."""
    variant = g.pick({"s10-check": 25, "s10-suffix": 20, "421-999": 20, "sscc-check": 20,
                      "ups-check": 15})  # fmt: skip
    if variant in ("421-999", "sscc-check"):
        lab = _invalid_label(g, variant, bare=False)
        return _item("invalid", variant, (lab.code,), function("invalid_code", _named(lab)),
                     labels=(lab,))  # fmt: skip
    code = _invalid_carrier(g, variant)
    return _item("invalid", variant, (code,), function("invalid_code", code))


def _named(lab: c.Gs1Label) -> str:
    """What an invalid label is named by: the SSCC as read when the label starts with it
    (after its identifier or leading GS), else the whole text as read."""
    payload = lab.code
    for prefix in ("]C1", "]d2", "]Q3", "]e0", "\x1d"):
        if payload.startswith(prefix):
            payload = payload[len(prefix) :]
            break
    return lab.sscc if lab.sscc and payload.startswith(("00", "(00)")) else lab.code


def _invalid_carrier(g: Generator, variant: str) -> str:
    if variant == "ups-check":
        return g.fresh(lambda r: c.ups(r, valid_check=False))
    service = g.rng.choice(S10_SERVICES["REGISTERED"] + S10_SERVICES["PACKETS"])
    if variant == "s10-suffix":
        suffix = g.rng.choice(BAD_S10_SUFFIXES)
        return g.fresh(lambda r: c.s10(r, service, suffix))
    return g.fresh(lambda r: c.s10(r, service, g.origin(), valid_check=False))


def _invalid_label(g: Generator, variant: str, *, bare: bool) -> c.Gs1Label:
    """`421-999`: AI 421 with an unassigned numeric country; `sscc-check`: wrong check."""
    place = g.moroccan()
    if variant == "421-999":
        return g.label(("421", "999" + place.postcode), bare=bare)
    return g.label(("420", place.postcode), sscc_ok=False, bare=bare)


def make_invalid_beside_valid(g: Generator) -> Item:
    """An invalid code beside valid ones is ignored."""
    variant = g.pick({"bad-s10+label": 40, "s10+421-999": 30, "s10+sscc-check": 30})
    if variant == "bad-s10+label":
        place = g.moroccan() if g.chance(0.5) else g.abroad()
        lab = g.label(g.ship_to(place), with_sscc=True)
        bad = _invalid_carrier(g, g.rng.choice(("s10-check", "s10-suffix")))
        return _item("invalid-beside-valid", variant, g.shuffled(bad, lab.code),
                     routed(place.lane, lab.sscc), labels=(lab,))  # fmt: skip
    # The invalid label's ship-to is ignored too: the S10 alone names and routes the item.
    t = g.s10()
    lab = _invalid_label(g, variant[4:], bare=False)
    return _item("invalid-beside-valid", variant, g.shuffled(t.code, lab.code),
                 routed(postal_lane(t.service, t.origin), t.barcode), labels=(lab,))  # fmt: skip


def make_unknown_code(g: Generator) -> Item:
    """Codes nobody recognises are valid and name the item; no rule takes them."""
    variant = g.pick({"foreign": 40, "foreign+label": 30, "bare-bad-check": 30})
    if variant == "foreign":
        t = g.unknown()
        return _item("unknown-code", variant, (t.code,), routed("", t.barcode))
    if variant == "foreign+label":
        # The contract's tracking code is a carrier code, else the SSCC: a code nobody
        # recognises names the item only when there is neither.
        t, place = g.unknown(), g.moroccan()
        lab = g.label(g.ship_to(place), with_sscc=True)
        return _item("unknown-code", variant, g.shuffled(t.code, lab.code),
                     routed(place.lane, lab.sscc), labels=(lab,))  # fmt: skip
    # Bare digits are GS1 only when every check holds: else an unknown code, not invalid.
    place = g.moroccan()
    sscc = g.fresh(lambda r: c.sscc(r, valid_check=False))
    elements = [("00", sscc), ("420", place.postcode)]
    g.rng.shuffle(elements)
    code = c.render(elements, "bare")
    return _item("unknown-code", variant, (code,), routed("", code))


def make_noread(g: Generator) -> Item:
    return _item("noread", "noread", (), function("no_read", ""))


def make_conflict(g: Generator) -> Item:
    """Codes that lead to different destinations: the multi-read conflict chute."""
    variant = g.pick({"ups+dhl": 30, "s10+two-labels": 30, "two-labels": 20, "two-s10": 20})
    if variant == "ups+dhl":
        ups_code, dhl_code = g.carrier("UPS"), g.carrier("DHL")
        # UPS names the item before DHL whatever the read order.
        return _item("conflict", variant, g.shuffled(ups_code.code, dhl_code.code),
                     function("multi_read_conflict", ups_code.barcode))  # fmt: skip
    if variant == "two-s10":
        a = g.s10("EMS", g.origin(abroad=True))
        b = g.s10("REGISTERED", SITE_COUNTRY)
        first, second = g.shuffled(a.code, b.code)
        return _item("conflict", variant, (first, second),
                     function("multi_read_conflict", first))  # fmt: skip
    home, away = g.moroccan(), g.abroad()
    la, lb = g.label(g.ship_to(home), with_sscc=True), g.label(g.ship_to(away), with_sscc=True)
    labels = g.shuffled(la.code, lb.code)
    if variant == "two-labels":
        first_label = la if labels[0] == la.code else lb
        return _item("conflict", variant, labels,
                     function("multi_read_conflict", first_label.sscc),
                     labels=(la, lb))  # fmt: skip
    t = g.s10()
    return _item("conflict", variant, g.shuffled(t.code, *labels),
                 function("multi_read_conflict", t.barcode), labels=(la, lb))  # fmt: skip


def make_agreeing(g: Generator) -> Item:
    """Several codes that lead to one destination are no conflict."""
    variant = g.pick({"two-labels-one-city": 35, "two-s10-one-lane": 30, "one-leads-nowhere": 35})
    if variant == "two-labels-one-city":
        city = g.rng.choice(list(MOROCCAN_CITIES))
        a, b = g.moroccan(city), g.moroccan(city)
        la = g.label(g.ship_to(a, domestic_ai=True))
        lb = g.label(g.ship_to(b, domestic_ai=False), with_sscc=False)
        t = g.s10()
        return _item("agreeing", variant, g.shuffled(t.code, la.code, lb.code),
                     routed(city, t.barcode), labels=(la, lb))  # fmt: skip
    if variant == "two-s10-one-lane":
        ta, tb = (
            g.s10("REGISTERED", g.origin(abroad=True)),
            g.s10("REGISTERED", g.origin(abroad=True)),
        )
        first, _ = codes = g.shuffled(ta.code, tb.code)
        return _item("agreeing", variant, codes, routed("INBOUND-REGISTERED-NO-ADDRESS", first))
    # A service no lane takes beside a registered one: the one with a destination names it.
    nowhere, lane = g.s10("NONE"), g.s10("REGISTERED", g.origin(abroad=True))
    return _item("agreeing", variant, g.shuffled(nowhere.code, lane.code),
                 routed("INBOUND-REGISTERED-NO-ADDRESS", lane.barcode))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Scenario:
    share: float
    make: Callable[[Generator], Item] = field(repr=False)


SCENARIOS: Final[Mapping[str, Scenario]] = MappingProxyType({
    "import": Scenario(0.18, make_import),
    "import-sscc": Scenario(0.05, make_import_sscc),
    "import-unmapped": Scenario(0.02, make_import_unmapped),
    "export-fr": Scenario(0.06, make_export("FR")),
    "export-es": Scenario(0.05, make_export("ES")),
    "export-pt": Scenario(0.03, make_export("PT")),
    "export-de": Scenario(0.03, make_export("DE")),
    "export-nl": Scenario(0.03, make_export("NL")),
    "export-be": Scenario(0.03, make_export("BE")),
    "export-it": Scenario(0.03, make_export("IT")),
    "export-gb": Scenario(0.05, make_export("GB")),
    "export-world": Scenario(0.03, make_export("WORLD")),
    "returns": Scenario(0.03, make_return),
    "preadvice": Scenario(0.08, make_preadvice),
    "label-wins": Scenario(0.02, make_label_wins),
    "customs-hold": Scenario(0.03, make_customs_hold),
    "postal": Scenario(0.05, make_postal),
    "carriers": Scenario(0.05, make_carrier),
    "invalid": Scenario(0.04, make_invalid),
    "invalid-beside-valid": Scenario(0.02, make_invalid_beside_valid),
    "unknown-code": Scenario(0.02, make_unknown_code),
    "noread": Scenario(0.03, make_noread),
    "conflict": Scenario(0.02, make_conflict),
    "agreeing": Scenario(0.02, make_agreeing),
})  # fmt: skip


def quotas(count: int, shares: Mapping[str, float] | None = None) -> dict[str, int]:
    """Exact item counts per scenario (largest remainder): fixed proportions every run."""
    shares = shares or {name: s.share for name, s in SCENARIOS.items()}
    total = sum(shares.values())
    exact = {name: count * share / total for name, share in shares.items()}
    out = {name: int(x) for name, x in exact.items()}
    by_remainder = sorted(exact, key=lambda n: exact[n] - out[n], reverse=True)
    for name in by_remainder[: count - sum(out.values())]:
        out[name] += 1
    return out


def generate(count: int, seed: int, shares: Mapping[str, float] | None = None) -> list[Item]:
    """`count` items in fixed proportions (SCENARIOS' shares, or `shares`), shuffled."""
    g = Generator(seed)
    items = [SCENARIOS[name].make(g) for name, n in quotas(count, shares).items() for _ in range(n)]
    g.rng.shuffle(items)
    return items
