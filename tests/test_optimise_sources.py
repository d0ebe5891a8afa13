"""`--from-manifests`: the site's manifests through the current plan, spread over the day
by a documented profile (docs/optimiser.md), in process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from simulators.volumes import day_shape
from sorter.config import ConfigError, load_site
from sorterd.optimise_sources import manifest_volumes, parse_hours, shaped, spread

CASABLANCA = Path(__file__).resolve().parent.parent / "config" / "casablanca"


def test_hours_read_as_written() -> None:
    assert parse_hours("5-23") == tuple(range(5, 23))
    assert parse_hours("22-6") == (22, 23, 0, 1, 2, 3, 4, 5)
    assert parse_hours("0-24") == tuple(range(24))
    for bad in ("5", "a-b", "7-7", "24-3", "3-25"):
        with pytest.raises(ValueError, match="FROM"):
            parse_hours(bad)


def test_a_day_spread_keeps_its_total() -> None:
    day = spread(100, parse_hours("6-9"))
    assert day[6:9] == (34, 33, 33)
    assert sum(day) == 100
    shape = day_shape("FR-PARIS")  # an export lane: the evening
    evening = shaped(1001, shape)
    assert sum(evening) == 1001
    assert max(range(24), key=lambda h: evening[h]) in range(18, 22)
    assert evening[2] == 0  # the hub is closed at night


def test_manifests_by_the_casablanca_shape(tmp_path: Path) -> None:
    for name in ("site.toml", "sortplan.toml"):
        shutil.copy(CASABLANCA / name, tmp_path / name)
    (tmp_path / "manifests").mkdir()
    rows = [f"P{i:06d},FR-PARIS" for i in range(500)] + [f"Q{i:06d},MARRAKECH" for i in range(300)]
    (tmp_path / "manifests" / "m.csv").write_text(
        "barcode,destination\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )
    site = load_site(tmp_path / "site.toml")
    flow = manifest_volumes(site, parse_hours("5-23"), "casablanca")
    assert (flow.rows, flow.counted, flow.files) == (800, 800, 1)
    paris, marrakech = flow.volumes.of("FR-PARIS"), flow.volumes.of("MARRAKECH")
    assert (sum(paris), sum(marrakech)) == (500, 300)
    # Export in the evening, inbound city lanes in the morning.
    assert max(range(24), key=lambda h: paris[h]) > max(range(24), key=lambda h: marrakech[h])


def test_a_site_without_manifests_says_so(tmp_path: Path) -> None:
    for name in ("site.toml", "sortplan.toml"):
        shutil.copy(CASABLANCA / name, tmp_path / name)
    with pytest.raises(ConfigError) as info:
        manifest_volumes(load_site(tmp_path / "site.toml"), parse_hours("5-23"))
    (problem,) = info.value.problems
    assert problem.key == "manifest.files"
    assert "no manifest file matches: --from-manifests needs the site's manifests" in (
        problem.message
    )
