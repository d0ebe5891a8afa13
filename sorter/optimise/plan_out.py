"""The optimised plan as TOML: the current plan's data with only the destinations' `chutes`
replaced, written so that it reads back to exactly that data and checks like any plan.

Comments of the original file are not carried over (the file is rewritten from its data);
its header says where it came from.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

from sorter.config import ConfigError
from sorter.optimise.instance import OptimiseError
from sorter.plan import build_plan, compile_plan

__all__ = ["dump_toml", "optimised_plan_text", "reallocated"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else _string(name)


def _string(text: str) -> str:
    # JSON's escapes are TOML's, but TOML also forbids a raw DEL in a basic string.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dump_toml(data: dict[str, Any], header: str = "") -> str:
    """A plan's data as TOML: plain keys, then tables, then arrays of tables."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    tables = []
    arrays = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif _is_table_array(value):
            arrays.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, table in tables:
        lines += ["", f"[{_key(key)}]"]
        lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{_key(key)}]]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def reallocated(data: dict[str, Any], chutes: tuple[tuple[int, ...], ...]) -> dict[str, Any]:
    """A copy of the plan's data with each destination's `chutes` replaced, in order."""
    destinations = data["destination"]
    if len(destinations) != len(chutes):
        raise ValueError("one chute list per destination")
    out = dict(data)
    out["destination"] = [
        {**d, "chutes": list(c)} for d, c in zip(destinations, chutes, strict=True)
    ]
    return out


def optimised_plan_text(
    data: dict[str, Any], chutes: tuple[tuple[int, ...], ...], file: str, header: str
) -> str:
    """The new plan's text, checked: it reads back to the intended data and builds and
    compiles as the daemon would; OptimiseError otherwise (nothing is written then)."""
    new = reallocated(data, chutes)
    text = dump_toml(new, header)
    if tomllib.loads(text) != new:
        raise OptimiseError(f"{file}: the written plan would not read back as written")
    try:
        compile_plan(build_plan(tomllib.loads(text), file))
    except ConfigError as exc:
        raise OptimiseError(
            f"{file}: the optimised plan would be refused, so it is not written: {exc}"
        ) from exc
    return text
