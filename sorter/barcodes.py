"""Classify the codes a scanner reads on a parcel (DOMAIN.md, "Barcodes on parcels").

Pure functions, no I/O. `classify` turns one code as read into a `Label`: which format it
is, whether its check digit and structure hold, and the fields the sort plan can match on
(tracking barcode, S10 service indicator, country, postcode).

`classify` never raises: a scanner can send anything, and a misread must end in the
`invalid_code` chute, not in a crashed decision task.
"""

from __future__ import annotations

import enum
import re
from typing import Final, NamedTuple

from biip import ParseConfig, ParseError
from biip.gs1_messages import GS1Message

__all__ = [
    "GS",
    "CodeKind",
    "Label",
    "classify",
    "dhl_check_digit",
    "gs1_check_digit",
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

    For an invalid code the fields hold what was read (e.g. the SSCC with the wrong check
    digit), so logs show it; the decision core must not route on them.
    """

    raw: str
    kind: CodeKind
    valid: bool
    barcode: str
    s10_service: str = ""
    country: str = ""
    postcode: str = ""
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

# AIM symbology identifiers (ISO/IEC 15424) that announce GS1 element strings: GS1-128,
# GS1 DataMatrix, GS1 QR, GS1 DotCode, GS1 DataBar.
_GS1_SYMBOLOGY_IDS: Final = frozenset({"]C1", "]d2", "]Q3", "]J1", "]e0"})

# AIs a parcel label starts with; only these make an un-prefixed run of digits look GS1.
_GS1_LEADING_AIS: Final = ("00", "420", "421", "401", "403")

# Dates do not route parcels; a label with a zero or odd date in some AI must not become
# an invalid code because of it.
_BIIP_CONFIG: Final = ParseConfig(gs1_element_strings_verify_date=False)

# ISO 3166-1 numeric -> alpha-2, all 249 officially assigned codes (taken from the
# Debian iso-codes data). GS1 AI 421 carries the numeric form; sort plans use alpha-2.
_ISO_3166_NUMERIC: Final = """
    004AF 008AL 010AQ 012DZ 016AS 020AD 024AO 028AG 031AZ 032AR 036AU 040AT 044BS 048BH
    050BD 051AM 052BB 056BE 060BM 064BT 068BO 070BA 072BW 074BV 076BR 084BZ 086IO 090SB
    092VG 096BN 100BG 104MM 108BI 112BY 116KH 120CM 124CA 132CV 136KY 140CF 144LK 148TD
    152CL 156CN 158TW 162CX 166CC 170CO 174KM 175YT 178CG 180CD 184CK 188CR 191HR 192CU
    196CY 203CZ 204BJ 208DK 212DM 214DO 218EC 222SV 226GQ 231ET 232ER 233EE 234FO 238FK
    239GS 242FJ 246FI 248AX 250FR 254GF 258PF 260TF 262DJ 266GA 268GE 270GM 275PS 276DE
    288GH 292GI 296KI 300GR 304GL 308GD 312GP 316GU 320GT 324GN 328GY 332HT 334HM 336VA
    340HN 344HK 348HU 352IS 356IN 360ID 364IR 368IQ 372IE 376IL 380IT 384CI 388JM 392JP
    398KZ 400JO 404KE 408KP 410KR 414KW 417KG 418LA 422LB 426LS 428LV 430LR 434LY 438LI
    440LT 442LU 446MO 450MG 454MW 458MY 462MV 466ML 470MT 474MQ 478MR 480MU 484MX 492MC
    496MN 498MD 499ME 500MS 504MA 508MZ 512OM 516NA 520NR 524NP 528NL 531CW 533AW 534SX
    535BQ 540NC 548VU 554NZ 558NI 562NE 566NG 570NU 574NF 578NO 580MP 581UM 583FM 584MH
    585PW 586PK 591PA 598PG 600PY 604PE 608PH 612PN 616PL 620PT 624GW 626TL 630PR 634QA
    638RE 642RO 643RU 646RW 652BL 654SH 659KN 660AI 662LC 663MF 666PM 670VC 674SM 678ST
    682SA 686SN 688RS 690SC 694SL 702SG 703SK 704VN 705SI 706SO 710ZA 716ZW 724ES 728SS
    729SD 732EH 740SR 744SJ 748SZ 752SE 756CH 760SY 762TJ 764TH 768TG 772TK 776TO 780TT
    784AE 788TN 792TR 795TM 796TC 798TV 800UG 804UA 807MK 818EG 826GB 831GG 832JE 833IM
    834TZ 840US 850VI 854BF 858UY 860UZ 862VE 876WF 882WS 887YE 894ZM
"""
_NUMERIC_TO_ALPHA2: Final[dict[str, str]] = {
    pair[:3]: pair[3:] for pair in _ISO_3166_NUMERIC.split()
}

ISO_ALPHA2: Final = frozenset(_NUMERIC_TO_ALPHA2.values())

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


def iso_numeric_to_alpha2(numeric: str) -> str:
    """ISO 3166-1 alpha-2 code for a 3-digit numeric code ("504" -> "MA"); "" if unknown."""
    return _NUMERIC_TO_ALPHA2.get(numeric, "")


def classify(code: str) -> Label:
    """Classify one code as read by a scanner. Never raises.

    Formats, tried in this order on the code as given (no stripping, case-sensitive):

    - S10 `AA999999999AA`: check digit verified, any two letters accepted as country.
    - UPS `1Z` + 16 of [0-9A-Z]: check digit verified.
    - DHL Express, exactly 10 digits: mod-7 check verified.
    - Cainiao `LP` + 12-14 digits: no public check rule, always valid.
    - GS1 element strings, when the code starts with a GS1 symbology identifier (`]C1`,
      and `]d2`, `]Q3`, `]J1`, `]e0`), or is more than 18 ASCII digits (GS allowed)
      starting with AI 00, 420, 421, 401 or 403. The SSCC of AI 00 becomes `barcode`;
      AI 420 and 421 give the postcode, 421 also the country. A wrong check digit in any
      element string, or a message that does not parse, makes it invalid; but an
      un-prefixed run of digits that fails to parse was probably never GS1 and falls
      through to UNKNOWN.
    - Anything else is UNKNOWN and valid: it can only match regular-expression rules.

    A leading non-GS1 symbology identifier (e.g. `]C0`, `]A0`, as scanners configured to
    send AIM identifiers do) is dropped before matching; `raw` keeps it, `barcode` does
    not, and GS1 detection is skipped because the identifier says it is not GS1.
    """
    symbology = ""
    if _AIM_ID_RE.match(code) is not None:
        symbology = code[:3]
        if symbology in _GS1_SYMBOLOGY_IDS:
            return _classify_gs1(code, code[3:])
        body = code[3:]
    else:
        body = code

    label = _classify_carrier(code, body)
    if label is not None:
        return label
    if not symbology and _looks_like_bare_gs1(body):
        fast = _fast_gs1(code, body) if _GS1_CHARS.issuperset(body) else None
        if fast is not None:
            return fast
        parsed = _parse_gs1(body)
        if not isinstance(parsed, str):
            return _gs1_label(code, parsed)
    return Label(raw=code, kind=CodeKind.UNKNOWN, valid=True, barcode=body)


def _classify_carrier(raw: str, body: str) -> Label | None:
    if (m := _S10_RE.fullmatch(body)) is not None:
        service, serial, check, country = m.groups()
        expected = _s10_check(serial)
        error = "" if int(check) == expected else f"S10 check digit {check}, expected {expected}"
        return Label(
            raw=raw,
            kind=CodeKind.S10,
            valid=not error,
            barcode=body,
            s10_service=service,
            country=country,
            error=error,
        )
    if (m := _UPS_RE.fullmatch(body)) is not None:
        ups_body, check = m.groups()
        expected = _ups_check(ups_body)
        error = "" if check == str(expected) else f"UPS check digit {check}, expected {expected}"
        return Label(raw=raw, kind=CodeKind.UPS, valid=not error, barcode=body, error=error)
    if _DHL_RE.fullmatch(body) is not None:
        expected = dhl_check_digit(body[:9])
        error = (
            "" if int(body[9]) == expected else f"DHL check digit {body[9]}, expected {expected}"
        )
        return Label(raw=raw, kind=CodeKind.DHL, valid=not error, barcode=body, error=error)
    if _LP_RE.fullmatch(body) is not None:
        return Label(raw=raw, kind=CodeKind.LP, valid=True, barcode=body)
    return None


def _looks_like_bare_gs1(body: str) -> bool:
    # Longer than a bare SSCC so that 10-digit DHL waybills and other plain numbers stay
    # what they are; GS is allowed because it only ever appears in GS1 data.
    return (
        len(body) > 18
        and body.startswith(_GS1_LEADING_AIS)
        and _is_ascii_digits(body.replace(GS, ""))
    )


_FAST_VARIABLE_AIS: Final = {"420": 20, "421": 12, "401": 30, "403": 30}


def _fast_gs1(raw: str, payload: str) -> Label | None:
    """The common parcel label (AIs 00, 420, 421, 401, 403) without biip, which costs
    ~60 us a code; None for anything else or anything wrong, which biip then explains."""
    n = len(payload)
    if not n or payload[-1] == GS:
        return None
    sscc = postcode = country = ""
    i = 0
    while i < n:
        if payload.startswith("00", i):
            value = payload[i + 2 : i + 20]
            if sscc or len(value) != 18 or not _is_ascii_digits(value):
                return None
            if _gs1_check(value[:17]) != int(value[17]):
                return None
            sscc = value
            i += 20
            continue
        ai = payload[i : i + 3]
        limit = _FAST_VARIABLE_AIS.get(ai)
        if limit is None:
            return None
        end = payload.find(GS, i + 3)
        if end < 0:
            end = n
        value = payload[i + 3 : end]
        if not 0 < len(value) <= limit:
            return None
        if ai == "421":
            numeric = value[:3]
            if len(value) < 4 or not _is_ascii_digits(numeric):
                return None
            if not postcode:
                postcode, country = value[3:], iso_numeric_to_alpha2(numeric)
        elif ai == "420" and not postcode:
            postcode = value
        i = end + 1
    return Label(
        raw=raw, kind=CodeKind.GS1, valid=True, barcode=sscc, country=country, postcode=postcode
    )


def _classify_gs1(raw: str, payload: str) -> Label:
    if not _GS1_CHARS.issuperset(payload):
        return _gs1_label(raw, "GS1: character outside the GS1 character set")
    return _fast_gs1(raw, payload) or _gs1_label(raw, _parse_gs1(payload))


def _parse_gs1(payload: str) -> GS1Message | str:
    """The parsed message, or why it is not one."""
    if not _GS1_CHARS.issuperset(payload):
        return "GS1: character outside the GS1 character set"
    try:
        message = GS1Message.parse(payload, config=_BIIP_CONFIG)
    except (ParseError, ValueError) as exc:
        return f"GS1: {exc}"
    if not message.element_strings:
        return "GS1: empty message"
    return message


def _gs1_label(raw: str, parsed: GS1Message | str) -> Label:
    if isinstance(parsed, str):
        return Label(raw=raw, kind=CodeKind.GS1, valid=False, barcode="", error=parsed)
    sscc = postcode = country = error = ""
    for element in parsed.element_strings:
        ai = element.ai.ai
        # biip reports a wrong check digit on the element instead of raising.
        check_error = element.sscc_error or element.gtin_error or element.gln_error
        if check_error and not error:
            error = f"GS1 AI ({ai}): {check_error}"
        if ai == "00" and not sscc:
            sscc = element.value
        elif ai == "420" and not postcode:
            postcode = element.value
        elif ai == "421" and not postcode:
            numeric, postcode = element.pattern_groups
            country = iso_numeric_to_alpha2(numeric)
    return Label(
        raw=raw,
        kind=CodeKind.GS1,
        valid=not error,
        barcode=sscc,
        country=country,
        postcode=postcode,
        error=error,
    )
