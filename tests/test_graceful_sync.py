"""Graceful stop with the journal's sync off the loop (drivers/journal_sync.py): the
decisions of the last step go out before the daemon says offline and stops."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from drivers.broker import LocalBroker
from tests.linekit import line_with_daemon, wait_until

SLOW_SYNC_S = 0.5


async def test_the_last_decisions_are_published_although_their_sync_ends_after_the_stop(
    broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request waiting for its scan when the daemon stops is decided at once (timeout)
    with the PLC gone; its decision is published after its sync. A slow disk's sync must
    not let the outbox look empty to the stop's flush, leaving the decision to the next
    start."""
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        time.sleep(SLOW_SYNC_S)  # a busy disk: in the sync's thread, not on the loop
        real(fd)

    async with line_with_daemon(
        broker, tmp_path, extra_config="\n[tracking]\nscan_wait_ms = 10000\n"
    ) as rig:
        daemon = rig.daemon
        rig.line.plc.submit_request(777_001)
        await wait_until(lambda: daemon.tracker.waiting == 1, 10)
        await rig.line.plc.stop()
        await wait_until(lambda: not daemon.plc.connected, 10)
        monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    # The rig stopped the daemon and saw it say offline.
    decided = [d for d in rig.sub.of("decisions") if d["tracking_id"] == 777_001]
    assert [d["reason"] for d in decided] == ["timeout"]
