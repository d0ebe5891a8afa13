"""One line of the hub benchmark, in a process of its own (benchmarks/hub.py starts one
per line): its simulated PLC, conveyor and scan tunnel, its `sorterd run`, its observer.

On a hub the PLCs are machines of their own; simulated in one process, the lines shared
one event loop that was busy 40-60 % of the time at 4 x 40,000/h, and a request waited
there for its turn before the PLC model even saw the reply: the latency it measured was
partly its own. One process per line keeps each simulator's loop as idle as in the
one-line benchmark.

`python -m benchmarks.hubline --port P --index K --rate R --duration S`: prints `ready`
once its daemon is online (with its start-up seconds), waits for a line on stdin (the hub
starts every line together), inducts, drains, and prints one JSON line of figures (its
two lines start with MARK).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks.daemon import paced_gc
from benchmarks.line import daemon_on_line, induct, latency_ms, ledger_figures

__all__ = ["HUB", "MARK", "main"]

HUB = "bench/hub"
MARK = b"@hub-line "  # the lines the hub reads; the simulators log on stdout too


@dataclass(frozen=True, slots=True)
class _Broker:
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


async def _line(port: int, index: int, rate: float, duration_s: float) -> dict[str, Any]:
    name = f"line-{index}"
    loop = asyncio.get_running_loop()
    # The hub's SIGTERM (a failed or timed-out scenario): stop the daemon on the way out.
    this = asyncio.current_task()
    assert this is not None
    loop.add_signal_handler(signal.SIGTERM, this.cancel)
    async with (
        paced_gc(),
        daemon_on_line(_Broker(port), seed=5 + index, prefix=f"{HUB}/{name}", name=name) as (
            sim,
            daemon,
            obs,
        ),
    ):
        _say({"ready": daemon.startup_s})
        if not await loop.run_in_executor(None, sys.stdin.readline):  # the hub's go
            raise SystemExit("hub line: the hub went away before its go")
        run = await induct(sim, rate, duration_s, daemon.pid)
        await asyncio.sleep(2.5)  # one more P/stats
    return {
        "line": name,
        **run.figures,
        **ledger_figures(sim.ledger, run.drained),
        "plc_latency_ms": latency_ms(sim.ledger),
        "decision_latency_ms": (obs.stats[-1] if obs.stats else {}).get("latency_ms", {}),
        "simulator_cpu_s": run.own_cpu_s,
        "mqtt_backlog_max": max(
            (s.get("mqtt", {}).get("backlog", 0) for s in obs.stats), default=0
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hubline")
    parser.add_argument("--port", type=int, required=True, help="the broker's port")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="items/h")
    parser.add_argument("--duration", type=float, required=True, help="s of induction")
    args = parser.parse_args(argv)
    try:
        row = asyncio.run(_line(args.port, args.index, args.rate, args.duration))
    except asyncio.CancelledError:
        return 1  # stopped by the hub, the daemon with it
    _say(row)
    return 0


def _say(figures: dict[str, Any]) -> None:
    print(MARK.decode() + json.dumps(figures), flush=True)


if __name__ == "__main__":
    sys.exit(main())
