"""`sorterd archive`'s own MQTT session (drivers/archive_mqtt.py) against a mosquitto that
wants TLS and a password: refused with a wrong password (said, retried, no traceback),
archiving with the right one."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from pathlib import Path

import aiomqtt
import pytest

from drivers.broker import BrokerTls, LocalBroker
from tests.archivekit import archive_site, archived, archived_count, archiver
from tests.tlskit import make_tls_files
from tests.waiting import wait_until

pytestmark = pytest.mark.requires("postgresql", "mosquitto", "openssl")

HUB = "tls/hub"
USER, PASSWORD = "archiver", "mqtt-pw-archive"


@pytest.mark.asyncio
async def test_archive_over_tls_with_a_password(
    archive_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    broker_tls = BrokerTls(tls.ca_cert, tls.server_cert, tls.server_key)
    async with LocalBroker(kind="mosquitto", tls=broker_tls, users={USER: PASSWORD}) as broker:
        site = archive_site(tmp_path / "site", broker.url, archive_db, [f"{HUB}/+"])
        monkeypatch.setenv("SORTERD_MQTT_CA_FILE", str(tls.ca_cert))
        monkeypatch.setenv("SORTERD_MQTT_USERNAME", USER)
        monkeypatch.setenv("SORTERD_MQTT_PASSWORD", "wrong-mqtt-pw")
        async with archiver(site, "tls-a") as proc:
            await wait_until(lambda: "refused by the broker: not authorised" in proc.output(), 30)
            assert proc.proc.returncode is None  # it keeps trying
            assert await proc.stop() == 0
        assert "Traceback" not in proc.output()
        assert "wrong-mqtt-pw" not in proc.output()

        monkeypatch.setenv("SORTERD_MQTT_PASSWORD", PASSWORD)
        context = ssl.create_default_context(cafile=str(tls.ca_cert))
        message = {
            "id": "d-tls-1", "ts": dt.datetime.now(dt.UTC).isoformat(), "tracking_id": 1,
            "seq": 1, "codes": ["TLS1"], "barcode": "TLS1", "destination": "CASA", "chute": 3,
            "reason": "ok", "recirculations": 0,
        }  # fmt: skip
        async with archiver(site, "tls-a") as proc:
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, username=USER, password=PASSWORD, tls_context=context
            ) as client:
                await client.subscribe(f"{HUB}/archive/status", qos=1)
                await _wait_online(client, "tls-a")
                await client.publish(f"{HUB}/line-1/decisions", json.dumps(message), qos=1)
            await wait_until(lambda: archived_count(archive_db) >= 1, 30, "row archived")
            assert await proc.stop() == 0
        assert [r["id"] for r in archived(archive_db)] == ["d-tls-1"]
        assert "Traceback" not in proc.output()


async def _wait_online(client: aiomqtt.Client, client_id: str) -> None:
    """As tests/archivekit.py's wait_online, on a client already connected over TLS."""
    async with asyncio.timeout(30):
        async for m in client.messages:
            status = json.loads(m.payload) if isinstance(m.payload, bytes) else {}
            if status.get("archiver") == client_id and status.get("state") == "online":
                return
