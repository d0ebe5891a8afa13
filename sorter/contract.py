"""The MQTT contract in one place: topic names and every payload sorterd publishes.

docs/interfaces.md section 5 is the specification; this module is its only
implementation. Key order matters to nobody reading JSON but it is part of the bytes on the
wire, so each payload is built in the order the document lists its keys. The line core
hands typed events (`sorter.line_events`) to `Messages`, which stamps each decision and
result with its message id and time; the daemon uses `status_payload` and
`command_answer` for P/status and P/cmd-result.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sorter import __version__
from sorter.line_events import ChuteChange, Decided, DeviceReport, ResultRecorded
from sorter.ports import ChuteFlag, MessageKind, Outgoing

if TYPE_CHECKING:
    from sorter.decide import Decider
    from sorter.manifest import Manifest
    from sorter.stats import FeedStats

__all__ = [
    "MessageIds",
    "Messages",
    "Topics",
    "chute_state_word",
    "command_answer",
    "feeds_figures",
    "iso_from_ns",
    "iso_now",
    "manifest_figures",
    "status_payload",
]


def iso_now() -> str:
    """ISO 8601 UTC with milliseconds, as every MQTT payload carries."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_ns(wall_ns: int) -> str:
    """`iso_now`'s format for a wall-clock time in ns since the epoch."""
    stamp = dt.datetime.fromtimestamp(wall_ns / 1e9, dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names under `mqtt.topic_prefix`."""

    prefix: str

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}/decisions"

    @property
    def results(self) -> str:
        return f"{self.prefix}/results"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/stats"

    @property
    def cmd(self) -> str:
        return f"{self.prefix}/cmd"

    @property
    def cmd_result(self) -> str:
        return f"{self.prefix}/cmd-result"

    def chute(self, n: int) -> str:
        return f"{self.prefix}/chutes/{n}"

    def device(self, name: str) -> str:
        return f"{self.prefix}/devices/{name}"


def status_payload(state: str, alarms: Sequence[str] | None = None) -> dict[str, Any]:
    """P/status: online or offline, the version and since when; `alarms` (online only)."""
    payload: dict[str, Any] = {"state": state, "version": __version__, "since": iso_now()}
    if alarms is not None:
        payload["alarms"] = list(alarms)
    return payload


def command_answer(
    command: str, request_id: str | None, *, ok: bool, **detail: object
) -> dict[str, Any]:
    """P/cmd-result: one answer per command; `detail` carries `reason` on a refusal, or
    what the command reports (`chute`, `decision`, `plan`, ...)."""
    return {"id": request_id, "ts": iso_now(), "command": command, "ok": ok, **detail}


def chute_state_word(flags: int) -> str:
    """The `state` of P/chutes/N: a fault outranks a disable, which outranks full."""
    if flags & ChuteFlag.FAULT:
        return "fault"
    if flags & ChuteFlag.DISABLED:
        return "disabled"
    if flags & ChuteFlag.FULL:
        return "full"
    return "ok"


def manifest_figures(
    manifest: Manifest | None, lookups: int, hits: int
) -> dict[str, int | float | None]:
    """The `manifest` block of P/stats."""
    return {
        "rows": manifest.rows if manifest is not None else 0,
        "barcodes": manifest.size if manifest is not None else 0,
        "files": len(manifest.reports) if manifest is not None else 0,
        "bad_rows": manifest.bad_rows if manifest is not None else 0,
        "lookups": lookups,
        "hit_rate": round(hits / lookups, 4) if lookups else None,
    }


def feeds_figures(stats: FeedStats, delta_rows: int) -> dict[str, Any]:
    """The `feeds` block of P/stats: the six keys of docs/interfaces.md section 7 first,
    then the bad rows by reason, the duplicates skipped and the entries replayed."""
    p50, p99 = stats.lag_percentiles()
    return {
        "rows_applied": stats.rows_applied,
        "customs_applied": stats.customs_applied,
        "bad_rows": stats.bad_rows,
        "lag_ms_p50": p50,
        "lag_ms_p99": p99,
        "delta_rows": delta_rows,
        "bad_reasons": dict(stats.bad_reasons),
        "duplicates": stats.duplicates,
        "replayed": stats.replayed,
    }


class MessageIds:
    """Message ids: unique per message (this process's pid and start time, then a count),
    and the same on every re-send, since the journal stores the payload with its id."""

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = f"{os.getpid():x}{time.time_ns() // 1_000_000:x}"
        self._count = itertools.count(1)

    def next(self, letter: str) -> str:
        """The next id, `letter` saying the kind of message ("d" decision, "r" result)."""
        return f"{letter}-{self._prefix}-{next(self._count)}"


class Messages:
    """Turns the line's events into MQTT messages for one topic prefix."""

    def __init__(self, topics: Topics, ids: MessageIds | None = None) -> None:
        self.topics = topics
        self.ids = ids or MessageIds()

    def decision(self, e: Decided) -> Outgoing:
        """P/decisions, with what the journal keeps of it."""
        req, choice = e.request, e.choice
        payload = {
            "id": self.ids.next("d"),
            "ts": iso_now(),
            "tracking_id": req.tracking_id,
            "seq": req.seq,
            # A tuple: the payload then holds nothing the cyclic GC must track, and the
            # 10,000 kept for P/cmd/tracking drop out of its passes (JSON: an array).
            "codes": tuple(e.codes),
            "barcode": choice.barcode,
            "destination": choice.destination,
            "chute": choice.chute,
            "reason": choice.reason.word,
            "recirculations": e.recirculations,
            "latency_ms": round(e.latency_ms, 3),
        }
        return Outgoing(
            MessageKind.DECISION,
            req.tracking_id,
            req.seq,
            chute=choice.chute,
            barcode=choice.barcode,
            destination=choice.destination,
            recirculations=e.recirculations,
            outcome=0,
            topic=self.topics.decisions,
            payload=payload,
        )

    def result(self, e: ResultRecorded) -> Outgoing:
        """P/results, with what the journal keeps of it (`chute` is the actual one)."""
        conf, assigned = e.confirmation, e.assigned
        payload = {
            "id": self.ids.next("r"),
            "ts": iso_now(),
            "tracking_id": conf.tracking_id,
            "seq": conf.seq,
            "barcode": assigned.barcode,
            "destination": assigned.destination,
            "chute_assigned": assigned.chute,
            "chute_actual": conf.chute_actual,
            "outcome": conf.outcome.word,
            "recirculations": conf.recirculations,
        }
        return Outgoing(
            MessageKind.RESULT,
            conf.tracking_id,
            conf.seq,
            chute=conf.chute_actual,
            barcode=assigned.barcode,
            destination=assigned.destination,
            recirculations=conf.recirculations,
            outcome=int(conf.outcome),
            topic=self.topics.results,
            payload=payload,
        )

    def chute(self, e: ChuteChange) -> tuple[str, dict[str, Any]]:
        """P/chutes/N (QoS 1, retained)."""
        payload = {
            "state": chute_state_word(e.flags),
            "destination": e.destination,
            "count": e.count,
        }
        return self.topics.chute(e.chute), payload

    def device(self, e: DeviceReport) -> tuple[str, dict[str, Any]]:
        """P/devices/NAME (QoS 1, retained)."""
        last_seen = None if e.last_seen_wall_ns is None else iso_from_ns(e.last_seen_wall_ns)
        payload = {
            "connected": e.connected,
            "errors": e.errors,
            "last_seen": last_seen,
            "detail": e.detail,
        }
        return self.topics.device(e.name), payload

    def stats(
        self,
        line: dict[str, Any],
        decider: Decider,
        tracker: dict[str, Any],
        links: dict[str, Any] | None,
    ) -> tuple[str, dict[str, Any]]:
        """P/stats (QoS 0, retained). `line` is `LineStats.snapshot()`, completed in place;
        `tracker` the tracker's snapshot; `links` the figures of the parts around the line
        (MQTT outbox, journal, PLC link, scanners)."""
        line["ts"] = iso_now()
        line["manifest"] = manifest_figures(
            decider.manifest, decider.manifest_lookups, decider.manifest_hits
        )
        # Invalid codes read beside valid ones and ignored (a misread second label).
        line["codes"] = {"invalid_ignored": decider.invalid_ignored}
        line["tracker"] = tracker
        if links is not None:
            line.update(links)
        return self.topics.stats, line
