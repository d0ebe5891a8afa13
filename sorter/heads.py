"""Health of each scanner head: online while its link is up and it spoke recently.

Pure logic with the time passed in. A head is offline when its link is down, or when it
sent nothing (no read, no heartbeat) for longer than its `silence_timeout_s`; a head that
went silent stays offline across reconnects until it speaks again, since a scanner whose
TCP port still accepts but which reads nothing is no use to the tunnel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["HeadChange", "HeadHealth"]


@dataclass(frozen=True, slots=True)
class HeadChange:
    """A head that went online or offline, with the reason to show on P/devices/NAME."""

    name: str
    online: bool
    detail: str


@dataclass(slots=True)
class _State:
    silence_ns: int
    link_up: bool = False
    link_detail: str = "not connected yet"
    heard_ns: int | None = None  # last telegram, or the first connect before any telegram
    silent: bool = False
    online: bool = False


class HeadHealth:
    """Online or offline for each head, from its link and when it last spoke."""

    def __init__(self, silence_timeouts_ns: Mapping[str, int]) -> None:
        self._heads = {name: _State(ns) for name, ns in silence_timeouts_ns.items()}

    def online(self, name: str) -> bool:
        return self._heads[name].online

    def on_link(self, name: str, up: bool, detail: str, now_ns: int) -> HeadChange | None:
        """The link to the head opened or closed."""
        head = self._heads[name]
        head.link_up = up
        head.link_detail = detail
        if up and head.heard_ns is None:
            head.heard_ns = now_ns  # the silence clock starts at the first connect
        return self._update(name, head, now_ns)

    def on_heard(self, name: str, last_seen_ns: int | None, now_ns: int) -> HeadChange | None:
        """What the link says about its last telegram (None: never), checked periodically."""
        head = self._heads[name]
        if last_seen_ns is not None and (head.heard_ns is None or last_seen_ns > head.heard_ns):
            head.heard_ns = last_seen_ns
            head.silent = False
        return self._update(name, head, now_ns)

    def _update(self, name: str, head: _State, now_ns: int) -> HeadChange | None:
        if head.heard_ns is not None and now_ns - head.heard_ns > head.silence_ns:
            head.silent = True
        online = head.link_up and not head.silent
        if online == head.online:
            return None
        head.online = online
        if online:
            detail = "connected, telegrams arriving"
        elif head.silent and head.heard_ns is not None:
            silent_s = (now_ns - head.heard_ns) / 1e9
            detail = (
                f"silent for {silent_s:.1f} s (no read, no heartbeat; "
                f"silence_timeout_s {head.silence_ns / 1e9:g})"
            )
            if not head.link_up:
                detail += f"; link: {head.link_detail}"
        else:
            detail = f"link down: {head.link_detail}"
        return HeadChange(name, online, detail)
