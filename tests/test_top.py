"""`sorterd top`: the model from section 5 payloads, the rendered frame, and a real line."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from rich.console import Console

from drivers.broker import LocalBroker, free_port
from sorterd.top import REJECTS_KEPT, TopModel, follow, render, run_top
from tests.conftest import broker_kind
from tests.linekit import FAST_LINE, PREFIX, line_with_daemon, wait_until

FAST = FAST_LINE
NOW = dt.datetime(2026, 11, 26, 5, 30, 3, tzinfo=dt.UTC)

# Payloads exactly as docs/interfaces.md section 5 shows them.
STATUS = {"state": "online", "version": "0.1.0", "since": "2026-11-26T05:27:17.285Z"}
STATS: dict[str, Any] = {
    "ts": "2026-11-26T05:30:00.000Z",
    "items_per_h": 19950.0,
    "decisions": 1234,
    "results": 1200,
    "read_rate": 0.96,
    "sort_rate": 0.98,
    "ok_rate": 0.9,
    "recirculation_rate": 0.01,
    "reasons": {"ok": 1100, "no_read": 50, "no_rule": 84},
    "outcomes": {"sorted": 1180, "reject": 20},
    "latency_ms": {"p50": 0.4, "p99": 4.9, "max": 6.1},
    "tracker": {
        "waiting": 0,
        "pending_scans": 3,
        "timeouts": 1,
        "scans_unmatched": 0,
        "duplicate_requests": 0,
    },
    "mqtt": {"connected": True, "backlog": 4321, "published": 9000, "dropped": 0},
}


def decision(n: int, reason: str = "ok", chute: int = 1, **extra: Any) -> dict[str, Any]:
    body = {
        "id": f"decision-x-{n}",
        "ts": f"2026-11-26T05:29:{n % 60:02d}.123Z",
        "tracking_id": 1000 + n,
        "seq": 1,
        "codes": [] if reason == "no_read" else [f"CODE{n}"],
        "barcode": "" if reason == "no_read" else f"CODE{n}",
        "destination": "CASABLANCA" if reason == "ok" else "",
        "chute": chute,
        "reason": reason,
        "recirculations": 0,
        "latency_ms": 0.4,
    }
    body.update(extra)
    return body


def result(n: int, outcome: str = "sorted", chute: int = 1) -> dict[str, Any]:
    return {
        "id": f"result-x-{n}",
        "ts": f"2026-11-26T05:29:{n % 60:02d}.900Z",
        "tracking_id": 1000 + n,
        "seq": 1,
        "barcode": f"CODE{n}",
        "destination": "",
        "chute_assigned": chute,
        "chute_actual": chute,
        "outcome": outcome,
        "recirculations": 0,
    }


def full_model() -> TopModel:
    model = TopModel("sortcentre/casablanca-hub/demo")
    model.on_broker(True, "127.0.0.1:1883", at=NOW)
    model.on_message("status", STATUS)
    model.on_message("stats", STATS)
    states = {12: "full", 40: "fault", 55: "disabled"}
    for n in range(1, 61):
        model.on_message(
            f"chutes/{n}",
            {
                "state": states.get(n, "ok"),
                "destination": "TANGIER" if n == 12 else "",
                "count": n,
            },
        )
    model.on_message(
        "devices/plc",
        {"connected": True, "errors": 0, "last_seen": "2026-11-26T05:30:02.500Z", "detail": ""},
    )
    model.on_message(
        "devices/tunnel-1",
        {
            "connected": False,
            "errors": 3,
            "last_seen": "2026-11-26T05:21:00.000Z",
            "detail": "silent for 5 s",
        },
    )
    model.on_message("decisions", decision(1, "no_read", chute=59))
    model.on_message("decisions", decision(2, "ok", chute=3))
    model.on_message("decisions", decision(3, "multi_read_conflict", chute=58))
    model.on_message("results", result(1, "sorted", chute=59))
    return model


def frame(model: TopModel, width: int = 120) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render(model, console.width, now=NOW))
    return console.export_text()


def line_with(text: str, word: str) -> str:
    return next(line for line in text.splitlines() if word in line)


# --- model ------------------------------------------------------------------------------------


def test_retained_topics_replace_and_clear() -> None:
    model = TopModel("p")
    model.on_message("status", STATUS)
    model.on_message("stats", STATS)
    model.on_message("chutes/7", {"state": "full", "destination": "RABAT", "count": 25})
    model.on_message(
        "devices/plc",
        {"connected": True, "errors": 2, "last_seen": "2026-11-26T05:30:00.000Z", "detail": ""},
    )
    assert model.status["state"] == "online"
    assert model.stats["decisions"] == 1234
    assert (model.chutes[7].state, model.chutes[7].destination, model.chutes[7].count) == (
        "full",
        "RABAT",
        25,
    )
    assert model.devices["plc"].connected is True
    assert model.devices["plc"].errors == 2

    model.on_message("status", {**STATUS, "state": "offline"})
    model.on_message("chutes/7", {"state": "ok", "destination": "RABAT", "count": 26})
    assert model.status["state"] == "offline"
    assert model.chutes[7].state == "ok"

    # An empty retained payload clears the topic.
    model.on_raw("chutes/7", b"")
    model.on_raw("devices/plc", b"")
    model.on_raw("status", b"")
    assert 7 not in model.chutes
    assert "plc" not in model.devices
    assert model.status == {}


def test_stats_interval_measured_from_consecutive_timestamps() -> None:
    model = TopModel("p")
    assert model.stats_interval_s is None
    model.on_message("stats", STATS)
    model.on_message("stats", {**STATS, "ts": "2026-11-26T05:30:10.000Z"})
    assert model.stats_interval_s == pytest.approx(10.0)


def test_decisions_and_results_counted_once_by_id() -> None:
    model = TopModel("p")
    model.on_message("decisions", decision(1))
    model.on_message("decisions", decision(1))  # at-least-once re-send
    model.on_message("decisions", decision(2, "no_rule", chute=57))
    model.on_message("results", result(2, "reject", chute=57))
    model.on_message("results", result(2, "reject", chute=57))
    assert model.decisions_seen == 2
    assert model.results_seen == 1
    assert model.duplicates == 2
    assert model.reasons_seen == {"ok": 1, "no_rule": 1}
    assert model.outcomes_seen == {"reject": 1}


def test_rejects_keep_the_last_non_ok_decisions_with_their_outcome() -> None:
    model = TopModel("p")
    for n in range(50):
        model.on_message("decisions", decision(n, "ok" if n % 2 else "no_read", chute=59))
    assert len(model.rejects) == REJECTS_KEPT
    assert all(r.reason == "no_read" for r in model.rejects)
    assert model.rejects[-1].tracking_id == 1048
    assert model.rejects[0].tracking_id == 1048 - 2 * (REJECTS_KEPT - 1)
    assert model.rejects[-1].chute == 59
    model.on_message("results", result(48, "reject", chute=59))
    assert model.rejects[-1].outcome == "reject"


def test_bad_and_foreign_messages_are_counted_not_raised() -> None:
    model = TopModel("p")
    model.on_raw("stats", b"{not json")
    model.on_raw("stats", b"\xff\xfe")
    model.on_raw("decisions", b"[1, 2]")
    model.on_raw("chutes/abc", b'{"state": "ok"}')
    assert model.ignored == 4
    # Commands and their answers are not this view's business.
    model.on_raw("cmd/chute/1/disable", b'{"id": "x"}')
    model.on_raw("cmd-result", b'{"id": "x", "ok": true}')
    # Wrong types inside a payload fall back to defaults.
    model.on_message("chutes/3", {"state": None, "count": "many"})
    model.on_message("devices/x", {"connected": "yes", "errors": None})
    model.on_message("decisions", {"reason": "timeout", "chute": "56"})
    assert model.chutes[3].state == "unknown"
    assert model.chutes[3].count == 0
    assert model.devices["x"].connected is False
    assert model.rejects[-1].chute is None
    assert model.ignored == 4
    frame(model)  # and it still renders


async def test_run_top_refuses_bad_url_and_prefix_before_connecting() -> None:
    with pytest.raises(ValueError, match=r"mqtt:// or mqtts://"):
        await run_top("tcp://127.0.0.1:1883", PREFIX, once=True)
    with pytest.raises(ValueError, match="wildcards"):
        await run_top("mqtt://127.0.0.1:1883", "sortcentre/#", once=True)


# --- frame ------------------------------------------------------------------------------------


def test_frame_shows_figures_chutes_devices_and_rejects() -> None:
    text = frame(full_model())
    # Header.
    assert "sortcentre/casablanca-hub/demo" in text
    assert "ONLINE since 05:27:17Z (2 min 45 s ago)" in text
    assert "stats: 3.0 s old" in text
    # Line figures.
    assert "19,950" in line_with(text, "items/h")
    assert "96.0 %" in line_with(text, "read rate")
    assert "98.0 %" in line_with(text, "sort rate")
    assert "1.0 %" in line_with(text, "recirculation")
    assert "0.40 / 4.90 ms" in line_with(text, "latency p50/p99")
    assert "1,234" in line_with(text, "decisions")
    assert "1,200" in line_with(text, "results")
    assert "4,321" in line_with(text, "MQTT backlog")
    # Reasons and outcomes from stats.
    assert re.search(r"ok\s+1,100\s+89\.1", text)
    assert re.search(r"no_rule\s+84", text)
    assert re.search(r"no_read\s+50", text)
    assert re.search(r"sorted\s+1,180", text)
    assert re.search(r"reject\s+20", text)
    # Chutes: 60 in rows of 20, state marks, counts per state, the non-ok ones named.
    assert "chutes (60)" in text
    assert "as last published" not in text
    grid = [line for line in text.splitlines() if re.search(r"\b1\s+2\s+3\b", line)]
    assert grid
    assert "12F" in text
    assert "40X" in text
    assert "55D" in text
    assert re.search(r"\b60\b", line_with(text, "41 "))
    assert "ok 57" in text
    assert "full (F) 1" in text
    assert "disabled (D) 1" in text
    assert "fault (X) 1" in text
    assert "full: 12 TANGIER" in text
    # Devices: the PLC first.
    plc, tunnel = line_with(text, "plc "), line_with(text, "tunnel-1")
    assert text.index(plc) < text.index(tunnel)
    assert "connected" in plc
    assert "DISCONNECTED" in tunnel
    assert "silent for 5 s" in tunnel
    assert "05:21:00Z (9 min 3 s ago)" in tunnel
    # Recent rejects: newest first, with the result's outcome once known.
    conflict, no_read = line_with(text, "multi_read_conflict"), line_with(text, "1001 ")
    assert text.index(conflict) < text.index(no_read)
    assert "1003" in conflict
    assert "58" in conflict
    assert re.search(r"1001\s+no_read\s+59\s+0\s+-\s+sorted", no_read)


def test_frame_fits_narrow_terminals() -> None:
    model = full_model()
    for width in (80, 60, 40):
        text = frame(model, width)
        assert max(len(line) for line in text.splitlines()) <= width
        assert "12F" in text
    # Rows of 10 when 20 do not fit: chute 11 starts the second row.
    text = frame(model, 60)
    assert re.search(r"│\s*11 ", text)


def test_frame_before_anything_arrived_and_with_the_broker_gone() -> None:
    model = TopModel("p")
    text = frame(model)
    assert "connecting to the broker" in text
    assert "no status yet" in text
    assert "no chute status yet" in text
    assert "reasons (seen live)" in text

    model.on_message("status", STATUS)
    model.on_message("stats", STATS)
    model.on_broker(False, "[Errno 111] Connection refused", at=NOW, retry_in_s=1.6)
    text = frame(model)
    assert "broker unreachable: [Errno 111] Connection refused" in text
    assert "retry in 1.6 s" in text
    assert "last known: ONLINE" in text

    # Retained chute and device topics outlive the daemon: the frame says so.
    model.on_message("status", {**STATUS, "state": "offline"})
    model.on_message("chutes/1", {"state": "ok", "destination": "", "count": 0})
    text = frame(model)
    assert "last known: OFFLINE" in text
    assert "chutes (1) - as last published" in text


# --- against a broker -------------------------------------------------------------------------


async def _publish(port: int, suffix: str, payload: dict[str, Any], *, retain: bool) -> None:
    async with asyncio.timeout(10), aiomqtt.Client("127.0.0.1", port) as c:
        await c.publish(f"{PREFIX}/{suffix}", json.dumps(payload).encode(), qos=1, retain=retain)


async def test_end_to_end_frame_from_a_running_line(broker: LocalBroker, tmp_path: Path) -> None:
    async with asyncio.timeout(90):
        live = TopModel(PREFIX)
        async with line_with_daemon(broker, tmp_path, params=FAST, seed=3) as rig:
            # A model fed while items run: it must see every decision exactly once.
            feeder = asyncio.create_task(follow(broker.url, live), name="test-top-follow")
            try:
                await wait_until(lambda: live.broker.connected is True, 10)
                await _publish(broker.port, "cmd/chute/33/disable", {"id": "t1"}, retain=False)
                await wait_until(
                    lambda: (rig.sub.last("chutes/33") or {}).get("state") == "disabled", 10
                )
                assert await rig.line.run(100_000, count=40) == 40
                assert await rig.line.drain(30), rig.line.ledger.summary()
                decisions = rig.daemon.pipeline.counters.decisions
                await wait_until(
                    lambda: (
                        live.decisions_seen >= decisions
                        and (rig.sub.last("stats") or {}).get("decisions", 0) >= decisions
                    ),
                    15,
                )
                assert live.decisions_seen == decisions
                stats = rig.sub.last("stats") or {}
                assert live.reasons_seen == {r: n for r, n in stats["reasons"].items() if n}
            finally:
                feeder.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await feeder

            console = Console(record=True, width=120, file=io.StringIO())
            code = await run_top(broker.url, PREFIX, once=True, console=console, settle_s=0.5)
            text = console.export_text()
            expected_states = {
                n: (rig.sub.last(f"chutes/{n}") or {}).get("state") for n in range(1, 61)
            }

    assert code == 0
    assert "ONLINE" in text
    assert "broker unreachable" not in text
    # Chute states from the retained P/chutes/N: all 60, chute 33 disabled by the command.
    assert "chutes (60)" in text
    assert "33D" in text
    assert "disabled: 33" in text
    assert f"ok {list(expected_states.values()).count('ok')}" in text
    for n in range(1, 61):
        assert re.search(rf"\b{n}[ FDX]", text)
    # Devices from retained P/devices/NAME.
    assert "connected" in line_with(text, "plc ")
    assert "connected" in line_with(text, "tunnel-1")
    assert "DISCONNECTED" not in text
    # Figures from retained P/stats.
    shown = int(line_with(text, "decisions ").split()[-2].replace(",", ""))
    assert shown >= decisions > 0


async def test_once_with_no_broker_says_so_and_fails() -> None:
    console = Console(record=True, width=120, file=io.StringIO())
    async with asyncio.timeout(10):
        code = await run_top(
            f"mqtt://127.0.0.1:{free_port()}",
            PREFIX,
            once=True,
            console=console,
            connect_timeout_s=0.5,
        )
    assert code == 1
    assert "broker unreachable" in console.export_text()


async def test_follow_survives_the_broker_going_and_coming_back() -> None:
    port = free_port()
    model = TopModel(PREFIX)
    subscribed = asyncio.Event()
    async with asyncio.timeout(60):
        first = LocalBroker(port=port, kind=broker_kind())
        await first.start()
        task = asyncio.create_task(
            follow(first.url, model, subscribed=subscribed, backoff_max_s=0.5),
            name="test-top-follow",
        )
        try:
            await subscribed.wait()
            await _publish(port, "status", STATUS, retain=True)
            await wait_until(lambda: model.status.get("state") == "online", 10)

            await first.stop()
            await wait_until(lambda: model.broker.connected is False, 10)
            assert model.broker.detail
            assert "broker unreachable" in frame(model)

            subscribed.clear()
            async with LocalBroker(port=port, kind=broker_kind()):
                await subscribed.wait()
                assert model.broker.connected is True
                await _publish(port, "status", {**STATUS, "state": "offline"}, retain=True)
                await wait_until(lambda: model.status.get("state") == "offline", 10)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await first.stop()


async def test_live_view_redraws_until_cancelled(
    broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")  # a dumb terminal would take the pipe path
    await _publish(broker.port, "status", STATUS, retain=True)
    for terminal in (True, False):
        out = io.StringIO()
        console = Console(file=out, width=100, height=40, force_terminal=terminal)
        task = asyncio.create_task(
            run_top(broker.url, PREFIX, console=console, refresh_s=0.05), name="test-top-live"
        )
        await wait_until(lambda: "ONLINE" in out.getvalue(), 10)  # noqa: B023 - awaited here
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert PREFIX in out.getvalue()
        # A terminal gets the redrawn full screen (and it is left again); a pipe plain frames.
        assert ("\x1b[?1049h" in out.getvalue()) is terminal
        assert ("\x1b[?1049l" in out.getvalue()) is terminal


def test_hostile_payloads_and_chute_topics_are_counted_not_raised() -> None:
    """What once took `sorterd top` down: a plain ValueError out of json.loads (an integer
    over 4,300 digits), RecursionError, and a chute topic str.isdigit() takes but int()
    refuses."""
    model = TopModel("p")
    model.on_raw("stats", b'{"items_per_h": ' + b"1" * 5000 + b"}")
    model.on_raw("decisions", b"[" * 100_000)
    model.on_raw("stats", b'{"items_per_h": NaN}')
    model.on_raw("chutes/²", b'{"state": "ok"}')
    model.on_raw("chutes/²", b"")
    assert model.ignored == 4
    frame(model)
