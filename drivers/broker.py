"""A local MQTT broker for the demo and the tests: mosquitto when installed, else amqtt.

Always bound to 127.0.0.1. mosquitto runs as a child process with a config written to a
temporary folder; amqtt (the fallback for machines without mosquitto) runs in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import structlog

log = structlog.get_logger(__name__)

BrokerKind = Literal["mosquitto", "embedded"]


class BrokerError(RuntimeError):
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
    """`async with LocalBroker() as broker:` ... `broker.url`."""

    def __init__(self, port: int | None = None, kind: BrokerKind | None = None) -> None:
        self.port = port or free_port()
        self.kind: BrokerKind = kind or ("mosquitto" if mosquitto_path() else "embedded")
        self._proc: asyncio.subprocess.Process | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._amqtt: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

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
        conf = Path(self._tmp.name) / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 0\n"
            "log_dest none\n"
        )
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
