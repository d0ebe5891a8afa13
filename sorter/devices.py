"""The device board: the health of every device of the line (P/devices/NAME).

One entry per device (`plc`, each scanner head, `journal`, `mqtt`): connected or not, how
many link failures, when it was last heard, and the last reason for a change. An update
says whether consumers should hear of it: a device is announced when its connection or its
error count changes, or when the caller forces it (a head's detail changed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sorter.line_events import DeviceReport

__all__ = ["DeviceBoard", "DeviceHealth"]


@dataclass(slots=True)
class DeviceHealth:
    connected: bool = False
    errors: int = 0
    last_seen_wall_ns: int | None = None
    detail: str = ""
    announced: tuple[bool, int] | None = None  # (connected, errors) last announced


class DeviceBoard:
    """Health of the line's devices, by name."""

    def __init__(self, wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.devices: dict[str, DeviceHealth] = {}
        self._wall_ns = wall_ns

    def update(
        self,
        name: str,
        *,
        connected: bool | None = None,
        errors: int | None = None,
        last_seen_wall_ns: int | None = None,
        detail: str | None = None,
        force: bool = False,
    ) -> DeviceReport:
        """Record what is known of a device now. A disconnect without an error count counts
        one failure; a connect without a time is heard now."""
        dev = self.devices.setdefault(name, DeviceHealth())
        if connected is not None:
            dev.connected = connected
        if errors is not None:
            dev.errors = errors
        elif connected is False:
            dev.errors += 1
        if last_seen_wall_ns is not None:
            dev.last_seen_wall_ns = last_seen_wall_ns
        elif connected:
            dev.last_seen_wall_ns = self._wall_ns()
        if detail is not None:
            dev.detail = detail
        key = (dev.connected, dev.errors)
        changed = key != dev.announced or force
        if changed:
            dev.announced = key
        return DeviceReport(
            name, dev.connected, dev.errors, dev.last_seen_wall_ns, dev.detail, changed
        )
