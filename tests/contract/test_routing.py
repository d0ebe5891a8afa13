"""Plan v2 routing through `sorterd replay` (the interface contract's sections 1 and 6):
destination country and origin, postcodes as strings, every label form, invalid codes,
manifests.

Every item of this module goes through two replay runs of one site (with its manifest,
and with `--no-manifest`), so that the cases cost two processes, not one each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.contract.kit import GS, Replay, Site, dhl, replay, s10, sscc, ups
from tests.contract.plans import CONTRACT_PLAN, DESTINATIONS, FUNCTIONS

REASONS = {
    "ok",
    "no_read",
    "invalid_code",
    "multi_read_conflict",
    "no_rule",
    "no_chute",
    "max_recirc",
    "timeout",
    "after_cutoff",
    "customs_hold",
}


def _sscc(n: int) -> str:
    return sscc(f"0611100100010{n:04d}")


def _bad_check(code: str) -> str:
    """`code` with its check digit (the last digit) changed."""
    at = max(i for i, c in enumerate(code) if c.isdigit())
    return code[:at] + str((int(code[at]) + 1) % 10) + code[at + 1 :]


@dataclass(frozen=True)
class Case:
    tracking_id: str
    codes: str
    destination: str  # "" for a function chute
    reason: str = "ok"
    barcode: str | None = None  # None: not checked
    manifest: tuple[
        str, ...
    ] = ()  # manifest rows (barcode,destination,postcode,country,origin,customs)
    without_manifest: tuple[str, str] | None = None  # (destination, reason) under --no-manifest


SSCC_FORM = "106141411234567897"  # the contract's HRI example

CASES = [
    # --- country = destination (AI 421 / AI 420 + [site] country), origin = S10 suffix
    Case("101", f"EE123456785MA;]C100{_sscc(1)}42172428001", "EMS-EXPORT", barcode="EE123456785MA"),
    Case("102", f"{s10('RB', '10000001', 'MA')};]C100{_sscc(2)}42172428001", "MADRID"),
    Case("103", f"]C100{_sscc(3)}42125020000", "CORSICA", barcode=_sscc(3)),
    Case("104", f"]C100{_sscc(4)}42020250", "CASABLANCA", barcode=_sscc(4)),
    Case("105", f"]C100{_sscc(5)}42150420250", "CASABLANCA"),
    Case("106", f"{s10('RB', '10000002', 'MA')};]C100{_sscc(6)}421156100000", "RETURNS-CN"),
    Case("107", f"{s10('RB', '10000003', 'CN')};]C100{_sscc(7)}421156100000", "ABROAD"),
    Case("108", f"{s10('EE', '10000004', 'CN')};]C100{_sscc(8)}42020250", "CASABLANCA"),
    # unknown destination: matches neither `country = ["!MA"]` nor anything else
    Case("109", s10("EE", "10000005", "CN"), "", "no_rule"),
    Case("110", s10("RB", "10000006", "GB"), "NOT-FROM-CHINA"),
    Case("130", s10("CP", "10000007", "GB"), "NOT-FROM-CHINA"),  # unknown: not "!MA", "!FR"
    # unknown origin and unknown country: matches no negated condition
    Case("111", f"]C100{_sscc(11)}", "", "no_rule", barcode=_sscc(11)),
    Case("112", f"]C100{_sscc(12)}42127610115", "ABROAD"),
    Case("113", ups("999AA1012345678"), "UPS-EXPORT", barcode="1Z999AA10123456784"),
    # --- DHL: 10 digits are DHL only when the mod-7 check holds
    Case("114", dhl("123456789"), "DHL-EXPORT", barcode="1234567891"),
    Case("115", f"]C100{_sscc(15)}42020250;1234567891", "CASABLANCA", barcode="1234567891"),
    Case("116", f"]C100{_sscc(16)}42020250;1234567890", "CASABLANCA", barcode=_sscc(16)),
    # --- invalid codes
    Case("120", "RB123456785XX", "", "invalid_code"),
    Case("121", "RB123456785ZZ", "", "invalid_code"),
    Case("122", "RB123456785AN", "", "invalid_code"),  # withdrawn (Netherlands Antilles)
    Case("123", "RB123456784GB", "", "invalid_code"),
    Case("124", f"]C100{_sscc(24)}42199912345", "", "invalid_code"),
    Case("125", f"]C100{_sscc(25)}42153020250", "", "invalid_code"),  # 530: withdrawn
    Case("126", f"]C100{_bad_check(_sscc(26))}42020250", "", "invalid_code"),
    Case("127", f"RB123456785XX;]C100{_sscc(27)}42020250", "CASABLANCA", barcode=_sscc(27)),
    Case(
        "128",
        f"{s10('RB', '10000008', 'MA')};]C100{_bad_check(_sscc(28))}42172428001",
        "NOT-FROM-CHINA",
    ),
    Case("129", "NOREAD", "", "no_read", barcode=""),
    # --- label forms (AI 420 20250 with [site] country MA: CASABLANCA)
    Case("201", f"]C100{_sscc(31)}42020250", "CASABLANCA", barcode=_sscc(31)),
    Case("202", f"]d200{_sscc(32)}42020250", "CASABLANCA", barcode=_sscc(32)),
    Case("203", f"]Q300{_sscc(33)}42020250", "CASABLANCA", barcode=_sscc(33)),
    Case("204", f"]e000{_sscc(34)}42020250", "CASABLANCA", barcode=_sscc(34)),
    Case("205", f"{GS}00{_sscc(35)}42020250", "CASABLANCA", barcode=_sscc(35)),
    Case("206", f"]C142020250{GS}00{_sscc(36)}", "CASABLANCA", barcode=_sscc(36)),
    Case("207", f"{GS}42020250{GS}00{_sscc(37)}", "CASABLANCA", barcode=_sscc(37)),
    Case("208", "(00)106141411234567897(420)20250", "CASABLANCA", barcode=SSCC_FORM),
    Case("209", "(00)106141411234567898(420)20250", "", "invalid_code"),
    Case("210", "42020250", "CASABLANCA"),
    Case("211", "(00)106141411234567897(421)25020250", "CORSICA", barcode=SSCC_FORM),
    Case("212", f"]C1421826SW1A1AA{GS}00{_sscc(38)}", "UK-LONDON"),
    Case("213", f"]C100{_sscc(39)}4215281012AB", "AMSTERDAM"),
    Case("214", "(00)106141411234567897(421)124K1A0B1", "OTTAWA"),
    Case("215", f"]d200{_sscc(40)}4218409410512", "SAN-FRANCISCO"),
    Case("216", f"]Q300{_sscc(41)}42172428001", "MADRID"),
    Case("217", "(421)25020250(00)106141411234567897", "CORSICA", barcode=SSCC_FORM),
    Case("218", f"]C100{_sscc(42)}421826sw1a1aa", "UK-LONDON"),  # GS1 allows lower case
    Case("219", f"]C100{_sscc(43)}403MA123{GS}42020250", "CASABLANCA"),  # AI 403 + FNC1
    Case("220", f"]C100{_sscc(44)}4210401010", "ABROAD"),  # 040: Austria, leading zero
    # FNC1 as GS after the identifier too, and bare digits with GS between fields
    Case("222", f"]C1{GS}00{_sscc(45)}42020250", "CASABLANCA", barcode=_sscc(45)),
    Case("223", f"]d2{GS}00{_sscc(46)}42125020250", "CORSICA", barcode=_sscc(46)),
    Case("224", f"42020250{GS}00{_sscc(47)}", "CASABLANCA", barcode=_sscc(47)),
    Case("225", f"00{_sscc(48)}42172428001", "MADRID", barcode=_sscc(48)),
    # the parenthesised form as a person might type it, with blanks: documented invalid
    Case("226", "(00) 106141411234567897 (420) 20250", "", "invalid_code"),
    # codes are taken byte-exact, no trimming: with a blank it is no S10 code
    Case("221", "RB123456785GB ", "", "no_rule", barcode="RB123456785GB "),
    # --- multi-read conflict: two ship-to labels to different destinations; same: agree
    Case(
        "301",
        f"]C100{_sscc(51)}42020250;]C100{_sscc(52)}42172428001",
        "",
        "multi_read_conflict",
    ),
    Case("302", f"]C100{_sscc(53)}42020250;]C100{_sscc(54)}42020999", "CASABLANCA"),
]

# Items whose ship-to data comes from the manifest (pre-advice), looked up by barcode.
_M = "barcode,destination,postcode,country,origin,customs"


def _mcase(
    tracking_id: str,
    codes: str,
    destination: str,
    rows: tuple[str, ...],
    reason: str = "ok",
    without: tuple[str, str] = ("", "no_rule"),
) -> Case:
    return Case(tracking_id, codes, destination, reason, None, rows, without)


def _cn(n: int) -> str:
    return s10("RB", f"2{n:07d}", "CN")


MANIFEST_CASES = [
    _mcase("401", _cn(1), "UK-LONDON", (f"{_cn(1)},,SW1A 1AA,GB,,",)),
    _mcase("402", _cn(2), "AMSTERDAM", (f"{_cn(2)},,1012 AB,NL,,",)),
    _mcase("403", _cn(3), "OTTAWA", (f"{_cn(3)},,K1A 0B1,CA,,",)),
    _mcase("404", _cn(4), "LISBON", (f"{_cn(4)},,1000-001,PT,,",)),
    _mcase("405", _cn(5), "WARSAW", (f"{_cn(5)},,00-950,PL,,",)),
    _mcase("406", _cn(6), "SAN-FRANCISCO", (f"{_cn(6)},,94105-1234,US,,",)),
    _mcase("407", _cn(7), "SAN-FRANCISCO", (f"{_cn(7)},,94105,US,,",)),
    _mcase("408", _cn(8), "UK-LONDON", (f"{_cn(8)},,sw1a 1aa,GB,,",)),
    _mcase("409", _cn(9), "CORSICA", (f"{_cn(9)},,20250,FR,,",)),
    # a postcode without a country: the site's country
    _mcase("410", _cn(10), "CASABLANCA", (f"{_cn(10)},,20250,,,",)),
    _mcase("411", _cn(11), "MADRID", (f"{_cn(11)},,28001,ES,,",)),
    _mcase("412", _cn(12), "ABROAD", (f"{_cn(12)},,SW2A 1AA,GB,,",)),
    # the same digits in another country: scoped by the rule's country
    _mcase("413", _cn(13), "ABROAD", (f"{_cn(13)},,20250,GB,,",)),
    _mcase("414", _cn(14), "", (f"{_cn(14)},,SW1A 1AA,MA,,",), "no_rule"),
    # a range is tested against all-digit postcodes of its length only
    _mcase("415", _cn(15), "", (f"{_cn(15)},,200001,MA,,",), "no_rule"),
    _mcase("416", _cn(16), "", (f"{_cn(16)},,2025,MA,,",), "no_rule"),
    _mcase("417", _cn(17), "", (f"{_cn(17)},,2025A,MA,,",), "no_rule"),
    _mcase("418", _cn(18), "CASABLANCA", (f"{_cn(18)},,20 250,MA,,",)),
    # manifest origin, when no S10 code gives one; the SSCC is looked up too
    _mcase("420", f"]C100{_sscc(60)}", "RETURNS-CN", (f"{_sscc(60)},,100000,CN,MA,",)),
    # the S10 suffix wins over the manifest's origin
    _mcase("421", _cn(21), "ABROAD", (f"{_cn(21)},,100000,CN,MA,",)),
    # the label's ship-to data wins as a whole over the manifest
    _mcase(
        "422",
        f"{_cn(22)};]C100{_sscc(61)}42020250",
        "CASABLANCA",
        (f"{_cn(22)},,20250,FR,,",),
        without=("CASABLANCA", "ok"),
    ),
    _mcase(
        "423",
        f"{_cn(23)};]C100{_sscc(62)}42125020250",
        "CORSICA",
        (f"{_cn(23)},,20250,MA,,",),
        without=("CORSICA", "ok"),
    ),
    # manifest destination
    _mcase("424", _cn(24), "RABAT", (f"{_cn(24)},RABAT,,,,",)),
    # customs hold
    _mcase("425", _cn(25), "", (f"{_cn(25)},,SW1A 1AA,GB,,hold",), "customs_hold"),
    # two tracking codes leading to different destinations; to the same one: agree
    _mcase(
        "426",
        f"{_cn(26)};{_cn(27)}",
        "",
        (f"{_cn(26)},,SW1A 1AA,GB,,", f"{_cn(27)},,1012 AB,NL,,"),
        "multi_read_conflict",
    ),
    _mcase(
        "427",
        f"{_cn(28)};{_cn(29)}",
        "UK-LONDON",
        (f"{_cn(28)},,SW1A 1AA,GB,,", f"{_cn(29)},,EC1A 1BB,GB,,"),
    ),
    # two tracking codes (S10 and UPS) that lead to different destinations: the EMS item
    # going to France by its pre-advice (EMS-EXPORT) and the UPS code (UPS-EXPORT)
    _mcase(
        "430",
        f"{s10('EE', '20000031', 'CN')};{ups('999AA1012345678')}",
        "",
        (f"{s10('EE', '20000031', 'CN')},,75001,FR,,",),
        "multi_read_conflict",
        ("UPS-EXPORT", "ok"),
    ),
    # EMS going abroad by its pre-advice
    _mcase(
        "431",
        s10("EE", "20000032", "CN"),
        "EMS-EXPORT",
        (f"{s10('EE', '20000032', 'CN')},,75001,FR,,",),
    ),
    # looked up under every code the item carried: the S10 code has no row, its SSCC has
    _mcase("432", f"{_cn(32)};]C100{_sscc(64)}", "UK-LONDON", (f"{_sscc(64)},,SW1A 1AA,GB,,",)),
    # the tracking code's row first
    _mcase(
        "433",
        f"]C100{_sscc(65)};{_cn(33)}",
        "AMSTERDAM",
        (f"{_sscc(65)},,SW1A 1AA,GB,,", f"{_cn(33)},,1012 AB,NL,,"),
    ),
    # a customs hold is not ship-to data: it holds an item with an AI 420 label too
    _mcase(
        "434",
        f"{_cn(34)};]C100{_sscc(66)}42020250",
        "",
        (f"{_cn(34)},,75001,FR,,hold",),
        "customs_hold",
        ("CASABLANCA", "ok"),
    ),
    # a later row for the same barcode replaces an earlier one
    _mcase("435", _cn(35), "OTTAWA", (f"{_cn(35)},,SW1A 1AA,GB,,", f"{_cn(35)},,K1A 0B1,CA,,")),
    # a list of negations means all but these; unknown matches none of it
    _mcase(
        "436",
        s10("CP", "20000036", "CN"),
        "PARCELS-NOT-MA-FR",
        (f"{s10('CP', '20000036', 'CN')},,08001,ES,,",),
    ),
    _mcase(
        "437",
        s10("CP", "20000037", "CN"),
        "ABROAD",
        (f"{s10('CP', '20000037', 'CN')},,75001,FR,,",),
    ),
    _mcase(
        "438",
        s10("CP", "20000038", "GB"),
        "CASABLANCA",
        (f"{s10('CP', '20000038', 'GB')},,20250,,,",),
        without=("NOT-FROM-CHINA", "ok"),
    ),
    # a manifest row for a code with invalid check digit changes nothing
    _mcase(
        "428",
        _bad_check(_cn(30)),
        "",
        (f"{_bad_check(_cn(30))},,SW1A 1AA,GB,,",),
        "invalid_code",
        ("", "invalid_code"),
    ),
    # manifest by the AI 421 label's SSCC: the label's ship-to data wins
    _mcase(
        "429",
        f"]C100{_sscc(63)}42172428001",
        "MADRID",
        (f"{_sscc(63)},,20250,MA,,",),
        without=("MADRID", "ok"),
    ),
]

ALL = CASES + MANIFEST_CASES


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [row for case in MANIFEST_CASES for row in case.manifest]
    folder = tmp_path_factory.mktemp("routing")
    return Site(folder, CONTRACT_PLAN, manifest="\n".join([_M, *rows]) + "\n").write()


@pytest.fixture(scope="module")
def with_manifest(site: Path) -> Replay:
    scans = [(c.tracking_id, c.codes) for c in ALL]
    return replay(site, scans, site.parent / "with")


@pytest.fixture(scope="module")
def without_manifest(site: Path) -> Replay:
    scans = [(c.tracking_id, c.codes) for c in ALL]
    return replay(site, scans, site.parent / "without", "--no-manifest")


def _check(row: dict[str, str], destination: str, reason: str) -> None:
    assert (row["destination"], row["reason"]) == (destination, reason), row
    if reason == "ok":
        assert int(row["chute"]) in DESTINATIONS[destination], row
    else:
        assert int(row["chute"]) == FUNCTIONS[reason], row


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.tracking_id)
def test_replay_decides_as_the_contract_says(case: Case, with_manifest: Replay) -> None:
    row = with_manifest.row(case.tracking_id)
    _check(row, case.destination, case.reason)
    if case.barcode is not None:
        assert row["barcode"] == case.barcode, row


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=lambda c: c.tracking_id)
def test_no_manifest_leaves_the_manifest_out(case: Case, without_manifest: Replay) -> None:
    assert case.without_manifest is not None
    _check(without_manifest.row(case.tracking_id), *case.without_manifest)


def test_items_without_manifest_data_decide_the_same_without_it(
    with_manifest: Replay, without_manifest: Replay
) -> None:
    for case in CASES:
        a, b = with_manifest.row(case.tracking_id), without_manifest.row(case.tracking_id)
        assert (a["destination"], a["reason"]) == (b["destination"], b["reason"]), case


def test_decisions_csv_has_the_contract_columns_in_input_order(with_manifest: Replay) -> None:
    assert with_manifest.header == ["tracking_id", "barcode", "destination", "chute", "reason"]
    assert [r["tracking_id"] for r in with_manifest.rows] == [c.tracking_id for c in ALL]
    assert {r["reason"] for r in with_manifest.rows} <= REASONS


def test_replay_prints_counts_per_destination_chute_and_reason(with_manifest: Replay) -> None:
    out = with_manifest.process.stdout
    for word in ("CASABLANCA", "UK-LONDON", "invalid_code", "no_rule", "239", "238"):
        assert word in out, out
    assert "Traceback" not in with_manifest.process.stderr
