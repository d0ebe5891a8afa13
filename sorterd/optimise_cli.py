"""`sorterd plan optimise` (contract section 11, docs/optimiser.md): the plan's chutes
reallocated to the expected flow, the moves and the estimate printed, the new plan written
only once it checks as check-config would check it."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the solver and the plan load only when the command runs (--help stays fast)
    from simulators.chute_day import DayFigures, SimPlan
    from sorter.config import Site
    from sorter.optimise import Allocation, Instance, Volumes
    from sorter.plan import SortPlan

__all__ = ["add_plan_parser", "plan_command"]

EXIT_OK = 0
EXIT_USAGE = 2
# Estimated full-chute items one relabelled chute is worth. 100: on the generated Casablanca
# day the recirculations still fall by ~99 % while under 10 % of the chutes move (at 10 the
# balancing stage moves lanes between zones: 13 %; docs/optimiser.md); operators keep the
# chutes they know unless a move buys real relief.
DEFAULT_MOVE_WEIGHT = 100.0
DEFAULT_TIME_LIMIT_S = 60.0

_Subparsers = argparse._SubParsersAction  # the type argparse gives no public name


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


MAX_MOVE_WEIGHT = 1_000_000.0  # items per moved chute: beyond a hub's day, and CP-SAT's range


def _move_weight(text: str) -> float:
    value = _non_negative(text)
    if value > MAX_MOVE_WEIGHT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_MOVE_WEIGHT:,.0f}, got {text!r}")
    return value


DEFAULT_HOURS = "5-23"  # sorterd.optimise_sources.DEFAULT_HOURS (not imported: --help stays fast)
DEFAULT_BALANCE_WEIGHT = 0.05  # sorter.optimise.model.DEFAULT_BALANCE_WEIGHT


def _hours(text: str) -> str:
    from sorterd.optimise_sources import parse_hours  # noqa: PLC0415

    try:
        parse_hours(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def add_plan_parser(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    """`sorterd plan optimise ...`."""
    p = sub.add_parser("plan", help="sort plan tools: reallocate chutes to the expected flow")
    tools = p.add_subparsers(dest="plan_command", required=True, metavar="TOOL")
    q = tools.add_parser("optimise", help="reallocate the plan's chutes to the expected flow")
    q.add_argument("-c", "--config", required=True, metavar="SITE.toml", help="site config file")
    source = q.add_mutually_exclusive_group(required=True)
    source.add_argument("--volumes", metavar="VOLUMES.csv", help="destination,hour,items")
    source.add_argument(
        "--from-replay",
        metavar="SCANS.csv",
        help="count each destination's items per hour by replaying scans (with a time "
        "column) through the current plan, the file taken as one day",
    )
    source.add_argument(
        "--from-manifests",
        action="store_true",
        help="count each destination's items in the site's manifests (through the current "
        "plan's decision), spread evenly over --hours: manifests carry no hour",
    )
    q.add_argument(
        "--hours",
        type=_hours,
        default=None,
        metavar="FROM-TO",
        help=f"--from-manifests: the site's operating hours (default {DEFAULT_HOURS})",
    )
    q.add_argument(
        "--profile",
        choices=("uniform", "casablanca"),
        default=None,
        help="--from-manifests: spread each destination's day evenly over --hours "
        "(uniform, the default) or by the generated Casablanca day's shape for its lane kind",
    )
    q.add_argument(
        "--balance-weight",
        type=_move_weight,
        default=DEFAULT_BALANCE_WEIGHT,
        metavar="ITEMS",
        help="estimated full-chute items one item more on the busiest operator's day is "
        f"worth (default {DEFAULT_BALANCE_WEIGHT:g}; needs [[zone]] tables)",
    )
    q.add_argument("--out", metavar="PLAN.toml", help="write the optimised plan here")
    q.add_argument(
        "--report",
        metavar="FILE.html",
        help="a self-contained HTML report: both allocations by estimate and simulated day",
    )
    q.add_argument(
        "--move-weight",
        type=_move_weight,
        default=DEFAULT_MOVE_WEIGHT,
        metavar="ITEMS",
        help="estimated full-chute items one moved chute is worth (default "
        f"{DEFAULT_MOVE_WEIGHT:g}; 0: moves only break ties)",
    )
    q.add_argument(
        "--time-limit-s",
        type=_positive,
        default=DEFAULT_TIME_LIMIT_S,
        metavar="S",
        help=f"solver time limit (default {DEFAULT_TIME_LIMIT_S:g})",
    )
    q.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        metavar="N",
        help="solver threads (default: the cores, at most 8)",
    )
    q.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="DESTINATION",
        help="leave this destination's chutes as they are (repeatable)",
    )
    q.add_argument("--seed", type=int, default=1, help="the simulated day's arrivals (default 1)")


def plan_command(args: argparse.Namespace) -> int:
    if args.plan_command != "optimise":
        return EXIT_USAGE
    if (args.hours is not None or args.profile is not None) and not args.from_manifests:
        print(
            "error: --hours and --profile go with --from-manifests (the other sources have hours)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return optimise(
        args.config,
        volumes=args.volumes,
        from_replay=args.from_replay,
        from_manifests=(args.hours or DEFAULT_HOURS) if args.from_manifests else None,
        profile=args.profile or "uniform",
        balance_weight=args.balance_weight,
        out=args.out,
        report=args.report,
        move_weight=args.move_weight,
        time_limit_s=args.time_limit_s,
        workers=max(1, args.workers),
        seed=args.seed,
        keep=tuple(args.keep),
    )


def _replay_volumes(site: Site, scans: str) -> Volumes:
    """Each destination's items per hour, replaying the scans through the current plan as
    `sorterd replay` does (the site's manifests applied)."""
    from sorter.config import ConfigError, Problem  # noqa: PLC0415
    from sorter.decide import Decider  # noqa: PLC0415
    from sorter.kernel import ChuteState  # noqa: PLC0415
    from sorter.manifest import ManifestSource  # noqa: PLC0415
    from sorter.optimise.volumes import HourlyCounts  # noqa: PLC0415
    from sorter.plan import compile_plan, load_plan  # noqa: PLC0415
    from sorter.replay import Replay  # noqa: PLC0415

    cfg = site.config
    plan = compile_plan(load_plan(site.plan_path))
    decider = Decider(
        plan, ChuteState.for_plan(plan), cfg.site.timezone, site_country=cfg.site.country
    )
    if site.manifest_globs:
        decider.use_manifest(ManifestSource(site.manifest_globs).build(decider.destination_names))
    decider.warm()
    counts = HourlyCounts(scans)
    Replay(decider, sink=counts).run_file(Path(scans), cfg.site.timezone)
    volumes = counts.volumes()
    if counts.untimed or volumes.total == 0:
        raise ConfigError(
            [
                Problem(
                    scans,
                    "time",
                    f"{counts.untimed:,} sorted item(s) without a time: --from-replay needs "
                    "a time column (HH:MM or ISO 8601) on every row to count items per hour",
                )
            ]
        )
    return volumes


def optimise(
    config: str,
    *,
    volumes: str | None,
    from_replay: str | None,
    out: str | None,
    from_manifests: str | None = None,
    profile: str = "uniform",
    balance_weight: float = DEFAULT_BALANCE_WEIGHT,
    move_weight: float,
    report: str | None = None,
    time_limit_s: float,
    workers: int,
    seed: int = 1,
    keep: tuple[str, ...] = (),
) -> int:
    from sorter.config import load_site  # noqa: PLC0415
    from sorter.optimise import OptimiseError, instance_from_plan, load_volumes, solve  # noqa: PLC0415
    from sorter.plan import load_plan  # noqa: PLC0415

    for flag, target in (("--out", out), ("--report", report)):
        # Said before the solve, not after it.
        if target is not None and not Path(target).resolve().parent.is_dir():
            raise OptimiseError(f"{flag} {target}: the folder {Path(target).parent} does not exist")
        if target is not None and Path(target).is_dir():
            raise OptimiseError(f"{flag} {target}: is a folder; give the file to write")
    site = load_site(config)
    plan = load_plan(site.plan_path)
    if volumes is not None:
        flow = load_volumes(volumes, [d.name for d in plan.destinations])
    elif from_manifests is not None:
        from sorterd.optimise_sources import manifest_volumes, parse_hours  # noqa: PLC0415

        hours = parse_hours(from_manifests)
        found = manifest_volumes(site, hours, profile)
        flow = found.volumes
        how = (
            "by the generated Casablanca day's shape of each lane kind"
            if profile == "casablanca"
            else f"evenly over {hours[0]:02d}:00-{(hours[-1] + 1) % 24:02d}:00"
        )
        print(
            f"manifests: {found.rows:,} rows in {found.files} file(s), {found.counted:,} reach "
            f"a destination's chutes; spread {how} (manifests carry no hour)"
        )
    else:
        assert from_replay is not None
        flow = _replay_volumes(site, from_replay)
    inst = instance_from_plan(plan, flow, keep)
    print(
        f"plan {plan.name} ({site.plan_path.name}): {len(plan.destinations)} destinations, "
        f"{len(inst.free_chutes)} chutes to allocate (function and overflow chutes stay); "
        f"a chute holds {inst.capacity_items} items, cleared every "
        f"{inst.clear_interval_min} min"
    )
    print(f"volumes {Path(flow.path).name}: {flow.total:,} items over the day")
    result = solve(
        inst,
        move_weight=move_weight,
        time_limit_s=time_limit_s,
        workers=workers,
        balance_weight=balance_weight,
    )
    _print_result(inst, result)
    before, after = _simulate(plan, result, flow, seed)
    _print_simulation(before, after, seed)
    if out is not None:
        _write_plan(plan, result, Path(out), flow)
    if report is not None:
        from sorterd.optimise_report import OptimiseReport, write_optimise_report  # noqa: PLC0415

        data = OptimiseReport(
            plan.name, Path(flow.path).name, inst, result, before, after, seed, plan
        )
        write_optimise_report(Path(report), data)
        print(f"report written to {report}")
    return EXIT_OK


def _print_result(inst: Instance, result: Allocation) -> None:
    print(
        f"solver: {result.status} in {result.wall_time_s:.2f} s; objective {result.objective:,.1f}"
        f", bound {result.bound:,.1f}, gap {result.gap:.2%} (estimated items, moves weighted)"
    )
    if len(inst.zone_names) > 1:
        print(
            "operators' balance (second stage, counts fixed): the busiest operator's items "
            f"per day {max(result.zone_load_before):,.0f} before, "
            f"{max(result.zone_load_after):,.0f} after (model), gap {result.balance_gap:.2%}"
        )
    before, after = result.estimate_before, result.estimate_after
    change = f" ({(after - before) / before:+.1%})" if before else ""
    print(
        "estimated items finding their chutes full: "
        f"{before:,.0f} before, {after:,.0f} after{change}"
    )
    print(
        f"chutes moved: {len(result.moved)} of {len(inst.free_chutes)} "
        f"({len(result.moved) / max(1, len(inst.free_chutes)):.1%})"
    )
    for d, name in enumerate(inst.destinations):
        now, new = sorted(inst.current[d]), list(result.chutes[d])
        if now != new:
            gained = [c for c in new if c not in inst.current[d]]
            lost = [c for c in now if c not in new]
            print(
                f"  {name}: {len(now)} -> {len(new)} chutes"
                + (f", gains {_chutes(gained)}" if gained else "")
                + (f", gives up {_chutes(lost)}" if lost else "")
            )
    for chute, was, now_name in result.moved:
        print(f"  chute {chute}: {was or '(none)'} -> {now_name or '(none)'}")


def _sim_plan(plan: SortPlan, chutes: Sequence[Sequence[int]]) -> SimPlan:
    from simulators.chute_day import DEFAULT_LOOP_S, Lanes, SimPlan, SimZone  # noqa: PLC0415
    from sorter.ports import Reason  # noqa: PLC0415

    assert plan.chute_capacity_items is not None
    assert plan.clear_interval_min is not None
    return SimPlan(
        lanes={
            d.name: Lanes(tuple(c), d.overflow)
            for d, c in zip(plan.destinations, chutes, strict=True)
        },
        machine_chutes=plan.loop_order or tuple(sorted(plan.machine_chutes)),
        capacity_items=plan.chute_capacity_items,
        clear_interval_min=plan.clear_interval_min,
        max_recirculations=plan.max_recirculations,
        zones=tuple(
            SimZone(z.name, z.chutes, z.operators, z.clear_interval_min) for z in plan.zones
        ),
        lap_s=plan.lap_s or DEFAULT_LOOP_S,
        max_recirc_chute=plan.functions.get(Reason.MAX_RECIRC),
    )


def _simulate(
    plan: SortPlan, result: Allocation, flow: Volumes, seed: int
) -> tuple[DayFigures, DayFigures]:
    """The day through the old and the new chutes, second by second (simulators/
    chute_day.py): the proof is what the line does, not the model's own estimate."""
    from simulators.chute_day import simulate_day  # noqa: PLC0415

    before = simulate_day(_sim_plan(plan, [d.chutes for d in plan.destinations]), flow.items, seed)
    after = simulate_day(_sim_plan(plan, result.chutes), flow.items, seed)
    return before, after


SIM_ROWS = (
    ("recirculations caused by full chutes", "full_recirculations"),
    ("items to the max_recirc chute", "gave_up"),
    ("items to overflow chutes", "overflow_items"),
    ("chute-full events", "chute_full_events"),
)


def _print_simulation(before: DayFigures, after: DayFigures, seed: int) -> None:
    print(
        f"simulated day (seed {seed}; second by second, chutes filled and emptied on the "
        "operators' rounds):"
    )
    print(f"  {'':<44}{'before':>10}{'after':>10}")
    for label, name in SIM_ROWS:
        old, new = getattr(before, name), getattr(after, name)
        change = f"  ({(new - old) / old:+.1%})" if old else ""
        print(f"  {label:<44}{old:>10,}{new:>10,}{change}")
    print(f"  {'peak fill of a chute':<44}{before.peak_fill:>10.0%}{after.peak_fill:>10.0%}")
    rows = zip(
        before.zones,
        before.operators,
        before.operator_items(),
        after.operator_items(),
        before.operator_peak_hour(),
        after.operator_peak_hour(),
        strict=True,
    )
    for name, ops, day_old, day_new, hour_old, hour_new in rows:
        label = f"items per operator, zone {name} ({ops})"
        print(f"  {label:<44}{day_old:>10,.0f}{day_new:>10,.0f}")
        label = "  in its busiest hour"
        print(f"  {label:<44}{hour_old:>10,.0f}{hour_new:>10,.0f}")


def _chutes(chutes: list[int]) -> str:
    return ", ".join(str(c) for c in chutes)


def _write_plan(plan: SortPlan, result: Allocation, out: Path, flow: Volumes) -> None:
    """The new plan, checked before it is written, and written whole or not at all."""
    from sorter.optimise.plan_out import optimised_plan_text  # noqa: PLC0415

    data: dict[str, Any] = tomllib.loads(Path(plan.path).read_text(encoding="utf-8-sig"))
    header = (
        f"Sort plan {plan.name}, chutes reallocated by `sorterd plan optimise` from\n"
        f"{Path(plan.path).name} and the volumes in {Path(flow.path).name}. Only the\n"
        "destinations' chutes differ; the original's comments are not carried over."
    )
    text = optimised_plan_text(data, result.chutes, str(out), header)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=out.parent, prefix=f".{out.name}.", delete=False
    ) as tmp:
        try:
            tmp.write(text)
        except OSError:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    try:
        os.replace(tmp.name, out)
    except OSError:
        Path(tmp.name).unlink(missing_ok=True)  # nothing written, not even the temporary
        raise
    print(f"wrote {out}: check-config accepts it")
