"""The feed simulator's log held against what the daemon published (issue 14).

The feed publisher (simulators/feeds.py) records every message it sent, with the wall-clock
times it first went out and the broker acknowledged it; the daemon publishes its decisions
(with their `ts`) and its P/stats `feeds` block. Two checks, each returning what is
wrong, one line per problem:

- `feed_count_problems`: every good row and customs decision applied exactly once
  (`rows_applied`, `customs_applied` equal what was acknowledged, each id once however
  often it was delivered) and every bad row counted (once per delivery: a bad row has no
  id to tell a repeat by, so after a resend or a restart the count may be higher).
- `feed_decision_problems`: every decision made with the rows that had arrived before
  it. The independent oracle (tests/oracle) decides each item again with its barcodes'
  feed state at the decision's `ts` folded over the file manifest's rows. A row is
  surely there `margin_s` after the broker acknowledged it (the contract applies within
  100 ms; the margin is the test's allowance for a loaded machine), and, when that falls
  in an outage of the daemon, `margin_s` after the daemon was back; a row sent after
  the decision is surely not there; between the two the decision may have seen it or
  not, and either is right.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from simulators.feeds import FeedLog, FeedRow, Published, RowState, fold
from tests.oracle import Oracle, classify
from tests.oracle.reference import ManifestRow, parse_manifest_row

__all__ = ["feed_count_problems", "feed_decision_problems", "possible_states", "stats_bad_rows"]

Message = Mapping[str, Any]
Outage = tuple[float, float]  # (down, back) in wall-clock seconds


def stats_bad_rows(feeds: Mapping[str, Any]) -> int:
    """P/stats `feeds.bad_rows`: a count, or counts by reason."""
    bad = feeds.get("bad_rows", 0)
    return sum(bad.values()) if isinstance(bad, Mapping) else int(bad)


def feed_count_problems(
    feed_log: FeedLog, feeds: Mapping[str, Any], *, bad_exact: bool = True
) -> list[str]:
    """The daemon's P/stats `feeds` block against what the broker acknowledged."""
    want = feed_log.counts()
    problems = []
    for key, stat in (("rows", "rows_applied"), ("customs", "customs_applied")):
        if feeds.get(stat) != want[key]:
            problems.append(
                f"P/stats feeds.{stat} = {feeds.get(stat)}, published {want[key]} distinct ids "
                f"({want['duplicates']} duplicate deliveries, {want['retried']} messages resent)"
            )
    bad = stats_bad_rows(feeds)
    if (bad != want["bad"]) if bad_exact else (bad < want["bad"]):
        problems.append(f"P/stats feeds.bad_rows = {bad}, published {want['bad']} bad rows")
    return problems


def _ts(decision: Message) -> float:
    return datetime.fromisoformat(str(decision["ts"]).replace("Z", "+00:00")).timestamp()


def _sure_s(p: Published, margin_s: float, outages: Sequence[Outage]) -> float:
    """When the row is surely applied: acknowledged + margin, or after an outage of the
    daemon it fell into, margin after the daemon was back."""
    if p.acked_s is None:
        return float("inf")
    due_s = p.acked_s + margin_s
    for down_s, back_s in outages:
        if p.acked_s < back_s and due_s > down_s:
            due_s = max(due_s, back_s + margin_s)
    return due_s


def possible_states(
    timeline: Sequence[tuple[Published, FeedRow]],
    at_s: float,
    margin_s: float,
    outages: Sequence[Outage] = (),
) -> list[RowState | None]:
    """The states the barcode may have had for a decision at `at_s`: the rows surely
    there, then each prefix of those that may be (one connection delivers in order).
    None: no row at all had arrived (the file manifest's row stands)."""
    sure: list[FeedRow] = []
    maybe: list[FeedRow] = []
    for p, row in timeline:
        if p.first_sent_s is None or p.first_sent_s > at_s:
            continue
        (sure if _sure_s(p, margin_s, outages) <= at_s else maybe).append(row)
    out: list[RowState | None] = []
    for k in range(len(maybe) + 1):
        rows = sure + maybe[:k]
        out.append(fold(rows) if rows else None)
    return out


def _row_of(
    barcode: str, state: RowState | None, file_row: ManifestRow | None, names: Mapping[str, object]
) -> ManifestRow | None:
    """The oracle's manifest row for a barcode in a feed state over its file row."""
    if state is None:
        return file_row
    if state.fields is None:  # customs words only: on top of the file's row, if any
        base = file_row or ManifestRow(barcode)
        return dataclasses.replace(base, hold=state.held)
    parsed = parse_manifest_row({**state.fields, "barcode": barcode}, names)
    base = parsed or ManifestRow(barcode)
    return dataclasses.replace(base, hold=state.held)


def _item_barcodes(codes: Sequence[str], fed: set[str]) -> list[str]:
    found = []
    for code in codes:
        barcode = classify(code).barcode
        if barcode in fed and barcode not in found:
            found.append(barcode)
    return found


def _matches(oracle: Oracle, codes: tuple[str, ...], d: Message) -> tuple[bool, tuple[Any, ...]]:
    """Whether the oracle, in its current manifest, gives the decision; and what it gives."""
    if d["reason"] == "timeout" and not d["codes"]:
        want = oracle.decide((), d["recirculations"], timeout=True)
    else:
        want = oracle.decide(codes, d["recirculations"])
    reason = "no_chute" if want.reason == "ok" and d["reason"] == "no_chute" else want.reason
    if (d["destination"], d["reason"], d["barcode"]) != (want.destination, reason, want.barcode):
        return False, tuple(want)
    plan = oracle.plan
    if reason == "ok":
        dest = plan.destinations[want.destination]
        return d["chute"] in (*dest.chutes, *dest.overflow), tuple(want)
    if reason == "no_chute":
        return d["chute"] == plan.functions["no_chute"], tuple(want)
    return d["chute"] == want.chute, tuple(want)


def feed_decision_problems(
    feed_log: FeedLog,
    pairs: Sequence[tuple[tuple[str, ...], Message]],
    plan_path: Path,
    *,
    margin_s: float = 1.0,
    outages: Sequence[Outage] = (),
    file_rows: Sequence[Mapping[str, str]] = (),
    site_country: str = "MA",
) -> list[str]:
    """Each decision as the oracle makes it with the feed state its item's barcodes may
    have had at the decision's `ts` (see the module docstring). `pairs`: (codes the
    scanner sent for the pass, decision), tests/ledgercheck.py `decision_pairs`."""
    oracle = Oracle(plan_path.read_text(encoding="utf-8"), site_country, file_rows)
    files = dict(oracle.manifest)
    fed = feed_log.barcodes()
    timelines = {barcode: feed_log.timeline(barcode) for barcode in fed}
    names = oracle.plan.destinations
    problems = []
    for codes, d in pairs:
        at_s = _ts(d)
        barcodes = _item_barcodes(codes, fed)
        choices = [possible_states(timelines[b], at_s, margin_s, outages) for b in barcodes]
        seen = []
        for combo in itertools.product(*choices):
            oracle.manifest = dict(files)
            for barcode, state in zip(barcodes, combo, strict=True):
                row = _row_of(barcode, state, files.get(barcode), names)
                if row is None:
                    oracle.manifest.pop(barcode, None)
                else:
                    oracle.manifest[barcode] = row
            oracle.flags.clear()
            ok, want = _matches(oracle, codes, d)
            if ok:
                break
            seen.append(want)
        else:
            got = (d["destination"], d["chute"], d["reason"], d["barcode"])
            problems.append(
                f"({d['tracking_id']}, {d['seq']}) at {d['ts']}: {got} for {codes}; with the "
                f"feeds' rows of {barcodes} that may have arrived the oracle says {seen}"
            )
    return problems
