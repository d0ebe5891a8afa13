"""Commands arriving on P/cmd/...: parsed and bounded here into typed values, executed by
the daemon (sorterd/control.py).

Accepted shapes (P = the topic prefix), each with an optional JSON payload
`{"id": "..."}` that the answer on P/cmd-result echoes:

    P/cmd/plan/reload                 reload the sort plan file (also SIGHUP)
    P/cmd/manifest/reload             look for new, changed or removed manifest files now
    P/cmd/chute/N/disable             the host stops sending items to chute N
    P/cmd/chute/N/enable              ... and starts again
    P/cmd/chute/N/full                an operator marks chute N full by hand
    P/cmd/chute/N/emptied             ... and emptied (its count starts again)
    P/cmd/tracking/ID/query           the last decision for tracking id ID

Anything else, a payload over 1 KiB, or a payload that is not a JSON object is refused
with a reason; nothing is executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from sorter.errors import SorterdError

__all__ = [
    "CHUTE_ACTIONS",
    "MAX_ID_CHARS",
    "MAX_PAYLOAD_BYTES",
    "ChuteAction",
    "ChuteCommand",
    "Command",
    "CommandError",
    "CommandName",
    "ManifestReload",
    "PlanReload",
    "TrackingQuery",
    "parse_command",
]

MAX_PAYLOAD_BYTES = 1024
MAX_ID_CHARS = 64
MAX_CHUTE_DIGITS = 4  # machine chutes are 1..999 (docs/interfaces.md, sort plan)
MAX_TRACKING_DIGITS = 10  # tracking ids are 32-bit registers


class CommandName(StrEnum):
    """The `command` field of the answer on P/cmd-result."""

    PLAN_RELOAD = "plan/reload"
    MANIFEST_RELOAD = "manifest/reload"
    CHUTE_DISABLE = "chute/disable"
    CHUTE_ENABLE = "chute/enable"
    CHUTE_FULL = "chute/full"
    CHUTE_EMPTIED = "chute/emptied"
    TRACKING_QUERY = "tracking/query"


class ChuteAction(StrEnum):
    """The last topic level of P/cmd/chute/N/ACTION."""

    DISABLE = "disable"
    ENABLE = "enable"
    FULL = "full"
    EMPTIED = "emptied"


CHUTE_ACTIONS = tuple(action.value for action in ChuteAction)


class CommandError(SorterdError, ValueError):
    """A command that is not one of the documented shapes."""

    def __init__(self, reason: str, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class PlanReload:
    request_id: str | None = None

    @property
    def name(self) -> CommandName:
        return CommandName.PLAN_RELOAD


@dataclass(frozen=True, slots=True)
class ManifestReload:
    request_id: str | None = None

    @property
    def name(self) -> CommandName:
        return CommandName.MANIFEST_RELOAD


@dataclass(frozen=True, slots=True)
class ChuteCommand:
    chute: int
    action: ChuteAction
    request_id: str | None = None

    @property
    def name(self) -> CommandName:
        return CommandName(f"chute/{self.action.value}")


@dataclass(frozen=True, slots=True)
class TrackingQuery:
    tracking_id: int
    request_id: str | None = None

    @property
    def name(self) -> CommandName:
        return CommandName.TRACKING_QUERY


Command = PlanReload | ManifestReload | ChuteCommand | TrackingQuery


def _request_id(payload: bytes) -> str | None:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError(f"payload over {MAX_PAYLOAD_BYTES} bytes")
    if not payload.strip():
        return None
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"payload is not JSON: {exc}") from None
    except RecursionError:
        # 1 KiB of '[' nests deeper than the decoder's recursion limit (found by fuzzing):
        # it must be a refusal, not an exception out of the MQTT receive task.
        raise CommandError("payload is nested too deeply") from None
    if not isinstance(data, dict):
        raise CommandError("payload must be a JSON object")
    unknown = set(data) - {"id"}
    rid = data.get("id")
    if rid is not None and (not isinstance(rid, str) or len(rid) > MAX_ID_CHARS):
        raise CommandError(f"id must be a string of at most {MAX_ID_CHARS} characters")
    if rid is not None and not rid.isprintable():
        # JSON allows lone surrogates ("\ud800") and control characters: an id that cannot be
        # sent back in the answer (UTF-8) or shown in a log line is refused, without an id.
        raise CommandError("id must be printable text")
    if unknown:
        raise CommandError(f"unknown payload key(s): {', '.join(sorted(unknown))}", rid)
    return rid


def parse_command(suffix: str, payload: bytes) -> Command:
    """`suffix` is the topic after P/cmd/; raises CommandError with the reason."""
    request_id = _request_id(payload)
    parts = suffix.split("/")
    if parts == ["plan", "reload"]:
        return PlanReload(request_id)
    if parts == ["manifest", "reload"]:
        return ManifestReload(request_id)
    if len(parts) == 3 and parts[0] == "chute" and parts[2] in CHUTE_ACTIONS:
        text = parts[1]
        if not text.isascii() or not text.isdigit() or len(text) > MAX_CHUTE_DIGITS:
            raise CommandError(f"chute {text[:16]!r} is not a chute number", request_id)
        return ChuteCommand(int(text), ChuteAction(parts[2]), request_id)
    if len(parts) == 3 and parts[0] == "tracking" and parts[2] == "query":
        text = parts[1]
        if (
            not text.isascii()
            or not text.isdigit()
            or len(text) > MAX_TRACKING_DIGITS
            or int(text) >= 1 << 32
        ):
            raise CommandError(f"tracking id {text[:16]!r} is not 0..4294967295", request_id)
        return TrackingQuery(int(text), request_id)
    raise CommandError(f"unknown command {suffix[:64]!r}", request_id)
