"""The oracle against the examples of the specifications (INTERFACES v2 section 6, DOMAIN,
SPEC-v2-decision), so that the comparison with the product starts from a checked reference."""

from __future__ import annotations

from typing import Any

import pytest

from tests.oracle import ISO_ALPHA2, ISO_NUMERIC, Kind, Oracle, classify, normalise_postcode
from tests.oracle.checks import dhl_check_ok, gs1_check_ok, s10_check_digit, ups_check_digit
from tests.oracle.plan import parse_postcode_pattern

GS = "\x1d"
SSCC = "061110010001000012"  # INTERFACES section 4's example, check digit right
SSCC2 = "106141411234567897"  # the HRI example of section 6

HEAD = """
version = 2
name = "test"
[machine]
chutes = "1-240"
{limits}
[functions]
no_read = 201
invalid_code = 202
multi_read_conflict = 203
no_rule = 204
no_chute = 205
max_recirc = 206
timeout = 207
after_cutoff = 208
customs_hold = 209
{out_of_range}
[options]
max_recirculations = {max_recirc}
balance = "{balance}"
"""


def plan(
    body: str,
    balance: str = "round_robin",
    max_recirc: int = 2,
    limits: str = "",
    out_of_range: str = "out_of_range = 210",
) -> str:
    head = HEAD.format(
        limits=limits, out_of_range=out_of_range, max_recirc=max_recirc, balance=balance
    )
    return head + body


def dest(name: str, chutes: str, overflow: str = "[]", cutoff: str = "") -> str:
    line = f'cutoff = "{cutoff}"\n' if cutoff else ""
    return f'[[destination]]\nname = "{name}"\nchutes = {chutes}\noverflow = {overflow}\n{line}'


def rule(name: str, **conditions: object) -> str:
    lines = [f"{k} = {v!r}".replace("'", '"') for k, v in conditions.items()]
    return "[[rule]]\n" + f'destination = "{name}"\n' + "\n".join(lines) + "\n"


# Destinations 1..6 own chutes 1..6, one each; RB/EE S10 codes posted in GB and MA.
SIX = "".join(dest(n, f"[{i}]") for i, n in enumerate(["CASA", "MA", "ES", "FR", "GB", "X"], 1))
S10_GB = "RB123456785GB"
S10_MA = "EE123456785MA"


def label(*fields: str, ident: str = "]C1") -> str:
    return ident + GS.join(fields)


def where(o: Oracle, codes: list[str], **kw: Any) -> str:
    return o.decide(codes, **kw).destination


# ---------------------------------------------------------------- tables and check digits


def test_iso_table_has_the_249_officially_assigned_codes() -> None:
    assert len(ISO_ALPHA2) == 249
    assert len(ISO_NUMERIC) == 249
    pairs = {"504": "MA", "250": "FR", "724": "ES", "276": "DE", "528": "NL", "056": "BE"}
    pairs |= {"380": "IT", "620": "PT", "826": "GB", "156": "CN", "840": "US", "124": "CA"}
    pairs |= {"616": "PL"}
    for numeric, alpha in pairs.items():
        assert ISO_NUMERIC[numeric] == alpha
        assert ISO_ALPHA2[alpha] == numeric
    user_assigned = {"AA", "ZZ", *(f"Q{c}" for c in "MNOPQRSTUVWXYZ"), *(f"X{c}" for c in "AZ")}
    withdrawn = {"AN", "CS", "YU", "TP", "ZR", "BU", "SU", "DD", "YD", "NT"}
    assert not (user_assigned | withdrawn) & set(ISO_ALPHA2)
    assert all(len(n) == 3 and n.isdigit() for n in ISO_NUMERIC)


def test_check_digits_of_the_published_examples() -> None:
    assert s10_check_digit("12345678") == 5  # RB123456785GB
    assert gs1_check_ok(SSCC)
    assert gs1_check_ok(SSCC2)
    assert not gs1_check_ok(SSCC[:-1] + "3")
    assert ups_check_digit("999AA1012345678") == 4  # 1Z999AA10123456784
    assert dhl_check_ok("1234567891")  # 123456789 mod 7 = 1
    assert not dhl_check_ok("1234567890")


# ---------------------------------------------------------------- classifying codes


@pytest.mark.parametrize(
    ("code", "kind", "valid"),
    [
        (S10_GB, Kind.S10, True),
        ("RB123456786GB", Kind.S10, False),  # wrong check digit
        ("RB123456785XX", Kind.S10, False),  # user-assigned suffix
        ("RB123456785AN", Kind.S10, False),  # withdrawn suffix
        ("rb123456785gb", Kind.UNKNOWN, True),  # case-sensitive
        ("1Z999AA10123456784", Kind.UPS, True),
        ("1Z999AA10123456785", Kind.UPS, False),
        ("1234567891", Kind.DHL, True),
        ("1234567890", Kind.UNKNOWN, True),  # mod 7 wrong: not DHL, not GS1
        ("LP00123456789012", Kind.LP, True),
        ("hello", Kind.UNKNOWN, True),
        (label("00" + SSCC, "42020250"), Kind.GS1, True),
        (label("00" + SSCC2, "42020250", ident="]d2"), Kind.GS1, True),
        (label("00" + SSCC2, ident="]Q3"), Kind.GS1, True),
        (label("00" + SSCC2, ident="]e0"), Kind.GS1, True),
        (label("00" + SSCC[:-1] + "3", "42020250"), Kind.GS1, False),
        (label("42199912345"), Kind.GS1, False),  # 999 is no country
        (label("42153012345"), Kind.GS1, False),  # 530 Netherlands Antilles, withdrawn
        (GS + "00" + SSCC + "42020250", Kind.GS1, True),  # leading FNC1
        (f"(00){SSCC2}(420)20250", Kind.GS1, True),
        (f"(00){SSCC2}(420", Kind.GS1, False),  # malformed HRI
        (f"(00){SSCC2[:-1]}8", Kind.GS1, False),
        (label("00" + SSCC, "420 20250"), Kind.GS1, False),  # space: outside the 82 set
        (label("00" + SSCC, "17991231"), Kind.GS1, True),  # dates are not verified...
        (label("00" + SSCC, "17990231"), Kind.GS1, True),  # (30 February included)
        (label("00" + SSCC, "17991399"), Kind.GS1, False),  # ...but their syntax is
        ("00" + SSCC + "42020250", Kind.GS1, True),  # bare digits
        ("00" + SSCC[:-1] + "3", Kind.UNKNOWN, True),  # bare digits, wrong check
        ("]C0" + S10_GB, Kind.S10, True),  # non-GS1 identifier dropped
        ("]C0" + "00" + SSCC, Kind.UNKNOWN, True),  # ... and never GS1
    ],
)
def test_classify(code: str, kind: Kind, valid: bool) -> None:
    c = classify(code)
    assert (c.kind, c.valid) == (kind, valid)
    assert c.raw == code


def test_classify_fields() -> None:
    s10 = classify("]C0" + S10_MA)
    assert (s10.barcode, s10.s10_service, s10.origin, s10.country) == (S10_MA, "EE", "MA", "")
    ship = classify(label("00" + SSCC, "42172428001"))
    assert (ship.barcode, ship.country, ship.postcode, ship.ship_to) == (SSCC, "ES", "28001", True)
    domestic = classify(f"(00){SSCC2}(420)20250")
    assert (domestic.barcode, domestic.country, domestic.postcode) == (SSCC2, "", "20250")
    # The first of 420/421 on a label gives the ship-to.
    first = classify(label("42125020000", "42020250"))
    assert (first.country, first.postcode, first.barcode) == ("FR", "20000", "")


def test_bare_digits_only_without_identifiers() -> None:
    bare = "00" + SSCC + "42020250"
    assert classify(bare, identifiers=False).kind == Kind.GS1
    assert classify(bare, identifiers=True).kind == Kind.UNKNOWN
    # Unambiguous forms stay GS1 with identifiers promised.
    assert classify(GS + bare, identifiers=True).kind == Kind.GS1
    assert classify(f"(00){SSCC2}", identifiers=True).kind == Kind.GS1
    # GS between fields only; not first, not last; only AIs 00, 420, 421, 401, 403 first.
    assert classify("42020250" + GS + "00" + SSCC).kind == Kind.GS1
    assert classify("42020250" + GS).kind == Kind.UNKNOWN
    assert classify("01" + "12345678901231").kind == Kind.UNKNOWN


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("]C1" + GS + "00" + SSCC, True),  # identifier and leading FNC1 both: tolerated
        ("]C1" + "00" + SSCC + GS + "42020250", True),  # FNC1 after a fixed-length field
        ("]C1" + "42020250" + GS, True),  # a trailing FNC1
        ("]C1" + "42020250" + GS + GS + "00" + SSCC, False),  # an empty field
        ("]C1" + "420" + "2025000" + SSCC + "12345", False),  # forgotten FNC1: 420 too long
        ("]C1" + "421250", False),  # 421 needs a postcode of 1..9 characters
        ("]C1" + "421840" + "94105-1234", False),  # ten characters
        ("]C1" + "7003" + "2513991200", True),  # an unusual AI from biip's table, no date check
        ("]C1" + "8018" + "123456789012345675", True),  # GSRN, check digit right
        ("]C1" + "8018" + "123456789012345678", False),
        ("]C1" + "01" + "12345678901231" + "10" + "LOT1", True),
        ("]C1" + "01" + "12345678901232", False),  # GTIN check digit wrong
        (f"(00){SSCC2}(4200)20250", False),  # (4200) is no AI
        (f"(00) {SSCC2}", False),  # a space in the HRI
        ("]C2" + "00" + SSCC, True),  # ]C2 is no GS1 identifier: an unknown code
    ],
)
def test_element_string_readings(code: str, valid: bool) -> None:
    assert classify(code).valid == valid


def test_unknown_ai_is_invalid() -> None:
    assert not classify("]C1" + "04" + "1" * 16).valid  # 04 is not defined
    assert classify("]C1" + "99" + "ABC").valid  # 99: company internal, X..90


# ---------------------------------------------------------------- postcodes


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("SW1A 1AA", "SW1*"),
        ("SW1A 1AA", "SW1A1AA"),
        ("sw1a1aa", "SW1A 1AA"),
        ("1012 AB", "1012*"),
        ("1012 AB", "1012AB"),
        ("K1A 0B1", "K1A0B1"),
        ("K1A 0B1", "K1A*"),
        ("1000-001", "1000000-1000999"),
        ("1000-001", "1000001"),
        ("00-950", "00900-00999"),
        ("94105-1234", "94105*"),
        ("94105-1234", "941051234"),
        ("94105", "94100-94199"),
        ("20250", "20000-20999"),
        ("20250", "20*"),
    ],
)
def test_postcodes_match_the_obvious_patterns(value: str, pattern: str) -> None:
    assert parse_postcode_pattern(pattern).matches(normalise_postcode(value))


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("94105-1234", "94100-94199"),  # nine digits: not in a five-digit range
        ("2025", "20000-20999"),
        ("SW1A 1AA", "20*"),
        ("K1A 0B1", "K1A"),
        ("ABCDEFGHIJK", "ABC*"),  # eleven characters: unusable
        ("20/250", "20*"),
    ],
)
def test_postcodes_that_do_not_match(value: str, pattern: str) -> None:
    assert not parse_postcode_pattern(pattern).matches(normalise_postcode(value))


@pytest.mark.parametrize(
    "pattern", ["A1-B2", "2*0", "*", "100-2000", "20999-20000", "", "10-*", "20#", "12345678901"]
)
def test_refused_postcode_patterns(pattern: str) -> None:
    body = SIX + rule("CASA", postcode=[pattern])
    with pytest.raises(ValueError, match="postcode"):
        Oracle(plan(body))


@pytest.mark.parametrize(
    ("key", "patterns"),
    [("country", ["XX"]), ("origin", ["ZZ"]), ("country", ["ma"]), ("country", ["MAR"])],
)
def test_refused_letter_patterns(key: str, patterns: list[str]) -> None:
    with pytest.raises(ValueError, match=key):
        Oracle(plan(SIX + rule("CASA", **{key: patterns})))


def test_refused_plans() -> None:
    with pytest.raises(ValueError, match="version"):
        Oracle(plan(SIX).replace("version = 2", "version = 1"))
    with pytest.raises(ValueError, match="does not exist"):
        Oracle(plan(dest("A", "[300]")))
    with pytest.raises(ValueError, match="destination"):
        Oracle(plan(SIX + rule("NOWHERE")))
    with pytest.raises(ValueError, match="barcode"):
        Oracle(plan(SIX + rule("CASA", barcode="(")))
    with pytest.raises(ValueError, match="unknown"):
        Oracle(plan(SIX + "[[rule]]\ndestination = 'CASA'\ncountri = ['MA']\n"))
    with pytest.raises(ValueError, match="above"):
        Oracle(plan(SIX, limits="min_weight_g = 60000\nmax_weight_g = 50000"))
    Oracle(plan(SIX + rule("CASA", postcode=["20000-20999", "SW1*", " K1A 0B1 "])))


# ---------------------------------------------------------------- what the rules see

COUNTRY_RULES = (
    rule("CASA", country=["MA"], postcode=["20000-20999"])
    + rule("MA", country=["MA"])
    + rule("ES", country=["ES"], postcode=["28000-28999"])
    + rule("FR", country=["FR"])
)


def test_s10_suffix_is_the_origin_not_the_destination() -> None:
    o = Oracle(plan(SIX + COUNTRY_RULES), site_country="MA")
    spain = label("00" + SSCC, "421724" + "28001")
    d = o.decide([S10_MA, spain])
    assert (d.destination, d.reason, d.barcode) == ("ES", "ok", S10_MA)


def test_corsica_is_france_not_casablanca() -> None:
    o = Oracle(plan(SIX + COUNTRY_RULES), site_country="MA")
    assert where(o, [S10_GB, label("421250" + "20000")]) == "FR"
    assert where(o, [label("421250" + "20000")]) == "FR"  # a label alone: barcode is its raw
    assert o.decide([label("421250" + "20000")]).barcode == label("421250" + "20000")


def test_ai_420_is_the_sites_country() -> None:
    domestic = label("00" + SSCC, "42020250")
    assert where(Oracle(plan(SIX + COUNTRY_RULES), site_country="MA"), [domestic]) == "CASA"
    assert where(Oracle(plan(SIX + COUNTRY_RULES), site_country="FR"), [domestic]) == "FR"
    # No site country: unknown, so no country rule matches.
    d = Oracle(plan(SIX + COUNTRY_RULES)).decide([domestic])
    assert (d.reason, d.barcode) == ("no_rule", SSCC)


def test_unknown_country_matches_neither_ma_nor_not_ma() -> None:
    body = SIX + rule("MA", country=["MA"]) + rule("X", country=["!MA"]) + rule("GB")
    o = Oracle(plan(body))  # no site country, no manifest: the country is unknown
    assert where(o, [S10_GB]) == "GB"
    assert where(o, [label("421250" + "75001")]) == "X"  # known and not MA
    assert where(o, [label("421504" + "20250")]) == "MA"


def test_glob_and_negation_sets() -> None:
    body = SIX + rule("FR", country=["F*", "!FI"]) + rule("ES", country=["!FR", "!MA"])
    body += rule("X", origin=["?B"])
    o = Oracle(plan(body))
    assert where(o, [label("421250" + "75001")]) == "FR"
    assert where(o, [label("421246" + "00100")]) == "ES"  # Finland: not FR, not MA
    assert where(o, [S10_GB, label("421504" + "20250")]) == "X"  # origin GB matches ?B


def test_origin_from_s10_then_manifest() -> None:
    body = SIX + rule("CASA", origin=["MA"]) + rule("GB", origin=["GB"])
    rows = [
        {"barcode": "1Z999AA10123456784", "country": "ES", "origin": "ma"},
        {"barcode": S10_GB, "country": "ES", "origin": "MA"},
    ]
    o = Oracle(plan(body), manifest_rows=rows)
    assert where(o, ["1Z999AA10123456784"]) == "CASA"  # no S10: the manifest's origin
    assert where(o, [S10_GB]) == "GB"  # the S10 suffix wins over the manifest


def test_manifest_is_looked_up_under_every_code_tracking_code_first() -> None:
    body = SIX + rule("FR", country=["FR"]) + rule("ES", country=["ES"])
    rows = [
        {"barcode": SSCC, "country": "ES"},
        {"barcode": "LP00123456789012", "country": "FR"},
    ]
    o = Oracle(plan(body), manifest_rows=rows)
    sscc_only = label("00" + SSCC)
    assert where(o, [sscc_only]) == "ES"
    # The LP code names the item and is looked up first, though read second.
    d = o.decide([sscc_only, "LP00123456789012"])
    assert (d.destination, d.barcode) == ("FR", "LP00123456789012")
    # An S10 without a row: the SSCC's row is found next.
    d = o.decide([sscc_only, S10_GB])
    assert (d.destination, d.barcode) == ("ES", S10_GB)


def test_label_ship_to_wins_as_a_whole_over_the_manifest() -> None:
    body = SIX + COUNTRY_RULES + rule("GB", postcode=["SW1*"])
    rows = [{"barcode": S10_GB, "country": "FR", "postcode": "SW1A 1AA"}]
    o = Oracle(plan(body), site_country="MA", manifest_rows=rows)
    assert where(o, [S10_GB]) == "FR"
    # A 420 label makes it domestic: the manifest's country is not kept beside its postcode.
    assert where(o, [S10_GB, label("42020250")]) == "CASA"
    assert where(o, [S10_GB, label("42099999")]) == "MA"


def test_manifest_postcode_without_country_is_domestic() -> None:
    body = SIX + COUNTRY_RULES + rule("GB", postcode=["SW1*"])
    rows = [{"barcode": S10_GB, "postcode": "20250"}, {"barcode": S10_MA, "postcode": "sw1a-1aa"}]
    assert where(Oracle(plan(body), "MA", rows), [S10_GB]) == "CASA"
    o = Oracle(plan(body), None, rows)
    assert o.decide([S10_GB]).reason == "no_rule"  # country unknown without a site
    assert where(o, [S10_MA]) == "GB"  # normalised: SW1A1AA


def test_manifest_destination_customs_and_bad_rows() -> None:
    body = SIX + rule("CASA")
    rows = [
        {"barcode": S10_GB, "destination": "ES"},
        {"barcode": S10_MA, "destination": "FR", "customs": "HOLD"},
        {"barcode": "LP00123456789012", "destination": "FR", "customs": "Yes"},
        {"barcode": "LP00123456789013", "destination": "FR", "customs": "release"},
        {"barcode": "A", "destination": "NOWHERE"},
        {"barcode": "B", "country": "XX"},
        {"barcode": "C", "destination": "FR", "service": "E1"},
        {"barcode": "D", "destination": "FR", "customs": "maybe"},
        {"barcode": "E", "service": "EE"},  # no destination, postcode, country or origin
        {"barcode": "", "destination": "FR"},
        {"barcode": "F", "destination": "FR"},
        {"barcode": "F", "destination": "NOWHERE"},  # bad: does not replace the row before
        {"barcode": "G", "destination": "FR"},
        {"barcode": "G", "destination": "ES"},  # later rows replace earlier ones
    ]
    o = Oracle(plan(body), manifest_rows=rows)
    assert where(o, [S10_GB]) == "ES"  # pre-advised: skips the rules
    assert o.decide([S10_MA])[1:3] == (209, "customs_hold")
    assert o.decide(["LP00123456789012"]).reason == "customs_hold"
    assert where(o, ["LP00123456789013"]) == "FR"
    for code in "ABCDE":
        assert where(o, [code]) == "CASA"
    assert where(o, ["F"]) == "FR"
    assert where(o, ["G"]) == "ES"


def test_service_from_s10_then_manifest_and_barcode_rules() -> None:
    body = SIX + rule("ES", s10_service=["E*"]) + rule("FR", barcode="^1Z")
    body += rule("GB", barcode="42020250$")
    rows = [{"barcode": "LP00123456789012", "country": "FR", "service": "ea"}]
    o = Oracle(plan(body), manifest_rows=rows)
    assert where(o, [S10_MA]) == "ES"
    assert where(o, ["LP00123456789012"]) == "ES"
    assert where(o, ["1Z999AA10123456784"]) == "FR"
    assert where(o, [S10_GB, label("00" + SSCC, "42020250")]) == "GB"  # the label's raw text
    assert o.decide([S10_GB]).reason == "no_rule"


# ---------------------------------------------------------------- chutes


def test_round_robin_skips_full_disabled_and_fault() -> None:
    body = dest("A", "[1, 2, 3]", "[9]") + rule("A")
    o = Oracle(plan(body))
    assert [o.decide(["x"]).chute for _ in range(4)] == [1, 2, 3, 1]
    o.flags[3] = 1  # full
    assert [o.decide(["x"]).chute for _ in range(3)] == [2, 1, 2]
    o.flags[1] = 2  # disabled
    o.flags[2] = 4  # fault
    assert o.decide(["x"]) == ("A", 9, "ok", "x")  # overflow
    o.flags[9] = 1
    assert o.decide(["x"]) == ("A", 205, "no_chute", "x")
    o.flags.clear()
    assert o.decide(["x"]).chute == 3  # the pointer stayed after chute 2


def test_least_loaded_ties_to_the_first_listed() -> None:
    body = dest("A", "[1, 2, 3]", "[8, 9]") + rule("A")
    o = Oracle(plan(body, balance="least_loaded"))
    assert [o.decide(["x"]).chute for _ in range(4)] == [1, 2, 3, 1]
    o.flags[1] = 1
    assert [o.decide(["x"]).chute for _ in range(3)] == [2, 3, 2]
    o.flags.update({1: 7, 2: 2, 3: 4, 8: 1})
    assert [o.decide(["x"]).chute for _ in range(2)] == [9, 9]
    o.flags.clear()
    assert o.load == {1: 2, 2: 3, 3: 2, 9: 2}
    assert o.decide(["x"]).chute == 1


def test_cutoff_keeps_the_destination() -> None:
    o = Oracle(plan(dest("A", "[1]", cutoff="21:30") + rule("A")))
    assert o.decide(["x"], minute_of_day=21 * 60 + 29).reason == "ok"
    assert o.decide(["x"], minute_of_day=21 * 60 + 30) == ("A", 208, "after_cutoff", "x")
    assert o.decide(["x"], minute_of_day=-1).reason == "ok"


def test_max_recirc_comes_first() -> None:
    o = Oracle(plan(SIX + rule("CASA"), max_recirc=2))
    assert o.decide(["x"], recirculations=1).reason == "ok"
    assert o.decide(["x"], recirculations=2) == ("", 206, "max_recirc", "x")
    assert o.decide([], recirculations=2).reason == "max_recirc"
    assert o.decide(["x"], recirculations=5, timeout=True) == ("", 206, "max_recirc", "")
    zero = Oracle(plan(SIX + rule("CASA"), max_recirc=0))
    assert zero.decide(["x"]).reason == "max_recirc"


def test_out_of_range_before_every_code_reason() -> None:
    limits = "max_length_mm = 2000\nmin_weight_g = 50\nmax_weight_g = 50000"
    o = Oracle(plan(SIX + rule("CASA"), limits=limits))
    assert o.decide(["x"], dims=(2000, 0, 0, 50)).reason == "ok"
    assert o.decide(["x"], dims=(0, 0, 0, 0)).reason == "ok"  # 0 is not measured
    assert o.decide(["x"], dims=(2001, 0, 0, 0)) == ("", 210, "out_of_range", "x")
    assert o.decide(["x"], dims=(10, 10, 10, 49)).reason == "out_of_range"
    assert o.decide([], dims=(0, 0, 0, 50001)).reason == "out_of_range"
    assert o.decide(["x"], dims=(3000, 0, 0, 0), timeout=True).reason == "out_of_range"
    assert o.decide(["x"], dims=(3000, 0, 0, 0), recirculations=2).reason == "max_recirc"
    without = Oracle(plan(SIX + rule("CASA"), limits=limits, out_of_range=""))
    assert without.decide(["x"], dims=(3000, 0, 0, 0)) == ("", 206, "out_of_range", "x")


def test_size_classes() -> None:
    classes = (
        '[[size_class]]\nname = "standard"\nmax_side_mm = 1200\nmax_weight_g = 30000\n'
        '[[size_class]]\nname = "oversize"\n'
    )
    body = SIX + classes + rule("X", size_class=["oversize"])
    body += rule("CASA", size_class=["standard"]) + rule("GB")
    o = Oracle(plan(body))
    assert where(o, ["x"], dims=(100, 100, 100, 1000)) == "CASA"
    assert where(o, ["x"], dims=(1300, 100, 100, 1000)) == "X"
    assert where(o, ["x"], dims=(0, 0, 0, 35000)) == "X"  # ruled out of standard already
    assert where(o, ["x"], dims=(100, 100, 100, 0)) == "GB"  # unweighed: no class
    assert where(o, ["x"], dims=(100, 0, 100, 1000)) == "CASA"  # the longest side measured
    assert where(o, ["x"]) == "GB"


# ---------------------------------------------------------------- codes combined


def test_no_read_invalid_and_ignored_invalid_codes() -> None:
    o = Oracle(plan(SIX + rule("GB", origin=["GB"]) + rule("CASA")))
    assert o.decide([]) == ("", 201, "no_read", "")
    assert o.decide(["RB123456786GB", "1Z999AA10123456785"]) == (
        "",
        202,
        "invalid_code",
        "RB123456786GB",
    )
    bad_label = label("00" + SSCC[:-1] + "3")
    # An invalid label is named by the SSCC it starts with, as read; without one, by its text.
    assert o.decide([bad_label]).barcode == SSCC[:-1] + "3"
    torn = label("42020250", "00" + SSCC[:-1] + "3")
    assert o.decide([torn]).barcode == torn
    assert o.decide(["]C0RB123456786GB"]).barcode == "RB123456786GB"
    assert o.decide(["RB123456786GB", S10_GB]) == ("GB", 1 + 4, "ok", S10_GB)
    assert o.decide(["RB123456785XX", "hello"]) == ("CASA", 1, "ok", "hello")


def test_multi_read_conflict_and_agreement() -> None:
    body = SIX + COUNTRY_RULES + rule("GB", origin=["GB"])
    o = Oracle(plan(body), site_country="MA")
    # Two ship-to labels to different places.
    spain, corsica = label("421724" + "28001"), label("421250" + "20000")
    assert o.decide([S10_MA, spain, corsica]) == ("", 203, "multi_read_conflict", S10_MA)
    # Two labels that agree.
    assert where(o, [S10_MA, spain, label("00" + SSCC, "421724" + "28999")]) == "ES"
    # Two tracking codes to different places (S10 GB -> GB; UPS -> no rule: no conflict).
    assert o.decide([S10_GB, "1Z999AA10123456784"]) == ("GB", 5, "ok", S10_GB)
    # The UPS code's row is found for the S10 too (looked up under every code): agreement.
    rows = [{"barcode": "1Z999AA10123456784", "destination": "FR"}]
    o2 = Oracle(plan(body), site_country="MA", manifest_rows=rows)
    assert o2.decide(["1Z999AA10123456784", S10_GB]) == ("FR", 4, "ok", S10_GB)
    # Each code with its own row, to different places: conflict.
    rows.append({"barcode": S10_GB, "destination": "ES"})
    o3 = Oracle(plan(body), site_country="MA", manifest_rows=rows)
    d = o3.decide(["1Z999AA10123456784", S10_GB])
    assert (d.reason, d.barcode) == ("multi_read_conflict", S10_GB)
    # The first candidate with a destination is taken when the others have none.
    o4 = Oracle(plan(SIX + rule("FR", barcode="^1Z")))
    assert o4.decide(["hello", "1Z999AA10123456784"]) == ("FR", 4, "ok", "1Z999AA10123456784")


def test_timeout_ignores_codes() -> None:
    o = Oracle(plan(SIX + rule("CASA")))
    assert o.decide([S10_GB], timeout=True) == ("", 207, "timeout", "")
