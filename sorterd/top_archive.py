"""The archive's line in `sorterd top` (docs/archive.md, "In sorterd top").

`sorterd archive` publishes its state retained on `<hub>/archive/status`, where `<hub>` is
its first line prefix without the last level (sorterd/archive.py, `hub_prefix`). A line's
prefix `<hub>/<line>` thus has its archive one level up: top subscribes to that topic too
and shows the state, the lag and the rows. A line with no archiver shows nothing.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

from sorter.wire_json import parse_object

__all__ = ["LAG_WARN_S", "archive_line", "archive_status", "archive_topic"]

# The contract's bound on the archive's lag (issue 15: p99 <= 2 s): above it, in red.
LAG_WARN_S = 2.0


def archive_topic(prefix: str) -> str | None:
    """Where the archive of the line under `prefix` publishes its status; None when the
    prefix has a single level (no hub above it)."""
    hub, _, _ = prefix.rpartition("/")
    return f"{hub}/archive/status" if hub else None


def archive_status(payload: bytes) -> dict[str, Any]:
    """The status as published, or {} for an empty (cleared) or unreadable one."""
    # Read as the rest of top reads the line's payloads: a 5,000-digit number or NaN is
    # not a status, and must not end the viewer.
    return (parse_object(payload) or {}) if payload else {}


def _figure(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def archive_line(text: Text, status: dict[str, Any]) -> None:
    """Append "archive: STATE  lag X s  N rows  (archiver ID)" to the header; nothing when
    no archive status was seen."""
    if not status:
        return
    text.append("\narchive: ")
    state = status.get("state")
    state = state if isinstance(state, str) and state else "?"
    text.append(state.upper(), style="bold green" if state == "online" else "bold red")
    lag = _figure(status.get("lag_s"))
    if lag is not None:
        late = lag > LAG_WARN_S or state != "online"
        text.append(f"  lag {lag:.1f} s", style="bold red" if late else "green")
    rows = _figure(status.get("rows"))
    if rows is not None:
        text.append(f"  {rows:,.0f} rows")
    waiting = _figure(status.get("waiting"))
    if waiting:
        text.append(f"  {waiting:,.0f} waiting")
    archiver = status.get("archiver")
    if isinstance(archiver, str) and archiver:
        text.append(f"  ({archiver})", style="dim")
