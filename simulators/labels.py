"""Deterministic parcel label generators, written apart from `sorter.barcodes`.

Every generator draws only from the `random.Random` it is given, so a simulator run or a
test replays exactly from its seed. What a generator makes is a `GeneratedCode`: the text
a scanner reads, carrying what was put in it (kind, tracking code, S10 service and origin,
ship-to postcode and country, whether its check digits hold). The simulated world reads
those, never the daemon's classification, and the check digits here are computed by this
module's own code: a bug in the daemon's barcode reading cannot hide on both sides of an
end-to-end test. `damage` gives the misread that fails its check.
"""

from __future__ import annotations

import random
import re
import string
from typing import Final, Literal

from sorter.countries import is_iso_alpha2, iso_numeric_to_alpha2

__all__ = [
    "GS",
    "MOROCCAN_CITIES",
    "GeneratedCode",
    "Kind",
    "damage",
    "make_dhl",
    "make_gs1_label",
    "make_lp",
    "make_s10",
    "make_sscc",
    "make_ups",
    "moroccan_postcode",
]

GS: Final = "\x1d"
"""ASCII group separator, what a scanner sends for FNC1 between GS1 fields."""

Kind = Literal["s10", "gs1", "ups", "dhl", "lp", "unknown"]


class GeneratedCode(str):
    """A code's text as a scanner reads it, with what its generator put in it.

    - `kind`: the format it was written in.
    - `tracking`: the code that names the item: the code itself for carrier formats, the
      SSCC of a GS1 label ("" without).
    - `service`, `origin`: an S10 code's service indicator and suffix (where it was posted).
    - `postcode`, `country`: a GS1 label's ship-to (AI 420, or 421 with the ISO 3166-1
      alpha-2 `country`; "" for AI 420, domestic); `ship_to` when it has one.
    - `valid`: its check digits hold (False for what `damage` made).

    It is a `str`, so it travels wherever a code does; the fields stay on this side.
    """

    kind: Kind
    tracking: str
    service: str
    origin: str
    postcode: str
    country: str
    ship_to: bool
    valid: bool

    def __new__(
        cls,
        text: str,
        kind: Kind = "unknown",
        *,
        tracking: str = "",
        service: str = "",
        origin: str = "",
        postcode: str = "",
        country: str = "",
        valid: bool = True,
    ) -> GeneratedCode:
        code = super().__new__(cls, text)
        code.kind = kind
        code.tracking = tracking
        code.service = service
        code.origin = origin
        code.postcode = postcode
        code.country = country
        code.ship_to = bool(postcode)
        code.valid = valid
        return code

    def misread(self, text: str, tracking: str) -> GeneratedCode:
        """This label read wrong as `text` (its tracking code as `tracking`): the fields it
        carries, its check failing."""
        return GeneratedCode(
            text,
            self.kind,
            tracking=tracking,
            service=self.service,
            origin=self.origin,
            postcode=self.postcode,
            country=self.country,
            valid=False,
        )


# --- check digits, as the standards define them ------------------------------------------

_S10_WEIGHTS: Final = (8, 6, 4, 2, 3, 5, 9, 7)  # UPU S10, serial digits left to right


def _s10_check(serial: str) -> int:
    """UPU S10: 11 - (weighted sum mod 11), where 10 is written 0 and 11 is written 5."""
    remainder = sum(w * int(d) for w, d in zip(_S10_WEIGHTS, serial, strict=True)) % 11
    return {0: 5, 1: 0}.get(remainder, 11 - remainder)


def _gs1_check(digits: str) -> int:
    """GS1 mod 10: weights 3 and 1 alternating from the rightmost digit."""
    total = 0
    for position, d in enumerate(reversed(digits)):
        total += int(d) * (3 if position % 2 == 0 else 1)
    return (10 - total % 10) % 10


def _ups_check(body: str) -> int:
    """UPS 1Z: letters A..Z count 2,3,...,9,0,1,... (mod 10), digits as themselves; every
    second character (2nd, 4th, ...) counts twice; the check tops the sum up to a ten."""
    total = 0
    for position, char in enumerate(body, start=1):
        value = int(char) if char.isdigit() else (string.ascii_uppercase.index(char) + 2) % 10
        total += value * (2 if position % 2 == 0 else 1)
    return (10 - total % 10) % 10


def _dhl_check(body: str) -> int:
    """DHL Express waybill: the nine digits as a number, mod 7."""
    return int(body) % 7


def _check_holds(code: GeneratedCode) -> bool:
    """Whether the check digit of the part a misread can break still holds."""
    if code.kind == "s10":
        return _s10_check(code[2:10]) == int(code[10])
    if code.kind == "ups":
        return _ups_check(code[2:17]) == int(code[17])
    if code.kind == "gs1" and code.tracking:
        return _gs1_check(code.tracking[:17]) == int(code.tracking[17])
    return code.valid


# Registered, EMS, parcel, tracked and untracked packet services: the mix an import
# sort centre sees.
_S10_SERVICES: Final = ("RB", "RR", "RA", "EE", "EA", "CP", "LX", "LY", "UA", "UB")
# Cross-border e-commerce into Morocco is mostly Chinese.
_S10_COUNTRIES: Final = ("CN", "HK", "FR", "ES", "US", "TR", "AE", "MA")
_S10_COUNTRY_WEIGHTS: Final = (60, 8, 6, 5, 6, 5, 5, 5)

_UPS_SERVICES: Final = ("01", "02", "03", "12", "13", "59", "65")
_UPS_SHIPPER_CHARS: Final = string.digits + string.ascii_uppercase

MOROCCAN_CITIES: Final[dict[str, tuple[int, int]]] = {
    "casablanca": (20000, 20999),
    "rabat": (10000, 10999),
    "marrakech": (40000, 40999),
    "tangier": (90000, 90999),
    "fes": (30000, 30999),
    "agadir": (80000, 80999),
}
"""Postcode range (inclusive) per city, lower-case names."""
_CITY_WEIGHTS: Final = (50, 15, 12, 10, 8, 5)

_TWO_LETTERS: Final = re.compile(r"[A-Z]{2}")
_SSCC: Final = re.compile(r"[0-9]{18}")
# GS1 character set 82 (AI 420/421/403 are alphanumeric "X" fields).
_GS1_X: Final = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]+")


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def make_s10(
    rng: random.Random, service: str | None = None, country: str | None = None
) -> GeneratedCode:
    """A UPU S10 code with a valid check digit, e.g. "RB123456785GB".

    Service and country (the suffix: where the item was posted) are drawn, the country
    weighted towards CN, unless given. A given service must be two upper-case letters, a
    given country an officially assigned ISO 3166-1 alpha-2 code, since any other suffix
    makes the code invalid (ValueError otherwise).
    """
    if service is None:
        service = rng.choice(_S10_SERVICES)
    if country is None:
        country = rng.choices(_S10_COUNTRIES, weights=_S10_COUNTRY_WEIGHTS)[0]
    if _TWO_LETTERS.fullmatch(service) is None:
        raise ValueError(f"S10 service must be two letters A-Z, got {service!r}")
    if not is_iso_alpha2(country):
        raise ValueError(f"S10 country must be an ISO 3166-1 alpha-2 code, got {country!r}")
    serial = _digits(rng, 8)
    text = f"{service}{serial}{_s10_check(serial)}{country}"
    return GeneratedCode(text, "s10", tracking=text, service=service, origin=country)


def make_sscc(rng: random.Random) -> str:
    """An 18-digit SSCC with a valid GS1 check digit."""
    body = _digits(rng, 17)
    return f"{body}{_gs1_check(body)}"


def make_gs1_label(
    rng: random.Random,
    postcode: str,
    sscc: str | None = None,
    country_numeric: str | None = None,
    *,
    routing_code: str | None = None,
) -> GeneratedCode:
    """A GS1-128 parcel label as a scanner sends it, with the `]C1` symbology identifier.

    `]C1` + AI 00 (the SSCC, drawn unless given) + AI 420 postcode, or AI 421 with the
    ISO 3166 numeric country when `country_numeric` is given (e.g. "504" for Morocco),
    then AI 403 routing code when given. GS separates a variable-length field from the
    next one and is never sent after the last field, as GS1 requires.

    Raises ValueError on an SSCC that is not 18 digits with a valid check digit, and on a
    postcode, country or routing code that its AI cannot carry (420: 1-20, 421: 1-9, 403:
    1-30 characters of the GS1 set; country: an officially assigned ISO 3166-1 numeric
    code, since any other makes the label invalid).
    """
    if sscc is None:
        sscc = make_sscc(rng)
    elif _SSCC.fullmatch(sscc) is None or _gs1_check(sscc[:17]) != int(sscc[17]):
        raise ValueError(f"SSCC must be 18 digits with a valid check digit, got {sscc!r}")
    max_postcode = 20 if country_numeric is None else 9
    if len(postcode) > max_postcode or _GS1_X.fullmatch(postcode) is None:
        raise ValueError(f"postcode must be 1-{max_postcode} GS1 characters, got {postcode!r}")
    # (AI, value, variable length)
    fields: list[tuple[str, str, bool]] = [("00", sscc, False)]
    country = ""
    if country_numeric is None:
        fields.append(("420", postcode, True))
    else:
        country = iso_numeric_to_alpha2(country_numeric)
        if not country:
            raise ValueError(f"country must be an ISO 3166-1 numeric code, got {country_numeric!r}")
        fields.append(("421", country_numeric + postcode, True))
    if routing_code is not None:
        if len(routing_code) > 30 or _GS1_X.fullmatch(routing_code) is None:
            raise ValueError(f"routing code must be 1-30 GS1 characters, got {routing_code!r}")
        fields.append(("403", routing_code, True))

    parts = ["]C1"]
    for i, (ai, value, variable) in enumerate(fields):
        parts.append(ai + value)
        if variable and i < len(fields) - 1:
            parts.append(GS)
    return GeneratedCode("".join(parts), "gs1", tracking=sscc, postcode=postcode, country=country)


def make_ups(rng: random.Random) -> GeneratedCode:
    """A UPS 1Z tracking number: 6-char shipper, 2-digit service, 7-digit package, check."""
    shipper = "".join(rng.choice(_UPS_SHIPPER_CHARS) for _ in range(6))
    body = shipper + rng.choice(_UPS_SERVICES) + _digits(rng, 7)
    text = f"1Z{body}{_ups_check(body)}"
    return GeneratedCode(text, "ups", tracking=text)


def make_dhl(rng: random.Random) -> GeneratedCode:
    """A 10-digit DHL Express waybill number with its mod-7 check digit."""
    body = _digits(rng, 9)
    text = f"{body}{_dhl_check(body)}"
    return GeneratedCode(text, "dhl", tracking=text)


def make_lp(rng: random.Random) -> GeneratedCode:
    """A Cainiao first-mile code: "LP" + 12-14 digits, mostly the 14-digit "LP00..." form."""
    if rng.random() < 0.8:
        text = "LP00" + _digits(rng, 12)
    else:
        text = "LP" + _digits(rng, rng.choice((12, 13)))
    return GeneratedCode(text, "lp", tracking=text)


def moroccan_postcode(rng: random.Random, city: str | None = None) -> str:
    """A 5-digit postcode in `city` (a key of MOROCCAN_CITIES, any case), or in a city
    drawn with weight towards Casablanca. Raises ValueError on an unknown city."""
    if city is None:
        name = rng.choices(tuple(MOROCCAN_CITIES), weights=_CITY_WEIGHTS)[0]
    else:
        name = city.lower()
        if name not in MOROCCAN_CITIES:
            raise ValueError(f"unknown city {city!r}; known: {', '.join(MOROCCAN_CITIES)}")
    low, high = MOROCCAN_CITIES[name]
    return str(rng.randint(low, high))


def _breakable(code: GeneratedCode) -> range:
    """The positions of `code` its check digit covers; ValueError when it has none to break."""
    if not code.valid or not _check_holds(code):
        raise ValueError(f"already invalid: {code!r}")
    if code.kind == "s10":
        return range(2, 11)
    if code.kind == "ups":
        return range(2, 18)
    if code.kind == "dhl":
        raise ValueError(f"a misread DHL code is no DHL code, so none is invalid: {code!r}")
    if code.kind == "gs1" and code.tracking:
        start = code.find("00" + code.tracking) + 2
        return range(start, start + 18)
    raise ValueError(f"{code.kind} code has no check digit to break: {code!r}")


def damage(rng: random.Random, code: GeneratedCode) -> GeneratedCode:
    """`code` (made by a generator here) with one character replaced so that its check
    digit no longer holds.

    The replacement keeps the character class (digit for digit, letter for letter), so
    the result still has the shape of its kind, like a real misread, and carries the
    fields of the code it was, with valid=False. Only characters covered by the check are
    touched (for GS1, the SSCC). Raises ValueError for a code that is already invalid or
    has no check digit to break (LP, unknown, a GS1 label without SSCC), and for DHL: a
    10-digit number failing the mod-7 check is not DHL any more, so no misread of one is
    an invalid DHL code; TypeError for a plain string (what it holds is not known here).
    """
    if not isinstance(code, GeneratedCode):
        # What a plain string holds is not known here: reading it is the daemon's job.
        raise TypeError(f"damage needs a code made by a generator, got {code!r}")
    positions = _breakable(code)
    # Not every substitution breaks a check (S10 maps two remainders to 5, UPS folds
    # letters onto digits), so try them in random order and keep the first whose check
    # fails; the check digit itself always works.
    candidates = [
        (pos, repl)
        for pos in positions
        for repl in (string.digits if code[pos].isdigit() else string.ascii_uppercase)
        if repl != code[pos]
    ]
    rng.shuffle(candidates)
    for pos, repl in candidates:
        text = code[:pos] + repl + code[pos + 1 :]
        # The tracking code as misread: the whole code, or a GS1 label's SSCC.
        tracking = text[positions.start : positions.stop] if code.kind == "gs1" else text
        damaged = code.misread(text, tracking)
        if not _check_holds(damaged):
            return damaged
    raise ValueError(f"no single-character change invalidates {code!r}")  # pragma: no cover
