"""Postcodes as strings (sorter.postcode): normalisation, the kernel's code, patterns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sorter.postcode import (
    MAX_POSTCODE_CHARS,
    NO_POSTCODE,
    UNUSABLE_POSTCODE,
    TermKind,
    decode_postcode,
    digit_count,
    encode_postcode,
    normalise_postcode,
    parse_postcode_term,
)

USABLE = st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=MAX_POSTCODE_CHARS)


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("SW1A 1AA", "SW1A1AA"),
        ("1012 ab", "1012AB"),
        ("K1A 0B1", "K1A0B1"),
        ("1000-001", "1000001"),
        ("00-950", "00950"),
        ("94105-1234", "941051234"),
        (" 20250 ", "20250"),
    ],
)
def test_normalise(written: str, normalised: str) -> None:
    assert normalise_postcode(written) == normalised
    assert decode_postcode(encode_postcode(written)) == normalised


def test_codes_for_none_and_unusable() -> None:
    assert encode_postcode("") == NO_POSTCODE
    assert encode_postcode("12345678901") == UNUSABLE_POSTCODE  # 11 characters
    assert encode_postcode("F-75001 PARIS") == UNUSABLE_POSTCODE  # 11 characters
    assert encode_postcode("20.250") == UNUSABLE_POSTCODE
    assert encode_postcode("ß") == UNUSABLE_POSTCODE  # would upper-case to "SS"
    assert encode_postcode("\u0662\u0660") == UNUSABLE_POSTCODE  # Arabic-Indic digits
    assert encode_postcode(" - ") == NO_POSTCODE  # blanks and hyphens only: none
    assert decode_postcode(UNUSABLE_POSTCODE) == ""


def test_digit_count() -> None:
    assert digit_count("1000-001") == 7
    assert digit_count("SW1A 1AA") == 0
    assert digit_count("00950") == 5
    assert digit_count("12345678901") == 0


@given(USABLE, USABLE)
def test_code_order_is_string_order_for_equal_length_digits(a: str, b: str) -> None:
    assert decode_postcode(encode_postcode(a)) == a
    if a.isdigit() and b.isdigit() and len(a) == len(b):
        assert (encode_postcode(a) < encode_postcode(b)) == (a < b)


@given(USABLE, st.integers(1, MAX_POSTCODE_CHARS - 1))
def test_prefix_mask_is_startswith(value: str, k: int) -> None:
    prefix = value[:k]
    term = parse_postcode_term(prefix + "*")
    for candidate in (value, prefix, prefix[:-1] or "Z", value[::-1]):
        code = encode_postcode(candidate)
        assert ((code & term.hi) == term.lo) == candidate.startswith(prefix), candidate
        assert term.matches(candidate) == candidate.startswith(prefix)


@pytest.mark.parametrize(
    ("pattern", "kind", "text"),
    [
        ("20000-20999", TermKind.RANGE, "20000-20999"),
        ("007-010", TermKind.RANGE, "007-010"),
        ("20*", TermKind.PREFIX, "20"),
        ("sw1*", TermKind.PREFIX, "SW1"),
        ("EC 1*", TermKind.PREFIX, "EC1"),
        ("K1A 0B1", TermKind.EXACT, "K1A0B1"),
        ("1000001", TermKind.EXACT, "1000001"),
        (" 20250 ", TermKind.EXACT, "20250"),
    ],
)
def test_patterns_are_classified_as_written(pattern: str, kind: int, text: str) -> None:
    term = parse_postcode_term(pattern)
    assert (term.kind, term.text) == (kind, text)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("20999-20000", "runs backwards"),
        ("20-300", "same number of digits"),
        ("1000-001", "same number of digits"),  # write it "1000001"
        ("A1-B2", "'-' is only for a range"),
        ("SW1A-1AA", "'-' is only for a range"),
        ("-5", "'-' is only for a range"),
        ("", "an empty postcode"),
        ("*", "at least one character"),
        ("2*0", "is not a postcode pattern"),
        ("20**", "is not a postcode pattern"),
        ("20.250", "is not a postcode pattern"),
        ("12345678901", "at most 10 characters"),
        ("1234567890*", "at most 9 characters"),
        ("12345678901-12345678901", "at most 10 digits"),
    ],
)
def test_malformed_patterns(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_postcode_term(pattern)


@pytest.mark.parametrize(
    ("pattern", "value", "hit"),
    [
        ("20000-20999", "20250", True),
        ("20000-20999", "20999", True),
        ("20000-20999", "21000", False),
        ("20000-20999", "2050", False),  # a range tests its own width only
        ("20000-20999", "202500", False),
        ("20000-20999", "2025A", False),  # letters sort inside a digit range: not taken
        ("1000000-1999999", "1000-001", True),
        ("SW1*", "SW1A 1AA", True),
        ("SW1*", "sw1a1aa", True),
        ("SW1*", "SW", False),
        ("E*", "EC1A 1BB", True),
        ("K1A 0B1", "K1A0B1", True),
        ("K1A0B1", "k1a 0b1", True),
        ("0*", "01234", True),
        ("0*", "1234", False),
        ("00950", "00-950", True),
        ("94105*", "94105-1234", True),
        ("20250", "", False),
    ],
)
def test_matches(pattern: str, value: str, hit: bool) -> None:
    assert parse_postcode_term(pattern).matches(value) is hit
