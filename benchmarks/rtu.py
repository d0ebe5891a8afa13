"""Modbus RTU: `sorterd run` against the simulated PLC on a pty wire paced at the baud rate.

The PLC simulator serves Modbus RTU on the pty pair of `simulators/serial_wire.py`, which
delivers bytes at the line's baud rate (8N1: parity cannot be set on a pty here; no PLC
turnaround). The daemon is its own process with `plc.url = rtu:///dev/pts/N?baudrate=...`,
as `sorterd simulate plc --rtu pty` would print it. Per baud rate:

- latency: the simulated line (demo geometry, 2.5 m/s) at 20,000 items/h; request (on the
  PLC's ring) to reply (read by the PLC), p50/p99, as in the line benchmark. Baseline: the
  minimal reference host (`benchmarks/refhost.py`) over the same wire, same rate, same poll
  interval;
- burst: 300 items at once (requests submitted to the PLC, their scans sent at the same
  time, each confirmation submitted as soon as its reply is read): items/h from the
  submission to the host's ack of the last confirmation (an item is a request in, its
  reply out and its confirmation in, as in the model). Baseline: the model of
  docs/interfaces.md section 3 (`sorter.rtu_budget.max_items_per_h` at 64 items a cycle:
  frame sizes and gaps, no PLC turnaround).
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import PLAN
from benchmarks.daemon import PREFIX, daemon_process, observing, wait_for
from benchmarks.line import latency_ms, ledger_figures, run_reference
from benchmarks.results import Section, broker_info, filesystem
from drivers.broker import LocalBroker
from drivers.registers import CONF_ACK
from simulators.line import DEMO_PARAMS, SimulatedLine
from simulators.plc import PlcReply, PlcServe, PlcSimulator
from simulators.traffic import Traffic
from sorter.addresses import SerialSettings
from sorter.plan import load_plan
from sorter.ports import Outcome
from sorter.rtu_budget import max_items_per_h
from sorterd.demo import write_site

__all__ = ["QUICK", "Options", "report", "run"]

BAUDS = (19_200, 115_200)
RATE = 20_000
DURATION_S = 30.0
BURST = 300
MODEL_ITEMS_PER_CYCLE = 64
_BURST_TID = 3_000_000_000  # far from the conveyor's tracking ids


@dataclass(frozen=True, slots=True)
class Options:
    bauds: tuple[int, ...] = BAUDS
    duration_s: float = DURATION_S
    burst: int = BURST
    reference: bool = True


QUICK = Options(duration_s=8.0, burst=100)


async def _confirmations_taken(plc: PlcSimulator) -> bool:
    if plc.pending_confirmations:
        return False
    return (await plc.read_registers(CONF_ACK, 1))[0] == plc.conf_head


async def _burst(line: SimulatedLine, n: int) -> dict[str, float]:
    """n requests at once with their scans; each confirmation as soon as its reply is in."""
    plc, scanner = line.plc, line.scanner
    assert scanner is not None
    loop = asyncio.get_running_loop()
    replies: dict[int, float] = {}
    confirmed = 0

    def on_reply(reply: PlcReply) -> None:
        nonlocal confirmed
        if reply.tracking_id >= _BURST_TID and reply.tracking_id not in replies:
            replies[reply.tracking_id] = reply.received_s
            plc.submit_confirmation(reply.seq, reply.tracking_id, reply.chute, Outcome.SORTED, 0)
            confirmed += 1

    plc.add_reply_listener(on_reply)
    try:
        items = Traffic(seed=17).items(n)
        t0 = loop.time()
        for i, item in enumerate(items):
            tid = _BURST_TID + i
            scanner.send_read(tid, item.codes)
            plc.submit_request(tid)
        await wait_for(lambda: len(replies) >= n, 120)
        replies_s = max(replies.values()) - t0
        # The item is done when the host has taken its confirmation in too (conf_ack).
        async with asyncio.timeout(60):
            while not await _confirmations_taken(plc):  # noqa: ASYNC110 - PLC registers
                await asyncio.sleep(0.001)
        span_s = loop.time() - t0
    finally:
        plc.remove_reply_listener(on_reply)
    return {
        "items": n,
        "span_s": span_s,
        "items_per_h": n / span_s * 3600,
        "replies_span_s": replies_s,
        "replies_per_h": n / replies_s * 3600,
    }


async def run_baud(baud: int, opts: Options, broker: LocalBroker) -> dict[str, Any]:
    serial = SerialSettings(baudrate=baud)
    serve = PlcServe("rtu-pty", serial=serial)
    plan = load_plan(PLAN)
    async with (
        SimulatedLine(
            sorted(plan.machine_chutes), params=DEMO_PARAMS, seed=5, plc_serve=serve
        ) as line,
        observing(broker) as obs,
    ):
        assert line.scanner is not None
        assert line.scanner.port is not None
        with tempfile.TemporaryDirectory(prefix="sorterd-bench-") as tmp:
            site = write_site(
                Path(tmp),
                plc_port=0,
                plc_url=line.plc.url,
                scanner_port=line.scanner.port,
                mqtt_url=broker.url,
                plan=PLAN,
                prefix=PREFIX,
            )
            async with daemon_process(site, obs) as daemon:
                await line.scanner.wait_for_clients(1)
                inducted = await line.run(RATE, duration_s=opts.duration_s)
                drained = await line.drain(60)
                burst = await _burst(line, opts.burst)
                startup_s = daemon.startup_s
    out: dict[str, Any] = {
        "baud": baud,
        "serial": serial.describe(),
        "inducted": inducted,
        **ledger_figures(line.ledger, drained),
        "plc_latency_ms": latency_ms(line.ledger),
        "burst": burst,
        "model_items_per_h": max_items_per_h(serial, MODEL_ITEMS_PER_CYCLE),
        "startup_s": startup_s,
        "garbled_bytes": line.plc.wire.stats.garbled_bytes if line.plc.wire else 0,
    }
    if opts.reference:
        out["reference"] = await run_reference(
            RATE, opts.duration_s, params=DEMO_PARAMS, plc_serve=serve
        )
    return out


async def _run_all(opts: Options) -> tuple[list[dict[str, Any]], dict[str, str]]:
    rows = []
    async with LocalBroker() as broker:
        info = broker_info(broker.kind)
        for baud in opts.bauds:
            rows.append(await run_baud(baud, opts, broker))
            print("\n".join(_lines(rows[-1])), flush=True)
    return rows, info


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    rows, broker = asyncio.run(_run_all(opts))
    section = Section(
        params={
            "bauds": list(opts.bauds),
            "rate_per_h": RATE,
            "duration_s": opts.duration_s,
            "burst_items": opts.burst,
            "framing": "8N1 on a pty pair paced at the baud rate, no PLC turnaround",
            "poll_interval_ms": 5,
        },
        details={"broker": broker, "bauds": rows},
        filesystems={"daemon journal": filesystem(tempfile.gettempdir())},
    )
    for r in rows:
        key = f"@{r['baud']}"
        ref = r.get("reference")
        for q in ("p50", "p99"):
            section.add(
                f"plc_reply_ms_{q}{key}",
                r["plc_latency_ms"][q],
                "ms",
                f"PLC request -> reply {q} at {RATE:,} items/h",
                better="lower",
                baselines={"reference_host": ref["plc_latency_ms"][q]} if ref else None,
                baseline_labels={"reference_host": "reference host, same wire"},
            )
        section.add(
            f"burst_items_per_h{key}",
            r["burst"]["items_per_h"],
            "items/h",
            f"burst of {r['burst']['items']} items",
            better="higher",
            baselines={"model": r["model_items_per_h"]},
            baseline_labels={"model": f"frame-size model, {MODEL_ITEMS_PER_CYCLE} items a cycle"},
        )
        section.add(f"late_replies{key}", r["late_replies"], "items", "late replies")
        section.add(f"drained_items{key}", r["drained_items"], "items", "items drained")
    return section


def _lines(r: dict[str, Any]) -> list[str]:
    p, b = r["plc_latency_ms"], r["burst"]
    lines = [
        f"{r['serial']:>12}: {r['inducted']} items at {RATE:,}/h, drained {r['drained_items']}"
        f"{'' if r['drained'] else ' (NOT ALL)'}, late {r['late_replies']}: request -> reply "
        f"p50 {p['p50']:.1f} ms p99 {p['p99']:.1f} ms; burst of {b['items']}: "
        f"{b['items_per_h']:,.0f} items/h (model {r['model_items_per_h']:,.0f})"
    ]
    ref = r.get("reference")
    if ref:
        q = ref["plc_latency_ms"]
        lines.append(
            f"{'':>12}  reference host on the same wire: p50 {q['p50']:.1f} ms p99 "
            f"{q['p99']:.1f} ms (daemon p99 = {p['p99'] / q['p99']:.2f} x)"
        )
    return lines


def report(section: Section) -> list[str]:
    lines = [f"broker: {section.details['broker']['kind']}"]
    for r in section.details["bauds"]:
        lines += _lines(r)
    return lines
