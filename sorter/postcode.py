"""Postcodes as strings (docs/interfaces.md section 6): normalise, encode for the kernel, parse
the plan's patterns, and know which countries write which forms.

A postcode is compared after normalisation: upper case, spaces and hyphens removed
(`"K1A 0B1"` = `"K1A0B1"`, `"1000-001"` = `"1000001"`). A normalised postcode of 1 to
`MAX_POSTCODE_CHARS` characters of [0-9A-Z] is *usable*; any other value (longer, or with
other characters) matches no postcode pattern.

The numba kernel sees a usable postcode as one int64: six bits a character, the first
character in the highest bits, padded with zeros (no character codes to zero). So:
- an exact pattern is one integer comparison;
- a prefix of k characters is `(code & mask_k) == prefix_code`: a shorter postcode has a
  zero where the prefix has a character, so it never matches;
- digit strings of one length keep their numeric order, so a range `a-b` of n-digit
  strings is `lo <= code <= hi` for all-digit postcodes of length n (the kernel also gets
  the postcode's digit count: letters sort inside a digit range otherwise).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_POSTCODE_CHARS",
    "NO_POSTCODE",
    "POSTCODE_FORMATS",
    "UNUSABLE_POSTCODE",
    "PostcodeTerm",
    "TermKind",
    "decode_postcode",
    "digit_count",
    "encode_postcode",
    "normalise_postcode",
    "parse_postcode_term",
    "postcode_features",
    "term_fits_format",
]

MAX_POSTCODE_CHARS: Final = 10  # Iran's 10 digits are the longest national form in use
_BITS: Final = 6
NO_POSTCODE: Final = -1  # the item has no postcode
UNUSABLE_POSTCODE: Final = -2  # it has one, but one no pattern can match

_CHAR_CODE: Final = {c: i + 1 for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")}
_DROP: Final = str.maketrans("", "", " -")
_USABLE_RE: Final = re.compile(f"[0-9A-Z]{{1,{MAX_POSTCODE_CHARS}}}")
_DIGITS_RE: Final = re.compile(r"[0-9]+")


def normalise_postcode(value: str) -> str:
    """Upper case, spaces and hyphens removed."""
    return value.upper().translate(_DROP)


def encode_postcode(value: str) -> int:
    """The kernel's integer for a postcode as written; NO_POSTCODE for "" (and for only
    blanks and hyphens), UNUSABLE_POSTCODE for one that no pattern can match."""
    if not value.isascii():
        return UNUSABLE_POSTCODE  # str.upper would turn "ß" into "SS": ASCII only
    norm = normalise_postcode(value)
    if not norm:
        return NO_POSTCODE  # "", or only blanks and hyphens: no postcode at all
    if _USABLE_RE.fullmatch(norm) is None:
        return UNUSABLE_POSTCODE
    return _encode(norm)


def _encode(norm: str) -> int:
    code = 0
    for c in norm:
        code = (code << _BITS) | _CHAR_CODE[c]
    return code << (_BITS * (MAX_POSTCODE_CHARS - len(norm)))


_CHARS: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def decode_postcode(code: int) -> str:
    """The normalised postcode of a code; "" for none or unusable."""
    if code < 0:
        return ""
    out = []
    for k in range(MAX_POSTCODE_CHARS - 1, -1, -1):
        v = (code >> (_BITS * k)) & 0x3F
        if v == 0:
            break
        out.append(_CHARS[v - 1])
    return "".join(out)


def digit_count(value: str) -> int:
    """Length of the normalised postcode when it is usable and all digits, else 0: what
    the kernel's range test needs besides the code."""
    norm = normalise_postcode(value)
    if len(norm) <= MAX_POSTCODE_CHARS and _DIGITS_RE.fullmatch(norm):
        return len(norm)
    return 0


@functools.lru_cache(maxsize=1 << 16)
def postcode_features(value: str) -> tuple[int, int]:
    """(code, digit count) of a postcode as written, as the kernel takes them; cached, as a
    hub's traffic repeats its postcodes (one call on the live path per item)."""
    code = encode_postcode(value)
    return code, digit_count(value) if code >= 0 else 0


class TermKind:
    """How a pattern is tested; the integer is what the kernel sees."""

    EXACT: Final = 0
    PREFIX: Final = 1
    RANGE: Final = 2


@dataclass(frozen=True, slots=True)
class PostcodeTerm:
    """One postcode pattern of a rule, classified as written.

    EXACT: `lo` is the code. PREFIX: `lo` the prefix's code, `hi` the mask of its first
    `chars` characters. RANGE: `lo`/`hi` the codes of both ends, `chars` their digit count.
    `text` is the normalised pattern (`first`/`last` keep the ends of a range as digits).
    """

    written: str
    kind: int
    text: str
    lo: int
    hi: int
    chars: int
    first: str = ""
    last: str = ""

    def matches(self, value: str) -> bool:
        """Whether a postcode as written matches (plain Python, for tools and tests)."""
        norm = normalise_postcode(value)
        if not value.isascii() or _USABLE_RE.fullmatch(norm) is None:
            return False
        if self.kind == TermKind.EXACT:
            return norm == self.text
        if self.kind == TermKind.PREFIX:
            return norm.startswith(self.text)
        return len(norm) == self.chars and norm.isdigit() and self.first <= norm <= self.last


_RANGE_RE: Final = re.compile(r"([0-9]+)-([0-9]+)")
_PATTERN_CHARS_RE: Final = re.compile(r"[0-9A-Za-z -]*\*?")


def parse_postcode_term(written: str) -> PostcodeTerm:
    """A plan's postcode pattern; ValueError with a message that quotes it when malformed."""
    text = written.strip()
    m = _RANGE_RE.fullmatch(text)
    if m is not None:
        return _range_term(written, m.group(1), m.group(2))
    if "-" in text:
        # The contract refuses other hyphenated patterns: "1000-001" would read as a range
        # of unequal widths to one person and as an exact value to another.
        raise ValueError(
            f"{written!r}: '-' is only for a range of equal-width digit strings "
            f"('20000-20999'); write exact postcodes without it ({text.replace('-', '')!r})"
        )
    if _PATTERN_CHARS_RE.fullmatch(text) is None:
        raise ValueError(
            f"{written!r} is not a postcode pattern: letters, digits and spaces, with '*' "
            "only at the end of a prefix"
        )
    if text.endswith("*"):
        prefix = normalise_postcode(text[:-1])
        if not prefix:
            raise ValueError(f"{written!r}: a prefix needs at least one character before '*'")
        if len(prefix) >= MAX_POSTCODE_CHARS:
            raise ValueError(
                f"{written!r}: a prefix has at most {MAX_POSTCODE_CHARS - 1} characters"
            )
        mask = (1 << (_BITS * len(prefix))) - 1
        mask <<= _BITS * (MAX_POSTCODE_CHARS - len(prefix))
        return PostcodeTerm(written, TermKind.PREFIX, prefix, _encode(prefix), mask, len(prefix))
    exact = normalise_postcode(text)
    if not exact:
        raise ValueError(f"{written!r}: an empty postcode")
    if len(exact) > MAX_POSTCODE_CHARS:
        raise ValueError(
            f"{written!r}: postcodes have at most {MAX_POSTCODE_CHARS} characters "
            "without spaces and hyphens"
        )
    return PostcodeTerm(written, TermKind.EXACT, exact, _encode(exact), 0, len(exact))


def _range_term(written: str, a: str, b: str) -> PostcodeTerm:
    if len(a) != len(b):
        raise ValueError(
            f"range {written!r}: both ends need the same number of digits (a range tests "
            f"postcodes of that length); an exact postcode is written without '-' ({a + b!r})"
        )
    if len(a) > MAX_POSTCODE_CHARS:
        raise ValueError(f"range {written!r}: postcodes have at most {MAX_POSTCODE_CHARS} digits")
    if a > b:
        raise ValueError(f"range {written!r} runs backwards")
    return PostcodeTerm(written, TermKind.RANGE, f"{a}-{b}", _encode(a), _encode(b), len(a), a, b)


# Postcode forms by destination country, normalised: 9 a digit, A a letter, X either.
# Only for check-config's warnings (a pattern no postcode of the rule's countries can
# match); countries not listed are never warned about. Sources: the national posts'
# published formats, as collected by UPU's addressing database.
POSTCODE_FORMATS: Final[dict[str, tuple[str, ...]]] = {
    **dict.fromkeys(
        ("MA", "FR", "ES", "DE", "IT", "PL", "SE", "FI", "GR", "CZ", "SK", "HR", "EE",
         "TR", "KR", "DZ", "EG", "SA", "MC", "SM", "VA", "MX", "MY", "TH", "UA", "ID"),
        ("99999",),
    ),
    **dict.fromkeys(
        ("BE", "LU", "AT", "CH", "DK", "NO", "HU", "BG", "SI", "AU", "TN", "ZA", "PH", "CY"),
        ("9999",),
    ),
    **dict.fromkeys(("CN", "RU", "IN", "RO", "SG", "BY"), ("999999",)),
    "VN": ("99999",),  # five digits since 2018
    "US": ("99999", "999999999"),
    "PT": ("9999999",),
    "JP": ("9999999",),
    "BR": ("99999999",),
    "IR": ("9999999999",),
    "NL": ("9999AA",),
    "CA": ("A9A9A9",),
    "AD": ("AA999",),
    "LV": ("AA9999",),
    "LT": ("AA99999", "99999"),
    "IE": ("AXXXXXX",),
    "GB": ("A99AA", "A999AA", "A9A9AA", "AA99AA", "AA999AA", "AA9A9AA"),
}  # fmt: skip


def _fits(char: str, cls: str) -> bool:
    if cls == "9":
        return char.isdigit()
    if cls == "A":
        return char.isalpha()
    return True


def term_fits_format(term: PostcodeTerm, form: str) -> bool:
    """Some postcode of this form (see POSTCODE_FORMATS) can match the term."""
    if term.kind == TermKind.RANGE:
        return len(form) == term.chars and set(form) == {"9"}
    if term.kind == TermKind.PREFIX:
        return len(form) >= term.chars and all(
            _fits(c, k) for c, k in zip(term.text, form, strict=False)
        )
    return len(form) == term.chars and all(
        _fits(c, k) for c, k in zip(term.text, form, strict=True)
    )
