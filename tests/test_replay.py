"""sorterd replay: recorded scans through the plan offline, same decisions as the daemon."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.traffic import Traffic
from sorter.config import ConfigError
from sorter.decide import Decider
from sorter.kernel import ChuteState
from sorter.plan import compile_plan, load_plan
from sorter.replay import BLOCK_LINES, Replay, WorkerSetup, read_scans
from sorterd.demo import demo_config_dir

SITE = demo_config_dir() / "site.toml"
PLAN = demo_config_dir() / "sortplan.toml"


def _scans(path: Path, n: int, seed: int = 3) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tracking_id", "codes", "recirculations"])
        for i, item in enumerate(Traffic(seed=seed).items(n)):
            w.writerow([i + 1, ";".join(item.codes) or "NOREAD", i % 4])
    return path


def _decider() -> Decider:
    plan = compile_plan(load_plan(PLAN))
    return Decider(plan, ChuteState.for_plan(plan), site_country="MA")


def test_replay_decides_like_the_live_decider(tmp_path: Path) -> None:
    scans = _scans(tmp_path / "scans.csv", 2000)
    out = io.StringIO()
    counts = Replay(_decider(), out).run(read_scans(scans))
    assert counts.items == 2000
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["tracking_id"] for r in rows] == [str(i + 1) for i in range(2000)]
    # One by one through the live path, same order, same round-robin state.
    live = _decider()
    for row, scan in zip(rows, read_scans(scans), strict=True):
        choice = live.decide(scan.codes, scan.recirculations)
        assert (row["destination"], int(row["chute"]), row["reason"], row["barcode"]) == (
            choice.destination,
            choice.chute,
            choice.reason.word,
            choice.barcode,
        )
    assert counts.reasons["max_recirc"] > 0  # recirculations column honoured (i % 4 == 3)
    assert sum(counts.chutes.values()) == 2000
    assert counts.destinations["CASABLANCA"] > 0


def test_worker_processes_give_identical_results(tmp_path: Path) -> None:
    scans = _scans(tmp_path / "scans.csv", BLOCK_LINES + 500, seed=5)
    one, two = io.StringIO(), io.StringIO()
    c1 = Replay(_decider(), one).run(read_scans(scans))
    # Spawned workers (pytest's timeout thread rules out forking) build their own decider
    # from the setup: the site's country must reach them.
    setup = WorkerSetup(str(PLAN), None, site_country="MA")
    c2 = Replay(_decider(), two, workers=2, setup=setup).run_file(scans)
    assert one.getvalue() == two.getvalue()
    assert c1.reasons == c2.reasons
    assert c1.items == c2.items == BLOCK_LINES + 500


def test_bad_rows_name_their_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("tracking_id,codes,recirculations\n1,RB123456785GB,0\n2,X,zero\n3\n")
    with pytest.raises(ConfigError) as err:
        list(read_scans(bad))
    text = str(err.value)
    assert "bad.csv: line 3" in text
    assert "bad.csv: line 4: 1 fields, header has 3" in text
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("id,code\n1,X\n")
    with pytest.raises(ConfigError, match="header lacks column"):
        list(read_scans(nohead))


def test_time_column_applies_cutoffs(tmp_path: Path) -> None:
    plan_text = PLAN.read_text().replace(
        'name = "RABAT"\nchutes = [7, 8]', 'name = "RABAT"\nchutes = [7, 8]\ncutoff = "18:00"'
    )
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(plan_text)
    plan = compile_plan(load_plan(plan_path))
    scans = tmp_path / "t.csv"
    label = "]C100061110010001000012420" + "10100"  # a Rabat postcode
    scans.write_text(f"tracking_id,codes,time\n1,{label},17:59\n2,{label},2026-11-26T18:30:00\n")
    out = io.StringIO()
    Replay(Decider(plan, ChuteState.for_plan(plan), site_country="MA"), out).run(read_scans(scans))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["reason"] for r in rows] == ["ok", "after_cutoff"]
    assert rows[1]["chute"] == "55"


def test_replay_command(tmp_path: Path) -> None:
    scans = _scans(tmp_path / "scans.csv", 300)
    out_csv = tmp_path / "decisions.csv"
    run = subprocess.run(
        [sys.executable, "-m", "sorterd.cli", "replay", "-c", str(SITE), str(scans),
         "--out", str(out_csv)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "300 items through plan casablanca-day" in run.stdout
    assert "by destination" in run.stdout
    assert "by chute" in run.stdout
    assert out_csv.read_text().startswith("tracking_id,barcode,destination,chute,reason\n")
    assert len(out_csv.read_text().splitlines()) == 301
    bad = subprocess.run(
        [sys.executable, "-m", "sorterd.cli", "replay", "-c", str(SITE), str(tmp_path / "no.csv")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "cannot read" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_replay_report(tmp_path: Path) -> None:
    scans = _scans(tmp_path / "scans.csv", 500)
    report = tmp_path / "report.html"
    run = subprocess.run(
        [sys.executable, "-m", "sorterd.cli", "replay", "-c", str(SITE), str(scans),
         "--report", str(report), "--chute-capacity", "50"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    html = report.read_text()
    assert html.count("<svg") >= 4
    assert "casablanca-day" in html
    assert "CASABLANCA" in html
    assert "<script" not in html
    # The report counts what the replay printed.
    assert 'data-key="items"' in html
    assert 'data-value="500"' in html


def _site_with_manifest(tmp_path: Path, rows: str, scanner_extra: str = "") -> Path:
    site = tmp_path / "site.toml"
    text = SITE.read_text().replace('file = "sortplan.toml"', f'file = "{PLAN}"')
    if scanner_extra:
        text = text.replace('format = "index"', f'format = "index"\n{scanner_extra}', 1)
    site.write_text(text + '\n[manifest]\nfiles = ["pre/*.csv"]\n')
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "day.csv").write_text(rows)
    return site


def _replay_cli(site: Path, scans: Path, out: Path, *extra: str) -> list[dict[str, str]]:
    run = subprocess.run(
        [sys.executable, "-m", "sorterd.cli", "replay", "-c", str(site), str(scans),
         "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    with out.open(newline="") as f:
        return list(csv.DictReader(f))


def test_replay_applies_the_sites_manifests(tmp_path: Path) -> None:
    lp, lp2, s10 = "LP00123456789012", "LP00123456789013", "CP123456785MA"
    site = _site_with_manifest(
        tmp_path,
        "barcode,destination,postcode,country,customs\n"
        f"{lp},,40100,,\n"  # a postcode without a country: the site's, MA
        f"{lp2},,,CN,hold\n"
        f"{s10},AGADIR,,,\n",
    )
    scans = tmp_path / "scans.csv"
    scans.write_text(f"tracking_id,codes\n1,{lp}\n2,{lp2}\n3,{s10}\n4,LP00999999999999\n")
    rows = _replay_cli(site, scans, tmp_path / "with.csv")
    assert [(r["destination"], r["reason"]) for r in rows] == [
        ("MARRAKECH", "ok"),
        ("", "customs_hold"),
        ("AGADIR", "ok"),
        ("CAINIAO-MANUAL", "ok"),
    ]
    rows = _replay_cli(site, scans, tmp_path / "without.csv", "--no-manifest")
    assert [(r["destination"], r["reason"]) for r in rows] == [
        ("CAINIAO-MANUAL", "ok"),
        ("CAINIAO-MANUAL", "ok"),
        ("", "no_rule"),
        ("CAINIAO-MANUAL", "ok"),
    ]


def test_replay_takes_codes_byte_exact(tmp_path: Path) -> None:
    site = _site_with_manifest(tmp_path, "barcode,postcode\nX,1\n")
    scans = tmp_path / "scans.csv"
    gs = "\x1d"
    # A GS1 label with FNC1 as the raw byte 0x1D, and one with a leading GS (FNC1 first);
    # a code with a blank before it is another code than without.
    scans.write_text(
        "tracking_id,codes\n"
        f"1,]C142010100{gs}00061110010001000012\n"
        f"2,{gs}42010100\n"
        "3, 1Z999AA10123456784\n"
        "4,1Z999AA10123456784;;\n",
        newline="",
    )
    rows = _replay_cli(site, scans, tmp_path / "out.csv")
    assert (rows[0]["destination"], rows[0]["barcode"]) == ("RABAT", "061110010001000012")
    assert rows[1]["destination"] == "RABAT"
    assert rows[2]["barcode"] == " 1Z999AA10123456784"
    assert rows[2]["reason"] == "no_rule"  # not the UPS code: the regex is anchored
    assert (rows[3]["destination"], rows[3]["barcode"]) == ("UPS-EXPORT", "1Z999AA10123456784")


def test_replay_reads_bare_digits_as_the_heads_do(tmp_path: Path) -> None:
    scans = tmp_path / "scans.csv"
    scans.write_text("tracking_id,codes\n1,42010100\n")
    (tmp_path / "a").mkdir()
    plain = _site_with_manifest(tmp_path / "a", "barcode,postcode\nX,1\n")
    rows = _replay_cli(plain, scans, tmp_path / "plain.csv")
    assert (rows[0]["destination"], rows[0]["reason"]) == ("RABAT", "ok")
    (tmp_path / "b").mkdir()
    promised = _site_with_manifest(
        tmp_path / "b", "barcode,postcode\nX,1\n", "symbology_identifiers = true"
    )
    rows = _replay_cli(promised, scans, tmp_path / "promised.csv")
    assert (rows[0]["destination"], rows[0]["reason"]) == ("", "no_rule")
