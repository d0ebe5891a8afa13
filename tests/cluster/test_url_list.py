"""`[mqtt] url` as a list of the nodes of one clustered broker (docs/cluster.md): what
check-config accepts and refuses, each problem naming the key, no password shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drivers.mqtt_nodes import MqttNodes
from sorter.addresses import AddressError, parse_mqtt_urls
from sorter.config import ConfigError, load_site
from sorterd.demo import demo_config_dir

DEMO = demo_config_dir()


def _site(tmp_path: Path, url_toml: str, extra: str = "") -> Path:
    text = (DEMO / "site.toml").read_text()
    lines = []
    in_mqtt = False
    for line in text.splitlines():
        if line.startswith("["):
            in_mqtt = line.strip() == "[mqtt]"
        lines.append(f"url = {url_toml}{extra}" if in_mqtt and line.startswith("url =") else line)
    site = tmp_path / "site.toml"
    site.write_text("\n".join(lines) + "\n")
    (tmp_path / "sortplan.toml").write_text((DEMO / "sortplan.toml").read_text())
    return site


def _check(site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sorterd.cli", "check-config", "-c", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_list_of_nodes_is_accepted_and_shown_without_passwords(tmp_path: Path) -> None:
    urls = '["mqtt://u:s3cret@127.0.0.1:4001", "mqtt://u:s3cret@127.0.0.1:4002", "mqtt://h3"]'
    site = _site(tmp_path, urls)
    out = _check(site)
    assert out.returncode == 0, out.stderr
    assert "mqtt://127.0.0.1:4001, mqtt://127.0.0.1:4002, mqtt://h3:1883" in out.stdout
    assert "s3cret" not in out.stdout + out.stderr
    mqtt = load_site(site).config.mqtt
    assert mqtt.urls == (
        "mqtt://u:s3cret@127.0.0.1:4001",
        "mqtt://u:s3cret@127.0.0.1:4002",
        "mqtt://h3",
    )
    # NATS 2.9 has no shared subscriptions: a list means the archiver subscribes plainly.
    assert mqtt.shares is False
    assert load_site(_site(tmp_path, '"mqtt://127.0.0.1:1883"')).config.mqtt.shares is True
    forced = _site(tmp_path, urls, "\nshared_subscriptions = true")
    assert load_site(forced).config.mqtt.shares is True


@pytest.mark.parametrize(
    ("url_toml", "words"),
    [
        ("[]", "list is empty"),
        ('["mqtt://a:1", "mqtts://b:2"]', "mixes mqtt:// and mqtts://"),
        ('["mqtt://a:1", "mqtt://b:2", "mqtt://A:1"]', "node 3 (mqtt://a:1) is given twice"),
        ('["mqtt://a", "mqtt://a:1883"]', "node 2 (mqtt://a:1883) is given twice"),
        ('["mqtt://a:1", "http://b:2"]', "node 2: MQTT URL 'http://b:2': must start with mqtt://"),
        ('["mqtt://u:pw@a:1", "mqtt://u:pw@b:1/x"]', "node 2: MQTT URL 'mqtt://u:***@b:1/x'"),
        ("[1, 2]", "must be a URL (a string) or a list"),
        ("42", "must be a URL (a string) or a list"),
    ],
)
def test_bad_lists_are_one_clear_problem_naming_the_key(
    tmp_path: Path, url_toml: str, words: str
) -> None:
    site = _site(tmp_path, url_toml)
    with pytest.raises(ConfigError) as caught:
        load_site(site)
    problems = [str(p) for p in caught.value.problems]
    assert len(problems) == 1, problems
    assert f"{site}: mqtt.url: " in problems[0]
    assert words in problems[0]
    assert "pw@" not in problems[0]


def test_check_config_lists_the_problem_without_a_traceback(tmp_path: Path) -> None:
    out = _check(_site(tmp_path, '["mqtt://a:1", "mqtt://a:1"]'))
    assert out.returncode == 1
    assert "mqtt.url" in out.stderr
    assert "given twice" in out.stderr
    assert "Traceback" not in out.stderr


def test_tls_files_need_mqtts_nodes(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not read by the check\n")
    site = _site(tmp_path, '["mqtt://a:1", "mqtt://b:1"]', '\nca_file = "ca.pem"')
    with pytest.raises(ConfigError) as caught:
        load_site(site)
    assert [p.key for p in caught.value.problems] == ["mqtt.ca_file"]
    ok = _site(tmp_path, '["mqtts://a:1", "mqtts://b:1"]', '\nca_file = "ca.pem"')
    assert load_site(ok).config.mqtt.ca_file == str(tmp_path / "ca.pem")


def test_nodes_rotate_in_order_and_credentials_win_over_the_urls() -> None:
    nodes = MqttNodes(["mqtt://u:a@h1:1", "mqtt://h2:2", "mqtt://h3:3"], password="x")
    seen = []
    for _ in range(4):
        seen.append(nodes.shown)
        nodes.failed("test")
    assert seen == ["mqtt://h1:1", "mqtt://h2:2", "mqtt://h3:3", "mqtt://h1:1"]
    assert (nodes.username, nodes.password) == (None, "x")  # h2: no user in its URL
    nodes.failed()
    nodes.failed()
    assert (nodes.shown, nodes.username, nodes.password) == ("mqtt://h1:1", "u", "x")
    single = MqttNodes("mqtt://h1:1")
    single.failed("test")
    assert single.shown == "mqtt://h1:1"
    with pytest.raises(AddressError, match="list is empty"):
        parse_mqtt_urls([])


def test_a_list_of_one_url_is_one_broker(tmp_path: Path) -> None:
    """A list of one URL behaves as that URL alone: the archiver's shared subscriptions
    (mosquitto has them) and the publisher's QoS 1 command subscription."""
    mqtt = load_site(_site(tmp_path, '["mqtt://127.0.0.1:1883"]')).config.mqtt
    single = load_site(_site(tmp_path, '"mqtt://127.0.0.1:1883"')).config.mqtt
    assert mqtt.shares is single.shares is True
