"""MQTT command topics and payloads (P/cmd/...): anyone who can publish to the broker.

Property: parse_command returns a well-formed Command or raises CommandError, never
anything else (an exception out of the MQTT receive callback would take the link down).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sorter.commands import (
    MAX_ID_CHARS,
    ChuteCommand,
    Command,
    CommandError,
    TrackingQuery,
    parse_command,
)
from tests.fuzz.profile import fuzz

NAMES = {
    "plan/reload",
    "manifest/reload",
    "chute/disable",
    "chute/enable",
    "chute/full",
    "chute/emptied",
    "tracking/query",
}

segment = st.one_of(
    st.sampled_from(
        ["plan", "reload", "manifest", "chute", "tracking", "query", "disable", "enable",
         "full", "emptied", "7", "0", "9999", "10000", "4294967295", "4294967296", "", "\u0663",
         "\uff11", "+1", "-1", " 1", "00000000001"]
    ),
    st.text(max_size=12),
)  # fmt: skip
suffixes = st.lists(segment, min_size=1, max_size=4).map("/".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
payloads = st.one_of(
    st.binary(max_size=1100),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["id", "x"]), json_values, max_size=2).map(
        lambda d: json.dumps(d).encode()
    ),
    st.integers(min_value=0, max_value=1100).map(lambda n: b"[" * n),
    st.integers(min_value=0, max_value=600).map(lambda n: b'{"id":' * n),
)


@fuzz()
@given(suffix=suffixes, payload=payloads)
@example(suffix="plan/reload", payload=b"[" * 1024)  # see test_deeply_nested_payload...
@example(suffix="plan/reload", payload=b'{"id": "' + b"x" * 1100 + b'"}')
@example(suffix="chute/\u0663/disable", payload=b"")
def test_command_parses_or_is_refused(suffix: str, payload: bytes) -> None:
    refused: CommandError | None = None
    try:
        cmd = parse_command(suffix, payload)
    except CommandError as exc:
        refused = exc
    if refused is not None:
        assert str(refused)
        assert refused.request_id is None or len(refused.request_id) <= MAX_ID_CHARS
        return
    assert isinstance(cmd, Command)
    assert cmd.name in NAMES
    assert cmd.request_id is None or len(cmd.request_id) <= MAX_ID_CHARS
    if isinstance(cmd, ChuteCommand):
        assert 0 <= cmd.chute <= 9999
    if isinstance(cmd, TrackingQuery):
        assert 0 <= cmd.tracking_id < 1 << 32


def test_deeply_nested_payload_is_refused() -> None:
    """Found by fuzzing; outside hypothesis, which raises the recursion limit while it runs
    and so hides this: 1 KiB of '[' broke json's recursion limit and escaped as
    RecursionError out of the MQTT receive callback, which only catches link errors."""
    with pytest.raises(CommandError, match="nested"):
        parse_command("plan/reload", b"[" * 1024)
