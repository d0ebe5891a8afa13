"""Shipper manifests (sorter.manifest): CSV parsing, the exact-match index, file loading,
the watched source, and how the decider uses pre-advice (docs/interfaces.md section 7)."""

from __future__ import annotations

import csv
import gzip
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.manifests import HEADER, manifest_rows, naming_code, write_manifest
from simulators.traffic import Traffic
from sorter.barcodes import s10_check_digit
from sorter.decide import Choice, Decider
from sorter.kernel import ChuteState
from sorter.manifest import (
    BAD_REASONS,
    KEY_BYTES,
    MAX_BAD_LINES_KEPT,
    FileReport,
    Manifest,
    ManifestRow,
    ManifestSource,
    csv_parse,
    encode_key,
    encode_keys,
    load_file,
    load_manifests,
    pack_fields,
    parse_manifest,
    unpack_row,
)
from sorter.manifest import files as files_module
from sorter.manifest.index import _build_table, _find, _hash, _words
from sorter.plan import compile_plan, letters_index, load_plan
from sorter.ports import Reason
from sorter.postcode import (
    UNUSABLE_POSTCODE,
    decode_postcode,
    digit_count,
    encode_postcode,
    normalise_postcode,
)

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "config" / "demo"
DEMO_PLAN = DEMO_DIR / "sortplan.toml"

DESTS = ["CASABLANCA", "RABAT", "MARRAKECH"]
FULL_HEADER = "barcode,destination,postcode,country,service,customs,weight_g"
ORIGIN_HEADER = FULL_HEADER + ",origin"
MA = letters_index("MA")
CN = letters_index("CN")
EE = letters_index("EE")

HYPOTHESIS = settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def manifest_of(text: str | bytes, destinations: list[str] | None = None) -> Manifest:
    names = DESTS if destinations is None else destinations
    data = text.encode() if isinstance(text, str) else text
    part, report = parse_manifest(data, "m.csv", names)
    return Manifest([part], [report], names)


def report_of(text: str | bytes, destinations: list[str] | None = None) -> FileReport:
    data = text.encode() if isinstance(text, str) else text
    return parse_manifest(data, "m.csv", DESTS if destinations is None else destinations)[1]


def row(
    postcode: str | int = -1,
    digits: int | None = None,
    country: int = -1,
    service: int = -1,
    destination: int = -1,
    hold: bool = False,
    origin: int = -1,
) -> ManifestRow:
    """The row expected for a postcode as written (or a code: -1 none, -2 unusable)."""
    if isinstance(postcode, str):
        code = encode_postcode(postcode)
        found = digit_count(postcode) if code >= 0 else 0
    else:
        code, found = postcode, 0
    return ManifestRow(
        code, found if digits is None else digits, country, service, destination, hold, origin
    )


def csv_bytes(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def problems(report: FileReport) -> list[tuple[str, str]]:
    return [(p.key, p.message) for p in report.problems]


def s10(service: str, serial: str, country: str) -> str:
    return f"{service}{serial}{s10_check_digit(serial)}{country}"


# --- 1. exact matching -------------------------------------------------------------------

# Graphic ASCII: '!'..'~', the double quote included (csv.writer quotes and doubles it).
# Spaces are trimmed/refused by the parser (see the field tests).
_CHARS = st.characters(min_codepoint=33, max_codepoint=126)
_BARCODE = st.text(_CHARS, min_size=1, max_size=KEY_BYTES)


@st.composite
def barcode_pools(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """(pool of barcodes and their near-duplicates, probes that are never inserted)."""
    bases = draw(st.lists(_BARCODE, min_size=1, max_size=10, unique=True))
    pool = set(bases)
    too_long: list[str] = []
    for b in bases:
        i = draw(st.integers(0, len(b) - 1))
        c = draw(_CHARS)
        if c == b[i]:
            c = "!" if c != "!" else "#"
        pool.add(b[:i] + c + b[i + 1 :])  # one char different
        extended = b + draw(_CHARS)  # one char longer
        if len(extended) <= KEY_BYTES:
            pool.add(extended)
        else:
            too_long.append(extended)  # can never be in a manifest
        if len(b) > 1:
            pool.add(b[:-1])  # one char shorter
            pool.add(b[1:])
        pool.add(b.swapcase())  # case differences
        pool.add(b[0].swapcase() + b[1:])
    others = draw(st.lists(_BARCODE, max_size=10))
    return sorted(pool), too_long + others


_ROW_VALUES = st.tuples(
    # postcode: digits with leading zeros, letters, spaces and hyphens, too long ones
    st.text("0123456789", min_size=1, max_size=12)
    # (at least one digit or letter: blanks and hyphens alone are no postcode, and a row
    # with nothing else to route by is bad)
    | st.text("0123456789ABKSWabkw -", min_size=1, max_size=12).filter(lambda t: t.strip(" -")),
    st.sampled_from(["MA", "cn", "Fr", ""]),
    st.sampled_from(["EE", "rb", ""]),
    st.sampled_from(["", *DESTS]),
    st.sampled_from(["", "hold", "no"]),
    st.integers(0, 10**9 - 1).map(str) | st.just(""),
    st.sampled_from(["MA", "cn", ""]),
)


def expected_row(values: tuple[str, str, str, str, str, str, str]) -> ManifestRow:
    postcode, country, service, dest, customs, _weight, origin = values
    code = encode_postcode(postcode)
    return ManifestRow(
        code,
        digit_count(postcode) if code >= 0 else 0,
        letters_index(country.upper()) if country else -1,
        letters_index(service.upper()) if service else -1,
        DESTS.index(dest) if dest else -1,
        customs == "hold",
        letters_index(origin.upper()) if origin else -1,
    )


@HYPOTHESIS
@given(pools=barcode_pools(), data=st.data())
def test_exact_match_against_a_dict(
    pools: tuple[list[str], list[str]], data: st.DataObject
) -> None:
    pool, others = pools
    inserted = [b for b in pool if data.draw(st.booleans())]
    # Some barcodes written twice: the later row replaces the earlier one.
    writes = inserted + data.draw(
        st.lists(st.sampled_from(inserted), max_size=5) if inserted else st.just([])
    )
    rows: list[list[str]] = []
    oracle: dict[str, ManifestRow] = {}
    for barcode in writes:
        values = data.draw(_ROW_VALUES)
        postcode, country, service, dest, customs, weight, origin = values
        rows.append([barcode, dest, postcode, country, service, customs, weight, origin])
        oracle[barcode] = expected_row(values)
    m = manifest_of(csv_bytes(ORIGIN_HEADER.split(","), rows))
    report = m.reports[0]
    assert (report.rows, report.bad_rows, report.problems) == (len(writes), 0, [])
    assert m.rows == len(writes)
    assert m.size == len(oracle)
    for barcode in pool + others:
        want = oracle.get(barcode)
        assert m.lookup(barcode) == want, barcode
        index = m.find(barcode)
        assert (index >= 0) == (want is not None)
        if want is not None:
            assert m.row(index) == want
    probes = pool + others
    batch = m.find_batch(encode_keys(probes))
    assert batch.tolist() == [m.find(b) for b in probes]


def _keys(barcodes: list[str]) -> np.ndarray:
    return (
        np.array(barcodes, dtype=f"S{KEY_BYTES}").view(np.uint8).reshape(len(barcodes), KEY_BYTES)
    )


def _slot(barcode: str, capacity: int) -> int:
    key = encode_key(barcode)
    assert key is not None
    return int(_hash(key)) & (capacity - 1)


def test_tiny_table_probes_and_compares_full_keys() -> None:
    # 10 keys in a 16-slot table: clusters and wrap-around probing.
    barcodes = [f"RB{i:09d}MA" for i in range(10)]
    keys = _keys(barcodes)
    table = np.full(16, -1, np.int32)
    assert _build_table(_words(keys), 10, table) == 10
    assert sorted(t for t in table.tolist() if t >= 0) == list(range(10))
    for i, b in enumerate(barcodes):
        key = encode_key(b)
        assert _find(_words(keys), table, key) == i
    for b in [f"RB{i:09d}MA" for i in range(10, 60)] + ["RB000000000ma", "RB00000000MA"]:
        assert _find(_words(keys), table, encode_key(b)) == -1


def test_keys_in_one_slot_never_match_each_other() -> None:
    capacity = 16
    same_slot = [b for b in (f"K{i}" for i in range(2000)) if _slot(b, capacity) == 5][:16]
    assert len(same_slot) == 16
    inserted, absent = same_slot[:10], same_slot[10:]
    # Row 10 repeats row 3: it takes row 3's slot, one distinct key fewer.
    keys = _keys([*inserted, inserted[3]])
    table = np.full(capacity, -1, np.int32)
    assert _build_table(_words(keys), 11, table) == 10
    # All ten in one cluster starting at slot 5, wrapping past the end of the table.
    assert [table[(5 + i) % capacity] for i in range(10)] == [0, 1, 2, 10, 4, 5, 6, 7, 8, 9]
    assert table[(5 + 10) % capacity] == -1
    for i, b in enumerate(inserted):
        assert _find(_words(keys), table, encode_key(b)) == (10 if i == 3 else i)
    for b in absent:
        assert _slot(b, capacity) == 5
        assert _find(_words(keys), table, encode_key(b)) == -1


def test_manifest_table_stays_under_load_factor() -> None:
    m = manifest_of(FULL_HEADER + "\n" + "".join(f"B{i},,{i},,,,\n" for i in range(11)))
    assert (m.rows, m.size, m.table.shape[0]) == (11, 11, 16)
    m = manifest_of(FULL_HEADER + "\n" + "".join(f"B{i},,{i},,,,\n" for i in range(12)))
    assert m.table.shape[0] == 32
    assert manifest_of(FULL_HEADER + "\nA,,1,,,,\n").table.shape[0] == 16


def test_lookups_that_cannot_be_in_a_manifest() -> None:
    m = manifest_of(FULL_HEADER + "\n" + "X" * 32 + ",,1,,,,\nAB,,2,,,,\n")
    assert m.lookup("X" * 32) == row("1")
    assert m.lookup("X" * 33) is None
    assert m.lookup("") is None
    assert m.find("X" * 33) == -1
    assert encode_key("") is None
    assert encode_key("X" * 33) is None
    assert m.find_batch(encode_keys(["X" * 33, "", "AB"])).tolist() == [-1, -1, 1]
    empty = Manifest()
    assert (empty.rows, empty.size, empty.bad_rows) == (0, 0, 0)
    assert empty.lookup("AB") is None
    assert empty.find("AB") == -1
    assert empty.find_batch(encode_keys(["AB"])).tolist() == [-1]


def test_non_ascii_lookup_never_matches_another_row() -> None:
    m = manifest_of(FULL_HEADER + "\nAB?,,20250,,,,\n")
    assert m.lookup("AB?") == row("20250")
    assert m.lookup("AB\u00e9") is None


def test_nul_in_lookup_never_matches_another_row() -> None:
    m = manifest_of(FULL_HEADER + "\nAB,,20250,,,,\n")
    assert m.lookup("AB\x00") is None


def test_encode_keys_accepts_non_ascii() -> None:
    m = manifest_of(FULL_HEADER + "\nAB,,20250,,,,\n")
    assert m.find_batch(encode_keys(["AB\u00e9", "AB"])).tolist() == [-1, 0]


# --- 2. replacement ----------------------------------------------------------------------


def test_later_rows_replace_earlier_within_a_file() -> None:
    m = manifest_of(
        FULL_HEADER
        + "\nA,,10100,,,,\nB,,20250,,,,\nA,RABAT,,,,,5\nC,,40000,,,,\nA,,90000,,,hold,\n"
    )
    assert (m.rows, m.size) == (5, 3)
    assert m.lookup("A") == row("90000", hold=True)
    assert m.lookup("B") == row("20250")
    assert m.lookup("C") == row("40000")


def test_later_files_replace_earlier_by_mtime_then_name(tmp_path: Path) -> None:
    header = "barcode,postcode\n"
    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    c = tmp_path / "c.csv"
    a.write_text(header + "X,10001\nY,10002\nONLY-A,10003\n")
    b.write_text(header + "X,20001\nONLY-B,20002\n")
    c.write_text(header + "Y,30001\nX,30002\n")
    # a is the newest; b and c have the same mtime, so name order: b, then c.
    os.utime(a, (2_000_000_000, 2_000_000_000))
    os.utime(b, (1_000_000_000, 1_000_000_000))
    os.utime(c, (1_000_000_000, 1_000_000_000))
    m = load_manifests([a, c, b], [])
    assert [Path(r.path).name for r in m.reports] == ["b.csv", "c.csv", "a.csv"]
    assert (m.rows, m.size) == (7, 4)
    assert m.lookup("X") == row("10001")
    assert m.lookup("Y") == row("10002")
    assert m.lookup("ONLY-A") == row("10003")
    assert m.lookup("ONLY-B") == row("20002")
    # Make b the newest: its X wins.
    os.utime(b, (3_000_000_000, 3_000_000_000))
    m = load_manifests([a, b, c], [])
    assert [Path(r.path).name for r in m.reports] == ["c.csv", "a.csv", "b.csv"]
    assert m.lookup("X") == row("20001")
    assert m.lookup("Y") == row("10002")


# --- 3. field parsing --------------------------------------------------------------------


def test_postcodes() -> None:
    m = manifest_of(
        "barcode,postcode\n"
        "NUM,20250\nZEROS,01000\nUK,SW1A 1AA\nPT,1000-001\nCA,k1a 0b1\nLONG,1234567890\n"
        "TOOLONG,12345678901\nDASH,-\nNEG,-5\nODD,20.250\nUTF,\u00df\n"
    )
    # A postcode of only hyphens is none: with nothing else to route by, a bad row.
    assert problems(m.reports[0]) == [("line 9", BAD_REASONS[9])]
    assert m.lookup("DASH") is None
    assert m.lookup("NUM") == row("20250")
    assert m.lookup("ZEROS") == row("01000")
    assert m.lookup("UK") == row("SW1A1AA", 0)
    assert m.lookup("PT") == row("1000001", 7)
    assert m.lookup("CA") == row("K1A0B1", 0)
    assert m.lookup("LONG") == row("1234567890", 10)
    # Given, but no pattern can match them: the site's country still applies.
    for unusable in ("TOOLONG", "ODD", "UTF"):
        assert m.lookup(unusable) == row(UNUSABLE_POSTCODE, 0), unusable
    assert m.lookup("NEG") == row("5", 1)
    # The parser's codes are the plan's codes.
    for code, written in (("UK", "SW1A 1AA"), ("PT", "1000-001"), ("NUM", "20250")):
        found_row = m.lookup(code)
        assert found_row is not None
        assert decode_postcode(found_row.postcode) == normalise_postcode(written)


def test_origin_and_iso_codes() -> None:
    m = manifest_of("barcode,origin,country\nA,MA,CN\nB,cn,\nC,XX,MA\nD,MA,ZZ\nE,MA,UK\nF,,\n")
    assert m.lookup("A") == row(country=CN, origin=MA)
    assert m.lookup("B") == row(origin=CN)
    assert problems(m.reports[0]) == [
        ("line 4", BAD_REASONS[11]),
        ("line 5", BAD_REASONS[3]),
        ("line 6", BAD_REASONS[3]),
        ("line 7", BAD_REASONS[9]),
    ]


def test_country_service_customs_weight() -> None:
    m = manifest_of(
        "barcode,country,service,customs,weight_g\n"
        "A,MA,EE,hold,1500\n"
        "B,ma,ee,HOLD,0\n"
        "C,cN,Ee,Yes,\n"
        "D,MA,,no,000000007\n"
        "E,MA,,Clear,999999999\n"
        "F,MA,,release,4194302\n"
        "G,MA,,NONE,4194303\n"
        "H,MA,,,\n"
    )
    assert m.reports[0].bad_rows == 0
    assert m.lookup("A") == row(country=MA, service=EE, hold=True)
    assert m.lookup("B") == row(country=MA, service=EE, hold=True)
    assert m.lookup("C") == row(country=CN, service=EE, hold=True)
    assert m.lookup("D") == row(country=MA)
    assert m.lookup("E") == row(country=MA)
    assert m.lookup("F") == row(country=MA)  # weight_g is checked, not kept
    assert m.lookup("G") == row(country=MA)
    assert m.lookup("H") == row(country=MA)


def test_destinations_resolve_against_the_names_given() -> None:
    text = "barcode,destination\nA,RABAT\nB,MARRAKECH\nC,CASABLANCA\n"
    m = manifest_of(text)
    assert [m.lookup(b) for b in "ABC"] == [row(destination=i) for i in (1, 2, 0)]
    m = manifest_of(text, ["MARRAKECH", "CASABLANCA", "RABAT"])
    assert [m.lookup(b) for b in "ABC"] == [row(destination=i) for i in (2, 0, 1)]
    # Exact names: case matters; a prefix is not a name.
    report = report_of("barcode,destination\nA,rabat\nB,RABA\nC,RABATS\nD,RABAT\n")
    assert report.rows == 1
    assert problems(report) == [(f"line {n}", BAD_REASONS[7]) for n in (2, 3, 4)]


def test_quotes_crlf_blank_lines_bom_and_column_order() -> None:
    data = (
        b"\xef\xbb\xbf"
        b'Weight_G, "Destination" ,notes,BARCODE,extra,Postcode\r\n'
        b'12,RABAT,"a, b, ""c""",A1,x,10100\r\n'
        b"\r\n"
        b"\n"
        b'  ,"MARRAKECH",,"B,2",,40000\r\n'
        b'"7", CASABLANCA ,  plain ,  C3  ,"",""\r\n'
        b"   \r\n"
        b'"",,"x""y",D4,,"20250"'  # no newline at the end
    )
    m = manifest_of(data)
    report = m.reports[0]
    assert (report.rows, report.bad_rows, report.problems, report.lines) == (4, 0, [], 7)
    assert m.lookup("A1") == row("10100", destination=1)
    assert m.lookup("B,2") == row("40000", destination=2)
    assert m.lookup("C3") == row(destination=0)
    assert m.lookup("D4") == row("20250")
    assert m.lookup('"B,2"') is None
    assert m.lookup("B") is None
    assert m.lookup(" C3") is None


def test_header_only_and_empty_rows() -> None:
    report = report_of("barcode,postcode")
    assert (report.readable, report.rows, report.bad_rows, report.lines) == (True, 0, 0, 0)
    report = report_of("barcode,postcode\n\n\r\n")
    assert (report.readable, report.rows, report.bad_rows) == (True, 0, 0)


def test_doubled_quote_in_barcode_is_one_quote() -> None:
    m = manifest_of(csv_bytes(["barcode", "postcode"], [['A"B', "20250"]]))
    assert m.lookup('A"B') == row("20250")
    assert m.lookup('A""B') is None


def test_doubled_quote_in_destination_is_one_quote() -> None:
    names = ['SAFI "NORTH"']
    m = manifest_of(csv_bytes(["barcode", "destination"], [["A", names[0]]]), names)
    assert m.reports[0].problems == []
    assert m.lookup("A") == row(destination=0)


def _fields(record: bytes, columns: int) -> tuple[list[bytes], int, int, int]:
    """The fields csv_parse's record splitter finds in one record, and its results."""
    buf = np.frombuffer(bytearray(record), np.uint8)
    fs, fe = np.zeros(columns, np.int64), np.zeros(columns, np.int64)
    quoted, escaped = np.zeros(columns, np.bool_), np.zeros(columns, np.bool_)
    pos, line, col, reason = csv_parse._split_record(buf, 0, 2, fs, fe, quoted, escaped)
    found = [bytes(buf[fs[c] : fe[c]]) for c in range(min(col, columns))]
    return found, int(pos), int(line), int(reason)


def test_record_splitter_fields_quotes_and_line_ends() -> None:
    assert _fields(b"A, B ,C\r\nnext", 3) == ([b"A", b"B", b"C"], 9, 2, 0)
    # Quotes: "" stays as two bytes for the field readers; a quoted line break counts.
    assert _fields(b'"x""y","a\nb"\n', 2) == ([b'x""y', b"a\nb"], 13, 3, 0)
    # An unterminated quote runs to the end: past it, the line break counted, reason 10.
    assert _fields(b'"open,\n', 1) == ([b"open,\n"], 8, 3, 10)
    # No newline at the end: the position is past the end (the caller waits for more).
    assert _fields(b"A,B", 2) == ([b"A", b"B"], 4, 2, 0)


@pytest.mark.parametrize(
    ("text", "hold"),
    [(b"hold", 1), (b"Yes", 1), (b"NO", 0), (b"clear", 0), (b"none", 0), (b"maybe", -1)],
)
def test_customs_words(text: bytes, hold: int) -> None:
    buf = np.frombuffer(bytearray(text), np.uint8)
    words, lens = files_module._WORDS, files_module._WORD_LENS
    assert csv_parse._customs_hold(buf, 0, len(text), words, lens) == hold


@pytest.mark.parametrize(
    ("text", "ok"), [(b"0", True), (b"123456789", True), (b"1234567890", False), (b"1.5", False)]
)
def test_weight_field(text: bytes, ok: bool) -> None:
    buf = np.frombuffer(bytearray(text), np.uint8)
    assert csv_parse._weight_ok(buf, 0, len(text)) is ok


# --- 4. bad rows -------------------------------------------------------------------------


EVERY_BAD_REASON = (
    FULL_HEADER + "\n"
    "GOOD1,CASABLANCA,20250,MA,EE,hold,100\n"  # 2
    ",CASABLANCA,20250,MA,,,\n"  # 3 missing barcode
     + "X" * 33 + ",,20250,,,,\n"  # 4 too long
    "AB\u00e9,,20250,,,,\n"  # 5 not ASCII
    "A B,,20250,,,,\n"  # 6 space inside
    "GOOD2,,10100,,,,\n"  # 7
    "BADC,,20250,MAR,,,\n"  # 8 country
    "BADC2,,20250,M1,,,\n"  # 9 country
    "BADS,,20250,MA,E,,\n"  # 10 service
    "BADCU,,20250,MA,,maybe,\n"  # 11 customs
    "BADW,,20250,MA,,,1.5\n"  # 12 weight
    "BADW2,,20250,MA,,,-3\n"  # 13 weight
    "BADW3,,20250,MA,,,1234567890\n"  # 14 weight: 10 digits
    "BADD,NOWHERE,20250,MA,,,\n"  # 15 destination
    "SHORT,,20250\n"  # 16 field count
    "LONG,,20250,MA,,,,\n"  # 17 field count
    "NODATA,,,,EE,hold,100\n"  # 18 nothing to route by
    "\n"  # 19 blank: skipped, still a line
    "GOOD3,,,CN,,,\n"  # 20
    'UNTERM,"CASABLANCA,20250,MA,,,\n'  # 21 unterminated quote eats the rest
    "LOST,,20250,,,,\n"
).encode()
EVERY_BAD_REASON_PROBLEMS = [
    ("line 3", BAD_REASONS[1]),
    ("line 4", BAD_REASONS[2]),
    ("line 5", BAD_REASONS[2]),
    ("line 6", BAD_REASONS[2]),
    ("line 8", BAD_REASONS[3]),
    ("line 9", BAD_REASONS[3]),
    ("line 10", BAD_REASONS[4]),
    ("line 11", BAD_REASONS[5]),
    ("line 12", BAD_REASONS[6]),
    ("line 13", BAD_REASONS[6]),
    ("line 14", BAD_REASONS[6]),
    ("line 15", BAD_REASONS[7]),
    ("line 16", BAD_REASONS[8]),
    ("line 17", BAD_REASONS[8]),
    ("line 18", BAD_REASONS[9]),
    ("line 21", BAD_REASONS[10]),
]


def test_every_bad_reason_with_its_line_and_good_rows_around() -> None:
    part, report = parse_manifest(EVERY_BAD_REASON, "m.csv", DESTS)
    assert (report.readable, report.rows, report.bad_rows) == (True, 3, 16)
    assert problems(report) == EVERY_BAD_REASON_PROBLEMS
    assert {p.message for p in report.problems} == set(BAD_REASONS.values()) - {BAD_REASONS[11]}
    assert all(p.file == "m.csv" for p in report.problems)
    m = Manifest([part], [report], DESTS)
    assert m.lookup("GOOD1") == row("20250", None, MA, EE, 0, True)
    assert m.lookup("GOOD2") == row("10100")
    assert m.lookup("GOOD3") == row(country=CN)
    for bad in [
        "BADC",
        "BADS",
        "BADCU",
        "BADW",
        "BADD",
        "SHORT",
        "LONG",
        "NODATA",
        "UNTERM",
        "LOST",
        "A B",
        "A",
    ]:
        assert m.lookup(bad) is None
    assert m.bad_rows == 16


def test_more_bad_rows_than_kept_are_all_counted() -> None:
    lines = ["barcode,country"]
    for i in range(300):
        lines.append(f"G{i},MA" if i % 2 else f"B{i},MAR")
    report = report_of("\n".join(lines) + "\n")
    assert (report.rows, report.bad_rows, report.lines) == (150, 150, 300)
    assert len(report.problems) == MAX_BAD_LINES_KEPT
    # Data row i is on line i + 2; the bad ones are the even i.
    assert [p.key for p in report.problems] == [f"line {i + 2}" for i in range(0, 200, 2)]
    assert {p.message for p in report.problems} == {BAD_REASONS[3]}


def test_line_numbers_after_a_multi_line_quoted_field() -> None:
    report = report_of('barcode,postcode,note\nA,1,"two\nlines"\nB,1,2,3\n')
    assert report.rows == 1
    assert problems(report) == [("line 4", BAD_REASONS[8])]


# --- 5. unreadable files -----------------------------------------------------------------

HEADER_PROBLEM = "header needs barcode and at least one of destination, postcode, country, origin"


def test_unreadable_headers() -> None:
    for text in (
        "code,postcode\nA,20250\n",
        "barcode,service,customs,weight_g\nA,EE,hold,1\n",
        "",
        "\n\nbarcode,postcode\nA,1\n",
    ):
        part, report = parse_manifest(text.encode(), "m.csv", DESTS)
        assert (report.readable, report.rows, part.rows) == (False, 0, 0), text
        assert problems(report) == [("line 1", HEADER_PROBLEM)]
    part, report = parse_manifest(b"barcode,post\xffcode\nA,1\n", "m.csv", DESTS)
    assert (report.readable, part.rows) == (False, 0)
    assert problems(report) == [("line 1", "header is not UTF-8 text")]


def test_unreadable_files_contribute_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("barcode,postcode\nA,20250\n")
    no_barcode = tmp_path / "nobarcode.csv"
    no_barcode.write_text("tracking,postcode\nB,10100\n")
    no_dest = tmp_path / "nodest.csv"
    no_dest.write_text("barcode,weight_g\nC,100\n")
    corrupt = tmp_path / "corrupt.csv.gz"
    corrupt.write_bytes(b"barcode,postcode\nD,1\n")  # not gzip at all
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(gzip.compress(b"barcode,postcode\nE,1\n" * 50)[:30])
    damaged = tmp_path / "damaged.csv.gz"
    raw = bytearray(gzip.compress(b"barcode,postcode\nF,1\n" * 50))
    raw[12:20] = b"\xff" * 8
    damaged.write_bytes(bytes(raw))
    missing = tmp_path / "missing.csv"
    folder = tmp_path / "folder.csv"
    folder.mkdir()

    for path in (corrupt, truncated, damaged, missing, folder):
        part, report = load_file(path, DESTS)
        assert (report.readable, report.rows, part.rows) == (False, 0, 0), path
        assert report.path == str(path)
        assert len(report.problems) == 1
        assert report.problems[0].message.startswith("cannot read: "), report.problems
        assert str(report.problems[0]).startswith(f"{path}: cannot read: ")
    part, report = load_file(no_barcode, DESTS)
    assert (report.readable, part.rows, problems(report)) == (
        False,
        0,
        [("line 1", HEADER_PROBLEM)],
    )

    paths = [good, no_barcode, no_dest, corrupt, truncated, damaged, missing, folder]
    m = load_manifests(paths, DESTS)
    assert len(m.reports) == 8
    assert sum(r.readable for r in m.reports) == 1
    assert (m.rows, m.size, m.bad_rows) == (1, 1, 0)
    assert m.lookup("A") == row("20250")
    assert [m.lookup(b) for b in "BCDEF"] == [None] * 5


def test_gzip_loads_like_plain(tmp_path: Path) -> None:
    text = (
        FULL_HEADER + "\nA,RABAT,10100,MA,EE,hold,12\nB,,20250,,,,\nbad,,,,,,\nA,,40000,,,,\n"
    ).encode()
    plain = tmp_path / "day.csv"
    zipped = tmp_path / "day.csv.gz"
    plain.write_bytes(text)
    zipped.write_bytes(gzip.compress(text))
    p1, r1 = load_file(plain, DESTS)
    p2, r2 = load_file(zipped, DESTS)
    assert (r2.readable, r2.rows, r2.bad_rows, r2.lines) == (True, 3, 1, 4)
    assert (r1.rows, r1.bad_rows, r1.lines, problems(r1)) == (
        r2.rows,
        r2.bad_rows,
        r2.lines,
        problems(r2),
    )
    assert problems(r2) == [("line 4", BAD_REASONS[9])]
    assert np.array_equal(p1.keys, p2.keys)
    assert np.array_equal(p1.postcode, p2.postcode)
    assert np.array_equal(p1.packed, p2.packed)
    m = Manifest([p2], [r2], DESTS)
    assert m.lookup("A") == row("40000")
    assert m.lookup("B") == row("20250")


# --- 6. ManifestSource -------------------------------------------------------------------


def _set_mtime(path: Path, seconds: int) -> None:
    os.utime(path, (seconds, seconds))


def changed_after_two_looks(source: ManifestSource) -> bool:
    """changed() reports a change only once two looks in a row saw the same files (a file
    still being uploaded waits): the first look after a change says False."""
    first = source.changed()
    assert not first
    return source.changed()


def test_source_scans_caches_and_rebuilds(tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    first = folder / "first.csv"
    first.write_text("barcode,destination,postcode\nA,RABAT,\nB,,20250\n")
    _set_mtime(first, 1_000_000_000)
    (folder / "notes.txt").write_text("not a manifest")
    source = ManifestSource([str(folder / "*.csv*")])
    assert source.scan() == {str(first): (1_000_000_000 * 10**9, first.stat().st_size)}
    assert changed_after_two_looks(source)
    m1 = source.build(DESTS)
    assert not source.changed()
    assert (m1.rows, m1.size) == (2, 2)
    assert m1.lookup("A") == row(destination=1)
    first_report = m1.reports[0]

    # Unchanged: no reparse, the same report object; changed() stays False.
    m1b = source.build(DESTS)
    assert m1b.reports[0] is first_report
    assert not source.changed()
    assert not source.changed()

    second, second_report = _source_takes_a_new_file(source, folder, first_report)
    _source_waits_for_a_growing_file(source, folder)
    _source_reparses_a_touched_file(source, first, first_report, second_report)
    _source_renames_and_loses_files(source, first, second, second_report)


def _source_takes_a_new_file(
    source: ManifestSource, folder: Path, first_report: FileReport
) -> tuple[Path, FileReport]:
    """A new file is picked up; the old one is not parsed again."""
    second = folder / "second.csv.gz"
    second.write_bytes(gzip.compress(b"barcode,postcode\nA,90000\nC,40000\n"))
    _set_mtime(second, 1_000_000_100)
    assert changed_after_two_looks(source)
    assert source.changed()  # stays changed until built
    m2 = source.build(DESTS)
    assert not source.changed()
    assert [Path(r.path).name for r in m2.reports] == ["first.csv", "second.csv.gz"]
    assert m2.reports[0] is first_report
    assert (m2.rows, m2.size) == (4, 3)
    assert m2.lookup("A") == row("90000")  # the newer file replaces
    assert m2.lookup("C") == row("40000")
    return second, m2.reports[1]


def _source_waits_for_a_growing_file(source: ManifestSource, folder: Path) -> None:
    """A file still growing between two looks is not a change yet."""
    growing = folder / "growing.csv"
    growing.write_text("barcode,postcode\nG,1\n")
    assert not source.changed()
    growing.write_text("barcode,postcode\nG,1\nH,2\n")
    assert not source.changed()
    assert source.changed()
    growing.unlink()
    assert not source.changed()  # gone again: moving
    assert not source.changed()  # stable, and the same as built


def _source_reparses_a_touched_file(
    source: ManifestSource, first: Path, first_report: FileReport, second_report: FileReport
) -> None:
    """Touching the first file makes it the newest: reparsed, and now its A wins."""
    _set_mtime(first, 1_000_000_200)
    assert changed_after_two_looks(source)
    m3 = source.build(DESTS)
    assert [Path(r.path).name for r in m3.reports] == ["second.csv.gz", "first.csv"]
    assert m3.reports[0] is second_report
    assert m3.reports[1] is not first_report
    assert m3.lookup("A") == row(destination=1)


def _source_renames_and_loses_files(
    source: ManifestSource, first: Path, second: Path, second_report: FileReport
) -> None:
    # New destination names: everything is parsed again against them.
    renamed = ["RABAT", "CASABLANCA"]
    m4 = source.build(renamed)
    assert m4.reports[0] is not second_report
    assert m4.destinations == tuple(renamed)
    assert m4.lookup("A") == row(destination=0)

    # A removed file takes its rows with it.
    first.unlink()
    assert changed_after_two_looks(source)
    m5 = source.build(renamed)
    assert [Path(r.path).name for r in m5.reports] == ["second.csv.gz"]
    assert (m5.rows, m5.size) == (2, 2)
    assert m5.lookup("A") == row("90000")
    assert m5.lookup("B") is None
    assert not source.changed()

    # Nothing left: an empty manifest.
    second.unlink()
    m6 = source.build(renamed)
    assert (m6.rows, m6.size, m6.reports) == (0, 0, ())
    assert m6.lookup("A") is None


def test_source_relative_globs_and_several_patterns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.csv").write_text("barcode,postcode\nX,1\n")
    (tmp_path / "b" / "y.csv").write_text("barcode,postcode\nY,2\n")
    (tmp_path / "b" / "sub.csv").mkdir()  # a folder matching the glob is not a file
    monkeypatch.chdir(tmp_path)
    source = ManifestSource(["a/*.csv", str(tmp_path / "b" / "*.csv")])
    assert set(source.scan()) == {"a/x.csv", str(tmp_path / "b" / "y.csv")}
    m = source.build([])
    assert (m.rows, m.lookup("X"), m.lookup("Y")) == (2, row("1"), row("2"))


def _write_rows(folder: Path, name: str, first: int, count: int, postcode: int, when: int) -> None:
    """A manifest of barcodes K<first>.. with one postcode, modified at `when`."""
    path = folder / name
    rows = "".join(f"K{i},,{postcode}\n" for i in range(first, first + count))
    path.write_text("barcode,destination,postcode\n" + rows)
    _set_mtime(path, when)


def _same_as_fresh(folder: Path, m: Manifest) -> None:
    """`m` is the manifest a fresh load of the folder's files gives, row for row."""
    fresh = load_manifests(sorted(folder.iterdir()), DESTS)
    assert (m.rows, m.size, [r.rows for r in m.reports]) == (
        fresh.rows,
        fresh.size,
        [r.rows for r in fresh.reports],
    )
    assert np.array_equal(m.part.keys, fresh.part.keys)
    assert np.array_equal(m.part.postcode, fresh.part.postcode)
    assert np.array_equal(m.part.packed, fresh.part.packed)
    assert [m.find(f"K{i}") for i in range(40)] == [fresh.find(f"K{i}") for i in range(40)]


def test_source_rebuild_parses_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files unchanged since the last build are not parsed again: their rows are copied
    from the last manifest. Whatever comes, changes or goes, the result is the manifest a
    fresh load of the same files gives, row for row."""
    import sorter.manifest.source as manifest_module  # where ManifestSource loads files

    parsed: list[str] = []
    real_load_file = manifest_module.load_file

    def counting_load_file(path: Path, destinations: list[str]) -> object:
        parsed.append(path.name)
        return real_load_file(path, destinations)

    monkeypatch.setattr(manifest_module, "load_file", counting_load_file)
    folder = tmp_path / "m"
    folder.mkdir()
    source = ManifestSource([str(folder / "*.csv")])
    _write_rows(folder, "a.csv", 0, 10, 10000, 1_000)
    _write_rows(folder, "b.csv", 5, 10, 20000, 2_000)  # K5-K9 replace a's
    _write_rows(folder, "c.csv", 20, 5, 30000, 3_000)
    m1 = source.build(DESTS)
    assert sorted(parsed) == ["a.csv", "b.csv", "c.csv"]
    _same_as_fresh(folder, m1)
    assert m1.lookup("K7") == row("20000")

    # Nothing changed: nothing parsed, and the same arrays and table (no copy at all).
    parsed.clear()
    m2 = source.build(DESTS)
    assert parsed == []
    assert m2.part.keys is m1.part.keys
    assert m2.table is m1.table
    _same_as_fresh(folder, m2)
    _rebuilds_after_changes(source, folder, parsed, m2)


def _rebuilds_after_changes(
    source: ManifestSource, folder: Path, parsed: list[str], m2: Manifest
) -> None:
    # The middle file changes: it alone is parsed; its rows come last now (newest).
    _write_rows(folder, "b.csv", 5, 3, 40000, 4_000)
    parsed.clear()
    m3 = source.build(DESTS)
    assert parsed == ["b.csv"]
    _same_as_fresh(folder, m3)
    assert (m3.lookup("K6"), m3.lookup("K9"), m3.lookup("K12")) == (
        row("40000"),
        row("10000"),
        None,
    )
    # The new manifest holds arrays of its own, no view of the old one's.
    assert m3.part.keys.base is None
    assert not np.shares_memory(m3.part.keys, m2.part.keys)

    # A file goes, another comes, one becomes the oldest.
    (folder / "a.csv").unlink()
    _write_rows(folder, "d.csv", 30, 4, 50000, 5_000)
    _set_mtime(folder / "c.csv", 500)
    parsed.clear()
    m4 = source.build(DESTS)
    assert parsed == ["c.csv", "d.csv"]  # c's signature changed with its time
    _same_as_fresh(folder, m4)

    # The newest file goes: the others' rows are copied, not viewed, from the last index.
    (folder / "d.csv").unlink()
    parsed.clear()
    m5 = source.build(DESTS)
    assert parsed == []
    _same_as_fresh(folder, m5)
    assert not np.shares_memory(m5.part.keys, m4.part.keys)

    # All but one go: a lone file's rows are still a copy, not a view of the old index.
    (folder / "c.csv").unlink()
    parsed.clear()
    m6 = source.build(DESTS)
    assert parsed == []
    _same_as_fresh(folder, m6)
    assert m6.rows == 3
    assert not np.shares_memory(m6.part.keys, m5.part.keys)


# --- 7. destination remapping and packing ------------------------------------------------


def found(m: Manifest, barcodes: str) -> list[ManifestRow]:
    rows = [m.lookup(b) for b in barcodes]
    assert None not in rows
    return [r for r in rows if r is not None]


def test_for_destinations_remaps_by_name() -> None:
    m = manifest_of(
        "barcode,destination,postcode,country,service,customs,weight_g\n"
        "A,CASABLANCA,20250,MA,EE,hold,1\n"
        "B,RABAT,10100,CN,,,2\n"
        "C,MARRAKECH,,FR,RB,,\n"
        "D,,0123,,,no,4194400\n"
    )
    fr, rb = letters_index("FR"), letters_index("RB")
    before = [
        row("20250", None, MA, EE, 0, True),
        row("10100", None, CN, -1, 1, False),
        row(-1, 0, fr, rb, 2, False, -1),
        row("0123"),
    ]
    assert found(m, "ABCD") == before
    clone = m.for_destinations(["MARRAKECH", "AGADIR", "CASABLANCA"])
    assert clone.destinations == ("MARRAKECH", "AGADIR", "CASABLANCA")
    after = [r._replace(destination=d) for r, d in zip(before, [2, -1, 0, -1], strict=True)]
    assert found(clone, "ABCD") == after
    assert [clone.row(clone.find(b)) for b in "ABCD"] == after
    # The original is untouched; sizes and reports carry over.
    assert found(m, "ABCD") == before
    assert (clone.rows, clone.size, clone.reports) == (m.rows, m.size, m.reports)
    # Back to the original names: RABAT was lost on the way.
    back = [r._replace(destination=d) for r, d in zip(before, [0, -1, 2, -1], strict=True)]
    assert found(clone.for_destinations(DESTS), "ABCD") == back
    assert [r.destination for r in found(m.for_destinations([]), "ABCD")] == [-1] * 4
    # Duplicate names: the first wins.
    assert [r.destination for r in found(m.for_destinations(["RABAT", "RABAT"]), "AB")] == [-1, 0]
    assert Manifest().for_destinations(DESTS).size == 0
    # Under its own names, the manifest itself: no copy of the packed column.
    assert m.for_destinations(list(DESTS)) is m


_PACK_ROW = st.tuples(
    st.integers(0, 10),  # postcode digits
    st.integers(-1, 675),  # country
    st.integers(-1, 675),  # service
    st.integers(-1, 0xFFFE),  # destination
    st.booleans(),  # customs hold
    st.integers(-1, 675),  # origin
    st.integers(-2, 2**62),  # postcode code
)


@HYPOTHESIS
@given(st.lists(_PACK_ROW, min_size=1, max_size=20))
def test_pack_unpack_round_trip(rows: list[tuple[int, int, int, int, bool, int, int]]) -> None:
    cols = list(zip(*rows, strict=True))
    packed = pack_fields(
        np.array(cols[0], np.int8),
        np.array(cols[1], np.int16),
        np.array(cols[2], np.int16),
        np.array(cols[3], np.int32),
        np.array(cols[4], np.uint8),
        np.array(cols[5], np.int16),
    )
    assert packed.dtype == np.int64
    for (digits, country, service, dest, hold, origin, postcode), p in zip(
        rows, packed.tolist(), strict=True
    ):
        assert unpack_row(postcode, p) == ManifestRow(
            postcode, digits, country, service, dest, hold, origin
        )


def test_pack_extremes() -> None:
    packed = pack_fields(
        np.array([10, 0]),
        np.array([675, -1]),
        np.array([675, -1]),
        np.array([0xFFFE, -1]),
        np.array([1, 0]),
        np.array([675, -1]),
    )
    assert unpack_row(7, int(packed[0])) == ManifestRow(7, 10, 675, 675, 0xFFFE, True, 675)
    assert unpack_row(-1, int(packed[1])) == row()


# --- 8. the decider ----------------------------------------------------------------------

S10_CP_MA = s10("CP", "12345678", "MA")  # no rule for CP from MA: no_rule alone
S10_RB_GB = "RB123456785GB"  # REGISTERED-MANUAL by the rules
S10_EE_CN = s10("EE", "87654321", "CN")  # EMS-INBOUND by the rules
S10_LX_MA = s10("LX", "11112222", "MA")
GS1_RABAT = "]C142010100"  # postcode-only label, 10100: RABAT
NO_RULE_CHUTE = 57
CUSTOMS_CHUTE = 54


@pytest.fixture(scope="module")
def plan_names() -> list[str]:
    return [d.name for d in load_plan(DEMO_PLAN).destinations]


@pytest.fixture
def decider() -> Decider:
    compiled = compile_plan(load_plan(DEMO_PLAN))
    return Decider(
        compiled, ChuteState.for_plan(compiled), timezone="Africa/Casablanca", site_country="MA"
    )


def test_decider_uses_the_manifest(decider: Decider, plan_names: list[str]) -> None:
    assert decider.decide([S10_CP_MA]) == Choice("", NO_RULE_CHUTE, Reason.NO_RULE, S10_CP_MA)
    assert decider.manifest_lookups == 0
    # Loaded against other names in another order: use_manifest remaps them.
    loaded_with = ["AGADIR", "NOT-IN-PLAN", "CASABLANCA"]
    m = manifest_of(
        "barcode,destination,postcode,country,customs\n"
        f"{S10_CP_MA},,20250,,\n"
        f"{S10_LX_MA},,20250,,\n"
        f"{S10_EE_CN},,,CN,hold\n"
        f"{S10_RB_GB},AGADIR,,,\n"
        f"{S10_EE_CN[:-2]}FR,NOT-IN-PLAN,,FR,\n",
        loaded_with,
    )
    assert m.reports[0].bad_rows == 0
    decider.use_manifest(m)
    assert decider.manifest is not None
    assert decider.manifest.destinations == tuple(plan_names)

    # S10 alone, no postcode label: the manifest's postcode (no country given: the site's,
    # MA) sends it to CASABLANCA.
    assert decider.decide([S10_CP_MA]) == Choice("CASABLANCA", 1, Reason.OK, S10_CP_MA)
    assert (decider.manifest_lookups, decider.manifest_hits) == (1, 1)
    # A postcode on a label wins over the manifest's.
    assert decider.decide([S10_LX_MA, GS1_RABAT]) == Choice("RABAT", 7, Reason.OK, S10_LX_MA)
    assert (decider.manifest_lookups, decider.manifest_hits) == (2, 2)
    # Customs hold: the customs_hold function chute whatever the rules say.
    assert decider.function_chute(Reason.CUSTOMS_HOLD) == CUSTOMS_CHUTE
    assert decider.decide([S10_EE_CN]) == Choice("", CUSTOMS_CHUTE, Reason.CUSTOMS_HOLD, S10_EE_CN)
    # A pre-advised destination beats the rules (REGISTERED-MANUAL); a ship-to label wins
    # as a whole over the manifest, its destination included (AI 420: domestic, Rabat).
    assert decider.decide([S10_RB_GB]) == Choice("AGADIR", 13, Reason.OK, S10_RB_GB)
    assert decider.decide([S10_RB_GB, GS1_RABAT]) == Choice("RABAT", 8, Reason.OK, S10_RB_GB)
    assert (decider.manifest_lookups, decider.manifest_hits) == (5, 5)
    # A destination the plan does not have: the rules decide (EE from FR: EMS-INBOUND).
    ee_fr = f"{S10_EE_CN[:-2]}FR"
    assert decider.decide([ee_fr]) == Choice("EMS-INBOUND", 20, Reason.OK, ee_fr)
    # Absent from the manifest: the rules decide, a lookup without a hit.
    other_rb = s10("RB", "99990000", "GB")
    assert decider.decide([other_rb]) == Choice("REGISTERED-MANUAL", 22, Reason.OK, other_rb)
    other_ee = s10("EE", "99990000", "CN")
    assert decider.decide([other_ee]) == Choice("EMS-INBOUND", 21, Reason.OK, other_ee)
    assert (decider.manifest_lookups, decider.manifest_hits) == (8, 6)
    # A postcode-only label names nothing: no lookup.
    assert decider.decide([GS1_RABAT]).destination == "RABAT"
    assert decider.manifest_lookups == 8
    # Without a manifest again: rules only, counters stay.
    decider.use_manifest(None)
    assert decider.decide([S10_CP_MA]) == Choice("", NO_RULE_CHUTE, Reason.NO_RULE, S10_CP_MA)
    assert decider.decide([S10_RB_GB]).destination == "REGISTERED-MANUAL"
    assert (decider.manifest_lookups, decider.manifest_hits) == (8, 6)


def test_decider_features_from_the_manifest(decider: Decider) -> None:
    decider.use_manifest(
        manifest_of(f"barcode,postcode,country,service\n{S10_CP_MA},40100,,\n", ["X"])
    )
    features, barcode = decider.features([S10_CP_MA], recirculations=0, minute=-1)
    assert barcode == S10_CP_MA
    assert (features.pc, features.pc_digits, features.destination) == (
        encode_postcode("40100"),
        5,
        -1,
    )
    assert features.country == MA  # a postcode without a country: the site's
    assert features.origin == MA  # the S10 suffix: posted in Morocco
    assert features.service == letters_index("CP")


def test_manifest_origin_country_and_the_label_winning_as_a_whole(decider: Decider) -> None:
    lp = "LP00123456789012"
    ups = "1Z999AA10123456784"
    sscc = "061110010001000012"
    decider.use_manifest(
        manifest_of(
            "barcode,postcode,country,origin\n"
            f"{lp},28001,ES,CN\n"
            f"{S10_CP_MA},SW1A 1AA,GB,CN\n"
            f"{sscc},40100,,\n",
            ["X"],
        )
    )
    features, _ = decider.features([lp], 0, -1)
    assert (features.country, features.origin) == (letters_index("ES"), CN)
    assert features.pc == encode_postcode("28001")
    # The S10 suffix beats the manifest's origin; its country and postcode are used.
    features, _ = decider.features([S10_CP_MA], 0, -1)
    assert (features.country, features.origin) == (letters_index("GB"), MA)
    assert (features.pc, features.pc_digits) == (encode_postcode("SW1A1AA"), 0)
    # A ship-to label wins as a whole: AI 420 is domestic, whatever the manifest says.
    features, _ = decider.features([lp, GS1_RABAT], 0, -1)
    assert (features.country, features.pc) == (MA, encode_postcode("10100"))
    assert features.origin == CN  # origin is not ship-to data: the manifest still gives it
    # Looked up under every code, the naming one first: the SSCC's row when UPS has none.
    features, barcode = decider.features([ups, f"]C100{sscc}"], 0, -1)
    assert barcode == ups
    assert (features.country, features.pc) == (MA, encode_postcode("40100"))
    assert decider.decide([ups, f"]C100{sscc}"]).destination == "MARRAKECH"


# --- 9. the manifest simulator -----------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
def test_simulated_manifest_covers_the_traffic(
    tmp_path: Path, gzipped: bool, plan_names: list[str]
) -> None:
    items = list(Traffic(seed=7).items(600))
    rows = list(manifest_rows(items, seed=3, customs_hold_share=0.05))
    path = tmp_path / ("pre.csv.gz" if gzipped else "pre.csv")
    assert write_manifest(path, rows, gzipped=gzipped) == len(rows)
    part, report = load_file(path, plan_names)
    assert (report.readable, report.rows, report.bad_rows, report.problems) == (
        True,
        len(rows),
        0,
        [],
    )
    m = Manifest([part], [report], plan_names)
    oracle = {r[0]: r for r in rows}
    assert m.size == len(oracle)
    named = [naming_code(item) for item in items]
    assert sum(n is not None for n in named) == len(rows) > 400
    assert sum(n is None for n in named) > 0
    holds = 0
    for code in named:
        if code is None:
            continue
        found = m.lookup(code)
        assert found is not None, code
        _, postcode, country, service, customs, _weight = oracle[code]
        assert found == ManifestRow(
            encode_postcode(postcode),
            len(postcode),
            letters_index(country),
            letters_index(service) if service else -1,
            -1,
            customs == "hold",
            -1,
        )
        holds += found.customs_hold
    assert holds > 0
    text = gzip.decompress(path.read_bytes()) if gzipped else path.read_bytes()
    assert text.split(b"\n", 1)[0] == ",".join(HEADER).encode()


# --- 10. check-config --------------------------------------------------------------------


def _check_config(site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sorterd.cli", "check-config", "-c", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )


def test_check_config_reports_manifests(tmp_path: Path) -> None:
    shutil.copy(DEMO_DIR / "sortplan.toml", tmp_path / "sortplan.toml")
    site = tmp_path / "site.toml"
    site.write_text(
        (DEMO_DIR / "site.toml").read_text() + '\n[manifest]\nfiles = ["manifests/*.csv*"]\n'
    )
    folder = tmp_path / "manifests"
    folder.mkdir()
    good = folder / "good.csv.gz"
    good.write_bytes(gzip.compress(b"barcode,postcode\nA,20250\nB,10100\nC,40000\n"))
    bad = folder / "bad.csv"
    bad.write_text("barcode,destination,country\nD,RABAT,\nE,NOWHERE,\nF,,MAR\nG,,MA\n")
    unreadable = folder / "unreadable.csv"
    unreadable.write_text("tracking,postcode\nH,20250\n")
    _set_mtime(good, 1_000_000_000)
    _set_mtime(bad, 1_000_000_001)
    _set_mtime(unreadable, 1_000_000_002)

    out = _check_config(site)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert f"manifest {good}: 3 rows, 0 bad" in out.stdout
    assert f"manifest {bad}: 2 rows, 2 bad" in out.stdout
    assert "manifests: 3 file(s), 5 rows, 5 distinct barcodes, 2 bad rows" in out.stdout
    assert f"error: {bad}: line 3: {BAD_REASONS[7]}" in out.stderr
    assert f"error: {bad}: line 4: {BAD_REASONS[3]}" in out.stderr
    assert f"error: {unreadable}: line 1: {HEADER_PROBLEM}" in out.stderr
    assert str(unreadable) not in out.stdout

    # Bad rows alone fail the check too (the contract's "1 invalid"), each named by file
    # and line; the daemon would skip them and route by the rest.
    unreadable.unlink()
    out = _check_config(site)
    assert out.returncode == 1, out.stderr
    assert "manifests: 2 file(s), 5 rows, 5 distinct barcodes, 2 bad rows" in out.stdout
    assert f"error: {bad}: line 3: {BAD_REASONS[7]}" in out.stderr

    bad.unlink()
    out = _check_config(site)
    assert out.returncode == 0, out.stderr
    assert "error:" not in out.stderr
