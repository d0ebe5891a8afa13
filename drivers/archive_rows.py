"""The archive's rows: a line's P/decisions and P/results messages (docs/interfaces.md section
5) checked and turned into one row shape, and back into the trace JSON of section 8.

A message that is not the contract's JSON raises BadMessageError saying why; the archiver counts
and logs it, and goes on.

`row_values` is what the archiver calls for every message: msgspec decodes and checks a
message against the contract's shape in about 1 us, where `parse_message` (json and a check
per field) takes 13; a message msgspec refuses goes through `parse_message`, which accepts
it or says why not. msgspec's checks are the same or stricter (a NUL escape always takes
the long way), so both accept the same messages.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from sorter.errors import SorterdError

__all__ = [
    "COLUMNS",
    "BadMessageError",
    "Row",
    "iso",
    "parse_message",
    "row_values",
    "split_topic",
    "trace_json",
]

# The table's columns, in the order of Row's fields.
COLUMNS = (
    "id", "ts", "kind", "line", "tracking_id", "seq", "barcode", "codes", "destination",
    "chute", "reason", "chute_actual", "outcome", "recirculations", "latency_ms",
)  # fmt: skip

_KINDS = {"decisions": "decision", "results": "result"}


class BadMessageError(SorterdError):
    """A message on a decisions/results topic that is not the contract's JSON."""


@dataclass(frozen=True, slots=True)
class Row:
    """One decision or result. `chute` is the decision's chute, or the result's assigned one
    (chute_assigned), as the trace JSON of section 8 names it."""

    id: str
    ts: dt.datetime
    kind: str
    line: str
    tracking_id: int
    seq: int
    barcode: str | None
    codes: list[str] | None
    destination: str | None
    chute: int | None
    reason: str | None
    chute_actual: int | None
    outcome: str | None
    recirculations: int
    latency_ms: float | None

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in COLUMNS)


def split_topic(topic: str) -> tuple[str, str] | None:
    """(line prefix, kind) of a decisions/results topic; None for any other topic."""
    line, _, last = topic.rpartition("/")
    kind = _KINDS.get(last)
    if kind is None or not line:
        return None
    return line, kind


def _int(data: dict[str, Any], key: str, *, optional: bool = False) -> int | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadMessageError(f"{key} must be an integer")
    if not -(2**63) <= value < 2**63:
        raise BadMessageError(f"{key} out of range")
    return value


def _text(data: dict[str, Any], key: str, *, optional: bool = True) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadMessageError(f"{key} must be a string")
    if "\0" in value:
        raise BadMessageError(f"{key} holds a NUL character")  # PostgreSQL text cannot
    return value


def _ts(data: dict[str, Any]) -> dt.datetime:
    text = _text(data, "ts", optional=False)
    assert text is not None
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadMessageError("ts is not an ISO 8601 time") from None
    if stamp.tzinfo is None:
        raise BadMessageError("ts has no time zone (the contract's are UTC, ...Z)")
    return stamp


def _codes(data: dict[str, Any]) -> list[str]:
    codes = data.get("codes")
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise BadMessageError("codes must be a list of strings")
    if any("\0" in c for c in codes):
        raise BadMessageError("codes hold a NUL character")
    return codes


def parse_message(topic: str, payload: bytes) -> Row:
    """The row of one message; BadMessageError when it is not a decision or result of section 5."""
    where = split_topic(topic)
    if where is None:
        raise BadMessageError("not a decisions or results topic")
    line, kind = where
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        # ValueError: UnicodeDecodeError and JSONDecodeError, and the plain ValueError of an
        # integer over 4,300 digits; RecursionError: deep nesting. Both once took the
        # archiver down (any client of the broker may publish under the hub).
        raise BadMessageError(f"not JSON: {str(exc)[:100]}") from None
    if not isinstance(data, dict):
        raise BadMessageError("not a JSON object")
    ident = _text(data, "id", optional=False)
    if not ident:
        raise BadMessageError("id is empty")
    tracking_id, seq = _int(data, "tracking_id"), _int(data, "seq")
    recirculations = _int(data, "recirculations")
    assert tracking_id is not None
    assert seq is not None
    assert recirculations is not None
    decision = kind == "decision"
    latency = data.get("latency_ms") if decision else None
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)):
        raise BadMessageError("latency_ms must be a number")
    return Row(
        id=ident,
        ts=_ts(data),
        kind=kind,
        line=line,
        tracking_id=tracking_id,
        seq=seq,
        barcode=_text(data, "barcode"),
        codes=_codes(data) if decision else None,
        destination=_text(data, "destination"),
        chute=_int(data, "chute" if decision else "chute_assigned", optional=True),
        reason=_text(data, "reason", optional=False) if decision else None,
        chute_actual=None if decision else _int(data, "chute_actual", optional=True),
        outcome=None if decision else _text(data, "outcome", optional=False),
        recirculations=recirculations,
        latency_ms=None if latency is None else float(latency),
    )


_I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Id = Annotated[str, msgspec.Meta(min_length=1)]
_Stamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]


class _Decision(msgspec.Struct):
    id: _Id
    ts: _Stamp
    tracking_id: _I64
    seq: _I64
    codes: list[str]
    reason: str
    recirculations: _I64
    barcode: str | None = None
    destination: str | None = None
    chute: _I64 | None = None
    latency_ms: float | None = None


class _Result(msgspec.Struct):
    id: _Id
    ts: _Stamp
    tracking_id: _I64
    seq: _I64
    outcome: str
    recirculations: _I64
    barcode: str | None = None
    destination: str | None = None
    chute_assigned: _I64 | None = None
    chute_actual: _I64 | None = None


_DECISIONS = msgspec.json.Decoder(_Decision)
_RESULTS = msgspec.json.Decoder(_Result)


def row_values(line: str, kind: str, payload: bytes) -> tuple[Any, ...]:
    """The row of one message of `line` ("decision" or "result"), as the values of COLUMNS;
    BadMessageError when it is not the contract's."""
    if b"\\u0000" not in payload:
        try:
            if kind == "decision":
                d = _DECISIONS.decode(payload)
                return (
                    d.id, d.ts, kind, line, d.tracking_id, d.seq, d.barcode, d.codes,
                    d.destination, d.chute, d.reason, None, None, d.recirculations, d.latency_ms,
                )  # fmt: skip
            r = _RESULTS.decode(payload)
            return (  # noqa: TRY300 - the slow path below is for a refused message only
                r.id, r.ts, kind, line, r.tracking_id, r.seq, r.barcode, None, r.destination,
                r.chute_assigned, None, r.chute_actual, r.outcome, r.recirculations, None,
            )  # fmt: skip
        except msgspec.DecodeError:
            pass
    topic = f"{line}/{'decisions' if kind == 'decision' else 'results'}"
    return parse_message(topic, payload).values()


def iso(stamp: dt.datetime) -> str:
    """The contract's time format: ISO 8601 UTC with milliseconds."""
    utc = stamp.astimezone(dt.UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trace_json(row: Row) -> dict[str, Any]:
    """One element of `sorterd trace --json` (docs/interfaces.md section 8)."""
    return {
        "kind": row.kind,
        "line": row.line,
        "ts": iso(row.ts),
        "id": row.id,
        "tracking_id": row.tracking_id,
        "seq": row.seq,
        "barcode": row.barcode,
        "codes": row.codes,
        "destination": row.destination,
        "chute": row.chute,
        "reason": row.reason,
        "chute_actual": row.chute_actual,
        "outcome": row.outcome,
        "recirculations": row.recirculations,
    }
