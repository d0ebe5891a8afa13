"""This commit's figures against an earlier commit's, in the same run.

The machine is shared and noisy: a figure from another day says little about a change. This
runs benchmarks of an earlier commit (a git worktree of it, with this checkout's Python and
packages) and of this checkout, each in a fresh process, alternately for a few rounds, and
keeps the best of each side:

- `benchmarks.decide`: the batch kernel rate and one live decision's p50/p99 on the demo
  plan's traffic;
- `benchmarks.line` (unless `--no-line`): the whole line, `sorterd run` as its own process
  against the simulated line, at 40,000 and 100,000 items/h: PLC request -> reply p50/p99,
  the daemon's CPU per 1,000 items and its peak resident memory. Each tree runs its own
  daemon and its own simulators.

`--before REV` names the earlier commit (default: the last one before the restructuring of
issue "the house").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import ROOT
from benchmarks.results import Section

__all__ = ["BEFORE_DEFAULT", "QUICK", "Options", "report", "run"]

# The last commit before the restructuring ("the house"): one owner for each concern.
BEFORE_DEFAULT = "8314da3"

# Runs in the measured tree: its own benchmarks.decide, whichever API it had.
_DECIDE_PROBE = """
import json
from benchmarks import decide
r = decide.run()
if isinstance(r, dict):
    out = {"batch": r["batch_kernel_per_s"] / 1e6, "p50": r["live_us"]["p50"],
           "p99": r["live_us"]["p99"]}
else:
    f = {x.name: x.value for x in r.figures}
    out = {"batch": f["batch_rate"], "p50": f["live_us_p50"], "p99": f["live_us_p99"]}
print("RESULT " + json.dumps(out))
"""

# Runs in the measured tree: its own benchmarks.line (daemon and simulators of that tree).
_LINE_PROBE = """
import json, sys
from benchmarks import line
rates, duration_s = json.loads(sys.argv[1])
s = line.run(line.Options(rates=tuple(rates), duration_s=duration_s, reference=False))
keep = ("plc_reply_ms_p50@", "plc_reply_ms_p99@", "cpu_s_per_1000@", "rss_peak_mb@",
        "late_replies@", "inducted@")
print("RESULT " + json.dumps({f.name: f.value for f in s.figures if f.name.startswith(keep)}))
"""

LINE_RATES = (40_000, 100_000)
LINE_DURATION_S = 20.0
# Figures of the line, and whether lower is better (all are).
_LINE_FIGURES = {
    "plc_reply_ms_p50": ("ms", "line: PLC request -> reply p50 (best of the rounds)"),
    "plc_reply_ms_p99": ("ms", "line: PLC request -> reply p99 (best of the rounds)"),
    "cpu_s_per_1000": ("s", "line: daemon CPU per 1,000 items (best of the rounds)"),
    "rss_peak_mb": ("MB", "line: daemon peak resident memory (best of the rounds)"),
}


@dataclass(frozen=True, slots=True)
class Options:
    before: str = BEFORE_DEFAULT
    rounds: int = 3
    line: bool = True
    line_rates: tuple[int, ...] = LINE_RATES
    line_duration_s: float = LINE_DURATION_S


QUICK = Options(rounds=1, line_rates=(40_000,), line_duration_s=5.0)


def _probe(tree: Path, code: str, *args: str) -> dict[str, float]:
    # PATH as the user has it: the line benchmark starts mosquitto when installed.
    env = {"PYTHONPATH": str(tree), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    run = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=True,
    )
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
    values: dict[str, float] = json.loads(line[len("RESULT ") :])
    return values


def _measure(tree: Path, opts: Options) -> dict[str, float]:
    values = _probe(tree, _DECIDE_PROBE)
    if opts.line:
        values |= _probe(tree, _LINE_PROBE, json.dumps([opts.line_rates, opts.line_duration_s]))
    return values


def _best(samples: list[dict[str, float]]) -> dict[str, float]:
    """The best of each figure over the rounds: the least disturbed by the neighbours."""
    return {key: (max if key == "batch" else min)(s[key] for s in samples) for key in samples[0]}


def _rev(name: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", name], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def _alternate(rev: str, opts: Options) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    before: list[dict[str, float]] = []
    after: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(tree), rev], cwd=ROOT, check=True
        )
        try:
            for _ in range(opts.rounds):
                before.append(_measure(tree, opts))
                after.append(_measure(ROOT, opts))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
            )
    return before, after


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    rev = _rev(opts.before)
    before, after = _alternate(rev, opts)
    b, a = _best(before), _best(after)
    section = Section(
        params={
            "before": rev,
            "rounds": opts.rounds,
            "plan": "config/demo/sortplan.toml",
            "line_rates_per_h": list(opts.line_rates) if opts.line else [],
            "line_duration_s": opts.line_duration_s,
        },
        details={"before": before, "after": after},
    )
    _add_decide(section, a, b, rev)
    if opts.line:
        _add_line(section, a, b, rev, opts.line_rates)
    return section


def _add_decide(section: Section, a: dict[str, float], b: dict[str, float], rev: str) -> None:
    label = {"before": f"the same benchmark at {rev}, same run"}
    section.add(
        "batch_rate",
        a["batch"],
        "M/s",
        "batch decisions/s, numba kernel, demo plan traffic (best of the rounds)",
        better="higher",
        target="within 10 % of before",
        baselines={"before": b["batch"]},
        baseline_labels=label,
    )
    for q in ("p50", "p99"):
        section.add(
            f"live_us_{q}",
            a[q],
            "us",
            f"one live decision, codes -> chute, {q} (best of the rounds)",
            better="lower",
            target="within 10 % of before" if q == "p99" else "",
            baselines={"before": b[q]},
            baseline_labels=label,
        )


def _add_line(
    section: Section, a: dict[str, float], b: dict[str, float], rev: str, rates: tuple[int, ...]
) -> None:
    label = {"before": f"the line benchmark at {rev} (its daemon and simulators), same run"}
    for rate in rates:
        for name, (unit, text) in _LINE_FIGURES.items():
            key = f"{name}@{rate}"
            if key not in a or key not in b:
                continue
            section.add(
                f"line_{key}",
                a[key],
                unit,
                f"{text}, {rate:,} items/h",
                better="lower",
                target="within noise of before" if name == "plc_reply_ms_p99" else "",
                baselines={"before": b[key]},
                baseline_labels=label,
            )


def report(section: Section) -> list[str]:
    lines = []
    for f in section.figures:
        base = f.baseline("before")
        assert base is not None
        change = (f.value / base.value - 1) * 100 if base.value else 0.0
        lines.append(
            f"{f.label}: {f.value:.2f} {f.unit}, before {base.value:.2f} ({change:+.1f} %)"
        )
    return lines
