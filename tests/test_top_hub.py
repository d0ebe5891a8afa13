"""`sorterd top --hub`: the hub model, its frame, and lines published on a real broker as
the daemon publishes them (sorter/contract.py builds every payload here)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from rich.console import Console

from drivers.broker import LocalBroker, free_port
from sorter.contract import Messages, Topics, iso_now, status_payload
from sorter.line_events import DeviceReport
from sorter.ports import Outcome, Reason
from sorter.stats import LineStats
from sorterd import cli
from sorterd.demo import demo_config_dir, write_site
from sorterd.logs import setup_logging
from sorterd.top_hub import HubModel, render_hub, run_hub_top
from tests.waiting import wait_until

HUB = "test/tophub"


@pytest.fixture(autouse=True)
def _logging_on_the_real_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cli.main` sets structlog up on the stderr of the moment, and loggers keep it once
    used: in a test that is the test's capture, closed after it (another test's `cli.main`
    may have left it so). Here logging goes to the process's own stderr, and the commands
    run in-process do not set it up again."""
    setup_logging(level="warning", stream=sys.__stderr__)
    monkeypatch.setattr("sorterd.logs.setup_logging", lambda *args, **kwargs: None)


def stats_payload(
    decisions: int, noreads: int, outcomes: dict[Outcome, int], latency_ms: float = 0.5
) -> dict[str, Any]:
    """P/stats's line block as the daemon's LineStats makes it, stamped as contract.py does."""
    stats = LineStats()
    now_ns = time.monotonic_ns()
    for n in range(decisions):
        stats.on_read(noread=n < noreads)
        reason = Reason.NO_READ if n < noreads else Reason.OK
        stats.on_decision(reason, latency_ms, now_ns - (decisions - n) * 10_000_000)
    for outcome, count in outcomes.items():
        for _ in range(count):
            stats.on_result(outcome)
    payload = stats.snapshot(now_ns)
    payload["ts"] = iso_now()
    payload["mqtt"] = {"connected": True, "backlog": 0, "published": decisions, "dropped": 0}
    return payload


def device(prefix: str, name: str, connected: bool) -> tuple[str, dict[str, Any]]:
    report = DeviceReport(name, connected, 0 if connected else 3, time.time_ns(), "")
    return Messages(Topics(prefix)).device(report)


def line_messages(
    name: str, *, online: bool, late: int, plc_up: bool = True, hub: str = HUB
) -> list[tuple[str, dict[str, Any]]]:
    """The retained topics of one line, topic and payload as the daemon publishes them."""
    prefix = f"{hub}/{name}"
    topics = Topics(prefix)
    outcomes = {Outcome.SORTED: 90, Outcome.REJECT: 10, Outcome.RECIRC_LATE: late}
    return [
        (topics.status, status_payload("online" if online else "offline")),
        (topics.stats, stats_payload(100, 4, outcomes)),
        device(prefix, "plc", plc_up),
        device(prefix, "tunnel-1", True),
    ]


def frame(model: HubModel, width: int = 140) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render_hub(model, width))
    return console.export_text()


def fed(*lines: list[tuple[str, dict[str, Any]]]) -> HubModel:
    model = HubModel(HUB)
    for messages in lines:
        for topic, payload in messages:
            model.on_raw(topic[len(HUB) + 1 :], json.dumps(payload).encode())
    return model


def row(text: str, name: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if f" {name} " in f" {line} ")


def test_lines_found_with_their_figures_and_faults() -> None:
    model = fed(
        line_messages("line-10", online=True, late=0),
        line_messages("line-2", online=False, late=3, plc_up=False),
    )
    assert model.names() == ["line-2", "line-10"]  # natural order: the digit keys follow it
    line = model.lines["line-2"]
    assert line.late_replies == 3
    assert line.faulted == ["plc"]
    text = frame(model)
    two, ten, hub = row(text, "line-2"), row(text, "line-10"), row(text, "hub")
    assert two[0] == "1"
    assert ten[0] == "2"
    assert "OFFLINE" in two
    assert "ONLINE" in ten
    assert "96.0" in two  # read rate: 4 no-reads in 100 reads
    assert two[two.index("plc") - 3] == "3"  # late replies
    assert "plc" in two
    # late replies, p99, MQTT backlog, then no device down
    assert ten[ten.index("none") - 3] == "0"
    joined = " ".join(hub)
    assert "1/2 online" in joined
    assert "1 devices" in joined  # the PLC of line-2
    assert hub[hub.index("devices") - 2] == "3"  # late replies of the hub: 3 + 0


def test_narrow_terminals_keep_each_lines_health() -> None:
    model = fed(
        line_messages("line-1", online=True, late=0),
        line_messages("customs", online=False, late=3, plc_up=False),
    )
    for width in (100, 80, 60):
        text = frame(model, width)
        assert max(len(line) for line in text.splitlines()) <= width
        customs = row(text, "customs")
        assert customs[:3] == ["1", "customs", "OFFLINE"]
        assert customs[-2:] == ["3", "plc"]  # late replies, devices in fault
        assert row(text, "line-1")[-2:] == ["0", "none"]


def test_the_archives_status_is_a_service_not_a_line() -> None:
    model = fed(line_messages("line-1", online=True, late=0))
    archive = {"state": "online", "lag_s": 0.25, "rows": 10, "archiver": "a1", "since": "x"}
    model.on_raw("archive/status", json.dumps(archive).encode())
    assert model.names() == ["line-1"]
    text = frame(model)
    assert "1/1 online" in " ".join(row(text, "hub"))
    assert "also under the hub: archive online (lag 0.2 s)" in text


def test_cleared_topics_and_foreign_messages() -> None:
    model = fed(line_messages("line-1", online=True, late=0))
    model.on_raw("feeds/preadvice", b'{"barcode": "X"}')  # the hub's feeds: not a line
    model.on_raw("line-1/decisions", b"{}")  # not subscribed to, and not a retained view
    model.on_raw("line-1/stats", b"[not json")
    assert model.names() == ["line-1"]
    assert model.ignored == 1
    for suffix in ("status", "stats", "devices/plc", "devices/tunnel-1"):
        model.on_raw(f"line-1/{suffix}", b"")
    assert model.names() == []
    assert "no line under test/tophub/" in frame(model)


def test_stale_stats_are_flagged() -> None:
    model = fed(line_messages("line-1", online=True, late=0))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(render_hub(model, now=later))
    text = console.export_text()
    assert "1 stale" in " ".join(row(text, "hub"))


async def publish(port: int, messages: list[tuple[str, dict[str, Any]]]) -> None:
    async with asyncio.timeout(10), aiomqtt.Client("127.0.0.1", port) as c:
        for topic, payload in messages:
            await c.publish(topic, json.dumps(payload).encode(), qos=1, retain=True)


async def test_once_from_retained_topics_on_a_broker(broker: LocalBroker) -> None:
    await publish(broker.port, line_messages("line-1", online=True, late=0))
    await publish(broker.port, line_messages("line-2", online=True, late=5, plc_up=False))
    # A status alone (a service of the hub, not a line), and a line of another hub.
    await publish(broker.port, line_messages("other", online=True, late=0)[:1])
    await publish(broker.port, [(f"{HUB}x/line-9/status", status_payload("online"))])
    console = Console(record=True, width=140, file=io.StringIO())
    async with asyncio.timeout(30):
        code = await run_hub_top(broker.url, HUB, once=True, console=console, settle_s=0.5)
    text = console.export_text()
    assert code == 0
    assert "line-9" not in text
    assert "ONLINE" in row(text, "line-1")
    assert "5" in row(text, "line-2")
    assert "plc" in row(text, "line-2")
    assert "2/2" in row(text, "hub")
    assert "also under the hub: other online" in text


async def test_line_option_shows_the_one_line_view(broker: LocalBroker) -> None:
    await publish(broker.port, line_messages("line-1", online=True, late=0))
    console = Console(record=True, width=120, file=io.StringIO())
    async with asyncio.timeout(30):
        code = await run_hub_top(
            broker.url, HUB, line="line-1", once=True, console=console, settle_s=0.5
        )
    text = console.export_text()
    assert code == 0
    assert f"sorterd top  {HUB}/line-1" in text
    assert "chutes" in text
    assert "devices" in text


async def test_keys_drill_into_a_line_and_back(
    broker: LocalBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")  # a dumb terminal would take the pipe path
    hub = "test/tophub-keys"  # the broker is shared: lines of the other tests are retained
    await publish(broker.port, line_messages("line-1", online=True, late=0, hub=hub))
    await publish(broker.port, line_messages("line-2", online=True, late=0, hub=hub))
    out = io.StringIO()
    console = Console(file=out, width=120, height=50, force_terminal=True)
    keys: asyncio.Queue[str] = asyncio.Queue()
    async with asyncio.timeout(60):
        task = asyncio.create_task(
            run_hub_top(broker.url, hub, console=console, refresh_s=0.05, keys=keys)
        )

        def shown(mark: int = 0) -> str:
            return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue()[mark:])

        await wait_until(lambda: "2/2 online" in shown(), 20)
        keys.put_nowait("2")
        await wait_until(lambda: f"sorterd top  {hub}/line-2" in shown(), 20)
        mark = len(out.getvalue())
        await wait_until(lambda: "ONLINE since" in shown(mark), 20)  # the line's own view
        mark = len(out.getvalue())
        keys.put_nowait("h")
        await wait_until(lambda: "2/2 online" in shown(mark), 20)
        keys.put_nowait("q")
        assert await task == 0


async def test_no_broker_once_fails_and_says_so() -> None:
    console = Console(record=True, width=120, file=io.StringIO())
    async with asyncio.timeout(20):
        code = await run_hub_top(
            f"mqtt://127.0.0.1:{free_port()}",
            HUB,
            once=True,
            console=console,
            connect_timeout_s=0.5,
        )
    assert code == 1
    assert "broker unreachable" in console.export_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["top", "--line", "line-1", "--mqtt", "mqtt://127.0.0.1:1"], "--line needs --hub"),
        (["top", "--hub"], "give --hub PREFIX and --mqtt URL"),
        (["top", "--hub", "a/#", "--mqtt", "mqtt://127.0.0.1:1", "--once"], "wildcards"),
        (["top", "--hub", "a", "--mqtt", "tcp://127.0.0.1:1", "--once"], "mqtt"),
    ],
)
def test_cli_usage_mistakes_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_cli_hub_from_a_site_config(
    broker: LocalBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = "test/tophub-site"
    asyncio.run(publish(broker.port, line_messages("sorter-7", online=True, late=0, hub=hub)))
    site = write_site(
        tmp_path,
        plc_port=free_port(),
        scanner_port=free_port(),
        mqtt_url=broker.url,
        plan=demo_config_dir() / "sortplan.toml",
        prefix=f"{hub}/sorter-1",
    )
    # The hub is the site's topic_prefix without its last level; its line is not online.
    assert cli.main(["top", "-c", str(site), "--hub", "--once"]) == 0
    out = capsys.readouterr().out
    assert f"sorterd top --hub  {hub}" in out
    assert "sorter-7" in out


def test_hostile_payloads_are_dropped_not_raised() -> None:
    """Any client of the broker may publish under the hub: a payload that json.loads
    refuses with a plain ValueError (an integer over 4,300 digits), RecursionError, or
    NaN (int() of it raised while drawing) once took `top --hub` down."""
    model = fed(line_messages("line-1", online=True, late=0))
    for payload in (
        b'{"items_per_h": ' + b"1" * 5000 + b"}",
        b"[" * 100_000,
        b'{"outcomes": {"recirc_late": NaN}, "ts": "2026-12-07T10:00:00Z"}',
        b'{"outcomes": {"recirc_late": 1e400}, "ts": "2026-12-07T10:00:00Z"}',
    ):
        model.on_raw("line-1/stats", payload)
    assert model.ignored == 4
    assert "line-1" in frame(model)


async def test_once_reaches_the_second_node_when_the_first_is_frozen(broker: LocalBroker) -> None:
    """A cluster's node frozen (SIGSTOP: it accepts the connection and never answers) is
    given up only after the connect timeout; `--once` once waited that long in all and
    said "no broker" (exit 1) while the next node of the list was up."""
    import socket

    await publish(broker.port, line_messages("line-1", online=True, late=0))
    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen()
        urls = [f"mqtt://127.0.0.1:{frozen.getsockname()[1]}", broker.url]
        console = Console(record=True, width=140, file=io.StringIO())
        async with asyncio.timeout(60):
            code = await run_hub_top(urls, HUB, once=True, console=console, settle_s=0.5)
    assert code == 0, console.export_text()
    assert "ONLINE" in row(console.export_text(), "line-1")
