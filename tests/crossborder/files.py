"""The files `sorterd replay` reads and writes, for generated items, and the replay itself.

CSV through the csv module on both sides: a code is a cell, byte-exact (a GS1 FNC1 is the raw
byte 0x1D inside it), codes joined by `;`, `NOREAD` for a no-read (docs/interfaces.md section 1).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from tests.crossborder.generator import MANIFEST_COLUMNS, Item

REPO: Final = Path(__file__).resolve().parents[2]
CASABLANCA: Final = REPO / "config" / "casablanca"
PLAN: Final = CASABLANCA / "sortplan.toml"
NOREAD: Final = "NOREAD"


def codes_cell(codes: Sequence[str]) -> str:
    return ";".join(codes) if codes else NOREAD


def write_scans(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    """SCANS.csv: the header is the first row's keys (`tracking_id`, `codes`, ...)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def scan_rows(items: Sequence[Item]) -> list[dict[str, object]]:
    """One row per item, tracking ids 1..n in item order."""
    return [{"tracking_id": i + 1, "codes": codes_cell(it.codes)} for i, it in enumerate(items)]


def write_manifest(path: Path, items: Iterable[Item]) -> int:
    """Every item's pre-advice rows in one shipper file; returns the row count."""
    rows = [r for it in items for r in it.manifest]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def _set_key(text: str, key: str, value: object) -> str:
    """Replace the one `key = ...` line of a TOML text; fails loudly if the site changed."""
    text, n = re.subn(rf"^{key} = .*$", f"{key} = {json.dumps(value)}", text, flags=re.M)
    assert n == 1, f"config/casablanca/site.toml: expected one `{key} = ` line, found {n}"
    return text


def write_site(folder: Path, manifest_glob: str) -> Path:
    """The Casablanca site config with the plan by absolute path, the manifests given and
    the journal in `folder` ([site] country = "MA" comes with it)."""
    text = (CASABLANCA / "site.toml").read_text()
    assert re.search(r'^country = "MA"', text, flags=re.M), "the site must say country MA"
    text = _set_key(text, "file", str(PLAN))
    text = _set_key(text, "files", [manifest_glob])
    text = _set_key(text, "path", str(folder / "journal.sqlite"))
    site = folder / "site.toml"
    site.write_text(text)
    return site


def sorterd() -> Path:
    """The installed console script, next to this interpreter."""
    return Path(sys.executable).parent / "sorterd"


def replay(site: Path, scans: Path, out: Path, *flags: str) -> list[dict[str, str]]:
    """`sorterd replay -c SITE SCANS --out OUT [flags]`; the rows of OUT."""
    cmd = [str(sorterd()), "replay", "-c", str(site), str(scans), "--out", str(out), *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    with out.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
