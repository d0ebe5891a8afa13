"""The daemon: wires the pipeline to the real drivers and supervises them in one TaskGroup."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from drivers.journal import PRUNE_BATCH_ROWS, Journal, JournalOutbox
from drivers.metrics import Metrics
from drivers.mqtt import MqttPublisher, OutMessage, encode
from drivers.plc import PlcLink
from drivers.scanner import StreamScanner
from drivers.telegram import format_from_options
from sorter.commands import CommandError, parse_command
from sorter.config import ConfigError, Site, identifier_sources
from sorter.contract import Topics, command_answer, status_payload
from sorter.decide import Decider
from sorter.heads import HeadChange, HeadHealth
from sorter.kernel import ChuteState, Kernel
from sorter.line import Line
from sorter.manifest import Manifest, ManifestSource
from sorter.manifest import warm as warm_manifest_kernels
from sorter.plan import compile_plan, load_plan
from sorter.runtime import release_free_memory, tune_gc
from sorter.tracker import Tracker
from sorterd.systemd import SystemdNotifier, run_watchdog

log = structlog.get_logger(__name__)

SHUTDOWN_FLUSH_S = 5.0
JOURNAL_CHECK_S = 10.0  # disk space and alarms
JOURNAL_PRUNE_S = 60.0
MAX_PRUNE_BATCHES = 200  # a minute's work at most; the rest at the next prune


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
        for warning in plan.plan.warnings:
            log.warning("sort plan", problem=str(warning))
        self.topics = Topics(cfg.mqtt.topic_prefix)
        decider = Decider(
            plan,
            ChuteState.for_plan(plan),
            cfg.site.timezone,
            Kernel(plan),
            site_country=cfg.site.country,
        )
        tracking = cfg.tracking
        self.tracker = Tracker(
            scan_wait_ns=tracking.scan_wait_ms * 1_000_000,
            scan_ttl_ns=int(tracking.scan_ttl_s * 1e9),
            heads={s.name: s.tunnel or s.name for s in cfg.scanner},
            window_before_ns=tracking.window_before_ms * 1_000_000,
            window_after_ns=tracking.window_after_ms * 1_000_000,
            merge_window_ns=tracking.merge_window_ms * 1_000_000,
            head_miss_limit=tracking.head_miss_limit,
        )
        jc = cfg.journal
        self.journal = Journal(
            site.journal_path,
            max_size_mb=jc.max_size_mb,
            retention_h=jc.retention_h,
            synchronous=jc.synchronous,
            min_free_mb=jc.min_free_mb,
        )
        self.alarms: tuple[str, ...] = ()
        self.journal.on_health_change = self._check_journal
        self.heads = HeadHealth({s.name: int(s.silence_timeout_s * 1e9) for s in cfg.scanner})
        self.mqtt = MqttPublisher(
            cfg.mqtt.url,
            client_id=cfg.mqtt.client_id or f"sorterd-{cfg.site.name}-{cfg.site.line}",
            username=cfg.mqtt.username,
            password=cfg.mqtt.password,
            keepalive_s=cfg.mqtt.keepalive_s,
            ca_file=cfg.mqtt.ca_file,
            cert_file=cfg.mqtt.cert_file,
            key_file=cfg.mqtt.key_file,
            will=OutMessage(self.topics.status, encode(status_payload("offline")), 1, True),
            birth=self._status_message,
            on_state=self._on_mqtt_state,
            subscriptions=(f"{self.topics.cmd}/#",),
            on_message=self._on_mqtt_message,
            store=self.journal,
        )
        self.pipeline = Line(
            decider,
            self.tracker,
            self.mqtt.publish,
            self.topics,
            durable=JournalOutbox(self.journal, self.mqtt),
        )
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
        self.pipeline.identifier_sources = identifier_sources(cfg.scanner)
        self.pipeline.extra_stats = self._link_stats
        self.scanners = [
            StreamScanner(
                s.name,
                s.url,
                telegram_format=format_from_options(s.telegram_options()),
                on_state_change=self._on_scanner_state,
                idle_timeout_s=s.silence_timeout_s,
            )
            for s in cfg.scanner
        ]
        self.notifier = SystemdNotifier()
        self.metrics: Metrics | None = None
        if cfg.metrics.listen:
            self.metrics = Metrics()
            self.pipeline.observers.append(self.metrics)
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._manifest_lock = asyncio.Lock()
        self.manifests = ManifestSource(site.manifest_globs)
        self.manifest: Manifest | None = None
        self._reloads: set[asyncio.Task[None]] = set()

    def _status_message(self) -> OutMessage:
        payload = status_payload("online", alarms=self.alarms)
        return OutMessage(self.topics.status, encode(payload), 1, True)

    def _link_stats(self) -> dict[str, Any]:
        plc = self.plc.stats
        js = self.journal.stats
        counters = self.pipeline.counters
        return {
            "mqtt": {
                "connected": self.mqtt.connected,
                "backlog": self.mqtt.backlog,
                "spilled": self.mqtt.spilled,
                "published": self.mqtt.stats.published,
                "dropped": self.mqtt.stats.dropped,
            },
            "journal": {
                "healthy": self.journal.healthy,
                "appended": js.appended,
                "failed": js.failed,
                "unsent": js.unsent,
                "size_mb": round(js.size_bytes / 1e6, 3),
                "disk_free_mb": round(js.disk_free_bytes / 1e6, 1),
                "pruned": js.pruned,
                "alarms": list(self.alarms),
                "replies_repeated": counters.replies_repeated,
                "duplicate_results": counters.duplicate_results,
                "recovered_pending": counters.recovered_pending,
                "recovered_unsent": js.recovered_unsent,
            },
            "plc": {
                "connected": self.plc.connected,
                "requests": plc.requests,
                "replies": plc.replies,
                "confirmations": plc.confirmations,
                "errors": plc.errors,
                "bad_requests": plc.bad_requests,
                "bad_confirmations": plc.bad_confirmations,
                "io_ms_max": round(plc.io_ms_max, 3),
            },
            "scanners": self._scanner_stats(),
        }

    def _on_mqtt_state(self, connected: bool, reason: str) -> None:
        log.info("mqtt link", connected=connected, reason=reason)
        # Retained and coalesced: consumers see it once the broker is back, with the count
        # of connection losses in `errors` and the last reason in `detail`.
        self.pipeline.devices.report("mqtt", connected=connected, detail=reason)

    def _on_scanner_state(self, name: str, connected: bool) -> None:
        scanner = next((s for s in self.scanners if s.name == name), None)
        if scanner is None:
            return
        detail = "connected" if connected else (scanner.last_error or "disconnected")
        change = self.heads.on_link(name, connected, detail, time.monotonic_ns())
        self._publish_head(scanner, change)

    def _publish_head(self, scanner: StreamScanner, change: HeadChange | None) -> None:
        """P/devices/NAME of a head: online while linked and speaking (sorter/heads.py)."""
        if change is None:
            # No change of state; a new error count is still worth publishing.
            self.pipeline.devices.report(
                scanner.name, connected=self.heads.online(scanner.name), errors=scanner.errors
            )
            return
        self.tracker.set_head_alive(scanner.name, change.online)
        seen = scanner.last_seen_ns
        wall = None if seen is None else time.time_ns() - (time.monotonic_ns() - seen)
        log.info("scanner head", head=scanner.name, online=change.online, detail=change.detail)
        self.pipeline.devices.report(
            scanner.name,
            connected=change.online,
            errors=scanner.errors,
            last_seen_wall_ns=wall,
            detail=change.detail,
            force=True,
        )

    async def _watch_heads(self) -> None:
        """Notice heads that went silent, and silent heads that speak again."""
        timeouts_s = [s.silence_timeout_s for s in self.site.config.scanner]
        interval_s = min(1.0, max(0.05, min(timeouts_s) / 4))
        while True:
            await asyncio.sleep(interval_s)
            now = time.monotonic_ns()
            for scanner in self.scanners:
                change = self.heads.on_heard(scanner.name, scanner.last_seen_ns, now)
                if change is not None:
                    self._publish_head(scanner, change)

    def _scanner_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        heads = self.tracker.heads
        for scanner in self.scanners:
            entry = heads[scanner.name].snapshot()
            entry["online"] = self.heads.online(scanner.name)
            entry["heartbeats"] = scanner.stats.heartbeats
            entry["bad_telegrams"] = scanner.stats.bad_telegrams
            # A scanner set to another preset shows here (garbage) rather than as reads.
            entry["garbage_bytes"] = scanner.stats.garbage_bytes
            entry["oversize_frames"] = scanner.stats.oversize_frames
            entry["errors"] = scanner.errors
            out[scanner.name] = entry
        return out

    def request_stop(self) -> None:
        self._stop.set()

    # --- commands and plan reload --------------------------------------------------------

    def _on_mqtt_message(self, topic: str, payload: bytes) -> None:
        prefix = f"{self.topics.cmd}/"
        if not topic.startswith(prefix):
            return
        suffix = topic[len(prefix) :]
        try:
            command = parse_command(suffix, payload)
        except CommandError as exc:
            log.warning("command refused", topic=topic, reason=str(exc))
            self._answer(suffix[:64], exc.request_id, ok=False, reason=str(exc))
            return
        log.info("command", command=command.name, chute=command.chute, id=command.request_id)
        if command.name == "plan/reload":
            self.request_reload(command.request_id)
        elif command.name == "manifest/reload":
            self._spawn(
                self._reload_manifests(force=True, answer=True, request_id=command.request_id),
                "manifest-reload",
            )
        elif command.chute is not None:
            if command.chute not in self.decider.plan.plan.machine_chutes:
                self._answer(
                    command.name,
                    command.request_id,
                    ok=False,
                    reason=f"chute {command.chute} does not exist on the machine",
                )
                return
            action = command.name.split("/")[1]
            if action in ("disable", "enable"):
                self.pipeline.set_host_disabled(command.chute, action == "disable")
            else:
                self.pipeline.set_host_full(command.chute, action == "full")
            self._answer(command.name, command.request_id, ok=True, chute=command.chute)
        elif command.tracking_id is not None:
            decision = self.pipeline.last_decision(command.tracking_id)
            if decision is None:
                self._answer(
                    command.name,
                    command.request_id,
                    ok=False,
                    reason=f"no recent decision for tracking id {command.tracking_id}",
                )
            else:
                self._answer(command.name, command.request_id, ok=True, decision=decision)

    def _answer(self, command: str, request_id: str | None, *, ok: bool, **detail: object) -> None:
        self.mqtt.publish(
            self.topics.cmd_result,
            command_answer(command, request_id, ok=ok, **detail),
            qos=1,
        )

    @property
    def decider(self) -> Decider:
        return self.pipeline.decider

    def request_reload(self, request_id: str | None = None) -> None:
        """Reload the sort plan in the background (SIGHUP, P/cmd/plan/reload)."""
        self._spawn(self._reload(request_id), "plan-reload")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload_manifests(
        self, *, force: bool = False, answer: bool = False, request_id: str | None = None
    ) -> None:
        """Rebuild the pre-advice index beside the running one, then swap it in."""
        async with self._manifest_lock:
            if not force and not await asyncio.to_thread(self.manifests.changed):
                return
            names = self.decider.destination_names
            t0 = time.perf_counter()
            manifest = await asyncio.to_thread(self.manifests.build, names)
            self.decider.use_manifest(manifest)
            self.manifest = manifest  # the old index is freed here
            elapsed_ms = (time.perf_counter() - t0) * 1000
            # The build's temporaries and the old index are free, but glibc keeps much of
            # them resident until asked: tens of bytes a row, for the whole run.
            await asyncio.to_thread(release_free_memory)
            log.info(
                "manifests loaded",
                files=len(manifest.reports),
                rows=manifest.rows,
                barcodes=manifest.size,
                bad_rows=manifest.bad_rows,
                ms=round(elapsed_ms, 1),
            )
            for report in manifest.reports:
                for problem in report.problems[:5]:
                    log.warning("manifest", problem=str(problem))
            if answer:
                self._answer(
                    "manifest/reload",
                    request_id,
                    ok=True,
                    files=len(manifest.reports),
                    rows=manifest.rows,
                    bad_rows=manifest.bad_rows,
                )

    async def _watch_manifests(self) -> None:
        interval_s = self.site.config.manifest.poll_interval_s
        while True:
            await asyncio.sleep(interval_s)
            await self._reload_manifests()

    async def _reload(self, request_id: str | None) -> None:
        async with self._reload_lock:
            path = self.site.plan_path
            try:
                # Load, check, compile and warm off the event loop: decisions go on meanwhile.
                decider = await asyncio.to_thread(self._build_decider)
            except ConfigError as exc:
                reasons = [str(p) for p in exc.problems]
                log.error("plan reload refused, old plan kept", problems=reasons)  # noqa: TRY400
                self._answer("plan/reload", request_id, ok=False, reason="; ".join(reasons))
                return
            old = self.decider.plan.plan.name
            for warning in decider.plan.plan.warnings:
                log.warning("sort plan", problem=str(warning))
            decider.use_manifest(self.manifest)  # same rows, the new plan's destinations
            self.pipeline.swap_decider(decider)
            if self.manifests.globs:
                # Rows naming a destination only the new plan has are read again.
                self._spawn(self._reload_manifests(force=True), "manifest-reload")
            self.plc.max_chute = decider.plan.plan.max_chute
            log.info("plan reloaded", old=old, new=decider.plan.plan.name, file=str(path))
            self._answer(
                "plan/reload",
                request_id,
                ok=True,
                plan=decider.plan.plan.name,
                destinations=len(decider.plan.plan.destinations),
                rules=len(decider.plan.plan.rules),
            )

    def _build_decider(self) -> Decider:
        plan = compile_plan(load_plan(self.site.plan_path))
        decider = Decider(
            plan,
            ChuteState.for_plan(plan),
            self.site.config.site.timezone,
            site_country=self.site.config.site.country,
        )
        decider.warm()
        return decider

    async def run(self, on_ready: Callable[[Daemon], None] | None = None) -> None:
        """Run until request_stop(); then publish offline status and flush the outbox."""
        t0 = time.perf_counter()
        await asyncio.to_thread(self.decider.warm)  # compiled or loaded from numba's cache
        await asyncio.to_thread(warm_manifest_kernels)
        # Loading the kernels leaves megabytes freed but resident; given back here, a
        # daemon with manifests and one without differ by the index alone.
        await asyncio.to_thread(release_free_memory)
        self.times.warm_ms = (time.perf_counter() - t0) * 1000
        if self.manifests.globs:
            await self._reload_manifests(force=True)
        if self.metrics is not None and self.site.config.metrics.listen:
            host, _, port = self.site.config.metrics.listen.rpartition(":")
            bound = self.metrics.start(host.strip("[]"), int(port))
            log.info("metrics endpoint", url=f"http://{host}:{bound}/metrics")
        recovered = self.journal.recover()
        self.pipeline.restore(recovered)
        if recovered.pending or self.journal.stats.recovered_unsent:
            log.info(
                "journal recovered",
                pending_requests=len(recovered.pending),
                unsent_messages=self.journal.stats.recovered_unsent,
                awaiting_confirmation=len(recovered.assigned),
            )
        self._check_journal()
        tune_gc()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self.mqtt.run(), name="mqtt"),
                    tg.create_task(self.plc.run(), name="plc"),
                    tg.create_task(self.pipeline.run_timer(), name="timer"),
                    tg.create_task(self._watch_manifests(), name="manifests"),
                    tg.create_task(self._journal_upkeep(), name="journal"),
                    tg.create_task(self._watch_heads(), name="scanner-heads"),
                    tg.create_task(
                        run_watchdog(self.notifier, lambda: not self._stop.is_set()),
                        name="watchdog",
                    ),
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
                self.notifier.ready(f"plan {self.decider.plan.plan.name}")
                if on_ready is not None:
                    on_ready(self)
                await self._stop.wait()
                await self._shutdown()
                for task in tasks:
                    task.cancel()
        finally:
            for scanner in self.scanners:
                await scanner.__aexit__(None, None, None)
            if self.metrics is not None:
                await asyncio.to_thread(self.metrics.stop)  # safe twice
            self.journal.close()

    def _check_journal(self) -> None:
        """Alarms on P/status and the journal's device state, when they change. Writes
        nothing to the journal, so a health change reported from a failed write cannot
        come back here."""
        alarms = tuple(self.journal.check_space())
        if alarms != self.alarms:
            log.warning("alarms", alarms=list(alarms), was=list(self.alarms))
            self.alarms = alarms
            self.mqtt.publish_raw(self._status_message())
        self.pipeline.devices.report(
            "journal",
            connected=self.journal.healthy,
            errors=self.journal.stats.failed,
            detail=self.journal.last_error or ", ".join(alarms),
        )

    async def _journal_upkeep(self) -> None:
        next_prune = time.monotonic()
        while True:
            if time.monotonic() >= next_prune:
                for _ in range(MAX_PRUNE_BATCHES):
                    if self.journal.prune() < PRUNE_BATCH_ROWS:
                        break
                    await asyncio.sleep(0.05)  # batch by batch: the line runs in between
                next_prune = time.monotonic() + JOURNAL_PRUNE_S
            self.journal.persist_sent()
            self._check_journal()
            await asyncio.sleep(JOURNAL_CHECK_S)

    async def _shutdown(self) -> None:
        """Graceful stop: answer what is waiting, say offline, flush within a bound."""
        log.info("sorterd stopping", waiting=self.tracker.waiting, backlog=self.mqtt.backlog)
        self.notifier.stopping()
        # New requests stay in the PLC's ring for the next start: anything taken now could
        # be acknowledged and then not answered before the process ends.
        self.plc.stop_intake()
        # Requests still waiting for a scan are answered now rather than left to the PLC's
        # timeout: the timer decides them with reason timeout at once.
        self.pipeline.answer_waiting()
        await self.plc.wait_replies_written(timeout_s=1.0)
        self.mqtt.publish(self.topics.status, status_payload("offline"), qos=1, retain=True)
        flushed = await self.mqtt.flush(SHUTDOWN_FLUSH_S)
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)
        log.info("sorterd stopped", flushed=flushed, backlog=self.mqtt.backlog)
