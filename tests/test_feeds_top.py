"""`sorterd top` shows the live feeds' block of P/stats (docs/interfaces.md section 7)."""

from __future__ import annotations

from tests.test_top import STATS, frame, full_model, line_with

FEEDS = {
    "rows_applied": 123456,
    "customs_applied": 789,
    "bad_rows": 12,
    "lag_ms_p50": 1.25,
    "lag_ms_p99": 140.0,
    "delta_rows": 98765,
    "bad_reasons": {"no_barcode": 9, "bad_json": 2, "wrong_type": 1},
}


def test_frame_shows_the_feeds_block() -> None:
    model = full_model()
    model.on_message("stats", {**STATS, "feeds": FEEDS})
    text = frame(model)
    assert "123,456 / 789" in line_with(text, "feed rows / customs")
    assert "1.2 / 140.0 ms" in line_with(text, "feed lag p50/p99")
    assert "98,765" in line_with(text, "feed delta rows")
    bad = line_with(text, "feed bad rows")
    assert "12" in bad
    assert "no_barcode 9" in bad


def test_frame_without_feeds_has_no_feed_lines() -> None:
    assert "feed " not in frame(full_model())
