"""The chute allocation model (contract section 11), solved with OR-Tools CP-SAT.

Decided: which destination each free chute serves. Free chutes are the machine's chutes
that are neither function chutes nor anyone's overflow (those stay as they are); a chute
a destination lists as a main chute but that is also a function or overflow chute stays
with it and counts among its chutes. Each free chute serves at most one destination; every
destination keeps at least one main chute (one that has none in the current plan, only
overflow, may stay so).

Minimised: the estimate of items that find their chutes full, summed over destinations d
and hours h with n_d main chutes, max(0, items_dh / n_d * clear / 60 - capacity) * n_d *
60 / clear, which is max(0, items_dh - n_d * capacity * 60 / clear): the items beyond
what n_d chutes emptied every `clear` minutes take in an hour. It is precomputed for every
possible n_d and chosen with a one-hot, so the model stays linear and exact. Then the
chutes that change destination against the current plan, each worth `move_weight`
estimated items (0: moves only break ties between equal estimates); relabelling a chute
that served a destination costs 1 % more than labelling an idle one.

CP-SAT decides the counts n_d (see _Model for why counts and not chutes); `_realise` then
picks the chutes at exactly the cost the model counted. The one exception: a free chute
that the current plan lists under two destinations counts as each one's own, so the moves
the model counts can be off by such chutes (the estimate never is); the moves printed are
always those of the chutes realised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ortools.sat.python import cp_model

from sorter.errors import SorterdError
from sorter.optimise.volumes import Volumes
from sorter.plan import SortPlan

__all__ = [
    "Allocation",
    "Instance",
    "OptimiseError",
    "estimate_items",
    "instance_from_plan",
    "solve",
]

_SCALE: Final = 100  # objective units per (estimated item x clear minute): moves to 0.01
_TIE: Final = 100  # a relabelled used chute costs 1 % more than a newly labelled idle one


class OptimiseError(SorterdError):
    """The optimiser cannot run on this plan and these volumes; says which constraint."""


@dataclass(frozen=True, slots=True)
class Instance:
    """What the model decides over, taken from a checked plan and the volumes."""

    destinations: tuple[str, ...]
    hourly_items: tuple[tuple[int, ...], ...]  # per destination, HOURS counts
    current: tuple[frozenset[int], ...]  # each destination's main chutes now
    fixed: tuple[tuple[int, ...], ...]  # main chutes that stay (function or overflow chutes)
    free_chutes: tuple[int, ...]  # what the model hands out, ascending
    min_chutes: tuple[int, ...]  # per destination, fixed ones included
    capacity_items: int
    clear_interval_min: int
    kept: frozenset[int] = frozenset()  # destinations whose chutes all stay (--keep)


@dataclass(frozen=True, slots=True)
class Allocation:
    """The model's answer: each destination's main chutes, and how good it is."""

    chutes: tuple[tuple[int, ...], ...]  # per destination, ascending
    status: str  # OPTIMAL or FEASIBLE (the time limit ran out first)
    estimate_before: float  # estimated items finding their chutes full, current plan
    estimate_after: float
    moved: tuple[tuple[int, str, str], ...]  # (chute, from, to); "" = no destination
    objective: float  # in estimated items, moves weighted
    bound: float  # the solver's lower bound on the objective, same units
    wall_time_s: float

    @property
    def gap(self) -> float:
        """Relative distance between the answer and the solver's bound (0: proven best)."""
        if self.objective <= 0:
            return 0.0
        return max(0.0, (self.objective - self.bound) / self.objective)


def estimate_items(
    hourly_items: tuple[int, ...], chutes: int, capacity_items: int, clear_interval_min: int
) -> float:
    """Section 11's estimate for one destination: items that find its chutes full."""
    return _scaled_estimate(hourly_items, chutes, capacity_items, clear_interval_min) / (
        clear_interval_min
    )


def _scaled_estimate(
    hourly_items: tuple[int, ...], chutes: int, capacity_items: int, clear_interval_min: int
) -> int:
    # max(0, items - n * cap * 60 / clear), times clear: whole numbers for CP-SAT.
    taken = chutes * capacity_items * 60
    return sum(max(0, items * clear_interval_min - taken) for items in hourly_items)


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
    """The model's input; OptimiseError when a constraint cannot hold. `keep`: names of
    destinations whose chutes all stay as they are (manual lanes, a lane being rebuilt)."""
    capacity, clear = _options(plan)
    names = [d.name for d in plan.destinations]
    unknown = [name for name in keep if name not in names]
    if unknown:
        raise OptimiseError(f"--keep {', '.join(unknown)}: no such destination in {plan.path}")
    kept = frozenset(names.index(name) for name in keep)
    functions = set(plan.functions.values())
    overflow = {c for d in plan.destinations for c in d.overflow}
    staying = functions | overflow | {c for i in kept for c in plan.destinations[i].chutes}
    free = tuple(sorted(plan.machine_chutes - staying))
    fixed = tuple(tuple(c for c in d.chutes if c in staying) for d in plan.destinations)
    # A destination with no main chute now (overflow only) may stay without one.
    min_chutes = tuple(
        max(len(f), 1 if d.chutes else 0) for d, f in zip(plan.destinations, fixed, strict=True)
    )
    needed = sum(max(0, m - len(f)) for m, f in zip(min_chutes, fixed, strict=True))
    if needed > len(free):
        raise OptimiseError(
            f"{plan.path}: every destination keeps at least one chute: {needed} destinations "
            f"need a free chute but only {len(free)} of the machine's "
            f"{len(plan.machine_chutes)} chutes are free ({len(staying & plan.machine_chutes)} "
            "are function or overflow chutes" + (" or kept" if kept else "") + ")"
        )
    return Instance(
        destinations=tuple(d.name for d in plan.destinations),
        hourly_items=tuple(volumes.of(d.name) for d in plan.destinations),
        current=tuple(frozenset(d.chutes) for d in plan.destinations),
        fixed=fixed,
        free_chutes=free,
        min_chutes=min_chutes,
        capacity_items=capacity,
        clear_interval_min=clear,
        kept=kept,
    )


def _max_chutes(inst: Instance, d: int) -> int:
    """Chutes beyond the first count at which the estimate is 0 (or beyond what the
    destination has now) lower nothing: leaving them free is never worse."""
    if d in inst.kept:
        return len(inst.fixed[d])
    most = len(inst.fixed[d]) + len(inst.free_chutes)
    peak = max(inst.hourly_items[d], default=0)
    per_chute = inst.capacity_items * 60
    enough = -(-peak * inst.clear_interval_min // per_chute)  # ceil: the estimate is 0
    return min(most, max(enough, len(inst.current[d]), inst.min_chutes[d]))


class _Model:
    """The counts model: how many chutes each destination gets, and what that costs.

    Chutes are interchangeable apart from the destinations they serve now (the model knows
    no positions yet), so the best allocation for given counts is known without a variable
    per chute: each destination keeps as many of its own chutes as it can, the chutes that
    destinations give up go first to the destinations that grow (one move each), then
    idle chutes are labelled (one move each). A chute given up and not reused is a move
    too. Deciding counts instead of chutes removes the symmetry a per-chute model has
    (every permutation of alike chutes is the same answer), which made CP-SAT stall.
    """

    def __init__(self, inst: Instance, move_weight: float) -> None:
        self.inst = inst
        self.model = cp_model.CpModel()
        n_free = len(inst.free_chutes)
        # Between two moves, relabelling a chute that serves a destination costs a little
        # more than labelling an idle one: the destination keeps the chutes its operators
        # know, and a tie does not shuffle chutes between destinations for nothing.
        if move_weight > 0:
            self.est_coef = _SCALE * _TIE
            self.move_coef = round(_SCALE * _TIE * inst.clear_interval_min * move_weight)
            self.used_coef = self.move_coef + max(1, self.move_coef // _TIE)
        else:  # lexicographic: the estimate, then the count of moves, then which moves
            self.move_coef, self.used_coef = n_free + 1, n_free + 2
            self.est_coef = self.used_coef * 2 * n_free + 1
        self.one_hot: list[list[tuple[int, cp_model.IntVar]]] = []  # per destination: (k, y)
        estimate: list[tuple[int, cp_model.IntVar]] = []
        given_up: list[tuple[int, cp_model.IntVar]] = []  # own chutes a count gives up
        gained: list[tuple[int, cp_model.IntVar]] = []  # chutes a count takes beyond its own
        taken: list[tuple[int, cp_model.IntVar]] = []  # free chutes a count uses
        for d in range(len(inst.destinations)):
            own = len(inst.current[d]) - len(inst.fixed[d])  # its free chutes now
            row = []
            for k in range(inst.min_chutes[d], _max_chutes(inst, d) + 1):
                y = self.model.new_bool_var(f"n_{d}_{k}")
                row.append((k, y))
                free = k - len(inst.fixed[d])
                kept = min(own, free)
                cost = _scaled_estimate(
                    inst.hourly_items[d], k, inst.capacity_items, inst.clear_interval_min
                )
                estimate.append((cost * self.est_coef, y))
                given_up.append((own - kept, y))
                gained.append((free - kept, y))
                taken.append((free, y))
            self.model.add_exactly_one(y for _, y in row)
            self.one_hot.append(row)
        self.model.add(_weighted(taken) <= n_free)
        released = _weighted(given_up)
        # Idle chutes labelled: what the growing destinations take beyond the released.
        labelled = self.model.new_int_var(0, n_free, "labelled")
        self.model.add(labelled >= _weighted(gained) - released)
        self.model.minimize(
            _weighted(estimate) + self.used_coef * released + self.move_coef * labelled
        )

    def hint(self) -> None:
        """The current plan as the first solution: never worse than what runs today."""
        for d, row in enumerate(self.one_hot):
            for k, y in row:
                self.model.add_hint(y, k == len(self.inst.current[d]))

    def counts(self, solver: cp_model.CpSolver) -> list[int]:
        return [next(k for k, y in row if solver.boolean_value(y)) for row in self.one_hot]


def _weighted(terms: list[tuple[int, cp_model.IntVar]]) -> cp_model.LinearExpr:
    return cp_model.LinearExpr.weighted_sum([y for _, y in terms], [c for c, _ in terms])


def _realise(inst: Instance, counts: list[int]) -> tuple[tuple[int, ...], ...]:
    """The chutes of each destination for the chosen counts, at the counts model's cost:
    own chutes kept (lowest numbers first), then chutes others gave up, then idle ones."""
    free = set(inst.free_chutes)
    taken: set[int] = set()
    kept: list[list[int]] = []
    for d, n in enumerate(counts):
        own = [c for c in sorted(inst.current[d]) if c in free and c not in taken]
        mine = own[: max(0, n - len(inst.fixed[d]))]
        taken.update(mine)
        kept.append([*inst.fixed[d], *mine])
    pool = [c for c in inst.free_chutes if c not in taken]
    served = {c for chutes in inst.current for c in chutes}
    released = [c for c in pool if c in served]
    idle = [c for c in pool if c not in served]
    spare = released + idle
    for d, n in enumerate(counts):
        need = n - len(kept[d])
        kept[d] += spare[:need]
        spare = spare[need:]
    return tuple(tuple(sorted(chutes)) for chutes in kept)


def solve(
    inst: Instance, move_weight: float = 10.0, time_limit_s: float = 60.0, workers: int = 8
) -> Allocation:
    """The best allocation found within the time limit; OptimiseError without one."""
    m = _Model(inst, move_weight)
    m.hint()
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = max(1, workers)
    solver.parameters.random_seed = 1
    status = solver.solve(m.model)
    if status == cp_model.MODEL_INVALID:
        # CP-SAT's coefficients are 64-bit integers: a huge move weight or volume overflows.
        raise OptimiseError(
            "the model's numbers are too large for the solver: lower --move-weight or check "
            "the volumes for absurd counts"
        )
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise OptimiseError(
            f"the solver found no allocation within {time_limit_s:g} s "
            f"({solver.status_name(status)}): give it more time with --time-limit-s"
        )
    chutes = _realise(inst, m.counts(solver))
    unit = m.est_coef * inst.clear_interval_min  # objective units per estimated item
    return Allocation(
        chutes=chutes,
        status=solver.status_name(status),
        estimate_before=_estimate(inst, [len(c) for c in inst.current]),
        estimate_after=_estimate(inst, [len(c) for c in chutes]),
        moved=_moved(inst, chutes),
        objective=solver.objective_value / unit,
        bound=solver.best_objective_bound / unit,
        wall_time_s=solver.wall_time,
    )


def _estimate(inst: Instance, counts: list[int]) -> float:
    return sum(
        estimate_items(items, n, inst.capacity_items, inst.clear_interval_min)
        for items, n in zip(inst.hourly_items, counts, strict=True)
    )


def _moved(inst: Instance, chutes: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, str, str], ...]:
    after = {c: inst.destinations[d] for d, cs in enumerate(chutes) for c in cs}
    out = []
    for c in inst.free_chutes:
        before = [inst.destinations[d] for d, cs in enumerate(inst.current) if c in cs]
        now = after.get(c, "")
        if (now not in before) if now else bool(before):
            out.append((c, "+".join(before), now))
    return tuple(out)
