"""The daemon: wires the pipeline to the real drivers and supervises them in one TaskGroup."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from drivers.mqtt import MqttPublisher, OutMessage, encode
from drivers.plc import PlcLink
from drivers.scanner import StreamScanner
from sorter.config import Site
from sorter.decide import Decider
from sorter.kernel import ChuteState, Kernel
from sorter.pipeline import Pipeline, Topics
from sorter.plan import compile_plan, load_plan
from sorter.tracker import Tracker

log = structlog.get_logger(__name__)

SHUTDOWN_FLUSH_S = 5.0


@dataclass(slots=True)
class StartupTimes:
    plan_ms: float = 0.0
    warm_ms: float = 0.0
    total_ms: float = 0.0


class Daemon:
    """One sorter line: PLC link, scanners, decision pipeline, MQTT."""

    def __init__(self, site: Site) -> None:
        self.site = site
        cfg = site.config
        t0 = time.perf_counter()
        plan = compile_plan(load_plan(site.plan_path))
        self.times = StartupTimes(plan_ms=(time.perf_counter() - t0) * 1000)
        self.topics = Topics(cfg.mqtt.topic_prefix)
        self.state = ChuteState.for_plan(plan)
        self.decider = Decider(plan, self.state, cfg.site.timezone, Kernel(plan))
        tracking = cfg.tracking
        self.tracker = Tracker(
            scan_wait_ns=tracking.scan_wait_ms * 1_000_000,
            scan_ttl_ns=int(tracking.scan_ttl_s * 1e9),
        )
        self.mqtt = MqttPublisher(
            cfg.mqtt.url,
            client_id=cfg.mqtt.client_id or f"sorterd-{cfg.site.name}-{cfg.site.line}",
            username=cfg.mqtt.username,
            password=cfg.mqtt.password,
            keepalive_s=cfg.mqtt.keepalive_s,
            ca_file=cfg.mqtt.ca_file,
            cert_file=cfg.mqtt.cert_file,
            key_file=cfg.mqtt.key_file,
            will=OutMessage(self.topics.status, encode(self._status("offline")), 1, True),
            birth=lambda: OutMessage(self.topics.status, encode(self._status("online")), 1, True),
            on_state=self._on_mqtt_state,
        )
        self.pipeline = Pipeline(self.decider, self.tracker, self.mqtt.publish, self.topics)
        self.plc = PlcLink(
            cfg.plc.url,
            self.pipeline,
            device_id=cfg.plc.device_id,
            poll_interval_ms=cfg.plc.poll_interval_ms,
            heartbeat_timeout_ms=cfg.plc.heartbeat_timeout_ms,
            request_timeout_ms=cfg.plc.request_timeout_ms,
            chute_status_interval_ms=cfg.plc.chute_status_interval_ms,
            max_chute=plan.plan.max_chute,
        )
        self.pipeline.bind_reply(self.plc.queue_reply)
        self.scanners = [
            StreamScanner(
                s.name,
                s.url,
                telegram_format=s.format,
                on_state_change=self._on_scanner_state,
                idle_timeout_s=s.silence_timeout_s,
            )
            for s in cfg.scanner
        ]
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    def _status(self, state: str) -> dict[str, object]:
        return (
            self.pipeline.status_payload(state) if hasattr(self, "pipeline") else {"state": state}
        )

    def _on_mqtt_state(self, connected: bool, reason: str) -> None:
        log.info("mqtt link", connected=connected, reason=reason)

    def _on_scanner_state(self, name: str, connected: bool) -> None:
        scanner = next((s for s in self.scanners if s.name == name), None)
        self.pipeline.device_state(
            name,
            connected=connected,
            errors=scanner.errors if scanner is not None else None,
        )

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, on_ready: Callable[[Daemon], None] | None = None) -> None:
        """Run until request_stop(); then publish offline status and flush the outbox."""
        t0 = time.perf_counter()
        await asyncio.to_thread(self.decider.warm)  # compiled or loaded from numba's cache
        self.times.warm_ms = (time.perf_counter() - t0) * 1000
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self.mqtt.run(), name="mqtt"),
                    tg.create_task(self.plc.run(), name="plc"),
                    tg.create_task(self.pipeline.run_timer(), name="timer"),
                    tg.create_task(
                        self.pipeline.run_stats(self.site.config.mqtt.stats_interval_s),
                        name="stats",
                    ),
                ]
                for scanner in self.scanners:
                    await scanner.__aenter__()
                    tasks.append(
                        tg.create_task(
                            self.pipeline.run_scanner(scanner.reads()),
                            name=f"scanner-{scanner.name}",
                        )
                    )
                self.times.total_ms = self.times.plan_ms + (time.perf_counter() - t0) * 1000
                log.info(
                    "sorterd ready",
                    site=self.site.config.site.name,
                    line=self.site.config.site.line,
                    plan=self.decider.plan.plan.name,
                    startup_ms=round(self.times.total_ms, 1),
                )
                self.ready.set()
                if on_ready is not None:
                    on_ready(self)
                await self._stop.wait()
                await self._shutdown()
                for task in tasks:
                    task.cancel()
        finally:
            for scanner in self.scanners:
                await scanner.__aexit__(None, None, None)

    async def _shutdown(self) -> None:
        """Graceful stop: answer what is waiting, say offline, flush within a bound."""
        log.info("sorterd stopping", waiting=self.tracker.waiting, backlog=self.mqtt.backlog)
        # Requests still waiting for a scan are answered now rather than left to the PLC's
        # timeout: the timer decides them with reason timeout at once.
        self.pipeline.answer_waiting()
        await self.plc.wait_replies_written(timeout_s=1.0)
        self.mqtt.publish(self.topics.status, self._status("offline"), qos=1, retain=True)
        flushed = await self.mqtt.flush(SHUTDOWN_FLUSH_S)
        log.info("sorterd stopped", flushed=flushed, backlog=self.mqtt.backlog)
