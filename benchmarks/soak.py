"""The compressed soak: `sorterd run` for a long bounded time at a high rate, sampled every
minute.

`python -m benchmarks --only soak` (opt-in; 45 minutes at 200,000 items/h by default,
`--soak-minutes`, `--soak-rate`): the line benchmark's set-up (benchmarks/line.py: the
daemon as its own process against the simulated PLC, conveyor and scan tunnel over Modbus
TCP, telegrams and the local broker, poll 5 ms, belt 10 m/s). 45 minutes at 200,000/h
induct 150,000 items: more than 8 hours at 40,000/h, so every bound of the daemon (awaiting
confirmation, dedupe keys, queryable decisions, latency window, outbox) fills and must
stay full, not grow.

Every minute: the daemon's resident memory (VmRSS) and its peak (VmHWM), its CPU share over
the minute, the PLC's request-to-reply latency of the replies read in that minute (p50, p99,
max), late replies and requests that got no reply before their item passed the chutes.
Over the whole run: the slowest reply (a stall shows there), how many replies took longer
than 100 ms and 500 ms, and memory growth after the bounds filled (the last minute against
the sample at one third of the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.daemon import cpu_s, memory_kb, paced_gc
from benchmarks.line import PARAMS as LINE_PARAMS
from benchmarks.line import POLL_MS, daemon_on_line, latency_ms, ledger_figures
from benchmarks.results import Section, broker_info
from drivers.broker import LocalBroker
from simulators.conveyor import ItemRecord, Ledger

__all__ = ["QUICK", "Options", "main", "report", "run", "section_name"]

RATE = 200_000
MINUTES = 45.0
SAMPLE_S = 60.0
STALL_MS = (100.0, 500.0)


@dataclass(frozen=True, slots=True)
class Options:
    rate: float = RATE
    minutes: float = MINUTES
    sample_s: float = SAMPLE_S


def section_name(opts: Options) -> str:
    return "soak"


QUICK = Options(minutes=1.5, sample_s=15.0)


# Ledger items looked at between two yields of the loop while a minute is sampled.
WINDOW_CHUNK_ITEMS = 2_000
# An item whose last pass was scanned this long before a window began gets no reply in it
# (a reply comes within a second; a recirculation is a new pass, seconds later).
SETTLED_S = 120.0


class _Windows:
    """Request-to-reply ms of the replies the PLC read in [t0, t1) (loop time), minute
    after minute.

    The simulated PLC runs on this loop: one pass over a ledger of 150,000 items (the end
    of a default soak) held it 23 ms, once a minute, and the replies it then read late
    went into the figures as the daemon's, growing with the run as a leak would. So only
    the items that can still have a reply in the window are looked at (a cursor moves past
    the settled ones), in slices with the loop free between them; a reply of [t0, t1) was
    latched before t1, so the items that arrive meanwhile add none."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.start = 0  # items before it are settled

    async def between(self, t0: float, t1: float) -> list[float]:
        items = self.ledger.items
        while self.start < len(items) and _last_scan_s(items[self.start]) < t0 - SETTLED_S:
            self.start += 1
        out: list[float] = []
        for lo in range(self.start, len(items), WINDOW_CHUNK_ITEMS):
            if lo > self.start:
                await asyncio.sleep(0)
            out.extend(
                (p.reply_s - p.scan_s) * 1000
                for rec in items[lo : lo + WINDOW_CHUNK_ITEMS]
                for p in rec.passes
                if p.reply_s is not None and t0 <= p.reply_s < t1
            )
        return out


def _last_scan_s(rec: ItemRecord) -> float:
    return rec.passes[-1].scan_s if rec.passes else float("inf")


def _sample(
    minute: float, ms: list[float], mem: dict[str, int], cpu_share: float, ledger: Ledger
) -> dict[str, Any]:
    arr = np.array(ms) if ms else np.zeros(1)
    return {
        "minute": round(minute, 2),
        "replies": len(ms),
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "max_ms": float(arr.max()),
        "rss_mb": mem.get("VmRSS", 0) / 1024,
        "hwm_mb": mem.get("VmHWM", 0) / 1024,
        "cpu_share": cpu_share,
        "inducted": ledger.inducted,
        "late": ledger.late_replies,
        "no_reply": ledger.no_reply_passes,
    }


async def _sampled(opts: Options, broker: LocalBroker) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    async with daemon_on_line(broker) as (line, daemon, _obs):
        duration_s = opts.minutes * 60
        inducting = asyncio.create_task(line.run(opts.rate, duration_s=duration_s))
        start = t0 = loop.time()
        cpu0 = cpu_start = cpu_s(daemon.pid)
        windows = _Windows(line.ledger)
        samples = []
        while not inducting.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(opts.sample_s):
                    await asyncio.shield(inducting)
            if daemon.proc.returncode is not None:
                # A daemon that died would leave the rest of the run sampling nothing.
                inducting.cancel()
                raise RuntimeError(
                    f"sorterd run exited with {daemon.proc.returncode} at minute "
                    f"{(loop.time() - start) / 60:.1f} of the soak"
                )
            t1, cpu1 = loop.time(), cpu_s(daemon.pid)
            sample = _sample(
                (t1 - start) / 60,
                await windows.between(t0, t1),
                memory_kb(daemon.pid),
                (cpu1 - cpu0) / max(t1 - t0, 1e-9),
                line.ledger,
            )
            samples.append(sample)
            print(_sample_line(sample), flush=True)
            t0, cpu0 = t1, cpu1
        inducted = inducting.result()
        drained = await line.drain(60)
        wall_s = loop.time() - start
        used_s = cpu_s(daemon.pid) - cpu_start
        memory = memory_kb(daemon.pid)
    every = np.array(
        [(p.reply_s - p.scan_s) * 1000 for r in line.ledger.items for p in r.passes if p.reply_s]
    )
    return {
        "rate": opts.rate,
        "inducted": inducted,
        **ledger_figures(line.ledger, drained),
        "plc_latency_ms": latency_ms(line.ledger),
        "over_ms": {f"{t:g}": int((every > t).sum()) for t in STALL_MS},
        "cpu_share": used_s / wall_s,
        "rss_end_mb": memory.get("VmRSS", 0) / 1024,
        "rss_peak_mb": memory.get("VmHWM", 0) / 1024,
        "startup_s": daemon.startup_s,
        "samples": samples,
    }


def _sample_line(s: dict[str, Any]) -> str:
    return (
        f"soak {s['minute']:6.1f} min: inducted {s['inducted']:,}, replies {s['replies']:,}, "
        f"PLC ms p50/p99/max {s['p50_ms']:.2f} {s['p99_ms']:.2f} {s['max_ms']:.2f}, "
        f"late {s['late']}, no reply {s['no_reply']}, rss {s['rss_mb']:.1f} MB "
        f"(peak {s['hwm_mb']:.1f}), CPU {s['cpu_share'] * 100:.1f} %"
    )


def growth_mb(samples: list[dict[str, Any]]) -> float:
    """Resident memory of the last sample against the one a third of the way in, when the
    bounds are full (at 200,000/h: 50,000 items after 15 minutes, 2.5 x the largest
    count-bounded structure after the awaiting-confirmation one, which empties as items
    are confirmed)."""
    if len(samples) < 3:
        return 0.0
    return float(samples[-1]["rss_mb"] - samples[len(samples) // 3]["rss_mb"])


async def _run(opts: Options) -> tuple[dict[str, Any], dict[str, str]]:
    async with paced_gc(), LocalBroker() as broker:
        info = broker_info(broker.kind)
        print(f"broker: {info['kind']} {info.get('version', '')}", flush=True)
        return await _sampled(opts, broker), info


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    t = time.perf_counter()
    row, broker = asyncio.run(_run(opts))
    section = Section(
        params={
            "rate": opts.rate,
            "minutes": opts.minutes,
            "sample_s": opts.sample_s,
            "poll_interval_ms": POLL_MS,
            "belt_speed_m_s": LINE_PARAMS.belt_speed_m_s,
        },
        details={"broker": broker, "soak": row, "seconds": time.perf_counter() - t},
    )
    lat = row["plc_latency_ms"]
    section.add("plc_reply_ms_p99", lat["p99"], "ms", "PLC request -> reply p99, whole run",
                better="lower", target="<= 10 ms")  # fmt: skip
    section.add("plc_reply_ms_max", lat["max"], "ms", "slowest reply of the run", better="lower")
    section.add("late_replies", row["late_replies"], "", "late replies", better="lower",
                target="0")  # fmt: skip
    section.add("no_reply_passes", row["no_reply_passes"], "", "requests never answered",
                better="lower", target="0")  # fmt: skip
    growth = growth_mb(row["samples"])
    section.add("rss_growth_mb", growth, "MB", "resident memory, last sample minus the one a "
                "third in", better="lower")  # fmt: skip
    section.add("rss_peak_mb", row["rss_peak_mb"], "MB", "peak resident memory", better="lower")
    return section


def report(section: Section) -> list[str]:
    row = section.details["soak"]
    lat = row["plc_latency_ms"]
    return [
        f"broker: {section.details['broker']['kind']}",
        f"{row['rate']:,.0f}/h for {section.params['minutes']:g} min: inducted "
        f"{row['inducted']:,}, drained {row['drained_items']:,} ({row['drained']}); PLC ms "
        f"p50/p99/max {lat['p50']:.2f} {lat['p99']:.2f} {lat['max']:.2f}; over 100 / 500 ms "
        f"{row['over_ms']['100']} / {row['over_ms']['500']}; late {row['late_replies']}, "
        f"never answered {row['no_reply_passes']}; CPU {row['cpu_share'] * 100:.1f} %; RSS end "
        f"{row['rss_end_mb']:.1f} MB, peak {row['rss_peak_mb']:.1f} MB, growth after a third "
        f"{growth_mb(row['samples']):+.1f} MB",
    ]


def main() -> int:
    print("\n".join(report(run())))
    print("(no results file: `python -m benchmarks --only soak` writes one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
