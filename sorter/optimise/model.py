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
"""

from __future__ import annotations

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


def instance_from_plan(plan: SortPlan, volumes: Volumes) -> Instance:
    """The model's input; OptimiseError when a constraint cannot hold."""
    capacity, clear = _options(plan)
    functions = set(plan.functions.values())
    overflow = {c for d in plan.destinations for c in d.overflow}
    staying = functions | overflow
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
            "are function or overflow chutes)"
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
    )


def _max_chutes(inst: Instance, d: int) -> int:
    """Chutes beyond the first count at which the estimate is 0 (or beyond what the
    destination has now) lower nothing: leaving them free is never worse."""
    most = len(inst.fixed[d]) + len(inst.free_chutes)
    peak = max(inst.hourly_items[d], default=0)
    per_chute = inst.capacity_items * 60
    enough = -(-peak * inst.clear_interval_min // per_chute)  # ceil: the estimate is 0
    return min(most, max(enough, len(inst.current[d]), inst.min_chutes[d]))


class _Model:
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
            self.est_coef = self.used_coef * n_free + 1
        self.x: dict[tuple[int, int], cp_model.IntVar] = {}
        self.terms: list[tuple[int, cp_model.IntVar]] = []
        self.moves: list[cp_model.LinearExprT] = []  # chutes that served a destination
        self.labelled: list[cp_model.LinearExprT] = []  # idle chutes given a destination
        self._assign()
        self._counts()
        self._moves()

    def _assign(self) -> None:
        inst = self.inst
        # A destination that cannot use more chutes than it has only keeps or gives up its
        # own: handing it another's chute while it gives up one of its own is never
        # better than keeping its own (the other chute goes where its own would have).
        grows = [_max_chutes(inst, d) > len(inst.current[d]) for d in range(len(inst.destinations))]
        for c in inst.free_chutes:
            row = []
            for d in range(len(inst.destinations)):
                if grows[d] or c in inst.current[d]:
                    self.x[c, d] = self.model.new_bool_var(f"x_{c}_{d}")
                    row.append(self.x[c, d])
            self.model.add_at_most_one(row)

    def _counts(self) -> None:
        inst = self.inst
        for d in range(len(inst.destinations)):
            fixed = len(inst.fixed[d])
            counts = range(inst.min_chutes[d], _max_chutes(inst, d) + 1)
            one_hot = [self.model.new_bool_var(f"n_{d}_{k}") for k in counts]
            self.model.add_exactly_one(one_hot)
            assigned = sum(self.x[c, d] for c in inst.free_chutes if (c, d) in self.x)
            self.model.add(
                fixed + assigned == sum(k * y for k, y in zip(counts, one_hot, strict=True))
            )
            for k, y in zip(counts, one_hot, strict=True):
                cost = _scaled_estimate(
                    inst.hourly_items[d], k, inst.capacity_items, inst.clear_interval_min
                )
                if cost:
                    self.terms.append((cost * self.est_coef, y))

    def _moves(self) -> None:
        inst = self.inst
        for c in inst.free_chutes:
            now = [d for d, chutes in enumerate(inst.current) if c in chutes]
            row = [v for (chute, _), v in self.x.items() if chute == c]
            if now:  # moved unless it stays with one of its destinations
                self.moves.append(1 - sum(self.x[c, d] for d in now if (c, d) in self.x))
            elif row:  # a chute that served nobody moves when it is given a destination
                self.labelled.append(sum(row))

    def hint(self) -> None:
        """The current plan as the first solution: never worse than what runs today."""
        for (c, d), var in self.x.items():
            self.model.add_hint(var, c in self.inst.current[d])


def solve(
    inst: Instance, move_weight: float = 10.0, time_limit_s: float = 60.0, workers: int = 8
) -> Allocation:
    """The best allocation found within the time limit; OptimiseError without one."""
    m = _Model(inst, move_weight)
    m.hint()
    estimate = cp_model.LinearExpr.weighted_sum(
        [var for _, var in m.terms], [coef for coef, _ in m.terms]
    )
    m.model.minimize(
        estimate
        + m.used_coef * cp_model.LinearExpr.sum(m.moves)
        + m.move_coef * cp_model.LinearExpr.sum(m.labelled)
    )
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = max(1, workers)
    solver.parameters.random_seed = 1
    status = solver.solve(m.model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise OptimiseError(
            f"the solver found no allocation within {time_limit_s:g} s "
            f"({solver.status_name(status)}): give it more time with --time-limit-s"
        )
    chutes = tuple(
        tuple(
            sorted(
                (
                    *inst.fixed[d],
                    *(
                        c
                        for c in inst.free_chutes
                        if (c, d) in m.x and solver.boolean_value(m.x[c, d])
                    ),
                )
            )
        )
        for d in range(len(inst.destinations))
    )
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
