"""A day of chute filling and clearing: the flow of VOLUMES.csv through a plan's chutes,
to judge a chute allocation by what happens on the line, not by the optimiser's estimate.

Each item arrives at a random second of its hour (seeded) and goes, as the daemon decides
(docs/interfaces.md section 6, step 6, least loaded), to the emptiest chute of its
destination that is not full, else to the first of its overflow chutes that is not full,
else it recirculates and comes back one loop later; after `max_recirculations` full
passes it goes to the max_recirc chute. A chute holds `chute_capacity_items`; operators
empty every chute every `clear_interval_min` minutes, walking the loop, so chute i of n is
emptied i/n of an interval after chute 0. The simulators read the plan as plain TOML:
they share no code with the daemon's plan loader or the optimiser's model.

This is a model of chute filling at the level of items and seconds, in plain Python (a
day of 300,000 items takes seconds); it is not the conveyor model of simulators/conveyor.py,
which runs the PLC's timing in real time.
"""

from __future__ import annotations

import heapq
import random
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = ["DayFigures", "Lanes", "SimPlan", "read_plan", "simulate_day"]

HOURS: Final = 24
DEFAULT_LOOP_S: Final = 90.0  # one lap of a 240-chute cross-belt loop at about 2.5 m/s


@dataclass(frozen=True, slots=True)
class Lanes:
    """One destination's chutes and overflow chutes, in the plan's order."""

    chutes: tuple[int, ...]
    overflow: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SimPlan:
    """What the simulation needs of a plan."""

    lanes: Mapping[str, Lanes]
    machine_chutes: tuple[int, ...]  # in loop order: the clearing round's order
    capacity_items: int
    clear_interval_min: int
    max_recirculations: int = 2


@dataclass(slots=True)
class DayFigures:
    """What a day through one plan did."""

    items: int = 0
    sorted_items: int = 0  # into one of its destination's chutes
    overflow_items: int = 0  # into an overflow chute
    full_passes: int = 0  # passes that found every chute of the destination full
    gave_up: int = 0  # items sent to the max_recirc chute after their last full pass
    # (full passes that were not an item's last are recirculations caused by full chutes)
    chute_full_events: int = 0  # a chute reaching its capacity
    peak_fill: float = 0.0  # the fullest any chute got, as a share of its capacity
    full_passes_by_hour: list[int] = field(default_factory=lambda: [0] * HOURS)

    @property
    def full_recirculations(self) -> int:
        """Recirculations caused by full chutes."""
        return self.full_passes - self.gave_up


def _chute_list(spec: Any) -> tuple[int, ...]:
    if isinstance(spec, list):
        return tuple(sorted(int(c) for c in spec))
    chutes: set[int] = set()
    for part in str(spec).split(","):
        lo, _, hi = part.strip().partition("-")
        chutes.update(range(int(lo), int(hi or lo) + 1))
    return tuple(sorted(chutes))


def read_plan(path: Path) -> SimPlan:
    """A plan file's chutes and options, read as plain TOML (the file is assumed checked:
    `sorterd check-config` accepts it); KeyError when it lacks the optimiser's options."""
    data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    options = data.get("options", {})
    return SimPlan(
        lanes={
            str(d["name"]): Lanes(tuple(d.get("chutes", [])), tuple(d.get("overflow", [])))
            for d in data["destination"]
        },
        machine_chutes=_chute_list(data["machine"]["chutes"]),
        capacity_items=int(options["chute_capacity_items"]),
        clear_interval_min=int(options["clear_interval_min"]),
        max_recirculations=int(options.get("max_recirculations", 2)),
    )


class _Chutes:
    """Fill levels, emptied on the operators' round."""

    def __init__(self, plan: SimPlan, figures: DayFigures) -> None:
        self.capacity = plan.capacity_items
        self.interval_s = plan.clear_interval_min * 60.0
        n = max(1, len(plan.machine_chutes))
        self.offset_s = {c: i * self.interval_s / n for i, c in enumerate(plan.machine_chutes)}
        self.fill: dict[int, int] = {}
        self.round: dict[int, int] = {}  # the last clearing round each chute saw
        self.figures = figures

    def level(self, chute: int, now_s: float) -> int:
        done = int((now_s - self.offset_s.get(chute, 0.0)) // self.interval_s)
        if done != self.round.get(chute):
            self.round[chute] = done
            self.fill[chute] = 0
        return self.fill[chute]

    def put(self, chute: int) -> None:
        self.fill[chute] += 1
        fill = self.fill[chute]
        self.figures.peak_fill = max(self.figures.peak_fill, fill / self.capacity)
        if fill == self.capacity:
            self.figures.chute_full_events += 1

    def emptiest(self, chutes: Sequence[int], now_s: float) -> int | None:
        best, best_level = None, self.capacity
        for chute in chutes:
            level = self.level(chute, now_s)
            if level < best_level:
                best, best_level = chute, level
        return best

    def first_free(self, chutes: Sequence[int], now_s: float) -> int | None:
        return next((c for c in chutes if self.level(c, now_s) < self.capacity), None)


def _arrivals(volumes: Mapping[str, Sequence[int]], seed: int) -> list[tuple[float, str]]:
    rng = random.Random(seed)
    out = [
        (hour * 3600.0 + rng.random() * 3600.0, name)
        for name, hours in volumes.items()
        for hour, items in enumerate(hours)
        for _ in range(items)
    ]
    out.sort()
    return out


def simulate_day(
    plan: SimPlan,
    volumes: Mapping[str, Sequence[int]],
    seed: int = 1,
    loop_s: float = DEFAULT_LOOP_S,
) -> DayFigures:
    """The day's items through the plan's chutes; the same seed gives the same day."""
    figures = DayFigures()
    chutes = _Chutes(plan, figures)
    # (time, order, destination, full passes so far): a heap of items on their way in.
    queue: list[tuple[float, int, str, int]] = [
        (t, i, name, 0) for i, (t, name) in enumerate(_arrivals(volumes, seed))
    ]
    heapq.heapify(queue)
    figures.items = len(queue)
    order = len(queue)
    while queue:
        now_s, _, name, passes = heapq.heappop(queue)
        lanes = plan.lanes[name]
        chute = chutes.emptiest(lanes.chutes, now_s)
        if chute is not None:
            chutes.put(chute)
            figures.sorted_items += 1
            continue
        chute = chutes.first_free(lanes.overflow, now_s)
        if chute is not None:
            chutes.put(chute)
            figures.overflow_items += 1
            continue
        figures.full_passes += 1
        figures.full_passes_by_hour[int(now_s // 3600) % HOURS] += 1
        if passes + 1 > plan.max_recirculations:
            figures.gave_up += 1
            continue
        order += 1
        heapq.heappush(queue, (now_s + loop_s, order, name, passes + 1))
    return figures
