"""`sorterd plan optimise --from-manifests`: the expected flow from the site's manifests.

Manifests carry no hour. Each row's barcode goes through the current plan's decision as
an item carrying only that code would (the site's manifests applied, as the daemon does),
so a row counts for the destination the daemon would sort it to; rows that reach no
destination (no rule matches, customs hold) are left out and counted. The day's items of
each destination are then spread over the day by a profile (docs/optimiser.md,
"--from-manifests"): `uniform`, the same share every hour of `--hours`, the remainder to
the first hours; or `casablanca`, the generated Casablanca day's shape for the lane's kind
(simulators/volumes.py: inbound in the morning, export in the evening), rounded so that the
day's total stays exact.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import IO

from sorter.config import ConfigError, Problem, Site
from sorter.optimise.volumes import HOURS, Volumes

__all__ = [
    "DEFAULT_HOURS",
    "PROFILES",
    "ManifestFlow",
    "manifest_volumes",
    "parse_hours",
    "shaped",
    "spread",
]

PROFILES = ("uniform", "casablanca")
DEFAULT_HOURS = "5-23"  # 05:00-23:00: the generated Casablanca day's working hours
_SORTED = frozenset({"ok", "no_chute"})  # decisions that reach the destination's chutes


def parse_hours(text: str) -> tuple[int, ...]:
    """`"5-23"`: from 05:00 up to 23:00 (the last hour counted is 22:00-23:00); `"22-6"`
    runs across midnight. ValueError for anything else."""
    first, sep, last = text.partition("-")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit():
        raise ValueError(f"{text!r}: hours as FROM-TO, whole hours 0-24, e.g. 5-23")
    lo, hi = int(first), int(last)
    if lo > 23 or hi > 24 or lo == hi:
        raise ValueError(f"{text!r}: FROM 0-23 and TO 0-24, not the same hour")
    return tuple(h % HOURS for h in range(lo, hi if hi > lo else hi + HOURS))


def spread(total: int, hours: Sequence[int]) -> tuple[int, ...]:
    """`total` items over `hours`, evenly; the remainder one each to the first hours."""
    day = [0] * HOURS
    share, rest = divmod(total, len(hours))
    for i, h in enumerate(hours):
        day[h] = share + (1 if i < rest else 0)
    return tuple(day)


def shaped(total: int, weights: Sequence[float]) -> tuple[int, ...]:
    """`total` items over the hours by `weights` (summing to 1), largest remainders first,
    so the day's total is exact."""
    exact = [total * w for w in weights]
    day = [int(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda h: exact[h] - day[h], reverse=True)
    for h in order[: total - sum(day)]:
        day[h] += 1
    return tuple(day)


@dataclass(frozen=True, slots=True)
class ManifestFlow:
    volumes: Volumes
    rows: int  # manifest rows read
    counted: int  # rows that reach a destination's chutes
    files: int


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _barcodes(paths: Sequence[Path]) -> Iterator[str]:
    for path in paths:
        with _open(path) as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            if "barcode" not in header:
                raise ConfigError([Problem(str(path), "line 1", "no barcode column")])
            col = header.index("barcode")
            for row in reader:
                if len(row) > col and row[col].strip():
                    yield row[col].strip()


def manifest_volumes(site: Site, hours: Sequence[int], profile: str = "uniform") -> ManifestFlow:
    """Each destination's items per hour from the site's manifests (module docstring)."""
    from sorter.decide import Decider  # noqa: PLC0415
    from sorter.kernel import ChuteState  # noqa: PLC0415
    from sorter.manifest import ManifestSource  # noqa: PLC0415
    from sorter.plan import compile_plan, load_plan  # noqa: PLC0415
    from sorter.replay import Replay, ScanRow  # noqa: PLC0415

    paths = sorted({Path(p) for g in site.manifest_globs for p in glob(g)})
    if not paths:
        raise ConfigError(
            [
                Problem(
                    str(site.path),
                    "manifest.files",
                    "no manifest file matches: --from-manifests needs the site's manifests "
                    f"({', '.join(site.manifest_globs) or 'no [manifest] files'})",
                )
            ]
        )
    cfg = site.config
    plan = compile_plan(load_plan(site.plan_path))
    decider = Decider(
        plan, ChuteState.for_plan(plan), cfg.site.timezone, site_country=cfg.site.country
    )
    decider.use_manifest(ManifestSource(site.manifest_globs).build(decider.destination_names))
    decider.warm()
    counts: Counter[str] = Counter()

    class _Sink:
        def add(
            self,
            destinations: Sequence[str],
            chutes: Sequence[int],
            reasons: Sequence[str],
            minutes: Sequence[int | None] | None = None,
        ) -> None:
            del chutes, minutes
            counts.update(
                d for d, r in zip(destinations, reasons, strict=True) if d and r in _SORTED
            )

    rows = (ScanRow(i + 2, code, (code,), 0, -1) for i, code in enumerate(_barcodes(paths)))
    replayed = Replay(decider, sink=_Sink()).run(rows)
    label = f"{len(paths)} manifest file(s)"
    if profile == "casablanca":
        from simulators.volumes import day_shape  # noqa: PLC0415

        items = {name: shaped(n, day_shape(name)) for name, n in counts.items()}
    else:
        items = {name: spread(n, hours) for name, n in counts.items()}
    volumes = Volumes(label, items)
    return ManifestFlow(volumes, replayed.items, sum(counts.values()), len(paths))
