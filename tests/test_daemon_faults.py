"""Devices that go away while the daemon runs: status published, the rest keeps working."""

from __future__ import annotations

from pathlib import Path

from drivers.broker import LocalBroker, free_port
from tests.linekit import FAST_LINE, line_with_daemon, wait_until

FAST = FAST_LINE


def _device(sub: object, name: str) -> bool | None:
    last = sub.last(f"devices/{name}")  # type: ignore[attr-defined]
    return None if last is None else bool(last["connected"])


async def test_plc_and_scanner_go_away_and_come_back(broker: LocalBroker, tmp_path: Path) -> None:
    async with line_with_daemon(
        broker, tmp_path, params=FAST, plc_port=free_port(), scanner_port=free_port()
    ) as rig:
        line, daemon, sub = rig.line, rig.daemon, rig.sub
        assert line.scanner is not None
        await line.run(100_000, count=40)
        assert await line.drain(30)
        await wait_until(lambda: _device(sub, "plc") is True, 5)

        # The PLC goes away: status says so within the heartbeat timeout, the daemon lives.
        await line.plc.stop()
        await wait_until(lambda: _device(sub, "plc") is False, 5)
        assert (sub.last("devices/plc") or {})["errors"] >= 1
        # Meanwhile the scanner link is unaffected.
        assert daemon.scanners[0].connected
        await line.plc.start()
        await wait_until(lambda: _device(sub, "plc") is True, 10)

        # The scanner goes away and comes back on the same port.
        await line.scanner.stop()
        await wait_until(lambda: _device(sub, "tunnel-1") is False, 5)
        await line.scanner.start()
        await wait_until(lambda: _device(sub, "tunnel-1") is True, 10)
        await line.scanner.wait_for_clients(1)

        # Items flow again after both came back: every new item ends, and is decided with
        # its scan (not by timeout) now that the scanner is back.
        before = daemon.pipeline.counters.decisions
        timeouts_before = daemon.pipeline.stats.reasons["timeout"]
        await line.run(100_000, count=40)
        assert await line.drain(30)
        assert daemon.pipeline.counters.decisions >= before + 40
        assert daemon.pipeline.stats.reasons["timeout"] == timeouts_before, [
            d for d in sub.of("decisions") if d["reason"] == "timeout"
        ]
    assert line.ledger.in_flight == 0
    assert line.ledger.terminal.total() == 80
