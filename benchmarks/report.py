"""`python -m benchmarks.report`: regenerate BENCHMARKS.md's tables from the results files.

Every table sits between `<!-- generated:begin NAME -->` and `<!-- generated:end NAME -->`
and is rewritten from the newest results file (`benchmarks/results/*.json`, by the date
written inside) that has the benchmark the table shows; each table says which file, commit
and command it comes from. Text outside the markers is left alone. `--check` changes
nothing and exits 1 when the file is not what the results say (for CI).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import results
from benchmarks.results import Figure, figures_of

__all__ = [
    "DOC",
    "TABLES",
    "Renderer",
    "Source",
    "main",
    "num",
    "ratio",
    "regenerate",
    "render",
    "shown",
    "source_line",
    "with_unit",
]

DOC = results.ROOT / "BENCHMARKS.md"
_BLOCK = re.compile(
    r"(<!-- generated:begin (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- generated:end (?P=name) -->)",
    re.S,
)

Source = tuple[Path, dict[str, Any]]


def num(value: float, unit: str = "") -> str:
    """A figure as BENCHMARKS.md prints it: few digits, thousands separated."""
    if math.isnan(value):
        return "-"
    a = abs(value)
    if unit in ("items", "messages", "items/h") or a >= 100:
        text = f"{value:,.0f}"
    elif a >= 10:
        text = f"{value:.1f}"
    elif a >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return text


def with_unit(value: float, unit: str) -> str:
    if unit == "lookups/s":
        return f"{value / 1e6:.2f} M/s"
    if unit in ("items", "messages", "x", ""):
        return num(value, unit) + (" x" if unit == "x" else "")
    return f"{num(value, unit)} {unit}"


def ratio(value: float, base: float, better: str) -> str:
    """How the figure compares with a baseline, in the direction that reads as "better"."""
    if not base or not value:
        return "-"
    r = value / base if better != "lower" else base / value
    word = "better" if r >= 1 else "worse"
    shown = r if r >= 1 else 1 / r
    if shown < 10:
        return f"{shown:.2f} x {word}"
    return f"{shown:.1f} x {word}" if shown < 100 else f"{shown:,.0f} x {word}"


def shown(path: Path) -> str:
    return str(path.relative_to(results.ROOT)) if path.is_relative_to(results.ROOT) else str(path)


def source_line(path: Path, data: dict[str, Any], name: str) -> str:
    s = data["benchmarks"][name]
    flags = []
    if s.get("dirty"):
        flags.append("uncommitted changes")
    if s.get("params", {}).get("quick"):
        flags.append("**--quick: small sizes, a check, not the published figures**")
    extra = f"; {', '.join(flags)}" if flags else ""
    return (
        f"_Measured {s['started'][:16].replace('T', ' ')} UTC at commit `{data['short']}` "
        f"by `{s['command']}` ({s['seconds']:.0f} s; load average before "
        f"{s['load_avg']['before'][0]:.2f}{extra}); "
        f"results file `{shown(path)}`._"
    )


def _machine(sources: list[Source]) -> list[str]:
    path, data = sources[0]
    m, v, b = data["machine"], data["versions"], data.get("broker", {})
    return [
        f"- Machine: {results.describe_machine(m)} (affinity {m['affinity']} cores).",
        f"- Python {v['python']}, numba {v['numba']}, numpy {v['numpy']}, pymodbus "
        f"{v['pymodbus']}, paho-mqtt {v['paho-mqtt']}, aiomqtt {v['aiomqtt']}, SQLite "
        f"{v['sqlite']}; broker {b.get('kind', '?')} {b.get('version', '')}.",
        f"- Latest results file: `{shown(path)}` (commit `{data['short']}`"
        f"{', with uncommitted changes' if data.get('dirty') else ''}, written "
        f"{data['date'][:16].replace('T', ' ')} UTC).",
    ]


def _baseline_table(figs: dict[str, Figure], names: list[str], header: str = "figure") -> list[str]:
    """figure | result | baseline of the same run | result vs baseline | target."""
    lines = [
        f"| {header} | result | baseline (same run) | vs baseline | target |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        f = figs.get(name)
        if f is None:
            continue
        bases = f.baselines or ()
        first = True
        for b in bases or (None,):
            base_text = f"{b.label or b.name}: {with_unit(b.value, f.unit)}" if b else ""
            vs = ratio(f.value, b.value, f.better) if b else ""
            label = f.label if first else ""
            value = with_unit(f.value, f.unit) if first else ""
            target = f.target if first else ""
            lines.append(f"| {label} | {value} | {base_text} | {vs} | {target} |")
            first = False
    return lines


def _decide(s: dict[str, Any]) -> list[str]:
    figs = figures_of(s)
    p = s["params"]
    lines = [
        f"Batch: {p['batch_items']:,} items through the kernel, {p['reference_items']:,} "
        f"through each Python baseline; live: {p['live_items']:,} items one at a time.",
        "",
        *_baseline_table(
            figs,
            ["batch_rate", "batch_ratio_tuned", "batch_ratio_reference"]
            + [f"live_us_{q}" for q in ("p50", "p99", "max")]
            + ["cross_border_batch_rate", "cross_border_live_us_p99"],
        ),
    ]
    return lines


def _before(s: dict[str, Any]) -> list[str]:
    p = s["params"]
    figs = figures_of(s)
    line = sorted(
        (n for n in figs if n.startswith("line_")), key=lambda n: (int(n.split("@")[1]), n)
    )
    rates = p.get("line_rates_per_h") or []
    return [
        f"This checkout against {p['before']} (`--before`), each side in its own process, "
        f"alternately, {p['rounds']} rounds, best of each side"
        + (
            f"; the line at {', '.join(f'{r:,}' for r in rates)} items/h for "
            f"{p['line_duration_s']:.0f} s per rate, each tree with its own daemon and "
            "simulators."
            if rates
            else "."
        ),
        "",
        *_baseline_table(figs, ["batch_rate", "live_us_p50", "live_us_p99", *line]),
    ]


def _replay(s: dict[str, Any]) -> list[str]:
    return _baseline_table(figures_of(s), ["replay_s"])


_WAYS = ("sorterd", "dict_tuples", "sqlite", "dictreader")


def _manifest(s: dict[str, Any]) -> list[str]:
    from benchmarks.manifest import LABELS

    figs = figures_of(s)
    p = s["params"]
    rows = [
        ("load_s", "load"),
        ("rss_b_per_row", "resident once loaded (VmRSS after - before)"),
        ("peak_b_per_row", "resident at the peak of the load (VmHWM - VmRSS before)"),
        ("one_lookup_us_p50", "one lookup from Python, p50"),
        ("one_lookup_us_p99", "one lookup from Python, p99"),
        ("loop_lookups_per_s", "lookups one at a time"),
    ]
    lines = [
        f"{p['rows']:,} rows ({p['file_mb']:.0f} MB of CSV); each way in a process of its "
        f"own, memory read from outside; lookups: {p['lookups']:,} queries, half present.",
        "",
        "| figure | " + " | ".join(LABELS[w] for w in _WAYS) + " | target |",
        "|---|" + "---|" * (len(_WAYS) + 1),
    ]
    for name, label in rows:
        f = figs.get(name)
        if f is None:
            continue
        values = [with_unit(f.value, f.unit)]
        for w in _WAYS[1:]:
            b = f.baseline(w)
            values.append(with_unit(b.value, f.unit) if b else "")
        lines.append(f"| {label} | " + " | ".join(values) + f" | {f.target} |")
    batch = figs.get("batch_lookups_per_s")
    if batch is not None:
        lines.append(
            f"| batch lookups (`find_batch`) | {with_unit(batch.value, batch.unit)} | | | | "
            f"{batch.target} |"
        )
    disk = figs.get("sqlite_disk_b_per_row")
    if disk is not None:
        lines.append(f"| on disk | | | {with_unit(disk.value, disk.unit)} | | |")
    load = figs.get("load_s")
    if load is not None:
        ratios = ", ".join(f"{LABELS[b.name]} {b.value / load.value:.1f} x" for b in load.baselines)
        lines += ["", f"Load time of each baseline over the index's: {ratios}."]
    return lines


def _manifest_daemon(s: dict[str, Any]) -> list[str]:
    figs = figures_of(s)
    if "daemon_rss_b_per_row" not in figs:
        return ["_Not in this run (`--no-daemon-memory`)._"]
    d = s["details"]["daemon"]
    lines = [
        f"`sorterd run` with a {s['params']['rows']:,}-row manifest and without one "
        f"(VmRSS {d['with']['rss_kb'] / 1024:.0f} MB and {d['without']['rss_kb'] / 1024:.0f}"
        f" MB once online; VmHWM {d['with']['hwm_kb'] / 1024:.0f} MB and "
        f"{d['without']['hwm_kb'] / 1024:.0f} MB):",
        "",
        *_baseline_table(figs, ["daemon_rss_b_per_row", "daemon_peak_b_per_row", "daemon_load_s"]),
    ]
    return lines


def _journal(s: dict[str, Any]) -> list[str]:
    fs = s["filesystems"]["journal"]
    modes = s["details"]["modes"]
    lines = [
        f"Journal on {fs.get('fstype') or fs['stat_type']} (`{fs.get('source', '')}` mounted "
        f"at `{fs.get('mount', '')}`, {fs.get('options', '')}), under "
        f"`{s['params'].get('journal_dir', fs['path'])}`.",
        "",
        "| journal | items | us per item | x of none | request step p50 / p99 |",
        "|---|---|---|---|---|",
    ]
    for mode, r in modes.items():
        st = r["step_us"]
        lines.append(
            f"| {mode} | {r['items']:,} | {r['per_item_us']:.1f} | {r['ratio']:.1f} | "
            f"{st['p50']:.0f} / {st['p99']:.0f} us |"
        )
    return lines


def _line(s: dict[str, Any]) -> list[str]:
    p = s["params"]
    broker = s["details"]["broker"]
    lines = [
        f"{p['duration_s']:.0f} s of induction per rate, poll {p['poll_interval_ms']} ms, "
        f"belt {p['belt_speed_m_s']:g} m/s; broker {broker['kind']} {broker.get('version', '')}"
        f"; daemon journal on {_fs(s, 'daemon journal')}"
        + (
            "; **every scan before its request** (`--scans-first`, a diagnosis)."
            if p.get("scan_before_request_probability") == 1.0
            else "."
        ),
        "",
        "| rate/h | inducted / drained | PLC req->reply ms p50 / p99 / max | reference host "
        "p50 / p99 / max | p99 / reference | daemon decision ms p50 / p99 | late | "
        "recirc_late | CPU % of a core (reference) | CPU s / 1000 items | peak RSS MB "
        "(reference) | MQTT backlog max | start-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in s["details"]["rates"]:
        d, ref = row["daemon"], row.get("reference")
        lat = d["plc_latency_ms"]
        dec = d["decision_latency_ms"]
        drained = f"{d['drained_items']:,}" + ("" if d["drained"] else " (not all)")
        if ref:
            r = ref["plc_latency_ms"]
            ref_text = f"{r['p50']:.2f} / {r['p99']:.2f} / {r['max']:.2f}"
            ratio_text = f"{lat['p99'] / r['p99']:.2f} x" if r["p99"] else "-"
            cpu_ref = f" ({ref['cpu_share'] * 100:.1f})"
            rss_ref = f" ({ref['rss_peak_mb']:.0f})"
        else:
            ref_text = ratio_text = "-"
            cpu_ref = rss_ref = ""
        lines.append(
            f"| {d['rate']:,.0f} | {d['inducted']:,} / {drained} | {lat['p50']:.2f} / "
            f"{lat['p99']:.2f} / {lat['max']:.2f} | {ref_text} | {ratio_text} | "
            f"{dec.get('p50', 0):.2f} / {dec.get('p99', 0):.2f} | {d['late_replies']} | "
            f"{d['recirc_late']} | {d['cpu_share'] * 100:.1f}{cpu_ref} | "
            f"{d['cpu_s_per_1000']:.2f} | {d['rss_peak_mb']:.0f}{rss_ref} | "
            f"{d['mqtt_backlog_max']} | {d['startup_s']:.2f} |"
        )
    for row in s["details"]["rates"]:
        if (n := row.get("daemon_normal")) is None:
            continue
        full, normal = row["daemon"]["plc_latency_ms"], n["plc_latency_ms"]
        lines += [
            "",
            f"What the default durability costs at {n['rate']:,.0f}/h, same run: with "
            f'`[journal] synchronous = "normal"` (no disk sync before the PLC hears of a step) '
            f"PLC ms p50 / p99 / max {normal['p50']:.2f} / {normal['p99']:.2f} / "
            f'{normal["max"]:.2f}, late {n["late_replies"]}; with the default "full" '
            f"{full['p50']:.2f} / {full['p99']:.2f} / {full['max']:.2f}.",
        ]
    for row in s["details"]["rates"]:
        if (n := row.get("daemon_no_read_ahead")) is None:
            continue
        with_it, without = row["daemon"], n
        ref = row.get("reference") or {}
        ref = ref if "polls_per_s" in ref else {}
        lines += [
            "",
            f"What polling on a read ahead of its request buys at {n['rate']:,.0f}/h, same "
            f"run: with `[plc] poll_on_read = false` (header reads at the poll interval only, "
            f"as the reference host) PLC ms p50 / p99 / max "
            f"{_triple(without['plc_latency_ms'])}, late {without['late_replies']}, "
            f"{without.get('polls_per_s', 0):.0f} header reads/s; with it (the default) "
            f"{_triple(with_it['plc_latency_ms'])}, {with_it.get('polls_per_s', 0):.0f} "
            f"header reads/s"
            + (f"; the reference host {ref['polls_per_s']:.0f}/s." if ref else "."),
        ]
    return lines


def _triple(q: dict[str, float]) -> str:
    return f"{q['p50']:.2f} / {q['p99']:.2f} / {q['max']:.2f}"


def _fs(s: dict[str, Any], role: str) -> str:
    fs = s.get("filesystems", {}).get(role)
    if not fs:
        return "?"
    return f"{fs.get('fstype') or fs['stat_type']} ({fs.get('source', '')})"


def _rtu(s: dict[str, Any]) -> list[str]:
    p = s["params"]
    lines = [
        f"{p['framing']}; {p['rate_per_h']:,} items/h for {p['duration_s']:.0f} s, then a "
        f"burst of {p['burst_items']} items; poll {p['poll_interval_ms']} ms.",
        "",
        "| line | request -> reply ms p50 / p99 | reference host p50 / p99 | p99 / reference "
        "| late | burst, measured | model (frame sizes and gaps, 64 items a cycle) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["details"]["bauds"]:
        lat, ref = r["plc_latency_ms"], r.get("reference")
        if ref:
            q = ref["plc_latency_ms"]
            ref_text = f"{q['p50']:.1f} / {q['p99']:.1f}"
            ratio_text = f"{lat['p99'] / q['p99']:.2f} x" if q["p99"] else "-"
        else:
            ref_text = ratio_text = "-"
        lines.append(
            f"| {r['serial']} | {lat['p50']:.1f} / {lat['p99']:.1f} | {ref_text} | "
            f"{ratio_text} | {r['late_replies']} | {r['burst']['items_per_h']:,.0f} items/h | "
            f"{r['model_items_per_h']:,.0f} items/h |"
        )
    return lines


def _faults(s: dict[str, Any]) -> list[str]:
    d = s["details"]
    lines = [
        f"Scale {s['params']['scale']:g}"
        + (f", faults matching `{s['params']['select']}`" if s["params"].get("select") else "")
        + f"; pytest exit {d['pytest_exit']} ({d['failed']} failed).",
        "",
        "| fault | inducted | requests | decisions | confirmations | results | "
        "duplicates dropped | dropped by the PLC | lost | recover s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["reports"]:
        recover = "-" if r.get("recover_s") is None else f"{r['recover_s']:.2f}"
        cells = [
            str(r.get(k, "")) for k in ("inducted", "requests", "decisions", "confirmations",
                                        "results", "duplicates_dropped", "dropped_by_plc",
                                        "lost")
        ]  # fmt: skip
        lines.append(f"| {r['fault'].strip()} | " + " | ".join(cells) + f" | {recover} |")
    return lines


def _feeds(s: dict[str, Any]) -> list[str]:
    p, row = s["params"], s["details"]["run"]
    lat, last, pub = row["plc_latency_ms"], row["feeds_last"], row["published"]
    base = row.get("baseline")
    applied = (
        f"{int(last.get('rows_applied', 0)):,} ({'all' if row['all_applied'] else 'not all'})"
        if row["with_feeds"] and last
        else "- (daemon without [feeds])"
    )
    lag = (
        f"{last.get('lag_ms_p50', 0):.1f} / {last.get('lag_ms_p99', 0):.1f} "
        f"(worst {row['lag_ms_p99_max'] or 0:.1f})"
        if row["with_feeds"] and last
        else "-"
    )
    base_text = (
        f"{base['plc_latency_ms']['p50']:.2f} / {base['plc_latency_ms']['p99']:.2f}"
        if base
        else "-"
    )
    return [
        f"{p['rows_per_s']:,.0f} rows/s asked for {p['duration_s']:.0f} s while the line runs "
        f"{p['rate_per_h']:,.0f} items/h (belt {p['belt_speed_m_s']:g} m/s); broker "
        f"{s['details']['broker']['kind']} {s['details']['broker'].get('version', '')}.",
        "",
        "| rows published (filler) | rows/s achieved | rows applied | apply lag ms p50 / p99 "
        "(worst p99) | line req->reply ms p50 / p99 | without the feeds p50 / p99 | late | "
        "daemon CPU % of a core |",
        "|---|---|---|---|---|---|---|---|",
        f"| {pub['rows']:,} ({pub['filler']:,}) | {row['rows_per_s']:,.0f} | {applied} | {lag} | "
        f"{lat['p50']:.2f} / {lat['p99']:.2f} | {base_text} | {row['late_replies']} | "
        f"{row['cpu_share'] * 100:.1f} |",
    ]


def _hub(s: dict[str, Any]) -> list[str]:
    p = s["params"]
    lines = [
        f"Every line its own `sorterd run` on one broker ({s['details']['broker']['kind']} "
        f"{s['details']['broker'].get('version', '')}), {p['duration_s']:g} s of induction "
        f"per scenario, belt {p['belt_speed_m_s']:g} m/s, poll {p['poll_interval_ms']} ms.",
        "",
        "| lines x items/h | PLC req->reply ms p99 per line (target <= 10) | late | all "
        "drained | daemons' CPU together, cores (target <= 0.5 at 4 x 40,000) | simulators' "
        "CPU, cores | all online s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in s["details"]["scenarios"]:
        per = row["per_line"]
        lines.append(
            f"| {row['lines']} x {row['rate']:,.0f} | "
            + " / ".join(f"{r['plc_latency_ms']['p99']:.2f}" for r in per)
            + f" | {sum(r['late_replies'] for r in per)} | "
            f"{'yes' if all(r['drained'] for r in per) else 'NO'} | {row['cpu_cores']:.2f} | "
            f"{row['simulators_cpu_cores']:.2f} | {row['startup_s']:.1f} |"
        )
    return lines


def _optimise(s: dict[str, Any]) -> list[str]:
    """The plan optimiser: solve time and gap at size, then the Casablanca day by the
    simulation (benchmarks/optimise.py)."""
    p, d = s["params"], s["details"]
    size = d["size"]
    status, solve_s = size["status"]
    lines = [
        f"Size: a synthetic plan of {p['chutes']} chutes, {p['destinations']} destinations "
        f"(four zones, a together and an apart group) and {p['items']:,} items over 24 "
        f"hours; {p['workers']} solver threads, time limit {p['time_limit_s']:g} s.",
        "",
        "| figure | result | target |",
        "|---|---|---|",
        f"| solve, {p['chutes']} chutes x {p['destinations']} destinations x 24 h | "
        f"{solve_s:.2f} s ({status}) | <= {p['time_limit_s']:g} s |",
        f"| gap to the solver's bound (chute counts) | {size['gap'] * 100:.2f} % | reported |",
        f"| `sorterd plan optimise` in all (process, simulation included) | "
        f"{size['process_s']:.1f} s | |",
        "",
        "The generated Casablanca day (config/casablanca/volumes.csv) through the shipped "
        "plan and the optimised one, by the simulated day (simulators/chute_day.py), not the "
        "model's estimate:",
        "",
        "| move weight | recirculations caused by full chutes | items to max_recirc | "
        "chute-full events | chutes moved (of 240) | busiest operator, items/day | "
        "estimate (model) |",
        "|---|---|---|---|---|---|---|",
    ]
    for weight in p["move_weights"]:
        day = d.get(f"casablanca_w{weight:g}")
        if day is None:
            continue
        (rb, ra), (gb, ga), (eb, ea) = day["simulated"], day["gave_up"], day["full_events"]
        ops = day.get("operators", [])
        busy = [max((r[k] for r in ops), default=0) for k in ("before", "after")]
        moved = day["moved"][0]
        est_b, est_a = day["estimate"]
        cut = f" ({100 * (1 - ra / rb):.1f} % less)" if rb else ""
        lines.append(
            f"| {weight:g} | {rb:,} -> {ra:,}{cut} | {gb:,} -> {ga:,} | {eb:,} -> {ea:,} | "
            f"{moved} ({100 * moved / 240:.1f} %) | {busy[0]:,} -> {busy[1]:,} | "
            f"{est_b:,.0f} -> {est_a:,.0f} |"
        )
    lines += ["", "Targets: recirculations caused by full chutes down >= 50 %, <= 10 % moved."]
    return lines


def _archive_trace_rows(s: dict[str, Any]) -> list[str]:
    p, d = s["params"], s["details"]
    rows = d.get("rows_generated", p["rows"])
    asked = "" if rows == p["rows"] else f" (of {p['rows']:,} asked: what the disk held)"
    size = f", {d['table_bytes'] / 2**30:.1f} GiB" if "table_bytes" in d else ""
    t = d["trace_us"]
    # "reused, generated at ..." when the run took the cached archive (benchmarks/archive_gen.py)
    origin = d.get("origin") or f"generated in {d['generate_s']:.0f} s"
    return [
        f"| trace of one code, {rows:,} rows{asked} over {p['days']} days ({origin}{size}) "
        f"| p50 {t['p50'] / 1000:.2f} ms, p99 "
        f"{t['p99'] / 1000:.2f} ms ({d['found']} of the codes found) | <= 50 ms at "
        "50,000,000 rows |",
        *_archive_trace_kinds(d),
        f"| report of one day ({d['report_items']:,} items) | {d['report_s']:.2f} s | <= 5 s |",
    ]


def _archive_trace_kinds(d: dict[str, Any]) -> list[str]:
    """Trace warm and cold, and the search of every partition beside it (results of
    benchmarks/archive.py from schema version 2 on; none before)."""

    def ms(key: str) -> str:
        t = d[key]
        return f"p50 {t['p50'] / 1000:.2f} ms, p99 {t['p99'] / 1000:.2f} ms"

    rows = []
    if "trace_warm_us" in d:
        rows.append(f"| trace, the same code again (warm) | {ms('trace_warm_us')} | |")
    if "trace_cold_us" in d:
        rows.append(
            f"| trace, cold (server restarted, its files out of the page cache, a new "
            f"connection) | {ms('trace_cold_us')} | <= 50 ms at 50,000,000 rows |"
        )
    if "scan_us" in d:
        rows.append(
            "| every partition searched, as before the codes table: random, warm, cold | "
            f"{ms('scan_us')}; {ms('scan_warm_us')}; "
            f"{ms('scan_cold_us') if 'scan_cold_us' in d else '-'} | |"
        )
    return rows


def _load_after(s: dict[str, Any]) -> list[str]:
    """The machine is shared: the load when the run ended says how busy it was meanwhile."""
    return [f"Load average when the run ended: {s['load_avg']['after'][0]:.2f}.", ""]


def _archive(s: dict[str, Any]) -> list[str]:
    p, d = s["params"], s["details"]
    lag = d["lag_us"]
    return [
        *_load_after(s),
        "| figure | result | target (issue 15) |",
        "|---|---|---|",
        f"| ingest, one archiver: {p['messages']:,} messages drained, counted from its start "
        f"| {d['ingest_per_s']:,.0f} messages/s ({d['steady_per_s']:,.0f} from the first row; "
        f"start {d['startup_s']:.2f} s) | >= 20,000 |",
        f"| lag at {p['lines']} lines x {p['items_per_h']:,.0f} items/h "
        f"({d['live_messages']:,} messages) | p50 {lag['p50'] / 1e6:.3f} s, p99 "
        f"{lag['p99'] / 1e6:.3f} s | p99 <= 2 s |",
        *_archive_trace_rows(s),
    ]


def _archive_trace(s: dict[str, Any]) -> list[str]:
    return [
        *_load_after(s),
        "| figure | result | target (issue 15) |",
        "|---|---|---|",
        *_archive_trace_rows(s),
    ]


def _web(s: dict[str, Any]) -> list[str]:
    """The web console (benchmarks/web.py): the wall in headless Chromium."""
    p, d = s["params"], s["details"]
    return [
        f"{d['chutes_on_wall']} chutes on the wall, the simulated line at "
        f"{d['items_per_h']:,.0f} items/h (its P/stats), {p['duration_s']:g} s measured after "
        f"{p['warmup_s']:g} s; the page {d['page_px']} px high in a {d['screen_px']} px window.",
        "",
        "| figure | result | target |",
        "|---|---|---|",
        f"| renders of the wall per second (updates coalesced) | {d['renders_per_s']:.2f} | <= 4 |",
        f"| browser main thread busy | {d['main_thread_busy'] * 100:.1f} % | < 20 % |",
        f"| `sorterd web` process CPU (one line) | {d['server_cpu'] * 100:.1f} % of a core | "
        "<= 5 % |",
        "",
        f"Of the main thread's busy share, the page's own code: {d['script_busy'] * 100:.2f} %.",
    ]


def _soak(s: dict[str, Any]) -> list[str]:
    """The compressed soak (benchmarks/soak.py): one line per minute, then the run."""
    p, row = s["params"], s["details"]["soak"]
    lat, over = row["plc_latency_ms"], row["over_ms"]
    lines = [
        f"`sorterd run` at {p['rate']:,.0f} items/h for {p['minutes']:g} min "
        f"({s['details']['broker']['kind']}, poll {p['poll_interval_ms']} ms, belt "
        f"{p['belt_speed_m_s']:g} m/s): inducted {row['inducted']:,}, drained "
        f"{row['drained_items']:,}; PLC req->reply ms p50 / p99 / max {lat['p50']:.2f} / "
        f"{lat['p99']:.2f} / {lat['max']:.2f}; replies over 100 ms: {over['100']}, over 500 ms: "
        f"{over['500']}; late {row['late_replies']}; never answered {row['no_reply_passes']}; "
        f"CPU {row['cpu_share'] * 100:.1f} % of a core; RSS at the end {row['rss_end_mb']:.1f} "
        f"MB, peak {row['rss_peak_mb']:.1f} MB.",
        "",
        "| minute | inducted | replies | PLC ms p50 / p99 / max | late | never answered | "
        "RSS MB (peak) | CPU % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in row["samples"]:
        lines.append(
            f"| {m['minute']:.1f} | {m['inducted']:,} | {m['replies']:,} | {m['p50_ms']:.2f} / "
            f"{m['p99_ms']:.2f} / {m['max_ms']:.2f} | {m['late']} | {m['no_reply']} | "
            f"{m['rss_mb']:.1f} ({m['hwm_mb']:.1f}) | {m['cpu_share'] * 100:.1f} |"
        )
    return lines


def _failover(s: dict[str, Any]) -> list[str]:
    """The connected node of a NATS cluster killed (benchmarks/failover.py), then the node
    leading JetStream."""
    p, d = s["params"], s["details"]

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        f"{p['rate_per_h']:,.0f} items/h, {p['broker']}; {p['lead_s']:g} s of traffic, the "
        f"node killed (SIGKILL), {p['tail_s']:g} s more; an observer on the third node.",
        "",
        "| run | node killed | publishing again s (target <= 5) | connected again s | lost | "
        "ids seen twice (dropped by id) | late replies | decisions / results |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(d["runs"] + d.get("leader_runs", []), 1):
        killed = r.get("killed", "the daemon's node")
        lines.append(
            f"| {i} | {killed} | "
            f"{secs(r['publishing_again_s'])} | {secs(r['reconnect_s'])} | {r['lost']} | "
            f"{r['duplicates']} | {r['late_replies']} | {r['decisions']} / {r['results']} |"
        )
    return lines


Renderer = Callable[[dict[str, Any]], list[str]]
TABLES: dict[str, tuple[str, Renderer]] = {
    "decide": ("decide", _decide),
    "replay": ("replay", _replay),
    "manifest": ("manifest", _manifest),
    "manifest-daemon": ("manifest", _manifest_daemon),
    "journal": ("journal", _journal),
    "line": ("line", _line),
    "feeds": ("feeds", _feeds),
    "rtu": ("rtu", _rtu),
    "faults": ("faults", _faults),
    "before": ("before", _before),
    "hub": ("hub", _hub),
    "optimise": ("optimise", _optimise),
    "web": ("web", _web),
    "archive": ("archive", _archive),
    "archive-trace": ("archive-trace", _archive_trace),
    "soak": ("soak", _soak),
    "failover": ("failover", _failover),
}


def render(name: str, sources: list[Source]) -> str:
    if not sources:
        return "_No results file yet: `make bench`, then `make bench-report`._\n"
    if name == "machine":
        return "\n".join(_machine(sources)) + "\n"
    if name not in TABLES:
        raise KeyError(f"BENCHMARKS.md has a generated block {name!r} that no table renders")
    bench, renderer = TABLES[name]
    for path, data in sources:
        section = data["benchmarks"].get(bench)
        if section is not None:
            body = [source_line(path, data, bench), "", *renderer(section)]
            return "\n".join(body) + "\n"
    return f"_Not measured yet: `make bench BENCH_ARGS='--only {bench}'`._\n"


def regenerate(text: str, sources: list[Source]) -> str:
    def replace(m: re.Match[str]) -> str:
        return m.group(1) + render(m.group("name"), sources) + m.group(4)

    return _BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--results-dir", type=Path, default=results.RESULTS_DIR)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    sources = results.latest(args.results_dir)
    text = args.doc.read_text()
    new = regenerate(text, sources)
    names = [m.group("name") for m in _BLOCK.finditer(text)]
    if args.check:
        if new != text:
            print(f"{args.doc} is not what the results files say: run make bench-report")
            return 1
        return 0
    args.doc.write_text(new)
    newest = sources[0][0].name if sources else "none"
    print(f"{args.doc.name}: {len(names)} generated blocks from {newest} and older files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
