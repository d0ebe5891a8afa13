"""Each fault of issue 6, injected for real into a line running at 20,000 items/h.

Every test: traffic starts, the fault comes after `LEAD_S`, lasts `FAULT_S`, and the line
runs on `TAIL_S` after it; then the line drains and the ledger is held against what reached
the broker (tests/faults/harness.py). Recovery time is measured from the end of the fault
to the sign, on MQTT, that the part is back. SORTERD_FAULT_SCALE stretches every duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.broker import mosquitto_path
from tests.faults.harness import REPORTS, SCALE, FaultRig, Report, print_report, scaled

LEAD_S = 3.0
FAULT_S = 4.0
TAIL_S = 4.0

pytestmark = [
    pytest.mark.skipif(mosquitto_path() is None, reason="the fault suite drives mosquitto"),
    # Traffic, a drain of up to a minute and more, start-up: bounded, and scaled.
    pytest.mark.timeout(int(300 + 4 * scaled(LEAD_S + FAULT_S + TAIL_S))),
]


def _traffic_s() -> float:
    return scaled(LEAD_S + FAULT_S + TAIL_S)


def _check(report: Report) -> None:
    REPORTS.append(report)
    print_report(report)
    assert report.lost == 0, report.notes
    assert not report.notes, report.notes
    assert report.decisions > 0
    assert report.inducted > 0


async def _after(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return asyncio.get_running_loop().time()


def _device_back(rig: FaultRig, name: str, since_s: float) -> bool:
    got = rig.seen.of(f"devices/{name}")
    times = rig.seen.received_s.get(f"devices/{name}", [])
    return any(t >= since_s and m.get("connected") is True for m, t in zip(got, times, strict=True))


def _device_down_seen(rig: FaultRig, name: str) -> bool:
    return any(m.get("connected") is False for m in rig.seen.of(f"devices/{name}"))


async def test_broker_down(tmp_path: Path) -> None:
    async with FaultRig(tmp_path).running() as rig:
        rig.start_traffic(_traffic_s())
        await asyncio.sleep(scaled(LEAD_S))
        await rig.broker.stop()  # gone: connections refused until it is back
        end = await _after(scaled(FAULT_S))
        await rig.broker.start()
        back = await rig.wait_for(lambda: rig.seen.first_after("decisions", end) is not None)
        report = await rig.finish("broker_down", recover_s=back - end)
    _check(report)


async def test_broker_frozen(tmp_path: Path) -> None:
    """SIGSTOP: the TCP connection stays open, nothing answers (a half-open broker)."""
    async with FaultRig(tmp_path).running() as rig:
        rig.start_traffic(_traffic_s())
        await asyncio.sleep(scaled(LEAD_S))
        rig.broker.send_signal(signal.SIGSTOP)
        end = await _after(scaled(FAULT_S))
        rig.broker.send_signal(signal.SIGCONT)
        back = await rig.wait_for(lambda: rig.seen.first_after("decisions", end) is not None)
        report = await rig.finish("broker_frozen", recover_s=back - end)
    _check(report)


async def test_daemon_killed_and_restarted(tmp_path: Path) -> None:
    """SIGKILL mid-run, twice (more with a larger scale), at moments that do not line up
    with the poll cycle: each restart resumes from the journal and the PLC rings."""
    kills = max(2, round(2 * SCALE))
    async with FaultRig(tmp_path).running() as rig:
        assert rig.daemon is not None
        rig.start_traffic(_traffic_s() + kills * 3.0)
        await asyncio.sleep(scaled(LEAD_S))
        recover: list[float] = []
        for i in range(kills):
            rig.daemon.kill(signal.SIGKILL)
            assert await rig.daemon.wait(10) == -signal.SIGKILL
            end = await _after(0.5 + 0.37 * i)
            await rig.daemon.start()

            def online_again(since_s: float = end) -> bool:
                times = rig.seen.received_s.get("status", [])
                last = rig.seen.last("status")
                return bool(times) and times[-1] >= since_s and last["state"] == "online"

            recover.append(await rig.wait_for(online_again, 60) - end)
            await asyncio.sleep(1.3 + 0.29 * i)  # under traffic again before the next kill
        report = await rig.finish(f"daemon_killed_x{kills}", recover_s=max(recover))
    _check(report)


async def test_sigterm_while_the_broker_is_down(tmp_path: Path) -> None:
    """Graceful stop with nowhere to publish: exit 0 within the flush bound, what was not
    sent stays in the journal and goes out, with its ids, after the next start."""
    async with FaultRig(tmp_path).running() as rig:
        assert rig.daemon is not None
        rig.start_traffic(_traffic_s())
        await asyncio.sleep(scaled(LEAD_S))
        await rig.broker.stop()
        await asyncio.sleep(1.0)  # decisions pile up in the outbox
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        rig.daemon.kill(signal.SIGTERM)
        assert await rig.daemon.wait(30) == 0
        stop_s = loop.time() - t0
        assert stop_s < 10.0, f"graceful stop took {stop_s:.1f} s"
        await rig.broker.start()
        end = loop.time()
        await rig.daemon.start()
        back = await rig.wait_for(lambda: rig.seen.first_after("decisions", end) is not None, 60)
        report = await rig.finish("sigterm_broker_down", recover_s=back - end)
    _check(report)
    journal_log = (tmp_path / "daemon.log").read_text()
    assert "journal recovered" in journal_log


async def test_plc_link_down(tmp_path: Path) -> None:
    async with FaultRig(tmp_path).running() as rig:
        rig.start_traffic(_traffic_s())
        await asyncio.sleep(scaled(LEAD_S))
        await rig.line.plc.stop()  # the Modbus server goes: sockets closed, port refused
        await rig.wait_for(lambda: _device_down_seen(rig, "plc"))
        end = await _after(scaled(FAULT_S))
        await rig.line.plc.start()
        back = await rig.wait_for(lambda: _device_back(rig, "plc", end))
        report = await rig.finish("plc_link_down", recover_s=back - end)
    _check(report)


async def test_plc_heartbeat_frozen(tmp_path: Path) -> None:
    async with FaultRig(tmp_path).running() as rig:
        rig.start_traffic(_traffic_s())
        await asyncio.sleep(scaled(LEAD_S))
        rig.line.plc.freeze_heartbeat(True)
        await rig.wait_for(lambda: _device_down_seen(rig, "plc"))
        end = await _after(scaled(FAULT_S))
        rig.line.plc.freeze_heartbeat(False)
        back = await rig.wait_for(lambda: _device_back(rig, "plc", end))
        report = await rig.finish("plc_heartbeat_frozen", recover_s=back - end)
    _check(report)


async def test_plc_restarted_with_counters_reset(tmp_path: Path) -> None:
    async with FaultRig(tmp_path).running() as rig:
        rig.start_traffic(_traffic_s())
        await asyncio.sleep(scaled(LEAD_S))
        plc = rig.line.plc
        # What sits unread in the rings when the PLC restarts is gone with its memory of it.
        regs = await plc.read_registers(0, 15)
        await plc.stop()
        rig.unread_at_reset = ((regs[10] - regs[11]) % 65536) + ((regs[13] - regs[14]) % 65536)
        plc.reset_counters()
        end = await _after(scaled(FAULT_S) / 2)
        await plc.start()
        back = await rig.wait_for(lambda: _device_back(rig, "plc", end))
        report = await rig.finish("plc_restarted", recover_s=back - end)
    _check(report)


async def test_scanner_link_down(tmp_path: Path) -> None:
    async with FaultRig(tmp_path).running() as rig:
        assert rig.line.scanner is not None
        rig.start_traffic(_traffic_s())
        await asyncio.sleep(scaled(LEAD_S))
        await rig.line.scanner.stop()
        await rig.wait_for(lambda: _device_down_seen(rig, "tunnel-1"))
        end = await _after(scaled(FAULT_S))
        await rig.line.scanner.start()
        back = await rig.wait_for(lambda: _device_back(rig, "tunnel-1", end))
        report = await rig.finish("scanner_link_down", recover_s=back - end)
    _check(report)


async def test_scanner_flooding(tmp_path: Path) -> None:
    """Thousands of telegrams a second for ids no item has, garbage between them, and the
    real reads in the middle: counted, never fatal, never a wrong pairing."""
    async with FaultRig(tmp_path).running() as rig:
        scanner = rig.line.scanner
        assert scanner is not None
        rig.start_traffic(_traffic_s())
        await asyncio.sleep(scaled(LEAD_S))
        loop = asyncio.get_running_loop()
        end = loop.time() + scaled(FAULT_S)
        n = 0
        while loop.time() < end:
            for _ in range(40):
                n += 1
                tid = 4_000_000_000 + n % 100_000
                scanner.send_raw(b"\x02" + f"{tid}|RB{n % 10**8:08d}5GB".encode() + b"\x03")
                scanner.send_raw(b"\xff\x00garbage\x03\x02\x02|;;|\x03")
            await asyncio.sleep(0.01)
        report = await rig.finish("scanner_flood", recover_s=0.0)
    _check(report)
    assert n > 1000


@contextlib.contextmanager
def _small_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


async def test_journal_disk_full(tmp_path: Path) -> None:
    with _small_filesystem(tmp_path / "disk", "8m") as disk:
        env = {
            "SORTERD_JOURNAL_PATH": str(disk / "journal.sqlite"),
            "SORTERD_JOURNAL_MIN_FREE_MB": "1",
        }
        async with FaultRig(tmp_path / "rig", extra_env=env).running() as rig:
            rig.start_traffic(_traffic_s())
            await asyncio.sleep(scaled(LEAD_S))
            filler = _fill(disk)
            await rig.wait_for(lambda: _device_down_seen(rig, "journal"))
            assert "disk_low" in rig.seen.last("status").get("alarms", []) or _device_down_seen(
                rig, "journal"
            )
            end = await _after(scaled(FAULT_S))
            filler.unlink()
            back = await rig.wait_for(lambda: _device_back(rig, "journal", end))
            report = await rig.finish("journal_disk_full", recover_s=back - end)
    _check(report)
