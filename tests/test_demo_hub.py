"""`sorterd demo --lines N` as a user runs it: real `sorterd run` processes, one broker,
and `sorterd top --hub` watching them while they run."""

from __future__ import annotations

import asyncio
import io
import os
import re
import sys

import pytest
from rich.console import Console

from drivers.broker import free_port
from sorterd import cli
from sorterd.demo_hub import line_nodes
from sorterd.logs import setup_logging
from sorterd.top_hub import run_hub_top

DEMO_TIMEOUT_S = 240


@pytest.fixture(autouse=True)
def _logging_on_the_real_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cli.main` sets structlog up on the stderr of the moment, and loggers keep it once
    used: in a test that is the test's capture, closed after it (another test's `cli.main`
    may have left it so). Here logging goes to the process's own stderr, and the commands
    run in-process do not set it up again."""
    setup_logging(level="warning", stream=sys.__stderr__)
    monkeypatch.setattr("sorterd.logs.setup_logging", lambda *args, **kwargs: None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lines", "5"], "within 1..4"),
        (["--lines", "0"], "within 1..4"),
        (["--lines", "two"], "within 1..4"),
        (["--lines", "2", "--archive", "postgresql://x"], "--archive works with one line only"),
        (["--lines", "2", "--kill-head-after", "3"], "--kill-head-after works with one line"),
        (["--lines", "2", "--cluster", "--mqtt", "mqtt://127.0.0.1:1"], "leave --mqtt out"),
        # A rate of 0 or below once ended in a traceback, a duration of 0 in "demo failed".
        (["--lines", "2", "--rate", "0"], "--rate: must be a number above 0"),
        (["--lines", "2", "--rate", "-5"], "--rate: must be a number above 0"),
        (["--rate", "nan"], "--rate: must be a number above 0"),
        (["--lines", "2", "--duration", "0"], "--duration: must be a number above 0"),
        (["--duration", "-1"], "--duration: must be a number above 0"),
    ],
)
def test_usage_mistakes_exit_2_with_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = cli.main(["demo", *args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


async def test_two_lines_with_their_daemons_watched_by_top_hub() -> None:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SORTERD_LOG_LEVEL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sorterd.cli", "demo", "--lines", "2", "--duration", "4",
        "--rate", "30000", "--seed", "4",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    seen = []
    try:
        async with asyncio.timeout(DEMO_TIMEOUT_S):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "the demo ended before its lines were online: " + "".join(seen)
                seen.append(line)
                watch = re.search(r"sorterd top --hub (\S+) --mqtt (\S+)", line)
                if watch:
                    break
            hub, url = watch.groups()
            # While the lines run: every line online, under the hub prefix the demo printed.
            console = Console(record=True, width=160, file=io.StringIO())
            assert await run_hub_top(url, hub, once=True, console=console, settle_s=2.5) == 0
            frame = console.export_text()
            rest, errors = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    summary = "".join(seen) + rest.decode()
    assert proc.returncode == 0, summary + errors.decode()
    assert "2/2 online" in frame
    for name in ("line-1", "line-2"):
        assert re.search(rf"{name}\s+ONLINE", frame), frame
    # The summary: a column per line and one for the hub, each line's verdict OK.
    header = next(row for row in summary.splitlines() if "line-1" in row and "hub" in row)
    assert "line-2" in header
    verdict = next(row for row in summary.splitlines() if "verdict" in row)
    assert verdict.count("OK") == 3
    decisions = next(row for row in summary.splitlines() if "decisions (daemon" in row)
    pairs = re.findall(r"(\d+) / (\d+)", decisions)
    assert len(pairs) == 2
    assert all(daemon == on_mqtt and int(daemon) > 0 for daemon, on_mqtt in pairs)


@pytest.mark.parametrize("lines", [[], ["--lines", "2"]])
def test_a_broker_that_cannot_be_reached_is_one_line(
    lines: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    assert cli.main(["demo", *lines, "--mqtt", url, "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert f"error: the broker at {url} cannot be reached" in err
    assert "Traceback" not in err


def test_every_line_lists_the_leading_node_last_and_another_first() -> None:
    """On a cluster (docs/cluster.md "Where the leaders are"): the last node, where the
    demo places the leaders, is last in every line's list and first in none; the daemons
    spread over the others; one broker's URL is given as it is."""
    urls = ["mqtt://127.0.0.1:1", "mqtt://127.0.0.1:2", "mqtt://127.0.0.1:3"]
    lists = [line_nodes(urls, index) for index in range(1, 5)]
    assert all(sorted(nodes) == urls and nodes[-1] == urls[-1] for nodes in lists)
    assert [nodes[0] for nodes in lists] == [urls[0], urls[1], urls[0], urls[1]]
    assert line_nodes(["mqtt://b:1883"], 3) == ["mqtt://b:1883"]


@pytest.mark.requires("nats-server")
async def test_two_lines_on_a_cluster_with_the_leaders_on_the_last_node() -> None:
    """`sorterd demo --lines 2 --cluster`: the leaders placed on the node both daemons list
    last (what the placement found in the cluster's /jsz, not what was asked), then both
    lines OK."""
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SORTERD_LOG_LEVEL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sorterd.cli", "demo", "--lines", "2", "--cluster",
        "--duration", "3", "--rate", "20000", "--seed", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        async with asyncio.timeout(DEMO_TIMEOUT_S):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    summary = out.decode()
    assert proc.returncode == 0, summary + err.decode()
    nodes = re.search(r"3-node NATS cluster on (\S+), (\S+), (\S+)", summary)
    assert nodes, summary
    assert f"leaders: every MQTT stream and consumer led from node 3 ({nodes[3]})" in summary, (
        summary
    )
    assert "warning" not in summary
    verdict = next(row for row in summary.splitlines() if "verdict" in row)
    assert verdict.count("OK") == 3
