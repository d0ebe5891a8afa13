"""The decision figures of this commit against an earlier one, in the same run.

The machine is shared and noisy: a figure from another day says little about a change. This
runs `benchmarks.decide` of an earlier commit (a git worktree of it, with this checkout's
Python and packages) and of this checkout, each in a fresh process, alternately for a few
rounds, and keeps the best of each side: the batch kernel rate and one live decision's
p50/p99 on the demo plan's traffic. `--before REV` names the earlier commit (default: the
last one before sort plan version 2, the cross-border routing change).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import ROOT
from benchmarks.results import Section

__all__ = ["QUICK", "Options", "report", "run"]

# The last commit before sort plan version 2 (cross-border routing).
BEFORE_DEFAULT = "6a58e07"

# Runs in the measured tree: its own benchmarks.decide, whichever API it had.
_PROBE = """
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


@dataclass(frozen=True, slots=True)
class Options:
    before: str = BEFORE_DEFAULT
    rounds: int = 3


QUICK = Options(rounds=1)


def _measure(tree: Path) -> dict[str, float]:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
    values: dict[str, float] = json.loads(line[len("RESULT ") :])
    return values


def _best(samples: list[dict[str, float]]) -> dict[str, float]:
    return {
        "batch": max(s["batch"] for s in samples),
        "p50": min(s["p50"] for s in samples),
        "p99": min(s["p99"] for s in samples),
    }


def run(opts: Options | None = None) -> Section:
    opts = opts or Options()
    rev = subprocess.run(
        ["git", "rev-parse", "--short", opts.before],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    before: list[dict[str, float]] = []
    after: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(tree), rev], cwd=ROOT, check=True
        )
        try:
            for _ in range(opts.rounds):
                before.append(_measure(tree))
                after.append(_measure(ROOT))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
            )
    b, a = _best(before), _best(after)
    section = Section(
        params={"before": rev, "rounds": opts.rounds, "plan": "config/demo/sortplan.toml"},
        details={"before": before, "after": after},
    )
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
    return section


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
