"""MQTT over TLS against a real mosquitto: passwords, client certificates, wrong secrets.

Certificates are made at test time (tests/tlskit.py). The embedded broker has no TLS, so
these tests need mosquitto (and openssl): skipped, saying so, where either is missing, and
failed instead where SORTERD_REQUIRE lists it (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from drivers.broker import BrokerTls, LocalBroker, write_password_file
from drivers.mqtt import MqttPublisher
from simulators.line import SimulatedLine
from sorter.config import ConfigError, load_site
from sorter.plan import load_plan
from sorterd.demo import write_site
from tests.linekit import PLAN_PATH, wait_until
from tests.tlskit import TlsFiles, make_tls_files

pytestmark = pytest.mark.requires("mosquitto", "openssl")

USER = "sorterd"
# Distinctive, so a search of the logs for it cannot match anything else.
PASSWORD = "pw-Zq8#vK2!unlikely-in-any-log"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("other-tls"))


@pytest.fixture
async def password_broker(tls: TlsFiles) -> AsyncIterator[LocalBroker]:
    broker_tls = BrokerTls(tls.ca_cert, tls.server_cert, tls.server_key)
    async with LocalBroker(kind="mosquitto", tls=broker_tls, users={USER: PASSWORD}) as b:
        yield b


@contextlib.asynccontextmanager
async def running(pub: MqttPublisher) -> AsyncIterator[None]:
    task = asyncio.create_task(pub.run(), name="publisher")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def client_context(tls: TlsFiles, *, with_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
    if with_cert:
        ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    return ctx


Seen = list[tuple[str, bytes]]


async def _collect(
    broker: LocalBroker, ctx: ssl.SSLContext, into: Seen, ready: asyncio.Event
) -> None:
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier="tls-observer",
        username=USER if broker.users else None,
        password=PASSWORD if broker.users else None,
        tls_context=ctx,
    ) as c:
        await c.subscribe("#", qos=1)
        ready.set()
        async for m in c.messages:
            assert isinstance(m.payload, bytes)
            into.append((str(m.topic), m.payload))


@contextlib.asynccontextmanager
async def observing(broker: LocalBroker, ctx: ssl.SSLContext) -> AsyncIterator[Seen]:
    got: Seen = []
    ready = asyncio.Event()
    task = asyncio.create_task(_collect(broker, ctx, got, ready), name="observer")
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_publish_over_tls_with_password(password_broker: LocalBroker, tls: TlsFiles) -> None:
    assert password_broker.url.startswith("mqtts://")
    pub = MqttPublisher(
        password_broker.url, username=USER, password=PASSWORD, ca_file=str(tls.ca_cert)
    )
    async with observing(password_broker, client_context(tls)) as got, running(pub):
        for i in range(50):
            pub.publish("tls/decisions", {"i": i})
        # flush() returns True only once every message had its PUBACK.
        assert await pub.flush(15)
        await wait_until(lambda: len(got) >= 50, 10)
    assert [json.loads(p)["i"] for _, p in got] == list(range(50))
    assert pub.stats.published == 50
    assert pub.stats.errors == 0
    assert pub.last_error is None


async def test_publish_with_client_certificate(tls: TlsFiles) -> None:
    broker_tls = BrokerTls(tls.ca_cert, tls.server_cert, tls.server_key, require_certificate=True)
    async with LocalBroker(kind="mosquitto", tls=broker_tls) as broker:
        pub = MqttPublisher(
            broker.url,
            ca_file=str(tls.ca_cert),
            cert_file=str(tls.client_cert),
            key_file=str(tls.client_key),
        )
        ctx = client_context(tls, with_cert=True)
        async with observing(broker, ctx) as got, running(pub):
            pub.publish("tls/results", {"ok": True})
            assert await pub.flush(15)
            await wait_until(lambda: len(got) >= 1, 10)
        assert got == [("tls/results", b'{"ok":true}')]

        # The same broker refuses a client without a certificate: never connected.
        bare = MqttPublisher(
            broker.url, ca_file=str(tls.ca_cert), ack_timeout_s=1.0, backoff_initial_s=0.05
        )
        async with running(bare):
            bare.publish("tls/results", {"ok": False})
            assert not await bare.flush(2.5)
        assert bare.stats.connects == 0
        assert bare.stats.published == 0


async def test_wrong_password_is_a_clear_error_and_retried(
    password_broker: LocalBroker, tls: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    states: list[tuple[bool, str]] = []
    pub = MqttPublisher(
        password_broker.url,
        username=USER,
        password="not-the-password",
        ca_file=str(tls.ca_cert),
        backoff_initial_s=0.02,
        backoff_max_s=0.1,
        on_state=lambda ok, why: states.append((ok, why)),
    )
    async with running(pub):
        pub.publish("tls/decisions", {"i": 1})
        await wait_until(lambda: pub.stats.errors >= 3, 10)
    assert pub.stats.connects == 0
    assert pub.connected is False
    assert pub.backlog == 1  # kept for when the password is fixed, not dropped
    assert pub.last_error is not None
    assert "not authori" in pub.last_error.lower()
    assert not any(ok for ok, _ in states)
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "not-the-password" not in out.out + out.err


async def test_wrong_ca_is_a_clear_error(
    password_broker: LocalBroker, other_ca: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = MqttPublisher(
        password_broker.url,
        username=USER,
        password=PASSWORD,
        ca_file=str(other_ca.ca_cert),
        backoff_initial_s=0.02,
        backoff_max_s=0.1,
    )
    async with running(pub):
        pub.publish("tls/decisions", {"i": 1})
        await wait_until(lambda: pub.stats.errors >= 2, 10)
    assert pub.stats.connects == 0
    assert pub.last_error is not None
    assert "certificate verify failed" in pub.last_error
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err


async def test_python_password_hash_is_accepted_by_mosquitto(tls: TlsFiles) -> None:
    """The fallback for machines without mosquitto_passwd writes what mosquitto reads."""
    broker_tls = BrokerTls(tls.ca_cert, tls.server_cert, tls.server_key)
    async with LocalBroker(
        kind="mosquitto", tls=broker_tls, users={USER: PASSWORD}, password_tool=False
    ) as broker:
        pub = MqttPublisher(broker.url, username=USER, password=PASSWORD, ca_file=str(tls.ca_cert))
        async with running(pub):
            pub.publish("tls/decisions", {"i": 1})
            assert await pub.flush(15)
        assert pub.stats.published == 1


def test_python_password_file_format(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    write_password_file(passwd, {USER: PASSWORD, "other": "x"}, use_tool=False)
    lines = passwd.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == [USER, "other"]
    assert lines[0].startswith(f"{USER}:$7$101$")
    assert PASSWORD not in passwd.read_text()
    assert passwd.stat().st_mode & 0o077 == 0  # not readable by others


def test_relative_tls_paths_resolve_against_the_config_file(tls: TlsFiles, tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    (folder / "certs").mkdir(parents=True)
    for src in (tls.ca_cert, tls.client_cert, tls.client_key):
        (folder / "certs" / src.name).write_bytes(src.read_bytes())
    site = write_site(
        folder, plc_port=1, scanner_port=2, mqtt_url="mqtts://127.0.0.1:8883",
        plan=PLAN_PATH, prefix="t/p",
    )  # fmt: skip
    site.write_text(
        site.read_text().replace(
            "[mqtt]\n",
            '[mqtt]\nca_file = "certs/ca.pem"\ncert_file = "certs/client.pem"\n'
            'key_file = "certs/client.key"\n',
        )
    )
    # From another working directory: the paths still point into the config's folder.
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        mqtt = load_site(Path("etc/site.toml"), env={}).config.mqtt
    finally:
        os.chdir(cwd)
    assert mqtt.ca_file == str(folder.resolve() / "certs" / "ca.pem")
    assert mqtt.cert_file == str(folder.resolve() / "certs" / "client.pem")
    assert mqtt.key_file == str(folder.resolve() / "certs" / "client.key")

    # A missing file is a config problem naming the key, found at load time.
    (folder / "certs" / "ca.pem").unlink()
    with pytest.raises(ConfigError) as info:
        load_site(site, env={})
    assert [p.key for p in info.value.problems] == ["mqtt.ca_file"]
    assert "no such file" in str(info.value)

    # TLS files with a plain mqtt:// URL would be ignored: a mistake, said so. A key alone
    # is one too.
    site.write_text(
        site.read_text()
        .replace("mqtts://", "mqtt://")
        .replace('cert_file = "certs/client.pem"\n', "")
    )
    with pytest.raises(ConfigError) as info:
        load_site(site, env={})
    got = [(p.key, p.message) for p in info.value.problems]
    assert got == [
        ("mqtt.ca_file", f"no such file: {folder.resolve() / 'certs' / 'ca.pem'}"),
        ("mqtt.key_file", "TLS file given, but mqtt.url is not mqtts://"),
        ("mqtt.key_file", "a key without mqtt.cert_file"),
    ]


async def test_daemon_over_tls_with_credentials_from_environment(
    password_broker: LocalBroker, tls: TlsFiles, tmp_path: Path
) -> None:
    """`sorterd run` with a relative ca_file and the secrets in SORTERD_MQTT_*: it comes
    online, decides, stops; its log (at debug level) never shows the password."""
    prefix = "test/tls/line"
    folder = tmp_path / "etc"
    (folder / "certs").mkdir(parents=True)
    (folder / "certs" / "ca.pem").write_bytes(tls.ca_cert.read_bytes())
    plan = load_plan(PLAN_PATH)
    async with (
        SimulatedLine(sorted(plan.machine_chutes)) as line,
        observing(password_broker, client_context(tls)) as got,
    ):
        assert line.scanner is not None
        assert line.scanner.port is not None
        site = write_site(
            folder,
            plc_port=line.plc.port,
            scanner_port=line.scanner.port,
            mqtt_url=password_broker.url,
            plan=PLAN_PATH,
            prefix=prefix,
        )
        site.write_text(site.read_text().replace("[mqtt]\n", '[mqtt]\nca_file = "certs/ca.pem"\n'))
        assert PASSWORD not in site.read_text()
        env = {
            **os.environ,
            "SORTERD_MQTT_USERNAME": USER,
            "SORTERD_MQTT_PASSWORD": PASSWORD,
            "SORTERD_LOG_LEVEL": "debug",
        }

        def of(kind: str) -> list[dict[str, object]]:
            return [json.loads(p) for t, p in got if t == f"{prefix}/{kind}"]

        def status() -> object:
            return (of("status") or [{}])[-1].get("state")

        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sorterd.cli",
            "run",
            "-c",
            str(site),
            cwd=tmp_path,  # not the config's folder: ca_file must resolve against the file
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**env, "PYTHONPATH": str(Path.cwd())},
        )
        try:
            await wait_until(lambda: status() == "online", 60)
            await line.run(20_000, count=5)
            assert await line.drain(30)
            await wait_until(lambda: len(of("decisions")) >= 5, 20)
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                code = await proc.wait()
            assert code == 0
            await wait_until(lambda: status() == "offline", 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.stdout is not None
    log_text = (await proc.stdout.read()).decode(errors="replace")
    assert "mqtt state" in log_text  # the log was captured, at debug level
    assert "Traceback" not in log_text
    assert PASSWORD not in log_text
