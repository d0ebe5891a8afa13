"""A whole simulated sorter line: PLC + conveyor + scan tunnel (one or more heads) + traffic.

Used by `sorterd demo`, `sorterd simulate`, the end-to-end tests and the benchmarks, so
that all of them exercise the daemon through the same real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Self
from urllib.parse import urlsplit

import structlog

from simulators.conveyor import Conveyor, Ledger, LineParams
from simulators.plc import PlcServe, PlcSimulator
from simulators.scanner import ScannerSimulator
from simulators.sortplan import machine_chutes
from simulators.traffic import Traffic
from sorter.addresses import TcpEndpoint, parse_plc_url, parse_scanner_url
from sorter.config import ConfigError, Problem, ScannerSection, Site
from sorter.telegram_options import TelegramOptions

__all__ = [
    "DEMO_PARAMS",
    "HeadSpec",
    "SimulatedLine",
    "plc_serve_for",
    "simulate",
    "simulated_format",
]

log = structlog.get_logger(__name__)

# A compact cross-belt loop: 60 chutes on both sides of a 35 m run after the tunnel, so a
# demo drains in seconds rather than minutes, at a real belt speed.
DEMO_PARAMS = LineParams(
    belt_speed_m_s=2.5,
    item_pitch_m=0.09,  # at 2.5 m/s this still allows 100,000 items/h
    induct_to_scan_m=1.0,
    scan_to_first_chute_m=6.0,
    chute_pitch_m=0.5,
    loop_length_m=50.0,
    chute_capacity=400,
    empty_after_s=20.0,
    chutes=tuple(range(1, 61)),
)


# The return run from the end of the line back to induction when a plan's chutes do not fit
# the given loop (the demo's compact loop with a 240-chute hub plan): the loop grows with
# the line, as a longer machine's would.
_RETURN_RUN_M = 15.0


def _loop_m(params: LineParams, n_chutes: int) -> float:
    """The loop's length for `n_chutes` chutes at the params' pitch: as given when they fit."""
    end_of_line_m = params.scan_to_first_chute_m + n_chutes * params.chute_pitch_m
    if params.loop_length_m > end_of_line_m:
        return params.loop_length_m
    return end_of_line_m + _RETURN_RUN_M


def _tcp_port(url: str) -> int:
    """The port a simulated head listens on, from the same parser the daemon uses."""
    endpoint = parse_scanner_url(url)
    if isinstance(endpoint, TcpEndpoint):
        return endpoint.port
    port = urlsplit(endpoint.url).port if endpoint.url.startswith("socket://") else None
    if port is None:
        raise ValueError(f"the simulators serve TCP only; {url!r} is not tcp://host:port")
    return port


@dataclass(frozen=True, slots=True)
class HeadSpec:
    """One scanner head of the simulated tunnel.

    Per item pass the head sends no telegram at all with probability `miss_rate` (a missed
    trigger); otherwise the item's codes with probability `read_rate`, else NOREAD.
    `tunnel` is what the site config says (None: the head is its own tunnel).
    """

    name: str
    read_rate: float = 1.0
    miss_rate: float = 0.0
    tunnel: str | None = None
    port: int = 0
    telegram_format: str | TelegramOptions | None = None  # None: the line's

    def __post_init__(self) -> None:
        for key in ("read_rate", "miss_rate"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"head {self.name}: {key} must be within 0..1")


class SimulatedLine:
    """`async with SimulatedLine(chutes) as line:` then `await line.run(rate, duration_s)`.

    The scan tunnel has one head by default (`scanner`); `heads` gives several, each with
    its own read rate. `kill_head` stops a head mid-run (its port refuses connections, as a
    scanner switched off), `mute_head` keeps its link up but silent (no read, no heartbeat).
    """

    def __init__(
        self,
        chutes: Sequence[int],
        *,
        params: LineParams = DEMO_PARAMS,
        plc_port: int = 0,
        scanner_port: int = 0,
        device_id: int = 1,
        seed: int = 1,
        scanner_heartbeat_s: float | None = 1.0,
        with_scanner: bool = True,
        plc_serve: PlcServe | None = None,
        telegram_format: str | TelegramOptions = "index",
        heads: Sequence[HeadSpec] | None = None,
    ) -> None:
        self.params = replace(
            params, chutes=tuple(sorted(chutes)), loop_length_m=_loop_m(params, len(chutes))
        )
        self.seed = seed
        self.plc = PlcSimulator(port=plc_port, device_id=device_id, serve=plc_serve)
        if not with_scanner:
            heads = ()
        elif heads is None:
            heads = (HeadSpec("tunnel-sim", port=scanner_port),)
        names = [h.name for h in heads]
        if len(set(names)) != len(names):
            raise ValueError("head names must be unique")
        self.head_specs: dict[str, HeadSpec] = {h.name: h for h in heads}
        # Heartbeats are sent here rather than by each simulator, so a muted head stops them.
        self.heads: dict[str, ScannerSimulator] = {
            h.name: ScannerSimulator(
                h.name,
                port=h.port,
                telegram_format=h.telegram_format
                if h.telegram_format is not None
                else telegram_format,
            )
            for h in heads
        }
        self.scanner_heartbeat_s = scanner_heartbeat_s
        self._dead: set[str] = set()
        self._muted: set[str] = set()
        self._head_rng = random.Random(seed ^ 0x5EED)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.conveyor = Conveyor(self.plc, self.params, self._scan, seed=seed)
        self.traffic = Traffic(seed=seed)
        # One stream for the line's life: a second run() goes on with the next parcels.
        self._items = self.traffic.items()

    @property
    def scanner(self) -> ScannerSimulator | None:
        """The first head (the only one on a line with one head)."""
        return next(iter(self.heads.values()), None)

    def _scan(self, tracking_id: int, codes: Sequence[str]) -> dict[str, tuple[str, ...]]:
        sent: dict[str, tuple[str, ...]] = {}
        rng = self._head_rng
        for name, sim in self.heads.items():
            spec = self.head_specs[name]
            # Draw for every head every time, so killing one does not change the others.
            missed = rng.random() < spec.miss_rate
            read = rng.random() < spec.read_rate
            if missed or name in self._dead or name in self._muted:
                continue
            telegram = tuple(codes) if read else ()
            if sim.send_read(tracking_id, telegram):
                sent[name] = telegram
        return sent

    async def kill_head(self, name: str) -> None:
        """Switch a head off: its link closes and reconnects are refused."""
        self._dead.add(name)
        await self.heads[name].stop()

    async def revive_head(self, name: str) -> None:
        """Switch it on again, on the same port."""
        await self.heads[name].start()
        self._dead.discard(name)

    def mute_head(self, name: str, muted: bool = True) -> None:
        """A head whose link stays up but which sends nothing, not even heartbeats."""
        if muted:
            self._muted.add(name)
        else:
            self._muted.discard(name)

    async def _heartbeats(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            for name, sim in self.heads.items():
                if name not in self._muted and name not in self._dead and sim.has_heartbeat:
                    sim.send_heartbeat()

    @property
    def ledger(self) -> Ledger:
        return self.conveyor.ledger

    @property
    def plc_url(self) -> str:
        return self.plc.url

    async def start(self) -> None:
        await self.plc.start()
        for sim in self.heads.values():
            await sim.start()
        if self.heads and self.scanner_heartbeat_s is not None:
            self._heartbeat_task = asyncio.create_task(
                self._heartbeats(self.scanner_heartbeat_s), name="line-scanner-heartbeats"
            )
        await self.conveyor.start()

    async def stop(self) -> None:
        await self.conveyor.stop()
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        for sim in self.heads.values():
            await sim.stop()
        await self.plc.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(
        self, rate_per_h: float, duration_s: float | None = None, count: int | None = None
    ) -> int:
        return await self.conveyor.run(self._items, rate_per_h, duration_s=duration_s, count=count)

    async def drain(self, timeout_s: float) -> bool:
        return await self.conveyor.drain(timeout_s)


def plc_serve_for(url: str, rtu: str | None) -> tuple[PlcServe, int]:
    """How `sorterd simulate` serves the PLC of `plc.url`: (serve, TCP port).

    `rtu` is `--rtu`: `pty` for a new pty wire, or the simulator's serial device. The
    serial settings come from the site's URL, so that the daemon and simulator agree.
    """
    ep = parse_plc_url(url)
    if rtu is None:
        if ep.kind == "rtu":
            raise ValueError(
                f"plc.url {url!r} is a serial line: give --rtu pty (a pty pair on this "
                f"machine) or --rtu DEVICE (the simulator's end of the RS-485 cable)"
            )
        return PlcServe("tcp-rtu" if ep.framer == "rtu" else "tcp"), ep.port
    if rtu == "pty":
        return PlcServe("rtu-pty", serial=ep.serial), 0
    return PlcServe("rtu", device=rtu, serial=ep.serial), 0


def simulated_format(section: ScannerSection, preset: str | None = None) -> TelegramOptions:
    """The telegram settings to simulate for a scanner: its own, or `preset`'s defaults.

    ConfigError when the simulator cannot speak it (`custom` without a template).
    """
    if preset is not None and preset != section.format:
        section = ScannerSection.model_validate(
            {"name": section.name, "url": section.url, "format": preset}
        )
    problems = [Problem("--format", key, message) for key, message in section.telegram_problems()]
    options = section.telegram_options()
    if not problems and options.format == "custom" and options.template is None:
        problems.append(
            Problem(f"scanner {section.name}", "template", "needed to simulate format custom")
        )
    if problems:
        raise ConfigError(problems)
    return options


async def simulate(
    device: str,
    site: Site,
    *,
    rate_per_h: float,
    duration_s: float | None,
    seed: int,
    rtu: str | None = None,
    telegram_format: str | None = None,
    read_rate: float = 1.0,
) -> int:
    """`sorterd simulate line|plc|scanner`: serve the site config's addresses until stopped.

    `line` serves every scanner of the site as one head (grouped by their `tunnel`), each
    speaking its own telegram preset and reading an item's codes with probability
    `read_rate`. `telegram_format` (a preset name) replaces the first scanner's format.
    """
    cfg = site.config
    chutes = machine_chutes(site.plan_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if device == "scanner":
        fmt = simulated_format(cfg.scanner[0], telegram_format)
        return await _simulate_scanner(site, fmt, rate_per_h, duration_s, seed, stop)
    plc_serve, plc_port = plc_serve_for(cfg.plc.url, rtu)
    # The PLC alone needs no head, so a scanner the simulator cannot speak does not stop it.
    heads = _site_heads(site, telegram_format, read_rate) if device == "line" else []
    line = SimulatedLine(
        chutes,
        plc_serve=plc_serve,
        plc_port=plc_port,
        device_id=cfg.plc.device_id,
        seed=seed,
        with_scanner=device == "line",
        heads=heads,
    )
    async with line:
        _announce(line.plc)
        log.info(
            "simulator ready",
            device=device,
            plc=line.plc_url,
            scanners={name: sim.tcp_url for name, sim in line.heads.items()},
        )
        await _run_until_stopped(line, rate_per_h, duration_s, stop)
        log.info("simulator summary", **line.ledger.summary())
    return 0


def _site_heads(site: Site, telegram_format: str | None, read_rate: float) -> list[HeadSpec]:
    """A head per scanner of the site, each in its own preset (the first one in
    `telegram_format`'s, when given)."""
    return [
        HeadSpec(
            s.name,
            read_rate=read_rate,
            tunnel=s.tunnel,
            port=_tcp_port(s.url),
            telegram_format=simulated_format(s, telegram_format if i == 0 else None),
        )
        for i, s in enumerate(site.config.scanner)
    ]


async def _run_until_stopped(
    line: SimulatedLine, rate_per_h: float, duration_s: float | None, stop: asyncio.Event
) -> None:
    """Induct until `duration_s` or `stop`; then let the belt drain, unless stopped."""
    runner = asyncio.create_task(line.run(rate_per_h, duration_s))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    runner.cancel()
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    if stop.is_set():
        return
    # Let the items on the belt finish, unless told to stop meanwhile.
    drainer = asyncio.create_task(line.drain(60.0))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({drainer, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (drainer, stopper):
        task.cancel()
    await asyncio.wait({drainer, stopper})


def _announce(plc: PlcSimulator) -> None:
    """Where a serial PLC is, on stdout: for scripts, and to paste into site.toml."""
    serve = plc.serve
    if serve.kind == "rtu-pty":
        print(f"PLC Modbus RTU on pty {plc.serial_path}: plc.url = {plc.url!r}", flush=True)
    elif serve.kind == "rtu":
        print(f"PLC Modbus RTU on {serve.device} ({serve.serial.describe()})", flush=True)
    elif serve.kind == "tcp-rtu":
        print(f"PLC Modbus RTU framing over TCP: plc.url = {plc.url!r}", flush=True)


async def _simulate_scanner(
    site: Site,
    fmt: TelegramOptions,
    rate_per_h: float,
    duration_s: float | None,
    seed: int,
    stop: asyncio.Event,
) -> int:
    traffic = Traffic(seed=seed).items()
    scanner = ScannerSimulator(
        site.config.scanner[0].name,
        port=_tcp_port(site.config.scanner[0].url),
        telegram_format=fmt,
    )
    async with scanner:
        log.info("scanner simulator ready", url=scanner.tcp_url, format=fmt.format)
        interval_s = 3600.0 / rate_per_h
        loop = asyncio.get_running_loop()
        end_s = None if duration_s is None else loop.time() + duration_s
        tracking_id = 1
        while not stop.is_set() and (end_s is None or loop.time() < end_s):
            scanner.send_read(tracking_id, next(traffic).codes)
            tracking_id = tracking_id % 0xFFFF_FFFF + 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await stop.wait()
    return 0
