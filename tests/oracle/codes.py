"""Classifying one code as read (working spec section A), and postcode normalisation."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from tests.oracle.checks import dhl_check_ok, s10_check_digit, ups_check_digit
from tests.oracle.gs1 import GS, Element, GS1Error, parse_element_string, parse_hri
from tests.oracle.iso3166 import ISO_ALPHA2, ISO_NUMERIC


class Kind(enum.StrEnum):
    UNKNOWN = "UNKNOWN"
    S10 = "S10"
    GS1 = "GS1"
    UPS = "UPS"
    DHL = "DHL"
    LP = "LP"


@dataclass(frozen=True, slots=True)
class Code:
    """What one code says about the item (fields of working spec section A).

    `barcode` is the code without a non-GS1 symbology identifier, the SSCC of a GS1 code
    ("" when it has none), and "" for every invalid GS1 code (nothing in it is trusted).
    `postcode` is as written on the label; `country` is alpha-2, "" when the code says none.
    """

    raw: str
    kind: Kind
    valid: bool
    barcode: str = ""
    s10_service: str = ""
    origin: str = ""
    country: str = ""
    postcode: str = ""
    ship_to: bool = False
    error: str = ""


# AIM identifiers (ISO/IEC 15424) that announce GS1 data: GS1-128, GS1 DataMatrix, GS1 QR,
# GS1 DataBar, GS1 DotCode.
GS1_IDENTIFIERS = frozenset({"]C1", "]d2", "]Q3", "]e0", "]J1"})
_AIM = re.compile(r"\][A-Za-z][0-9A-Za-z]")
_S10 = re.compile(r"([A-Z]{2})([0-9]{8})([0-9])([A-Z]{2})")
_UPS = re.compile(r"1Z([0-9A-Z]{15})([0-9A-Z])")
_DHL = re.compile(r"[0-9]{10}")
_LP = re.compile(r"LP[0-9]{12,14}")
_BARE = re.compile(r"(00|420|421|401|403)[0-9\x1d]*[0-9]")
_USABLE = re.compile(r"[0-9A-Z]{1,10}")


def normalise_postcode(text: str) -> str:
    """Upper case, spaces and hyphens removed: `"k1a 0b1"` -> `"K1A0B1"`."""
    return text.upper().replace(" ", "").replace("-", "")


def usable_postcode(normalised: str) -> bool:
    """Only 1..10 characters of [0-9A-Z] can match a postcode pattern."""
    return _USABLE.fullmatch(normalised) is not None


def _gs1_code(raw: str, elements: list[Element]) -> Code:
    sscc = next((e.value for e in elements if e.ai == "00"), "")
    ship = next((e for e in elements if e.ai in ("420", "421")), None)
    if ship is None:
        return Code(raw, Kind.GS1, True, barcode=sscc)
    if ship.ai == "420":
        return Code(raw, Kind.GS1, True, barcode=sscc, postcode=ship.value, ship_to=True)
    country = ISO_NUMERIC[ship.value[:3]]
    postcode = ship.value[3:]
    return Code(raw, Kind.GS1, True, sscc, country=country, postcode=postcode, ship_to=True)


def _gs1(raw: str, text: str, hri: bool = False) -> Code:
    try:
        elements = parse_hri(text) if hri else parse_element_string(text)
    except GS1Error as exc:
        return Code(raw, Kind.GS1, False, barcode=_sscc_as_read(text, hri), error=str(exc))
    return _gs1_code(raw, elements)


_LEADING_SSCC = re.compile(r"00([0-9]{18})")
_LEADING_SSCC_HRI = re.compile(r"\(00\)([0-9]{18})")


def _sscc_as_read(text: str, hri: bool) -> str:
    """The SSCC as read of an invalid label that starts with AI 00 and 18 digits, whatever
    else is wrong with it: the invalid_code decision's barcode, so that the desk sees
    which parcel it was; "" otherwise."""
    m = (_LEADING_SSCC_HRI if hri else _LEADING_SSCC).match(text)
    return m.group(1) if m else ""


def _carrier(raw: str, code: str) -> Code | None:
    """S10, UPS, DHL or LP, valid or not; None when the code has none of these forms."""
    if m := _S10.fullmatch(code):
        right = s10_check_digit(m.group(2)) == int(m.group(3))
        official = m.group(4) in ISO_ALPHA2
        error = "" if right and official else ("check digit" if not right else "suffix")
        service, origin = m.group(1), m.group(4)
        return Code(raw, Kind.S10, not error, code, service, origin, error=error)
    if m := _UPS.fullmatch(code):
        right = str(ups_check_digit(m.group(1))) == m.group(2)
        return Code(raw, Kind.UPS, right, code, error="" if right else "check digit")
    if _DHL.fullmatch(code) and dhl_check_ok(code):
        return Code(raw, Kind.DHL, True, code)
    if _LP.fullmatch(code):
        return Code(raw, Kind.LP, True, code)
    return None


def _bare_digits(code: str) -> Code | None:
    """Digits (GS between fields) that parse as GS1 with every check right and carry an
    SSCC or a ship-to, else None."""
    if _BARE.fullmatch(code) is None:
        return None
    try:
        found = _gs1_code(code, parse_element_string(code))
    except GS1Error:
        return None
    return found if found.barcode or found.ship_to else None


def classify(code: str, identifiers: bool = False) -> Code:
    """Classify one code exactly as read (no stripping, case-sensitive).

    `identifiers` True means the scan head promises AIM identifiers: bare digits are then
    never GS1 (a leading GS or a parenthesised form still is).
    """
    if _AIM.match(code):
        if code[:3] in GS1_IDENTIFIERS:
            # One GS right after the identifier is tolerated: some heads send the
            # identifier and the leading FNC1 both.
            rest = code[3:]
            return _gs1(code, rest[1:] if rest.startswith(GS) else rest)
        rest = code[3:]
        return _carrier(code, rest) or Code(code, Kind.UNKNOWN, True, rest)
    if code.startswith(GS):
        return _gs1(code, code[1:])
    if code.startswith("("):
        return _gs1(code, code, hri=True)
    found = _carrier(code, code)
    if found is None and not identifiers:
        found = _bare_digits(code)
    return found or Code(code, Kind.UNKNOWN, True, code)
