"""The results file: what was measured, where, on what, and every figure with its baseline.

`make bench` writes `benchmarks/results/<YYYY-MM-DD>-<shortcommit>.json`; BENCHMARKS.md's
tables are generated from these files (`python -m benchmarks.report`), never typed.

Schema (version 1):

    {
      "schema": 1,
      "date": "2026-12-07T08:00:00Z",          # the last write of this file
      "commit": "6a58e07...", "short": "6a58e07", "dirty": false,
      "machine": {"cpu", "cores", "affinity", "memory_gib", "kernel", "os"},
      "versions": {"python", "numba", "numpy", "pymodbus", "paho-mqtt", "aiomqtt", ...},
      "broker": {"kind": "mosquitto", "version": "2.0.11"},
      "filesystems": {"journal: journal": {...}, "line: daemon journal": {...}},
      "benchmarks": {
        NAME: {
          "command": "python -m benchmarks --only line",
          "started": ISO date, "seconds": 412.0, "dirty": false,
          "load_avg": {"before": [1m, 5m, 15m], "after": [...]},
          "params": {...},                      # sizes, rates, durations of this run
          "filesystems": {ROLE: {"path", "fstype", "stat_type", "source", "options"}},
          "figures": [
            {"name": "batch_rate", "label": "...", "unit": "M/s", "value": 35.0,
             "better": "higher", "target": ">= 20 M/s",
             "baselines": [{"name": "reference", "label": "...", "value": 0.34}]}
          ],
          "details": {...}                      # raw figures behind the named ones
        }
      }
    }

A run of a subset (`--only line`) on the same day and commit as an existing file replaces
that benchmark's section and keeps the others: each section carries its own date, command
and dirty flag, and every baseline lives in the same section as its figure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "RESULTS_DIR",
    "ROOT",
    "SCHEMA",
    "Baseline",
    "Better",
    "Commit",
    "Figure",
    "Section",
    "broker_info",
    "commit",
    "default_broker_kind",
    "describe_machine",
    "figures_of",
    "filesystem",
    "latest",
    "load_avg",
    "machine",
    "now_iso",
    "read",
    "result_files",
    "results_path",
    "section_json",
    "versions",
    "write",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SCHEMA = 1

Better = Literal["higher", "lower", ""]


@dataclass(frozen=True, slots=True)
class Baseline:
    """What a user would pick instead, measured in the same run as the figure."""

    name: str
    value: float
    label: str = ""


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: float
    unit: str
    label: str = ""
    better: Better = ""
    target: str = ""
    baselines: tuple[Baseline, ...] = ()

    def baseline(self, name: str) -> Baseline | None:
        return next((b for b in self.baselines if b.name == name), None)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["baselines"] = [asdict(b) for b in self.baselines]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figure:
        return cls(
            name=data["name"],
            value=float(data["value"]),
            unit=data.get("unit", ""),
            label=data.get("label", ""),
            better=data.get("better", ""),
            target=data.get("target", ""),
            baselines=tuple(
                Baseline(b["name"], float(b["value"]), b.get("label", ""))
                for b in data.get("baselines", [])
            ),
        )


@dataclass(slots=True)
class Section:
    """What one benchmark contributes to a results file."""

    params: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    filesystems: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(
        self,
        name: str,
        value: float,
        unit: str,
        label: str = "",
        *,
        better: Better = "",
        target: str = "",
        baselines: dict[str, float] | None = None,
        baseline_labels: dict[str, str] | None = None,
    ) -> Figure:
        labels = baseline_labels or {}
        figure = Figure(
            name,
            float(value),
            unit,
            label,
            better,
            target,
            tuple(Baseline(k, float(v), labels.get(k, "")) for k, v in (baselines or {}).items()),
        )
        self.figures.append(figure)
        return figure

    def figure(self, name: str) -> Figure | None:
        return next((f for f in self.figures if f.name == name), None)


# ---------------------------------------------------------------------------- environment


def _run(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (done.stdout or done.stderr).strip()


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = 0.0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory_gib = int(line.split()[1]) / 2**20
                    break
    except OSError:
        pass
    os_name = ""
    with contextlib.suppress(OSError):
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", "")
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "affinity": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_gib, 1),
        "kernel": platform.release(),
        "os": os_name,
    }


def describe_machine(m: dict[str, Any]) -> str:
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']:.0f} GiB, "
        f"Linux {m['kernel']}, {m['os'] or 'unknown OS'}"
    )


_PACKAGES = (
    "numba",
    "llvmlite",
    "numpy",
    "pymodbus",
    "pyserial",
    "paho-mqtt",
    "aiomqtt",
    "structlog",
    "pydantic",
)


def versions() -> dict[str, str]:
    import sqlite3

    out = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = ""
    return out


def broker_info(kind: str) -> dict[str, str]:
    """The broker the benchmarks' daemons talk to: mosquitto's version, or amqtt's."""
    if kind == "mosquitto":
        from drivers.broker import mosquitto_path

        exe = mosquitto_path()
        text = _run(exe, "-h") if exe else ""
        found = re.search(r"mosquitto version (\S+)", text)
        return {"kind": kind, "version": found.group(1) if found else "", "path": exe or ""}
    try:
        version = metadata.version("amqtt")
    except metadata.PackageNotFoundError:
        version = ""
    return {"kind": kind, "version": f"amqtt {version}"}


def default_broker_kind() -> str:
    from drivers.broker import mosquitto_path

    return "mosquitto" if mosquitto_path() else "embedded"


def filesystem(path: Path | str) -> dict[str, str]:
    """The filesystem holding `path`, as `findmnt -T` and `stat -f -c %T` name it (an fsync
    on tmpfs is free; on ext4 over a virtual disk it is a round trip to the host)."""
    path = str(path)
    out = {"path": path, "stat_type": _run("stat", "-f", "-c", "%T", path)}
    if shutil.which("findmnt"):
        text = _run("findmnt", "-n", "-J", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS", "-T", path)
        try:
            fs = json.loads(text)["filesystems"][0]
        except (ValueError, KeyError, IndexError):
            fs = {}
        out.update(
            {
                "fstype": str(fs.get("fstype", "")),
                "mount": str(fs.get("target", "")),
                "source": str(fs.get("source", "")),
                "options": str(fs.get("options", "")),
            }
        )
    return out


@dataclass(frozen=True, slots=True)
class Commit:
    full: str
    short: str
    dirty: bool


def commit() -> Commit:
    full = _run("git", "-C", str(ROOT), "rev-parse", "HEAD") or "unknown"
    short = _run("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD") or "unknown"
    # The results folder itself changes with every run: it does not make the code dirty.
    status = _run(
        "git", "-C", str(ROOT), "status", "--porcelain", "--", ".", ":(exclude)benchmarks/results"
    )
    return Commit(full, short, bool(status))


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- files


def results_path(c: Commit, day: str | None = None, folder: Path = RESULTS_DIR) -> Path:
    day = day or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    return folder / f"{day}-{c.short}.json"


def write(
    sections: dict[str, dict[str, Any]],
    *,
    broker: dict[str, str] | None,
    folder: Path = RESULTS_DIR,
) -> Path:
    """Write (or update) today's file for this commit with `sections` (name -> section
    JSON as `section_json` makes it); other benchmarks already in the file are kept."""
    c = commit()
    path = results_path(c, folder=folder)
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    if data.get("schema") != SCHEMA or data.get("commit") != c.full:
        data = {}
    benchmarks = dict(data.get("benchmarks", {}))
    benchmarks.update(sections)
    out = {
        "schema": SCHEMA,
        "date": now_iso(),
        "commit": c.full,
        "short": c.short,
        "dirty": c.dirty or any(s.get("dirty") for s in benchmarks.values()),
        "machine": machine(),
        "versions": versions(),
        "broker": broker or data.get("broker") or {},
        # Where each benchmark's journal was (the line's daemons, the journal benchmark's).
        "filesystems": {
            f"{name}: {role}": fs
            for name, s in sorted(benchmarks.items())
            for role, fs in s.get("filesystems", {}).items()
        },
        "benchmarks": dict(sorted(benchmarks.items())),
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(path)
    return path


def section_json(
    section: Section, *, command: str, started: str, seconds: float, before: list[float]
) -> dict[str, Any]:
    return {
        "command": command,
        "started": started,
        "seconds": round(seconds, 1),
        "dirty": commit().dirty,
        "load_avg": {"before": before, "after": load_avg()},
        "params": section.params,
        "filesystems": section.filesystems,
        "figures": [f.to_json() for f in section.figures],
        "details": section.details,
    }


def result_files(folder: Path = RESULTS_DIR) -> list[Path]:
    return sorted(folder.glob("*.json"))


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: results schema {data.get('schema')}, expected {SCHEMA}")
    return data


def latest(folder: Path = RESULTS_DIR) -> list[tuple[Path, dict[str, Any]]]:
    """Every results file, newest first (by the date written inside)."""
    files = [(p, read(p)) for p in result_files(folder)]
    return sorted(files, key=lambda pd: pd[1].get("date", ""), reverse=True)


def figures_of(section: dict[str, Any]) -> dict[str, Figure]:
    return {f["name"]: Figure.from_json(f) for f in section.get("figures", [])}
