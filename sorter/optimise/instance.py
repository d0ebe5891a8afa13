"""What the allocation model decides over, taken from a checked plan and the volumes, and
every constraint that cannot hold, said before the solver runs (docs/optimiser.md).

Free chutes are the machine's chutes that are neither function chutes, anyone's overflow,
fixed (`fixed = [...]` in a destination) nor kept (`--keep`); those stay. Zones come from
the plan's `[[zone]]` tables; without any, the whole machine is one zone with one operator
team and the plan's clearing interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from sorter.errors import SorterdError
from sorter.optimise.volumes import Volumes
from sorter.plan import SortPlan

__all__ = [
    "NO_ZONE",
    "Instance",
    "OptimiseError",
    "estimate_capacity",
    "estimate_items",
    "estimate_of",
    "instance_from_plan",
    "lcm_of_intervals",
]

NO_ZONE = "(all chutes)"
MAX_UNITS = 100_000  # the one zone of a plan without [[zone]] tables


class OptimiseError(SorterdError):
    """The optimiser cannot run on this plan and these volumes; says which constraint."""


@dataclass(frozen=True, slots=True)
class Instance:
    """What the model decides over. Per destination d: its hourly items, its main chutes
    now, the main chutes that stay (fixed), its limits; per zone z: operators, clearing
    interval and free chutes."""

    destinations: tuple[str, ...]
    hourly_items: tuple[tuple[int, ...], ...]  # per destination, HOURS counts
    current: tuple[frozenset[int], ...]  # each destination's main chutes now
    fixed: tuple[tuple[int, ...], ...]  # main chutes that stay (function, overflow, fixed)
    free_chutes: tuple[int, ...]  # what the model hands out, ascending
    min_chutes: tuple[int, ...]  # per destination, fixed ones included
    capacity_items: int
    clear_interval_min: int  # the plan's; a zone may have its own
    kept: frozenset[int] = frozenset()  # destinations whose chutes all stay (--keep)
    max_chutes: tuple[int | None, ...] = ()  # the plan's max_chutes per destination
    plan_min_chutes: tuple[int | None, ...] = ()  # the plan's min_chutes per destination
    zone_names: tuple[str, ...] = (NO_ZONE,)
    zone_operators: tuple[int, ...] = (1,)
    zone_clear_min: tuple[int, ...] = ()  # () = every zone clear_interval_min
    zone_of: dict[int, int] | None = None  # chute -> zone index; None: all in zone 0
    together: tuple[tuple[int, ...], ...] = ()  # destination indices kept in one zone
    apart: tuple[tuple[int, ...], ...] = ()  # destination indices in no common zone
    positions: dict[int, int] | None = None  # chute -> place in the loop order; None: number

    def position(self, chute: int) -> int:
        """Where a chute is along the loop (its place in the plan's loop order)."""
        return chute if self.positions is None else self.positions.get(chute, chute)

    def zone(self, chute: int) -> int:
        return 0 if self.zone_of is None else self.zone_of.get(chute, 0)

    def clear_min(self, zone: int) -> int:
        return self.zone_clear_min[zone] if self.zone_clear_min else self.clear_interval_min

    def chute_hourly_items(self, chute: int) -> float:
        """Items one chute takes in an hour: emptied every interval of its zone."""
        return self.capacity_items * 60 / self.clear_min(self.zone(chute))

    def limit(self, d: int) -> int | None:
        return self.max_chutes[d] if self.max_chutes else None

    def stated_min(self, d: int) -> int | None:
        return self.plan_min_chutes[d] if self.plan_min_chutes else None


def estimate_items(
    hourly_items: tuple[int, ...], chutes: int, capacity_items: int, clear_interval_min: int
) -> float:
    """Section 11's estimate for one destination: items that find its chutes full."""
    return estimate_capacity(hourly_items, chutes * capacity_items * 60 / clear_interval_min)


def estimate_capacity(hourly_items: tuple[int, ...], items_per_hour: float) -> float:
    """The same for chutes that take `items_per_hour` together (zones may clear at
    different intervals): max(0, items_dh / n_d * clear / 60 - capacity) * n_d * 60 /
    clear summed over hours is max(0, items_dh - what the chutes take in an hour)."""
    return sum(max(0.0, items - items_per_hour) for items in hourly_items)


def estimate_of(inst: Instance, d: int, chutes: Iterable[int]) -> float:
    """The estimate of destination d served by these main chutes."""
    return estimate_capacity(inst.hourly_items[d], sum(map(inst.chute_hourly_items, chutes)))


def _options(plan: SortPlan) -> tuple[int, int]:
    missing = [
        key
        for key, value in (
            ("chute_capacity_items", plan.chute_capacity_items),
            ("clear_interval_min", plan.clear_interval_min),
        )
        if value is None
    ]
    if missing:
        raise OptimiseError(
            f"{plan.path}: [options] {' and '.join(missing)} must be set for the optimiser "
            "(items a chute holds; minutes between two clearings: docs/optimiser.md)"
        )
    assert plan.chute_capacity_items is not None
    assert plan.clear_interval_min is not None
    return plan.chute_capacity_items, plan.clear_interval_min


def instance_from_plan(plan: SortPlan, volumes: Volumes, keep: Iterable[str] = ()) -> Instance:
    """The model's input; OptimiseError naming the constraint when one cannot hold. `keep`:
    names of destinations whose chutes all stay as they are (manual lanes, a lane being
    rebuilt)."""
    capacity, clear = _options(plan)
    names = [d.name for d in plan.destinations]
    unknown = [name for name in keep if name not in names]
    if unknown:
        raise OptimiseError(f"--keep {', '.join(unknown)}: no such destination in {plan.path}")
    kept = frozenset(names.index(name) for name in keep)
    functions = set(plan.functions.values())
    overflow = {c for d in plan.destinations for c in d.overflow}
    pinned = {c for d in plan.destinations for c in d.fixed}
    staying = functions | overflow | pinned | {c for i in kept for c in plan.destinations[i].chutes}
    free = tuple(sorted(plan.machine_chutes - staying))
    owner = _owners(plan, kept, staying)
    fixed = tuple(
        tuple(dict.fromkeys(c for c in d.chutes if owner.get(c) == i))
        for i, d in enumerate(plan.destinations)
    )
    # A destination with no main chute now (overflow only) may stay without one.
    min_chutes = tuple(
        max(len(f), 1 if d.chutes else 0, d.min_chutes or 0)
        for d, f in zip(plan.destinations, fixed, strict=True)
    )
    index = {name: i for i, name in enumerate(names)}
    zone_of = {c: z for z, zone in enumerate(plan.zones) for c in zone.chutes}
    inst = Instance(
        destinations=tuple(names),
        hourly_items=tuple(volumes.of(name) for name in names),
        current=tuple(frozenset(d.chutes) for d in plan.destinations),
        fixed=fixed,
        free_chutes=free,
        min_chutes=min_chutes,
        capacity_items=capacity,
        clear_interval_min=clear,
        kept=kept,
        max_chutes=tuple(d.max_chutes for d in plan.destinations),
        plan_min_chutes=tuple(d.min_chutes for d in plan.destinations),
        zone_names=tuple(z.name for z in plan.zones) or (NO_ZONE,),
        zone_operators=tuple(z.operators for z in plan.zones) or (1,),
        zone_clear_min=tuple(z.clear_interval_min or clear for z in plan.zones),
        zone_of=zone_of or None,
        together=tuple(tuple(index[n] for n in g) for g in plan.together),
        apart=tuple(tuple(index[n] for n in g) for g in plan.apart),
        positions={c: i for i, c in enumerate(plan.loop_order)} or None,
    )
    _check(inst, plan, staying)
    return inst


def _owners(plan: SortPlan, kept: frozenset[int], staying: set[int]) -> dict[int, int]:
    """The one destination each chute that stays keeps among its main chutes (the written
    plan gives a chute to one destination at most, contract section 11): the one that has it
    `fixed`, else a kept one (`--keep`) that lists it, else the first that lists it; the
    others lose it and are given free chutes instead."""
    owner: dict[int, int] = {}
    for i, d in enumerate(plan.destinations):
        for c in d.fixed:
            owner.setdefault(c, i)
    listing = [i for i in range(len(plan.destinations)) if i in kept]
    listing += [i for i in range(len(plan.destinations)) if i not in kept]
    for i in listing:
        for c in plan.destinations[i].chutes:
            if c in staying:
                owner.setdefault(c, i)
    return owner


def _check(inst: Instance, plan: SortPlan, staying: set[int]) -> None:
    """Constraints that cannot hold whatever the solver does, each named."""
    needed = sum(max(0, m - len(f)) for m, f in zip(inst.min_chutes, inst.fixed, strict=True))
    if needed > len(inst.free_chutes):
        floors = [d.name for d in plan.destinations if d.min_chutes]
        what = "every destination keeps at least one chute" + (
            f" and min_chutes of {', '.join(floors)}: they need {needed} free chutes"
            if floors
            else f": {needed} destinations need a free chute"
        )
        raise OptimiseError(
            f"{plan.path}: {what} but only {len(inst.free_chutes)} of the machine's "
            f"{len(plan.machine_chutes)} chutes are free ({len(staying & plan.machine_chutes)} "
            "are function, overflow, fixed or kept chutes)"
        )
    for d, name in enumerate(inst.destinations):
        high = inst.limit(d)
        if high is not None and len(inst.fixed[d]) > high:
            raise OptimiseError(
                f"{plan.path}: {name}: max_chutes = {high} but {len(inst.fixed[d])} of its "
                "chutes stay (function, overflow, fixed or kept)"
            )
    _check_groups(inst, plan)


def _zones_of(inst: Instance, d: int) -> set[int]:
    return {inst.zone(c) for c in inst.fixed[d]}


def _check_groups(inst: Instance, plan: SortPlan) -> None:
    names = inst.destinations
    for j, group in enumerate(inst.together):
        zones = set().union(*(_zones_of(inst, d) for d in group))
        if len(zones) > 1:
            raise OptimiseError(
                f"{plan.path}: layout.together[{j}] ({', '.join(names[d] for d in group)}) "
                "cannot hold: their chutes that stay are in zones "
                + ", ".join(sorted(inst.zone_names[z] for z in zones))
            )
        need = sum(inst.min_chutes[d] for d in group)
        room = max(
            sum(1 for c in inst.free_chutes if inst.zone(c) == z)
            + sum(1 for d in group for c in inst.fixed[d] if inst.zone(c) == z)
            for z in range(len(inst.zone_names))
        )
        if need > room:
            raise OptimiseError(
                f"{plan.path}: layout.together[{j}] ({', '.join(names[d] for d in group)}) "
                f"cannot hold: together they need {need} chutes but no zone has more than "
                f"{room} to give"
            )
    for j, group in enumerate(inst.apart):
        needing = [d for d in group if inst.min_chutes[d] > 0]
        if len(needing) > len(inst.zone_names):
            raise OptimiseError(
                f"{plan.path}: layout.apart[{j}] ({', '.join(names[d] for d in group)}) "
                f"cannot hold: {len(needing)} destinations that keep a chute need as many "
                f"zones, the plan has {len(inst.zone_names)}"
            )
        for a in group:
            for b in group:
                shared = _zones_of(inst, a) & _zones_of(inst, b) if a < b else set()
                if shared:
                    raise OptimiseError(
                        f"{plan.path}: layout.apart[{j}] cannot hold: {names[a]} and {names[b]} "
                        f"both have chutes that stay in zone {inst.zone_names[min(shared)]}"
                    )


def lcm_of_intervals(inst: Instance) -> int:
    """Whole-number units for the estimate: items times this, so every zone's hourly chute
    capacity is a whole number."""
    intervals = inst.zone_clear_min or (inst.clear_interval_min,)
    exact = math.lcm(*intervals)
    # Odd intervals in many zones: capacities rounded to a thousandth of an item instead.
    return exact if exact <= MAX_UNITS else 1000
