"""The archive's line in `sorterd top` (sorterd/top_archive.py), without a broker; the
whole path (a real archiver, its retained status, `sorterd top --once`) is in
tests/test_archive.py."""

from __future__ import annotations

import datetime as dt
import io
import json

from rich.console import Console
from rich.text import Text

from sorterd.top import TopModel, render
from sorterd.top_archive import archive_line, archive_status, archive_topic

NOW = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)


def _frame(model: TopModel) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(render(model, console.width, now=NOW))
    return console.export_text()


def test_the_archive_of_a_line_is_one_level_up() -> None:
    assert archive_topic("sortcentre/casablanca-hub/line-1") == (
        "sortcentre/casablanca-hub/archive/status"
    )
    assert archive_topic("line-1") is None


def test_state_lag_and_rows_in_the_header() -> None:
    model = TopModel("hub/line-1")
    assert "archive" not in _frame(model)  # no archiver: nothing said
    status = {"state": "online", "lag_s": 0.42, "rows": 1234567, "archiver": "arch-1"}
    model.archive = archive_status(json.dumps(status).encode())
    frame = _frame(model)
    assert "archive: ONLINE  lag 0.4 s  1,234,567 rows  (arch-1)" in frame
    model.archive = {**status, "state": "database_down", "lag_s": 75.0, "waiting": 5000}
    assert "archive: DATABASE_DOWN  lag 75.0 s  1,234,567 rows  5,000 waiting" in _frame(model)


def test_late_archive_is_red_and_bad_payloads_are_ignored() -> None:
    text = Text()
    archive_line(text, {"state": "online", "lag_s": 2.5, "rows": 1})
    late = [span.style for span in text.spans if "lag" in text.plain[span.start : span.end]]
    assert late == ["bold red"]
    assert archive_status(b"") == {}
    assert archive_status(b"\xff") == {}
    assert archive_status(b"[1]") == {}
    text = Text()
    archive_line(text, {"state": 3, "lag_s": "x", "rows": True})
    assert text.plain == "\narchive: ?"
