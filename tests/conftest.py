"""Shared fixtures and rules: a real MQTT broker, a check that no test leaves tasks behind,
what a machine must have for a test to run (SORTERD_REQUIRE), and hypothesis' profiles."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import resource
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

from drivers.broker import BrokerKind, LocalBroker, mosquitto_path
from tests.pgkit import PgServer, pg_missing, pg_server
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]

# --- hypothesis ------------------------------------------------------------------------
# No deadline: how long one example takes is not what these tests check, and a loaded
# machine would fail them for being slow. print_blob: a failure found anywhere can be
# replayed with @reproduce_failure.
settings.register_profile(
    "sorterd-dev", parent=settings.get_profile("default"), deadline=None, print_blob=True
)
# CI draws new examples on every run (hypothesis' own "ci" profile, loaded by itself under
# CI=true, derandomizes and keeps no database: the same inputs forever). Failures are kept
# in .hypothesis/examples and replayed first by the next run, when CI keeps that folder.
settings.register_profile(
    "sorterd-ci",
    parent=settings.get_profile("sorterd-dev"),
    derandomize=False,
    database=DirectoryBasedExampleDatabase(REPO / ".hypothesis" / "examples"),
)
settings.load_profile("sorterd-ci" if os.environ.get("CI") == "true" else "sorterd-dev")


# --- requirements ----------------------------------------------------------------------
# What some tests need from the machine, each with a check that says what is missing (None:
# nothing). A test asks with `@pytest.mark.requires(NAME, ...)` or `require(NAME)` and is
# skipped, saying why, where it is missing; SORTERD_REQUIRE=NAME,... (CI sets it to what
# it installs) turns that skip into a failure, so that CI cannot pass by skipping a suite.


def _program(name: str, *candidates: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        found = any(shutil.which(c) for c in (name, *candidates))
        return None if found else f"{name} is not installed"

    return missing


def _mosquitto() -> str | None:
    return None if mosquitto_path() is not None else "mosquitto is not installed"


def _full_disk() -> str | None:
    # The full-disk fault lowers RLIMIT_FSIZE of the daemon's process from outside
    # (tests/faults/test_faults.py): prlimit(2), which Python offers on Linux only.
    if sys.platform != "linux" or not hasattr(resource, "prlimit"):
        return "resource.prlimit (Linux) is needed to limit the daemon's file size"
    return None


_ISO_3166 = Path("/usr/share/iso-codes/json/iso_3166-1.json")


def _iso_codes() -> str | None:
    return None if _ISO_3166.exists() else f"Debian's iso-codes is not installed ({_ISO_3166})"


def _ipv6() -> str | None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        return f"no IPv6 loopback here: {exc}"
    return None


REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "mosquitto": _mosquitto,  # the fault suite, MQTT over TLS, the `broker` fixture
    "openssl": _program("openssl"),  # the TLS tests' certificates
    "full-disk": _full_disk,  # the journal-disk-full fault, without root
    "iso-codes": _iso_codes,  # the ISO 3166 table checked against Debian's
    "systemd-analyze": _program("systemd-analyze"),  # the unit file verified
    "ipv6": _ipv6,  # the metrics endpoint on ::1
    "postgresql": pg_missing,  # the archive's tests: a real server (tests/pgkit.py)
    "nats-server": _program("nats-server", "/usr/sbin/nats-server"),  # the three-node cluster
    "chromium": _program("chromium", "chromium-browser"),  # the web console in a browser
    "chromium-driver": _program("chromedriver"),  # WebDriver for that browser
}


def required() -> frozenset[str]:
    """The requirements SORTERD_REQUIRE (comma-separated) lists."""
    raw = os.environ.get("SORTERD_REQUIRE", "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def require(*names: str) -> None:
    """Skip the calling test unless every requirement in `names` is met; fail it instead
    when SORTERD_REQUIRE lists the missing one."""
    for name in names:
        missing = REQUIREMENTS[name]()
        if missing is None:
            continue
        if name in required():
            pytest.fail(f"SORTERD_REQUIRE lists {name}, but {missing}", pytrace=False)
        pytest.skip(f"{missing} (with SORTERD_REQUIRE={name} this fails)")


def pytest_configure(config: pytest.Config) -> None:
    unknown = sorted(required() - REQUIREMENTS.keys())
    if unknown:
        raise pytest.UsageError(
            f"SORTERD_REQUIRE names {', '.join(unknown)}; known: {', '.join(REQUIREMENTS)}"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        unknown = [name for name in mark.args if name not in REQUIREMENTS]
        if unknown:
            pytest.fail(f"requires({', '.join(unknown)}): no such requirement", pytrace=False)
        require(*mark.args)


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _structlog_uncached() -> Iterator[None]:
    """Tests that run the command line in-process configure logging (sorterd/logs.py), with
    loggers cached on first use: a cached logger keeps writing to that test's captured
    stderr, closed after it, and never sees a later test's capture_logs(). Which test runs
    first depends on the order (and on the xdist worker), so no logger is cached here."""
    configure = structlog.configure

    def uncached(*args: object, **kwargs: object) -> None:
        kwargs["cache_logger_on_first_use"] = False
        configure(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(structlog, "configure", uncached)
        yield


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """What one test configured (its captured stderr) is not the next test's."""
    yield
    structlog.reset_defaults()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        func = getattr(item, "function", None)
        if func is not None and inspect.iscoroutinefunction(func):
            item.add_marker(pytest.mark.usefixtures("_no_leaked_tasks"))


@pytest.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield

    def left() -> list[asyncio.Task[object]]:
        me = asyncio.current_task()
        return [t for t in asyncio.all_tasks() - before if not t.done() and t is not me]

    # Cancelled tasks take a few loop turns to finish: give them those before judging.
    with contextlib.suppress(TimeoutError):
        await wait_until(lambda: not left(), 5.0)
    if leftover := left():
        for t in leftover:
            t.cancel()
        names = ", ".join(sorted(t.get_name() for t in leftover))
        pytest.fail(f"test left tasks running: {names}")


def broker_kind() -> BrokerKind | None:
    """SORTERD_TEST_BROKER=embedded forces the fallback; default: mosquitto if installed."""
    kind = os.environ.get("SORTERD_TEST_BROKER")
    if kind in ("mosquitto", "embedded"):
        return kind  # type: ignore[return-value]
    return None


@pytest.fixture
async def broker() -> AsyncIterator[LocalBroker]:
    kind = broker_kind()
    if kind is None and "mosquitto" in required():
        # Not a skip where mosquitto is missing (the embedded broker stands in), but CI
        # must not quietly test against the fallback.
        require("mosquitto")
    async with LocalBroker(kind=kind) as b:
        yield b


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """One real PostgreSQL server for the session (tests/pgkit.py); each test takes its own
    database from it (`archive_db`). Tests that stop the server start their own."""
    require("postgresql")
    with pg_server() as server:
        yield server


@pytest.fixture
def archive_db(postgres: PgServer) -> str:
    """A new, empty database owned by tests.pgkit.ROLE: its URL, without the password."""
    return postgres.new_database()
