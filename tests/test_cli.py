"""The command line as a user meets it: exit codes and messages, never a traceback."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sorter.errors import SorterdError
from sorterd import cli
from sorterd.demo import demo_config_dir

DEMO_SITE = demo_config_dir() / "site.toml"


def sorterd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sorterd.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


def test_check_config_accepts_the_demo_site() -> None:
    out = sorterd("check-config", "-c", str(DEMO_SITE))
    assert out.returncode == 0, out.stderr
    assert "casablanca-day" in out.stdout
    assert "11 destinations" in out.stdout


def _broken_site(tmp_path: Path, text: str) -> Path:
    site = tmp_path / "site.toml"
    plan = tmp_path / "sortplan.toml"
    plan.write_text((demo_config_dir() / "sortplan.toml").read_text())
    site.write_text(text)
    return site


GOOD = DEMO_SITE.read_text()


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (("poll_interval_ms = 5", "poll_interval_ms = -5"), "plc.poll_interval_ms", "greater"),
        (("poll_interval_ms = 5", "poll_intervall_ms = 5"), "plc.poll_intervall_ms", "unknown"),
        (('url = "tcp://127.0.0.1:5020"', 'url = "udp://x"'), "plc.url", "scheme"),
        (
            ('topic_prefix = "sortcentre/casablanca-hub/sorter-1"', ""),
            "mqtt.topic_prefix",
            "missing",
        ),
        (('format = "index"', 'format = "zebra"'), "scanner[0].format", "'custom'"),
        (
            ('format = "index"', 'format = "custom"\npattern = "(?P<code>.*)"'),
            "scanner[0].pattern",
            "(?P<codes>...)",
        ),
        (('format = "index"', 'format = "lines"\nheader = "H"'), "scanner[0].header", "lines"),
    ],
)
def test_broken_config_names_the_key_and_exits_1(
    tmp_path: Path, edit: tuple[str, str], key: str, words: str
) -> None:
    assert edit[0] in GOOD
    site = _broken_site(tmp_path, GOOD.replace(edit[0], edit[1], 1))
    for command in ("check-config", "run"):
        out = sorterd(command, "-c", str(site))
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert key in out.stderr, out.stderr
        assert words in out.stderr.lower() or words in out.stderr, out.stderr
        assert str(site) in out.stderr


def test_every_problem_is_listed(tmp_path: Path) -> None:
    text = GOOD.replace("poll_interval_ms = 5", "poll_interval_ms = 0").replace(
        'name = "tunnel-1"', 'name = "tunnel 1"'
    )
    out = sorterd("check-config", "-c", str(_broken_site(tmp_path, text)))
    assert out.returncode == 1
    assert "plc.poll_interval_ms" in out.stderr
    assert "scanner[0].name" in out.stderr
    assert "2 problem(s)" in out.stderr


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    site = _broken_site(tmp_path, GOOD + "\n[plc\n")
    out = sorterd("check-config", "-c", str(site))
    assert out.returncode == 1
    assert "TOML syntax error" in out.stderr
    assert "Traceback" not in out.stderr
    out = sorterd("run", "-c", str(tmp_path / "nope.toml"))
    assert out.returncode == 1
    assert "cannot read" in out.stderr
    assert "Traceback" not in out.stderr


def test_broken_plan_is_reported_with_its_key(tmp_path: Path) -> None:
    site = _broken_site(tmp_path, GOOD)
    plan = tmp_path / "sortplan.toml"
    plan.write_text(plan.read_text().replace("chutes = [30]", "chutes = [300]"))
    out = sorterd("check-config", "-c", str(site))
    assert out.returncode == 1
    assert "sortplan.toml: destination[8].chutes[0]: chute 300 does not exist" in out.stderr


def test_usage_errors_exit_2() -> None:
    assert sorterd().returncode == 2
    assert sorterd("run").returncode == 2
    assert sorterd("frobnicate").returncode == 2
    out = sorterd("--help")
    assert out.returncode == 0
    for command in ("run", "demo", "check-config", "simulate"):
        assert command in out.stdout


def test_env_override_reaches_config(tmp_path: Path) -> None:
    from sorter.config import ConfigError, load_site

    site = load_site(DEMO_SITE, env={"SORTERD_MQTT_PASSWORD": "s3cret"})
    assert site.config.mqtt.password == "s3cret"
    with pytest.raises(ConfigError) as err:
        load_site(DEMO_SITE, env={"SORTERD_PLC_POLL_INTERVAL": "7"})
    assert "plc.poll_interval" in str(err.value)


def test_the_casablanca_example_checks_clean() -> None:
    site = demo_config_dir().parent / "casablanca" / "site.toml"
    out = sorterd("check-config", "-c", str(site))
    assert out.returncode == 0, out.stderr
    assert "38 destinations, 38 rules, 240 chutes, 2 size classes" in out.stdout
    assert "warning" not in out.stderr


def test_plan_warnings_are_shown_but_do_not_fail(tmp_path: Path) -> None:
    site = _broken_site(tmp_path, GOOD)
    plan = tmp_path / "sortplan.toml"
    plan.write_text(
        plan.read_text()
        + '\n[[rule]]\ndestination = "FES"\ncountry = ["MA"]\npostcode = ["30100"]\n'
    )
    out = sorterd("check-config", "-c", str(site))
    assert out.returncode == 0, out.stderr
    assert "warning:" in out.stderr
    assert "can never match: rule[3] (FES)" in out.stderr


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ("version = 2", "version = 1", "version", "DESTINATION country"),
        ('postcode = ["10*"]', 'postcode = ["A1-B2"]', "rule[1].postcode[0]", "'A1-B2'"),
        ('postcode = ["10*"]', 'postcode = ["2*0"]', "rule[1].postcode[0]", "'2*0'"),
        ('origin = ["!MA"]', 'origin = ["!XX"]', "rule[6].origin", "XX is not an ISO 3166"),
        ('country = ["MA"]', 'country = ["UK"]', "rule[0].country", "UK is not an ISO 3166"),
    ],
)
def test_cross_border_plan_problems_name_file_rule_and_value(
    tmp_path: Path, old: str, new: str, key: str, words: str
) -> None:
    site = _broken_site(tmp_path, GOOD)
    plan = tmp_path / "sortplan.toml"
    assert old in plan.read_text()
    plan.write_text(plan.read_text().replace(old, new, 1))
    for command in ("check-config", "run"):
        out = sorterd(command, "-c", str(site))
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert f"sortplan.toml: {key}:" in out.stderr, out.stderr
        assert words in out.stderr


def test_site_country_must_be_iso(tmp_path: Path) -> None:
    site = _broken_site(tmp_path, GOOD.replace('country = "MA"', 'country = "XX"', 1))
    out = sorterd("check-config", "-c", str(site))
    assert out.returncode == 1
    assert "site.country" in out.stderr
    assert "'XX' is not an ISO 3166-1 alpha-2" in out.stderr


def test_country_format_warning_is_shown(tmp_path: Path) -> None:
    site = _broken_site(tmp_path, GOOD)
    plan = tmp_path / "sortplan.toml"
    plan.write_text(
        plan.read_text().replace(
            'name = "UPS-EXPORT"',
            'name = "UK"\nchutes = [33]\n\n[[destination]]\nname = "UPS-EXPORT"',
        )
        + '\n[[rule]]\ndestination = "UK"\ncountry = ["GB"]\npostcode = ["10000-19999"]\n'
    )
    out = sorterd("check-config", "-c", str(site))
    assert out.returncode == 0, out.stderr
    assert "'10000-19999' can never match a postcode of GB" in out.stderr


def test_top_command_line_errors() -> None:
    out = sorterd("top", "--mqtt", "http://example", "--prefix", "a/b")
    assert out.returncode == 1
    assert "mqtt://" in out.stderr
    assert "Traceback" not in out.stderr
    assert sorterd("top").returncode == 2


def test_a_journal_of_another_version_is_one_line(tmp_path: Path) -> None:
    """A SorterdError at start-up (here drivers.journal's) is the user's: no traceback."""
    site = _broken_site(tmp_path, GOOD)
    assert 'path = "state/journal.sqlite"' in site.read_text()  # beside the site file
    journal = tmp_path / "state" / "journal.sqlite"
    journal.parent.mkdir()
    with contextlib.closing(sqlite3.connect(journal)) as db:
        db.execute("PRAGMA user_version=99")
    out = sorterd("run", "-c", str(site))
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: journal {journal} has schema 99, this sorterd reads 1"]


class _LineDownError(SorterdError):
    pass


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (_LineDownError("the PLC\n  does not answer"), ["error: the PLC does not answer"]),
        (
            ExceptionGroup("tasks", [_LineDownError("a"), ExceptionGroup("inner", [OSError("b")])]),
            ["error: a", "error: b"],
        ),
    ],
)
def test_errors_raised_on_purpose_are_one_line_each(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: BaseException,
    expected: list[str],
) -> None:
    def fail(args: object) -> int:
        raise raised

    monkeypatch.setitem(cli._COMMANDS, "check-config", fail)
    assert cli.main(["check-config", "-c", "site.toml"]) == cli.EXIT_FAIL
    assert capsys.readouterr().err.splitlines() == expected


def test_a_bug_inside_a_task_group_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(args: object) -> int:
        raise ExceptionGroup("tasks", [_LineDownError("a"), ZeroDivisionError()])

    monkeypatch.setitem(cli._COMMANDS, "check-config", fail)
    with pytest.raises(ExceptionGroup):
        cli.main(["check-config", "-c", "site.toml"])
