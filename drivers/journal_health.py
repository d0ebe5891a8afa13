"""Whether the journal writes: what P/devices/journal and P/status say of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog

__all__ = ["JournalHealth"]

log = structlog.get_logger("drivers.journal")


class JournalHealth:
    """`healthy` and `last_error`; `on_change` runs when `healthy` changes.

    A failed write is cleared by the next commit that adds rows (a watermark update or a
    prune fits where a decision may not, and would make the alarm flap); a failed disk
    sync only by a sync that works (a commit at "normal" proves nothing of the disk). Each
    problem is logged once, and again only when its text changes."""

    __slots__ = ("_path", "_sync_error", "healthy", "last_error", "on_change")

    def __init__(self, path: Path) -> None:
        self._path = str(path)
        self.healthy = True
        self.last_error = ""
        self.on_change: Callable[[], None] | None = None
        self._sync_error = False  # `last_error` is a failed sync

    def write_failed(self, error: str) -> None:
        self._failed("journal write failed", error, sync=False)

    def sync_failed(self, error: str) -> None:
        # The rows are committed (a killed process keeps them); a power cut might not.
        self._failed("journal sync failed", f"sync: {error}", sync=True)

    def rows_written(self) -> None:
        if not self.healthy and not self._sync_error:
            self._back()

    def sync_worked(self) -> None:
        if not self.healthy and self._sync_error:
            self._back()

    def _failed(self, event: str, error: str, *, sync: bool) -> None:
        changed = self.healthy
        if self.healthy or error != self.last_error:
            log.error(event, path=self._path, error=error)
        self.healthy = False
        self.last_error = error
        self._sync_error = sync
        if changed and self.on_change is not None:
            self.on_change()

    def _back(self) -> None:
        log.info("journal writes again", path=self._path)
        self.healthy = True
        self.last_error = ""
        self._sync_error = False
        if self.on_change is not None:
            self.on_change()
