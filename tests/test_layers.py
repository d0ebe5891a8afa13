"""The layers of the house, checked from the source: who may import whom.

- `sorter/` imports no hardware or network library and nothing of the packages above it.
- `drivers/` imports nothing of `sorterd/` or `simulators/`.
- `simulators/` import nothing from `drivers/` and, from `sorter/`, only shared records,
  config and the address parsers: their codecs and label knowledge are their own, so an
  end-to-end test cannot pass because the daemon and its simulated world share a bug.
- Every module declares its public face (`__all__`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARDWARE_AND_NETWORK = {
    "pymodbus", "serial", "serial_asyncio_fast", "aiomqtt", "paho", "amqtt", "socket",
    "asyncpg", "psycopg", "nats", "prometheus_client", "sqlite3", "aiohttp",
}  # fmt: skip
# What the simulators may take from sorter/: records, config, parsers of addresses and
# option records, reference data, the error base.
SIMULATOR_MAY_USE = {
    "sorter.ports", "sorter.config", "sorter.addresses", "sorter.telegram_options",
    "sorter.countries", "sorter.errors", "sorter.backoff", "sorter.bounded",
}  # fmt: skip


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module imported anywhere in the file, function-level imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


@pytest.mark.parametrize("path", _modules("sorter"), ids=lambda p: str(p.relative_to(ROOT)))
def test_sorter_imports_no_io_library_and_nothing_above_it(path: Path) -> None:
    bad = {
        name
        for name in _imports(path)
        if _top(name) in HARDWARE_AND_NETWORK | {"drivers", "sorterd", "simulators"}
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("drivers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_drivers_import_nothing_of_the_application_or_the_simulators(path: Path) -> None:
    bad = {name for name in _imports(path) if _top(name) in {"sorterd", "simulators"}}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("simulators"), ids=lambda p: str(p.relative_to(ROOT)))
def test_simulators_share_no_codec_with_the_daemon(path: Path) -> None:
    imported = _imports(path)
    from_drivers = {name for name in imported if _top(name) == "drivers"}
    from_sorter = {
        name
        for name in imported
        if _top(name) == "sorter"
        and name != "sorter"
        and not any(name == ok or name.startswith(ok + ".") for ok in SIMULATOR_MAY_USE)
    }
    assert not from_drivers, f"{path.relative_to(ROOT)} imports {sorted(from_drivers)}"
    assert not from_sorter, f"{path.relative_to(ROOT)} imports {sorted(from_sorter)}"


@pytest.mark.parametrize(
    "path",
    [
        p
        for pkg in ("sorter", "drivers", "simulators", "sorterd", "benchmarks")
        for p in _modules(pkg)
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_module_declares_its_public_face(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    assert "__all__" in names, f"{path.relative_to(ROOT)} has no __all__"
