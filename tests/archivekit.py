"""`sorterd archive` as its own process against a real broker and a real PostgreSQL, and what
the archive holds, for the archive's tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg

from sorterd.demo import demo_config_dir, write_site
from tests.pgkit import ROLE_PASSWORD

__all__ = [
    "ArchiverProcess",
    "archive_site",
    "archived",
    "archived_count",
    "archiver",
    "run_cli",
    "wait_online",
]


def archive_site(
    folder: Path,
    mqtt_url: str,
    db_url: str,
    lines: Sequence[str],
    *,
    extra: str = "",
    prefix: str = "test/hub/line",
) -> Path:
    """A site config with an [archive] table (the line part is the demo's, unused)."""
    folder.mkdir(parents=True, exist_ok=True)
    table = (
        f"\n[archive]\nurl = {json.dumps(db_url)}\nlines = {json.dumps(list(lines))}\n"
        f"batch_wait_ms = 50\n{extra}"
    )
    return write_site(
        folder,
        plc_port=1,
        scanner_port=1,
        mqtt_url=mqtt_url,
        plan=demo_config_dir() / "sortplan.toml",
        prefix=prefix,
        extra=table,
    )


class ArchiverProcess:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 30)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.asynccontextmanager
async def archiver(
    site: Path, client_id: str, *, password: str = ROLE_PASSWORD
) -> AsyncIterator[ArchiverProcess]:
    """`sorterd archive` running; killed on exit if still running."""
    log = site.parent / f"archive-{client_id}.log"
    env = {**os.environ, "SORTERD_ARCHIVE_PASSWORD": password, "SORTERD_LOG_LEVEL": "info"}
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sorterd.cli", "archive", "-c", str(site),
            "--client-id", client_id, stdout=out, stderr=out, env=env,
        )  # fmt: skip
    running = ArchiverProcess(proc, log)
    try:
        yield running
    finally:
        await running.kill()


async def run_cli(*args: str, password: str = ROLE_PASSWORD) -> tuple[int, str, str]:
    """A sorterd command to its end: exit code, stdout, stderr."""
    env = {**os.environ, "SORTERD_ARCHIVE_PASSWORD": password}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sorterd.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def wait_online(broker_port: int, hub: str, client_id: str, timeout_s: float = 60) -> None:
    """Until the archiver says online on its status topic (it has subscribed by then)."""
    async with aiomqtt.Client("127.0.0.1", broker_port) as client:
        await client.subscribe(f"{hub}/archive/status", qos=1)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                status = json.loads(message.payload)
                if status.get("archiver") == client_id and status.get("state") == "online":
                    return


_COUNT_EVERY_S = 0.2
_counted: dict[str, tuple[float, int]] = {}


def archived_count(db_url: str) -> int:
    """Rows in the archive, for wait_until: asked at most every 0.2 s (a query blocks the
    test's event loop, where a daemon may run), the last answer in between."""
    now = time.monotonic()
    last = _counted.get(db_url)
    if last is not None and now - last[0] < _COUNT_EVERY_S:
        return last[1]
    with psycopg.connect(db_url, password=ROLE_PASSWORD) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM sorterd_archive.pieces").fetchone()
        except psycopg.errors.UndefinedTable:
            row = (0,)
    count = int(row[0]) if row else 0
    _counted[db_url] = (time.monotonic(), count)
    return count


def archived(db_url: str) -> list[dict[str, Any]]:
    """Every row of the archive (none when it has no table yet)."""
    with psycopg.connect(db_url, password=ROLE_PASSWORD) as conn:
        try:
            cur = conn.execute("SELECT * FROM sorterd_archive.pieces ORDER BY ts, id")
        except psycopg.errors.UndefinedTable:
            return []
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
