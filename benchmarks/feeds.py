"""Live hub feeds at the hub's rate while the line runs (issue 14).

`sorterd run` as its own process against the simulated line (benchmarks/line.py's
machinery: the same belt, seed and broker), with a `[feeds]` table in its site; the feed
simulator, `sorterd simulate feeds` as its own process too (a publisher in this process
would slow the simulated PLC beside it), publishes through mosquitto at QoS 1 the line's
own pre-advice and customs stream, filled up with pre-advice of other lines' parcels to
`rows_per_s`, while the line inducts `rate_per_h`, for `duration_s`. Figures:

- rows/s achieved: rows the broker acknowledged over the streaming time (the target
  rate is what the publisher asks for; a slower broker or publisher shows here);
- apply lag (arrival -> applied) p50 and p99, the daemon's own figures from P/stats
  `feeds`: the last report, and the worst p99 reported during the run (goal p99 <= 100 ms);
- rows applied (P/stats) against rows published, after the stream ended (bounded wait);
- the line's request -> reply p99 as the PLC sees it, with the feeds running
  (goal <= 10 ms at 100,000 items/h), late replies, and the daemon's CPU share (the
  daemon's own process: its feeds worker, sorterd/feeds_worker.py, is another);
- large messages: the same line while a publisher process (this module's
  `--publish-large`) sends pre-advice messages near the 8 MiB limit, one every
  `large_every_s`: the line's p99 beside them, and how long the daemon took to apply them.

A daemon whose config has no `[feeds]` yet gets no `[feeds]` table: the stream then loads
the broker and the machine but not the daemon, and the apply figures are absent (the
section says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from asyncio.subprocess import Process
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from benchmarks.common import PLAN
from benchmarks.daemon import PREFIX, Observer, cpu_s, daemon_process, observing, wait_for
from benchmarks.line import PARAMS, latency_ms, ledger_figures
from benchmarks.results import Section, broker_info
from drivers.broker import LocalBroker
from simulators.line import SimulatedLine
from sorter.addresses import parse_mqtt_url
from sorter.plan import load_plan
from sorterd.demo import feeds_supported, write_site

__all__ = ["QUICK", "CpuWatch", "Options", "main", "publish_large", "report", "run"]

FEEDS = (f"{PREFIX}/feeds/preadvice", f"{PREFIX}/feeds/customs")
LAG_P99_GOAL_MS = 100.0
REPLY_P99_GOAL_MS = 10.0
APPLY_WAIT_S = 30.0
# The feed simulator's last line (sorterd/cli.py, simulate feeds).
_SUMMARY = re.compile(
    r"feeds: ([\d,]+) pre-advice rows \(([\d,]+) of other lines\), ([\d,]+) customs "
    r"decisions, ([\d,]+) bad rows, ([\d,]+) duplicate deliveries .*?; (\d+) reconnects"
)


@dataclass(frozen=True, slots=True)
class Options:
    rows_per_s: float = 50_000.0
    rate_per_h: float = 100_000.0
    duration_s: float = 30.0
    # Also the same line without the stream, in the same run: the line's p99 to compare.
    baseline: bool = True
    # Also the line beside large messages (0: not): bytes a message, one every so often.
    large_bytes: int = 7 << 20
    large_every_s: float = 5.0
    large_duration_s: float = 15.0


QUICK = Options(rows_per_s=5_000.0, duration_s=6.0, large_bytes=1 << 20, large_duration_s=6.0)
_LARGE_SUMMARY = re.compile(r"large: (\d+) messages, (\d+) rows, (\d+) bytes each")
_NO_STREAM = dict.fromkeys(("rows", "filler", "customs", "bad", "duplicates", "reconnects"), 0)


def _feeds_stats(stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s["feeds"] for s in stats if isinstance(s.get("feeds"), dict)]


async def _start_stream(opts: Options, folder: Path, broker: LocalBroker) -> Process:
    """`sorterd simulate feeds` as its own process, once it is about to publish."""
    site = folder / "feeds.toml"
    site.write_text(
        f'[mqtt]\nurl = "{broker.url}"\n[feeds]\npreadvice = "{FEEDS[0]}"\ncustoms = "{FEEDS[1]}"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sorterd.cli", "simulate", "feeds", "-c", str(site),
        "--rate", str(opts.rows_per_s), "--duration", str(opts.duration_s), "--seed", "5",
        "--items-rate", str(opts.rate_per_h),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "SORTERD_LOG_LEVEL": "warning"},
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        first = (await proc.stdout.readline()).decode()
    if not first.startswith("feeds: publishing"):
        raise RuntimeError(f"sorterd simulate feeds did not start: {first!r}")
    return proc


async def publish_large(url: str, topic: str, size: int, every_s: float, seconds: float) -> None:
    """Pre-advice messages of about `size` bytes (new barcodes and ids each), one every
    `every_s` for `seconds`, at QoS 1 (`python -m benchmarks.feeds --publish-large`)."""
    endpoint = parse_mqtt_url(url)
    row_bytes = len(json.dumps({"barcode": "LG0000000000", "country": "MA", "id": "lg0-0000000"}))
    per_message = size // (row_bytes + 2)
    sent = rows = length = 0
    async with aiomqtt.Client(endpoint.host, endpoint.port, identifier=f"large-{os.getpid()}") as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            payload = json.dumps([
                {"barcode": f"LG{sent:03d}{i:07d}", "country": "MA", "id": f"lg{sent}-{i:07d}"}
                for i in range(per_message)
            ]).encode()  # fmt: skip
            await c.publish(topic, payload, qos=1)
            sent, rows, length = sent + 1, rows + per_message, len(payload)
            await asyncio.sleep(max(0.0, every_s - (time.monotonic() - t)))
    print(f"large: {sent} messages, {rows} rows, {length} bytes each", flush=True)


async def _start_large(opts: Options, broker: LocalBroker) -> Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.feeds", "--publish-large", broker.url, FEEDS[0],
        str(opts.large_bytes), str(opts.large_every_s), str(opts.large_duration_s),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _large_counts(proc: Process) -> dict[str, int]:
    assert proc.stdout is not None
    async with asyncio.timeout(120):
        out = (await proc.stdout.read()).decode()
        await proc.wait()
    m = _LARGE_SUMMARY.search(out)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"the large-message publisher exited {proc.returncode}: {out!r}")
    return dict(zip(("messages", "rows", "bytes"), map(int, m.groups()), strict=True))


async def _stream_counts(proc: Process, t0: float) -> tuple[dict[str, int], float]:
    """What the feed simulator says the broker acknowledged, and its streaming seconds."""
    assert proc.stdout is not None
    async with asyncio.timeout(120):
        out = (await proc.stdout.read()).decode()
        await proc.wait()
    seconds = time.perf_counter() - t0
    m = _SUMMARY.search(out)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"sorterd simulate feeds exited {proc.returncode}: {out!r}")
    keys = ("rows", "filler", "customs", "bad", "duplicates", "reconnects")
    return {k: int(v.replace(",", "")) for k, v in zip(keys, m.groups(), strict=True)}, seconds


def _children(pid: int) -> list[int]:
    """A process's children (Linux: /proc/PID/task/PID/children); none when it has ended."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class CpuWatch:
    """CPU shares (of one core) of the processes around the daemon while the stream runs:
    the publisher, the broker and the daemon's feeds worker (its children but the daemon's
    own). Sampled every `every_s`: the publisher has ended (and been reaped) when the
    stream's figures are read, so its last sample is what it used."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.first: dict[str, tuple[float, float]] = {}
        self.last: dict[str, tuple[float, float]] = {}

    def _sample(self, pids: dict[str, list[int]]) -> None:
        now = time.perf_counter()
        for name, group in pids.items():
            used, read = 0.0, False
            for pid in group:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    used += cpu_s(pid)
                    read = True
            if read:  # an ended process keeps its last sample
                self.first.setdefault(name, (now, used))
                self.last[name] = (now, used)

    async def run(self, daemon_pid: int, publisher_pid: int | None) -> None:
        me = os.getpid()
        while True:
            self._sample({
                "worker": _children(daemon_pid),
                "broker": [p for p in _children(me) if _comm(p) == "mosquitto"],
                "publisher": [publisher_pid] if publisher_pid is not None else [],
            })  # fmt: skip
            await asyncio.sleep(self.every_s)

    def shares(self) -> dict[str, float]:
        out = {}
        for name, (t1, c1) in self.last.items():
            t0, c0 = self.first[name]
            if t1 > t0:
                out[name] = round((c1 - c0) / (t1 - t0), 3)
        return out


async def _applied(obs: Observer, published: int, timeout_s: float) -> bool:
    """Wait until P/stats shows every published row applied."""

    def done() -> bool:
        feeds = _feeds_stats(obs.stats)
        return bool(feeds) and feeds[-1].get("rows_applied", 0) >= published

    try:
        await wait_for(done, timeout_s)
    except TimeoutError:
        return False
    return True


async def _false() -> bool:
    return False


async def run_feeds(
    opts: Options, broker: LocalBroker, *, stream: bool = True, large: bool = False
) -> dict[str, Any]:
    """One run of the line with the daemon, with the feed stream, with large messages, or
    (baseline) without either."""
    plan = load_plan(PLAN)
    with_feeds = feeds_supported() and (stream or large)
    duration_s = opts.large_duration_s if large else opts.duration_s
    async with (
        SimulatedLine(sorted(plan.machine_chutes), params=PARAMS, seed=5) as line,
        observing(broker) as obs,
    ):
        assert line.scanner is not None
        assert line.scanner.port is not None
        with tempfile.TemporaryDirectory(prefix="sorterd-bench-feeds-") as tmp:
            site = write_site(
                Path(tmp),
                plc_port=line.plc.port,
                scanner_port=line.scanner.port,
                mqtt_url=broker.url,
                plan=PLAN,
                prefix=PREFIX,
                feeds=FEEDS if with_feeds else None,
            )
            async with daemon_process(site, obs) as daemon:
                await line.scanner.wait_for_clients(1)
                streaming = await _start_stream(opts, Path(tmp), broker) if stream else None
                big = await _start_large(opts, broker) if large else None
                cpu0, t_run = cpu_s(daemon.pid), time.perf_counter()
                watch = CpuWatch()
                watching = asyncio.create_task(
                    watch.run(daemon.pid, streaming.pid if streaming is not None else None)
                )
                inducted = await line.run(opts.rate_per_h, duration_s=duration_s)
                counts: dict[str, Any] = _NO_STREAM
                stream_s = 0.0
                if streaming is not None:
                    counts, stream_s = await _stream_counts(streaming, t_run)
                if big is not None:
                    large_counts = await _large_counts(big)
                    counts = {**_NO_STREAM, "rows": large_counts["rows"], "large": large_counts}
                    stream_s = time.perf_counter() - t_run
                # From the stream's end (its last PUBACK from the broker) to P/stats showing
                # every row applied: ~0 when the chain keeps up, the backlog's age when not.
                stream_end = time.perf_counter()
                backlog = counts["rows"] - (_feeds_stats(obs.stats) or [{}])[-1].get(
                    "rows_applied", 0
                )
                applying = asyncio.create_task(
                    _applied(obs, counts["rows"], APPLY_WAIT_S) if with_feeds else _false()
                )
                drained = await line.drain(60)
                cpu_share = (cpu_s(daemon.pid) - cpu0) / (time.perf_counter() - t_run)
                applied = await applying
                drain_s = time.perf_counter() - stream_end if applied else None
                watching.cancel()
                await asyncio.sleep(2.5)  # one more P/stats
    feeds = _feeds_stats(obs.stats)
    return {
        "with_feeds": with_feeds,
        "inducted": inducted,
        **ledger_figures(line.ledger, drained),
        "plc_latency_ms": latency_ms(line.ledger),
        "cpu_share": cpu_share,
        "cpu_shares": watch.shares(),
        "drain_s": drain_s,
        # Rows published and not applied when the stream ended (by a P/stats up to 2 s old).
        "backlog_rows": backlog if with_feeds else None,
        "published": counts,
        "stream_s": stream_s,
        "rows_per_s": counts["rows"] / stream_s if stream_s else 0.0,
        "all_applied": applied,
        "feeds_last": feeds[-1] if feeds else {},
        "lag_ms_p99_max": max((f.get("lag_ms_p99", 0) for f in feeds), default=None),
    }


async def _run_all(opts: Options) -> tuple[dict[str, Any], dict[str, str]]:
    async with LocalBroker() as broker:
        info = broker_info(broker.kind)
        row = await run_feeds(opts, broker)
        if opts.baseline:
            row["baseline"] = await run_feeds(opts, broker, stream=False)
        if opts.large_bytes:
            row["large"] = await run_feeds(opts, broker, stream=False, large=True)
        return row, info


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    row, broker = asyncio.run(_run_all(opts))
    section = Section(
        params={
            "rows_per_s": opts.rows_per_s,
            "rate_per_h": opts.rate_per_h,
            "duration_s": opts.duration_s,
            "belt_speed_m_s": PARAMS.belt_speed_m_s,
            "large_bytes": opts.large_bytes,
            "large_every_s": opts.large_every_s,
            "large_duration_s": opts.large_duration_s,
        },
        details={"broker": broker, "run": row},
    )
    section.add("rows_per_s", row["rows_per_s"], "rows/s", "rows acknowledged by the broker")
    last = row["feeds_last"]
    if row["with_feeds"] and last:
        goal = f"<= {LAG_P99_GOAL_MS:g} ms"
        section.add("lag_ms_p50", last.get("lag_ms_p50", 0), "ms", "apply lag p50 (P/stats)")
        section.add(
            "lag_ms_p99",
            last.get("lag_ms_p99", 0),
            "ms",
            "apply lag p99",
            better="lower",
            target=goal,
        )
        section.add(
            "lag_ms_p99_max", row["lag_ms_p99_max"] or 0, "ms", "worst p99 reported", better="lower"
        )
        section.add("rows_applied", last.get("rows_applied", 0), "items", "rows applied")
    lat = row["plc_latency_ms"]
    base = row.get("baseline")
    section.add(
        "plc_reply_ms_p99",
        lat["p99"],
        "ms",
        "line request -> reply p99",
        better="lower",
        target=f"<= {REPLY_P99_GOAL_MS:g} ms",
        baselines={"no_feeds": base["plc_latency_ms"]["p99"]} if base else None,
        baseline_labels={"no_feeds": "the line without the feeds"},
    )
    if big := row.get("large"):
        section.add(
            "plc_reply_ms_p99_large",
            big["plc_latency_ms"]["p99"],
            "ms",
            "line request -> reply p99 beside large messages",
            better="lower",
            target=f"<= {REPLY_P99_GOAL_MS:g} ms",
        )
    section.add("late_replies", row["late_replies"], "items", "late replies")
    section.add("cpu_share", row["cpu_share"] * 100, "% of a core", "daemon CPU", better="lower")
    return section


def report(section: Section) -> list[str]:
    p, row = section.params, section.details["run"]
    lat, last, pub = row["plc_latency_ms"], row["feeds_last"], row["published"]
    lines = [
        f"{p['rows_per_s']:,.0f} rows/s asked for {p['duration_s']:g} s while the line runs "
        f"{p['rate_per_h']:,.0f} items/h; broker {section.details['broker']['kind']}",
        f"published {pub['rows']:,} rows ({pub['filler']:,} filler), {pub['customs']:,} customs, "
        f"{pub['bad']} bad: {row['rows_per_s']:,.0f} rows/s achieved, "
        f"{pub['reconnects']} publisher reconnects",
        f"line: inducted {row['inducted']}, request -> reply ms p50/p99/max {lat['p50']:.2f} / "
        f"{lat['p99']:.2f} / {lat['max']:.2f} (goal p99 <= {REPLY_P99_GOAL_MS:g}), late "
        f"{row['late_replies']}, daemon CPU {row['cpu_share'] * 100:.0f} % of a core",
    ]
    if base := row.get("baseline"):
        b = base["plc_latency_ms"]
        lines.append(
            f"the same line without the feeds: request -> reply ms p50/p99/max {b['p50']:.2f} / "
            f"{b['p99']:.2f} / {b['max']:.2f}, late {base['late_replies']}, daemon CPU "
            f"{base['cpu_share'] * 100:.0f} %"
        )
    if not row["with_feeds"]:
        lines.append("daemon without [feeds]: the stream loaded the broker only; no apply figures")
    elif last:
        every = "all" if row["all_applied"] else "NOT ALL"
        lines.append(
            f"daemon: applied {last.get('rows_applied')} rows ({every}), lag ms p50/p99 "
            f"{last.get('lag_ms_p50')} / {last.get('lag_ms_p99')} (worst p99 "
            f"{row['lag_ms_p99_max']}; goal <= {LAG_P99_GOAL_MS:g}), delta rows "
            f"{last.get('delta_rows')}"
        )
    if shares := row.get("cpu_shares"):
        lines.append(_cpu_line(row, shares))
    if big := row.get("large"):
        lines.append(_large_line(p, big))
    return lines


def _cpu_line(row: dict[str, Any], shares: dict[str, float]) -> str:
    names = {"worker": "feeds worker", "publisher": "publisher", "broker": "mosquitto"}
    each = ", ".join(f"{names[k]} {v * 100:.0f} %" for k, v in shares.items() if k in names)
    drain = row.get("drain_s")
    after = "not all within 30 s" if drain is None else f"{drain:.1f} s"
    backlog = row.get("backlog_rows")
    behind = "" if backlog is None else f"{backlog:,} rows not applied at the stream's end, "
    return (
        f"CPU (% of a core) daemon {row['cpu_share'] * 100:.0f} %, {each}; {behind}"
        f"from the stream's end to P/stats showing every row applied: {after} "
        "(P/stats every 2 s)"
    )


def _large_line(p: dict[str, Any], big: dict[str, Any]) -> str:
    lat, last, sent = big["plc_latency_ms"], big["feeds_last"], big["published"]["large"]
    every = "all" if big["all_applied"] else "NOT ALL"
    return (
        f"large messages: {sent['messages']} of {sent['bytes']:,} bytes ({sent['rows']:,} rows), "
        f"one every {p['large_every_s']:g} s: line request -> reply ms p50/p99/max "
        f"{lat['p50']:.2f} / {lat['p99']:.2f} / {lat['max']:.2f}, late {big['late_replies']}; "
        f"applied {last.get('rows_applied')} rows ({every}), lag ms p50/p99 "
        f"{last.get('lag_ms_p50')} / {last.get('lag_ms_p99')}"
    )


def main() -> int:
    if sys.argv[1:2] == ["--publish-large"]:
        url, topic, size, every, seconds = sys.argv[2:7]
        asyncio.run(publish_large(url, topic, int(size), float(every), float(seconds)))
        return 0
    print("\n".join(report(run(QUICK if "--quick" in sys.argv else Options()))))
    print("(no results file: `python -m benchmarks --only feeds` writes one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
