"""`sorterd plan optimise` as a user runs it: a real process on the Casablanca site, the
written plan checked by a real `sorterd check-config`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sorter.plan import compile_plan, load_plan

ROOT = Path(__file__).resolve().parent.parent
CASABLANCA = ROOT / "config" / "casablanca"


def sorterd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sorterd.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    for name in ("site.toml", "sortplan.toml"):
        shutil.copy(CASABLANCA / name, tmp_path / name)
    return tmp_path / "site.toml"


def write_volumes(path: Path, rows: list[str]) -> Path:
    path.write_text("destination,hour,items\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def optimise(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sorterd(
        "plan", "optimise", "-c", str(site), "--time-limit-s", "30", "--workers", "2", *args
    )


def test_a_busy_destination_gets_chutes_and_the_plan_checks(site: Path, tmp_path: Path) -> None:
    # FR-CORSE has one chute (64), which takes 60 items x 3 clearings = 180 an hour: 500
    # items an hour in the evening leave 320 an hour to find it full; three chutes do.
    volumes = write_volumes(
        tmp_path / "v.csv", [f"FR-CORSE,{h},500" for h in (18, 19, 20)] + ["AGADIR,9,30"]
    )
    out = tmp_path / "new.toml"
    result = optimise(site, "--volumes", str(volumes), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "estimated items finding their chutes full: 960 before, 0 after" in result.stdout
    assert "FR-CORSE: 1 -> 3 chutes" in result.stdout
    assert "chutes moved: 2 of" in result.stdout
    assert "-> FR-CORSE" in result.stdout
    assert f"wrote {out}" in result.stdout
    # The simulated day through both allocations: fewer recirculations after.
    m = re.search(r"recirculations caused by full chutes +([\d,]+) +([\d,]+)", result.stdout)
    assert m is not None, result.stdout
    before, after = (int(g.replace(",", "")) for g in m.groups())
    assert after < before
    new = load_plan(out)
    compile_plan(new)
    old = load_plan(site.parent / "sortplan.toml")
    corse = new.destinations[new.destination_index("FR-CORSE")]
    assert len(corse.chutes) == 3
    assert 64 in corse.chutes
    assert [d.overflow for d in new.destinations] == [d.overflow for d in old.destinations]
    assert new.functions == old.functions
    assert len(new.rules) == len(old.rules)
    # The site, pointed at the new plan, passes a real check-config.
    site.write_text(site.read_text().replace('file = "sortplan.toml"', 'file = "new.toml"'))
    checked = sorterd("check-config", "-c", str(site))
    assert checked.returncode == 0, checked.stderr
    assert "casablanca-hub-day" in checked.stdout


def test_bad_volumes_exit_1_naming_file_line_and_value(site: Path, tmp_path: Path) -> None:
    volumes = write_volumes(tmp_path / "v.csv", ["FR-CORSE,18,200", "ATLANTIS,3,5", "IT,3,-2"])
    out = tmp_path / "new.toml"
    result = optimise(site, "--volumes", str(volumes), "--out", str(out))
    assert result.returncode == 1
    assert f"error: {volumes}: line 3: unknown destination 'ATLANTIS'" in result.stderr
    assert f"error: {volumes}: line 4: items '-2' is negative" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_a_plan_without_the_options_is_refused(site: Path, tmp_path: Path) -> None:
    plan = site.parent / "sortplan.toml"
    plan.write_text(
        "\n".join(
            line for line in plan.read_text().splitlines() if "chute_capacity_items" not in line
        )
    )
    volumes = write_volumes(tmp_path / "v.csv", ["FR-CORSE,18,200"])
    result = optimise(site, "--volumes", str(volumes))
    assert result.returncode == 1
    assert "[options] chute_capacity_items must be set" in result.stderr
    assert "Traceback" not in result.stderr


def test_more_destinations_than_free_chutes_exit_1(site: Path, tmp_path: Path) -> None:
    # Five destinations sharing chute 1 (check-config accepts that), four free chutes.
    reasons = ("no_read", "invalid_code", "multi_read_conflict", "no_rule", "no_chute")
    reasons += ("max_recirc", "timeout", "after_cutoff", "customs_hold")
    (site.parent / "sortplan.toml").write_text(
        'version = 2\nname = "tight"\n[machine]\nchutes = "1-5"\n[functions]\n'
        + "".join(f"{key} = 5\n" for key in reasons)
        + "[options]\nchute_capacity_items = 60\nclear_interval_min = 20\n"
        + "".join(f'[[destination]]\nname = "{n}"\nchutes = [1]\n' for n in "ABCDE")
    )
    assert sorterd("check-config", "-c", str(site)).returncode == 0
    volumes = write_volumes(tmp_path / "v.csv", ["A,18,200"])
    out = tmp_path / "new.toml"
    result = optimise(site, "--volumes", str(volumes), "--out", str(out))
    assert result.returncode == 1, result.stdout
    assert "every destination keeps at least one chute: 5 destinations need a free chute" in (
        result.stderr
    )
    assert "only 4 of the machine's 5 chutes are free" in result.stderr
    assert not out.exists()


def test_volumes_from_the_sites_manifests(site: Path, tmp_path: Path) -> None:
    # 3,400 rows for FR-CORSE (one chute: 180 an hour) over 06:00-23:00 is 200 an hour;
    # a row without a destination or rule reaches no chute and is not counted.
    folder = tmp_path / "manifests"
    folder.mkdir()
    rows = [f"PKG{i:06d},FR-CORSE" for i in range(3400)] + ["NOPE000001,"]
    (folder / "day.csv").write_text(
        "barcode,destination\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )
    out = tmp_path / "new.toml"
    result = optimise(site, "--from-manifests", "--hours", "6-23", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "manifests: 3,401 rows in 1 file(s), 3,400 reach a destination's chutes" in (
        result.stdout
    )
    assert "spread evenly over 06:00-23:00" in result.stdout
    # 17 hours of 200: 20 an hour too many for one chute.
    assert "estimated items finding their chutes full: 340 before, 0 after" in result.stdout
    assert "FR-CORSE: 1 -> 2 chutes" in result.stdout
    # The row without a destination is a bad manifest row for check-config (exit 1, named
    # by file and line); without it the site is valid.
    checked = sorterd("check-config", "-c", str(site))
    assert checked.returncode == 1
    assert "day.csv: line 3402: no destination, postcode, country or origin" in checked.stderr
    (folder / "day.csv").write_text("barcode,destination\n" + "\n".join(rows[:-1]) + "\n")
    assert sorterd("check-config", "-c", str(site)).returncode == 0
    assert len(load_plan(out).destinations[21].chutes) == 2


def test_from_manifests_usage_errors(site: Path) -> None:
    result = optimise(site, "--from-manifests", "--hours", "9-9")
    assert result.returncode == 2
    assert "not the same hour" in result.stderr
    result = optimise(site, "--volumes", "v.csv", "--hours", "6-22")
    assert result.returncode == 2
    assert "--hours and --profile go with --from-manifests" in result.stderr


def test_constraints_that_cannot_hold_are_named_and_nothing_is_written(
    site: Path, tmp_path: Path
) -> None:
    plan = site.parent / "sortplan.toml"
    text = plan.read_text(encoding="utf-8")
    # More chutes than the machine has free for the domestic minimum.
    plan.write_text(text.replace("min_chutes = 6 ", "min_chutes = 230"), encoding="utf-8")
    assert sorterd("check-config", "-c", str(site)).returncode == 0  # the plan itself is fine
    volumes = write_volumes(tmp_path / "v.csv", ["FR-CORSE,18,500"])
    out = tmp_path / "new.toml"
    result = optimise(site, "--volumes", str(volumes), "--out", str(out))
    assert result.returncode == 1
    assert "min_chutes of CASABLANCA-CENTRE: they need 266 free chutes but only 219" in (
        result.stderr
    )
    assert not out.exists()
    assert "Traceback" not in result.stderr


def test_the_report_is_one_self_contained_file(site: Path, tmp_path: Path) -> None:
    volumes = write_volumes(tmp_path / "v.csv", [f"FR-CORSE,{h},500" for h in (18, 19, 20)])
    report = tmp_path / "report.html"
    result = optimise(site, "--volumes", str(volumes), "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert f"report written to {report}" in result.stdout
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<svg" in text
    assert "FR-CORSE" in text
    assert "http" not in text
    assert "<script" not in text
    assert "simulated recirculations caused by full chutes" in text
    # The replay report's charts, current and optimised, and the operators per zone.
    assert text.count('aria-label="Items per chute over time"') == 2
    assert text.count('aria-label="Chute fill: items sorted into each chute') == 2
    assert "Items per operator over the day" in text
    assert "<td>domestic</td><td>3</td>" in text


def test_volumes_from_a_replay(site: Path, tmp_path: Path) -> None:
    # AI 420 labels with Casablanca-centre postcodes, 300 of them between 08:00 and 08:59.
    scans = tmp_path / "scans.csv"
    scans.write_text(
        "tracking_id,codes,time\n"
        + "".join(f"{i},]C142020{i % 100:03d},08:{i % 60:02d}\n" for i in range(300))
        + "x1,NOREAD,09:00\n",
        encoding="utf-8",
    )
    result = optimise(site, "--from-replay", str(scans))
    assert result.returncode == 0, result.stderr
    assert "volumes scans.csv: 300 items over the day" in result.stdout
    # 8 chutes take 8 x 180 = 1440 items an hour: nothing to gain, nothing moves.
    assert "0 before, 0 after" in result.stdout
    assert "chutes moved: 0 of" in result.stdout


def test_a_replay_without_times_is_refused(site: Path, tmp_path: Path) -> None:
    scans = tmp_path / "scans.csv"
    scans.write_text("tracking_id,codes\n1,]C14202025\n", encoding="utf-8")
    result = optimise(site, "--from-replay", str(scans))
    assert result.returncode == 1
    assert "needs a time column" in result.stderr


def test_an_out_folder_that_does_not_exist_is_said_before_the_solve(
    site: Path, tmp_path: Path
) -> None:
    volumes = write_volumes(tmp_path / "v.csv", ["FR-CORSE,18,500"])
    out = tmp_path / "missing" / "new.toml"
    result = optimise(site, "--volumes", str(volumes), "--out", str(out))
    assert result.returncode == 1
    assert f"error: --out {out}: the folder {out.parent} does not exist" in result.stderr
    assert "solver" not in result.stdout


def test_an_absurd_move_weight_is_a_usage_error_not_a_solver_mystery(
    site: Path, tmp_path: Path
) -> None:
    """Found in review: 1e13 overflowed CP-SAT's coefficients and the message said to give
    the solver more time."""
    volumes = write_volumes(tmp_path / "v.csv", ["FR-CORSE,18,200"])
    result = optimise(site, "--volumes", str(volumes), "--move-weight", "1e13")
    assert result.returncode == 2
    assert "--move-weight: must be at most 1,000,000" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_commands_defaults_are_the_models() -> None:
    """Copied into the command so that --help does not load the solver."""
    from sorter.optimise.model import DEFAULT_BALANCE_WEIGHT
    from sorterd import optimise_cli, optimise_sources

    assert optimise_cli.DEFAULT_BALANCE_WEIGHT == DEFAULT_BALANCE_WEIGHT
    assert optimise_cli.DEFAULT_HOURS == optimise_sources.DEFAULT_HOURS


@pytest.mark.parametrize("flag", ["--out", "--report"])
def test_an_out_that_is_a_folder_is_said_before_the_solve_and_leaves_nothing(
    site: Path, tmp_path: Path, flag: str
) -> None:
    """Found in review: the solve ran, then `[Errno 21] Is a directory` and a temporary
    `.NAME.xxxx` file left beside the folder."""
    volumes = write_volumes(tmp_path / "v.csv", ["FR-CORSE,18,500"])
    folder = tmp_path / "plans"
    folder.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    result = optimise(site, "--volumes", str(volumes), flag, str(folder))
    assert result.returncode == 1
    assert f"error: {flag} {folder}: is a folder; give the file to write" in result.stderr
    assert "solver" not in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not any(folder.iterdir())
