"""JSON off the wire: a payload that any client of the broker may have published, parsed
so that no payload raises anything but ValueError and no value breaks what shows it.

`json.loads` alone is not enough for that. It raises a plain ValueError (not a
JSONDecodeError) for an integer of over 4,300 digits, RecursionError for deep nesting,
and it accepts NaN and Infinity (and turns 1e400 into inf), which JSON.parse in a browser
refuses and int() raises on. Here numbers are finite floats and integers of at most
MAX_INT_DIGITS digits, or the payload is refused.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

__all__ = ["MAX_INT_DIGITS", "loads", "parse_object", "topic_number"]

# An int64 has 19 digits; no field of docs/interfaces.md section 5 needs more.
MAX_INT_DIGITS = 19


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of over {MAX_INT_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def _constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def loads(payload: bytes | str) -> Any:
    """The document; ValueError (and only that) when it is not JSON as above."""
    try:
        return json.loads(payload, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_object(payload: bytes | str) -> dict[str, Any] | None:
    """The JSON object of a payload; None when it is not one (never raises)."""
    try:
        data = loads(payload)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
        return None
    return data if isinstance(data, dict) else None


def topic_number(level: str) -> int | None:
    """The number of a topic level such as the N of P/chutes/N: ASCII digits only (str.isdigit
    takes "²", which int() refuses) and few enough for int(); else None."""
    if not level.isascii() or not level.isdigit() or len(level) > MAX_INT_DIGITS:
        return None
    return int(level)
