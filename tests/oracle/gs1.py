"""GS1 element strings, parsed from the GS1 General Specifications.

The AIs a sort centre lives on (00 SSCC, 420/421 ship-to, 401 consignment, 403 routing) and
the common trade ones are ours; only AIs outside that table are looked up in biip's table
of application identifiers (format only: validation stays here).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass

from biip import ParseError
from biip.gs1_application_identifiers import GS1ApplicationIdentifier

from tests.oracle.checks import gs1_check_ok
from tests.oracle.iso3166 import ISO_NUMERIC

GS = "\x1d"

# The 82 characters GS1 allows in alphanumeric fields (General Specifications 7.11,
# figure 7.11-1): digits, letters and these 20 punctuation marks. No space.
CHARSET_82 = frozenset(string.ascii_letters + string.digits + "!\"%&'()*+,-./:;<=>?_")

# Element strings whose length is fixed by their first two digits (General Specifications
# figure 7.8.5-2): they need no FNC1 after them. Everything else ends at FNC1 or the end.
_PREDEFINED_LENGTH = {
    "00": 18, "01": 14, "02": 14, "03": 14, "04": 16, "11": 6, "12": 6, "13": 6, "14": 6,
    "15": 6, "16": 6, "17": 6, "18": 6, "19": 6, "20": 2, "31": 6, "32": 6, "33": 6,
    "34": 6, "35": 6, "36": 6, "41": 13,
}  # fmt: skip


class GS1Error(ValueError):
    """An element string that is not valid GS1 (syntax, character set, check digit)."""


@dataclass(frozen=True, slots=True)
class Element:
    ai: str
    value: str


def _digits(n_min: int, n_max: int) -> Callable[[str], bool]:
    return lambda v: v.isascii() and v.isdigit() and n_min <= len(v) <= n_max


def _text(n_max: int) -> Callable[[str], bool]:
    return lambda v: 1 <= len(v) <= n_max


def _key(n: int) -> Callable[[str], bool]:
    # A GS1 key: n digits, the last a mod-10 check digit over the others.
    return lambda v: len(v) == n and gs1_check_ok(v)


def _ship_to_country(v: str) -> bool:
    # N3 (ISO 3166-1 numeric, officially assigned) + X..9 postcode, at least one character.
    return v[:3].isascii() and v[:3].isdigit() and v[:3] in ISO_NUMERIC and 1 <= len(v) - 3 <= 9


_YYMMDD = re.compile(r"[0-9]{2}(0[0-9]|1[0-2])([0-2][0-9]|3[01])")


def _yymmdd(v: str) -> bool:
    # The GS1 General Specifications' syntax for a date field (day 00 = "end of month"):
    # a day 32 is malformed. Whether the date exists (30 February) is not checked.
    return _YYMMDD.fullmatch(v) is not None


# Our own AIs: the validity test of each value. Dates (11-17) are not verified as dates.
_OWN: dict[str, Callable[[str], bool]] = {
    "00": _key(18),
    "01": _key(14),
    "02": _key(14),
    "10": _text(20),
    **dict.fromkeys(("11", "12", "13", "15", "16", "17"), _yymmdd),
    "21": _text(20),
    "37": _digits(1, 8),
    "400": _text(30),
    "401": _text(30),
    "402": _key(17),
    "403": _text(30),
    **{f"41{i}": _key(13) for i in range(8)},
    "420": _text(20),
    "421": _ship_to_country,
}

# Unusual AIs that carry a GS1 key with a check digit: AI -> length of the key at the
# start of the value (GSRN, GDTI, GCN, GRAI with its leading zero, ITIP, CPID GTIN).
_KEY_PREFIX = {
    "03": 14, "8017": 18, "8018": 18, "253": 13, "255": 13, "8003": 14, "8006": 14, "8026": 14,
}  # fmt: skip

_COMPONENT = re.compile(r"(\[)?([NXYZ])(\.\.)?(\d+)\]?")
_CLASS = {"N": "[0-9]", "X": "[^\x1d]", "Y": "[0-9A-Z#\\-/]", "Z": "[0-9A-Za-z_\\-=]"}


def _format_regex(fmt: str) -> re.Pattern[str] | None:
    """A regex for a GS1 format string such as `N4+N14[+X..16]`, after its AI part."""
    parts = fmt.replace("[+", "+[").split("+")[1:]
    out = []
    for part in parts:
        m = _COMPONENT.fullmatch(part)
        if m is None:
            return None
        optional, kind, variable, n = m.group(1), m.group(2), m.group(3), int(m.group(4))
        low = 0 if optional else (1 if variable else n)
        out.append(f"{_CLASS[kind]}{{{low},{n}}}")
    return re.compile("".join(out))


def _unusual(ai_text: str) -> tuple[str, Callable[[str], bool]] | None:
    """The AI at the start of `ai_text` from biip's table, with a test of its value."""
    try:
        ai = GS1ApplicationIdentifier.extract(ai_text)
    except ParseError:
        return None
    regex = _format_regex(ai.format)
    key = _KEY_PREFIX.get(ai.ai)

    def valid(value: str) -> bool:
        if regex is not None and regex.fullmatch(value) is None:
            return False
        if regex is None and re.fullmatch(ai.pattern, ai.ai + value) is None:
            return False
        return key is None or gs1_check_ok(value[:key])

    return ai.ai, valid


def lookup_ai(text: str) -> tuple[str, Callable[[str], bool]] | None:
    """The AI that `text` starts with (AIs are prefix-free), or None when there is none."""
    for n in (2, 3, 4):
        if text[:n] in _OWN:
            return text[:n], _OWN[text[:n]]
    return _unusual(text[:4])


def _check_element(ai: str, value: str, valid: Callable[[str], bool]) -> Element:
    if any(c not in CHARSET_82 for c in value):
        raise GS1Error(f"AI {ai}: character outside the GS1 82-character set")
    if not valid(value):
        raise GS1Error(f"AI {ai}: bad value {value!r}")
    return Element(ai, value)


def parse_element_string(text: str) -> list[Element]:
    """Parse AI/value pairs separated by GS (FNC1) where a field's length is variable.

    A variable-length field runs to the next GS or the end (a value longer than the AI
    allows is an error, never cut); a predefined-length field may be followed by one GS.
    """
    elements: list[Element] = []
    pos = 0
    while pos < len(text):
        found = lookup_ai(text[pos:])
        if found is None:
            raise GS1Error(f"no application identifier at {text[pos : pos + 4]!r}")
        ai, valid = found
        pos += len(ai)
        fixed = _PREDEFINED_LENGTH.get(ai[:2])
        if fixed is not None:
            value, pos = text[pos : pos + fixed], pos + fixed
            if len(value) < fixed:
                raise GS1Error(f"AI {ai}: value cut short")
            pos += text.startswith(GS, pos)
        else:
            end = text.find(GS, pos)
            end = len(text) if end < 0 else end
            value, pos = text[pos:end], end + 1
        elements.append(_check_element(ai, value, valid))
    if not elements:
        raise GS1Error("empty element string")
    return elements


_HRI_FIELD = re.compile(r"\((\d{2,4})\)([^()]*)")


def parse_hri(text: str) -> list[Element]:
    """The human-readable form `(AI)value(AI)value...`; parentheses always delimit."""
    elements: list[Element] = []
    pos = 0
    while pos < len(text):
        m = _HRI_FIELD.match(text, pos)
        if m is None:
            raise GS1Error(f"malformed human-readable GS1 at {pos}")
        found = lookup_ai(m.group(1))
        if found is None or found[0] != m.group(1):
            raise GS1Error(f"unknown AI ({m.group(1)})")
        ai, valid = found
        fixed = _PREDEFINED_LENGTH.get(ai[:2])
        if fixed is not None and len(m.group(2)) != fixed:
            raise GS1Error(f"AI {ai}: {fixed} characters expected")
        elements.append(_check_element(ai, m.group(2), valid))
        pos = m.end()
    if not elements:
        raise GS1Error("empty element string")
    return elements
