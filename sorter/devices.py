"""The device board: the health of every device of the line (P/devices/NAME).

One entry per device (`plc`, each scanner head, `journal`, `mqtt`): connected or not, how
many link failures, when it was last heard, and the last reason for a change. Observers
hear of every report; consumers on MQTT hear of a device when its connection or its error
count changes, or when the reporter forces it (a head's detail changed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sorter.contract import Messages
from sorter.line_events import DeviceReport
from sorter.ports import LineObserver, Publish

__all__ = ["DeviceBoard", "DeviceHealth"]


@dataclass(slots=True)
class DeviceHealth:
    connected: bool = False
    errors: int = 0
    last_seen_wall_ns: int | None = None
    detail: str = ""
    announced: tuple[bool, int] | None = None  # (connected, errors) last announced


class DeviceBoard:
    """Health of the line's devices, by name; announces changes on `publish`."""

    def __init__(
        self,
        publish: Publish,
        messages: Messages,
        observers: Sequence[LineObserver] = (),
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.devices: dict[str, DeviceHealth] = {}
        self._publish = publish
        self._messages = messages
        self._observers = observers  # the line's list: observers added later hear too
        self._wall_ns = wall_ns

    def report(
        self,
        name: str,
        *,
        connected: bool | None = None,
        errors: int | None = None,
        last_seen_wall_ns: int | None = None,
        detail: str | None = None,
        force: bool = False,
    ) -> None:
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
        for observer in self._observers:
            observer.on_device(name, dev.connected, dev.errors)
        key = (dev.connected, dev.errors)
        if key != dev.announced or force:
            dev.announced = key
            report = DeviceReport(
                name, dev.connected, dev.errors, dev.last_seen_wall_ns, dev.detail
            )
            topic, payload = self._messages.device(report)
            self._publish(topic, payload, qos=1, retain=True)
