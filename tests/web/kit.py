"""The web console's rig, all real processes: mosquitto, `sorterd simulate line`,
`sorterd run`, `sorterd web`, an MQTT observer (paho, in its own thread) and headless
Chromium driven by Selenium through Debian's chromedriver.

The browser tests are synchronous (Selenium is), so the rig is too: processes are started
with subprocess and stopped with SIGTERM; nothing here needs an event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from drivers.broker import free_port, mosquitto_path
from sorterd.demo import write_site
from tests.linekit import PLAN_PATH

REPO = Path(__file__).resolve().parents[2]
PREFIX = "webtest/hub/line-1"
OTHER_LINE = "webtest/hub/line-2"
OPERATOR = ("olga", "operator-password-1")
VIEWER = ("victor", "viewer-password-1")


def wait(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll until `predicate()` is true; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    """mosquitto on a fixed port, with persistence, so that a restart keeps the retained
    topics (as a site's broker does)."""

    def __init__(self, folder: Path) -> None:
        exe = mosquitto_path()
        assert exe is not None
        self.exe = exe
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence true\npersistence_location {folder}/",
            "log_dest none",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)])
        wait(lambda: port_open(self.port), 10, "mosquitto listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Process:
    """`python -m sorterd.cli ARGS` with its output in a log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sorterd.cli", *args],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Observer:
    """The last payload of every topic under the hub, and every P/cmd message seen."""

    port: int
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="web-test-observer")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe("webtest/hub/#", qos=1)

    def _on_message(self, _: mqtt.Client, __: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            if "/cmd/" in message.topic:
                self.commands.append(message.topic)
                return
            with contextlib.suppress(ValueError):
                self.last[message.topic] = json.loads(message.payload)

    def start(self) -> None:
        self.client.connect_async("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def get(self, suffix: str, prefix: str = PREFIX) -> dict[str, Any]:
        with self.lock:
            return dict(self.last.get(f"{prefix}/{suffix}", {}))

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        self.client.publish(topic, json.dumps(payload), qos=1, retain=retain).wait_for_publish(5)


def add_user(site: Path, name: str, role: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sorterd.cli", "web", "-c", str(site), "--add-user", name,
         "--role", role],
        cwd=REPO, input=password + "\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def write_console_site(folder: Path, broker_url: str, web_port: int) -> Path:
    """A site for the simulated demo line with a [web] table showing every line of the
    hub (discovered from their retained P/status)."""
    return write_site(
        folder,
        plc_port=free_port(),
        scanner_port=free_port(),
        mqtt_url=broker_url,
        plan=PLAN_PATH,
        prefix=PREFIX,
        extra=f'\n[web]\nlisten = "127.0.0.1:{web_port}"\nlines = ["webtest/hub/+"]\n',
    )


@contextlib.contextmanager
def chromium(width: int = 1920, height: int = 1080) -> Iterator[Any]:
    """Headless Chromium (Debian's package) through chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert binary is not None, "chromium (tests/conftest.py REQUIREMENTS)"
    assert driver_path is not None, "chromedriver (tests/conftest.py REQUIREMENTS)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
