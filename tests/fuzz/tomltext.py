"""TOML documents near a valid one: random bytes rarely get past the TOML parser, so the
validators behind it are fuzzed with mutations of a real file (values swapped for others of
any type, lines dropped, repeated or added), and sometimes with a few raw bytes spliced in.
"""

from __future__ import annotations

import json
import math

from hypothesis import strategies as st

# Values the validators may not expect: wrong types, bounds, odd strings, huge numbers.
_odd_strings = st.sampled_from(
    ["", " ", "0", "-1", "1-", "1-60", "60-1", "1,,2", "a-b", "9" * 30, "1-999999999",
     "*", "**", "[", "(", "a{99999999999}", "(?P<x>", "\\", "\u0000", "\ud7ff", "é", "00:00",
     "24:00", "23:59", "99:99", "-1:00", "12", "120-", "75*", "A*", "??", "ZZ", "Z?", "tcp://",
     "mqtt://h", "mqtt://h:0", "mqtt://h:99999", "mqtts://[::1]:1", "Africa/Casablanca",
     "../../etc/passwd", "round_robin", "least_loaded", "nope"]
)  # fmt: skip
_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, -(2**63), 65535, 65536, 999, 1000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    _odd_strings,
    st.text(max_size=20),
)
values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8), inner, max_size=3
        )
    ),
    max_leaves=6,
)


def toml_literal(value: object) -> str:
    """A TOML literal for value (inline tables and arrays for containers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string, except lone surrogates: fine too
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(type(value))


@st.composite
def mutated(draw: st.DrawFn, base: str) -> bytes:
    lines = base.splitlines()
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        if not lines:
            break
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        op = draw(st.sampled_from(["value", "value", "value", "drop", "repeat", "key", "raw"]))
        line = lines[i]
        key, eq, _ = line.partition("=")
        if op == "value" and eq:
            lines[i] = f"{key}= {toml_literal(draw(values))}"
        elif op == "drop":
            del lines[i]
        elif op == "repeat":
            lines.insert(i, line)
        elif op == "key":
            name = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
            lines.insert(i, f"{name} = {toml_literal(draw(values))}")
        elif op == "raw":
            lines.insert(i, draw(st.text(max_size=30)))
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        at = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:at] + draw(st.binary(max_size=8)) + data[at:]
    return data


def documents(base: str) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(base), mutated(base), mutated(base), st.binary(max_size=300))
