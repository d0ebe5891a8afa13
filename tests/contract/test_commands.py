"""The command line of the interface contract (section 1) as a user meets it: --help,
usage errors exit 2, bad input exits 1 naming the file, replay's optional columns,
`[site] country` and its environment override, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.contract.kit import Site, replay, s10, sorterd, sscc
from tests.contract.plans import CONTRACT_PLAN, FUNCTIONS

# section 1's commands
COMMANDS = [
    "run",
    "demo",
    "check-config",
    "replay",
    "archive",
    "trace",
    "report",
    "plan",
    "simulate",
]


@pytest.fixture(scope="module")
def help_text() -> str:
    out = sorterd("--help")
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_help_lists_every_command(help_text: str) -> None:
    for command in COMMANDS:
        assert re.search(rf"^    {command}\b", help_text, re.MULTILINE), (command, help_text)


def test_the_help_lists_the_web_command(help_text: str) -> None:
    assert re.search(r"^    web\b", help_text, re.MULTILINE), help_text


@pytest.mark.parametrize("command", ["check-config", "replay"])
def test_help_of_check_config_and_replay(command: str) -> None:
    out = sorterd(command, "--help")
    assert out.returncode == 0, out.stderr
    assert "-c SITE.toml" in out.stdout
    if command == "replay":
        assert "--no-manifest" in out.stdout
        assert "--out" in out.stdout


@pytest.mark.parametrize(
    "args",
    [(), ("check-config",), ("replay", "-c", "site.toml")],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    out = sorterd(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Site(tmp_path_factory.mktemp("commands"), CONTRACT_PLAN).write()


@pytest.mark.parametrize(
    ("scans", "named"),
    [
        ("tracking_id\n1\n", "scans.csv"),  # no codes column
        ("tracking_id,codes,recirculations\n1,NOREAD,many\n", "scans.csv"),
        ("", "scans.csv"),  # no header
    ],
)
def test_replay_of_bad_scans_exits_1_naming_the_file(
    site: Path, tmp_path: Path, scans: str, named: str
) -> None:
    (tmp_path / "scans.csv").write_text(scans)
    out = sorterd("replay", "-c", str(site), str(tmp_path / "scans.csv"))
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert named in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_replay_of_a_missing_file_exits_1(site: Path, tmp_path: Path) -> None:
    out = sorterd("replay", "-c", str(site), str(tmp_path / "nope.csv"))
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "nope.csv" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


LABEL_420 = f"]C100{sscc('06111001000100001')}42020250"
CASABLANCA_CHUTES = {1, 2, 3, 100}


def test_replay_uses_the_recirculations_and_time_columns(site: Path, tmp_path: Path) -> None:
    # max_recirculations = 2: an item that has recirculated twice goes to max_recirc;
    # CASABLANCA's cutoff is 21:30 site time (Africa/Casablanca, UTC+1 in December).
    scans = [
        ("1", LABEL_420, "0", "", "", "", "", "2026-12-07T10:00:00.000Z"),
        ("2", LABEL_420, "1", "", "", "", "", "2026-12-07T10:00:00.000Z"),
        ("3", LABEL_420, "2", "", "", "", "", "2026-12-07T10:00:00.000Z"),
        ("4", LABEL_420, "0", "", "", "", "", "2026-12-07T21:00:00.000Z"),
        ("5", "NOREAD", "0", "", "", "", "", "2026-12-07T10:00:00.000Z"),
    ]
    columns = (
        "tracking_id",
        "codes",
        "recirculations",
        "length_mm",
        "width_mm",
        "height_mm",
        "weight_g",
        "time",
    )
    report = tmp_path / "report.html"
    result = replay(site, scans, tmp_path, "--report", str(report), columns=columns)
    decided = {r["tracking_id"]: (r["reason"], int(r["chute"])) for r in result.rows}
    assert decided["1"][0] == "ok"
    assert decided["1"][1] in CASABLANCA_CHUTES
    assert decided["2"][0] == "ok"
    assert decided["2"][1] in CASABLANCA_CHUTES
    assert decided["3"] == ("max_recirc", FUNCTIONS["max_recirc"])
    assert decided["4"] == ("after_cutoff", FUNCTIONS["after_cutoff"])
    assert decided["5"] == ("no_read", FUNCTIONS["no_read"])
    assert report.stat().st_size > 0


def _routes(site: Path, tmp_path: Path, codes: str, **env: str) -> tuple[str, str]:
    scans = tmp_path / "scans.csv"
    scans.write_text(f"tracking_id,codes\n1,{codes}\n")
    decisions = tmp_path / "decisions.csv"
    out = sorterd("replay", "-c", str(site), str(scans), "--out", str(decisions), env=env)
    assert out.returncode == 0, out.stderr
    row = decisions.read_text().splitlines()[1].split(",")
    return row[2], row[4]


def test_site_country_is_overridden_by_the_environment(site: Path, tmp_path: Path) -> None:
    # SORTERD_<SECTION>_<KEY>: the same AI 420 label is now French (Corsica, 20250)
    assert _routes(site, tmp_path, LABEL_420, SORTERD_SITE_COUNTRY="FR") == ("CORSICA", "ok")


def test_without_a_site_country_domestic_postcodes_have_no_country(tmp_path: Path) -> None:
    # An AI 420 label, and a manifest postcode without a country, are the site's country;
    # a site without one leaves them unknown, which matches neither country = ["MA"] nor
    # country = ["!MA"].
    code = s10("RB", "30000001", "CN")
    manifest = f"barcode,postcode\n{code},20250\n"
    site = Site(tmp_path / "site", CONTRACT_PLAN, manifest=manifest, country=None).write()
    result = replay(site, [("1", LABEL_420), ("2", code)], tmp_path)
    decided = [(r["destination"], r["reason"]) for r in result.rows]
    assert decided == [("", "no_rule"), ("", "no_rule")], decided
