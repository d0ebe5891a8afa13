"""Every telegram preset end to end: ScannerSimulator -> TCP or pty -> the real StreamScanner."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from drivers.scanner import StreamScanner
from drivers.telegram import FORMATS, TelegramFormat, format_from_options
from simulators.scanner import ScannerSimulator
from simulators.telegrams import TelegramEncoder
from sorter.ports import ScanRead
from sorter.telegram_options import PRESET_DEFAULTS, TelegramOptions, problems, resolve
from sorterd.demo import demo_config_dir
from tests.waiting import wait_until

TIMEOUT_S = 10.0  # generous bound for every wait; passing runs take milliseconds


def _custom_options() -> TelegramOptions:
    given = {
        "start": "<",
        "end": ">\r\n",
        "pattern": r"ID=(?P<tracking_id>\d+) CODES=(?P<codes>.*)",
        "template": "ID={tracking_id} CODES={codes}",
        "heartbeat": "PING",
    }
    options = resolve("custom", given)
    assert problems(options, set(given)) == []
    return options


def _custom() -> TelegramFormat:
    return format_from_options(_custom_options())


PRESETS: dict[str, Callable[[], TelegramFormat]] = {
    name: (lambda name=name: FORMATS[name]) for name in FORMATS
}
PRESETS["custom"] = _custom
# What the simulator is given for each preset: the same settings, as the site config has them.
SIM_OPTIONS: dict[str, TelegramOptions] = {name: PRESET_DEFAULTS[name] for name in FORMATS}
SIM_OPTIONS["custom"] = _custom_options()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def consuming(
    url: str, fmt: TelegramFormat, **kwargs: float
) -> AsyncIterator[tuple[StreamScanner, asyncio.Queue[ScanRead]]]:
    scanner = StreamScanner(
        "tunnel-1", url, telegram_format=fmt, backoff_initial_s=0.01, backoff_cap_s=0.05, **kwargs
    )
    queue: asyncio.Queue[ScanRead] = asyncio.Queue()

    async def consume() -> None:
        async for read in scanner.reads():
            queue.put_nowait(read)

    async with scanner:
        task = asyncio.create_task(consume(), name="consume tunnel-1")
        try:
            yield scanner, queue
        except BaseException:
            failure = task.exception() if task.done() and not task.cancelled() else None
            if failure is not None:
                raise failure from None  # the consumer's failure explains the test's
            task.cancel()
            raise
    async with asyncio.timeout(TIMEOUT_S):
        await task


def _sent_id(fmt: TelegramFormat | TelegramEncoder, tracking_id: int) -> int | None:
    return tracking_id if fmt.carries_tracking_id else None


async def _exchange(
    sim: ScannerSimulator, scanner: StreamScanner, q: asyncio.Queue[ScanRead]
) -> None:
    """Reads, a no-read, a heartbeat and line noise between telegrams, in one go."""
    fmt = sim.format
    await wait_until(lambda: scanner.connected)
    if sim.port is not None and sim.pty_path is None:
        await sim.wait_for_clients(1)
    assert sim.send_read(4711, ["RB123456785GB", "]C1\x1d00061110", "RB123456785GB"])
    if fmt.encode_heartbeat() is not None:
        assert sim.send_heartbeat()
    assert sim.send_read(4712, [])
    assert sim.send_read(4713, ["1Z999AA10123456784"])
    reads = [await q.get() for _ in range(3)]
    assert [(r.tracking_id, r.codes) for r in reads] == [
        (_sent_id(fmt, 4711), ("RB123456785GB", "]C1\x1d00061110")),
        (_sent_id(fmt, 4712), ()),
        (_sent_id(fmt, 4713), ("1Z999AA10123456784",)),
    ]
    assert all(r.scanner == "tunnel-1" for r in reads)
    stats = scanner.stats
    heartbeats = 1 if fmt.encode_heartbeat() is not None else 0
    await wait_until(lambda: stats.heartbeats == heartbeats)
    assert (stats.reads, stats.noreads, stats.bad_telegrams) == (2, 1, 0)
    assert q.empty()


@pytest.mark.parametrize("preset", PRESETS)
async def test_each_preset_over_tcp(preset: str) -> None:
    fmt = PRESETS[preset]()
    sim = ScannerSimulator(telegram_format=SIM_OPTIONS[preset])
    async with sim, consuming(sim.tcp_url, fmt) as (scanner, queue):
        async with asyncio.timeout(TIMEOUT_S):
            await _exchange(sim, scanner, queue)
        assert scanner.errors == 0


@pytest.mark.parametrize("preset", PRESETS)
async def test_each_preset_over_a_pty(preset: str) -> None:
    fmt = PRESETS[preset]()
    sim = ScannerSimulator(port=None, pty=True, telegram_format=SIM_OPTIONS[preset])
    async with sim:
        assert sim.pty_path is not None
        url = f"serial://{sim.pty_path}?baudrate=115200"
        async with consuming(url, fmt) as (scanner, queue):
            async with asyncio.timeout(TIMEOUT_S):
                await _exchange(sim, scanner, queue)


@pytest.mark.parametrize("preset", PRESETS)
async def test_periodic_heartbeats_only_where_the_preset_has_them(preset: str) -> None:
    fmt = PRESETS[preset]()
    sim = ScannerSimulator(telegram_format=SIM_OPTIONS[preset], heartbeat_interval_s=0.01)
    if fmt.encode_heartbeat() is None:
        assert sim.heartbeat_interval_s is None
        with pytest.raises(ValueError, match="no heartbeat"):
            sim.send_heartbeat()
        return
    async with sim, consuming(sim.tcp_url, fmt) as (scanner, queue):
        async with asyncio.timeout(TIMEOUT_S):
            await wait_until(lambda: scanner.stats.heartbeats >= 3)
        assert scanner.last_seen_ns is not None
        assert queue.empty()


@pytest.mark.parametrize("preset", PRESETS)
async def test_a_frame_cut_by_a_reconnect_is_dropped(preset: str) -> None:
    fmt = PRESETS[preset]()
    sim = ScannerSimulator(telegram_format=SIM_OPTIONS[preset])
    async with sim, consuming(sim.tcp_url, fmt) as (scanner, queue):
        async with asyncio.timeout(TIMEOUT_S):
            await wait_until(lambda: scanner.connected)
            await sim.wait_for_clients(1)
            whole = fmt.encode_read(_sent_id(fmt, 99), ["PARTCODE"])
            cut = len(whole) // 2
            sim.send_raw(whole[:cut])  # the scanner dies in the middle of a telegram
            await wait_until(lambda: scanner.buffered_bytes == cut)
            await sim.stop()
            await wait_until(lambda: not scanner.connected)
            assert scanner.stats.garbage_bytes == cut
            await sim.start()
            await wait_until(lambda: scanner.connected)
            await sim.wait_for_clients(1)
            framer = getattr(fmt, "framer", None)
            if framer is None or framer.start:
                # The rest must not complete the cut frame. (Without a start delimiter the
                # tail of a line looks like a whole line: only its head can be dropped.)
                sim.send_raw(whole[cut:])
            sim.send_read(3, ["B"])  # not glued to the head of the cut frame
            read = await queue.get()
        assert (read.tracking_id, read.codes) == (_sent_id(fmt, 3), ("B",))
        assert queue.empty()
        assert scanner.stats.reads == 1  # PARTCODE never came out


@pytest.mark.parametrize("receiver", PRESETS)
async def test_a_scanner_set_to_another_preset(receiver: str) -> None:
    """Telegrams of every other preset: counted, never fatal, never a read with an id."""
    fmt = PRESETS[receiver]()
    sim = ScannerSimulator(telegram_format=SIM_OPTIONS[receiver])
    async with sim, consuming(sim.tcp_url, fmt) as (scanner, queue):
        async with asyncio.timeout(TIMEOUT_S):
            await wait_until(lambda: scanner.connected)
            await sim.wait_for_clients(1)
            for name, make in PRESETS.items():
                if name == receiver:
                    continue
                other = make()
                for tracking_id in (10, 11):
                    sim.send_raw(other.encode_read(_sent_id(other, tracking_id), ["RB123456785GB"]))
            sim.send_read(77, ["GOOD"])  # after all that, the link still works
            reads = []
            while not reads or reads[-1].codes != ("GOOD",):
                reads.append(await queue.get())
        assert (reads[-1].tracking_id, reads[-1].codes) == (_sent_id(fmt, 77), ("GOOD",))
        for read in reads[:-1]:
            assert read.tracking_id is None  # a foreign telegram never carries a wrong id
        stats = scanner.stats
        assert stats.bad_telegrams + stats.garbage_bytes + stats.oversize_frames > 0
        assert scanner.errors == 0
        assert scanner.connected


@pytest.mark.parametrize("preset", PRESETS)
async def test_wrong_baud_rate_garbage_over_a_pty(preset: str) -> None:
    """Random bytes, as a serial line at the wrong baud rate delivers, then a fixed line."""
    fmt = PRESETS[preset]()
    sim = ScannerSimulator(port=None, pty=True, telegram_format=SIM_OPTIONS[preset])
    rng = random.Random(5)
    sent: set[tuple[int | None, tuple[str, ...]]] = set()
    async with sim:
        assert sim.pty_path is not None
        async with consuming(sim.pty_path, fmt) as (scanner, queue):
            async with asyncio.timeout(TIMEOUT_S):
                await wait_until(lambda: scanner.connected)
                for i in range(40):
                    sim.send_raw(rng.randbytes(rng.randint(1, 300)))
                    code = f"RB{i:09d}GB"
                    sim.send_read(1000 + i, [code])
                    sent.add((_sent_id(fmt, 1000 + i), (code,)))
                # The garbage stops (baud rate fixed): what follows comes through whole.
                end = getattr(fmt, "framer", None)
                sim.send_raw(end.end if end is not None else b"\x03")
                sim.send_read(5000, ["LAST"])
                reads = []
                while not reads or reads[-1].codes != ("LAST",):
                    reads.append(await queue.get())
        for read in reads[:-1]:
            if read.tracking_id is not None:
                # With an id, a read is one that was sent, never garbage with a wrong id.
                assert (read.tracking_id, read.codes) in sent
        assert reads[-1].tracking_id == _sent_id(fmt, 5000)
        stats = scanner.stats
        assert stats.garbage_bytes + stats.bad_telegrams + stats.oversize_frames > 0
        assert scanner.errors == 0


@pytest.mark.parametrize("preset", ["sick", "lines", "custom"])
async def test_a_flooding_scanner(preset: str) -> None:
    """Thousands of telegrams at once, each followed by a bad one: all counted, one log line."""
    fmt = PRESETS[preset]()
    count = 4000
    bad_frame = {
        "sick": b"\x02\x01\x03",  # a control byte in the code
        "lines": b"A\x01B\n",
        "custom": b"<no match here>\r\n",
    }[preset]
    sim = ScannerSimulator(telegram_format=SIM_OPTIONS[preset], max_buffer_bytes=1 << 24)
    with capture_logs() as logs:
        async with (
            sim,
            consuming(sim.tcp_url, fmt, garbage_log_interval_s=3600.0) as (scanner, queue),
        ):
            async with asyncio.timeout(TIMEOUT_S * 3):
                await wait_until(lambda: scanner.connected)
                await sim.wait_for_clients(1)
                stream = b"".join(
                    fmt.encode_read(_sent_id(fmt, i), [f"C{i}"]) + bad_frame for i in range(count)
                )
                assert sim.send_raw(stream)
                await wait_until(lambda: scanner.stats.reads == count)
            got = [queue.get_nowait() for _ in range(count)]
        assert [r.codes for r in got] == [(f"C{i}",) for i in range(count)]
        assert scanner.stats.bad_telegrams == count
        assert scanner.errors == 0
    warnings = [e for e in logs if e["event"] == "scanner sent garbage"]
    assert len(warnings) == 1  # bounded: 4000 bad telegrams, one line per interval
    assert warnings[0]["bad_telegrams"] >= 1
    assert warnings[0]["last_bad_telegram"]


# --- the command line -----------------------------------------------------------------------


def _site(tmp_path: Path, port: int, scanner_lines: str = 'format = "index"') -> Path:
    text = (demo_config_dir() / "site.toml").read_text()
    (tmp_path / "sortplan.toml").write_text((demo_config_dir() / "sortplan.toml").read_text())
    text = text.replace('format = "index"', scanner_lines, 1)
    text = text.replace("tcp://127.0.0.1:5021", f"tcp://127.0.0.1:{port}", 1)
    site = tmp_path / "site.toml"
    site.write_text(text)
    return site


async def test_simulate_scanner_with_another_format(tmp_path: Path) -> None:
    port = free_port()
    site = _site(tmp_path, port)
    assert f"127.0.0.1:{port}" in site.read_text()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sorterd.cli", "simulate", "scanner", "-c", str(site),
        "--format", "cognex", "--rate", "36000", "--duration", "20",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with consuming(f"tcp://127.0.0.1:{port}", FORMATS["cognex"]) as (scanner, queue):
            async with asyncio.timeout(TIMEOUT_S * 2):
                reads = [await queue.get() for _ in range(3)]
            assert all(r.tracking_id is None for r in reads)  # cognex carries no id
            assert scanner.stats.bad_telegrams == 0
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT_S):
            _, stderr = await proc.communicate()
    assert b"Traceback" not in stderr


async def test_simulate_custom_without_a_template_is_a_clear_error(tmp_path: Path) -> None:
    site = _site(tmp_path, free_port(), 'format = "custom"\npattern = "(?P<codes>.*)"')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sorterd.cli", "simulate", "scanner", "-c", str(site),
        "--duration", "1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(TIMEOUT_S * 2):
        _, stderr = await proc.communicate()
    assert proc.returncode == 1
    assert b"Traceback" not in stderr
    assert b"template: needed to simulate format custom" in stderr


async def test_check_config_lists_every_telegram_problem(tmp_path: Path) -> None:
    site = _site(
        tmp_path,
        free_port(),
        'format = "custom"\npattern = "(?P<codes>.*"\nheader = "H"\nend = ""',
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sorterd.cli", "check-config", "-c", str(site),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(TIMEOUT_S * 2):
        _, raw = await proc.communicate()
    stderr = raw.decode()
    assert proc.returncode == 1
    assert "Traceback" not in stderr
    assert "scanner[0].pattern: invalid regular expression: missing )" in stderr, stderr
    assert "scanner[0].header: not a key of format 'custom'" in stderr
    assert "scanner[0].end: must not be empty" in stderr
    assert "3 problem(s) found" in stderr
