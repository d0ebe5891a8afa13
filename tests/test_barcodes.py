"""Barcode classification (sorter.barcodes) and the label generators (simulators.labels)."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.labels import (
    MOROCCAN_CITIES,
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
    CodeKind,
    Label,
    classify,
    dhl_check_digit,
    gs1_check_digit,
    iso_numeric_to_alpha2,
    s10_check_digit,
    ups_check_digit,
)

EXAMPLE_GS1 = "]C10006111001000100001242020250"  # INTERFACES.md section 4
EXAMPLE_SSCC = "061110010001000012"


# --- known vectors -------------------------------------------------------------------


def test_s10_known_good() -> None:
    assert s10_check_digit("12345678") == 5
    assert classify("RB123456785GB") == Label(
        raw="RB123456785GB",
        kind=CodeKind.S10,
        valid=True,
        barcode="RB123456785GB",
        s10_service="RB",
        country="GB",
    )


def test_s10_wrong_check_digit_is_invalid() -> None:
    label = classify("RB123456784GB")
    assert label.kind is CodeKind.S10
    assert not label.valid
    assert "expected 5" in label.error


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


def test_interfaces_gs1_example() -> None:
    label = classify(EXAMPLE_GS1)
    assert label.kind is CodeKind.GS1
    assert label.valid, label.error
    assert label.barcode == EXAMPLE_SSCC
    assert label.postcode == "20250"
    assert label.country == ""
    assert label.raw == EXAMPLE_GS1


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
    label = classify("]C142020250")
    assert (label.kind, label.valid, label.barcode, label.postcode) == (
        CodeKind.GS1,
        True,
        "",
        "20250",
    )


def test_gs1_with_separators_and_ignored_ais() -> None:
    code = f"]C100{EXAMPLE_SSCC}401MA123{GS}42020250{GS}403CASA-7"
    label = classify(code)
    assert label.valid, label.error
    assert (label.barcode, label.postcode) == (EXAMPLE_SSCC, "20250")


def test_gs1_without_symbology_identifier() -> None:
    label = classify(f"00{EXAMPLE_SSCC}42020250")
    assert (label.kind, label.valid, label.barcode, label.postcode) == (
        CodeKind.GS1,
        True,
        EXAMPLE_SSCC,
        "20250",
    )
    # Damaged, still recognisably an SSCC: invalid rather than unknown.
    assert not classify(f"00{EXAMPLE_SSCC[:-1]}3").valid


def test_gs1_datamatrix_identifier() -> None:
    label = classify(f"]d200{EXAMPLE_SSCC}42020250")
    assert (label.kind, label.valid, label.barcode) == (CodeKind.GS1, True, EXAMPLE_SSCC)


@pytest.mark.parametrize(
    "code",
    [
        "]C1",  # empty message
        "]C100123",  # SSCC too short
        "]C1421",  # 421 without country
        "]C100" + "\u0660" * 18,  # Arabic-Indic digits: biip's \d would accept them
        "]C1420ÉTÉ",  # outside the GS1 character set
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


def test_ups_known_good() -> None:
    assert ups_check_digit("999AA1012345678") == 4
    label = classify("1Z999AA10123456784")
    assert (label.kind, label.valid, label.barcode) == (CodeKind.UPS, True, "1Z999AA10123456784")
    bad = classify("1Z999AA10123456785")
    assert (bad.kind, bad.valid) == (CodeKind.UPS, False)


def test_dhl() -> None:
    # 123456789 = 7 * 17636684 + 1
    assert dhl_check_digit("123456789") == 1
    assert classify("1234567891") == Label(
        raw="1234567891", kind=CodeKind.DHL, valid=True, barcode="1234567891"
    )
    assert (classify("1234567898").kind, classify("1234567898").valid) == (CodeKind.DHL, False)


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
        "RB\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0665GB",  # `\d`, int() take these
        "123456789012345678",  # 18 digits: not GS1 without an AI and symbology id
        "9400111899223100012345",  # USPS-like, no leading parcel AI
        "0012345",  # too short to be GS1
        "420123456789012345",  # 18 digits with a parcel AI: still too short for bare GS1
        "42020250",
        "00" + "1" * 18 + "X",  # digits then a letter: not bare GS1
        "]",
        "]C",
    ],
)
def test_unknown_is_valid_and_carries_the_code(code: str) -> None:
    assert classify(code) == Label(raw=code, kind=CodeKind.UNKNOWN, valid=True, barcode=code)


def test_non_gs1_symbology_identifier_is_dropped() -> None:
    label = classify("]C0RB123456785GB")
    assert (label.raw, label.kind, label.valid, label.barcode) == (
        "]C0RB123456785GB",
        CodeKind.S10,
        True,
        "RB123456785GB",
    )
    # ]C0 says plain Code 128: the digits are not GS1 even though they look it.
    assert classify(f"]C000{EXAMPLE_SSCC}42020250").kind is CodeKind.UNKNOWN


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


# --- AI 421: ISO numeric country ----------------------------------------------------


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
    assert (label.valid, label.country, label.postcode, label.barcode) == (
        True,
        alpha2,
        "20250",
        EXAMPLE_SSCC,
    )


def test_ai_421_unassigned_country_keeps_postcode() -> None:
    label = classify(f"]C100{EXAMPLE_SSCC}42199920250")
    assert (label.valid, label.country, label.postcode) == (True, "", "20250")


_ISO_CODES_JSON = Path("/usr/share/iso-codes/json/iso_3166-1.json")


@pytest.mark.requires("iso-codes")
def test_iso_table_matches_iso_codes() -> None:
    entries = json.loads(_ISO_CODES_JSON.read_text(encoding="utf-8"))["3166-1"]
    assert len(entries) >= 249
    for entry in entries:
        assert iso_numeric_to_alpha2(entry["numeric"]) == entry["alpha_2"], entry


# --- generators round-trip ------------------------------------------------------------


@given(st.randoms(use_true_random=False))
def test_make_s10_round_trip(rng: random.Random) -> None:
    code = make_s10(rng)
    label = classify(code)
    assert label.kind is CodeKind.S10
    assert label.valid, label.error
    assert label.barcode == code
    assert (label.s10_service, label.country) == (code[:2], code[-2:])


@given(
    st.randoms(use_true_random=False),
    st.text(string.ascii_uppercase, min_size=2, max_size=2),
    st.text(string.ascii_uppercase, min_size=2, max_size=2),
)
def test_make_s10_given_service_and_country(rng: random.Random, service: str, country: str) -> None:
    label = classify(make_s10(rng, service=service, country=country))
    assert (label.kind, label.valid, label.s10_service, label.country) == (
        CodeKind.S10,
        True,
        service,
        country,
    )


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
    st.sampled_from([None, "504", "250", "156"]),
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
    assert (label.barcode, label.postcode) == (sscc, postcode)
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


def _make_moroccan_gs1(rng: random.Random) -> str:
    return make_gs1_label(rng, moroccan_postcode(rng))


_CHECKED_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "s10": make_s10,
    "ups": make_ups,
    "dhl": make_dhl,
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


@pytest.mark.parametrize("code", ["LP00123456789012", "hello", "]C142020250", "RB123456784GB"])
def test_damage_refuses_what_it_cannot_break(code: str) -> None:
    with pytest.raises(ValueError, match=r"no check digit|already invalid"):
        damage(random.Random(0), code)


# --- classify never raises ------------------------------------------------------------

_GS1_ALPHABET = st.sampled_from(
    [*string.digits * 4, GS, "A", "z", "-", "/", " ", "\n", "\x00", "\u0663", "²", "é", "]"]
)


@given(
    st.one_of(
        st.text(),
        st.text(st.characters(codec="ascii")),
        st.builds(
            str.__add__,
            st.sampled_from(["]C1", "]d2", "]Q3", "]C0", "]", "00", "420", "421", "401"]),
            st.text(_GS1_ALPHABET, max_size=50),
        ),
    )
)
def test_classify_never_raises(code: str) -> None:
    label = classify(code)
    assert label.raw == code
    assert isinstance(label.kind, CodeKind)
    assert label.valid or label.error
    if label.kind is CodeKind.UNKNOWN:
        assert label.valid


# --- the biip-free fast path for common parcel labels --------------------------------

_X_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-./"


@st.composite
def _gs1_payloads(draw: st.DrawFn) -> str:
    """Element strings of AIs 00/420/421/401/403, sometimes broken, in any order."""
    fields: list[tuple[str, bool]] = []
    for _ in range(draw(st.integers(1, 4))):
        ai = draw(st.sampled_from(["00", "420", "421", "401", "403", "400", "15"]))
        if ai == "00":
            body = draw(st.text("0123456789", min_size=17, max_size=17))
            check = gs1_check_digit(body) if draw(st.booleans()) else draw(st.integers(0, 9))
            fields.append(("00" + body + str(check), False))
        elif ai == "15":
            fields.append(("15" + draw(st.text("0123456789", min_size=6, max_size=6)), False))
        else:
            prefix = draw(st.text("0123456789", min_size=3, max_size=3)) if ai == "421" else ""
            value = draw(st.text(_X_CHARS, min_size=0, max_size=34))
            fields.append((ai + prefix + value, True))
    out = ""
    for i, (text, variable) in enumerate(fields):
        out += text
        if variable and (i < len(fields) - 1 or draw(st.booleans())):
            out += GS
    return out


@given(_gs1_payloads(), st.sampled_from(["]C1", ""]))
@settings(max_examples=600)
def test_fast_gs1_path_agrees_with_biip(payload: str, prefix: str) -> None:
    from sorter.barcodes import _fast_gs1, _gs1_label, _parse_gs1

    fast = _fast_gs1(prefix + payload, payload)
    if fast is None:
        return  # the fast path declined; biip decides, nothing to compare
    slow = _gs1_label(prefix + payload, _parse_gs1(payload))
    assert fast == slow


def test_fast_gs1_path_takes_the_demo_labels() -> None:
    from sorter.barcodes import _fast_gs1

    rng = random.Random(5)
    for _ in range(200):
        code = make_gs1_label(rng, moroccan_postcode(rng))
        assert _fast_gs1(code, code[3:]) is not None, code
    assert classify(EXAMPLE_GS1) == Label(
        raw=EXAMPLE_GS1,
        kind=CodeKind.GS1,
        valid=True,
        barcode="061110010001000012",
        postcode="20250",
    )
