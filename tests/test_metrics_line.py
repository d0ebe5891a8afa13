"""The daemon's Prometheus endpoint serves what the line did."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from drivers.broker import LocalBroker, free_port
from tests.linekit import FAST_LINE, line_with_daemon, wait_until

FAST = FAST_LINE


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_endpoint_serves_the_line(broker: LocalBroker, tmp_path: Path) -> None:
    port = free_port()
    extra = f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    async with line_with_daemon(broker, tmp_path, params=FAST, extra_config=extra) as rig:
        await rig.line.run(100_000, count=40)
        assert await rig.line.drain(30)
        confirmations = sum(rig.line.ledger.confirmations.values())
        # The metrics follow the pipeline as it goes: once it has every confirmation, the
        # endpoint serves the whole run.
        await wait_until(
            lambda: rig.daemon.pipeline.counters.confirmations >= confirmations,
            what="the daemon has every confirmation",
        )
        samples = await asyncio.to_thread(_scrape, port)
        decided = sum(v for (name, _), v in samples.items() if name == "sorterd_decisions_total")
        assert decided == rig.daemon.pipeline.counters.decisions
        ok = samples[("sorterd_decisions_total", (("reason", "ok"),))]
        assert ok == rig.daemon.pipeline.stats.reasons["ok"]
        results = sum(v for (name, _), v in samples.items() if name == "sorterd_results_total")
        assert results == confirmations
        assert samples[("sorterd_device_connected", (("device", "plc"),))] == 1
        assert samples[("sorterd_decision_latency_seconds_count", ())] == decided
