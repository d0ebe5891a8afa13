"""Site config and sort plan from arbitrary TOML text or bytes.

Property: load_site / load_plan return a valid object or raise ConfigError naming each
problem, never anything else (a traceback at start-up for an engineer's typo). A plan that
loads also compiles for the kernel.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sorter.config import ConfigError, Site, load_site
from sorter.plan import compile_plan, load_plan
from sorterd.demo import demo_config_dir
from tests.fuzz.profile import fuzz
from tests.fuzz.tomltext import documents, toml_literal, values

SITE = (demo_config_dir() / "site.toml").read_text()
PLAN = (demo_config_dir() / "sortplan.toml").read_text()
ENV_KEYS = [
    "SORTERD_MQTT_PASSWORD", "SORTERD_MQTT_URL", "SORTERD_PLC_POLL_INTERVAL_MS",
    "SORTERD_SITE_TIMEZONE", "SORTERD_TRACKING_SCAN_WAIT_MS", "SORTERD_MQTT_CA_FILE",
    "SORTERD_METRICS_LISTEN", "SORTERD_NOPE_X", "SORTERD_MQTT_NOPE", "SORTERD_MANIFEST_FILES",
]  # fmt: skip


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sorterd-fuzz-") as name:
        yield Path(name)


def _problems_are_named(exc: ConfigError) -> None:
    assert exc.problems
    for problem in exc.problems:
        assert problem.message


@fuzz(0.5)
@given(
    text=documents(SITE),
    env=st.dictionaries(st.sampled_from(ENV_KEYS), st.text(max_size=20), max_size=3),
)
@example(text=SITE.encode(), env={})
@example(text=b"\xff\xfe", env={})
@example(
    text=SITE.replace('timezone = "Africa/Casablanca"', 'timezone = "/etc/x"').encode(), env={}
)
def test_site_config_loads_or_names_its_problems(
    folder: Path, text: bytes, env: dict[str, str]
) -> None:
    path = folder / "site.toml"
    path.write_bytes(text)
    try:
        site = load_site(path, env=env)
    except ConfigError as exc:
        _problems_are_named(exc)
        return
    assert isinstance(site, Site)
    assert site.config.scanner


@fuzz(0.5)
@given(text=documents(PLAN))
@example(text=PLAN.encode())
@example(text=PLAN.replace('chutes = "1-60"', 'chutes = "1-99999999999"').encode())
@example(text=(PLAN + '\n[[rule]]\ndestination = "RABAT"\nbarcode = "a{99999999999}"\n').encode())
@example(
    text=(PLAN + '\n[[rule]]\ndestination = "RABAT"\npostcode = ["' + "9" * 400 + '"]\n').encode()
)
@example(
    text=(
        PLAN + '\n[[rule]]\ndestination = "RABAT"\nbarcode = "' + "(" * 5000 + ")" * 5000 + '"\n'
    ).encode()
)
@example(text=(PLAN + "\n[[destination]]\nname = []\nchutes = [1]\n").encode())
def test_plan_loads_or_names_its_problems(folder: Path, text: bytes) -> None:
    path = folder / "plan.toml"
    path.write_bytes(text)
    try:
        plan = load_plan(path)
    except ConfigError as exc:
        _problems_are_named(exc)
        return
    compiled = compile_plan(plan)
    assert compiled.n_chute_slots > max(plan.machine_chutes, default=0)


@fuzz(0.5)
@given(
    extra=st.lists(
        st.tuples(st.sampled_from(["rule", "destination"]), st.dictionaries(
            st.sampled_from(["name", "destination", "chutes", "overflow", "postcode", "barcode",
                             "s10_service", "country", "cutoff", "x"]),
            values, max_size=4,
        )),
        max_size=3,
    )
)  # fmt: skip
def test_plan_with_odd_tables_loads_or_names_its_problems(
    folder: Path, extra: list[tuple[str, dict[str, object]]]
) -> None:
    text = PLAN
    for kind, table in extra:
        text += f"\n[[{kind}]]\n" + "".join(f"{k} = {toml_literal(v)}\n" for k, v in table.items())
    path = folder / "plan.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        plan = load_plan(path)
    except ConfigError as exc:
        _problems_are_named(exc)
        return
    compile_plan(plan)
