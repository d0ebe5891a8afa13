"""`sorterd check-config` on plan v2, site `[site] country` and manifests (the interface
contract's sections 1, 2 and 6): 0 valid, 1 invalid with every problem listed, each
naming the file and the key or line and the value; never a traceback."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.contract.kit import REPO, Site, sorterd
from tests.contract.plans import CONTRACT_PLAN, plan_with_rules

MANIFEST_HEADER = "barcode,destination,postcode,country,origin,customs\n"

# Every case of this module is a site folder (made by its builder) that check-config runs
# on; the runs go at once, a few at a time, in one fixture, and each test reads its own.
BUILDERS: dict[str, Callable[[Path], Path]] = {}


def _run(config: Path) -> tuple[int, str]:
    out = sorterd("check-config", "-c", str(config))
    return out.returncode, out.stdout + out.stderr


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    configs = {name: build(tmp_path_factory.mktemp(name)) for name, build in BUILDERS.items()}
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = dict(zip(configs, pool.map(_run, configs.values()), strict=True))
    for code_text in results.values():
        assert "Traceback" not in code_text[1], code_text[1]
    return results


def _site(
    plan: str = CONTRACT_PLAN,
    *,
    manifest: str | None = None,
    site_extra: str = "",
    country: str | None = "MA",
) -> Callable[[Path], Path]:
    return lambda folder: Site(folder, plan, manifest, site_extra, country).write()


def _misspelt(plan: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        config = Site(folder, plan).write()
        config.write_text(config.read_text().replace("[site]\n", '[site]\ncontry = "MA"\n'))
        return config

    return build


BUILDERS.update(
    {
        "contract": _site(),
        "demo": lambda _: REPO / "config" / "demo" / "site.toml",
        "casablanca": lambda _: REPO / "config" / "casablanca" / "site.toml",
        "v1": _site(CONTRACT_PLAN.replace("version = 2", "version = 1")),
        "no-version": _site(CONTRACT_PLAN.replace("version = 2\n", "")),
        "version-text": _site(CONTRACT_PLAN.replace("version = 2\n", 'version = "2"\n')),
        "version-3": _site(CONTRACT_PLAN.replace("version = 2\n", "version = 3\n")),
    }
)


def test_the_contract_plan_is_accepted(checked: dict[str, tuple[int, str]]) -> None:
    code, text = checked["contract"]
    assert code == 0, text
    assert "casablanca-day" in text


@pytest.mark.parametrize("folder", ["demo", "casablanca"])
def test_the_shipped_configs_are_accepted(checked: dict[str, tuple[int, str]], folder: str) -> None:
    code, text = checked[folder]
    assert code == 0, text
    assert "error" not in text.lower(), text


def test_a_version_1_plan_is_refused_saying_what_changed(
    checked: dict[str, tuple[int, str]],
) -> None:
    code, text = checked["v1"]
    assert code == 1, text
    assert "sortplan.toml" in text
    for word in ("version", "2", "destination", "origin"):
        assert word in text.lower(), (word, text)


@pytest.mark.parametrize("name", ["no-version", "version-text", "version-3"])
def test_a_plan_must_say_version_2(checked: dict[str, tuple[int, str]], name: str) -> None:
    code, text = checked[name]
    assert code == 1, text
    assert "sortplan.toml" in text, text
    assert "version" in text, text


# (rule text, the value that must be named) - each refused; all in one plan, since
# check-config lists every problem.
BAD_RULES = [
    ('country = ["PT"]\npostcode = ["1000-001"]', "1000-001"),
    ('country = ["GB"]\npostcode = ["A0-B9"]', "A0-B9"),
    ('country = ["ES"]\npostcode = ["100-2000"]', "100-2000"),
    ('country = ["PL"]\npostcode = ["00-950"]', "00-950"),
    ('country = ["XX"]', "XX"),
    ('country = ["UK"]', "UK"),
    ('country = ["!ZZ"]', "ZZ"),
    ('country = ["FRA"]', "FRA"),
    ('origin = ["XX"]', "XX"),
    ('origin = ["!QM"]', "QM"),
    ('contry = ["MA"]', "contry"),  # a typo must not widen a rule silently
    ('postcode = ["20000-2099"]', "20000-2099"),
]
BUILDERS["bad-rules"] = _site(
    plan_with_rules("".join(f'[[rule]]\ndestination = "ABROAD"\n{t}\n' for t, _ in BAD_RULES))
)


def test_every_bad_pattern_and_country_is_named_with_its_rule(
    checked: dict[str, tuple[int, str]],
) -> None:
    code, text = checked["bad-rules"]
    assert code == 1, text
    lines = [line for line in text.splitlines() if "sortplan.toml" in line]
    for index, (_, value) in enumerate(BAD_RULES):
        # the rule by its position (0- or 1-based) and the value, on one line
        named = [
            line
            for line in lines
            if value in line and re.search(rf"rule\D{{0,3}}({index}|{index + 1})\b", line)
        ]
        assert named, (index, value, text)


POSTCODES = ['["SW1*", "E1*", "EC*"]', '["K1A0B1"]', '["K1A 0B1"]', '["1000001"]', '["20*"]']
BUILDERS["letters"] = _site(
    plan_with_rules(
        "".join(f'[[rule]]\ndestination = "ABROAD"\npostcode = {p}\n' for p in POSTCODES)
    )
)
BUILDERS["gb-range"] = _site(
    plan_with_rules(
        '[[rule]]\ndestination = "UK-LONDON"\ncountry = ["GB"]\npostcode = ["20000-20999"]\n'
    )
)


def test_prefix_and_exact_postcodes_with_letters_are_accepted(
    checked: dict[str, tuple[int, str]],
) -> None:
    code, text = checked["letters"]
    assert code == 0, text
    assert "error" not in text.lower(), text


def test_a_digit_range_on_a_gb_rule_is_warned_about(checked: dict[str, tuple[int, str]]) -> None:
    # the cross-border issue: "check-config warns about patterns that can never match a
    # country's format"
    code, text = checked["gb-range"]
    assert code == 0, text
    warned = [t for t in text.splitlines() if "warning" in t.lower()]
    assert any("20000-20999" in t and "sortplan.toml" in t for t in warned), text


BUILDERS["site-XX"] = _site(country="XX")
BUILDERS["site-UK"] = _site(country="UK")


@pytest.mark.parametrize("country", ["XX", "UK"])
def test_a_site_country_that_is_not_iso_is_refused(
    checked: dict[str, tuple[int, str]], country: str
) -> None:
    code, text = checked[f"site-{country}"]
    assert code == 1, text
    named = [t for t in text.splitlines() if "site.toml" in t and "country" in t]
    assert any(country in t for t in named), text


BUILDERS["misspelt"] = _misspelt(CONTRACT_PLAN)
BUILDERS["misspelt-and-plan"] = _misspelt(
    CONTRACT_PLAN.replace('country = ["GB"]', 'country = ["UK"]')
)
BUILDERS["plan-and-manifest"] = _site(
    CONTRACT_PLAN.replace('country = ["GB"]', 'country = ["UK"]'),
    manifest="code,country\nRB123456785GB,GB\n",
)


def test_a_misspelt_site_key_is_refused(checked: dict[str, tuple[int, str]]) -> None:
    code, text = checked["misspelt"]
    assert code == 1, text
    assert "contry" in text, text


def test_problems_of_the_site_and_of_its_plan_are_all_listed(
    checked: dict[str, tuple[int, str]],
) -> None:
    # "1 invalid (every problem listed, each naming file and key/line)"
    code, text = checked["misspelt-and-plan"]
    assert code == 1, text
    assert any("site.toml" in t and "contry" in t for t in text.splitlines()), text
    assert any("sortplan.toml" in t and "'UK'" in t for t in text.splitlines()), text


def test_problems_of_the_plan_and_of_a_manifest_are_all_listed(
    checked: dict[str, tuple[int, str]],
) -> None:
    code, text = checked["plan-and-manifest"]
    assert code == 1, text
    assert any("sortplan.toml" in t and "'UK'" in t for t in text.splitlines()), text
    assert any("preadvice.csv" in t and "error" in t for t in text.splitlines()), text


HEADERS = ["code,country", "barcode,customs"]
for _header in HEADERS:
    BUILDERS[f"header-{_header}"] = _site(
        manifest=f"{_header}\nRB123456785GB{',GB' * _header.count(',')}\n"
    )


@pytest.mark.parametrize("header", HEADERS)
def test_a_manifest_without_the_required_columns_is_refused(
    checked: dict[str, tuple[int, str]], header: str
) -> None:
    code, text = checked[f"header-{header}"]
    assert code == 1, text
    assert "preadvice.csv" in text, text


BUILDERS["bad-rows"] = _site(
    manifest=MANIFEST_HEADER
    + "".join(
        [
            "RB123456785FR,,75001,FR,,\n",
            "RB123456785GB,,SW1A 1AA,XX,,\n",  # line 3: country
            "RB123456785DE,,10115,DE,QZ,\n",  # line 4: origin
            "RB123456785ES,NOWHERE,,,,\n",  # line 5: destination
            "RB123456785IT,,00118,IT,,maybe\n",  # line 6: customs
        ]
    )
)


def test_bad_manifest_rows_are_named_by_file_and_line(checked: dict[str, tuple[int, str]]) -> None:
    # The contract: "0 valid, 1 invalid (every problem listed, each naming file and
    # key/line)": a manifest with bad rows is invalid, each row named (the live line skips
    # them and loses nothing else; docs/interfaces.md section 1).
    code, text = checked["bad-rows"]
    assert code == 1, text
    for line, column in ((3, "country"), (4, "origin"), (5, "destination"), (6, "customs")):
        named = [t for t in text.splitlines() if "preadvice.csv" in t and f"line {line}" in t]
        assert any(column in t for t in named), (line, column, text)


# Section 2 of the contract, v2 tables: the literal examples of the contract.
FEEDS_AND_ARCHIVE = """
[feeds]
preadvice = "sortcentre/casablanca-hub/preadvice"   # topic of pre-advice rows
customs = "sortcentre/casablanca-hub/customs"       # topic of customs decisions
[archive]
url = "postgresql://sorterd@127.0.0.1:5432/sorterd"  # password: SORTERD_ARCHIVE_PASSWORD
lines = ["sortcentre/casablanca-hub/+"]              # topic prefixes of the lines to keep
retention_days = 90
"""
BUILDERS["feeds-archive"] = _site(site_extra=FEEDS_AND_ARCHIVE)


def _web(folder: Path) -> Path:
    (folder / "users.toml").write_text("")
    extra = '[web]\nlisten = "127.0.0.1:8080"\nusers = "users.toml"\n'
    return Site(folder, CONTRACT_PLAN, site_extra=extra).write()


def _broker_list(folder: Path) -> Path:
    config = Site(folder, CONTRACT_PLAN).write()
    text = config.read_text().replace(
        'url = "mqtt://127.0.0.1:1883"',
        'url = ["mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1884", "mqtt://127.0.0.1:1885"]',
    )
    config.write_text(text)
    return config


BUILDERS["web"] = _web
BUILDERS["broker-list"] = _broker_list


def test_the_feeds_and_archive_tables_are_accepted(checked: dict[str, tuple[int, str]]) -> None:
    code, text = checked["feeds-archive"]
    assert code == 0, text


def test_the_web_table_is_accepted(checked: dict[str, tuple[int, str]]) -> None:
    code, text = checked["web"]
    assert code == 0, text


def test_a_list_of_broker_urls_is_accepted(checked: dict[str, tuple[int, str]]) -> None:
    code, text = checked["broker-list"]
    assert code == 0, text
