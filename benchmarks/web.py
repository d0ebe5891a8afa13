"""The web console (docs/web.md) at hub scale, measured as a user sees it: the 240-chute
Casablanca plan at 40,000 items/h: the simulated line (in this process, on a 300 m loop at
10 m/s: `sorterd simulate line` keeps the 60-chute demo geometry), `sorterd run` and
`sorterd web` each their own process, mosquitto, and the chute wall open in headless
Chromium (Selenium and Debian's chromedriver; opt-in: `python -m benchmarks --only web`).

Figures, over `duration_s` after `warmup_s`:
- renders/s: the page's own count of renders (window.sorterdPerf), target <= 4;
- the browser main thread's busy share: Chrome's TaskDuration (every task of the page's
  main thread: script, style, layout, paint; DevTools Performance.getMetrics) over the wall
  time, target < 20 %; and the share of it in the page's own code (taking events in and
  rendering them, performance.now() accounting);
- the server's CPU: user + system time of the `sorterd web` process (/proc) over the wall
  time, target <= 5 % of a core for the one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.daemon import cpu_s, daemon_process, observing
from benchmarks.results import Section
from drivers.broker import LocalBroker, free_port
from simulators.line import DEMO_PARAMS, SimulatedLine
from sorter.plan import load_plan
from sorterd.demo import write_site
from sorterd.web.users import Role, add_user

__all__ = ["QUICK", "Options", "report", "run"]

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "config" / "casablanca" / "sortplan.toml"
PREFIX = "bench/hub/line-1"
USER = ("bench", "bench-password-1")
# The wall as the benchmark left it, to look at (not kept in the repository).
SCREENSHOT = Path(tempfile.gettempdir()) / "sorterd-bench-web-wall-240.png"
# The demo geometry with room for 240 chutes, fast enough for 40,000 items/h and more.
BENCH_LINE = dataclasses.replace(
    DEMO_PARAMS, belt_speed_m_s=10.0, item_pitch_m=0.2, loop_length_m=300.0,
    chutes=tuple(range(1, 241)),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Options:
    items_per_h: float = 40_000.0
    duration_s: float = 60.0
    warmup_s: float = 15.0


QUICK = Options(duration_s=15.0, warmup_s=5.0)


def _metrics(driver: Any) -> dict[str, float]:
    found = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    return {m["name"]: float(m["value"]) for m in found}


def _page_perf(driver: Any) -> dict[str, float]:
    got: dict[str, float] = driver.execute_script(
        "const p = window.sorterdPerf; return {renders: p.renders, renderMs: p.renderMs,"
        " handleMs: p.handleMs, events: p.events, now: performance.now()};"
    )
    return got


def _browse(base: str, opts: Options, web_pid: int) -> dict[str, Any]:
    from tests.web.kit import chromium, wait

    with chromium() as driver:
        driver.get(f"{base}/login")
        driver.find_element("id", "username").send_keys(USER[0])
        driver.find_element("id", "password").send_keys(USER[1])
        driver.find_element("id", "sign-in").click()
        wait(lambda: len(driver.find_elements("css selector", "[data-chute]")) >= 240, 60,
             "240 chutes on the wall")  # fmt: skip
        driver.execute_cdp_cmd("Performance.enable", {"timeDomain": "timeTicks"})
        time.sleep(opts.warmup_s)
        m0, p0, c0, t0 = _metrics(driver), _page_perf(driver), cpu_s(web_pid), time.monotonic()
        time.sleep(opts.duration_s)
        m1, p1, c1, t1 = _metrics(driver), _page_perf(driver), cpu_s(web_pid), time.monotonic()
        wall_s = t1 - t0
        states = driver.execute_script(
            "return [...document.querySelectorAll('[data-chute]')].map(e => e.dataset.state);"
        )
        # Whether the whole wall fits the screen (1920 x 1080 window) without scrolling.
        page_px, screen_px = driver.execute_script(
            "return [document.documentElement.scrollHeight, window.innerHeight];"
        )
        driver.save_screenshot(str(SCREENSHOT))
    page_s = (p1["now"] - p0["now"]) / 1000
    return {
        "wall_s": wall_s,
        "renders_per_s": (p1["renders"] - p0["renders"]) / page_s,
        "events_per_s": (p1["events"] - p0["events"]) / page_s,
        "main_thread_busy": (m1["TaskDuration"] - m0["TaskDuration"]) / wall_s,
        "script_busy": (p1["renderMs"] - p0["renderMs"] + p1["handleMs"] - p0["handleMs"])
        / 1000
        / page_s,
        "server_cpu": (c1 - c0) / wall_s,
        "chutes_on_wall": len(states),
        "page_px": page_px,
        "screen_px": screen_px,
    }


async def _measure(opts: Options, folder: Path) -> dict[str, Any]:
    chutes = sorted(load_plan(PLAN).machine_chutes)
    line = SimulatedLine(chutes, params=BENCH_LINE, seed=1, plc_port=free_port(),
                         scanner_port=free_port())  # fmt: skip
    async with (
        LocalBroker(kind="mosquitto") as broker,
        observing(broker, PREFIX) as obs,
        line,
    ):
        assert line.scanner is not None
        assert line.scanner.port is not None
        web_port = free_port()
        site = write_site(
            folder, plc_port=line.plc.port, scanner_port=line.scanner.port,
            mqtt_url=broker.url, plan=PLAN, prefix=PREFIX,
            extra=f'\n[web]\nlisten = "127.0.0.1:{web_port}"\n',
        )  # fmt: skip
        add_user(folder / "users.toml", USER[0], Role.OPERATOR, USER[1])
        web = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sorterd.cli", "web", "-c", str(site),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            # A generous start: the machine may be shared (numba warms the kernels first).
            async with daemon_process(site, obs, online_timeout_s=600, log=folder / "run.log"):
                traffic = asyncio.create_task(
                    line.run(opts.items_per_h, duration_s=opts.warmup_s + opts.duration_s + 120)
                )
                try:
                    base = f"http://127.0.0.1:{web_port}"
                    found = await asyncio.to_thread(_browse, base, opts, web.pid)
                finally:
                    traffic.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await traffic
                stats = obs.stats[-1] if obs.stats else {}
                found["items_per_h"] = stats.get("items_per_h")
                return found
        finally:
            if web.returncode is None:
                web.terminate()
                await web.wait()


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    section = Section(params={"items_per_h": opts.items_per_h, "duration_s": opts.duration_s,
                              "warmup_s": opts.warmup_s, "chutes": 240})  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="sorterd-bench-web-"))
    try:
        found = asyncio.run(_measure(opts, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    section.details = found
    label = f"240 chutes, {opts.items_per_h:,.0f} items/h"
    section.add("renders", found["renders_per_s"], "renders/s", label, better="lower",
                target="<= 4")  # fmt: skip
    section.add("main_thread_busy", found["main_thread_busy"] * 100, "%", label,
                better="lower", target="< 20")  # fmt: skip
    section.add("server_cpu", found["server_cpu"] * 100, "% of a core", label,
                better="lower", target="<= 5")  # fmt: skip
    return section


def report(section: Section) -> list[str]:
    r = section.details
    items = r.get("items_per_h")
    return [
        f"wall of {r['chutes_on_wall']} chutes, the line at {items:,.0f} items/h (P/stats)"
        if isinstance(items, int | float)
        else "",
        f"renders {r['renders_per_s']:.2f}/s (events {r['events_per_s']:.2f}/s; target <= 4)",
        f"browser main thread busy {r['main_thread_busy'] * 100:.1f} % (target < 20 %), of it "
        f"the page's own code {r['script_busy'] * 100:.2f} %",
        f"sorterd web CPU {r['server_cpu'] * 100:.2f} % of a core (target <= 5 %) over "
        f"{r['wall_s']:.0f} s",
        f"the page {r['page_px']} px high in a window of {r['screen_px']} px "
        f"(screenshot: {SCREENSHOT})",
    ]
