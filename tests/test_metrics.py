"""Prometheus metrics: events in through the observer, /metrics out over real HTTP."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from drivers.metrics import LATENCY_BUCKETS_S, Metrics
from sorter.contract import Topics
from sorter.decide import Decider
from sorter.kernel import ChuteState
from sorter.line import Line
from sorter.plan import compile_plan, load_plan
from sorter.ports import Confirmation, LineObserver, Outcome, Reason, ScanRead, SortRequest
from sorter.tracker import Tracker
from sorterd.demo import demo_config_dir

DASHBOARD = Path(__file__).resolve().parent.parent / "config" / "grafana" / "sorterd-dashboard.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    yield m
    m.stop()


def scrape(metrics: Metrics) -> tuple[str, Samples]:
    assert metrics.port is not None
    url = f"http://127.0.0.1:{metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_is_a_line_observer() -> None:
    observer: LineObserver = Metrics()  # mypy checks the protocol; this checks it at run time
    for method in ("on_decision", "on_result", "on_device"):
        assert callable(getattr(observer, method))


def test_scrape_has_exact_counts(metrics: Metrics) -> None:
    for _ in range(3):
        metrics.on_decision("ok", "CASA", 12, 0.3)
    metrics.on_decision("no_read", "", 99, 150.0)
    metrics.on_decision("timeout", "", 99, 200.0)
    metrics.on_decision("something_new", "RABAT", 7, 1.0)
    metrics.on_result("sorted", 12)
    metrics.on_result("sorted", 12)
    metrics.on_result("reject", 99)
    metrics.on_result("exploded", 0)
    metrics.on_device("plc", True, 0)
    metrics.on_device("plc", False, 1)
    metrics.on_device("tunnel-1", True, 0)

    port = metrics.start(port=0)
    assert port > 0
    assert metrics.port == port
    assert metrics.address == ("127.0.0.1", port)
    _, samples = scrape(metrics)

    decisions = "sorterd_decisions_total"
    assert value(samples, decisions, reason="ok") == 3
    assert value(samples, decisions, reason="no_read") == 1
    assert value(samples, decisions, reason="timeout") == 1
    assert value(samples, decisions, reason="other") == 1
    # Every known reason is exported from the start, at 0 until it happens.
    for reason in Reason:
        if reason.word not in ("ok", "no_read", "timeout"):
            assert value(samples, decisions, reason=reason.word) == 0

    by_destination = "sorterd_decisions_by_destination_total"
    assert value(samples, by_destination, destination="CASA") == 3
    assert value(samples, by_destination, destination="none") == 2
    assert value(samples, by_destination, destination="RABAT") == 1

    results = "sorterd_results_total"
    assert value(samples, results, outcome="sorted") == 2
    assert value(samples, results, outcome="reject") == 1
    assert value(samples, results, outcome="other") == 1
    assert value(samples, results, outcome="lost") == 0
    assert {o.word for o in Outcome} <= {
        dict(labels)["outcome"] for name, labels in samples if name == results
    }

    _check_latency_and_devices(samples)
    build = [labels for name, labels in samples if name == "sorterd_build_info"]
    assert len(build) == 1
    assert "version" in dict(build[0])


def _check_latency_and_devices(samples: Samples) -> None:
    """The latency histogram and device gauges after test_scrape_has_exact_counts' events."""
    latency = "sorterd_decision_latency_seconds"
    assert value(samples, f"{latency}_count") == 6
    assert value(samples, f"{latency}_sum") == pytest.approx((3 * 0.3 + 150 + 200 + 1) / 1000)
    assert value(samples, f"{latency}_bucket", le="0.0001") == 0
    assert value(samples, f"{latency}_bucket", le="0.0005") == 3
    assert value(samples, f"{latency}_bucket", le="0.001") == 4
    assert value(samples, f"{latency}_bucket", le="0.1") == 4
    assert value(samples, f"{latency}_bucket", le="0.15") == 5
    assert value(samples, f"{latency}_bucket", le="0.2") == 6  # le is inclusive
    assert value(samples, f"{latency}_bucket", le="+Inf") == 6

    assert value(samples, "sorterd_device_connected", device="plc") == 0
    assert value(samples, "sorterd_device_errors", device="plc") == 1
    assert value(samples, "sorterd_device_connected", device="tunnel-1") == 1
    assert value(samples, "sorterd_device_errors", device="tunnel-1") == 0


def test_latency_buckets_cover_a_tenth_of_a_ms_to_200_ms() -> None:
    assert LATENCY_BUCKETS_S[0] == 0.0001
    assert 0.2 in LATENCY_BUCKETS_S
    assert list(LATENCY_BUCKETS_S) == sorted(LATENCY_BUCKETS_S)


def test_scrape_is_live(metrics: Metrics) -> None:
    metrics.start(port=0)
    _, before = scrape(metrics)
    assert value(before, "sorterd_decisions_total", reason="ok") == 0
    metrics.on_decision("ok", "CASA", 12, 0.2)
    metrics.on_device("plc", True, 4)
    _, after = scrape(metrics)
    assert value(after, "sorterd_decisions_total", reason="ok") == 1
    assert value(after, "sorterd_device_errors", device="plc") == 4


def test_destination_labels_are_bounded() -> None:
    metrics = Metrics(max_destinations=3)
    for name in ("A", "B", "C", "D", "E", "A", "E"):
        metrics.on_decision("ok", name, 1, 0.1)
    metrics.on_decision("no_read", "", 99, 0.1)
    families = {f.name: f for f in text_string_to_metric_families(_render(metrics))}
    counts = {
        s.labels["destination"]: s.value
        for s in families["sorterd_decisions_by_destination"].samples
        if s.name.endswith("_total")
    }
    assert counts == {"A": 2, "B": 1, "C": 1, "other": 4}


def _render(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_instances_do_not_share_a_registry(metrics: Metrics) -> None:
    other = Metrics()
    other.on_decision("ok", "CASA", 1, 0.1)
    metrics.start(port=0)
    other_port = other.start(port=0)
    try:
        assert other_port != metrics.port
        _, mine = scrape(metrics)
        _, theirs = scrape(other)
        assert value(mine, "sorterd_decisions_total", reason="ok") == 0
        assert value(theirs, "sorterd_decisions_total", reason="ok") == 1
    finally:
        other.stop()


def test_stop_closes_the_port_and_is_idempotent(metrics: Metrics) -> None:
    metrics.stop()  # before start: nothing to do
    threads_before = set(threading.enumerate())
    port = metrics.start(port=0)
    with pytest.raises(RuntimeError, match="already running"):
        metrics.start(port=0)
    scrape(metrics)
    metrics.stop()
    metrics.stop()
    assert metrics.port is None
    assert metrics.address is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert not [t for t in threading.enumerate() if t.name == "metrics-http"]
    assert set(threading.enumerate()) <= threads_before | {threading.current_thread()}
    # Startable again after a stop (a restart of the daemon's metrics endpoint).
    metrics.start(port=0)
    scrape(metrics)


def test_port_in_use_raises(metrics: Metrics) -> None:
    port = metrics.start(port=0)
    second = Metrics()
    with pytest.raises(OSError, match="in use"):
        second.start(port=port)
    assert second.port is None


@pytest.mark.requires("ipv6")
def test_ipv6_loopback(metrics: Metrics) -> None:
    port = metrics.start(host="::1", port=0)
    with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as response:
        assert b"sorterd_decisions_total" in response.read()


def test_through_a_real_line_core(metrics: Metrics) -> None:
    """The line core's own call sites feed the observer; the scrape agrees with what it
    published on MQTT."""
    plan = compile_plan(load_plan(demo_config_dir() / "sortplan.toml"))
    published: list[tuple[str, dict[str, Any]]] = []

    def publish(topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False) -> None:
        published.append((topic, payload))

    now_ns = 10_000_000_000
    line = Line(
        Decider(plan, ChuteState.for_plan(plan), site_country="MA"),
        Tracker(scan_wait_ns=200_000_000, scan_ttl_ns=10_000_000_000),
        publish,
        Topics("t"),
        clock_ns=lambda: now_ns,
    )
    line.observers.append(metrics)
    received = now_ns - 400_000  # each request was read 0.4 ms before its decision
    line.on_requests([SortRequest(1, 101, 1, 300, 200, 100, 1000, received)])
    line.on_scan(ScanRead("tunnel-1", 101, (), now_ns))  # a no-read
    line.on_requests([SortRequest(2, 102, 1, 300, 200, 100, 1000, received)])
    assert line.answer_waiting() == 1  # decided without a scan: timeout
    line.on_confirmations([Confirmation(1, 101, 1, Outcome.REJECT, 0)])
    line.on_link_state(True, "connected")
    line.devices.report("tunnel-1", connected=False)

    metrics.start(port=0)
    _, samples = scrape(metrics)
    decisions = [p for topic, p in published if topic == "t/decisions"]
    assert len(decisions) == 2
    for reason in {d["reason"] for d in decisions}:
        expected = sum(1 for d in decisions if d["reason"] == reason)
        assert value(samples, "sorterd_decisions_total", reason=reason) == expected
    assert value(samples, "sorterd_decision_latency_seconds_count") == 2
    assert value(samples, "sorterd_decision_latency_seconds_sum") == pytest.approx(0.0008)
    assert value(samples, "sorterd_results_total", outcome="reject") == 1
    assert value(samples, "sorterd_device_connected", device="plc") == 1
    assert value(samples, "sorterd_device_connected", device="tunnel-1") == 0
    assert value(samples, "sorterd_device_errors", device="tunnel-1") == 1


def _dashboard_exprs(node: object) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, item in node.items():
            if key in ("expr", "definition") and isinstance(item, str):
                found.append(item)
            else:
                found.extend(_dashboard_exprs(item))
    elif isinstance(node, list):
        for item in node:
            found.extend(_dashboard_exprs(item))
    return found


def test_dashboard_uses_only_exported_metrics(metrics: Metrics) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("reason", "outcome", "latency", "device"):
        assert topic in titles

    # Every series appears once something happened; a scrape then lists all sample names.
    metrics.on_decision("ok", "CASA", 1, 0.1)
    metrics.on_result("sorted", 1)
    metrics.on_device("plc", True, 0)
    metrics.start(port=0)
    _, samples = scrape(metrics)
    exported = {name for name, _ in samples}

    exprs = _dashboard_exprs(dashboard)
    assert len(exprs) >= 8
    used = {name for expr in exprs for name in re.findall(r"\bsorterd_[a-z0-9_]+", expr)}
    assert {
        "sorterd_decisions_total",
        "sorterd_results_total",
        "sorterd_decision_latency_seconds_bucket",
        "sorterd_device_connected",
        "sorterd_device_errors",
    } <= used
    assert used <= exported, used - exported
    assert any("histogram_quantile(0.5," in e for e in exprs)
    assert any("histogram_quantile(0.99," in e for e in exprs)
