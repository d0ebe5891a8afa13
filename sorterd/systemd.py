"""systemd service notifications (sd_notify) without libsystemd.

The protocol is one datagram of `KEY=VALUE` lines to the AF_UNIX socket named in
NOTIFY_SOCKET: a path, or an abstract-namespace name written with a leading '@'. With
`Type=notify` systemd waits for READY=1 before it counts the unit as started; with
`WatchdogSec=` it sets WATCHDOG_USEC and kills (then, with `Restart=on-failure`, restarts)
the process when WATCHDOG=1 does not come often enough.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op, so the daemon calls the notifier
unconditionally. A failing send is logged once and never raised: a notification is not
worth stopping the line for, and a service whose notifications do not arrive is restarted
by systemd anyway.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping
from typing import Final

import structlog

__all__ = ["SystemdNotifier", "run_watchdog"]

log = structlog.get_logger(__name__)

_WATCHDOG_FRACTION: Final = 0.5  # sd_watchdog_enabled(3): ping at half the timeout


class SystemdNotifier:
    """Sends READY (with a STATUS line), STOPPING and WATCHDOG to systemd; a no-op when
    not under systemd.

    `environ` defaults to `os.environ`, read once here. Call from the event loop thread (or
    any one thread): the socket is non-blocking, so a send never stalls the loop.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self.send_errors = 0  # notifications that could not be sent; only the first is logged

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a usable NOTIFY_SOCKET."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1 (half of WATCHDOG_USEC), or None: no watchdog.

        None as well when WATCHDOG_PID names another process: the watchdog is then meant
        for a parent (a wrapper script), not for us.
        """
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 1e6 * _WATCHDOG_FRACTION

    def ready(self, status: str | None = None) -> None:
        """Start-up is done: systemd marks the unit active and starts the watchdog."""
        self._send("READY=1", status)

    def stopping(self) -> None:
        """The graceful stop has begun (TimeoutStopSec= now runs)."""
        self._send("STOPPING=1", None)

    def watchdog(self) -> None:
        """Keep-alive ping; see `run_watchdog`."""
        self._send("WATCHDOG=1", None)

    def close(self) -> None:
        """Close the socket; safe to call twice. Later sends open a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, state: str, status: str | None) -> None:
        if self._address is None:
            return
        lines = [state]
        if status is not None:
            # One variable per line: a newline in the text would end STATUS early and
            # make the rest look like an assignment.
            lines.append("STATUS=" + " ".join(status.splitlines()))
        payload = "\n".join(lines).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            self.send_errors += 1
            if self.send_errors == 1:
                log.warning(
                    "systemd notification failed (further failures not logged)",
                    socket=self._address.replace("\0", "@"),
                    error=repr(exc),
                )


def _socket_address(value: str) -> str | None:
    """NOTIFY_SOCKET as a socket address: '@name' is the abstract '\\0name'."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # systemd 254+ also hands out vsock: addresses (VMs); those are not ours to serve.
    log.warning("NOTIFY_SOCKET not usable, systemd notifications off", notify_socket=value)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec


async def run_watchdog(
    notifier: SystemdNotifier,
    healthy: Callable[[], bool],
    interval_s: float | None = None,
) -> None:
    """Send WATCHDOG=1 every `interval_s` (default: the notifier's) while `healthy()`.

    Runs as a task on the daemon's event loop, so a blocked loop stops the pings by itself
    and systemd restarts the process. `healthy()` adds the failures the loop cannot show
    (a stage that died or stopped making progress). Keep device faults out of it: a PLC or
    scanner that is down is handled by the drivers' reconnects, and a restart would not fix
    it. Returns at once when there is no watchdog, which a TaskGroup takes in its stride.
    """
    interval = notifier.watchdog_interval_s if interval_s is None else interval_s
    if interval is None:
        return
    was_healthy = True
    while True:
        ok = healthy()
        if ok:
            notifier.watchdog()
        if ok != was_healthy:
            if ok:
                log.info("healthy again, watchdog pings resumed")
            else:
                log.error("unhealthy, watchdog pings withheld: systemd will restart sorterd")
            was_healthy = ok
        await asyncio.sleep(interval)
