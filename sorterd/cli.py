"""`sorterd` command line (docs/interfaces.md section 1).

Exit codes: 0 success or clean stop, 1 invalid input or fatal error, 2 usage error.
A user's mistake (bad config, missing file, busy port) prints one clear message, never a
traceback; a traceback means a bug in sorterd.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

from sorter.addresses import parse_mqtt_urls
from sorter.config import ConfigError, Problem, Site, load_site
from sorter.errors import SorterdError
from sorter.telegram_options import PRESETS
from sorterd.optimise_cli import add_plan_parser, plan_command

__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


def _add_site(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, metavar="SITE.toml", help="site config file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sorterd",
        description="Control daemon for parcel sorters: scanners, PLC, sort plans, MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"sorterd {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_site(sub.add_parser("run", help="run the daemon in the foreground"))
    _add_demo(sub)
    _add_site(sub.add_parser("check-config", help="validate site config, sort plan and manifests"))
    p = sub.add_parser("top", help="a live view of the line from its MQTT topics")
    p.add_argument("-c", "--config", metavar="SITE.toml", help="take broker and prefix from here")
    p.add_argument("--mqtt", metavar="URL", help="broker URL (default: the site's)")
    p.add_argument("--prefix", metavar="P", help="topic prefix (default: the site's)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument(
        "--hub",
        nargs="?",
        const="",
        metavar="PREFIX",
        help="every line under this hub prefix on one screen (without PREFIX: the site's "
        "topic_prefix minus its last level)",
    )
    p.add_argument("--line", metavar="NAME", help="with --hub: the view of the line <hub>/NAME")
    _add_replay(sub)
    _add_simulate(sub)
    add_plan_parser(sub)
    _add_archive(sub)
    _add_web(sub)
    return parser


_Subparsers = argparse._SubParsersAction  # the type argparse gives no public name


def _add_demo(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="a whole simulated line on this machine, with live progress")
    p.add_argument("--duration", type=_positive, default=30.0, metavar="S", help="induction time")
    p.add_argument("--rate", type=_positive, default=20_000.0, metavar="ITEMS_PER_HOUR")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--mqtt", metavar="URL", help="use this broker instead of a local one")
    p.add_argument(
        "--heads", type=int, choices=range(1, 7), default=1, help="scanner heads in the tunnel"
    )
    p.add_argument("--read-rate", type=_share, default=1.0, metavar="0..1", help="per head")
    p.add_argument(
        "--kill-head-after", type=float, metavar="S", help="switch the last head off after S s"
    )
    p.add_argument(
        "--archive",
        metavar="POSTGRESQL_URL",
        help="also run an archiver into this database (password: SORTERD_ARCHIVE_PASSWORD) "
        "and print a trace command at the end (docs/archive.md)",
    )
    p.add_argument(
        "--lines",
        type=_hub_lines,
        metavar="N",
        help="a hub of N lines (1..4), each with its own daemon process, on one broker; "
        "--rate is each line's (docs/operations.md, Running a hub)",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="with --lines: the lines on a three-node NATS cluster instead of one broker",
    )
    p.add_argument(
        "--format",
        choices=[name for name in PRESETS if name != "custom"],  # custom needs a pattern
        default="index",
        help="telegram preset of every head, with its default settings (default index; "
        "presets without tracking id are matched by window, docs/tunnels.md)",
    )


def _add_replay(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="what-if: recorded scans through the sort plan, offline")
    _add_site(p)
    p.add_argument("scans", metavar="SCANS.csv", help="tracking_id,codes[,...] with a header")
    p.add_argument("--out", metavar="DECISIONS.csv", help="one row per item, in input order")
    p.add_argument("--report", metavar="FILE.html", help="a self-contained HTML report")
    p.add_argument(
        "--chute-capacity",
        type=int,
        default=400,
        metavar="ITEMS",
        help="items a chute holds, for the report's fill chart (default 400)",
    )
    p.add_argument(
        "--no-manifest",
        action="store_true",
        help="leave the site's manifests out (the live line applies them)",
    )


def _add_simulate(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="run a simulator alone, for commissioning")
    sim = p.add_subparsers(dest="device", required=True, metavar="DEVICE")
    for name, text in (
        ("line", "PLC, conveyor and scanners serving the site config's addresses"),
        ("plc", "the PLC alone, inducting items with no scanner"),
        ("scanner", "a scanner alone, sending telegrams for random items"),
    ):
        q = sim.add_parser(name, help=text)
        _add_site(q)
        q.add_argument("--rate", type=float, default=20_000.0, metavar="ITEMS_PER_HOUR")
        q.add_argument("--duration", type=float, default=None, metavar="S", help="default: forever")
        q.add_argument("--seed", type=int, default=1)
        if name != "scanner":
            q.add_argument(
                "--rtu",
                metavar="pty|DEVICE",
                help="serve the PLC as Modbus RTU on a new pty (its path is printed) or on a "
                "serial device, with the line settings of the site's plc.url",
            )
        if name == "scanner":
            q.add_argument(
                "--format",
                choices=PRESETS,
                default=None,
                help="telegram preset to send (default: the site's; another preset is "
                "sent with its default settings)",
            )
        if name == "line":
            q.add_argument(
                "--read-rate", type=_share, default=1.0, metavar="0..1", help="per scanner head"
            )
    _add_simulate_feeds(sim)


def _add_simulate_feeds(sim: _Subparsers[argparse.ArgumentParser]) -> None:
    q = sim.add_parser(
        "feeds",
        help="pre-advice and customs decisions on the site's [feeds] topics, for the items "
        "`simulate line` with the same --seed and --items-rate inducts (start both together)",
    )
    _add_site(q)
    q.add_argument(
        "--rate",
        type=_positive,
        default=None,
        metavar="ROWS_PER_S",
        help="rows a second in all: the line's own rows, filled up with pre-advice for "
        "parcels of other lines (default: the line's rows alone, as they fall due)",
    )
    q.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="S",
        help="default: until the line's first hour of items is covered (with --rate: forever)",
    )
    q.add_argument("--seed", type=int, default=1)
    q.add_argument(
        "--items-rate",
        type=_positive,
        default=20_000.0,
        metavar="ITEMS_PER_HOUR",
        help="the simulated line's induction rate (default 20000, as simulate line)",
    )


def _add_archive(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("archive", help="copy the lines' decisions and results into PostgreSQL")
    _add_site(p)
    p.add_argument(
        "--client-id",
        metavar="ID",
        help="MQTT client id (default: archive.client_id, else from the host name); "
        "archivers running at once need different ones",
    )
    p = sub.add_parser("trace", help="the archived history of one barcode, oldest first")
    _add_site(p)
    p.add_argument("code", metavar="CODE", help="a barcode, matched exactly")
    p.add_argument("--json", action="store_true", help="a JSON array (docs/interfaces.md s. 8)")
    p = sub.add_parser("report", help="a shift report from the archive")
    _add_site(p)
    p.add_argument("--from", dest="start", required=True, metavar="T", help="ISO 8601 time")
    p.add_argument("--to", dest="end", required=True, metavar="T", help="ISO 8601 time")
    p.add_argument("--html", metavar="FILE", help="also write an HTML report with charts")


def _add_web(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("web", help="the operator web console (docs/web.md)")
    _add_site(p)
    p.add_argument(
        "--add-user",
        metavar="NAME",
        help="write user NAME into [web] users with the password read from standard input, "
        "then exit",
    )
    p.add_argument(
        "--role", choices=("viewer", "operator"), help="the role of --add-user (required with it)"
    )


def _web(args: argparse.Namespace) -> int:
    from sorterd.web import add_user_command, run_web  # noqa: PLC0415

    site = load_site(args.config)
    if args.add_user is not None:
        if args.role is None:
            print("error: --add-user needs --role viewer|operator", file=sys.stderr)
            return EXIT_USAGE
        return add_user_command(site, args.add_user, args.role)
    if args.role is not None:
        print("error: --role goes with --add-user NAME", file=sys.stderr)
        return EXIT_USAGE

    async def serve() -> int:
        stop = asyncio.Event()
        _install_stop_signals(stop)
        return await run_web(site, stop)

    return asyncio.run(serve())


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number within 0..1, got {text!r}")
    return value


def _hub_lines(text: str) -> int:
    from sorterd.demo_hub import MAX_LINES  # noqa: PLC0415

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LINES:
        raise argparse.ArgumentTypeError(
            f"must be a whole number within 1..{MAX_LINES} (each line runs a daemon and its "
            f"simulators on this machine), got {text!r}"
        )
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def _version() -> str:
    from sorter import __version__  # noqa: PLC0415

    return __version__


def _install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _run_daemon(config: str) -> int:
    from sorterd.daemon import Daemon  # noqa: PLC0415  (keeps --help fast)

    site = load_site(config)
    daemon = Daemon(site)
    stop = asyncio.Event()
    _install_stop_signals(stop)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, daemon.request_reload)
    runner = asyncio.create_task(daemon.run())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stopper in done:
        daemon.request_stop()
        await runner
    else:
        stopper.cancel()
        runner.result()
    return EXIT_OK


def _top(args: argparse.Namespace) -> int:
    from sorterd.top import run_top  # noqa: PLC0415

    url: str | list[str] | None = args.mqtt
    prefix = args.prefix
    if args.config:
        cfg = load_site(args.config).config
        url = url or cfg.mqtt.url
        prefix = prefix or cfg.mqtt.topic_prefix
    if args.hub is not None or args.line is not None:
        return _top_hub(args, url, prefix)
    if not url or not prefix:
        print("error: give -c SITE.toml, or both --mqtt URL and --prefix P", file=sys.stderr)
        return EXIT_USAGE
    try:
        parse_mqtt_urls(url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return asyncio.run(run_top(url, prefix, once=args.once))


def _top_hub(args: argparse.Namespace, url: str | list[str] | None, prefix: str | None) -> int:
    """`top --hub [PREFIX] [--line NAME]`; `prefix` is the site's (or --prefix)."""
    from sorterd.top_hub import run_hub_top  # noqa: PLC0415

    if args.hub is None:
        print("error: --line needs --hub", file=sys.stderr)
        return EXIT_USAGE
    hub = args.hub or (prefix.rstrip("/").rpartition("/")[0] if prefix else "")
    if not url or not hub:
        print(
            "error: give --hub PREFIX and --mqtt URL, or -c SITE.toml for either",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return asyncio.run(run_hub_top(url, hub, line=args.line, once=args.once))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL


def _check_config(config: str) -> int:
    from sorter.plan import load_plan  # noqa: PLC0415

    problems = []
    try:
        site = load_site(config)
    except ConfigError as exc:
        problems.extend(exc.problems)
        site = None
    plan = None
    # A broken site config still names its plan: check that too, so that every problem
    # is listed at once (the contract's check-config), not the plan's after a second run.
    plan_path = site.plan_path if site is not None else _plan_path_of_broken_site(config)
    if plan_path is not None:
        try:
            plan = load_plan(plan_path)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if site is not None:
        problems.extend(_web_problems(site))
    if problems and site is not None and plan is None:
        problems.extend(_unreadable_manifests(site))
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return EXIT_FAIL
    assert site is not None
    assert plan is not None
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    cfg = site.config
    print(f"site {cfg.site.name} line {cfg.site.line}: OK")
    print(f"  plc {cfg.plc.url} (device {cfg.plc.device_id}, poll {cfg.plc.poll_interval_ms} ms)")
    for s in cfg.scanner:
        print(f"  scanner {s.name} {s.url} format {s.format}")
    nodes = ", ".join(e.shown for e in parse_mqtt_urls(cfg.mqtt.url))  # no password shown
    print(f"  mqtt {nodes} prefix {cfg.mqtt.topic_prefix}")
    if cfg.web is not None:
        print(
            f"  web {cfg.web.listen}{' (TLS)' if cfg.web.cert_file else ''} users {cfg.web.users}"
            f"{_no_users_yet(site)}"
        )
    if cfg.feeds.topics:
        feeds = cfg.feeds
        print(f"  feeds preadvice {feeds.preadvice or '-'}, customs {feeds.customs or '-'}")
    print(
        f"plan {plan.name} ({site.plan_path.name}): {len(plan.destinations)} destinations, "
        f"{len(plan.rules)} rules, {len(plan.machine_chutes)} chutes, "
        + (f"{len(plan.size_classes)} size classes, " if plan.size_classes else "")
        + f"balance {plan.balance}, max recirculations {plan.max_recirculations}"
        + (f", {len(plan.warnings)} warning(s)" if plan.warnings else "")
    )
    manifest_failed = _check_manifests(site, [d.name for d in plan.destinations])
    return EXIT_FAIL if manifest_failed else EXIT_OK


def _no_users_yet(site: Site) -> str:
    from sorterd.web.settings import users_of  # noqa: PLC0415

    return "" if users_of(site) else " (no users yet: add one with --add-user)"


def _web_problems(site: Site) -> list[Problem]:
    if site.config.web is None:
        return []
    from sorterd.web import web_problems  # noqa: PLC0415

    return web_problems(site)


def _plan_path_of_broken_site(config: str) -> Path | None:
    """The plan file a site config that did not validate names (`SORTERD_PLAN_FILE` or
    `[plan] file`, relative to the config), or None when it names none readably."""
    try:
        data = tomllib.loads(Path(config).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    section = data.get("plan")
    file = os.environ.get("SORTERD_PLAN_FILE")
    if file is None and isinstance(section, dict):
        file = section.get("file")
    if not isinstance(file, str) or not file:
        return None
    return Path(config).resolve().parent / file


def _unreadable_manifests(site: Site) -> list[Problem]:
    """Why the site's manifest files that cannot be read cannot, for a site whose plan did
    not load (its rows' destinations cannot be checked then; the files can)."""
    from sorter.manifest import ManifestSource  # noqa: PLC0415

    if not site.manifest_globs:
        return []
    reports = ManifestSource(site.manifest_globs).build([]).reports
    return [problem for r in reports if not r.readable for problem in r.problems]


def _check_manifests(site: Site, destinations: list[str]) -> bool:
    """Row counts and bad rows per manifest file; True when a file could not be read or
    has bad rows (the contract's check-config: a manifest is validated, every problem
    named by file and line; the daemon itself skips bad rows and routes by the rest)."""
    from sorter.manifest import ManifestSource  # noqa: PLC0415

    if not site.manifest_globs:
        return False
    manifest = ManifestSource(site.manifest_globs).build(destinations)
    failed = False
    for report in manifest.reports:
        if not report.readable:
            failed = True
            for problem in report.problems:
                print(f"error: {problem}", file=sys.stderr)
            continue
        failed = failed or report.bad_rows > 0
        for problem in report.problems[:20]:
            print(f"error: {problem}", file=sys.stderr)
        if report.bad_rows > 20:
            print(f"error: {report.path}: {report.bad_rows - 20} more bad rows", file=sys.stderr)
        print(f"manifest {report.path}: {report.rows:,} rows, {report.bad_rows:,} bad")
    print(
        f"manifests: {len(manifest.reports)} file(s), {manifest.rows:,} rows, "
        f"{manifest.size:,} distinct barcodes, {manifest.bad_rows:,} bad rows"
    )
    return failed


def _demo(args: argparse.Namespace) -> int:
    from sorterd.demo import run_demo  # noqa: PLC0415

    if args.lines is not None or args.cluster:
        return _hub_demo(args)
    return asyncio.run(
        run_demo(
            duration_s=args.duration,
            rate_per_h=args.rate,
            seed=args.seed,
            mqtt=args.mqtt,
            heads=args.heads,
            read_rate=args.read_rate,
            kill_head_after_s=args.kill_head_after,
            telegram_format=args.format,
            archive=args.archive,
        )
    )


def _hub_demo(args: argparse.Namespace) -> int:
    from sorterd.demo_hub import run_hub_demo  # noqa: PLC0415

    alone = [
        option
        for option, given in (
            ("--archive", args.archive is not None),
            ("--kill-head-after", args.kill_head_after is not None),
        )
        if given
    ]
    if alone:
        print(f"error: {', '.join(alone)} works with one line only (no --lines)", file=sys.stderr)
        return EXIT_USAGE
    if args.cluster and args.mqtt is not None:
        print("error: --cluster starts its own brokers; leave --mqtt out", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(
        run_hub_demo(
            lines=args.lines or 1,
            duration_s=args.duration,
            rate_per_h=args.rate,
            seed=args.seed,
            mqtt=args.mqtt,
            cluster=args.cluster,
            heads=args.heads,
            read_rate=args.read_rate,
            telegram_format=args.format,
        )
    )


def _replay(args: argparse.Namespace) -> int:
    from sorterd.replay_cli import replay  # noqa: PLC0415

    return replay(
        args.config,
        args.scans,
        args.out,
        args.report,
        args.chute_capacity,
        use_manifest=not args.no_manifest,
    )


def _simulate_feeds(args: argparse.Namespace) -> int:
    """Reads `[mqtt]` and `[feeds]` from the TOML itself: it publishes to the contract's
    topics, whatever the daemon's config model makes of the rest of the file."""
    from pathlib import Path  # noqa: PLC0415

    from simulators.feeds import line_plan, read_feed_site, simulate_feeds  # noqa: PLC0415
    from simulators.line import DEMO_PARAMS  # noqa: PLC0415

    site = read_feed_site(Path(args.config))
    hours = 1.0 if args.duration is None else args.duration / 3600
    count = int(args.items_rate * hours) + 1
    plan = line_plan(args.seed, args.items_rate, DEMO_PARAMS, count)

    async def run() -> int:
        stop = asyncio.Event()
        _install_stop_signals(stop)
        print(f"feeds: publishing to {site.preadvice} and {site.customs}", flush=True)
        feed_log = await simulate_feeds(
            site, plan, rows_per_s=args.rate, duration_s=args.duration, stop=stop
        )
        counts = feed_log.counts()
        print(
            f"feeds: {counts['rows']:,} pre-advice rows ({counts['filler']:,} of other "
            f"lines), {counts['customs']:,} customs decisions, {counts['bad']:,} bad rows, "
            f"{counts['duplicates']:,} duplicate deliveries acknowledged by the broker; "
            f"{feed_log.reconnects} reconnects",
            flush=True,
        )
        return EXIT_OK

    return asyncio.run(run())


def _simulate(args: argparse.Namespace) -> int:
    if args.device == "feeds":
        return _simulate_feeds(args)
    from simulators.line import simulate  # noqa: PLC0415

    try:
        return asyncio.run(
            simulate(
                args.device,
                load_site(args.config),
                rate_per_h=args.rate,
                duration_s=args.duration,
                seed=args.seed,
                rtu=getattr(args, "rtu", None),
                telegram_format=getattr(args, "format", None),
                read_rate=getattr(args, "read_rate", 1.0),
            )
        )
    except ValueError as exc:  # a site whose addresses the simulator cannot serve
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL


async def _run_archive(args: argparse.Namespace) -> int:
    from sorterd.archive import run_archive  # noqa: PLC0415

    site = load_site(args.config)
    stop = asyncio.Event()
    _install_stop_signals(stop)
    return await run_archive(site, args.client_id, stop)


def _trace(args: argparse.Namespace) -> int:
    from sorterd.trace import trace  # noqa: PLC0415

    return trace(load_site(args.config), args.code, as_json=args.json)


def _archive_report(args: argparse.Namespace) -> int:
    from sorterd.archive_report import report  # noqa: PLC0415

    return report(load_site(args.config), args.start, args.end, args.html)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "check-config": lambda args: _check_config(args.config),
    "run": lambda args: asyncio.run(_run_daemon(args.config)),
    "demo": _demo,
    "top": _top,
    "replay": _replay,
    "simulate": _simulate,
    "plan": plan_command,
    "archive": lambda args: asyncio.run(_run_archive(args)),
    "trace": _trace,
    "report": _archive_report,
    "web": _web,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sorterd.logs import setup_logging  # noqa: PLC0415

    # The demo shows its own progress; its log lines would only bury it.
    quiet = args.command == "demo" and "SORTERD_LOG_LEVEL" not in os.environ
    setup_logging(level="warning" if quiet else None)
    command = _COMMANDS.get(args.command)
    if command is None:
        return EXIT_USAGE
    try:
        return command(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except (SorterdError, OSError) as exc:
        _report(exc)
        return EXIT_FAIL
    except BaseExceptionGroup as group:
        # Raised out of a TaskGroup: the user's mistakes when every one of them is one.
        leaves = _leaves(group)
        if not all(isinstance(leaf, SorterdError | OSError) for leaf in leaves):
            raise
        for leaf in leaves:
            _report(leaf)
        return EXIT_FAIL


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _report(exc: BaseException) -> None:
    """`error: ...` on stderr: one line per problem of a ConfigError, else one line.

    SorterdError is every error raised on purpose (config, device, file, telegram) and
    OSError a busy port, a missing device or an unreadable file: the user's input, the
    line or the machine is wrong, not sorterd, so no traceback.
    """
    if isinstance(exc, ConfigError):
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
    elif isinstance(exc, SorterdError):
        print(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
    else:
        print(f"error: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
