"""`GET /api/events`: the live stream of one page, as server-sent events.

The first event carries everything the page shows; each later one only what changed since
the page's last event (the model's versions), at most one every `MIN_INTERVAL_S`: however
fast the line publishes, a page renders at most 4 times a second. An `alive` event every
`KEEPALIVE_S` when nothing changes lets the page (and any proxy) see that the console is
there, so a page whose connection silently died notices and reconnects; when the console
goes, the browser's EventSource reconnects by itself (`retry`), and the page says
"disconnected" meanwhile. The broker's state is in every
event: the page says so too when the console lost the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from sorterd.web.app import KEY, Console, session_of

__all__ = ["KEEPALIVE_S", "MIN_INTERVAL_S", "events"]

MIN_INTERVAL_S = 0.25
KEEPALIVE_S = 10.0
CHARTS_INTERVAL_S = 5.0
RETRY_MS = 1000


def _event(console: Console, prefix: str, view: str, since: int, charts: bool) -> dict[str, Any]:
    hub = console.hub
    now_s = time.time()
    out: dict[str, Any] = {"v": hub.versions.value, "broker": hub.broker(), "now": now_s}
    line = hub.lines.get(prefix)
    if line is not None:
        out.update(line.delta(since, now_s, charts=charts))
    if view == "hub":
        out["hub"] = [hub.lines[p].summary() for p in sorted(hub.lines)]
    return out


async def _wait_change(console: Console, since: int) -> bool:
    """True once something changed after version `since`; False after KEEPALIVE_S of quiet."""
    try:
        async with asyncio.timeout(KEEPALIVE_S):
            while console.hub.versions.value <= since and not console.stopping.is_set():
                await console.changes.wait()
    except TimeoutError:
        return False
    return True


def _worth_sending(body: dict[str, Any], last: str) -> tuple[bool, str]:
    """Whether an event changes anything this page shows; the page's summary as sent."""
    summary = json.dumps([body.get("line"), body["broker"], body.get("hub")], default=str)
    changed = summary != last or any(
        body.get(key) for key in ("chutes", "devices", "decisions", "charts")
    )
    return changed, summary


async def events(request: web.Request) -> web.StreamResponse:
    found = session_of(request)
    if found is None:
        return web.json_response({"ok": False, "reason": "sign in first"}, status=401)
    console = request.app[KEY]
    prefix = console.line_of(request)
    view = request.query.get("view", "wall")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a reverse proxy must not hold events back
        }
    )
    await response.prepare(request)
    since, charts_at, last = 0, 0.0, ""
    with contextlib.suppress(ConnectionError):
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        while not console.stopping.is_set():
            if session_of(request) is None:
                break  # signed out, removed or expired: the page goes to /login
            loop_now = time.monotonic()
            charts = view == "charts" and loop_now - charts_at >= CHARTS_INTERVAL_S
            body = _event(console, prefix, view, since, charts)
            since = body["v"]
            send, last = _worth_sending(body, last)
            if send:
                charts_at = loop_now if charts else charts_at
                await response.write(b"data: " + json.dumps(body, default=str).encode() + b"\n\n")
                await asyncio.sleep(MIN_INTERVAL_S)
            while not await _wait_change(console, since):
                await response.write(b"event: alive\ndata: 1\n\n")
    return response
