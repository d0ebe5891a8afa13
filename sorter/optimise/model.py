"""The chute allocation model (contract section 11, docs/optimiser.md), solved with OR-Tools
CP-SAT.

Decided: how many of each zone's free chutes each destination gets (instance.py says which
chutes are free). Minimised, as one weighted sum:
1. the estimate of items that find their chutes full: per destination d and hour h,
   max(0, items_dh - what d's chutes take in an hour), a chute in zone z taking
   capacity * 60 / clear_z items (section 11's formula, zones clearing at their own
   interval). Exact: one non-negative variable per (d, h) above the line.
2. the busiest operator's items over the day (zones with several operators share their
   zone's items), weighted by `balance_weight` estimated items per item: the imbalance,
   since the mean load per operator is the same whatever the allocation. A destination's
   items spread evenly over its chutes (least-loaded balancing), so zone z takes
   items_d * chutes_dz / n_d of them, linearised with a one-hot on n_d.
3. the chutes that change destination against the current plan, each worth `move_weight`
   estimated items; relabelling a chute that served a destination costs 1 % more than
   labelling an idle one. `move_weight` 0: strictly lexicographic, the estimate, then the
   busiest operator, then the moves.

Within a zone chutes are interchangeable apart from the destinations they serve now, so
the model decides counts per (destination, zone), not chutes (a per-chute model stalled on
the symmetry); `_realise` then picks the chutes at exactly the cost the model counted: a
destination keeps its own chutes in the zone first, then takes chutes others gave up there,
then idle ones. Constraints: min_chutes / max_chutes, every destination keeps a chute,
destinations kept together (all their chutes in one zone) or apart (no zone in common).
When they cannot hold together, the model is solved again with each constraint behind an
assumption and the solver's infeasible core is named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ortools.sat.python import cp_model

from sorter.optimise.instance import (
    Instance,
    OptimiseError,
    estimate_of,
    lcm_of_intervals,
)

__all__ = ["DEFAULT_BALANCE_WEIGHT", "Allocation", "Weights", "solve", "zone_load"]

_EST: Final = 1000  # objective units per (estimated item x the interval unit)
_CENTI: Final = 100  # operator load in hundredths of an item
DEFAULT_BALANCE_WEIGHT: Final = 0.05
_Chutes = Sequence[Sequence[int]]


@dataclass(frozen=True, slots=True)
class Weights:
    """What one moved chute, and one item on the busiest operator, are worth in estimated
    full-chute items."""

    move: float = 10.0
    balance: float = DEFAULT_BALANCE_WEIGHT


@dataclass(frozen=True, slots=True)
class Allocation:
    """The model's answer: each destination's main chutes, and how good it is."""

    chutes: tuple[tuple[int, ...], ...]  # per destination, ascending
    status: str  # OPTIMAL or FEASIBLE (the time limit ran out first)
    estimate_before: float  # estimated items finding their chutes full, current plan
    estimate_after: float
    moved: tuple[tuple[int, str, str], ...]  # (chute, from, to); "" = no destination
    objective: float  # in estimated items, moves and balance weighted
    bound: float  # the solver's lower bound on the objective, same units
    wall_time_s: float
    zone_load_before: tuple[float, ...] = ()  # model's items per operator, per zone
    zone_load_after: tuple[float, ...] = ()
    balance_gap: float = 0.0  # the second stage's (the busiest operator), 0 without zones

    @property
    def gap(self) -> float:
        """Relative distance between the answer and the solver's bound (0: proven best)."""
        if self.objective <= 0:
            return 0.0
        return max(0.0, (self.objective - self.bound) / self.objective)


def _coefficients(inst: Instance, w: Weights, unit: int) -> tuple[int, int, int, int]:
    """(estimate per unit, balance per load unit, relabel used, label idle) as integers."""
    n_free = len(inst.free_chutes)
    if w.move > 0:
        move = round(_EST * unit * w.move)
        used = move + max(1, move // 100)
        balance = round(w.balance * _EST * unit / _CENTI) if w.balance > 0 else 0
        return _EST, balance, used, move
    # Lexicographic: every unit of the estimate outweighs any balance and any moves, and
    # every load unit of the busiest operator outweighs any moves.
    moves_max = 2 * n_free + 1
    balance = moves_max + 1 if w.balance > 0 else 0
    total = sum(map(sum, inst.hourly_items))
    return balance * (total * _CENTI + 1) + moves_max + 1, balance, 2, 1


class _Model:
    """Counts per (destination, zone), the estimate, the operators' load and the moves."""

    def __init__(
        self,
        inst: Instance,
        w: Weights,
        named: bool = False,
        counts: list[int] | None = None,
        estimate_at_most: int | None = None,
    ) -> None:
        self.inst, self.named, self.fixed_counts = inst, named, counts
        self.m = cp_model.CpModel()
        self.unit = lcm_of_intervals(inst)
        zones = range(len(inst.zone_names))
        self.cap = [round(inst.capacity_items * 60 * self.unit / inst.clear_min(z)) for z in zones]
        self.free = [[c for c in inst.free_chutes if inst.zone(c) == z] for z in zones]
        self.fixedz = [[sum(1 for c in f if inst.zone(c) == z) for z in zones] for f in inst.fixed]
        self.own = [
            [sum(1 for c in self.free[z] if c in cur) for z in zones] for cur in inst.current
        ]
        self.assumed: list[tuple[cp_model.IntVar, str]] = []
        self.est_coef, self.bal_coef, self.used_coef, self.move_coef = _coefficients(
            inst, w, self.unit
        )
        self.ub: list[list[int]] = []
        self.x = [self._counts(d) for d in range(len(inst.destinations))]
        for z in zones:
            self.m.add(sum(row[z] for row in self.x) <= len(self.free[z]))
        estimate = self._estimate()
        self.estimate_vars = estimate
        if estimate_at_most is not None:
            self.m.add(sum(estimate) <= estimate_at_most)
        terms = [self.est_coef * e for e in estimate] + self._moves() + self._load()
        self._groups()
        self.m.minimize(sum(terms))

    def _top(self, d: int) -> int:
        """Chutes beyond the fewest that take the peak hour in the slowest zone (or what
        the destination has now) lower nothing but the balance: they stay free."""
        inst = self.inst
        if d in inst.kept:
            return len(inst.fixed[d])
        most = len(inst.fixed[d]) + len(inst.free_chutes)
        peak = max(inst.hourly_items[d], default=0) * self.unit
        enough = -(-peak // max(1, min(self.cap)))
        top = min(most, max(enough, len(inst.current[d]), inst.min_chutes[d]))
        limit = inst.limit(d)
        return top if limit is None or self.named else min(top, limit)

    def _guard(self, text: str) -> list[cp_model.IntVar]:
        if not self.named:
            return []
        lit = self.m.new_bool_var(text)
        self.assumed.append((lit, text))
        return [lit]

    def _counts(self, d: int) -> list[cp_model.IntVar]:
        inst, top = self.inst, self._top(d)
        room = top - len(inst.fixed[d])
        ub = [max(0, min(room, len(self.free[z]))) for z in range(len(self.free))]
        self.ub.append(ub)
        row = [self.m.new_int_var(0, u, f"x_{d}_{z}") for z, u in enumerate(ub)]
        n = len(inst.fixed[d]) + sum(row)
        name = inst.destinations[d]
        low = inst.min_chutes[d]
        stated = inst.stated_min(d)
        if stated is not None and stated > max(len(inst.fixed[d]), 1):
            # The plan's min_chutes, named when it cannot hold; one chute for every
            # destination is the contract's, not a choice.
            self.m.add(n >= stated).only_enforce_if(self._guard(f"{name}: min_chutes = {stated}"))
            low = min(low, max(len(inst.fixed[d]), 1 if inst.current[d] else 0))
        self.m.add(n >= low)
        if self.fixed_counts is not None:
            self.m.add(n == self.fixed_counts[d])
        limit = inst.limit(d)
        if limit is not None and self.named:
            self.m.add(n <= limit).only_enforce_if(self._guard(f"{name}: max_chutes = {limit}"))
        self.m.add(n <= max(top, len(inst.fixed[d])))
        return row

    def _estimate(self) -> list[cp_model.IntVar]:
        inst = self.inst
        terms: list[cp_model.IntVar] = []
        for d, hours in enumerate(inst.hourly_items):
            taken = sum(
                (self.x[d][z] + self.fixedz[d][z]) * self.cap[z] for z in range(len(self.cap))
            )
            for h, items in enumerate(hours):
                if items:
                    e = self.m.new_int_var(0, items * self.unit, f"e_{d}_{h}")
                    self.m.add(e >= items * self.unit - taken)
                    terms.append(e)
        return terms

    def _moves(self) -> list[cp_model.LinearExprT]:
        """Per zone: own chutes kept; what others give up goes to the growing ones first,
        then idle chutes are labelled (the realisation picks exactly those)."""
        terms: list[cp_model.LinearExprT] = []
        self.kept: list[list[cp_model.IntVar]] = []
        for d, row in enumerate(self.x):
            ks = []
            for z, x in enumerate(row):
                k = self.m.new_int_var(0, self.own[d][z], f"k_{d}_{z}")
                self.m.add(k <= x)
                ks.append(k)
            self.kept.append(ks)
        for z, free in enumerate(self.free):
            released = sum(self.own[d][z] - self.kept[d][z] for d in range(len(self.x)))
            gained = sum(self.x[d][z] - self.kept[d][z] for d in range(len(self.x)))
            labelled = self.m.new_int_var(0, len(free), f"labelled_{z}")
            self.m.add(labelled >= gained - released)
            terms += [self.used_coef * released, self.move_coef * labelled]
        return terms

    def _load(self) -> list[cp_model.LinearExprT]:
        """The busiest operator's items, with every destination's chute count given (the
        second stage, solve()); a destination's items spread evenly over its chutes."""
        inst, counts = self.inst, self.fixed_counts
        zones = range(len(self.free))
        if counts is None or len(self.free) < 2 or not self.bal_coef:
            return []
        load: list[list[cp_model.LinearExprT]] = [[] for _ in zones]
        for d, row in enumerate(self.x):
            total = sum(inst.hourly_items[d])
            if total and counts[d]:
                per_chute = round(total * _CENTI / counts[d])
                for z in zones:
                    load[z].append(per_chute * (row[z] + self.fixedz[d][z]))
        total_all = sum(map(sum, inst.hourly_items))
        self.peak = self.m.new_int_var(0, total_all * _CENTI, "peak")
        for z in zones:
            self.m.add(self.peak * inst.zone_operators[z] >= sum(load[z]))
        return [self.bal_coef * self.peak]

    def _groups(self) -> None:
        inst = self.inst
        zones = range(len(self.free))
        names = inst.destinations

        def there(d: int, z: int) -> cp_model.LinearExprT:
            return self.x[d][z] + self.fixedz[d][z]

        big = len(inst.free_chutes) + max((len(f) for f in inst.fixed), default=0)
        for j, group in enumerate(inst.together):
            guard = self._guard(f"layout.together[{j}] ({', '.join(names[d] for d in group)})")
            u = [self.m.new_bool_var(f"u_{j}_{z}") for z in zones]
            self.m.add_exactly_one(u).only_enforce_if(guard)
            for d in group:
                for z in zones:
                    self.m.add(there(d, z) <= big * u[z]).only_enforce_if(guard)
        for j, group in enumerate(inst.apart):
            guard = self._guard(f"layout.apart[{j}] ({', '.join(names[d] for d in group)})")
            has = {(d, z): self.m.new_bool_var(f"h_{d}_{z}") for d in group for z in zones}
            for (d, z), h in has.items():
                self.m.add(there(d, z) <= big * h)
            for z in zones:
                self.m.add(sum(has[d, z] for d in group) <= 1).only_enforce_if(guard)

    def hint(self) -> None:
        """The current plan as the first solution: never worse than what runs today."""
        for d, row in enumerate(self.x):
            for z, x in enumerate(row):
                self.m.add_hint(x, self.own[d][z])
                self.m.add_hint(self.kept[d][z], self.own[d][z])

    def hint_split(self, split: list[list[int]]) -> None:
        for row, values in zip(self.x, split, strict=True):
            for x, v in zip(row, values, strict=True):
                self.m.add_hint(x, v)

    def counts(self, solver: cp_model.CpSolver) -> list[list[int]]:
        return [[int(solver.value(x)) for x in row] for row in self.x]


def _realise(inst: Instance, counts: list[list[int]]) -> tuple[tuple[int, ...], ...]:
    """Each destination's chutes for the chosen counts, zone by zone, at the model's cost:
    own chutes kept (lowest numbers first), then chutes others gave up, then idle ones;
    among those, each growing destination takes the one nearest its chutes along the loop
    (the cost is the same whichever it takes)."""
    chosen: list[list[int]] = [list(f) for f in inst.fixed]
    served = {c for chutes in inst.current for c in chutes}
    for z in range(len(inst.zone_names)):
        free = [c for c in inst.free_chutes if inst.zone(c) == z]
        taken: set[int] = set()
        need: list[int] = []
        for d, row in enumerate(counts):
            own = [c for c in free if c in inst.current[d] and c not in taken][: row[z]]
            taken.update(own)
            chosen[d] += own
            need.append(row[z] - len(own))
        pool = [c for c in free if c not in taken]
        released = [c for c in pool if c in served]
        idle = [c for c in pool if c not in served]
        # Destination by destination, each chute the nearest to what it has, so that a
        # lane's new chutes sit together; released chutes before idle ones (what the
        # model counted).
        for d, short in enumerate(need):
            mine = chosen[d]
            for _ in range(short):
                source = released or idle
                best = min(source, key=lambda c: _distance(inst, c, mine))
                source.remove(best)
                mine.append(best)
    return tuple(tuple(sorted(c)) for c in chosen)


def _distance(inst: Instance, chute: int, mine: Sequence[int]) -> tuple[int, int]:
    """How far a chute is from a destination's chutes along the loop; then its number."""
    here = inst.position(chute)
    return (min((abs(here - inst.position(c)) for c in mine), default=0), chute)


def _solver(time_limit_s: float, workers: int) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = max(1, workers)
    solver.parameters.random_seed = 1
    return solver


def _still_infeasible(
    inst: Instance, weights: Weights, keep: list[int], time_limit_s: float
) -> tuple[bool, list[int]]:
    """Solve with only the assumptions `keep`; (infeasible?, the solver's core of them)."""
    named = _Model(inst, weights, named=True)
    lits = [named.assumed[i][0] for i in keep]
    for i, (lit, _) in enumerate(named.assumed):
        if i not in keep:
            named.m.add(lit == 0)
    named.m.add_assumptions(lits)
    solver = _solver(time_limit_s, 1)  # assumptions and their core: one search thread
    if solver.solve(named.m) != cp_model.INFEASIBLE:
        return False, keep
    core = set(solver.sufficient_assumptions_for_infeasibility())
    return True, [i for i in keep if named.assumed[i][0].index in core]


def _infeasible(inst: Instance, weights: Weights, time_limit_s: float) -> OptimiseError:
    """Which of the plan's constraints cannot hold together: the model again with each one
    behind an assumption, the solver's core of them, then each dropped in turn while the
    rest still cannot hold (a minimal set)."""
    texts = [text for _, text in _Model(inst, weights, named=True).assumed]
    step_s = min(10.0, time_limit_s)
    infeasible, core = _still_infeasible(inst, weights, list(range(len(texts))), step_s)
    if not infeasible:
        return OptimiseError("the constraints cannot hold together (the solver named none)")
    for i in list(core):
        if len(core) > 1:
            rest = [j for j in core if j != i]
            if _still_infeasible(inst, weights, rest, step_s)[0]:
                core = rest
    named = (
        "; ".join(texts[i] for i in core)
        if core
        else ("every destination keeps at least one chute, on the free chutes of the zones")
    )
    return OptimiseError(f"these constraints cannot hold together: {named}")


def _check_status(
    solver: cp_model.CpSolver, status: cp_model.CpSolverStatus, time_limit_s: float
) -> None:
    if status == cp_model.MODEL_INVALID:
        # CP-SAT's coefficients are 64-bit integers: a huge move weight or volume overflows.
        raise OptimiseError(
            "the model's numbers are too large for the solver: lower --move-weight or check "
            "the volumes for absurd counts"
        )
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.INFEASIBLE):
        raise OptimiseError(
            f"the solver found no allocation within {time_limit_s:g} s "
            f"({solver.status_name(status)}): give it more time with --time-limit-s"
        )


def solve(
    inst: Instance,
    move_weight: float = 10.0,
    time_limit_s: float = 60.0,
    workers: int = 8,
    balance_weight: float = DEFAULT_BALANCE_WEIGHT,
) -> Allocation:
    """The best allocation found within the time limit; OptimiseError without one.

    Two stages: the chute counts for the estimate and the moves; then, with two zones or
    more, the split of those counts over the zones for the busiest operator and the moves,
    the estimate kept at most what the first stage reached."""
    weights = Weights(move_weight, balance_weight)
    first = _Model(inst, Weights(move_weight, 0.0))
    first.hint()
    solver = _solver(time_limit_s, workers)
    status = solver.solve(first.m)
    _check_status(solver, status, time_limit_s)
    if status == cp_model.INFEASIBLE:
        raise _infeasible(inst, weights, time_limit_s)
    split = first.counts(solver)
    unit = first.est_coef * first.unit  # objective units per estimated item
    objective, bound = solver.objective_value / unit, solver.best_objective_bound / unit
    statuses, wall_s = [solver.status_name(status)], solver.wall_time
    balance_gap = 0.0
    if len(inst.zone_names) > 1 and balance_weight > 0:
        reached = sum(int(solver.value(e)) for e in first.estimate_vars)
        n = [len(f) + sum(row) for f, row in zip(inst.fixed, split, strict=True)]
        second = _Model(inst, weights, counts=n, estimate_at_most=reached)
        second.hint_split(split)
        solver = _solver(max(1.0, time_limit_s - wall_s), workers)
        status = solver.solve(second.m)
        _check_status(solver, status, time_limit_s)
        if status != cp_model.INFEASIBLE:  # the first stage's split always fits; belt and braces
            split = second.counts(solver)
            statuses.append(solver.status_name(status))
            wall_s += solver.wall_time
            value = solver.objective_value
            balance_gap = max(0.0, (value - solver.best_objective_bound) / value) if value else 0.0
    chutes = _realise(inst, split)
    return Allocation(
        chutes=chutes,
        status="OPTIMAL" if set(statuses) == {"OPTIMAL"} else "FEASIBLE",
        estimate_before=_estimate(inst, [sorted(c) for c in inst.current]),
        estimate_after=_estimate(inst, chutes),
        moved=_moved(inst, chutes),
        objective=objective,
        bound=bound,
        wall_time_s=wall_s,
        zone_load_before=zone_load(inst, [tuple(sorted(c)) for c in inst.current]),
        zone_load_after=zone_load(inst, chutes),
        balance_gap=balance_gap,
    )


def _estimate(inst: Instance, chutes: _Chutes) -> float:
    return sum(estimate_of(inst, d, cs) for d, cs in enumerate(chutes))


def zone_load(inst: Instance, chutes: _Chutes) -> tuple[float, ...]:
    """The model's items per operator in each zone over the day: each destination's items
    spread evenly over its main chutes."""
    load = [0.0] * len(inst.zone_names)
    for d, cs in enumerate(chutes):
        for c in cs:
            load[inst.zone(c)] += sum(inst.hourly_items[d]) / len(cs)
    return tuple(v / ops for v, ops in zip(load, inst.zone_operators, strict=True))


def _moved(inst: Instance, chutes: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, str, str], ...]:
    after = {c: inst.destinations[d] for d, cs in enumerate(chutes) for c in cs}
    out = []
    for c in inst.free_chutes:
        before = [inst.destinations[d] for d, cs in enumerate(inst.current) if c in cs]
        now = after.get(c, "")
        if (now not in before) if now else bool(before):
            out.append((c, "+".join(before), now))
    return tuple(out)
