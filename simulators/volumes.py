"""A generated day of expected volumes for the Casablanca hub (VOLUMES.csv, contract
section 11), reproducible with a seed: what `sorterd plan optimise` is tried on.

The shape of a cross-border e-commerce hub's day, destination by destination:
- inbound parcels from China land with the morning and early-afternoon air cargo and flow
  to the Moroccan city lanes and the no-address lanes from 06:00 to about 17:00;
- export lanes (Europe, the carriers, the airmail dispatch) fill in the evening, before
  the trucks and the night flights: the export peak runs 17:00-22:00;
- returns and the manual lanes run flat through the working day.
Volumes are skewed and move over the day: the plan was cut by hand for last season's flow
(a lane's size starts from the chutes the plan gives it, so the big city lanes stay big),
then each lane drifts by a log-normal factor, has its own peak hour near its kind's, and a
marketplace campaign multiplies a few lanes. The lane kinds come from the destination
names of config/casablanca/sortplan.toml; a name this module does not know is a "flat"
lane. The simulators read the plan as plain TOML: they share no code with the
daemon's plan loader.

Run `python -m simulators.volumes --plan PLAN.toml --out VOLUMES.csv [--seed N]`.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "HOURS",
    "KINDS",
    "day_shape",
    "generate_day",
    "kind_of",
    "main",
    "plan_lanes",
    "write_volumes",
]

HOURS: Final = 24
DEFAULT_ITEMS: Final = 90_000  # a day of the Casablanca plan's 100 lane chutes, two shifts

# Each kind: peak hour and spread (hours, one standard deviation).
KINDS: Final[dict[str, tuple[float, float]]] = {
    "inbound": (10.0, 3.0),  # the morning air cargo from China, sorted to the cities
    "no-address": (9.0, 2.5),  # inbound without an address: to the coding desks
    "export": (19.5, 1.8),  # the evening export peak, before trucks and flights
    "returns": (14.0, 4.0),
    "flat": (13.0, 6.0),  # manual lanes and anything unknown
}
_EXPORT_PREFIXES: Final = ("EXPORT-", "FR-", "ES-", "GB-", "UPS-", "DHL-")
_EXPORT_NAMES: Final = frozenset({"PT", "DE", "NL", "BE", "IT"})
CAMPAIGN_LANES: Final = 3  # lanes a marketplace campaign multiplies
CAMPAIGN_FACTOR: Final = 4.0
LANE_DRIFT: Final = 0.6  # sigma of the log-normal drift of each lane since the plan was cut
OPEN_HOURS: Final = range(5, 23)  # the hub runs two shifts; nothing is sorted at night


def kind_of(name: str) -> str:
    """The lane kind of a Casablanca destination name."""
    if name.startswith(("INBOUND-", "CAINIAO-")) and name.endswith("NO-ADDRESS"):
        return "no-address"
    if name.startswith(_EXPORT_PREFIXES) or name in _EXPORT_NAMES:
        return "export"
    if name.startswith("RETURNS-"):
        return "returns"
    if name.startswith("MANUAL-"):
        return "flat"
    return "inbound" if "-" not in name or name.isupper() else "flat"


def _profile(peak: float, spread: float) -> list[float]:
    """A day's shape around a peak hour, within the hub's open hours."""
    weights = [
        math.exp(-0.5 * ((h + 0.5 - peak) / spread) ** 2) if h in OPEN_HOURS else 0.0
        for h in range(HOURS)
    ]
    total = sum(weights) or 1.0
    return [w / total for w in weights]


def day_shape(name: str) -> list[float]:
    """The share of a destination's day in each hour, by its lane kind, without a lane's
    drift: the generated day's shape (what `sorterd plan optimise --from-manifests
    --profile casablanca` spreads a day's items by)."""
    return _profile(*KINDS[kind_of(name)])


def generate_day(
    lanes: Mapping[str, int], total_items: int = DEFAULT_ITEMS, seed: int = 1
) -> dict[str, list[int]]:
    """Each destination's items per hour, about `total_items` in all; same seed, same day.
    `lanes`: each destination's chutes in the plan (at least 1 counts): last season's flow."""
    rng = random.Random(seed)
    destinations = list(lanes)
    sizes: dict[str, float] = {}
    shapes: dict[str, list[float]] = {}
    for name in destinations:
        peak, spread = KINDS[kind_of(name)]
        sizes[name] = max(1, lanes[name]) * rng.lognormvariate(0.0, LANE_DRIFT)
        # Each lane peaks near its kind's hour, not on it: the day's flow moves.
        shapes[name] = _profile(peak + rng.uniform(-1.5, 1.5), spread * rng.uniform(0.7, 1.2))
    for name in rng.sample(destinations, min(CAMPAIGN_LANES, len(destinations))):
        sizes[name] *= CAMPAIGN_FACTOR
    scale = total_items / (sum(sizes.values()) or 1.0)
    day: dict[str, list[int]] = {}
    for name in destinations:
        expected = [sizes[name] * scale * w for w in shapes[name]]
        # Hour-to-hour noise of a real day, a few percent, never below zero.
        day[name] = [max(0, round(x * rng.gauss(1.0, 0.05))) for x in expected]
    return day


def write_volumes(path: Path, day: dict[str, list[int]]) -> None:
    """VOLUMES.csv: destination,hour,items; hours with no items are left out."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["destination", "hour", "items"])
        for name, hours in day.items():
            writer.writerows((name, h, n) for h, n in enumerate(hours) if n)


def plan_lanes(plan: Path) -> dict[str, int]:
    """Each destination of a plan file and its number of chutes, read as plain TOML."""
    data = tomllib.loads(plan.read_text(encoding="utf-8-sig"))
    return {
        str(d["name"]): len(d.get("chutes", []))
        for d in data.get("destination", [])
        if isinstance(d, dict)
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.volumes", description="a generated day of VOLUMES.csv"
    )
    parser.add_argument("--plan", required=True, metavar="PLAN.toml", type=Path)
    parser.add_argument("--out", required=True, metavar="VOLUMES.csv", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS, metavar="N")
    args = parser.parse_args(argv)
    try:
        lanes = plan_lanes(args.plan)
        day = generate_day(lanes, args.items, args.seed)
        write_volumes(args.out, day)
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: {sum(map(sum, day.values())):,} items, {len(lanes)} destinations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
