"""The parts of one sorter line, built from the site config; the daemon wires them up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from drivers.journal import Journal, JournalOutbox
from drivers.metrics import Metrics
from drivers.mqtt import MqttPublisher, OutMessage
from drivers.plc import PlcLink
from drivers.scanner import StreamScanner
from drivers.telegram import format_from_options
from sorter.config import Site, SiteConfig, identifier_sources
from sorter.contract import Topics
from sorter.decide import Decider
from sorter.feeds import LiveManifest
from sorter.heads import HeadHealth
from sorter.kernel import ChuteState, Kernel
from sorter.line import Line
from sorter.plan import CompiledPlan
from sorter.tracker import Tracker
from sorterd.feeds_worker import FeedWorker
from sorterd.status import offline_message
from sorterd.systemd import SystemdNotifier

__all__ = ["Feeds", "Hooks", "Parts", "build_parts", "new_decider"]


class Hooks(Protocol):
    """What the parts call back into while the line runs."""

    def status_message(self) -> OutMessage:
        """The retained P/status sent on every connect to the broker."""
        ...

    def on_mqtt_state(self, connected: bool, reason: str) -> None: ...
    def on_mqtt_message(self, topic: str, payload: bytes) -> None: ...
    def on_scanner_state(self, name: str, connected: bool) -> None: ...
    def on_journal_health(self) -> None: ...
    def on_feeds_state(self, connected: bool, reason: str) -> None: ...
    def link_stats(self) -> dict[str, Any]:
        """The device sections of P/stats."""
        ...


@dataclass(frozen=True, slots=True)
class Parts:
    topics: Topics
    tracker: Tracker
    journal: Journal
    heads: HeadHealth
    mqtt: MqttPublisher
    pipeline: Line
    plc: PlcLink
    scanners: tuple[StreamScanner, ...]
    notifier: SystemdNotifier
    metrics: Metrics | None  # None: no [metrics] listen address
    feeds: Feeds | None  # None: no [feeds] topic


@dataclass(frozen=True, slots=True)
class Feeds:
    """The live feeds (docs/interfaces.md section 7): the index the decider uses, what
    applies and journals feed messages, and their subscription."""

    live: LiveManifest
    worker: FeedWorker


def new_decider(site: Site, plan: CompiledPlan, kernel: Kernel | None = None) -> Decider:
    """A decider for `plan` with fresh chute state (the pipeline carries the live state)."""
    return Decider(
        plan,
        ChuteState.for_plan(plan),
        site.config.site.timezone,
        kernel,
        site_country=site.config.site.country,
    )


def build_parts(site: Site, plan: CompiledPlan, hooks: Hooks) -> Parts:
    cfg = site.config
    topics = Topics(cfg.mqtt.topic_prefix)
    tracker = _tracker(cfg)
    jc = cfg.journal
    journal = Journal(
        site.journal_path,
        max_size_mb=jc.max_size_mb,
        retention_h=jc.retention_h,
        synchronous=jc.synchronous,
        min_free_mb=jc.min_free_mb,
        deferred_sync=True,
    )
    journal.health.on_change = hooks.on_journal_health
    mqtt = _mqtt(cfg, topics, journal, hooks)
    pipeline = Line(
        new_decider(site, plan, Kernel(plan)),
        tracker,
        mqtt.publish,
        topics,
        durable=JournalOutbox(journal, mqtt),
    )
    plc = PlcLink(
        cfg.plc.url,
        pipeline,
        device_id=cfg.plc.device_id,
        poll_interval_ms=cfg.plc.poll_interval_ms,
        heartbeat_timeout_ms=cfg.plc.heartbeat_timeout_ms,
        request_timeout_ms=cfg.plc.request_timeout_ms,
        chute_status_interval_ms=cfg.plc.chute_status_interval_ms,
        max_chute=pipeline.decider.sort_plan.max_chute,
        durable=journal.synced,
        poll_on_read=cfg.plc.poll_on_read,
    )
    feeds = _feeds(site, pipeline.decider, hooks)
    pipeline.bind_reply(plc.queue_reply)
    pipeline.on_read_ahead = plc.expect_request
    pipeline.identifier_sources = identifier_sources(cfg.scanner)
    pipeline.extra_stats = hooks.link_stats
    metrics = Metrics() if cfg.metrics.listen else None
    if metrics is not None:
        pipeline.observers.append(metrics)
    return Parts(
        topics=topics,
        tracker=tracker,
        journal=journal,
        heads=HeadHealth({s.name: int(s.silence_timeout_s * 1e9) for s in cfg.scanner}),
        mqtt=mqtt,
        pipeline=pipeline,
        plc=plc,
        scanners=_scanners(cfg, hooks),
        notifier=SystemdNotifier(),
        metrics=metrics,
        feeds=feeds,
    )


def _feeds(site: Site, decider: Decider, hooks: Hooks) -> Feeds | None:
    if not site.config.feeds.topics:
        return None
    live = LiveManifest(None, decider.destination_names)
    decider.use_manifest(live)  # the file manifest comes into it (sorterd/reload.py)
    # The subscription, parsing and journaling run in the feeds worker's process.
    return Feeds(live, FeedWorker(site, live, hooks.on_feeds_state))


def _tracker(cfg: SiteConfig) -> Tracker:
    tracking = cfg.tracking
    return Tracker(
        scan_wait_ns=tracking.scan_wait_ms * 1_000_000,
        scan_ttl_ns=int(tracking.scan_ttl_s * 1e9),
        heads={s.name: s.tunnel or s.name for s in cfg.scanner},
        window_before_ns=tracking.window_before_ms * 1_000_000,
        window_after_ns=tracking.window_after_ms * 1_000_000,
        merge_window_ns=tracking.merge_window_ms * 1_000_000,
        head_miss_limit=tracking.head_miss_limit,
        item_spacing_ns=tracking.item_spacing_ms and tracking.item_spacing_ms * 1_000_000,
    )


def _mqtt(cfg: SiteConfig, topics: Topics, journal: Journal, hooks: Hooks) -> MqttPublisher:
    mc = cfg.mqtt
    return MqttPublisher(
        mc.url,
        client_id=mc.client_id or f"sorterd-{cfg.site.name}-{cfg.site.line}",
        username=mc.username,
        password=mc.password,
        keepalive_s=mc.keepalive_s,
        ca_file=mc.ca_file,
        cert_file=mc.cert_file,
        key_file=mc.key_file,
        will=offline_message(topics),
        birth=hooks.status_message,
        on_state=hooks.on_mqtt_state,
        subscriptions=(f"{topics.cmd}/#",),
        on_message=hooks.on_mqtt_message,
        store=journal,
    )


def _scanners(cfg: SiteConfig, hooks: Hooks) -> tuple[StreamScanner, ...]:
    return tuple(
        StreamScanner(
            s.name,
            s.url,
            telegram_format=format_from_options(s.telegram_options()),
            on_state_change=hooks.on_scanner_state,
            idle_timeout_s=s.silence_timeout_s,
        )
        for s in cfg.scanner
    )
