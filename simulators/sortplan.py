"""The one thing the simulated line takes from a sort plan: the machine's chute numbers.

Read from the plan's TOML here (`[machine] chutes`, docs/interfaces.md section 6), not
through the daemon's plan compiler, so a simulated line does not share the daemon's
reading of the plan. The daemon checks the plan itself; this only rejects what would
leave the conveyor without chutes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from sorter.config import ConfigError, Problem

__all__ = ["MAX_CHUTE", "machine_chutes", "parse_chutes"]

MAX_CHUTE = 999  # chute numbers are 1..999 (docs/interfaces.md, the sort plan's [machine])


def parse_chutes(spec: object) -> tuple[int, ...]:
    """`"1-240"`, `"1-100,200-240"` or a list of numbers -> the sorted chute numbers.

    ValueError when `spec` is none of those or names no chute.
    """
    chutes: set[int] = set()
    if isinstance(spec, list) and all(type(c) is int for c in spec):
        chutes.update(spec)
    elif isinstance(spec, str):
        for part in (p.strip() for p in spec.split(",")):
            low, dash, high = part.partition("-")
            if not (low.isdigit() and (high.isdigit() or not dash)):
                raise ValueError(f"{part!r} is not a chute number or range a-b")
            first, last = int(low), int(high if dash else low)
            if last > MAX_CHUTE:  # checked before the range is built: "1-2400000000"
                raise ValueError(f"{part!r}: chute numbers are 1..{MAX_CHUTE}")
            chutes.update(range(first, last + 1))
    else:
        raise ValueError(f"{spec!r} is not a chute range text or a list of chute numbers")
    if not chutes or min(chutes) < 1 or max(chutes) > MAX_CHUTE:
        raise ValueError(f"{spec!r}: chute numbers are 1..{MAX_CHUTE}, at least one")
    return tuple(sorted(chutes))


def machine_chutes(plan_path: str | Path) -> tuple[int, ...]:
    """The chutes of the plan file's `[machine]` table, sorted; ConfigError naming the file
    and key when they cannot be read."""
    shown = str(plan_path)
    try:
        data = tomllib.loads(Path(plan_path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([Problem(shown, "", f"cannot read the sort plan: {exc}")]) from exc
    machine = data.get("machine")
    spec = machine.get("chutes") if isinstance(machine, dict) else None
    try:
        return parse_chutes(spec)
    except ValueError as exc:
        raise ConfigError([Problem(shown, "machine.chutes", str(exc))]) from exc
