"""The archive (docs/archive.md): ingest rate and lag of one `sorterd archive` process, and
trace and report times on a large generated table. Needs PostgreSQL and mosquitto
installed (a server and a broker are started in temp folders, as the tests do).

Ingest: `sorterd archive` (its own process) subscribes once, then stops; `messages`
decisions and results are published while it is away (mosquitto keeps them in its
persistent session), and it is started again: the rate is messages / the time from its
start until the last row is in the table, as a user sees a backlog drain after an outage.
Lag: 3 lines at `items_per_h` each publish decisions and results with the current time
for `lag_s` seconds while the archiver runs; the lag of a message is `archived_at - ts`
(the row's write time against the message's own time), p50/p99 over every message.
Trace: `rows` generated rows (half decisions, half results) over `days` daily partitions
(benchmarks/archive_gen.py: loaded day by day, the tables the same as an archiver makes;
the server's folder kept in a cache outside the repository and reused by a later run of
the same rows and days, which says "reused, generated at ..."; `--archive-fresh` makes it
again), then `sorterd trace`'s lookup (sorterd.trace.find) of random codes on one connection; the
same codes again at once (warm: their pages cached); and `cold` codes each on a server
just restarted with the database's files evicted from the page cache (cold: every page
read from disk, a new connection, as a `sorterd trace` after a quiet night). The search of
every partition without the codes table (`find(..., lookup=False)`, what trace did before
schema version 2) is measured beside it the same ways, alternately. Report: one day's
summary (sorterd.archive_report.query).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg

from benchmarks.archive_gen import Generated, generated_archive
from benchmarks.common import percentiles_us
from benchmarks.results import Section
from drivers.archive_db import SCHEMA
from drivers.broker import LocalBroker
from sorterd.archive_report import query
from sorterd.trace import find
from tests.archivekit import archive_site, wait_online
from tests.pgkit import ROLE_PASSWORD, PgServer, pg_server

__all__ = ["QUICK", "Options", "report", "run", "section_name"]

HUB = "bench/hub"


@dataclass(frozen=True, slots=True)
class Options:
    messages: int = 100_000
    lines: int = 3
    items_per_h: float = 40_000.0
    lag_s: float = 20.0
    rows: int = 5_000_000
    days: int = 30
    lookups: int = 300
    cold: int = 20  # cold lookups of each kind, a server restart each
    # False: only the trace and report figures (`--archive-trace-only`), in a section of
    # their own ("archive-trace"), e.g. at the 50,000,000 rows.
    ingest: bool = True
    # The generated archive kept in the cache and reused (benchmarks/archive_gen.py);
    # `fresh`: generated again even when a cached one fits (`--archive-fresh`).
    cache: bool = True
    fresh: bool = False


QUICK = Options(messages=10_000, lag_s=5.0, rows=200_000, days=5, lookups=50, cold=3, cache=False)


def _payloads(n: int, now: dt.datetime, line: int, start: int = 0) -> list[tuple[str, bytes]]:
    out = []
    for i in range(start, start + n):
        ts = (now + dt.timedelta(microseconds=i - start)).isoformat(timespec="milliseconds")
        code = f"RB{i:09d}MA"
        if i % 2 == 0:
            topic, body = f"{HUB}/line-{line}/decisions", {
                "id": f"d-bench-{line}-{i}", "ts": ts, "tracking_id": i, "seq": i % 65536,
                "codes": [code], "barcode": code, "destination": "CASA", "chute": i % 200,
                "reason": "ok", "recirculations": 0, "latency_ms": 0.2,
            }  # fmt: skip
        else:
            topic, body = f"{HUB}/line-{line}/results", {
                "id": f"r-bench-{line}-{i}", "ts": ts, "tracking_id": i, "seq": i % 65536,
                "barcode": code, "destination": "CASA", "chute_assigned": i % 200,
                "chute_actual": i % 200, "outcome": "sorted", "recirculations": 0,
            }  # fmt: skip
        out.append((topic, json.dumps(body).encode()))
    return out


async def _publish(port: int, messages: list[tuple[str, bytes]], window: int = 200) -> None:
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=window) as client:
        client.pending_calls_threshold = window * 4
        for i in range(0, len(messages), window):
            chunk = messages[i : i + window]
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in chunk))


def _count(url: str) -> int:
    with psycopg.connect(url, password=ROLE_PASSWORD) as conn:
        try:
            row = conn.execute(f"SELECT count(*) FROM {SCHEMA}.pieces").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


async def _archiver(site: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "SORTERD_ARCHIVE_PASSWORD": ROLE_PASSWORD, "SORTERD_LOG_LEVEL": "warning"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sorterd.cli", "archive", "-c", str(site), "--client-id", "bench",
        env=env,
    )  # fmt: skip


async def _stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 60)


async def _wait_rows(url: str, n: int, timeout_s: float, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while _count(url) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{_count(url)} of {n} rows archived in {timeout_s} s")
        await asyncio.sleep(every_s)


def _written(url: str, line: str) -> tuple[dt.datetime, dt.datetime]:
    """When the first and the last row of a line were written (their `archived_at`)."""
    with psycopg.connect(url, password=ROLE_PASSWORD) as conn:
        row = conn.execute(
            f"SELECT min(archived_at), max(archived_at) FROM {SCHEMA}.pieces WHERE line = %s",
            (line,),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


async def _ingest(opts: Options, url: str, broker: LocalBroker, folder: Path) -> dict[str, Any]:
    site = archive_site(folder, broker.url, url, [f"{HUB}/+"])
    proc = await _archiver(site)
    await wait_online(broker.port, HUB, "bench")
    await _stop(proc)
    now = dt.datetime.now(dt.UTC)
    backlog = _payloads(opts.messages, now, 0)
    await _publish(broker.port, backlog)
    started = dt.datetime.now(dt.UTC)
    proc = await _archiver(site)
    # The times are the rows' own (`archived_at`, the server's clock on this machine): the
    # wait polls seldom, so that counting the table takes no CPU from what is measured.
    await _wait_rows(url, opts.messages, 600, every_s=0.5)
    first, last = _written(url, f"{HUB}/line-0")
    drain_s = (last - started).total_seconds()
    steady_s = (last - first).total_seconds()
    # Lag: live traffic of `lines` lines while it runs.
    per_line_s = 2 * opts.items_per_h / 3600  # a decision and a result per item
    interval_s = 1 / (per_line_s * opts.lines)
    sent, i = 0, opts.messages
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        t_end = time.monotonic() + opts.lag_s
        next_at = time.monotonic()
        while time.monotonic() < t_end:
            line = sent % opts.lines + 1
            topic, payload = _payloads(1, dt.datetime.now(dt.UTC), line, i)[0]
            await client.publish(topic, payload, qos=1)
            sent, i = sent + 1, i + 1
            next_at += interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await _wait_rows(url, opts.messages + sent, 60)
    await _stop(proc)
    with psycopg.connect(url, password=ROLE_PASSWORD) as conn:
        lags = [
            float(r[0]) * 1e6
            for r in conn.execute(
                f"SELECT extract(epoch FROM archived_at - ts) FROM {SCHEMA}.pieces "
                "WHERE line <> %s",
                (f"{HUB}/line-0",),
            ).fetchall()
        ]
    return {
        "drain_s": drain_s,
        "ingest_per_s": opts.messages / drain_s,
        "startup_s": drain_s - steady_s,
        "steady_per_s": opts.messages / steady_s,
        "live_messages": sent,
        "lag_us": percentiles_us([int(x * 1000) for x in lags]),
    }


def _codes(opts: Options, rows: int, seed: int = 1) -> list[str]:
    """Codes of generated items: half barcodes, half a decision's other code."""
    rng = random.Random(seed)
    items = rows // 2
    return [
        f"RB{rng.randrange(items):09d}MA" if i % 2 else f"]C1{rng.randrange(items):018d}"
        for i in range(opts.lookups)
    ]


def _timed(
    conn: psycopg.Connection[tuple[Any, ...]], code: str, *, lookup: bool
) -> tuple[int, bool]:
    t0 = time.perf_counter_ns()
    found = bool(find(conn, code, lookup=lookup))
    return time.perf_counter_ns() - t0, found


def _lookups(url: str, opts: Options, rows: int, today: dt.date) -> dict[str, Any]:
    codes = _codes(opts, rows) + ["NOSUCHCODE"] * 10
    others = _codes(opts, rows, seed=2)  # not looked up before: as random as `codes`
    times, warm, found = [], [], 0
    scan, scan_warm = [], []
    # Never prepared, as in `sorterd trace` (one lookup a process): psycopg would prepare
    # the query from its fifth run on, and PostgreSQL then may pick a generic plan.
    with psycopg.connect(url, password=ROLE_PASSWORD, prepare_threshold=None) as conn:
        for i, code in enumerate(codes):
            took, hit = _timed(conn, code, lookup=True)
            times.append(took)
            found += hit
            warm.append(_timed(conn, code, lookup=True)[0])
            if i % 3 == 0 and i < len(others):  # every partition searched: a third as many
                scan.append(_timed(conn, others[i], lookup=False)[0])
                scan_warm.append(_timed(conn, others[i], lookup=False)[0])
        start = dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC)
        t0 = time.perf_counter_ns()
        summary = query(conn, start, start + dt.timedelta(days=1), "UTC")
        report_ns = time.perf_counter_ns() - t0
    return {
        "trace_us": percentiles_us(times[10:]),  # the first few warm the cache
        "trace_warm_us": percentiles_us(warm[10:]),
        "scan_us": percentiles_us(scan[4:]),
        "scan_warm_us": percentiles_us(scan_warm[4:]),
        "found": found,
        "report_s": report_ns / 1e9,
        "report_items": summary.total().items,
    }


def _evict(folder: Path) -> None:
    """The server's files out of the page cache (the server stopped): written back, then
    dropped, so the next read of each page is a disk read. Only these files: the machine's
    other caches stay as they are."""
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _cold(server: PgServer, url: str, opts: Options, rows: int) -> dict[str, Any]:
    """Lookups each on a server just restarted, its files evicted: with the codes table and
    without, alternately."""
    times: dict[bool, list[int]] = {True: [], False: []}
    codes = _codes(opts, rows)
    for i in range(2 * opts.cold):
        lookup = i % 2 == 0
        server.stop()
        _evict(server.data)
        server.start()
        with psycopg.connect(url, password=ROLE_PASSWORD, prepare_threshold=None) as conn:
            times[lookup].append(_timed(conn, codes[i], lookup=lookup)[0])
    return {
        "trace_cold_us": percentiles_us(times[True]),
        "scan_cold_us": percentiles_us(times[False]),
    }


def _run_ingest(opts: Options) -> dict[str, Any]:
    """Ingest and lag, on a server and broker of their own."""
    folder = Path(tempfile.mkdtemp(prefix="sorterd-bench-archive-"))
    try:
        with pg_server() as server:

            async def ingest() -> dict[str, Any]:
                async with LocalBroker(kind="mosquitto") as broker:
                    return await _ingest(opts, server.new_database(), broker, folder)

            return asyncio.run(ingest())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_trace(opts: Options) -> tuple[dict[str, Any], Generated]:
    """Trace and report on the generated archive: the cached one, or one made now."""
    root = None if opts.cache else Path(tempfile.mkdtemp(prefix="sorterd-bench-archive-"))
    try:
        with generated_archive(opts.rows, opts.days, root=root, fresh=opts.fresh) as (
            server,
            made,
        ):
            looked = _lookups(made.url, opts, made.rows, made.last)
            looked |= _cold(server, made.url, opts, made.rows) if opts.cold else {}
            looked["table_bytes"] = _table_bytes(made.url)
    finally:
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    return looked, made


def section_name(opts: Options) -> str:
    return "archive" if opts.ingest else "archive-trace"


def _table_bytes(url: str) -> int:
    with psycopg.connect(url, password=ROLE_PASSWORD) as conn:
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            (f"{SCHEMA}.pieces",),
        ).fetchone()
    return int(row[0] or 0) if row else 0


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    section = Section(params={
        "messages": opts.messages if opts.ingest else 0, "lines": opts.lines,
        "items_per_h": opts.items_per_h, "lag_s": opts.lag_s, "rows": opts.rows,
        "days": opts.days,
    })  # fmt: skip
    ingested = _run_ingest(opts) if opts.ingest else {}
    looked, made = _run_trace(opts)
    rows = made.rows
    section.details = {
        **ingested, **looked, "generate_s": made.generate_s, "rows_generated": made.rows,
        "generated_at": made.generated_at, "reused": made.reused, "origin": made.origin(),
        # The folder's name only: where the cache lives is the machine's business.
        "cache": made.folder.name if opts.cache else None,
    }  # fmt: skip
    if opts.ingest:
        section.add(
            "ingest", ingested["ingest_per_s"], "messages/s", "one archiver, a backlog drained",
            better="higher", target=">= 20,000",
        )  # fmt: skip
        section.add(
            "lag_p99", ingested["lag_us"]["p99"] / 1e6, "s",
            f"{opts.lines} lines x {opts.items_per_h:,.0f} items/h", better="lower",
            target="<= 2",
        )  # fmt: skip
    section.add(
        "trace_p50", looked["trace_us"]["p50"] / 1000, "ms", f"{rows:,} rows, p50",
        better="lower", target="",
    )  # fmt: skip
    section.add(
        "trace_p99", looked["trace_us"]["p99"] / 1000, "ms", f"{rows:,} rows, p99",
        better="lower", target="<= 50 (50 M rows)",
    )  # fmt: skip
    if opts.cold:
        cold = looked["trace_cold_us"]
        section.add(
            "trace_cold_p50", cold["p50"] / 1000, "ms", f"{rows:,} rows, p50, cold",
            better="lower", target="",
        )  # fmt: skip
        section.add(
            "trace_cold_p99", cold["p99"] / 1000, "ms", f"{rows:,} rows, p99, cold",
            better="lower", target="<= 50 (50 M rows)",
        )  # fmt: skip
    section.add("report_day", looked["report_s"], "s", "one day", better="lower", target="<= 5")
    return section


def report(section: Section) -> list[str]:
    p, r = section.params, section.details
    lines = []
    if p["messages"]:
        lines += [
            f"ingest: {p['messages']:,} messages in {r['drain_s']:.2f} s = "
            f"{r['ingest_per_s']:,.0f} messages/s (target >= 20,000); from the first row "
            f"{r['steady_per_s']:,.0f} messages/s (start {r['startup_s']:.2f} s)",
            f"lag at {p['lines']} lines x {p['items_per_h']:,.0f} items/h, "
            f"{r['live_messages']} messages: p50 {r['lag_us']['p50'] / 1e6:.3f} s, "
            f"p99 {r['lag_us']['p99'] / 1e6:.3f} s (target p99 <= 2 s)",
        ]
    fitted = "" if r["rows_generated"] == p["rows"] else f" (of {p['rows']:,} asked: the disk)"
    return [
        *lines,
        f"trace in {r['rows_generated']:,} rows{fitted} over {p['days']} days ({_origin(r)}, "
        f"{r['table_bytes'] / 2**30:.1f} GiB): p50 "
        f"{r['trace_us']['p50'] / 1000:.2f} ms, p99 {r['trace_us']['p99'] / 1000:.2f} ms "
        f"({r['found']} found)",
        *_kinds(r),
        f"report of one day ({r['report_items']:,} items): {r['report_s']:.2f} s (target <= 5 s)",
    ]


def _origin(r: dict[str, Any]) -> str:
    """Generated by this run, or reused from the cache (results before the cache: the
    former)."""
    origin = r.get("origin") or f"generated in {r['generate_s']:.0f} s"
    return f"{origin}; cache {r['cache']}" if r.get("cache") else str(origin)


def _kinds(r: dict[str, Any]) -> list[str]:
    """Trace warm and cold, and the search of every partition beside it (ms)."""

    def ms(key: str) -> str:
        t = r.get(key)
        return "-" if t is None else f"p50 {t['p50'] / 1000:.2f}, p99 {t['p99'] / 1000:.2f}"

    return [
        f"  with the codes table: warm {ms('trace_warm_us')} ms, cold {ms('trace_cold_us')} ms",
        f"  every partition searched (before): random {ms('scan_us')} ms, warm "
        f"{ms('scan_warm_us')} ms, cold {ms('scan_cold_us')} ms",
    ]
