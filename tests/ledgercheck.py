"""The simulated line's ledger held against what the daemon published.

The simulators keep the ground truth (simulators/conveyor.py, `Ledger`): for each pass of
each item, the request the PLC wrote, what every scanner head sent for it, the reply the
PLC latched and the confirmation the PLC wrote. The end-to-end tests and the fault suite
hold the daemon's messages against it with these functions; each returns what is wrong, one
line per problem, and an empty list when nothing is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from simulators.conveyor import Ledger, PassRecord
from sorter.ports import NOREAD, Confirmation
from tests.oracle import Oracle

Message = Mapping[str, Any]
Key = tuple[int, int]  # (tracking_id, seq): one pass of one item

# What the daemon decides for a request whose scan it did not get in time (the pipeline
# asks decide_timeout): max_recirc and out_of_range still come first, as with a scan.
DECIDED_WITHOUT_SCAN = frozenset({"timeout", "max_recirc", "out_of_range"})


def _key(msg: Message) -> Key:
    return (int(msg["tracking_id"]), int(msg["seq"]))


def passes_by_key(ledger: Ledger) -> dict[Key, list[PassRecord]]:
    """Every pass the PLC asked about. A list per key: a PLC restarted with its counters
    reset may give an item's later pass a seq one of its earlier passes had."""
    out: dict[Key, list[PassRecord]] = defaultdict(list)
    for rec in ledger.items:
        for p in rec.passes:
            out[(rec.tracking_id, p.seq)].append(p)
    return out


def codes_sent(p: PassRecord) -> tuple[str, ...]:
    """The codes the scanner heads sent for a pass, merged as the daemon merges them;
    empty for a no-read, and when no telegram for it left the scanner."""
    return tuple(c for c in (p.codes_read or ()) if c != NOREAD)


def pairing_problems(ledger: Ledger, decisions: Iterable[Message]) -> list[str]:
    """Never a wrong pairing: a decision carries the codes the scanner sent for that very
    pass of that very item, or none. Checked for every decision, those without codes too:
    one without codes is for a pass whose read was a no-read or never left the scanner, or
    it was decided without its scan (reason timeout; the read came late, or was lost with
    a link or a process), never decided on a read of nothing while codes were sent."""
    passes = passes_by_key(ledger)
    problems = []
    for d in decisions:
        candidates = passes.get(_key(d))
        if not candidates:
            problems.append(f"decision for a request the PLC never made: {d}")
            continue
        codes = tuple(d["codes"])
        sent = [codes_sent(p) for p in candidates]
        if codes:
            if codes not in sent:
                reads = [p.reads for p in candidates]
                problems.append(f"wrong pairing: {_key(d)} carries {codes}, the heads sent {reads}")
        elif all(sent) and d["reason"] not in DECIDED_WITHOUT_SCAN:
            problems.append(f"{_key(d)} decided {d['reason']} on no codes, while {sent} were sent")
    return problems


def result_problems(
    ledger: Ledger, results: Iterable[Message], decisions: Iterable[Message]
) -> list[str]:
    """Each result says what the PLC confirmed for that pass, as the PLC wrote it (outcome,
    chute_actual, recirculations), and carries the chute its decision assigned."""
    confirmed: dict[Key, list[Confirmation]] = defaultdict(list)
    for rec in ledger.items:
        for c in rec.confirmations:
            confirmed[(c.tracking_id, c.seq)].append(c)
    assigned = {_key(d): d["chute"] for d in decisions}
    problems = []
    for r in results:
        key = _key(r)
        got = (r["outcome"], r["chute_actual"], r["recirculations"])
        plc = [(c.outcome.word, c.chute_actual, c.recirculations) for c in confirmed.get(key, ())]
        if not plc:
            problems.append(f"result for a confirmation the PLC never wrote: {r}")
        elif got not in plc:
            problems.append(f"result {key} says {got}, the PLC confirmed {plc}")
        if key in assigned and r["chute_assigned"] != assigned[key]:
            problems.append(
                f"result {key}: chute_assigned {r['chute_assigned']}, decided {assigned[key]}"
            )
    return problems


def decision_pairs(
    ledger: Ledger, decisions: Iterable[Message]
) -> list[tuple[tuple[str, ...], Message]]:
    """(codes the scanner sent for the pass, decision message) for every decision."""
    passes = passes_by_key(ledger)
    pairs = []
    for d in decisions:
        candidates = passes.get(_key(d), [])
        pairs.append((codes_sent(candidates[-1]) if candidates else (), d))
    return pairs


def plan_problems(
    pairs: Sequence[tuple[tuple[str, ...], Message]],
    plan_path: Path,
    site_country: str | None = "MA",
) -> list[str]:
    """Whether each decision is what the sort plan gives the codes of its item, by the
    independent oracle (tests/oracle: the plan read again from its TOML, the codes
    classified again; nothing shared with sorter.decide).

    Destination, reason and barcode must be the oracle's; the chute the oracle's function
    chute for every reason but ok and no_chute, which depend on the line's chute state
    (full, disabled, load, round robin): an ok chute must belong to the destination, a
    no_chute must be the plan's no_chute chute for a destination the oracle finds. The
    items carry no cut-off times or measures here (the plans these lines run have none)."""
    problems: list[str] = []
    oracle = Oracle(plan_path.read_text(encoding="utf-8"), site_country)
    plan = oracle.plan
    for codes, d in pairs:
        oracle.flags.clear()
        if d["reason"] == "timeout" and not d["codes"]:
            want = oracle.decide((), d["recirculations"], timeout=True)
        else:
            want = oracle.decide(tuple(codes), d["recirculations"])
        got = (d["destination"], d["reason"], d["barcode"])
        reason = want.reason
        if reason == "ok" and d["reason"] == "no_chute":
            reason = "no_chute"  # the line had none of its chutes usable
        if got != (want.destination, reason, want.barcode):
            problems.append(f"{_key(d)}: {got}, the oracle says {tuple(want)} for {codes}")
        elif reason == "ok":
            dest = plan.destinations[want.destination]
            if d["chute"] not in (*dest.chutes, *dest.overflow):
                problems.append(f"{_key(d)}: chute {d['chute']} is not {want.destination}'s")
        elif reason == "no_chute":
            if d["chute"] != plan.functions["no_chute"]:
                problems.append(f"{_key(d)}: no_chute to chute {d['chute']}")
        elif d["chute"] != want.chute:
            problems.append(f"{_key(d)}: {reason} to chute {d['chute']}, not {want.chute}")
    return problems
