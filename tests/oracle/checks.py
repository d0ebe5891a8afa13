"""Check digits of the codes a parcel carries, written from the published rules."""

from __future__ import annotations

S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)


def s10_check_digit(serial: str) -> int:
    """UPU S10: weights 8,6,4,2,3,5,9,7 over the 8-digit serial; 10 -> 0, 11 -> 5."""
    total = sum(int(d) * w for d, w in zip(serial, S10_WEIGHTS, strict=True))
    check = 11 - total % 11
    return {10: 0, 11: 5}.get(check, check)


def gs1_check_digit(data: str) -> int:
    """GS1 mod 10 over the data digits (without the check): weights 3,1,3... from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(data)))
    return (10 - total % 10) % 10


def gs1_check_ok(digits: str) -> bool:
    """Whether the last digit of an all-digit GS1 key is its mod-10 check digit."""
    return digits.isascii() and digits.isdigit() and gs1_check_digit(digits[:-1]) == int(digits[-1])


def _ups_value(char: str) -> int:
    # UPS maps letters onto digits by their ASCII code: A=2, B=3, ... (ord - 63) mod 10.
    return int(char) if char.isdigit() else (ord(char) - 63) % 10


def ups_check_digit(body: str) -> int:
    """UPS 1Z: over the 15 characters after `1Z`, odd positions (1-based even) count twice."""
    total = sum(_ups_value(c) * (2 if i % 2 else 1) for i, c in enumerate(body))
    return (10 - total % 10) % 10


def dhl_check_ok(digits: str) -> bool:
    """DHL Express 10 digits: the first nine as a number, mod 7, is the tenth digit."""
    return int(digits[:9]) % 7 == int(digits[9])
