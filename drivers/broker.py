"""A local MQTT broker for the demo and the tests: mosquitto when installed, else amqtt.

Always bound to 127.0.0.1. mosquitto runs as a child process with a config written to a
temporary folder; amqtt (the fallback for machines without mosquitto) runs in-process.
mosquitto can also listen with TLS (optionally requiring a client certificate) and check
usernames/passwords; the embedded broker cannot, so those options need mosquitto.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import structlog

from sorter.errors import SorterdError

__all__ = [
    "BrokerError",
    "BrokerKind",
    "BrokerTls",
    "LocalBroker",
    "free_port",
    "mosquitto_path",
    "write_password_file",
]

log = structlog.get_logger(__name__)

BrokerKind = Literal["mosquitto", "embedded"]


class BrokerError(SorterdError, RuntimeError):
    """The local broker could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_path() -> str | None:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def mosquitto_passwd_path() -> str | None:
    return shutil.which("mosquitto_passwd")


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """A TLS listener: the broker's certificate and key, and the CA its clients are checked
    against when require_certificate is set."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False


# mosquitto 2's own hash ($7$: PBKDF2-SHA512, 101 rounds, 12-byte salt), as mosquitto_passwd
# writes it; used where mosquitto_passwd is not installed.
_PBKDF2_ROUNDS = 101


def password_line(username: str, password: str) -> str:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ROUNDS)
    b64 = base64.b64encode
    return f"{username}:$7${_PBKDF2_ROUNDS}${b64(salt).decode()}${b64(digest).decode()}"


def write_password_file(
    path: Path, users: Mapping[str, str], *, use_tool: bool | None = None
) -> None:
    """A mosquitto password_file for users (name -> password); mosquitto_passwd if present."""
    tool = mosquitto_passwd_path() if use_tool is not False else None
    if use_tool and tool is None:
        raise BrokerError("mosquitto_passwd is not installed")
    path.write_text("")
    path.chmod(0o600)
    if tool is None:
        path.write_text("".join(password_line(u, p) + "\n" for u, p in users.items()))
        return
    for username, password in users.items():
        # -b puts the password on the command line: fine for a throw-away test broker.
        subprocess.run(
            [tool, "-b", str(path), username, password],
            check=True,
            capture_output=True,
            timeout=30,
        )


async def wait_port(host: str, port: int, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class LocalBroker:
    """`async with LocalBroker() as broker:` ... `broker.url`.

    tls: listen with TLS only (mqtts://). users: name -> password; when given, anonymous
    clients are refused; password_tool: see write_password_file. persistence_dir: keep
    sessions and queued messages there across a stop and a start (mosquitto saves them
    when stopped cleanly). TLS, users and persistence need mosquitto (BrokerError
    otherwise).
    """

    def __init__(
        self,
        port: int | None = None,
        kind: BrokerKind | None = None,
        *,
        tls: BrokerTls | None = None,
        users: Mapping[str, str] | None = None,
        password_tool: bool | None = None,
        persistence_dir: Path | None = None,
        max_inflight_messages: int | None = 0,
        extra_config: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.kind: BrokerKind = kind or ("mosquitto" if mosquitto_path() else "embedded")
        self.tls = tls
        self.users = dict(users or {})
        # None: mosquitto_passwd when installed; False: always the Python hash (tested).
        self.password_tool = password_tool
        self.persistence_dir = persistence_dir
        # mosquitto's un-acknowledged QoS 1 messages per client: 0 unlimited (the tests'
        # load), None mosquitto's own default (20), as a site's broker has it.
        self.max_inflight_messages = max_inflight_messages
        self.extra_config = tuple(extra_config)  # more mosquitto.conf lines (tests)
        if (tls is not None or self.users or persistence_dir) and self.kind != "mosquitto":
            raise BrokerError(
                "TLS, passwords and persistence need mosquitto; the embedded broker has none"
            )
        self._proc: asyncio.subprocess.Process | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._amqtt: Any = None

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls is not None else "mqtt"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self.kind == "mosquitto":
            await self._start_mosquitto()
        else:
            await self._start_embedded()
        try:
            await wait_port("127.0.0.1", self.port, 10.0)
        except OSError as exc:
            await self.stop()
            raise BrokerError(f"{self.kind} broker did not open port {self.port}") from exc
        log.info("broker started", kind=self.kind, url=self.url)

    async def _start_mosquitto(self) -> None:
        exe = mosquitto_path()
        if exe is None:
            raise BrokerError("mosquitto is not installed")
        self._tmp = tempfile.TemporaryDirectory(prefix="sorterd-mosquitto-")
        folder = Path(self._tmp.name)
        conf = folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.users else 'true'}",
            "persistence false"
            if self.persistence_dir is None
            else f"persistence true\npersistence_location {self.persistence_dir}/",
            "max_queued_messages 1000000",
            "log_dest none",
        ]
        if self.max_inflight_messages is not None:
            lines.append(f"max_inflight_messages {self.max_inflight_messages}")
        lines += self.extra_config
        if os.geteuid() == 0:
            # Started as root, mosquitto 2 drops to user mosquitto before it reads the
            # certificates and password file, which are private to us: stay who we are.
            lines.append("user root")
        if self.users:
            passwd = folder / "passwd"
            write_password_file(passwd, self.users, use_tool=self.password_tool)
            lines.append(f"password_file {passwd}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        conf.write_text("\n".join(lines) + "\n")
        self._proc = await asyncio.create_subprocess_exec(
            exe,
            "-c",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def _start_embedded(self) -> None:
        try:
            from amqtt.broker import Broker  # noqa: PLC0415  (optional dependency)
        except ImportError as exc:
            raise BrokerError(
                "no MQTT broker: install mosquitto, or the 'embedded-broker' extra (amqtt)"
            ) from exc
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
            "topic-check": {"enabled": False},
        }
        # amqtt logs every probe connection and missing optional key at warning level.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._amqtt = Broker(config)
        await self._amqtt.start()

    async def stop(self) -> None:
        """Stop the broker; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGCONT)  # a stopped (frozen) broker cannot act on TERM
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        broker, self._amqtt = self._amqtt, None
        if broker is not None:
            with contextlib.suppress(Exception):
                await broker.shutdown()
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            tmp.cleanup()

    def send_signal(self, sig: int) -> None:
        """Signal the mosquitto process (fault injection: SIGSTOP freezes it, SIGCONT
        thaws it)."""
        if self._proc is None:
            raise BrokerError("no broker process to signal")
        self._proc.send_signal(sig)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
