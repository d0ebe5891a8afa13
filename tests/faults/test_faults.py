"""Each fault of issue 6, injected for real into a line running at 20,000 items/h.

Every test: traffic starts, the fault comes after `LEAD_S`, lasts `FAULT_S`, and the line
runs on `TAIL_S` after it; then the line drains and the ledger is held against what reached
the broker (tests/faults/harness.py). Those sleeps are the scenario (how long a fault
lasts), not a wait for something to happen. Recovery time is measured from the end of the
fault to the sign, on MQTT, that the part is back: reported, never asserted (a loaded
machine recovers later; BENCHMARKS.md has figures). SORTERD_FAULT_SCALE stretches every
duration.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.faults.harness import REPORTS, SCALE, FaultRig, Report, print_report, scaled

LEAD_S = 3.0
FAULT_S = 4.0
TAIL_S = 4.0

pytestmark = [
    pytest.mark.requires("mosquitto"),  # the fault suite stops, freezes and restarts it
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
    """The fault lasts `seconds` (the scenario); the loop time when it ends."""
    await asyncio.sleep(seconds)
    return asyncio.get_running_loop().time()


async def _decisions_made(rig: FaultRig, count: int) -> None:
    """Wait until the daemon has answered `count` more requests (the PLC took the replies
    in): it is sorting, whatever MQTT shows."""
    plc = rig.line.plc
    before = plc.stats.replies_read
    await rig.wait_for(lambda: plc.stats.replies_read >= before + count, what="replies")


def _device_back(rig: FaultRig, name: str, since_s: float) -> bool:
    got = rig.seen.of(f"devices/{name}")
    times = rig.seen.received_s.get(f"devices/{name}", [])
    return any(t >= since_s and m.get("connected") is True for m, t in zip(got, times, strict=True))


def _head_reads(rig: FaultRig) -> int:
    """Read telegrams (with codes) the scanner heads counted, by the last P/stats."""
    scanners = rig.seen.last("stats").get("scanners", {})
    return sum(head.get("reads", 0) for head in scanners.values())


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
            await _decisions_made(rig, 3)  # the new process sorts
            # Under traffic a while before the next kill, at a moment that does not line up
            # with the poll cycle (the scenario).
            await asyncio.sleep(1.3 + 0.29 * i)
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
        await _decisions_made(rig, 5)  # decisions pile up in the outbox
        rig.daemon.kill(signal.SIGTERM)
        # It stops although nothing can be sent: the flush gives up after its bound.
        assert await rig.daemon.wait(60) == 0
        assert [e.get("flushed") for e in rig.daemon.log_events("sorterd stopped")] == [False]
        await rig.broker.start()
        end = asyncio.get_running_loop().time()
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
        reads_before = _head_reads(rig)
        n = delivered = 0
        # 40 telegrams every 10 ms for FAULT_S (the scenario; a slow machine sends them
        # more slowly, and the count is the same).
        for _ in range(round(scaled(FAULT_S) / 0.01)):
            for _ in range(40):
                n += 1
                tid = 4_000_000_000 + n % 100_000
                flood = b"\x02" + f"{tid}|RB{n % 10**8:08d}5GB".encode() + b"\x03"
                delivered += scanner.send_raw(flood)
                scanner.send_raw(b"\xff\x00garbage\x03\x02\x02|;;|\x03")
            await asyncio.sleep(0.01)
        assert delivered > n // 2, (delivered, n)  # the link took most: the daemon read them
        # Each flood telegram that reached the daemon is counted as a read of the head.
        await rig.wait_for(
            lambda: _head_reads(rig) >= reads_before + delivered,
            what=f"{delivered} flood telegrams counted on P/stats",
        )
        report = await rig.finish("scanner_flood", recover_s=0.0)
    _check(report)


def _alarms(rig: FaultRig) -> list[str]:
    alarms: list[str] = rig.seen.last("status").get("alarms", [])
    return alarms


@pytest.mark.requires("full-disk")
async def test_journal_disk_full(tmp_path: Path) -> None:
    """The journal's disk is full: no write into it succeeds, and none is needed to go on.

    Injected without root: the daemon's RLIMIT_FSIZE is lowered to 0 from outside
    (prlimit(2) on our own child needs no privilege), so the kernel fails every write into
    any of its files with EFBIG, as a full disk fails writes that need space with ENOSPC.
    Its log goes through a pipe (harness.DaemonProcess): the journal is its only file. A
    small file system (tmpfs, an image through FUSE) needs mount(8) and root, or FUSE that
    CI machines seldom offer; SQLite's max_page_count would be SQLite refusing, not the
    disk. What this does not show: SQLite reports an I/O error here where a full disk gives
    SQLITE_FULL (the journal handles every write error the same), and free space looks
    plentiful to statvfs, so the disk_low alarm is not part of this fault.
    """
    async with FaultRig(tmp_path).running() as rig:
        daemon = rig.daemon
        assert daemon is not None
        rig.start_traffic(_traffic_s())
        await asyncio.sleep(scaled(LEAD_S))
        assert "journal_error" not in _alarms(rig)
        assert not _device_down_seen(rig, "journal")
        # Ignored, the kernel sends SIGXFSZ and the write fails; else the signal kills it.
        assert daemon.ignores_sigxfsz()
        daemon.limit_file_size(0)
        await rig.wait_for(lambda: _device_down_seen(rig, "journal"), what="journal down")
        await rig.wait_for(lambda: "journal_error" in _alarms(rig), what="journal_error alarm")
        await _decisions_made(rig, 10)  # sorting goes on, the messages in memory
        end = await _after(scaled(FAULT_S))
        daemon.limit_file_size(None)
        back = await rig.wait_for(lambda: _device_back(rig, "journal", end), what="journal back")
        await rig.wait_for(lambda: "journal_error" not in _alarms(rig), what="alarm cleared")
        report = await rig.finish("journal_disk_full", recover_s=back - end)
    _check(report)
    failed = daemon.log_events("journal write failed")
    assert failed, "no journal write failed: the fault did not happen"
