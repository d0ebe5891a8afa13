"""Window matching end to end: heads without tracking id, through the real line and daemon.

Items 300 mm apart at 2.5 m/s (120 ms), inducted at the most the pitch allows; the heads
speak presets without tracking id (`lines`, `cognex`) over real TCP, the daemon reads the
real PLC simulator over Modbus TCP, the decisions come back over the real broker. The
ledger knows what each head sent for each item pass, so every decision is held against the
codes of exactly the telegrams of that pass: a read paired with a neighbour shows up as
codes on the wrong item, a reason `timeout` on an item that was read, or a counter that
disagrees.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from drivers.broker import LocalBroker, free_port
from drivers.telegram import get_format
from simulators.conveyor import ItemRecord, PassRecord
from simulators.line import DEMO_PARAMS, HeadSpec, SimulatedLine, simulate
from sorter.config import ConfigError, load_site, without_tracking_id
from sorter.tracker import Tracker
from sorterd.demo import write_site
from tests.linekit import PLAN_PATH, Subscriber, line_with_daemon, wait_until
from tests.test_tracker_window import MS, Driver, read, req

# 300 mm pitch at 2.5 m/s: one item every 120 ms at most. A short line after the tunnel
# (1.5 m to the first chute, 60 chutes 5 cm apart, a 6 m loop) so that a few hundred items
# drain in seconds; the decisions still have 600 ms to reach the PLC.
IDLESS_LINE = replace(
    DEMO_PARAMS,
    belt_speed_m_s=2.5,
    item_pitch_m=0.3,
    induct_to_scan_m=0.3,
    scan_to_first_chute_m=1.5,
    chute_pitch_m=0.05,
    loop_length_m=6.0,
)
MAX_RATE_PER_H = 3600 * IDLESS_LINE.belt_speed_m_s / IDLESS_LINE.item_pitch_m  # 30,000
# The default window (50 ms either side, 100 < 120 ms spacing) and merge window; a request
# waits long enough that a loaded machine does not turn reads into timeouts.
TRACKING = "\n[tracking]\nscan_wait_ms = 300\n"


def device(sub: Subscriber, name: str) -> dict[str, Any]:
    return sub.last(f"devices/{name}") or {}


def stats(sub: Subscriber) -> dict[str, Any]:
    return sub.last("stats") or {}


async def settle(rig: Any, count: int) -> None:
    """Every item drained, every decision and result on MQTT, a P/stats after the last."""
    line, daemon, sub = rig.line, rig.daemon, rig.sub
    assert await line.drain(60), line.ledger.summary()
    assert line.ledger.terminal.total() == count
    confirmations = sum(line.ledger.confirmations.values())
    await wait_until(
        lambda: (
            len(sub.of("results")) >= confirmations
            and len(sub.of("decisions")) >= daemon.pipeline.counters.decisions
        ),
        20,
    )
    await wait_until(lambda: stats(sub).get("decisions") == daemon.pipeline.counters.decisions, 10)


@dataclass(slots=True)
class Checked:
    passes: list[tuple[ItemRecord, PassRecord]]
    decisions: dict[tuple[int, int], dict[str, Any]]
    sent: Counter[str]  # telegrams per head the daemon could understand
    short: int  # decisions that lack the codes of a read the tracker dropped


def check_against_ledger(
    line: SimulatedLine,
    sub: Subscriber,
    st: dict[str, Any],
    heads: Collection[str],
    *,
    window: Collection[str],
) -> Checked:
    """Every decision carries the codes its own pass's telegrams carried, never a code of
    another item (codes are unique per item); items no head sent a telegram for are
    timeouts. P/stats agrees with the ledger, per head and in the tracker block.

    `heads`: those whose telegrams the daemon understands (a head of the wrong preset adds
    nothing). A read the tracker could not pair in time (a stall of this loaded test
    machine longer than the window) is dropped and counted as an orphan or late read, never
    given to a neighbour: only that many decisions may lack codes, and only lack them."""
    tracker, scanners = st["tracker"], st["scanners"]
    dropped = sum(scanners[name]["orphans"] + scanners[name]["late"] for name in heads)
    decisions = {(d["tracking_id"], d["seq"]): d for d in sub.of("decisions")}
    assert len(decisions) == len(sub.of("decisions"))  # one decision per request
    passes = [(rec, p) for rec in line.ledger.items for p in rec.passes]
    assert set(decisions) == {(rec.tracking_id, p.seq) for rec, p in passes}
    sent: Counter[str] = Counter()
    wrong, short = [], 0
    for rec, p in passes:
        assert p.reads is not None
        reads = {head: codes for head, codes in p.reads.items() if head in heads}
        sent.update(reads.keys())
        expected = list(dict.fromkeys(code for codes in reads.values() for code in codes))
        d = decisions[(rec.tracking_id, p.seq)]
        unread = d["reason"] in ("timeout", "max_recirc") and not d["codes"]
        if d["codes"] == expected and unread == (not reads):
            continue
        if reads and set(d["codes"]) <= set(expected):
            short += 1
            continue
        wrong.append((rec.index, p.seq, reads, d["codes"], d["reason"]))
    assert not wrong, f"{len(wrong)} wrong pairings, first: {wrong[:5]}"
    assert short <= dropped, (short, dropped)

    for name in heads:
        head = scanners[name]
        telegrams = sent[name]
        assert head["reads"] + head["noreads"] == telegrams, (name, str(head))
        assert head["matched"] + head["orphans"] + head["late"] == telegrams, (name, str(head))
        assert head["missed"] == len(passes) - head["matched"], (name, str(head))
        assert head["matching"] == ("window" if name in window else "tracking_id")
    no_telegram = sum(1 for _, p in passes if not set(p.reads or ()) & set(heads))
    assert no_telegram <= tracker["timeouts"] <= no_telegram + dropped
    assert tracker["matched"] + tracker["timeouts"] == len(passes)
    assert tracker["reads_orphaned"] == sum(scanners[name]["orphans"] for name in heads)
    assert tracker["reads_late"] == sum(scanners[name]["late"] for name in heads)
    assert tracker["window_matched"] == sum(
        telegrams - scanners[name]["orphans"] for name, telegrams in sent.items() if name in window
    )
    assert tracker["head_misses"] == sum(head["missed"] for head in scanners.values())
    return Checked(passes, decisions, sent, short)


# Three heads of one tunnel, both presets without tracking id, each missing some triggers
# outright (no telegram at all) and reading 85 % of what it sees: many items lack one
# head's read, some lack every head's, which is where a window too wide would pair a
# neighbour's read.
IDLESS_HEADS = [
    HeadSpec("top", read_rate=0.85, miss_rate=0.12, tunnel="t1", telegram_format="lines"),
    HeadSpec("side", read_rate=0.85, miss_rate=0.12, tunnel="t1", telegram_format="cognex"),
    HeadSpec("bottom", read_rate=0.85, miss_rate=0.12, tunnel="t1", telegram_format="lines"),
]


async def test_idless_tunnel_at_full_rate_pairs_every_read_with_its_item(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """240 items at 120 ms spacing; the bottom head is switched off halfway through and the
    two others keep the read rate up."""
    count = 240
    names = [h.name for h in IDLESS_HEADS]
    async with line_with_daemon(
        broker, tmp_path, params=IDLESS_LINE, seed=5, heads=IDLESS_HEADS, extra_config=TRACKING
    ) as rig:
        line, sub = rig.line, rig.sub
        await wait_until(lambda: all(device(sub, n).get("connected") for n in names), 10)
        run = asyncio.create_task(line.run(MAX_RATE_PER_H, count=count))
        await wait_until(lambda: line.ledger.inducted >= count // 2, 60)
        await line.kill_head("bottom")
        killed_at = line.ledger.inducted
        assert await run == count
        await settle(rig, count)
        await wait_until(lambda: device(sub, "bottom").get("connected") is False, 10)
        await wait_until(
            lambda: stats(sub).get("scanners", {}).get("bottom", {}).get("online") is False, 10
        )
        st = stats(sub)

    checked = check_against_ledger(line, sub, st, names, window=names)
    passes = checked.passes
    # The run has what makes window matching hard: items some head sent nothing for,
    # items no head sent anything for, and no-reads.
    assert sum(1 for _, p in passes if p.reads and len(p.reads) < 3) > 20
    assert sum(1 for _, p in passes if not p.reads) > 0
    assert sum(1 for _, p in passes if p.reads and not p.codes_read) > 5
    assert checked.sent["bottom"] > 0
    after = [(rec, p) for rec, p in passes if rec.index >= killed_at + 3]
    assert after
    assert all("bottom" not in (p.reads or {}) for _, p in after)
    # Two heads of three keep the read rate up: items carrying codes were read. Unless the
    # machine starved the daemon so that reads could belong to two items and were dropped
    # (sorter/tracker_window.py; 3 to 22 of about 700 at a load average of 7 to 12): then
    # only the checks above hold, never a neighbour's read.
    with_codes = [(rec, p) for rec, p in after if rec.item.codes]
    read = sum(1 for rec, p in with_codes if checked.decisions[(rec.tracking_id, p.seq)]["codes"])
    if st["tracker"]["reads_ambiguous"] == 0:
        assert read / len(with_codes) >= 0.85, (read, len(with_codes))
    assert st["scanners"]["top"]["online"] is True
    assert st["scanners"]["bottom"]["online"] is False


# One head reads by tracking id, two by window; all three merged per item.
MIXED_HEADS = [
    HeadSpec("top", read_rate=0.85, miss_rate=0.12, tunnel="t1", telegram_format="index"),
    HeadSpec("side", read_rate=0.85, miss_rate=0.12, tunnel="t1", telegram_format="lines"),
    HeadSpec("bottom", read_rate=0.85, miss_rate=0.12, tunnel="t1", telegram_format="cognex"),
]


async def test_mixed_tunnel_index_head_and_two_idless_heads(
    broker: LocalBroker, tmp_path: Path
) -> None:
    count = 60
    names = [h.name for h in MIXED_HEADS]
    async with line_with_daemon(
        broker, tmp_path, params=IDLESS_LINE, seed=8, heads=MIXED_HEADS, extra_config=TRACKING
    ) as rig:
        await wait_until(lambda: all(device(rig.sub, n).get("connected") for n in names), 10)
        assert await rig.line.run(MAX_RATE_PER_H, count=count) == count
        await settle(rig, count)
        st = stats(rig.sub)
    checked = check_against_ledger(rig.line, rig.sub, st, names, window=["side", "bottom"])
    passes = checked.passes
    assert sum(1 for _, p in passes if p.reads and "top" not in p.reads) > 3


# A good head, and two set up with another preset than the scanner speaks: the daemon
# expects `lines` from a scanner sending `index` (no line end: the frame only grows, and is
# dropped at max_frame_bytes), `index` from one sending `lines` (no STX: garbage), and
# `cognex` with a header from a Cognex sending none (bad telegrams).
WRONG_HEADS = [
    HeadSpec("good", read_rate=0.9, tunnel="t1", telegram_format="lines"),
    HeadSpec("sends-index", tunnel="t1", telegram_format="index"),
    HeadSpec("sends-lines", tunnel="t1", telegram_format="lines"),
    HeadSpec("sends-plain", tunnel="t1", telegram_format="cognex"),
]
WRONG_CONFIG = {"sends-index": "lines", "sends-lines": "index", "sends-plain": "cognex"}
WRONG_KEYS = {"sends-index": "max_frame_bytes = 64\n", "sends-plain": 'header = "["\n'}


async def test_heads_of_the_wrong_preset_add_nothing_and_are_counted(
    broker: LocalBroker, tmp_path: Path
) -> None:
    count = 30
    names = [h.name for h in WRONG_HEADS]
    async with line_with_daemon(
        broker,
        tmp_path,
        params=IDLESS_LINE,
        seed=9,
        heads=WRONG_HEADS,
        extra_config=TRACKING,
        formats=WRONG_CONFIG,
        scanner_keys=WRONG_KEYS,
    ) as rig:
        await wait_until(lambda: all(device(rig.sub, n).get("connected") for n in names), 10)
        assert await rig.line.run(MAX_RATE_PER_H, count=count) == count
        await settle(rig, count)
        st = stats(rig.sub)
        assert (rig.sub.last("status") or {}).get("state") == "online"  # never fatal
    checked = check_against_ledger(rig.line, rig.sub, st, ["good"], window=["good"])
    assert checked.sent["good"] == count
    scanners = st["scanners"]
    for name in WRONG_CONFIG:
        head = scanners[name]
        assert (head["reads"], head["noreads"], head["matched"]) == (0, 0, 0), str(head)
        assert head["missed"] == count, str(head)
    # One line that never ends: dropped from its 64th byte on, all of it garbage.
    assert scanners["sends-index"]["oversize_frames"] == 1
    assert scanners["sends-index"]["garbage_bytes"] > 64 * 10
    assert scanners["sends-lines"]["garbage_bytes"] > 0
    assert scanners["sends-plain"]["bad_telegrams"] == count
    assert scanners["good"]["garbage_bytes"] == scanners["good"]["bad_telegrams"] == 0


# --- found on the line, pinned with made-up clocks ------------------------------------------


def _unawaited_head_reads_before_request(tracking_id: bool) -> Driver:
    """Three heads; `c` missed three items in a row, so it is not awaited. Then all three
    heads read the next item before its request comes."""
    tracker = Tracker(200 * MS, 30_000 * MS, heads={"a": "t", "b": "t", "c": "t"})
    drv = Driver(tracker)
    for seq in range(1, 4):
        t = seq * 120 * MS
        drv.request(req(seq, t))
        for head in ("a", "b"):
            drv.scan(read(head, t + MS, f"X{seq}", tracking_id=seq if tracking_id else None))
    drv.advance(500 * MS)
    assert tracker.heads["c"].consecutive_misses == 3
    t = 600 * MS
    for head in ("a", "b", "c"):
        drv.scan(read(head, t - 2 * MS, "X4", f"C{head}", tracking_id=4 if tracking_id else None))
    drv.request(req(4, t))
    return drv


def test_reads_waiting_for_their_request_all_join_it_by_window() -> None:
    """Before the fix the item was decided as soon as `a` and `b` joined it, and `c`'s read,
    there all along, was counted late and dropped."""
    drv = _unawaited_head_reads_before_request(tracking_id=False)
    last = drv.decided[-1].match
    assert last.request.seq == 4
    assert [r.scanner for r in last.reads] == ["a", "b", "c"]
    assert last.scan is not None
    assert last.scan.codes == ("X4", "Ca", "Cb", "Cc")
    assert drv.tracker.stats.reads_late == 0
    assert drv.tracker.heads["c"].consecutive_misses == 0


def test_reads_waiting_for_their_request_all_join_it_by_tracking_id() -> None:
    drv = _unawaited_head_reads_before_request(tracking_id=True)
    last = drv.decided[-1].match
    assert [r.scanner for r in last.reads] == ["a", "b", "c"]
    assert drv.tracker.stats.reads_late == 0


def test_requests_closer_than_the_window_are_counted() -> None:
    """Items 80 ms apart with a 50 + 50 ms window: pairing may go by order only."""
    tracker = Tracker(200 * MS, 30_000 * MS, heads={"a": "t"})
    drv = Driver(tracker)
    drv.scan(read("a", 0, "X0"))  # the tracker learns `a` sends no tracking id
    for seq in range(1, 6):
        drv.request(req(seq, seq * 80 * MS))
    assert tracker.stats.requests_within_window == 4
    assert tracker.snapshot()["requests_within_window"] == 4


def _site(tmp_path: Path, tracking: str, formats: dict[str, str]) -> Path:
    return write_site(
        tmp_path,
        plc_port=5020,
        scanner_port=5021,
        mqtt_url="mqtt://127.0.0.1:1883",
        plan=PLAN_PATH,
        prefix="a/b",
        extra=tracking,
        scanners=[(name, 5021 + i, "t1") for i, name in enumerate(formats)],
        formats=formats,
    )


def test_a_window_as_wide_as_the_item_spacing_is_refused(tmp_path: Path) -> None:
    wide = "\n[tracking]\nitem_spacing_ms = 120\nwindow_before_ms = 60\nwindow_after_ms = 60\n"
    with pytest.raises(ConfigError) as err:
        load_site(_site(tmp_path, wide, {"top": "lines", "side": "index"}))
    (problem,) = err.value.problems
    assert problem.key == "tracking.window_after_ms"
    assert "120 ms" in problem.message
    assert "top" in problem.message
    assert "side" not in problem.message  # an index head is matched by tracking id
    # Narrower than the spacing, or no head without tracking id: fine.
    narrow = wide.replace("window_after_ms = 60", "window_after_ms = 59")
    assert load_site(_site(tmp_path, narrow, {"top": "lines"})).config.tracking.item_spacing_ms
    load_site(_site(tmp_path, wide, {"top": "index", "side": "datalogic"}))
    load_site(_site(tmp_path, wide.replace("item_spacing_ms = 120\n", ""), {"top": "lines"}))


def test_the_site_carries_each_heads_preset(tmp_path: Path) -> None:
    site = load_site(_site(tmp_path, "", {"top": "lines", "side": "cognex", "bottom": "index"}))
    assert [(s.name, s.format) for s in site.config.scanner] == [
        ("top", "lines"),
        ("side", "cognex"),
        ("bottom", "index"),
    ]
    assert [without_tracking_id(s) for s in site.config.scanner] == [True, True, False]


async def _telegrams(port: int, want: int) -> bytes:
    """Bytes from a scanner simulator's port until `want` line or frame ends came."""
    async with asyncio.timeout(20):
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)  # not listening yet
        data = b""
        try:
            while data.count(b"\n") + data.count(b"\x03") < want:
                data += await reader.read(4096)
        finally:
            writer.close()
            await writer.wait_closed()
    return data


async def test_simulate_line_serves_each_scanner_in_its_preset(tmp_path: Path) -> None:
    plc_port, *ports = (free_port() for _ in range(4))
    formats = {"top": "lines", "side": "cognex", "bottom": "index"}
    site = load_site(
        write_site(
            tmp_path,
            plc_port=plc_port,
            scanner_port=0,
            mqtt_url="mqtt://127.0.0.1:1883",
            plan=PLAN_PATH,
            prefix="a/b",
            scanners=[(name, port, "t1") for name, port in zip(formats, ports, strict=True)],
            formats=formats,
        )
    )
    task = asyncio.create_task(
        simulate("line", site, rate_per_h=36_000, duration_s=None, seed=1), name="simulate"
    )
    try:
        got = await asyncio.gather(*(_telegrams(port, 4) for port in ports))
    finally:
        os.kill(os.getpid(), signal.SIGINT)  # its own handler: stop serving
        assert await asyncio.wait_for(task, 20) == 0
    for (name, preset), data in zip(formats.items(), got, strict=True):
        fmt = get_format(preset)
        scan = fmt.scan_frames(data)
        telegrams = [fmt.parse_payload(frame.payload) for frame in scan.frames]
        assert len(telegrams) >= 3, (name, data)
        assert scan.garbage_bytes == 0, (name, data)
        assert all(t is not None for t in telegrams)
    assert b"\x02" not in got[0] + got[1]  # the id-less presets: plain lines
    assert b"\r\n" in got[1]  # cognex ends its lines with CR LF
    assert b"|" in got[2]  # index: the tracking id, then the codes
