"""From codes as read to a chute (sorter.decide), on the demo plan and real label formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from sorter.barcodes import GS, dhl_check_digit, s10_check_digit, ups_check_digit
from sorter.decide import Choice, Decider
from sorter.kernel import ChuteState, ItemFeatures
from sorter.plan import build_plan, compile_plan, letters_index, load_plan
from sorter.ports import Reason
from sorter.postcode import encode_postcode

DEMO_PLAN = Path(__file__).resolve().parents[1] / "config" / "demo" / "sortplan.toml"

# Real codes, each with a valid check digit.
S10_RB_GB = "RB123456785GB"  # the S10 example of docs/interfaces.md section 4
S10_EE_CN = f"EE87654321{s10_check_digit('87654321')}CN"
S10_EA_FR = f"EA11223344{s10_check_digit('11223344')}FR"
S10_EE_MA = f"EE12345678{s10_check_digit('12345678')}MA"
UPS = "1Z999AA10123456784"
DHL = f"123456789{dhl_check_digit('123456789')}"
LP = "LP00123456789012"
SSCC = "061110010001000012"
GS1_CASABLANCA = f"]C100{SSCC}42020250"  # docs/interfaces.md section 4: SSCC + AI 420 20250
GS1_RABAT_NO_SSCC = "]C142010100"  # a postcode-only label
GS1_421_MA = f"]C100{SSCC}42150420250"  # AI 421: ISO 3166 numeric 504 = MA, postcode 20250
GS1_421_FR = f"]C100{SSCC}42125075001"  # 250 = FR, postcode 75001

# Same codes with a wrong check digit.
BAD_S10 = "RB123456784GB"
BAD_UPS = UPS[:-1] + str((int(UPS[-1]) + 1) % 10)
BAD_GS1 = f"]C100{SSCC[:-1]}342020250"

# Demo plan chutes.
CASABLANCA_CHUTES = [1, 2, 3, 4, 5, 6]
NO_READ_CHUTE = INVALID_CHUTE = 59
CONFLICT_CHUTE = 58
NO_RULE_CHUTE = 57
MAX_RECIRC_CHUTE = 60


def test_codes_are_what_they_claim() -> None:
    assert S10_EE_CN[-2:] == "CN"
    assert ups_check_digit(UPS[2:17]) == int(UPS[17])
    assert BAD_UPS != UPS
    assert DHL == "1234567891"  # 123456789 mod 7 == 1


@pytest.fixture(scope="module")
def warm() -> None:
    compiled = compile_plan(load_plan(DEMO_PLAN))
    Decider(compiled, ChuteState.for_plan(compiled)).warm()


@pytest.fixture
def decider(warm: None) -> Decider:
    compiled = compile_plan(load_plan(DEMO_PLAN))
    return Decider(
        compiled, ChuteState.for_plan(compiled), timezone="Africa/Casablanca", site_country="MA"
    )


def test_s10_and_gs1_postcode_label_combine(decider: Decider) -> None:
    # The S10 alone would go to REGISTERED-MANUAL; the postcode from the GS1 label matches
    # an earlier rule, and the S10 still names the item.
    assert decider.decide([S10_RB_GB]) == Choice("REGISTERED-MANUAL", 22, Reason.OK, S10_RB_GB)
    assert decider.decide([S10_RB_GB, GS1_CASABLANCA]) == Choice(
        "CASABLANCA", 1, Reason.OK, S10_RB_GB
    )
    assert decider.decide([GS1_CASABLANCA, S10_RB_GB]) == Choice(
        "CASABLANCA", 2, Reason.OK, S10_RB_GB
    )


def test_combined_features(decider: Decider) -> None:
    features, barcode = decider.features([GS1_CASABLANCA, S10_RB_GB], recirculations=1)
    assert barcode == S10_RB_GB
    assert features == ItemFeatures(
        reason_in=int(Reason.OK),
        pc=encode_postcode("20250"),
        pc_digits=5,
        service=letters_index("RB"),
        country=letters_index("MA"),  # AI 420: domestic, the site's country
        origin=letters_index("GB"),  # the S10 suffix: where it was posted
        regex_mask=0,
        recirculations=1,
        minute_of_day=-1,  # the demo plan has no cut-offs
    )


def test_gs1_alone_is_named_by_its_sscc(decider: Decider) -> None:
    assert decider.decide([GS1_CASABLANCA]) == Choice("CASABLANCA", 1, Reason.OK, SSCC)


def test_postcode_only_label(decider: Decider) -> None:
    assert decider.decide([GS1_RABAT_NO_SSCC]) == Choice("RABAT", 7, Reason.OK, GS1_RABAT_NO_SSCC)
    # Beside a tracking code it only lends its postcode.
    assert decider.decide([UPS, GS1_RABAT_NO_SSCC]) == Choice("RABAT", 8, Reason.OK, UPS)


def test_disagreeing_carrier_codes_conflict(decider: Decider) -> None:
    # UPS-EXPORT by one code, DHL-EXPORT by the other.
    choice = decider.decide([DHL, UPS])
    assert choice == Choice("", CONFLICT_CHUTE, Reason.MULTI_READ_CONFLICT, UPS)
    # Beside an S10, the UPS code has the item's origin and service (the S10's): EMS from
    # CN either way, no conflict.
    assert decider.decide([S10_EE_CN, UPS]) == Choice("EMS-INBOUND", 20, Reason.OK, S10_EE_CN)
    # Two S10 codes of different services and origins: each its own, and they disagree.
    assert decider.decide([S10_EE_CN, S10_RB_GB]) == Choice(
        "", CONFLICT_CHUTE, Reason.MULTI_READ_CONFLICT, S10_EE_CN
    )


def test_two_ship_to_labels_that_disagree_conflict_without_a_carrier_code(
    decider: Decider,
) -> None:
    # An SSCC label for Casablanca and a postcode-only label for Rabat: the labels disagree,
    # whether or not a carrier code was read beside them.
    for codes in (
        [GS1_CASABLANCA, GS1_RABAT_NO_SSCC],
        [GS1_RABAT_NO_SSCC, GS1_CASABLANCA],
        [GS1_CASABLANCA, GS1_RABAT_NO_SSCC, S10_RB_GB],
    ):
        assert decider.decide(codes).reason is Reason.MULTI_READ_CONFLICT, codes


def test_agreeing_codes_are_ok(decider: Decider) -> None:
    # Two EMS items from abroad: both lead to EMS-INBOUND; the first S10 names the item.
    assert decider.decide([S10_EE_CN, S10_EA_FR]) == Choice("EMS-INBOUND", 20, Reason.OK, S10_EE_CN)
    # The same code read twice.
    assert decider.decide([UPS, UPS]) == Choice("UPS-EXPORT", 30, Reason.OK, UPS)


def test_a_candidate_leading_nowhere_does_not_conflict(decider: Decider) -> None:
    # The S10 routes by service (EMS from CN); the GS1 postcode 55555 matches no rule.
    gs1_nowhere = f"]C100{SSCC}42055555"
    assert decider.decide([S10_EE_CN, gs1_nowhere]) == Choice(
        "EMS-INBOUND", 20, Reason.OK, S10_EE_CN
    )
    assert decider.decide([gs1_nowhere]) == Choice("", NO_RULE_CHUTE, Reason.NO_RULE, SSCC)


def test_two_gs1_labels(decider: Decider) -> None:
    other_sscc = "000000000000000017"
    rabat = f"]C100{other_sscc}42010100"
    assert decider.decide([GS1_CASABLANCA, rabat]) == Choice(
        "", CONFLICT_CHUTE, Reason.MULTI_READ_CONFLICT, SSCC
    )
    same_city = f"]C100{other_sscc}42020999"
    assert decider.decide([GS1_CASABLANCA, same_city]) == Choice("CASABLANCA", 1, Reason.OK, SSCC)


def test_a_carrier_code_names_the_item_before_an_sscc(decider: Decider) -> None:
    assert decider.decide([GS1_CASABLANCA, LP]) == Choice("CASABLANCA", 1, Reason.OK, LP)
    # The contract: "the S10 code, else another carrier code, else the SSCC": a code
    # nobody recognises names the item only when there is neither.
    assert decider.decide([GS1_CASABLANCA, "HELLO-4711"]) == Choice(
        "CASABLANCA", 2, Reason.OK, SSCC
    )
    assert decider.decide([GS1_RABAT_NO_SSCC, "HELLO-4711"]) == Choice(
        "RABAT", 7, Reason.OK, "HELLO-4711"
    )


def test_all_invalid(decider: Decider) -> None:
    assert decider.decide([BAD_S10, BAD_UPS]) == Choice(
        "", INVALID_CHUTE, Reason.INVALID_CODE, BAD_S10
    )
    # An invalid GS1 label keeps the SSCC as read, for the logs.
    assert decider.decide([BAD_GS1]) == Choice(
        "", INVALID_CHUTE, Reason.INVALID_CODE, SSCC[:-1] + "3"
    )
    # One that does not parse has no barcode at all: the raw code names it.
    assert decider.decide(["]C1", BAD_S10]) == Choice("", INVALID_CHUTE, Reason.INVALID_CODE, "]C1")


def test_invalid_codes_beside_a_valid_one_are_ignored(decider: Decider) -> None:
    assert decider.decide([BAD_S10, UPS, BAD_GS1]) == Choice("UPS-EXPORT", 30, Reason.OK, UPS)
    assert decider.invalid_ignored == 2  # and counted (P/stats `codes`)
    decider.decide([BAD_S10])  # alone it is the item's reason, not an ignored code
    assert decider.invalid_ignored == 2


def test_no_codes_is_a_no_read(decider: Decider) -> None:
    assert decider.decide([]) == Choice("", NO_READ_CHUTE, Reason.NO_READ, "")
    features, _ = decider.features([], recirculations=1)
    assert features == ItemFeatures(reason_in=int(Reason.NO_READ), recirculations=1)


def test_unknown_code_has_no_rule(decider: Decider) -> None:
    assert decider.decide(["HELLO-4711"]) == Choice("", NO_RULE_CHUTE, Reason.NO_RULE, "HELLO-4711")


def test_valid_code_matching_no_rule(decider: Decider) -> None:
    # EMS, but posted in Morocco: the EMS-INBOUND rule's origin excludes MA.
    assert decider.decide([S10_EE_MA]) == Choice("", NO_RULE_CHUTE, Reason.NO_RULE, S10_EE_MA)


def test_carrier_export_lanes_by_regex(decider: Decider) -> None:
    assert decider.decide([UPS]) == Choice("UPS-EXPORT", 30, Reason.OK, UPS)
    assert decider.decide([DHL]) == Choice("DHL-EXPORT", 31, Reason.OK, DHL)
    assert decider.decide([LP]) == Choice("CAINIAO-MANUAL", 32, Reason.OK, LP)
    # Regex bits follow the order of barcode rules in the plan.
    assert decider.features([UPS], 0)[0].regex_mask == 0b001
    assert decider.features([DHL], 0)[0].regex_mask == 0b010
    assert decider.features([LP], 0)[0].regex_mask == 0b100


def test_regex_sees_the_code_without_aim_identifier(decider: Decider) -> None:
    # ]C0 is Code 128 (not GS1): dropped from the barcode the regex runs on.
    assert decider.decide([f"]C0{UPS}"]) == Choice("UPS-EXPORT", 30, Reason.OK, UPS)


def test_ai_421_gives_country_and_postcode(decider: Decider) -> None:
    features, barcode = decider.features([GS1_421_MA], recirculations=0)
    assert barcode == SSCC
    assert (features.pc, features.pc_digits) == (encode_postcode("20250"), 5)
    assert features.country == letters_index("MA")
    assert (features.service, features.origin) == (-1, -1)
    assert decider.decide([GS1_421_MA]) == Choice("CASABLANCA", 1, Reason.OK, SSCC)
    features, _ = decider.features([GS1_421_FR], recirculations=0)
    assert (features.pc, features.country) == (encode_postcode("75001"), letters_index("FR"))
    assert decider.decide([GS1_421_FR]) == Choice("", NO_RULE_CHUTE, Reason.NO_RULE, SSCC)


def test_corsica_is_not_casablanca(decider: Decider) -> None:
    # 421 250 20250: the same digits as Casablanca, in France.
    corsica = f"]C100{SSCC}42125020250"
    assert decider.decide([corsica]) == Choice("", NO_RULE_CHUTE, Reason.NO_RULE, SSCC)
    assert decider.decide([S10_EE_MA, f"]C1{GS}42172428001"]) == Choice(
        "", NO_RULE_CHUTE, Reason.NO_RULE, S10_EE_MA
    )


def test_without_a_site_country_ai_420_is_unknown(warm: None) -> None:
    compiled = compile_plan(load_plan(DEMO_PLAN))
    decider = Decider(compiled, ChuteState.for_plan(compiled))
    assert decider.features([GS1_CASABLANCA], 0)[0].country == -1
    assert decider.decide([GS1_CASABLANCA]) == Choice("", NO_RULE_CHUTE, Reason.NO_RULE, SSCC)


def test_ai_421_country_routes_with_a_country_rule(warm: None) -> None:
    plan = build_plan(
        {
            "version": 2,
            "name": "countries",
            "machine": {"chutes": "1-10"},
            "functions": {
                "no_read": 10,
                "invalid_code": 10,
                "multi_read_conflict": 9,
                "no_rule": 8,
                "no_chute": 10,
                "max_recirc": 10,
                "timeout": 10,
                "after_cutoff": 10,
                "customs_hold": 7,
            },
            "destination": [
                {"name": "FRANCE", "chutes": [1]},
                {"name": "ABROAD", "chutes": [2]},
            ],
            "rule": [
                {"destination": "FRANCE", "country": ["FR"]},
                {"destination": "ABROAD", "country": ["!MA"]},
            ],
        }
    )
    compiled = compile_plan(plan)
    decider = Decider(compiled, ChuteState.for_plan(compiled), site_country="MA")
    assert decider.decide([GS1_421_FR]) == Choice("FRANCE", 1, Reason.OK, SSCC)
    assert decider.decide([GS1_421_MA]) == Choice("", 8, Reason.NO_RULE, SSCC)
    # AI 420 is domestic: the site's country.
    assert decider.decide([GS1_CASABLANCA]) == Choice("", 8, Reason.NO_RULE, SSCC)
    # The S10 suffix is where the item was posted, not where it goes: France.
    assert decider.decide([S10_EE_CN, f"]C1{GS}42125075001"]) == Choice(
        "FRANCE", 1, Reason.OK, S10_EE_CN
    )
    # An unknown destination matches neither "FR" nor "!MA".
    assert decider.decide([S10_EE_CN]) == Choice("", 8, Reason.NO_RULE, S10_EE_CN)


def test_round_robin_and_full_chutes_through_the_decider(decider: Decider) -> None:
    chutes = [decider.decide([GS1_CASABLANCA]).chute for _ in range(7)]
    assert chutes == [*CASABLANCA_CHUTES, 1]
    decider.state.flags[2] = 0b001  # full
    assert decider.decide([GS1_CASABLANCA]).chute == 3
    decider.state.flags[CASABLANCA_CHUTES] = 0b010  # all disabled
    assert decider.decide([GS1_CASABLANCA]) == Choice("CASABLANCA", 40, Reason.OK, SSCC)
    decider.state.flags[40] = 0b100  # overflow in fault
    assert decider.decide([GS1_CASABLANCA]) == Choice("CASABLANCA", 60, Reason.NO_CHUTE, SSCC)


def test_max_recirculations_reached(decider: Decider) -> None:
    assert decider.decide([UPS], recirculations=1) == Choice("UPS-EXPORT", 30, Reason.OK, UPS)
    assert decider.decide([UPS], recirculations=2) == Choice(
        "", MAX_RECIRC_CHUTE, Reason.MAX_RECIRC, UPS
    )
    assert decider.decide([], recirculations=2) == Choice(
        "", MAX_RECIRC_CHUTE, Reason.MAX_RECIRC, ""
    )


def test_function_chute_and_chute_owners(decider: Decider) -> None:
    assert decider.function_chute(Reason.TIMEOUT) == 56
    assert decider.function_chute(Reason.CUSTOMS_HOLD) == 54
    owners = decider.destination_of_chute()
    assert owners[1] == "CASABLANCA"
    assert owners[41] == "RABAT"  # shared overflow: the first destination owns it
    assert owners[42] == "FES"
    assert owners[59] == "no_read"  # no_read and invalid_code share a chute
    assert owners[60] == "no_chute"
    assert 50 not in owners


def test_minute_of_day_without_cutoffs(decider: Decider) -> None:
    assert decider.minute_of_day() == -1


def test_identifier_sources_from_the_scanner_config() -> None:
    from sorter.config import ScannerSection, identifier_sources

    def head(name: str, tunnel: str | None, promise: bool) -> ScannerSection:
        return ScannerSection(
            name=name, url="tcp://127.0.0.1:1", tunnel=tunnel, symbology_identifiers=promise
        )

    heads = [
        head("a1", "a", True),
        head("a2", "a", True),
        head("b1", "b", True),
        head("b2", "b", False),  # one head of tunnel b does not promise: b does not either
        head("solo", None, True),
        head("plain", None, False),
    ]
    assert identifier_sources(heads) == {"a1", "a2", "b1", "a", "solo"}


def test_identifiers_change_how_bare_digits_decide(decider: Decider) -> None:
    bare_rabat = "42010100"  # AI 420, postcode 10100, without its ]C1
    assert decider.decide([bare_rabat]).destination == "RABAT"
    assert decider.decide([bare_rabat], identifiers=True) == Choice(
        "", NO_RULE_CHUTE, Reason.NO_RULE, bare_rabat
    )
