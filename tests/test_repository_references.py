"""Comments and docs point only at things in the repository.

A comment that cites a file or module that is not there sends the next reader looking for
it: every path under one of the repository's folders and every dotted module of our
packages named in a tracked source or document must exist.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sorter", "drivers", "simulators", "sorterd", "benchmarks")
FOLDERS = (*PACKAGES, "tests", "docs", "config", "fuzz")
# A path under one of our folders: `docs/interfaces.md`, `tests/faults/`.
PATH_RE = re.compile(rf"(?<![\w/.-])((?:{'|'.join(FOLDERS)})/[\w./*-]*[\w/*])")
# A dotted module of our packages: `sorter.ports`, `drivers.journal.Journal`.
MODULE_RE = re.compile(rf"(?<![\w.])((?:{'|'.join(PACKAGES)})(?:\.[a-z_][a-z0-9_]*)+)(?![\w(])")
# File names that look like modules (the systemd unit, TLS files, docs), and what the tools
# write: benchmark results and BENCHMARKS.md (generated from results of earlier commits, in
# the words of the code measured then), fuzz corpora.
FILE_SUFFIXES = {"service", "socket", "conf", "pem", "key", "md", "toml", "csv", "json"}
GENERATED = ("benchmarks/results/", "BENCHMARKS.md", "fuzz/corpus/")
PLACEHOLDERS = ("NAME", "*", "...", "<", "{")


SELF = str(Path(__file__).resolve().relative_to(ROOT))  # names them on purpose


def _tracked() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [f for f in out.splitlines() if (ROOT / f).exists() and f != SELF]


def _exists(ref: str, tracked: set[str], folders: set[str]) -> bool:
    ref = ref.rstrip("/.")
    return ref in tracked or ref in folders or ref.startswith(GENERATED)


def _module_exists(dotted: str) -> bool:
    """True when `dotted` walks down packages to a module (the rest may be attributes: a
    class, a function), or ends at a name its package's `__init__` defines or imports."""
    parts = dotted.split(".")
    path = ROOT / parts[0]
    for part in parts[1:]:
        if (path / part / "__init__.py").exists():
            path = path / part
            continue
        if (path / f"{part}.py").exists():
            return True
        init = (path / "__init__.py").read_text(encoding="utf-8")
        return re.search(rf"\b{re.escape(part)}\b", init) is not None
    return True


def _references() -> list[tuple[str, int, str, str]]:
    refs = []
    for name in _tracked():
        # pyproject.toml names paths inside the built wheel, not the checkout.
        if not name.endswith((".py", ".md")) or name.startswith(GENERATED):
            continue
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            refs.extend((name, number, "path", m.group(1)) for m in PATH_RE.finditer(line))
            refs.extend((name, number, "module", m.group(1)) for m in MODULE_RE.finditer(line))
    return refs


def test_every_path_and_module_named_exists() -> None:
    tracked = set(_tracked())
    folders = {str(Path(f).parents[i]) for f in tracked for i in range(len(Path(f).parents) - 1)}
    missing = []
    for name, number, kind, ref in _references():
        if any(p in ref for p in PLACEHOLDERS) or ref.rsplit(".", 1)[-1] in FILE_SUFFIXES:
            continue
        ok = _exists(ref, tracked, folders) if kind == "path" else _module_exists(ref)
        if not ok:
            missing.append(f"{name}:{number}: {ref}")
    assert not missing, "named but not in the repository:\n" + "\n".join(missing)


@pytest.mark.parametrize("doc", ["INTERFACES.md", "DOMAIN.md", "LIBRARIES.md", "STYLE.md"])
def test_no_citations_of_documents_outside_the_repository(doc: str) -> None:
    """The shared design documents are not in the repository; docs/ is what a reader has."""
    cited = [
        f"{name}:{number}"
        for name in _tracked()
        if name.endswith((".py", ".md", ".toml"))
        for number, line in enumerate(
            (ROOT / name).read_text(encoding="utf-8", errors="replace").splitlines(), 1
        )
        if re.search(rf"(?<![\w/]){re.escape(doc)}", line)
    ]
    assert not cited, f"{doc} is cited but is not in the repository: " + ", ".join(cited)
