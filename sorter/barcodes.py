"""Classify the codes a scanner reads on a parcel (docs/interfaces.md section 6).

Pure functions, no I/O. `classify` turns one code as read into a `Label`: which format it
is, whether its check digits and structure hold, and the fields the sort plan can match on
(tracking barcode, S10 service indicator and origin, ship-to country and postcode). The
rules are those of the v2 contract (docs/interfaces.md section 6, "Invalid codes" and "GS1
labels are read in every form").

`classify` never raises: a scanner can send anything, and a misread must end in the
`invalid_code` chute, not in a crashed decision task.
"""

from __future__ import annotations

import enum
import re
from typing import Final, NamedTuple

from biip import ParseConfig
from biip.gs1_messages import GS1Message

from sorter.countries import ISO_ALPHA2, is_iso_alpha2, iso_numeric_to_alpha2

__all__ = [
    "GS",
    "ISO_ALPHA2",
    "CodeKind",
    "Label",
    "classify",
    "dhl_check_digit",
    "gs1_check_digit",
    "is_iso_alpha2",
    "iso_numeric_to_alpha2",
    "s10_check_digit",
    "ups_check_digit",
]

GS: Final = "\x1d"
"""ASCII group separator: what scanners send in place of FNC1 between GS1 fields."""


class CodeKind(enum.IntEnum):
    """The format of a code. The integer is what the numba decision kernel sees."""

    UNKNOWN = 0
    S10 = 1
    GS1 = 2
    UPS = 3
    DHL = 4
    LP = 5


class Label(NamedTuple):
    """One code as read, classified. (A NamedTuple: immutable, and four times cheaper to
    build than a frozen dataclass, on a path that runs for every code read.)

    - `barcode`: the tracking code: the code itself for carrier formats and UNKNOWN
      (without a non-GS1 symbology identifier), the SSCC of AI 00 for GS1 ("" without).
    - `s10_service`, `origin`: the S10 service indicator and suffix (the country of the
      post that issued the number, never the destination).
    - `country`, `postcode`: the ship-to of a GS1 label (the first AI 420 or 421 on it);
      `country` is the ISO 3166-1 alpha-2 of AI 421, "" for AI 420 (domestic). The postcode
      is as on the label, not normalised.
    - `ship_to`: the label carries AI 420 or 421.

    For an invalid code the fields hold what was read (e.g. the SSCC with the wrong check
    digit, the S10 suffix that is no country), so logs show it; the decision core must not
    route on them. `error` says why it is invalid ("" when valid).
    """

    raw: str
    kind: CodeKind
    valid: bool
    barcode: str
    s10_service: str = ""
    origin: str = ""
    country: str = ""
    postcode: str = ""
    ship_to: bool = False
    error: str = ""


# `\d` would also match Arabic-Indic and other Unicode digits, which int() then happily
# converts: spell out ASCII classes. Matching uses fullmatch, because `$` also matches
# before a trailing newline.
_S10_RE: Final = re.compile(r"([A-Z]{2})([0-9]{8})([0-9])([A-Z]{2})")
_UPS_RE: Final = re.compile(r"1Z([0-9A-Z]{15})([0-9A-Z])")
_DHL_RE: Final = re.compile(r"[0-9]{10}")
_LP_RE: Final = re.compile(r"LP[0-9]{12,14}")
_UPS_BODY_RE: Final = re.compile(r"[0-9A-Z]{15}")
_ASCII_DIGITS_RE: Final = re.compile(r"[0-9]+")
_AIM_ID_RE: Final = re.compile(r"\][A-Za-z][0-9A-Za-z]")

# The 82-character GS1 set (GS1 General Specifications, figure 7.11-1) plus GS. biip's own
# patterns use `\d`, so without this screen it would accept Unicode digits in an SSCC.
_GS1_CHARS: Final = frozenset(
    "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz" + GS
)

# The human-readable form, `(AI)value(AI)value...`, all of it (fullmatch): an AI of 2-4
# ASCII digits, a value of the GS1 set without parentheses (a value holding one cannot be
# told from the next AI) and never GS. Checked here rather than left to biip's parse_hri,
# which drops blanks and GS and skips text between its matches, so that a torn or padded
# label is invalid instead of read as something it does not say.
_HRI_VALUE: Final = r"[!\"%&'*+,\-./0-9:;<=>?A-Z_a-z]+"
_HRI_RE: Final = re.compile(rf"(?:\([0-9]{{2,4}}\){_HRI_VALUE})+")
_HRI_FIELD_RE: Final = re.compile(rf"\(([0-9]{{2,4}})\)({_HRI_VALUE})")

# AIM symbology identifiers (ISO/IEC 15424) that announce GS1 element strings: GS1-128,
# GS1 DataMatrix, GS1 QR, GS1 DotCode, GS1 DataBar.
_GS1_SYMBOLOGY_IDS: Final = frozenset({"]C1", "]d2", "]Q3", "]J1", "]e0"})

# Bare digits (no identifier) are taken as GS1 only when they start with an AI a parcel
# label starts with; GS may separate fields, never lead, trail or come twice.
_BARE_GS1_RE: Final = re.compile(r"(?:00|42[01]|40[13])[0-9]*(?:\x1d[0-9]+)*")

# No GS1 symbol holds more (QR version 40, numeric mode): a longer message is a misread,
# and the cap bounds what biip spends on garbage (its time grows with the length).
_MAX_GS1_CHARS: Final = 7089

# Dates do not route parcels; a label with a zero or odd date in some AI must not become
# an invalid code because of it.
_BIIP_CONFIG: Final = ParseConfig(gs1_element_strings_verify_date=False)

# GS1 keys with a mod-10 check digit that biip does not verify (it does SSCC, GTIN and
# GLN): AI -> the span of the value that ends with the check digit. GSIN (402), GSRN
# (8017, 8018), GDTI (253), GCN (255), GRAI (8003, after its leading filler digit).
_OTHER_CHECKED_KEYS: Final[dict[str, tuple[int, int]]] = {
    "402": (0, 17),
    "8017": (0, 18),
    "8018": (0, 18),
    "253": (0, 13),
    "255": (0, 13),
    "8003": (1, 14),
    "8006": (0, 14),  # ITIP: the GTIN of the trade item, then piece and total
    "8026": (0, 14),
}

_S10_WEIGHTS: Final = (8, 6, 4, 2, 3, 5, 9, 7)
_S10_WEIGHT_SUM: Final = sum(_S10_WEIGHTS)


def _require(ok: bool, what: str, value: str) -> None:
    if not ok:
        raise ValueError(f"{what}, got {value!r}")


def _is_ascii_digits(value: str) -> bool:
    return _ASCII_DIGITS_RE.fullmatch(value) is not None


def s10_check_digit(serial8: str) -> int:
    """UPU S10 check digit of an 8-digit serial number.

    Weights 8,6,4,2,3,5,9,7; c = 11 - (sum mod 11), then 10 -> 0 and 11 -> 5.
    `s10_check_digit("12345678") == 5` (RB123456785GB). Raises ValueError unless given
    exactly 8 ASCII digits.
    """
    _require(len(serial8) == 8 and _is_ascii_digits(serial8), "need 8 digits", serial8)
    return _s10_check(serial8)


def _s10_check(serial8: str) -> int:
    # Unchecked and unrolled: this runs for every S10 code on the line (~0.3 us).
    b = serial8.encode("ascii")
    total = (
        8 * b[0] + 6 * b[1] + 4 * b[2] + 2 * b[3] + 3 * b[4] + 5 * b[5] + 9 * b[6] + 7 * b[7]
    ) - 48 * _S10_WEIGHT_SUM
    check = 11 - total % 11
    if check == 10:
        return 0
    if check == 11:
        return 5
    return check


def gs1_check_digit(digits_without_check: str) -> int:
    """GS1 mod-10 check digit (GTIN, SSCC, GLN): weights 3,1,3,... from the right.

    Raises ValueError unless given one or more ASCII digits.
    """
    _require(_is_ascii_digits(digits_without_check), "need digits", digits_without_check)
    return _gs1_check(digits_without_check)


def _gs1_check(digits: str) -> int:
    b = digits.encode("ascii")[::-1]
    total = 3 * sum(b[0::2]) + sum(b[1::2]) - 48 * (3 * len(b[0::2]) + len(b[1::2]))
    return -total % 10


def _ups_value(char: str) -> int:
    # UPS folds letters onto digits: A=2 ... H=9, I=0, J=1, ...
    return int(char) if char.isdigit() else (ord(char) - 63) % 10


def ups_check_digit(body15: str) -> int:
    """UPS 1Z check digit of the 15 characters between "1Z" and the check digit.

    Letters count as (ord(c) - 63) % 10; characters at even 1-based positions count
    double; check = (10 - sum mod 10) mod 10. `ups_check_digit("999AA1012345678") == 4`
    (1Z999AA10123456784). Raises ValueError unless given 15 of [0-9A-Z].
    """
    _require(
        _UPS_BODY_RE.fullmatch(body15) is not None,
        "need 15 of [0-9A-Z]",
        body15,
    )
    return _ups_check(body15)


_UPS_VALUES: Final = {c: _ups_value(c) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def _ups_check(body15: str) -> int:
    values = [_UPS_VALUES[c] for c in body15]
    return -(sum(values) + sum(values[1::2])) % 10


def dhl_check_digit(body9: str) -> int:
    """DHL Express waybill check digit: the first 9 digits as a number, mod 7.

    Raises ValueError unless given exactly 9 ASCII digits.
    """
    _require(len(body9) == 9 and _is_ascii_digits(body9), "need 9 digits", body9)
    return int(body9) % 7


def classify(code: str, identifiers: bool = False) -> Label:
    """Classify one code as read by a scanner. Never raises.

    The code is taken exactly as read (no stripping, case-sensitive). `identifiers` says
    the scanner head promises to send AIM symbology identifiers (the `[[scanner]]` key
    `symbology_identifiers`): then a code without one is never taken for bare GS1 digits.

    1. A leading AIM symbology identifier (`]` + letter + letter or digit, ISO/IEC 15424):
       `]C1`, `]d2`, `]Q3`, `]e0`, `]J1` announce a GS1 element string (FNC1 as GS): the
       code is GS1, valid or invalid, never anything else. Any other identifier (`]C0`,
       `]A0`, ...) is dropped: `barcode` is the code without it, `raw` keeps it, and the
       rest is only tried as a carrier format (step 3), never as GS1.
    2. Without identifier: a leading GS (FNC1 in first position) announces a GS1 element
       string, and a leading `(` the GS1 human-readable form `(00)...(420)...`; both are
       GS1, valid or invalid. Otherwise the carrier formats (step 3), then, only when
       `identifiers` is False, bare digits: ASCII digits (GS allowed between fields)
       starting with AI 00, 420, 421, 401 or 403 that parse completely as a valid GS1
       message with an SSCC or a ship-to (AI 420/421) are GS1. Anything else, bare
       digits that do not parse included, is UNKNOWN and valid: it can only match
       regular-expression rules.
    3. Carrier formats: S10 `AA999999999AA` (valid when the check digit is right and the
       suffix an officially assigned ISO 3166-1 alpha-2 code: `s10_service` and `origin`
       from it); UPS `1Z` + 16 of [0-9A-Z] (check digit verified); DHL Express, 10 ASCII
       digits whose mod-7 check holds (10 digits failing it are not DHL: they go on as
       any other code); Cainiao `LP` + 12-14 digits (no public check rule: valid).
    4. GS1: the SSCC of AI 00 is `barcode`; the first AI 420 or 421 gives the ship-to
       (`postcode`, 421 also `country`, `ship_to`). Invalid: a wrong check digit in any
       element string (SSCC, GTIN, GLN, GSIN, ...), an AI 421 country that is not an
       officially assigned ISO 3166-1 numeric code, a message that does not parse
       completely, a character outside the GS1 82-character set (GS aside), a message
       longer than any GS1 symbol holds. Dates are not verified.
    """
    first = code[:1]
    if first == "]" and _AIM_ID_RE.match(code) is not None:
        if code[:3] in _GS1_SYMBOLOGY_IDS:
            return _element_string_label(code, code[3:])
        body = code[3:]
        return _classify_carrier(code, body) or _unknown(code, body)
    if first == GS:
        return _element_string_label(code, code[1:])
    if first == "(":
        return _hri_label(code)
    label = _classify_carrier(code, code)
    if label is not None:
        return label
    if not identifiers and _BARE_GS1_RE.fullmatch(code) is not None:
        gs1 = _fast_gs1(code, code) or _gs1_label(code, _parse_gs1(code))
        # Bare digits are only a guess at GS1: one that does not hold was something else,
        # and so was one that carries neither an SSCC nor a ship-to (a bare "40312" would
        # be AI 401 "12": nothing a sort plan routes on, and no longer a barcode rules see).
        if gs1.valid and (gs1.barcode or gs1.ship_to):
            return gs1
    return _unknown(code, code)


def _unknown(raw: str, body: str) -> Label:
    return Label(raw=raw, kind=CodeKind.UNKNOWN, valid=True, barcode=body)


def _classify_carrier(raw: str, body: str) -> Label | None:
    if (m := _S10_RE.fullmatch(body)) is not None:
        service, serial, check, origin = m.groups()
        expected = _s10_check(serial)
        if int(check) != expected:
            error = f"S10 check digit {check}, expected {expected}"
        elif origin not in ISO_ALPHA2:
            error = f"S10 suffix {origin} is not an ISO 3166-1 alpha-2 country code"
        else:
            error = ""
        return Label(
            raw=raw,
            kind=CodeKind.S10,
            valid=not error,
            barcode=body,
            s10_service=service,
            origin=origin,
            error=error,
        )
    if (m := _UPS_RE.fullmatch(body)) is not None:
        ups_body, check = m.groups()
        expected = _ups_check(ups_body)
        error = "" if check == str(expected) else f"UPS check digit {check}, expected {expected}"
        return Label(raw=raw, kind=CodeKind.UPS, valid=not error, barcode=body, error=error)
    # A 10-digit number failing the mod-7 check is not a misread DHL waybill: too many
    # other numbers have 10 digits (and it may be a bare GS1 label) to call it invalid.
    if _DHL_RE.fullmatch(body) is not None and int(body[:9]) % 7 == int(body[9]):
        return Label(raw=raw, kind=CodeKind.DHL, valid=True, barcode=body)
    if _LP_RE.fullmatch(body) is not None:
        return Label(raw=raw, kind=CodeKind.LP, valid=True, barcode=body)
    return None


def _element_string_label(raw: str, payload: str) -> Label:
    """A code announced as GS1 element strings (identifier or leading GS): GS1, valid or
    invalid."""
    if not _GS1_CHARS.issuperset(payload):
        return _gs1_label(raw, "GS1: character outside the GS1 character set")
    return _fast_gs1(raw, payload) or _gs1_label(raw, _parse_gs1(payload))


def _hri_label(raw: str) -> Label:
    """A code in the human-readable form `(AI)value...`: GS1, valid or invalid."""
    if len(raw) > _MAX_GS1_CHARS:
        return _gs1_label(raw, "GS1: longer than any GS1 symbol holds")
    if _HRI_RE.fullmatch(raw) is None:
        return _gs1_label(raw, "GS1: not a human-readable GS1 string (AI)value(AI)value...")
    return _fast_hri(raw) or _gs1_label(raw, _parse_hri(raw))


# The fast path: the common parcel label (AIs 00, 420, 421, 401, 403) without biip, which
# costs ~60 us a code. It only ever answers "valid, with these fields"; anything else it
# declines (None) and biip explains. tests/test_barcodes.py holds it equal to biip.

_FAST_VARIABLE_AIS: Final = {"420": 20, "421": 12, "401": 30, "403": 30}


def _fast_gs1(raw: str, payload: str) -> Label | None:
    """An element string (GS1 character set already checked) through the fast path."""
    n = len(payload)
    if not n or payload[-1] == GS:
        return None
    fields: list[tuple[str, str]] = []
    i = 0
    while i < n:
        if payload.startswith("00", i):
            fields.append(("00", payload[i + 2 : i + 20]))
            i += 20
            # GS1 allows FNC1 after a fixed-length field too; some printers send one.
            if i < n and payload[i] == GS:
                i += 1
            continue
        ai = payload[i : i + 3]
        if ai not in _FAST_VARIABLE_AIS:
            return None
        end = payload.find(GS, i + 3)
        if end < 0:
            end = n
        fields.append((ai, payload[i + 3 : end]))
        i = end + 1
    return _fast_label(raw, fields)


def _fast_hri(raw: str) -> Label | None:
    """A human-readable string (its grammar already checked) through the fast path."""
    return _fast_label(raw, _HRI_FIELD_RE.findall(raw))


def _fast_label(raw: str, fields: list[tuple[str, str]]) -> Label | None:
    """The label of well-formed parcel fields (AIs 00, 420, 421, 401, 403), valid or not:
    a wrong SSCC check digit and an unassigned AI 421 country are answered here too, as
    biip costs ~60-90 us a code and misreads come in bursts. None for anything else."""
    sscc = postcode = country = error = ""
    ship_to = False
    for ai, value in fields:
        if ai == "00":
            # A second SSCC is rare enough to leave to biip.
            if sscc or len(value) != 18 or not _is_ascii_digits(value):
                return None
            expected = _gs1_check(value[:17])
            if expected != ord(value[17]) - 48 and not error:
                error = f"GS1 AI (00): check digit {value[17]}, expected {expected}"
            sscc = value
            continue
        limit = _FAST_VARIABLE_AIS.get(ai)
        if limit is None or not 0 < len(value) <= limit:
            return None
        if ai == "421":
            numeric = value[:3]
            if len(value) < 4 or not _is_ascii_digits(numeric):
                return None
            alpha2 = iso_numeric_to_alpha2(numeric)
            if not alpha2 and not error:
                error = f"GS1 AI (421): country {numeric} is not an ISO 3166-1 numeric code"
            if not ship_to:
                postcode, country, ship_to = value[3:], alpha2, True
        elif ai == "420" and not ship_to:
            postcode, ship_to = value, True
    return _gs1_result(raw, sscc, country, postcode, ship_to, error)


def _parse_gs1(payload: str) -> GS1Message | str:
    """The parsed element string, or why it is not one."""
    if not _GS1_CHARS.issuperset(payload):
        return "GS1: character outside the GS1 character set"
    if len(payload) > _MAX_GS1_CHARS:
        return "GS1: longer than any GS1 symbol holds"
    message = _biip(payload, hri=False)
    if isinstance(message, str) or _delimited(payload, message):
        return message
    return "GS1: a variable-length field runs into the next without FNC1 (GS)"


def _delimited(payload: str, message: GS1Message) -> bool:
    """The message's fields are the payload, each variable-length one but the last ended
    by GS. biip reads a variable-length value up to its longest allowed and goes on with
    the next AI when the GS is missing (`421` + `5281012AB4201012AB` became 421
    `5281012AB420` and a batch `12AB`): a misprint that must not route as a postcode."""
    elements = message.element_strings
    pos = 1 if payload.startswith(GS) else 0  # `]C1` and FNC1 both, as some heads send
    for k, element in enumerate(elements):
        field = element.ai.ai + element.value
        if not payload.startswith(field, pos):
            return False
        pos += len(field)
        if pos < len(payload) and payload[pos] == GS:
            pos += 1  # FNC1 after a field: required after a variable-length one
        elif element.ai.separator_required and k < len(elements) - 1:
            return False
    return pos == len(payload)


def _parse_hri(hri: str) -> GS1Message | str:
    """The parsed human-readable string (its grammar already checked), or why it is not
    a GS1 message. biip parses each `(AI)value` as a whole, so a value too long or too
    short for its AI does not parse."""
    return _biip(hri, hri=True)


def _biip(text: str, *, hri: bool) -> GS1Message | str:
    try:
        if hri:
            message = GS1Message.parse_hri(text, config=_BIIP_CONFIG)
        else:
            message = GS1Message.parse(text, config=_BIIP_CONFIG)
    # biip parses untrusted text: whatever it raises on it (ParseError, ValueError, or an
    # IndexError from deep inside) means "not a GS1 message", and classify must not raise.
    except Exception as exc:
        return f"GS1: {exc}"
    if not message.element_strings:
        return "GS1: empty message"
    return message


# An invalid label's SSCC as read, when the label starts with it: the identifier or a
# leading GS, then AI 00 and 18 digits (or "(00)" and 18 digits).
_LEADING_SSCC_RE: Final = re.compile(r"(?:\][A-Za-z][0-9A-Za-z])?\x1d?(?:00|\(00\))([0-9]{18})")


def _gs1_result(
    raw: str, sscc: str, country: str, postcode: str, ship_to: bool, error: str
) -> Label:
    """A GS1 label as both paths (fast and biip) read it: invalid when `error` says so,
    and then named by its leading SSCC as read (_sscc_as_read)."""
    return Label(
        raw=raw,
        kind=CodeKind.GS1,
        valid=not error,
        barcode=_sscc_as_read(raw) if error else sscc,
        country=country,
        postcode=postcode,
        ship_to=ship_to,
        error=error,
    )


def _sscc_as_read(raw: str) -> str:
    """The barcode of an invalid GS1 label: its leading SSCC as read whatever else is wrong
    (a misread check digit still tells the desk which parcel it was), else "". One rule
    for every kind of fault, so that what a decision names does not depend on which
    check failed first."""
    m = _LEADING_SSCC_RE.match(raw)
    return m.group(1) if m is not None else ""


def _gs1_label(raw: str, parsed: GS1Message | str) -> Label:
    if isinstance(parsed, str):
        return Label(
            raw=raw, kind=CodeKind.GS1, valid=False, barcode=_sscc_as_read(raw), error=parsed
        )
    sscc = postcode = country = error = ""
    ship_to = False
    for element in parsed.element_strings:
        ai = element.ai.ai
        # biip reports a wrong check digit on the element instead of raising.
        element_error = (
            element.sscc_error
            or element.gtin_error
            or element.gln_error
            or _key_error(ai, element.value)
        )
        if ai == "00" and not sscc:
            sscc = element.value
        elif ai == "420" and not ship_to:
            postcode, ship_to = element.value, True
        elif ai == "421":
            numeric, value = element.pattern_groups
            alpha2 = iso_numeric_to_alpha2(numeric)
            if not alpha2:
                element_error = f"country {numeric} is not an ISO 3166-1 numeric code"
            if not ship_to:
                postcode, country, ship_to = value, alpha2, True
        if element_error and not error:
            error = f"GS1 AI ({ai}): {element_error}"
    return _gs1_result(raw, sscc, country, postcode, ship_to, error)


def _key_error(ai: str, value: str) -> str:
    span = _OTHER_CHECKED_KEYS.get(ai)
    if span is None:
        return ""
    key = value[span[0] : span[1]]
    expected = _gs1_check(key[:-1])
    return "" if expected == int(key[-1]) else f"check digit {key[-1]}, expected {expected}"
