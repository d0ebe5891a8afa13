"""A day on the loop, second by second: the flow of VOLUMES.csv through a plan's chutes with
chute filling and clearing, to judge a chute allocation by what happens on the line, not by
the optimiser's estimate (docs/optimiser.md, "The simulated day").

Each item arrives at a random moment of its hour (seeded; the same arrivals for every plan)
and goes, as the daemon decides (docs/interfaces.md section 6, least loaded), to the
emptiest chute of its destination that is not full, else to the first of its overflow
chutes that is not full, else it recirculates and comes back one lap later; once it has
recirculated `max_recirculations` times it goes to the max_recirc chute on its next pass,
its chutes not tried (as the daemon decides). A chute holds
`chute_capacity_items`. Operators empty their zone's chutes every clearing interval
(the zone's, else the plan's), walking the zone in loop order: the k-th of a zone's n
chutes is emptied k/n of an interval after the first. Items are counted where they land,
per zone and hour: that is the operators' load, shared by the zone's operators.

The day runs in one numba kernel (`_run`): an event loop over the arrivals merged with the
recirculated items (a FIFO: every item comes back the same lap later), chute levels reset
lazily when a chute's clearing round has passed. A 90,000-item day takes milliseconds once
compiled (cached on disk). The simulators read the plan as plain TOML: they share no code
with the daemon's plan loader or the optimiser's model.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from numba import njit

__all__ = [
    "DEFAULT_LOOP_S",
    "HOURS",
    "OUTCOME_GAVE_UP",
    "OUTCOME_OVERFLOW",
    "OUTCOME_SORTED",
    "DayFigures",
    "Lanes",
    "SimPlan",
    "SimZone",
    "read_plan",
    "simulate_day",
]

HOURS: Final = 24
DEFAULT_LOOP_S: Final = 90.0  # one lap of a 240-chute cross-belt loop at about 2.5 m/s
OUTCOME_SORTED: Final = 0  # into one of its destination's chutes
OUTCOME_OVERFLOW: Final = 1
OUTCOME_GAVE_UP: Final = 2  # to the max_recirc chute after its last full pass

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Lanes:
    """One destination's chutes and overflow chutes, in the plan's order."""

    chutes: tuple[int, ...]
    overflow: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SimZone:
    """Chutes one team empties; `clear_interval_min` None: the plan's."""

    name: str
    chutes: tuple[int, ...]
    operators: int = 1
    clear_interval_min: int | None = None


@dataclass(frozen=True, slots=True)
class SimPlan:
    """What the simulation needs of a plan."""

    lanes: Mapping[str, Lanes]
    machine_chutes: tuple[int, ...]  # in loop order: the clearing round's order
    capacity_items: int
    clear_interval_min: int
    max_recirculations: int = 2
    zones: tuple[SimZone, ...] = ()  # none: the whole loop, one operator
    lap_s: float = DEFAULT_LOOP_S
    max_recirc_chute: int | None = None  # where items that gave up go (counted there)


@dataclass(slots=True)
class DayFigures:
    """What a day through one plan did."""

    items: int = 0
    sorted_items: int = 0  # into one of its destination's chutes
    overflow_items: int = 0  # into an overflow chute
    full_passes: int = 0  # passes that found every chute full: each one a recirculation
    gave_up: int = 0  # items sent to the max_recirc chute after max_recirculations
    chute_full_events: int = 0  # a chute reaching its capacity
    peak_fill: float = 0.0  # the fullest any chute got, as a share of its capacity
    full_passes_by_hour: list[int] = field(default_factory=lambda: [0] * HOURS)
    zones: tuple[str, ...] = ()
    operators: tuple[int, ...] = ()
    zone_items_by_hour: list[list[int]] = field(default_factory=list)  # [zone][hour]
    # Per item, in arrival order (for the report's charts): its destination, the chute it
    # ended in (-1: none), the minute of the day it got there, and how (OUTCOME_*).
    item_destination: I64 = field(default_factory=lambda: np.zeros(0, np.int64), compare=False)
    item_chute: I64 = field(default_factory=lambda: np.zeros(0, np.int64), compare=False)
    item_minute: I64 = field(default_factory=lambda: np.zeros(0, np.int64), compare=False)
    item_outcome: I64 = field(default_factory=lambda: np.zeros(0, np.int64), compare=False)
    destinations: tuple[str, ...] = ()

    @property
    def full_recirculations(self) -> int:
        """Recirculations caused by full chutes: every full pass sends the item round."""
        return self.full_passes

    def operator_items(self) -> list[float]:
        """Items each operator of each zone handles over the day."""
        return [
            sum(hours) / ops
            for hours, ops in zip(self.zone_items_by_hour, self.operators, strict=True)
        ]

    def operator_peak_hour(self) -> list[float]:
        """Items each operator of each zone handles in the zone's busiest hour."""
        return [
            max(hours, default=0) / ops
            for hours, ops in zip(self.zone_items_by_hour, self.operators, strict=True)
        ]


def _chute_list(spec: Any) -> tuple[int, ...]:
    """A chute list as written, in order: `"1-120,240-121"` or a list."""
    if isinstance(spec, list):
        return tuple(int(c) for c in spec)
    chutes: list[int] = []
    for part in str(spec).split(","):
        lo_text, _, hi_text = part.strip().partition("-")
        lo, hi = int(lo_text), int(hi_text or lo_text)
        chutes.extend(range(lo, hi + 1) if lo <= hi else range(lo, hi - 1, -1))
    return tuple(chutes)


def read_plan(path: Path) -> SimPlan:
    """A plan file's chutes, options and layout, read as plain TOML (the file is assumed
    checked: `sorterd check-config` accepts it); KeyError when it lacks the optimiser's
    options."""
    data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    options, machine = data.get("options", {}), data["machine"]
    chutes = _chute_list(machine["chutes"])
    order = _chute_list(machine["loop_order"]) if "loop_order" in machine else sorted(chutes)
    return SimPlan(
        lanes={
            str(d["name"]): Lanes(tuple(d.get("chutes", [])), tuple(d.get("overflow", [])))
            for d in data["destination"]
        },
        machine_chutes=tuple(order),
        capacity_items=int(options["chute_capacity_items"]),
        clear_interval_min=int(options["clear_interval_min"]),
        max_recirculations=int(options.get("max_recirculations", 2)),
        zones=tuple(
            SimZone(
                str(z["name"]),
                _chute_list(z["chutes"]),
                int(z.get("operators", 1)),
                z.get("clear_interval_min"),
            )
            for z in data.get("zone", [])
        ),
        lap_s=float(machine.get("lap_s", DEFAULT_LOOP_S)),
        max_recirc_chute=data.get("functions", {}).get("max_recirc"),
    )


@njit(cache=True)
def _level(c: int, t: float, level: I64, rounds: I64, offset_s: F64, interval_s: F64) -> int:
    done = int(np.floor((t - offset_s[c]) / interval_s[c]))
    if done != rounds[c]:
        rounds[c] = done
        level[c] = 0
    return int(level[c])


@njit(cache=True)
def _choose(
    d: int,
    t: float,
    lane_start: I64,
    lane_chute: I64,
    over_start: I64,
    over_chute: I64,
    capacity: int,
    level: I64,
    rounds: I64,
    offset_s: F64,
    interval_s: F64,
) -> tuple[int, int]:
    """(chute, outcome): the emptiest of d's chutes that is not full, else the first of its
    overflow chutes that is not full; chute -1 when every one is full."""
    best, best_level = -1, capacity
    for j in range(lane_start[d], lane_start[d + 1]):
        c = lane_chute[j]
        lv = _level(c, t, level, rounds, offset_s, interval_s)
        if lv < best_level:
            best, best_level = c, lv
    if best >= 0:
        return best, OUTCOME_SORTED
    for j in range(over_start[d], over_start[d + 1]):
        c = over_chute[j]
        if _level(c, t, level, rounds, offset_s, interval_s) < capacity:
            return c, OUTCOME_OVERFLOW
    return -1, OUTCOME_OVERFLOW


@njit(cache=True)
def _run(
    arrive_s: F64,
    dest: I64,
    lane_start: I64,
    lane_chute: I64,
    over_start: I64,
    over_chute: I64,
    offset_s: F64,
    interval_s: F64,
    zone: I64,
    capacity: int,
    max_recirc: int,
    lap_s: float,
    give_up_chute: int,
    out_chute: I64,
    out_minute: I64,
    out_outcome: I64,
    full_by_hour: I64,
    zone_by_hour: I64,
    chute_peak: I64,
    chute_full: I64,
) -> None:
    n = arrive_s.size
    level = np.zeros(offset_s.size, np.int64)
    rounds = np.full(offset_s.size, -(1 << 40), np.int64)
    ring = n + 1  # at most every item is on its way round at once
    q_t = np.empty(ring, np.float64)
    q_item = np.empty(ring, np.int64)
    q_pass = np.empty(ring, np.int64)
    head = 0
    waiting = 0
    i = 0
    while i < n or waiting > 0:
        if waiting > 0 and (i >= n or q_t[head] <= arrive_s[i]):
            t, item, passes = q_t[head], q_item[head], q_pass[head]
            head = (head + 1) % ring
            waiting -= 1
        else:
            t, item, passes = arrive_s[i], i, 0
            i += 1
        hour = int(t // 3600.0) % 24
        # As the daemon decides (sorter/kernel.py): an item that has recirculated
        # max_recirculations times goes to the max_recirc chute, its chutes not tried.
        best, outcome = give_up_chute, OUTCOME_GAVE_UP
        if passes < max_recirc:
            best, outcome = _choose(
                dest[item], t, lane_start, lane_chute, over_start, over_chute, capacity,
                level, rounds, offset_s, interval_s,
            )  # fmt: skip
            if best < 0:
                full_by_hour[hour] += 1
                tail = (head + waiting) % ring
                q_t[tail], q_item[tail], q_pass[tail] = t + lap_s, item, passes + 1
                waiting += 1
                continue
        out_outcome[item] = outcome
        out_minute[item] = int(t // 60.0) % 1440
        out_chute[item] = best
        if best < 0:
            continue
        lv = _level(best, t, level, rounds, offset_s, interval_s) + 1
        level[best] = lv
        chute_peak[best] = max(chute_peak[best], lv)
        if lv == capacity and outcome != OUTCOME_GAVE_UP:
            chute_full[best] += 1
        zone_by_hour[zone[best], hour] += 1


def _arrivals(
    volumes: Mapping[str, Sequence[int]], names: Sequence[str], seed: int
) -> tuple[F64, I64]:
    """Each item's moment in its hour, drawn in destination then hour order, sorted."""
    rng = np.random.default_rng(seed)
    times, dests = [], []
    for d, name in enumerate(names):
        for hour, items in enumerate(volumes.get(name, ())):
            if items:
                times.append(hour * 3600.0 + rng.random(items) * 3600.0)
                dests.append(np.full(items, d, np.int64))
    if not times:
        return np.zeros(0, np.float64), np.zeros(0, np.int64)
    t, d_all = np.concatenate(times), np.concatenate(dests)
    order = np.argsort(t, kind="stable")
    return t[order], d_all[order]


def _csr(lists: Sequence[Sequence[int]], index: Mapping[int, int]) -> tuple[I64, I64]:
    starts, flat = [0], []
    for chutes in lists:
        flat += [index[c] for c in chutes if c in index]
        starts.append(len(flat))
    return np.asarray(starts, np.int64), np.asarray(flat, np.int64)


def _rounds(plan: SimPlan, chutes: Sequence[int]) -> tuple[F64, F64, I64, list[SimZone]]:
    """Each chute's first clearing (seconds), its interval and its zone, in loop order."""
    zones = list(plan.zones) or [SimZone("(all chutes)", tuple(chutes))]
    position = {c: i for i, c in enumerate(chutes)}
    offset = np.zeros(len(chutes), np.float64)
    interval = np.full(len(chutes), plan.clear_interval_min * 60.0, np.float64)
    zone = np.zeros(len(chutes), np.int64)
    for z, spec in enumerate(zones):
        mine = sorted((c for c in spec.chutes if c in position), key=position.__getitem__)
        every_s = (spec.clear_interval_min or plan.clear_interval_min) * 60.0
        for k, c in enumerate(mine):
            offset[position[c]] = k * every_s / max(1, len(mine))
            interval[position[c]] = every_s
            zone[position[c]] = z
    return offset, interval, zone, zones


def simulate_day(
    plan: SimPlan,
    volumes: Mapping[str, Sequence[int]],
    seed: int = 1,
    loop_s: float | None = None,
) -> DayFigures:
    """The day's items through the plan's chutes; the same seed gives the same day.
    `loop_s`: one lap's seconds (default the plan's `lap_s`)."""
    names = tuple(plan.lanes)
    chutes = list(plan.machine_chutes)
    lane_chutes = {c for lanes in plan.lanes.values() for c in (*lanes.chutes, *lanes.overflow)}
    extra = lane_chutes | ({plan.max_recirc_chute} if plan.max_recirc_chute is not None else set())
    chutes += sorted(extra - set(chutes))  # not on the loop's list: cleared with the rest
    index = {c: i for i, c in enumerate(chutes)}
    lane_start, lane_chute = _csr([plan.lanes[n].chutes for n in names], index)
    over_start, over_chute = _csr([plan.lanes[n].overflow for n in names], index)
    offset, interval, zone, zones = _rounds(plan, chutes)
    arrive_s, dest = _arrivals(volumes, names, seed)
    n = arrive_s.size
    out_chute = np.full(n, -1, np.int64)
    out_minute = np.zeros(n, np.int64)
    out_outcome = np.zeros(n, np.int64)
    full_by_hour = np.zeros(HOURS, np.int64)
    zone_by_hour = np.zeros((len(zones), HOURS), np.int64)
    peak = np.zeros(len(chutes), np.int64)
    full = np.zeros(len(chutes), np.int64)
    give_up = index.get(plan.max_recirc_chute, -1) if plan.max_recirc_chute is not None else -1
    _run(
        arrive_s, dest, lane_start, lane_chute, over_start, over_chute, offset, interval,
        zone, plan.capacity_items, plan.max_recirculations, loop_s or plan.lap_s, give_up,
        out_chute, out_minute, out_outcome, full_by_hour, zone_by_hour, peak, full,
    )  # fmt: skip
    ids = np.asarray(chutes, np.int64)
    if give_up >= 0 and plan.max_recirc_chute not in lane_chutes:
        peak[give_up] = 0  # a function chute: the fill of sorted chutes is what counts
    return DayFigures(
        items=n,
        sorted_items=int((out_outcome == OUTCOME_SORTED).sum()),
        overflow_items=int((out_outcome == OUTCOME_OVERFLOW).sum()),
        full_passes=int(full_by_hour.sum()),
        gave_up=int((out_outcome == OUTCOME_GAVE_UP).sum()),
        chute_full_events=int(full.sum()),
        peak_fill=float(min(peak.max(initial=0), plan.capacity_items)) / plan.capacity_items,
        full_passes_by_hour=[int(v) for v in full_by_hour],
        zones=tuple(z.name for z in zones),
        operators=tuple(z.operators for z in zones),
        zone_items_by_hour=[[int(v) for v in row] for row in zone_by_hour],
        item_destination=dest,
        item_chute=np.where(out_chute >= 0, ids[np.maximum(out_chute, 0)], -1),
        item_minute=out_minute,
        item_outcome=out_outcome,
        destinations=names,
    )
