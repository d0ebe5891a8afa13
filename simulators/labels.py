"""Deterministic parcel label generators: the inverse of `sorter.barcodes.classify`.

Every generator draws only from the `random.Random` it is given, so a simulator run or a
test replays exactly from its seed. Every output classifies as its kind with valid=True;
`damage` gives the misread that classifies as invalid.
"""

from __future__ import annotations

import random
import re
import string
from typing import Final

from sorter.barcodes import (
    GS,
    CodeKind,
    classify,
    dhl_check_digit,
    gs1_check_digit,
    is_iso_alpha2,
    iso_numeric_to_alpha2,
    s10_check_digit,
    ups_check_digit,
)

__all__ = [
    "MOROCCAN_CITIES",
    "damage",
    "make_dhl",
    "make_gs1_label",
    "make_lp",
    "make_s10",
    "make_sscc",
    "make_ups",
    "moroccan_postcode",
]

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


def make_s10(rng: random.Random, service: str | None = None, country: str | None = None) -> str:
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
    return f"{service}{serial}{s10_check_digit(serial)}{country}"


def make_sscc(rng: random.Random) -> str:
    """An 18-digit SSCC with a valid GS1 check digit."""
    body = _digits(rng, 17)
    return f"{body}{gs1_check_digit(body)}"


def make_gs1_label(
    rng: random.Random,
    postcode: str,
    sscc: str | None = None,
    country_numeric: str | None = None,
    *,
    routing_code: str | None = None,
) -> str:
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
    elif _SSCC.fullmatch(sscc) is None or gs1_check_digit(sscc[:17]) != int(sscc[17]):
        raise ValueError(f"SSCC must be 18 digits with a valid check digit, got {sscc!r}")
    max_postcode = 20 if country_numeric is None else 9
    if len(postcode) > max_postcode or _GS1_X.fullmatch(postcode) is None:
        raise ValueError(f"postcode must be 1-{max_postcode} GS1 characters, got {postcode!r}")
    # (AI, value, variable length)
    fields: list[tuple[str, str, bool]] = [("00", sscc, False)]
    if country_numeric is None:
        fields.append(("420", postcode, True))
    else:
        if not iso_numeric_to_alpha2(country_numeric):
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
    return "".join(parts)


def make_ups(rng: random.Random) -> str:
    """A UPS 1Z tracking number: 6-char shipper, 2-digit service, 7-digit package, check."""
    shipper = "".join(rng.choice(_UPS_SHIPPER_CHARS) for _ in range(6))
    body = shipper + rng.choice(_UPS_SERVICES) + _digits(rng, 7)
    return f"1Z{body}{ups_check_digit(body)}"


def make_dhl(rng: random.Random) -> str:
    """A 10-digit DHL Express waybill number with its mod-7 check digit."""
    body = _digits(rng, 9)
    return f"{body}{dhl_check_digit(body)}"


def make_lp(rng: random.Random) -> str:
    """A Cainiao first-mile code: "LP" + 12-14 digits, mostly the 14-digit "LP00..." form."""
    if rng.random() < 0.8:
        return "LP00" + _digits(rng, 12)
    return "LP" + _digits(rng, rng.choice((12, 13)))


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


def damage(rng: random.Random, code: str) -> str:
    """`code` with one character replaced so that its check digit no longer holds.

    The replacement keeps the character class (digit for digit, letter for letter), so
    the result still has the shape of its kind and classifies as that kind with
    valid=False, like a real misread. Only characters covered by the check are touched
    (for GS1, the SSCC). Raises ValueError for a code that is already invalid or has no
    check digit to break (LP, UNKNOWN, a GS1 label without SSCC), and for DHL: a 10-digit
    number failing the mod-7 check is not DHL any more, so no misread of one classifies
    as an invalid DHL code.
    """
    label = classify(code)
    if not label.valid:
        raise ValueError(f"already invalid: {code!r}")
    if label.kind is CodeKind.S10:
        positions = range(2, 11)
    elif label.kind is CodeKind.UPS:
        positions = range(2, 18)
    elif label.kind is CodeKind.DHL:
        raise ValueError(f"a misread DHL code is no DHL code, so none is invalid: {code!r}")
    elif label.kind is CodeKind.GS1 and label.barcode:
        start = code.find("00" + label.barcode) + 2
        positions = range(start, start + 18)
    else:
        raise ValueError(f"{label.kind.name} code has no check digit to break: {code!r}")

    # Not every substitution breaks a check (S10 maps two remainders to 5, UPS folds
    # letters onto digits), so try them in random order and keep the first that classify
    # rejects; the check digit itself always works.
    candidates = [
        (pos, repl)
        for pos in positions
        for repl in (string.digits if code[pos].isdigit() else string.ascii_uppercase)
        if repl != code[pos]
    ]
    rng.shuffle(candidates)
    for pos, repl in candidates:
        damaged = code[:pos] + repl + code[pos + 1 :]
        result = classify(damaged)
        if result.kind is label.kind and not result.valid:
            return damaged
    raise ValueError(f"no single-character change invalidates {code!r}")  # pragma: no cover
