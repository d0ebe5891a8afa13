"""What an outside tester has: the `sorterd` command as a process, files in a temporary
folder, and the check digits of the public standards (written here from the standards, not
taken from sorter/, so that a shared mistake cannot pass)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GS",
    "REPO",
    "Replay",
    "Site",
    "dhl",
    "gs1_check",
    "replay",
    "s10",
    "sorterd",
    "sscc",
    "ups",
]

REPO = Path(__file__).resolve().parents[2]
GS = "\x1d"


def sorterd(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`sorterd ARGS...` as a user runs it (this checkout's copy, wherever cwd is)."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(REPO)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sorterd.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=environment,
        check=False,
    )


def gs1_check(digits: str) -> str:
    """The GS1 mod-10 check digit of `digits` (weights 3, 1 from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def sscc(body17: str) -> str:
    """A valid 18-digit SSCC from its first 17 digits."""
    return body17 + gs1_check(body17)


def s10(service: str, serial8: str, country: str) -> str:
    """A valid UPU S10 code (weights 8,6,4,2,3,5,9,7; 10 -> 0, 11 -> 5)."""
    total = sum(int(d) * w for d, w in zip(serial8, (8, 6, 4, 2, 3, 5, 9, 7), strict=True))
    check = 11 - total % 11
    digit = {10: 0, 11: 5}.get(check, check)
    return f"{service}{serial8}{digit}{country}"


def ups(body15: str) -> str:
    """A valid UPS `1Z` number from the 15 characters after `1Z` (letters count as
    (ord - 63) mod 10; weights 1, 2 alternating; GS1-style mod 10)."""
    values = [int(c) if c.isdigit() else (ord(c) - 63) % 10 for c in body15]
    total = sum(v * (2 if i % 2 else 1) for i, v in enumerate(values))
    return f"1Z{body15}{(10 - total % 10) % 10}"


def dhl(body9: str) -> str:
    """A valid DHL Express 10-digit number (check digit: the first nine digits mod 7)."""
    return body9 + str(int(body9) % 7)


@dataclass
class Site:
    """A site folder: site.toml, sortplan.toml and optional manifests."""

    folder: Path
    plan: str
    manifest: str | None = None
    site_extra: str = ""
    country: str | None = "MA"

    @property
    def config(self) -> Path:
        return self.folder / "site.toml"

    def write(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "sortplan.toml").write_text(self.plan)
        manifest = ""
        if self.manifest is not None:
            (self.folder / "manifests").mkdir(exist_ok=True)
            (self.folder / "manifests" / "preadvice.csv").write_text(self.manifest)
            manifest = '[manifest]\nfiles = ["manifests/*.csv"]\n'
        country = f'country = "{self.country}"\n' if self.country else ""
        self.config.write_text(
            '[site]\nname = "contract-hub"\nline = "sorter-1"\n'
            f'timezone = "Africa/Casablanca"\n{country}'
            '[plc]\nurl = "tcp://127.0.0.1:5020"\ndevice_id = 1\npoll_interval_ms = 5\n'
            '[[scanner]]\nname = "tunnel-1"\nurl = "tcp://127.0.0.1:5021"\nformat = "index"\n'
            '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
            'topic_prefix = "sortcentre/contract-hub/sorter-1"\n'
            '[plan]\nfile = "sortplan.toml"\n'
            f"{manifest}"
            '[journal]\npath = "state/journal.sqlite"\n'
            f"{self.site_extra}"
        )
        return self.config


@dataclass
class Replay:
    """What one `sorterd replay --out` run gave: its process and its rows by tracking id."""

    process: subprocess.CompletedProcess[str]
    header: list[str]
    rows: list[dict[str, str]]

    def row(self, tracking_id: str) -> dict[str, str]:
        found = [r for r in self.rows if r["tracking_id"] == tracking_id]
        assert len(found) == 1, (tracking_id, found, self.process.stderr)
        return found[0]


def replay(
    site: Path,
    scans: Sequence[tuple[str, ...]],
    folder: Path,
    *extra: str,
    columns: tuple[str, ...] = ("tracking_id", "codes"),
) -> Replay:
    """`sorterd replay -c SITE SCANS.csv --out DECISIONS.csv`; codes written byte-exact."""
    folder.mkdir(parents=True, exist_ok=True)
    scans_csv = folder / "scans.csv"
    with scans_csv.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(scans)
    decisions = folder / "decisions.csv"
    process = sorterd("replay", "-c", str(site), str(scans_csv), "--out", str(decisions), *extra)
    assert process.returncode == 0, process.stdout + process.stderr
    with decisions.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [dict(zip(header, r, strict=True)) for r in reader]
    return Replay(process, header, rows)
