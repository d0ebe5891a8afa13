"""Barcodes as they are printed on parcels, built here from the standards alone.

Nothing from sorter/, drivers/, simulators/ or sorterd/ is imported: the ground truth must
not share a line of code with what it checks. Check digits follow the public rules (UPU S10,
GS1 General Specifications, UPS, DHL Express) and are tested on published examples.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Final

GS: Final = "\x1d"  # FNC1 as scanners send it

S10_WEIGHTS: Final = (8, 6, 4, 2, 3, 5, 9, 7)


def s10_check_digit(serial: str) -> int:
    """UPU S10: weights 8,6,4,2,3,5,9,7; c = 11 - sum mod 11; 10 -> 0, 11 -> 5."""
    c = 11 - sum(int(d) * w for d, w in zip(serial, S10_WEIGHTS, strict=True)) % 11
    return {10: 0, 11: 5}.get(c, c)


def gs1_check_digit(digits: str) -> int:
    """GS1 mod 10: weights 3, 1, 3, ... from the rightmost digit (before the check)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return -total % 10


def _ups_value(char: str) -> int:
    # UPS folds letters onto digits: A=2 ... H=9, I=0, J=1 ... R=9, S=0 ... Z=7.
    return int(char) if char.isdigit() else (ord(char) - ord("A") + 2) % 10


def ups_check_digit(body: str) -> int:
    """UPS 1Z: over the 15 characters after `1Z`, even positions (1-based) count double."""
    values = [_ups_value(c) for c in body]
    return -(sum(values[0::2]) + 2 * sum(values[1::2])) % 10


def dhl_check_digit(body: str) -> int:
    """DHL Express waybill: the first 9 digits as a number, mod 7."""
    return int(body) % 7


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def s10(rng: random.Random, service: str, suffix: str, *, valid_check: bool = True) -> str:
    serial = digits(rng, 8)
    check = s10_check_digit(serial)
    if not valid_check:
        check = (check + rng.randint(1, 9)) % 10
    return f"{service}{serial}{check}{suffix}"


def sscc(rng: random.Random, *, valid_check: bool = True) -> str:
    body = digits(rng, 17)
    check = gs1_check_digit(body)
    if not valid_check:
        check = (check + rng.randint(1, 9)) % 10
    return f"{body}{check}"


def ups(rng: random.Random, *, valid_check: bool = True) -> str:
    shipper = "".join(rng.choice(string.digits + string.ascii_uppercase) for _ in range(6))
    body = shipper + rng.choice(("01", "02", "03", "12", "66")) + digits(rng, 7)
    check = ups_check_digit(body)
    if not valid_check:
        check = (check + rng.randint(1, 9)) % 10
    return f"1Z{body}{check}"


def dhl(rng: random.Random, *, valid_check: bool = True) -> str:
    # First digit 1-3 or 5-9: never the start of a GS1 AI (00, 40x, 42x), so a waybill with a
    # wrong check digit cannot read as bare GS1 digits either.
    body = rng.choice("12356789") + digits(rng, 8)
    check = dhl_check_digit(body)
    if not valid_check:
        check = (check + rng.randint(1, 6)) % 7  # still mod 7 wrong, still one digit
    return f"{body}{check}"


def lp(rng: random.Random) -> str:
    return "LP" + digits(rng, rng.choice((12, 13, 14)))


# --- GS1 labels ---------------------------------------------------------------------------

# Every way a GS1 element string reaches the host (docs/interfaces.md section 6): an AIM
# symbology identifier, FNC1 as a leading GS, the human-readable text with parentheses, and
# bare digits (no identifier; only when every element is digits).
FORMS: Final = ("]C1", "]d2", "]Q3", "]e0", "GS", "HRI", "bare")
_FIXED_AIS: Final = {"00": 18}  # the only fixed-length AI used: no GS after it


@dataclass(frozen=True, slots=True)
class Gs1Label:
    """A printed GS1 label: its text as the scanner sends it, and what it carries."""

    code: str
    form: str
    sscc: str  # "" when the label has no AI 00


def element_string(elements: list[tuple[str, str]]) -> str:
    """AIs and values concatenated, GS after every variable-length value but the last."""
    parts = []
    for i, (ai, value) in enumerate(elements):
        last = i == len(elements) - 1
        parts.append(ai + value + ("" if last or ai in _FIXED_AIS else GS))
    return "".join(parts)


def render(elements: list[tuple[str, str]], form: str) -> str:
    if form == "HRI":
        return "".join(f"({ai}){value}" for ai, value in elements)
    payload = element_string(elements)
    if form == "GS":
        return GS + payload
    if form == "bare":
        return payload
    return form + payload


def bare_possible(elements: list[tuple[str, str]]) -> bool:
    """Bare digits only when every value is digits; and never exactly 10 digits, which is a
    DHL waybill when its mod-7 check happens to hold (carrier formats are tried first)."""
    if not all(v.isdigit() for _, v in elements):
        return False
    return len(element_string(elements)) != 10
