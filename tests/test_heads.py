"""Scanner head health with made-up clocks, and the tunnel / tracking config keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from sorter.config import ConfigError, load_site
from sorter.heads import HeadHealth
from sorterd.demo import demo_config_dir, write_site

S = 1_000_000_000


def test_link_up_is_online_link_down_is_offline_with_the_reason() -> None:
    h = HeadHealth({"top": 30 * S})
    assert not h.online("top")
    change = h.on_link("top", True, "connected", 0)
    assert change is not None
    assert change.online
    change = h.on_link("top", False, "closed by the scanner", 1 * S)
    assert change is not None
    assert not change.online
    assert change.detail == "link down: closed by the scanner"


def test_silence_is_offline_until_the_head_speaks_again_even_across_reconnects() -> None:
    h = HeadHealth({"top": 2 * S})
    h.on_link("top", True, "connected", 0)
    assert h.on_heard("top", 1 * S, 1 * S) is None  # a heartbeat: still online
    assert h.on_heard("top", 1 * S, 3 * S) is None  # 2 s since: not yet over the limit
    change = h.on_heard("top", 1 * S, 3 * S + 1)
    assert change is not None
    assert not change.online
    assert "silent for 2.0 s" in change.detail
    # The link is dropped and opened again: no telegram yet, so still offline.
    assert h.on_link("top", False, "silent for 2 s", 4 * S) is None
    assert h.on_link("top", True, "connected", 5 * S) is None
    assert not h.online("top")
    change = h.on_heard("top", 6 * S, 6 * S)  # it speaks
    assert change is not None
    assert change.online


def test_a_head_that_never_speaks_goes_offline_after_the_timeout() -> None:
    h = HeadHealth({"top": 2 * S})
    h.on_link("top", True, "connected", 10 * S)
    assert h.on_heard("top", None, 11 * S) is None
    change = h.on_heard("top", None, 13 * S)
    assert change is not None
    assert not change.online


def _site(tmp_path: Path, extra: str, scanners: list[tuple[str, int, str | None]]) -> Path:
    return write_site(
        tmp_path,
        plc_port=5020,
        scanner_port=5021,
        mqtt_url="mqtt://127.0.0.1:1883",
        plan=demo_config_dir() / "sortplan.toml",
        prefix="a/b",
        extra=extra,
        scanners=scanners,
    )


def test_tunnel_and_window_keys_load(tmp_path: Path) -> None:
    extra = (
        "\n[tracking]\nwindow_before_ms = 40\nwindow_after_ms = 60\n"
        "merge_window_ms = 80\nhead_miss_limit = 5\n"
    )
    site = load_site(_site(tmp_path, extra, [("top", 5021, "t1"), ("side", 5022, "t1")]))
    tracking = site.config.tracking
    assert (tracking.window_before_ms, tracking.window_after_ms) == (40, 60)
    assert (tracking.merge_window_ms, tracking.head_miss_limit) == (80, 5)
    assert [s.tunnel for s in site.config.scanner] == ["t1", "t1"]


def test_bad_tunnel_and_window_keys_are_reported(tmp_path: Path) -> None:
    extra = "\n[tracking]\nwindow_before_ms = -1\nhead_miss_limit = 0\n"
    with pytest.raises(ConfigError) as exc:
        load_site(_site(tmp_path, extra, [("top", 5021, "t 1")]))
    keys = {p.key for p in exc.value.problems}
    assert keys == {"scanner[0].tunnel", "tracking.window_before_ms", "tracking.head_miss_limit"}
