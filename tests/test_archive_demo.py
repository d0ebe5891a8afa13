"""`sorterd demo --archive URL`: the demo with an archiver, and the trace command it prints
at the end works (docs/archive.md)."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from tests.archivekit import archived, run_cli

pytestmark = pytest.mark.requires("postgresql", "mosquitto")


@pytest.mark.asyncio
async def test_demo_with_an_archive_prints_a_trace_that_works(archive_db: str) -> None:
    code, out, err = await run_cli(
        "demo", "--duration", "3", "--rate", "20000", "--archive", archive_db
    )
    assert code == 0, out + err
    rows = archived(archive_db)
    assert rows
    assert {r["kind"] for r in rows} == {"decision", "result"}
    lines = out.splitlines()
    hint = lines[lines.index(next(x for x in lines if x.startswith("trace an item"))) + 1]
    command = shlex.split(hint)
    assert command[:2] == ["sorterd", "trace"]
    assert command[2] == "-c"
    try:
        code, out, err = await run_cli(*command[1:], "--json")
        assert code == 0, err
        assert '"kind": "decision"' in out
    finally:
        shutil.rmtree(Path(command[3]).parent)  # the demo keeps it for the trace
