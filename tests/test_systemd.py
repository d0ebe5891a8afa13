"""sd_notify against real unix datagram sockets, the watchdog task, and the unit file."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sorterd import systemd
from sorterd.systemd import SystemdNotifier, run_watchdog
from tests.waiting import wait_until

UNIT = Path(__file__).resolve().parent.parent / "config" / "systemd" / "sorterd.service"


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


def _drain(sock: socket.socket) -> list[str]:
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2.0)
    return got


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    # AF_UNIX paths are limited to 107 bytes: tmp_path plus a short name stays under.
    address = str(tmp_path / "n.sock")
    sock = _receiver(address)
    yield sock, address
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"sorterd-test-{uuid.uuid4().hex}"
    sock = _receiver("\0" + name)
    yield sock, "@" + name
    sock.close()


def test_path_socket_gets_every_notification(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    notifier.ready("plan demo, 12 chutes")
    assert sock.recv(4096) == b"READY=1\nSTATUS=plan demo, 12 chutes"
    notifier.ready("reloading plan\nfrom disk")
    assert sock.recv(4096) == b"READY=1\nSTATUS=reloading plan from disk"  # one line, always
    notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.ready()
    assert sock.recv(4096) == b"READY=1"
    notifier.close()
    notifier.close()
    notifier.watchdog()  # reopens after close
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.close()


def test_abstract_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, address = abstract_socket
    assert address.startswith("@")
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    notifier.ready("up")
    notifier.watchdog()
    notifier.stopping()
    assert [sock.recv(4096) for _ in range(3)] == [
        b"READY=1\nSTATUS=up",
        b"WATCHDOG=1",
        b"STOPPING=1",
    ]
    notifier.close()


def test_reads_os_environ_by_default(
    path_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = SystemdNotifier()
    assert notifier.watchdog_interval_s == 5.0
    notifier.ready("ok")
    assert sock.recv(4096) == b"READY=1\nSTATUS=ok"
    notifier.close()


def test_no_systemd_means_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(var, raising=False)
    for notifier in (
        SystemdNotifier(),
        SystemdNotifier({}),
        SystemdNotifier({"WATCHDOG_USEC": "1"}),
    ):
        assert not notifier.enabled
        assert notifier.watchdog_interval_s is None
        notifier.ready("x")
        notifier.watchdog()
        notifier.stopping()
        notifier.close()


@pytest.mark.parametrize(
    ("env", "interval_s"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "nonsense"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "ten"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval_s: float | None, tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock"), **env})
    assert notifier.watchdog_interval_s == interval_s


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def warning(self, event: str, **_: object) -> None:
        self.events.append(("warning", event))


def test_send_errors_never_raise_and_log_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder()
    # structlog's configuration is process-wide and may be cached by earlier tests: record
    # the calls instead of capturing rendered output.
    monkeypatch.setattr(systemd, "log", recorder)
    # Nobody listens at this path: every sendto fails (ENOENT).
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    for _ in range(3):
        notifier.ready("x")
        notifier.watchdog()
        notifier.stopping()
    notifier.close()
    assert notifier.send_errors == 9
    assert recorder.events == [
        ("warning", "systemd notification failed (further failures not logged)")
    ]


def test_full_receiver_does_not_block(tmp_path: Path) -> None:
    """A receiver that stops reading fills its queue: sends fail at once, never block."""
    address = str(tmp_path / "f.sock")
    sock = _receiver(address)
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    try:
        for _ in range(10_000):
            notifier.watchdog()
            if notifier.send_errors:
                break
        assert notifier.send_errors == 1
    finally:
        notifier.close()
        sock.close()


def test_unusable_notify_socket_is_ignored() -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:1234", "WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready("x")


class Pings:
    """What the notify socket received, and how often the watchdog asked `healthy()`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.got: list[str] = []
        self.healthy = True
        self.checks = 0  # calls of healthy(): the watchdog's ticks

    def __call__(self) -> bool:
        self.checks += 1
        return self.healthy

    def take(self) -> list[str]:
        self.got += _drain(self.sock)
        return self.got

    async def wait_for(self, count: int) -> None:
        await wait_until(lambda: len(self.take()) >= count, what=f"{count} watchdog pings")

    async def ticks(self, count: int) -> None:
        """Let the watchdog check health `count` more times."""
        checks = self.checks
        await wait_until(lambda: self.checks >= checks + count, what=f"{count} watchdog ticks")


async def test_watchdog_pings_only_while_healthy(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    # 40 ms timeout -> a ping every 20 ms.
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "40000"})
    assert notifier.watchdog_interval_s == pytest.approx(0.02)
    pings = Pings(sock)
    task = asyncio.create_task(run_watchdog(notifier, pings), name="watchdog")
    try:
        await pings.wait_for(3)
        assert set(pings.got) == {"WATCHDOG=1"}

        pings.healthy = False
        # A ping goes out in the tick that found the process healthy (a datagram is in the
        # socket when sendto returns): after one unhealthy tick, none can be on its way.
        await pings.ticks(1)
        sent = len(pings.take())
        await pings.ticks(5)
        assert len(pings.take()) == sent, "pinged while unhealthy"

        pings.healthy = True
        await pings.wait_for(sent + 3)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()


async def test_blocked_loop_stops_the_pings(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "40000"})
    pings = Pings(sock)
    task = asyncio.create_task(run_watchdog(notifier, pings), name="watchdog")
    try:
        await pings.wait_for(1)
        sent = len(pings.take())
        checks = pings.checks
        # The scenario: the loop blocked on purpose for ten ping intervals. No task runs,
        # so no ping can be sent.
        time.sleep(0.2)  # noqa: ASYNC251
        assert pings.checks == checks
        assert len(pings.take()) == sent
        await pings.wait_for(sent + 1)  # and they come again once the loop runs
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()


async def test_watchdog_returns_at_once_without_systemd() -> None:
    calls = 0

    def healthy() -> bool:
        nonlocal calls
        calls += 1
        return True

    async with asyncio.timeout(1):
        await run_watchdog(SystemdNotifier({}), healthy)
    assert calls == 0


async def test_explicit_interval_overrides(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})  # no WATCHDOG_USEC
    task = asyncio.create_task(run_watchdog(notifier, lambda: True, interval_s=0.02), name="wd")
    try:
        await Pings(sock).wait_for(3)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()


@pytest.mark.requires("systemd-analyze")
def test_unit_file_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` on a copy whose ExecStart program exists.

    verify fails when the ExecStart binary is missing (/usr/local/bin/sorterd is not on a
    build machine), so the copy runs /bin/true with the same arguments; everything else is
    the shipped unit, under its own name. verify exits 0 on unknown keys and bad values,
    only warning, so any line about the file fails the test too.
    """
    text = UNIT.read_text()
    lines = text.splitlines()
    exec_start = [line for line in lines if line.startswith("ExecStart=")]
    assert exec_start == ["ExecStart=/usr/local/bin/sorterd run -c /etc/sorterd/site.toml"]
    true = shutil.which("true") or "/bin/true"
    copy = tmp_path / "sorterd.service"
    copy.write_text(text.replace("ExecStart=/usr/local/bin/sorterd", f"ExecStart={true}"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert str(copy) not in output, output
    assert "sorterd.service" not in output, output


def test_unit_file_settings() -> None:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "10",
        "Restart": "on-failure",
        "TimeoutStopSec": "15",
        "User": "sorterd",
        "Group": "sorterd",
        "StateDirectory": "sorterd",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
        "SupplementaryGroups": "dialout",
        "EnvironmentFile": "-/etc/sorterd/env",
        "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    # numba's JIT needs writable+executable memory.
    assert "MemoryDenyWriteExecute" not in settings
    # Implies DeviceAllow=char-rtc, which would close the device cgroup to the serial ports.
    assert "ProtectClock" not in settings
