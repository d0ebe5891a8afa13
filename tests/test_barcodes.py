"""Barcode classification (sorter.barcodes) and the label generators (simulators.labels).

The cases follow docs/interfaces.md section 6 ("Invalid codes", "GS1 labels are read in
every form").
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from simulators import labels
from simulators.labels import (
    MOROCCAN_CITIES,
    GeneratedCode,
    damage,
    make_dhl,
    make_gs1_label,
    make_lp,
    make_s10,
    make_sscc,
    make_ups,
    moroccan_postcode,
)
from sorter.barcodes import (
    GS,
    ISO_ALPHA2,
    CodeKind,
    Label,
    classify,
    dhl_check_digit,
    gs1_check_digit,
    is_iso_alpha2,
    iso_numeric_to_alpha2,
    s10_check_digit,
    ups_check_digit,
)

EXAMPLE_GS1 = "]C10006111001000100001242020250"  # docs/interfaces.md section 4
EXAMPLE_SSCC = "061110010001000012"
HRI_SSCC = "106141411234567897"  # the contract's human-readable example
HRI_EXAMPLE = f"(00){HRI_SSCC}(420)20250"

GS1_IDENTIFIERS = ("]C1", "]d2", "]Q3", "]e0", "]J1")
# The 82-character GS1 set (GS1 General Specifications, figure 7.11-1).
GS1_82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
ISO_NUMERICS = tuple(f"{n:03d}" for n in range(1000) if iso_numeric_to_alpha2(f"{n:03d}"))
UNASSIGNED_NUMERICS = tuple(
    f"{n:03d}" for n in range(1000) if not iso_numeric_to_alpha2(f"{n:03d}")
)


def unknown(code: str, barcode: str | None = None) -> Label:
    return Label(
        raw=code, kind=CodeKind.UNKNOWN, valid=True, barcode=code if barcode is None else barcode
    )


# --- S10 ---------------------------------------------------------------------------------


def test_s10_known_good() -> None:
    assert s10_check_digit("12345678") == 5
    assert classify("RB123456785GB") == Label(
        raw="RB123456785GB",
        kind=CodeKind.S10,
        valid=True,
        barcode="RB123456785GB",
        s10_service="RB",
        origin="GB",
    )


def test_s10_suffix_is_the_origin_never_the_destination() -> None:
    assert classify("EE123456785MA") == Label(
        raw="EE123456785MA",
        kind=CodeKind.S10,
        valid=True,
        barcode="EE123456785MA",
        s10_service="EE",
        origin="MA",
        country="",
        ship_to=False,
    )


def test_s10_wrong_check_digit_is_invalid() -> None:
    label = classify("RB123456784GB")
    assert label.kind is CodeKind.S10
    assert not label.valid
    assert "expected 5" in label.error
    # What was read stays in the fields, for the logs.
    assert (label.s10_service, label.origin) == ("RB", "GB")


@pytest.mark.parametrize(
    "suffix",
    [
        "XX",  # user-assigned
        "ZZ",
        "AA",
        "QM",
        "QZ",
        "XA",
        "XZ",
        "AN",  # withdrawn (Netherlands Antilles)
        "YU",  # withdrawn (Yugoslavia)
        "CS",
        "EU",  # exceptionally reserved, not a country
        "UK",
    ],
)
def test_s10_suffix_not_an_iso_country_is_invalid(suffix: str) -> None:
    code = f"RB123456785{suffix}"
    label = classify(code)
    assert (label.kind, label.valid, label.barcode, label.origin) == (
        CodeKind.S10,
        False,
        code,
        suffix,
    )
    assert suffix in label.error
    assert "ISO 3166-1" in label.error


@pytest.mark.parametrize(
    ("serial", "check"),
    [
        # 10 -> 0: 3*4 = 12, 12 mod 11 = 1, 11 - 1 = 10
        ("00004000", 0),
        # 11 -> 5: 8*1 + 3*1 = 11, 11 mod 11 = 0
        ("10001000", 5),
        ("00000000", 5),
        # 8*1 = 8, 11 - 8 = 3
        ("10000000", 3),
    ],
)
def test_s10_check_digit_edge_cases(serial: str, check: int) -> None:
    assert s10_check_digit(serial) == check


# --- ISO 3166-1 -----------------------------------------------------------------------


def test_iso_alpha2_set() -> None:
    assert len(ISO_ALPHA2) == 249
    assert all(len(c) == 2 and c.isascii() and c.isupper() for c in ISO_ALPHA2)
    assert {"MA", "GB", "FR", "ES", "CN", "US", "CW", "SS"} <= ISO_ALPHA2
    for code in ("MA", "GB", "AX"):
        assert is_iso_alpha2(code)
    for code in (
        "ma",
        "Ma",
        "XX",
        "ZZ",
        "AA",
        "QM",
        "XK",
        "EU",
        "UK",
        "AN",
        "YU",
        "",
        "MAR",
        " MA",
    ):
        assert not is_iso_alpha2(code), code


_ISO_CODES = Path("/usr/share/iso-codes/json")


@pytest.mark.requires("iso-codes")
def test_iso_table_matches_iso_codes() -> None:
    entries = json.loads((_ISO_CODES / "iso_3166-1.json").read_text(encoding="utf-8"))["3166-1"]
    assert len(entries) >= 249
    for entry in entries:
        assert iso_numeric_to_alpha2(entry["numeric"]) == entry["alpha_2"], entry
    assert {entry["alpha_2"] for entry in entries} == ISO_ALPHA2
    # Withdrawn codes are not countries any more (unless reassigned since, like GE).
    withdrawn = json.loads((_ISO_CODES / "iso_3166-3.json").read_text(encoding="utf-8"))
    for entry in withdrawn["3166-3"]:
        if entry["alpha_2"] not in {e["alpha_2"] for e in entries}:
            assert not is_iso_alpha2(entry["alpha_2"]), entry


# --- GS1 element strings ----------------------------------------------------------------


def test_interfaces_gs1_example() -> None:
    assert classify(EXAMPLE_GS1) == Label(
        raw=EXAMPLE_GS1,
        kind=CodeKind.GS1,
        valid=True,
        barcode=EXAMPLE_SSCC,
        postcode="20250",
        ship_to=True,
    )


def test_gs1_check_digit() -> None:
    assert gs1_check_digit(EXAMPLE_SSCC[:17]) == 2
    assert gs1_check_digit("629104150021") == 3  # GTIN-13 6291041500213


def test_gs1_wrong_sscc_check_digit_is_invalid() -> None:
    label = classify("]C1000611100100010000134" + "2020250")
    assert label.kind is CodeKind.GS1
    assert not label.valid
    assert label.barcode == "061110010001000013"  # as read, for the logs
    assert "check digit" in label.error


def test_gs1_postcode_only_label_has_no_barcode() -> None:
    assert classify("]C142020250") == Label(
        raw="]C142020250",
        kind=CodeKind.GS1,
        valid=True,
        barcode="",
        postcode="20250",
        ship_to=True,
    )


def test_gs1_with_separators_and_ignored_ais() -> None:
    code = f"]C100{EXAMPLE_SSCC}401MA123{GS}42020250{GS}403CASA-7"
    label = classify(code)
    assert label.valid, label.error
    assert (label.barcode, label.postcode, label.ship_to) == (EXAMPLE_SSCC, "20250", True)


def test_gs1_separator_after_the_sscc() -> None:
    label = classify(f"]C100{EXAMPLE_SSCC}{GS}42020250")
    assert (label.valid, label.barcode, label.postcode) == (True, EXAMPLE_SSCC, "20250")


@pytest.mark.parametrize("identifier", GS1_IDENTIFIERS)
def test_every_gs1_identifier(identifier: str) -> None:
    code = f"{identifier}00{EXAMPLE_SSCC}42020250"
    label = classify(code)
    assert (label.kind, label.valid, label.barcode, label.postcode) == (
        CodeKind.GS1,
        True,
        EXAMPLE_SSCC,
        "20250",
    )
    # The identifier announces GS1: identifiers=True changes nothing.
    assert classify(code, identifiers=True) == label


def test_first_ship_to_wins() -> None:
    label = classify(f"]C142020250{GS}42172428001")
    assert (label.valid, label.country, label.postcode) == (True, "", "20250")
    label = classify(f"]C142172428001{GS}42020250")
    assert (label.valid, label.country, label.postcode) == (True, "ES", "28001")


@pytest.mark.parametrize(
    "code",
    [
        "]C1",  # empty message
        "]C100123",  # SSCC too short
        "]C1421",  # 421 without country
        "]C1421504",  # 421 without postcode
        "]C100" + "\u0660" * 18,  # Arabic-Indic digits: biip's \d would accept them
        "]C1420ÉTÉ",  # outside the GS1 character set
        "]C1420 20250",  # a blank is outside it too
        f"]C100{EXAMPLE_SSCC}X",  # does not parse completely
        "]C1" + "9" * 8000,  # longer than any GS1 symbol holds
        "]C1(00)" + EXAMPLE_SSCC,  # the human-readable form needs no identifier
    ],
)
def test_gs1_malformed_is_invalid(code: str) -> None:
    label = classify(code)
    assert label.kind is CodeKind.GS1
    assert not label.valid
    assert label.error


def test_gs1_without_parcel_data_is_valid() -> None:
    # Structurally fine GS1 (AI 99, company internal) that carries nothing to route on.
    assert classify("]C19912") == Label(raw="]C19912", kind=CodeKind.GS1, valid=True, barcode="")


def test_gs1_wrong_gtin_check_digit_is_invalid() -> None:
    assert classify("]C10106291041500213").valid
    assert not classify("]C10106291041500214").valid


@pytest.mark.parametrize(
    ("ai", "key"),
    [
        ("402", "0614141" + "123456789"),  # GSIN
        ("8018", "0614141" + "1234567890"),  # GSRN
        ("253", "629104150021"),  # GDTI, then a serial
        ("8003", "0" + "629104150021"),  # GRAI: a filler digit, then the checked key
    ],
)
def test_other_gs1_keys_have_their_check_digit_verified(ai: str, key: str) -> None:
    check = gs1_check_digit(key.removeprefix("0") if ai == "8003" else key)
    tail = "SER1" if ai in ("253", "8003") else ""
    good = classify(f"]C1{ai}{key}{check}{tail}")
    assert good.valid, good.error
    bad = classify(f"]C1{ai}{key}{(check + 1) % 10}{tail}")
    assert (bad.kind, bad.valid) == (CodeKind.GS1, False)
    assert f"({ai})" in bad.error


def test_dates_are_not_verified() -> None:
    # AI 17 expiry on 31 February: a misprint that must not stop the parcel.
    assert classify(f"]C100{EXAMPLE_SSCC}17250231").valid


# --- AI 421: ship-to country -------------------------------------------------------------


@pytest.mark.parametrize(
    ("numeric", "alpha2"),
    [
        ("504", "MA"),
        ("156", "CN"),
        ("840", "US"),
        ("826", "GB"),
        ("250", "FR"),
        ("276", "DE"),
        ("724", "ES"),
        ("380", "IT"),
        ("528", "NL"),
        ("056", "BE"),
        ("344", "HK"),
        ("392", "JP"),
        ("410", "KR"),
        ("702", "SG"),
        ("784", "AE"),
        ("682", "SA"),
        ("792", "TR"),
        ("356", "IN"),
    ],
)
def test_ai_421_country(numeric: str, alpha2: str) -> None:
    assert iso_numeric_to_alpha2(numeric) == alpha2
    label = classify(f"]C100{EXAMPLE_SSCC}421{numeric}20250")
    assert (label.valid, label.country, label.postcode, label.barcode, label.ship_to) == (
        True,
        alpha2,
        "20250",
        EXAMPLE_SSCC,
        True,
    )


def test_ai_421_spain_madrid() -> None:
    code = f"]C100{EXAMPLE_SSCC}421724" + "28001"
    assert classify(code) == Label(
        raw=code,
        kind=CodeKind.GS1,
        valid=True,
        barcode=EXAMPLE_SSCC,
        country="ES",
        postcode="28001",
        ship_to=True,
    )


def test_ai_421_france_same_digits_as_casablanca() -> None:
    code = "]C1421" + "250" + "20000"
    assert classify(code) == Label(
        raw=code,
        kind=CodeKind.GS1,
        valid=True,
        barcode="",
        country="FR",
        postcode="20000",
        ship_to=True,
    )


def test_ai_421_postcode_is_kept_as_on_the_label() -> None:
    label = classify("]C1421528" + "1012AB")
    assert (label.valid, label.country, label.postcode) == (True, "NL", "1012AB")
    label = classify("]C1421620" + "1000-001")
    assert (label.valid, label.country, label.postcode) == (True, "PT", "1000-001")


@pytest.mark.parametrize("numeric", ["999", "000", "900", "383"])
def test_ai_421_unassigned_country_is_invalid(numeric: str) -> None:
    for code in (f"]C100{EXAMPLE_SSCC}421{numeric}20250", f"(421){numeric}20250"):
        label = classify(code)
        assert (label.kind, label.valid, label.country, label.postcode) == (
            CodeKind.GS1,
            False,
            "",
            "20250",
        )
        assert numeric in label.error
    # As bare digits it is no GS1 label at all.
    assert classify(f"421{numeric}20250") == unknown(f"421{numeric}20250")


def test_ai_421_unassigned_country_in_a_later_421_is_invalid_too() -> None:
    label = classify(f"]C142150420250{GS}42199920250")
    assert (label.valid, label.country, label.postcode) == (False, "MA", "20250")


# --- the human-readable form ------------------------------------------------------------


def test_hri_contract_example() -> None:
    assert classify(HRI_EXAMPLE) == Label(
        raw=HRI_EXAMPLE,
        kind=CodeKind.GS1,
        valid=True,
        barcode=HRI_SSCC,
        postcode="20250",
        ship_to=True,
    )
    assert classify(HRI_EXAMPLE, identifiers=True) == classify(HRI_EXAMPLE)


def test_hri_with_country_and_other_ais() -> None:
    label = classify(f"(00){HRI_SSCC}(421)50420250(403)CASA-7")
    assert (label.valid, label.barcode, label.country, label.postcode) == (
        True,
        HRI_SSCC,
        "MA",
        "20250",
    )
    # AIs the fast path does not take go through biip, check digits included.
    assert classify("(01)06291041500213(420)20250").valid
    assert not classify("(01)06291041500214(420)20250").valid


def test_hri_wrong_sscc_check_digit_is_invalid() -> None:
    code = f"(00){HRI_SSCC[:-1]}8(420)20250"
    label = classify(code)
    assert (label.kind, label.valid, label.barcode) == (CodeKind.GS1, False, HRI_SSCC[:-1] + "8")
    assert "check digit" in label.error


@pytest.mark.parametrize(
    "code",
    [
        "(",
        "(00)",
        "()",
        "(00",
        "(00)1",  # SSCC too short
        f"(00){HRI_SSCC}12",  # too long: biip must not take the rest for another AI
        f"(00){HRI_SSCC}(99)",  # empty value
        f"(00) {HRI_SSCC}",  # blanks are outside the GS1 set (biip would drop them)
        f"(00){HRI_SSCC} ",
        f"(00){HRI_SSCC}\n",
        f"(00){HRI_SSCC}{GS}(420)20250",  # GS has no place in the human-readable form
        f"(00){HRI_SSCC}(abc)x(420)20250",  # biip would skip the part it cannot read
        f"((00){HRI_SSCC}",
        f"(00){HRI_SSCC})",
        f"(0){HRI_SSCC}",
        f"(00000){HRI_SSCC}",
        "(000)123",  # no such AI
        "(420)\u0662\u0660\u0662\u0665\u0660",  # Unicode digits
        "(420)ÉTÉ",
        "(420)" + "1" * 21,  # AI 420 holds 20 at most
        "(00)" * 3000,  # longer than any GS1 symbol
    ],
)
def test_hri_malformed_is_invalid_gs1(code: str) -> None:
    for identifiers in (False, True):
        label = classify(code, identifiers)
        assert (label.kind, label.valid) == (CodeKind.GS1, False), code
        assert label.error


# --- a leading GS (FNC1 in first position) -------------------------------------------------


def test_leading_gs_is_gs1() -> None:
    code = f"{GS}00{EXAMPLE_SSCC}42020250"
    expected = Label(
        raw=code,
        kind=CodeKind.GS1,
        valid=True,
        barcode=EXAMPLE_SSCC,
        postcode="20250",
        ship_to=True,
    )
    assert classify(code) == expected
    assert classify(code, identifiers=True) == expected
    label = classify(f"{GS}42150420250")
    assert (label.valid, label.country, label.postcode) == (True, "MA", "20250")


@pytest.mark.parametrize(
    "code",
    [GS, f"{GS}NOREAD", f"{GS}00{EXAMPLE_SSCC[:-1]}3", f"{GS}RB123456785GB", f"{GS}(420)1"],
)
def test_leading_gs_malformed_is_invalid_gs1(code: str) -> None:
    label = classify(code)
    assert (label.kind, label.valid) == (CodeKind.GS1, False)
    assert label.error


# --- bare digits ------------------------------------------------------------------------


def test_bare_postcode_label() -> None:
    assert classify("42020250") == Label(
        raw="42020250",
        kind=CodeKind.GS1,
        valid=True,
        barcode="",
        postcode="20250",
        ship_to=True,
    )


@pytest.mark.parametrize("code", ["40312", "4011", f"40112345{GS}40312"])
def test_bare_digits_without_sscc_or_ship_to_stay_unknown(code: str) -> None:
    # They parse (AI 401/403), but carry nothing a plan routes on: a number, not a label.
    assert classify(code) == unknown(code)
    assert classify(f"]C1{code}").kind is CodeKind.GS1


@pytest.mark.parametrize(
    ("code", "barcode", "country", "postcode"),
    [
        (f"00{EXAMPLE_SSCC}42020250", EXAMPLE_SSCC, "", "20250"),
        (f"00{EXAMPLE_SSCC}42150420250", EXAMPLE_SSCC, "MA", "20250"),
        (f"42020250{GS}00{EXAMPLE_SSCC}", EXAMPLE_SSCC, "", "20250"),
        (f"00{EXAMPLE_SSCC}{GS}42020250", EXAMPLE_SSCC, "", "20250"),
        (f"00{EXAMPLE_SSCC}42020250{GS}40312", EXAMPLE_SSCC, "", "20250"),
        (f"40112345{GS}42020250", "", "", "20250"),
        ("420123456789012345", "", "", "123456789012345"),
        # Later AIs need not be parcel AIs; biip reads them, checks included.
        (f"00{EXAMPLE_SSCC}0106291041500213", EXAMPLE_SSCC, "", ""),
    ],
)
def test_bare_digits_that_parse_are_gs1(
    code: str, barcode: str, country: str, postcode: str
) -> None:
    label = classify(code)
    assert (label.kind, label.valid, label.barcode, label.country, label.postcode) == (
        CodeKind.GS1,
        True,
        barcode,
        country,
        postcode,
    )
    assert label.ship_to == bool(postcode)
    # From a head that promises identifiers, digits without one are nothing GS1.
    assert classify(code, identifiers=True) == unknown(code)


@pytest.mark.parametrize(
    "code",
    [
        f"00{EXAMPLE_SSCC[:-1]}3",  # wrong SSCC check digit: no GS1 label after all
        f"00{EXAMPLE_SSCC[:-1]}342020250",
        f"00{EXAMPLE_SSCC}0106291041500214",  # wrong GTIN check digit
        "42199920250",  # unassigned country
        "0012345",  # too short for an SSCC
        "421504",  # 421 without postcode
        "420" + "1" * 21,  # AI 420 holds 20 at most
        f"42020250{GS}",  # GS at the end
        f"42020250{GS}{GS}40312",  # two GS
        "0106291041500213",  # GTIN: not an AI a parcel label starts with
        "123456789012345678",
        "9400111899223100012345",  # USPS-like
        "\u0660\u0660" + "\u0661" * 18,  # Unicode digits
        f"00{EXAMPLE_SSCC}42020250\n",
    ],
)
def test_bare_digits_that_do_not_parse_are_unknown(code: str) -> None:
    assert classify(code) == unknown(code)
    assert classify(code, identifiers=True) == unknown(code)


# --- carrier formats --------------------------------------------------------------------


def test_ups_known_good() -> None:
    assert ups_check_digit("999AA1012345678") == 4
    label = classify("1Z999AA10123456784")
    assert (label.kind, label.valid, label.barcode) == (CodeKind.UPS, True, "1Z999AA10123456784")
    bad = classify("1Z999AA10123456785")
    assert (bad.kind, bad.valid) == (CodeKind.UPS, False)


def test_dhl_right_mod_7() -> None:
    # 123456789 = 7 * 17636684 + 1
    assert dhl_check_digit("123456789") == 1
    expected = Label(raw="1234567891", kind=CodeKind.DHL, valid=True, barcode="1234567891")
    assert classify("1234567891") == expected
    assert classify("1234567891", identifiers=True) == expected
    # 420123456 mod 7 = 4: a DHL waybill, although it starts like an AI 420 label.
    assert classify("4201234564").kind is CodeKind.DHL


@pytest.mark.parametrize("code", ["1234567898", "1234567897", "0012345678", "9999999999"])
def test_dhl_wrong_mod_7_is_not_dhl(code: str) -> None:
    assert int(code[:9]) % 7 != int(code[9])
    assert classify(code) == unknown(code)


def test_dhl_wrong_mod_7_goes_on_to_bare_digits() -> None:
    # 420123456 mod 7 = 4, not 7: not DHL, and as bare digits an AI 420 postcode.
    label = classify("4201234567")
    assert (label.kind, label.valid, label.postcode, label.ship_to) == (
        CodeKind.GS1,
        True,
        "1234567",
        True,
    )
    assert classify("4201234567", identifiers=True) == unknown("4201234567")


@pytest.mark.parametrize("code", ["LP123456789012", "LP0012345678901", "LP00123456789012"])
def test_lp(code: str) -> None:
    assert classify(code) == Label(raw=code, kind=CodeKind.LP, valid=True, barcode=code)


@pytest.mark.parametrize(
    "code",
    [
        "",
        "NOREAD",
        "hello world",
        "LP12345678901",  # 11 digits
        "LP123456789012345",  # 15 digits
        "rb123456785gb",  # scanners send upper case; lower case is not S10
        "RB123456785GB\n",  # `$` would have matched this
        " RB123456785GB",  # codes are taken as read, no stripping
        "RB\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0665GB",  # `\d`, int() take these
        "1234567898",  # 10 digits, wrong mod 7
        "]",
        "]C",
        ")",
        "X" + GS + "42020250",
    ],
)
def test_unknown_is_valid_and_carries_the_code(code: str) -> None:
    assert classify(code) == unknown(code)
    assert classify(code, identifiers=True) == unknown(code)


def test_non_gs1_symbology_identifier_is_dropped() -> None:
    label = classify("]C0RB123456785GB")
    assert (label.raw, label.kind, label.valid, label.barcode, label.origin) == (
        "]C0RB123456785GB",
        CodeKind.S10,
        True,
        "RB123456785GB",
        "GB",
    )
    assert classify("]E01234567891").kind is CodeKind.DHL
    assert classify("]C01Z999AA10123456784").kind is CodeKind.UPS


@pytest.mark.parametrize(
    "code",
    [
        f"]C000{EXAMPLE_SSCC}42020250",  # ]C0 says plain Code 128: digits are not GS1
        "]C042020250",
        f"]A0{GS}00{EXAMPLE_SSCC}",  # nor is a leading GS after another identifier
        f"]C0{HRI_EXAMPLE}",  # nor the human-readable form
        "]C01234567898",  # 10 digits, wrong mod 7
        "]X9anything",
    ],
)
def test_non_gs1_symbology_identifier_is_never_gs1(code: str) -> None:
    for identifiers in (False, True):
        assert classify(code, identifiers) == unknown(code, code[3:])


@pytest.mark.parametrize(
    ("func", "arg"),
    [
        (s10_check_digit, "1234567"),
        (s10_check_digit, "1234567a"),
        (s10_check_digit, "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668"),
        (gs1_check_digit, ""),
        (gs1_check_digit, "12 4"),
        (ups_check_digit, "999aa1012345678"),
        (ups_check_digit, "999AA101234567"),
        (dhl_check_digit, "12345678"),
    ],
)
def test_check_digit_functions_reject_bad_input(func: Callable[[str], int], arg: str) -> None:
    with pytest.raises(ValueError, match="got"):
        func(arg)


# --- garbage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "]C1",
        "]d2",
        "(",
        "(00)",
        ")(",
        GS,
        GS * 3,
        "]C1" + GS,
        "]C1(",
        "\u0660" * 20,
        "]C1" + "\u0660" * 20,
        "(\u0660\u0660)" + "\u0661" * 18,
        "\x00",
        "\ud800",  # a lone surrogate, as a bad decode can leave
        "0" * 100_000,
        "]C1" + "0" * 100_000,
        "(" * 100_000,
        "(00)" * 25_000,
        GS * 100_000,
        "42020250" + GS * 100_000,
        "A" * 1_000_000,
    ],
)
def test_garbage_is_invalid_gs1_or_unknown(code: str) -> None:
    for identifiers in (False, True):
        label = classify(code, identifiers)
        assert label.raw == code
        assert (label.kind is CodeKind.GS1 and not label.valid and label.error) or (
            label.kind is CodeKind.UNKNOWN and label.valid
        ), label


_GARBAGE_ALPHABET = st.sampled_from(
    [*GS1_82, *string.digits * 3, GS, GS, "(", ")", "]", " ", "\n", "\x00", "\u0663", "²", "é"]
)
_PREFIXES = st.sampled_from(
    ["", *GS1_IDENTIFIERS, "]C0", "]A0", "]", GS, "(", "(00)", "(420)", "00", "420", "421"]
)


@given(
    st.one_of(
        st.text(),
        st.text(st.characters(codec="ascii")),
        st.builds(str.__add__, _PREFIXES, st.text(_GARBAGE_ALPHABET, max_size=60)),
    ),
    st.booleans(),
)
@settings(max_examples=800)
def test_classify_never_raises(code: str, identifiers: bool) -> None:
    label = classify(code, identifiers)
    assert label.raw == code
    assert isinstance(label.kind, CodeKind)
    assert label.valid != bool(label.error)
    if label.kind is CodeKind.UNKNOWN:
        assert label.valid
    announced_gs1 = code[:3] in GS1_IDENTIFIERS or code[:1] in (GS, "(")
    other_identifier = code[:1] == "]" and len(code) >= 3 and not announced_gs1
    if announced_gs1:
        assert label.kind is CodeKind.GS1
    elif other_identifier or identifiers:
        assert label.kind is not CodeKind.GS1
    if label.kind is not CodeKind.GS1:
        assert (label.country, label.postcode, label.ship_to) == ("", "", False)
    if label.kind is CodeKind.S10 and label.valid:
        assert is_iso_alpha2(label.origin)
    if label.kind is CodeKind.GS1 and label.valid:
        assert label.country == "" or is_iso_alpha2(label.country)
        assert label.ship_to or (label.country, label.postcode) == ("", "")
        assert label.barcode == "" or (len(label.barcode) == 18 and label.barcode.isascii())


# --- every form of one label, and the biip-free fast path ---------------------------------

_VARIABLE_LIMITS = {
    "420": 20,
    "421": 9,
    "401": 30,
    "403": 30,
}  # 421: the postcode after the country
_PARENS_FREE = GS1_82.replace("(", "").replace(")", "")
_BREAKS = ("sscc_check", "country", "too_long", "empty", "other_ai", "trailing_gs")


@st.composite
def _parcel_fields(draw: st.DrawFn, chars: str) -> list[tuple[str, str]]:
    """1-4 well-formed fields of the AIs the fast path takes (00, 420, 421, 401, 403), at
    most one SSCC, in any order."""
    fields: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(1, 4))):
        ai = draw(st.sampled_from(["00", "420", "421", "401", "403"]))
        if ai == "00" and any(a == "00" for a, _ in fields):
            ai = "420"
        if ai == "00":
            body = draw(st.text(string.digits, min_size=17, max_size=17))
            fields.append((ai, f"{body}{gs1_check_digit(body)}"))
            continue
        value = draw(st.text(chars, min_size=1, max_size=_VARIABLE_LIMITS[ai]))
        if ai == "421":
            value = draw(st.sampled_from(ISO_NUMERICS)) + value
        fields.append((ai, value))
    return fields


def _element_string(fields: list[tuple[str, str]], gs_after_sscc: bool = False) -> str:
    """GS after each variable-length field but the last, as GS1 requires."""
    out = ""
    for i, (ai, value) in enumerate(fields):
        out += ai + value
        if i < len(fields) - 1 and (ai != "00" or gs_after_sscc):
            out += GS
    return out


def _hri(fields: list[tuple[str, str]]) -> str:
    return "".join(f"({ai}){value}" for ai, value in fields)


def _break(draw: st.DrawFn, fields: list[tuple[str, str]], how: str, chars: str) -> str | None:
    """Make the label one the fast path must decline; the trailing GS is returned apart,
    the rest is done on `fields` in place."""
    at = draw(st.integers(0, len(fields)))
    if how == "sscc_check":
        sscc = next((i for i, (ai, _) in enumerate(fields) if ai == "00"), None)
        body = draw(st.text(string.digits, min_size=17, max_size=17))
        if sscc is not None:
            body = fields.pop(sscc)[1][:17]
        fields.insert(at, ("00", f"{body}{(gs1_check_digit(body) + 1) % 10}"))
    elif how == "country":
        numeric = draw(st.sampled_from(UNASSIGNED_NUMERICS))
        fields.insert(at, ("421", numeric + draw(st.text(chars, min_size=1, max_size=9))))
    elif how == "too_long":
        ai = draw(st.sampled_from(["420", "421", "401", "403"]))
        value = draw(st.text(chars, min_size=_VARIABLE_LIMITS[ai] + 1, max_size=40))
        fields.insert(at, (ai, ("504" if ai == "421" else "") + value))
    elif how == "empty":
        fields.insert(at, (draw(st.sampled_from(["420", "401", "403"])), ""))
    elif how == "other_ai":
        # Not first: bare digits must start with a parcel AI to be GS1 at all.
        day = draw(st.text(string.digits, min_size=6, max_size=6))
        fields.insert(max(at, 1), ("17", day))
    else:
        return GS
    return None


@st.composite
def _labels_in_any_form(draw: st.DrawFn) -> tuple[str, str, bool]:
    """(code, form, well_formed): a parcel label as `]C1` element string, leading GS, bare
    digits or human-readable; three in four well formed, the others broken in one way."""
    form = draw(st.sampled_from(["]C1", GS, "", "("]))
    # Bare digits are digits; parentheses in a value cannot be written in the HRI form.
    chars = string.digits if form == "" else _PARENS_FREE if form == "(" else GS1_82
    fields = draw(_parcel_fields(chars))
    breaks = [b for b in _BREAKS if form in ("]C1", GS) or b not in ("empty", "trailing_gs")]
    how = draw(st.sampled_from([*[None] * 3 * len(breaks), *breaks]))
    tail = _break(draw, fields, how, chars) if how else None
    event(f"form {form!r}, broken: {how}")
    if form == "(":
        return _hri(fields), form, how is None
    return form + _element_string(fields, draw(st.booleans())) + (tail or ""), form, how is None


@given(_labels_in_any_form())
@settings(max_examples=1000)
def test_fast_gs1_path_agrees_with_biip(case: tuple[str, str, bool]) -> None:
    from sorter.barcodes import _fast_gs1, _fast_hri, _gs1_label, _parse_gs1, _parse_hri

    code, form, well_formed = case
    if form == "(":
        fast, slow = _fast_hri(code), _gs1_label(code, _parse_hri(code))
    else:
        payload = code[len(form) :]
        fast, slow = _fast_gs1(code, payload), _gs1_label(code, _parse_gs1(payload))
    # The strategy's well-formed labels are exactly what the fast path is for: it must
    # take them (so that the comparison below runs), and biip must find them valid.
    if well_formed:
        assert fast is not None, code
        assert slow.valid, slow.error
    else:
        # A broken label: the fast path declines it, or (a wrong SSCC check digit, an
        # unassigned 421 country) finds it invalid as biip does, in its own words.
        assert fast is None or not fast.valid, code
    if fast is not None:
        assert fast._replace(error="") == slow._replace(error=""), (fast.error, slow.error)
        assert bool(fast.error) == bool(slow.error)
    # classify answers what biip says; for bare digits only a valid answer counts, and
    # only after DHL (ten digits with a right mod-7 check).
    if form == "" and code.isdigit() and len(code) == 10 and int(code[:9]) % 7 == int(code[9]):
        expected = Label(raw=code, kind=CodeKind.DHL, valid=True, barcode=code)
    else:
        useful = slow.valid and (slow.barcode or slow.ship_to)
        expected = slow if form or useful else unknown(code)
    got = classify(code)
    assert got._replace(error="") == expected._replace(error="")
    assert bool(got.error) == bool(expected.error)


@given(st.data(), st.booleans())
def test_every_form_of_a_label_reads_alike(data: st.DataObject, gs_after_sscc: bool) -> None:
    fields = data.draw(_parcel_fields(string.digits))
    element_string = _element_string(fields, gs_after_sscc)
    reference = classify("]C1" + element_string)
    assert reference.valid, reference.error
    forms = [*(i + element_string for i in GS1_IDENTIFIERS), GS + element_string, _hri(fields)]
    for code in forms:
        assert classify(code) == reference._replace(raw=code)
        assert classify(code, identifiers=True) == reference._replace(raw=code)
    bare = classify(element_string)
    if bare.kind is CodeKind.DHL:  # ten digits with a right mod-7 check: DHL comes first
        assert len(element_string) == 10
    elif not (reference.barcode or reference.ship_to):  # nothing to route on: a number
        assert bare == unknown(element_string)
    else:
        assert bare == reference._replace(raw=element_string)
    assert classify(element_string, identifiers=True).kind in (CodeKind.UNKNOWN, CodeKind.DHL)


def test_fast_gs1_path_takes_the_demo_labels() -> None:
    from sorter.barcodes import _fast_gs1

    rng = random.Random(5)
    for _ in range(200):
        code = make_gs1_label(rng, moroccan_postcode(rng))
        assert _fast_gs1(code, code[3:]) is not None, code


# --- generators round-trip ------------------------------------------------------------


@given(st.randoms(use_true_random=False))
def test_make_s10_round_trip(rng: random.Random) -> None:
    code = make_s10(rng)
    label = classify(code)
    assert label.kind is CodeKind.S10
    assert label.valid, label.error
    assert label.barcode == code
    assert (label.s10_service, label.origin, label.country) == (code[:2], code[-2:], "")


@given(
    st.randoms(use_true_random=False),
    st.text(string.ascii_uppercase, min_size=2, max_size=2),
    st.sampled_from(sorted(ISO_ALPHA2)),
)
def test_make_s10_given_service_and_country(rng: random.Random, service: str, country: str) -> None:
    label = classify(make_s10(rng, service=service, country=country))
    assert (label.kind, label.valid, label.s10_service, label.origin) == (
        CodeKind.S10,
        True,
        service,
        country,
    )


@pytest.mark.parametrize(
    ("service", "country"), [("R", "GB"), ("rb", "GB"), ("RB", "XX"), ("RB", "ZZ"), ("RB", "gb")]
)
def test_make_s10_refuses_what_would_be_invalid(service: str, country: str) -> None:
    with pytest.raises(ValueError, match="got"):
        make_s10(random.Random(0), service=service, country=country)


@given(st.randoms(use_true_random=False))
def test_make_sscc_round_trip(rng: random.Random) -> None:
    sscc = make_sscc(rng)
    assert len(sscc) == 18
    assert sscc.isascii()
    assert sscc.isdigit()
    assert gs1_check_digit(sscc[:17]) == int(sscc[17])


@given(
    st.randoms(use_true_random=False),
    st.sampled_from([None, *MOROCCAN_CITIES]),
    st.sampled_from([None, "504", "250", "156", "724"]),
    st.one_of(st.none(), st.text("ABCXYZ0123456789-/", min_size=1, max_size=30)),
)
def test_make_gs1_label_round_trip(
    rng: random.Random, city: str | None, country: str | None, routing: str | None
) -> None:
    postcode = moroccan_postcode(rng, city)
    sscc = make_sscc(rng)
    code = make_gs1_label(rng, postcode, sscc, country, routing_code=routing)
    assert code.startswith(f"]C100{sscc}")
    # GS only between a variable-length field and the next, never at the end.
    assert not code.endswith(GS)
    assert code.count(GS) == (routing is not None)
    label = classify(code)
    assert label.kind is CodeKind.GS1
    assert label.valid, label.error
    assert (label.barcode, label.postcode, label.ship_to) == (sscc, postcode, True)
    assert label.country == ("" if country is None else iso_numeric_to_alpha2(country))


def test_make_gs1_label_rebuilds_interfaces_example() -> None:
    assert make_gs1_label(random.Random(0), "20250", EXAMPLE_SSCC) == EXAMPLE_GS1


@pytest.mark.parametrize(
    ("postcode", "sscc", "country"),
    [
        ("20250", "061110010001000013", None),  # wrong check digit
        ("20250", "06111001000100001", None),  # 17 digits
        ("", None, None),
        ("1" * 21, None, None),
        ("1234567890", None, "504"),  # AI 421 postcode is at most 9
        ("20250", None, "50"),
        ("20250", None, "999"),  # not an ISO 3166-1 country
        ("20 250", None, None),
    ],
)
def test_make_gs1_label_rejects_what_its_ai_cannot_carry(
    postcode: str, sscc: str | None, country: str | None
) -> None:
    with pytest.raises(ValueError, match="got"):
        make_gs1_label(random.Random(0), postcode, sscc, country)


@given(st.randoms(use_true_random=False))
def test_make_ups_round_trip(rng: random.Random) -> None:
    code = make_ups(rng)
    assert (classify(code).kind, classify(code).valid) == (CodeKind.UPS, True)


@given(st.randoms(use_true_random=False))
def test_make_dhl_round_trip(rng: random.Random) -> None:
    code = make_dhl(rng)
    assert (classify(code).kind, classify(code).valid) == (CodeKind.DHL, True)


@given(st.randoms(use_true_random=False))
def test_make_lp_round_trip(rng: random.Random) -> None:
    code = make_lp(rng)
    assert (classify(code).kind, classify(code).valid) == (CodeKind.LP, True)


@given(st.randoms(use_true_random=False), st.sampled_from([*MOROCCAN_CITIES, "CASABLANCA"]))
def test_moroccan_postcode_in_city_range(rng: random.Random, city: str) -> None:
    low, high = MOROCCAN_CITIES[city.lower()]
    postcode = moroccan_postcode(rng, city)
    assert len(postcode) == 5
    assert low <= int(postcode) <= high


def test_moroccan_postcode_weighted_towards_casablanca() -> None:
    rng = random.Random(7)
    counts = dict.fromkeys(MOROCCAN_CITIES, 0)
    for _ in range(2000):
        postcode = int(moroccan_postcode(rng))
        (city,) = [n for n, (lo, hi) in MOROCCAN_CITIES.items() if lo <= postcode <= hi]
        counts[city] += 1
    assert max(counts, key=counts.__getitem__) == "casablanca"
    assert all(counts.values())


def test_moroccan_postcode_unknown_city() -> None:
    with pytest.raises(ValueError, match="unknown city"):
        moroccan_postcode(random.Random(0), "Atlantis")


def test_generators_are_deterministic() -> None:
    def batch(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [
            make_s10(rng),
            make_sscc(rng),
            make_gs1_label(rng, moroccan_postcode(rng)),
            make_ups(rng),
            make_dhl(rng),
            make_lp(rng),
        ]

    assert batch(42) == batch(42)
    assert batch(42) != batch(43)


# --- damage -----------------------------------------------------------------------------


def _make_moroccan_gs1(rng: random.Random) -> GeneratedCode:
    return make_gs1_label(rng, moroccan_postcode(rng))


_CHECKED_MAKERS: dict[str, Callable[[random.Random], GeneratedCode]] = {
    "s10": make_s10,
    "ups": make_ups,
    "gs1": _make_moroccan_gs1,
}


@given(st.randoms(use_true_random=False), st.sampled_from(sorted(_CHECKED_MAKERS)))
def test_damage_is_always_invalid_and_one_character(rng: random.Random, kind: str) -> None:
    code = _CHECKED_MAKERS[kind](rng)
    damaged = damage(rng, code)
    assert len(damaged) == len(code)
    assert sum(a != b for a, b in zip(code, damaged, strict=True)) == 1
    label = classify(damaged)
    assert label.kind is classify(code).kind
    assert not label.valid
    assert label.error


@pytest.mark.parametrize(
    "code",
    [
        GeneratedCode("LP00123456789012", "lp", tracking="LP00123456789012"),
        GeneratedCode("hello"),
        GeneratedCode("]C142020250", "gs1", postcode="20250"),
        GeneratedCode("RB123456784GB", "s10", tracking="RB123456784GB", service="RB"),
        GeneratedCode("1234567891", "dhl", tracking="1234567891"),
    ],
)
def test_damage_refuses_what_it_cannot_break(code: GeneratedCode) -> None:
    with pytest.raises(ValueError, match=r"no check digit|already invalid|no DHL code"):
        damage(random.Random(0), code)


def test_damage_refuses_a_code_not_generated() -> None:
    """A plain string's kind is not known to the simulators: reading it is the daemon's."""
    with pytest.raises(TypeError, match="made by a generator"):
        damage(random.Random(0), "RB123456785GB")  # type: ignore[arg-type]


# --- the generators' own knowledge against the daemon's reading --------------------------


@given(st.randoms(use_true_random=False))
def test_generated_fields_agree_with_classify(rng: random.Random) -> None:
    """Two independent implementations (the generators' record and check digits, the
    daemon's classification) agree on every kind, valid or damaged."""
    codes = [
        make_s10(rng),
        make_gs1_label(rng, moroccan_postcode(rng)),
        make_gs1_label(rng, "K1A0B1", country_numeric="124"),
        make_ups(rng),
        make_dhl(rng),
        make_lp(rng),
    ]
    codes += [damage(rng, codes[0]), damage(rng, codes[1]), damage(rng, codes[3])]
    for code in codes:
        label = classify(code)
        assert label.kind.name.lower() == code.kind, code
        assert label.valid == code.valid, code
        assert label.barcode == code.tracking, code
        assert (label.s10_service, label.origin) == (code.service, code.origin), code
        assert (label.postcode, label.country, label.ship_to) == (
            code.postcode,
            code.country,
            code.ship_to,
        ), code


@given(st.text(string.digits, min_size=17, max_size=17), st.integers(0, 9))
def test_generated_check_digits_agree_with_sorter(body: str, shift: int) -> None:
    """The generators' check digits, written apart, against sorter.barcodes' ones."""
    assert labels._gs1_check(body) == gs1_check_digit(body)
    assert labels._s10_check(body[:8]) == s10_check_digit(body[:8])
    assert labels._dhl_check(body[:9]) == dhl_check_digit(body[:9])
    ups_body = "".join(
        chr(65 + (int(d) + shift) % 26) if i % 3 == 0 else d for i, d in enumerate(body[:15])
    )
    assert labels._ups_check(ups_body) == ups_check_digit(ups_body)


@given(st.randoms(use_true_random=False), st.integers(0, 9), st.integers(1, 9))
def test_a_misread_dhl_code_is_valid_dhl_or_no_dhl(
    rng: random.Random, position: int, shift: int
) -> None:
    code = make_dhl(rng)
    misread = code[:position] + str((int(code[position]) + shift) % 10) + code[position + 1 :]
    label = classify(misread)
    assert label.valid
    assert label.kind is not CodeKind.DHL or int(misread[:9]) % 7 == int(misread[9])
