"""What the daemon says about itself: P/status, the device sections of P/stats, and the
answers to commands on P/cmd-result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from drivers.mqtt import MqttPublisher, OutMessage, encode
from sorter.contract import Topics, command_answer, status_payload

if TYPE_CHECKING:
    from sorterd.parts import Parts

__all__ = ["Answers", "link_stats", "offline_message", "scanner_stats", "status_message"]


def status_message(topics: Topics, alarms: Sequence[str]) -> OutMessage:
    """Retained P/status "online", with the journal's alarms."""
    payload = status_payload("online", alarms=alarms)
    return OutMessage(topics.status, encode(payload), 1, True)


def offline_message(topics: Topics) -> OutMessage:
    """Retained P/status "offline": the broker's last will."""
    return OutMessage(topics.status, encode(status_payload("offline")), 1, True)


class Answers:
    """Publishes the one answer of each command on P/cmd-result (QoS 1, not retained)."""

    def __init__(self, mqtt: MqttPublisher, topics: Topics) -> None:
        self._mqtt = mqtt
        self._topic = topics.cmd_result

    def __call__(self, command: str, request_id: str | None, *, ok: bool, **detail: object) -> None:
        """`command`: the command's name, or the topic suffix of one that was refused."""
        self._mqtt.publish(
            self._topic,
            command_answer(command, request_id, ok=ok, **detail),
            qos=1,
        )


def link_stats(parts: Parts, alarms: Sequence[str]) -> dict[str, Any]:
    """The "mqtt", "journal", "plc" and "scanners" sections of P/stats, and "feeds" when
    the site has live feeds."""
    out = {
        "mqtt": _mqtt_stats(parts),
        "journal": _journal_stats(parts, alarms),
        "plc": _plc_stats(parts),
        "scanners": scanner_stats(parts),
    }
    if parts.feeds is not None:
        out["feeds"] = parts.feeds.worker.figures()
    return out


def _mqtt_stats(parts: Parts) -> dict[str, Any]:
    mqtt = parts.mqtt
    return {
        "connected": mqtt.connected,
        "backlog": mqtt.backlog,
        "spilled": mqtt.spilled,
        "published": mqtt.stats.published,
        "dropped": mqtt.stats.dropped,
    }


def _journal_stats(parts: Parts, alarms: Sequence[str]) -> dict[str, Any]:
    journal = parts.journal
    js = journal.stats
    counters = parts.pipeline.counters
    return {
        "healthy": journal.healthy,
        "appended": js.appended,
        "failed": js.failed,
        "unsent": js.unsent,
        "size_mb": round(js.size_bytes / 1e6, 3),
        "disk_free_mb": round(js.disk_free_bytes / 1e6, 1),
        "pruned": js.pruned,
        "alarms": list(alarms),
        "replies_repeated": counters.replies_repeated,
        "duplicate_results": counters.duplicate_results,
        "recovered_pending": counters.recovered_pending,
        "recovered_unsent": js.recovered_unsent,
    }


def _plc_stats(parts: Parts) -> dict[str, Any]:
    plc = parts.plc.stats
    return {
        "connected": parts.plc.connected,
        "polls": plc.cycles,  # header reads: poll cycles and read-ahead polls
        "requests": plc.requests,
        "replies": plc.replies,
        "confirmations": plc.confirmations,
        "errors": plc.errors,
        "bad_requests": plc.bad_requests,
        "bad_confirmations": plc.bad_confirmations,
        "io_ms_max": round(plc.io_ms_max, 3),
    }


def scanner_stats(parts: Parts) -> dict[str, Any]:
    """Per head: the tracker's window counts, link health and telegram counts."""
    out: dict[str, Any] = {}
    heads = parts.tracker.heads
    for scanner in parts.scanners:
        entry = heads[scanner.name].snapshot()
        entry["online"] = parts.heads.online(scanner.name)
        entry["heartbeats"] = scanner.stats.heartbeats
        entry["bad_telegrams"] = scanner.stats.bad_telegrams
        # A scanner set to another preset shows here (garbage) rather than as reads.
        entry["garbage_bytes"] = scanner.stats.garbage_bytes
        entry["oversize_frames"] = scanner.stats.oversize_frames
        entry["errors"] = scanner.errors
        out[scanner.name] = entry
    return out
