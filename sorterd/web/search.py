"""Search by barcode: the archive when the site has `[archive]` (the lookup of
`sorterd trace`, sorterd/trace.py), else what the lines said on MQTT.

Without the archive, the console remembers the last decisions it saw of every line (their
codes, barcode and tracking id, sorterd/web/model.py) and asks the line that decided a
found item for its own record with the tracking query (P/cmd/tracking/ID/query), which
adds which pre-advice decided it; a number is also looked up as a tracking id on every
line. The archive's history is complete; the console's memory covers about the last half
hour and only what it saw while running.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import structlog

from drivers.archive_db import ArchiveDbError, connect_sync, describe_error
from drivers.archive_rows import trace_json
from sorter.config import ArchiveSection
from sorter.errors import SorterdError
from sorterd.trace import find
from sorterd.web.feed import BrokerAwayError, LineFeed
from sorterd.web.model import HubModel, decision_shown

__all__ = ["MAX_CODE_CHARS", "search"]

MAX_CODE_CHARS = 128
log = structlog.get_logger(__name__)

QUERY_TIMEOUT_S = 2.0
MAX_TRACKING_ID = (1 << 32) - 1


def _archive_rows(section: ArchiveSection, code: str) -> list[dict[str, Any]]:
    """`sorterd trace`'s lookup; ArchiveDbError (one line, no password) when it fails."""
    try:
        with connect_sync(section.url, section.password) as conn:
            return [trace_json(row) for row in find(conn, code)]
    except psycopg.Error as exc:
        raise ArchiveDbError(f"archive database: {describe_error(exc, section.password)}") from None


async def _query(feed: LineFeed, prefix: str, tracking_id: int) -> dict[str, Any] | None:
    try:
        answer = await feed.command(
            prefix, f"tracking/{tracking_id}/query", timeout_s=QUERY_TIMEOUT_S
        )
    except (BrokerAwayError, TimeoutError):
        return None
    return answer if answer.get("ok") is True else None


async def _from_lines(hub: HubModel, feed: LineFeed, code: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for line in list(hub.lines.values()):
        for found in line.search(code):
            rows.append({"kind": "decision", **found})
    asks = {(r["line"], r["tracking_id"]) for r in rows if isinstance(r["tracking_id"], int)}
    if code.isascii() and code.isdigit() and int(code) <= MAX_TRACKING_ID:
        asks |= {(prefix, int(code)) for prefix in hub.lines}
    answers = await asyncio.gather(*(_query(feed, p, t) for p, t in sorted(asks)))
    for (prefix, _), answer in zip(sorted(asks), answers, strict=True):
        decision = answer.get("decision") if answer else None
        if not isinstance(decision, dict):
            continue
        known = next(
            (
                r
                for r in rows
                if r["line"] == prefix
                and (r["tracking_id"], r["seq"])
                == (decision.get("tracking_id"), decision.get("seq"))
            ),
            None,
        )
        if known is not None:
            known["source"] = answer.get("source") if answer else None
            continue
        rows.append(
            {
                "kind": "decision",
                "line": prefix,
                **decision_shown(decision),
                "source": answer.get("source") if answer else None,
                "outcome": None,
            }
        )  # fmt: skip
    rows.sort(key=lambda r: str(r.get("ts") or ""))
    return rows


async def search(
    code: str, hub: HubModel, feed: LineFeed, archive: ArchiveSection | None
) -> dict[str, Any]:
    """`{"source": "archive"|"lines", "rows": [...]}`, oldest first. When the archive
    cannot be asked, the lines are, and `note` says why."""
    note = None
    if archive is not None:
        try:
            rows = await asyncio.to_thread(_archive_rows, archive, code)
        except SorterdError as exc:
            log.warning("search: the archive failed, asking the lines", error=str(exc))
            note = f"the archive is not answering ({exc}); searched the lines instead"
        else:
            return {"source": "archive", "rows": rows}
    found: dict[str, Any] = {"source": "lines", "rows": await _from_lines(hub, feed, code)}
    if note is not None:
        found["note"] = note
    return found
