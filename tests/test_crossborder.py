"""Cross-border decisions against an independent ground truth (tests/crossborder).

1. The generator itself: check digits on published examples, determinism, proportions.
2. `sorterd replay` on 10,000 generated items (imports, exports, returns, pre-advice,
   customs holds, every label form) decides exactly as the generator's truth says, with the
   site's manifests and with `--no-manifest`.
3. The live line (real daemon, PLC and scanner simulators, MQTT broker) and `replay` decide
   the same for the same items, manifests included.
"""

from __future__ import annotations

import csv
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from drivers.broker import LocalBroker
from simulators.conveyor import SimItem
from tests.crossborder import codes as c
from tests.crossborder.files import (
    PLAN,
    codes_cell,
    replay,
    scan_rows,
    write_manifest,
    write_scans,
    write_site,
)
from tests.crossborder.generator import SCENARIOS, Item, Truth, generate, quotas
from tests.linekit import FAST_LINE, line_with_daemon, wait_until

ITEMS = 10_000
SEED = 20_250


# --- 1. the generator ------------------------------------------------------------------


def test_check_digits_on_published_examples() -> None:
    assert c.s10_check_digit("12345678") == 5  # RB123456785GB, UPU S10
    assert c.gs1_check_digit("10614141123456789") == 7  # SSCC 106141411234567897
    assert c.gs1_check_digit("400638133393") == 1  # GTIN-13 4006381333931
    assert c.gs1_check_digit("06111001000100001") == 2  # the SSCC of docs/interfaces.md section 4
    assert c.ups_check_digit("999AA1012345678") == 4  # 1Z999AA10123456784
    assert c.dhl_check_digit("123456789") == 123456789 % 7


def test_label_forms_of_one_label() -> None:
    # AI 421 first (variable length, so GS before the next AI), then the SSCC; in the
    # human-readable form AI 421's value is the numeric country, then the postcode.
    elements = [("421", "72428001"), ("00", "106141411234567897")]
    payload = "42172428001\x1d00106141411234567897"
    assert c.render(elements, "]C1") == "]C1" + payload
    assert c.render(elements, "]e0") == "]e0" + payload
    assert c.render(elements, "GS") == "\x1d" + payload
    assert c.render(elements, "bare") == payload
    assert c.render(elements, "HRI") == "(421)72428001(00)106141411234567897"
    assert c.render([("00", "106141411234567897"), ("420", "20250")], "]C1") == (
        "]C10010614141123456789742020250"  # no GS after the fixed-length SSCC
    )
    assert not c.bare_possible([("421", "826SW1A1AA")])
    assert not c.bare_possible([("421", "0561000")])  # 10 digits: a DHL waybill's shape


def test_generated_codes_carry_their_check_digits() -> None:
    items = generate(3000, 5)
    valid_s10 = [code for it in items for code in it.codes if _is_s10(code)]
    assert valid_s10
    for it in items:
        if it.scenario in ("invalid", "invalid-beside-valid"):
            continue
        for code in it.codes:
            if _is_s10(code):
                body = code.removeprefix("]C0")
                assert int(body[10]) == c.s10_check_digit(body[2:10]), (it, code)
            if code.startswith("1Z"):
                assert int(code[17]) == c.ups_check_digit(code[2:17]), (it, code)


def _is_s10(code: str) -> bool:
    body = code.removeprefix("]C0")
    return len(body) == 13 and body[:2].isalpha() and body[2:11].isdigit() and body[11:].isalpha()


def test_generator_is_deterministic_per_seed() -> None:
    assert generate(2000, 7) == generate(2000, 7)
    assert generate(2000, 7) != generate(2000, 8)


def test_scenario_proportions_are_as_intended() -> None:
    items = generate(ITEMS, SEED)
    counts = Counter(it.scenario for it in items)
    assert counts == quotas(ITEMS)
    for name, scenario in SCENARIOS.items():
        assert counts[name] == round(ITEMS * scenario.share), name
        assert scenario.share >= 0.02, name  # every scenario a few percent at least
    forms = Counter(f for it in items for f in set(it.forms))
    for form in c.FORMS:
        assert forms[form] >= 0.02 * ITEMS, forms
    reasons = Counter(it.truth.reason for it in items)
    for reason in ("ok", "no_read", "invalid_code", "multi_read_conflict", "no_rule"):
        assert reasons[reason] >= 0.01 * ITEMS, reasons
    assert reasons["customs_hold"] == counts["customs-hold"]
    assert 0.08 * ITEMS <= sum(it.manifest_dependent for it in items) <= 0.2 * ITEMS


def test_every_destination_of_the_truth_is_in_the_plan() -> None:
    names = {d["name"] for d in tomllib.loads(PLAN.read_text())["destination"]}
    used = {t.destination for it in generate(ITEMS, SEED) for t in (it.truth, it.without_manifest)}
    assert used - {""} <= names
    # Every lane of the plan but the oversize one (the items carry no dimensions).
    assert names - used == {"MANUAL-OVERSIZE"}


def test_codes_and_rows_are_what_scanners_and_shippers_send() -> None:
    items = generate(ITEMS, SEED)
    keys = Counter(r["barcode"] for it in items for r in it.manifest)
    assert max(keys.values()) == 1  # one row per barcode: no item sees another's row
    for it in items:
        assert len(set(it.codes)) == len(it.codes), it
        for code in it.codes:
            # The replay cell and the scanner telegram carry codes byte-exact: no separator,
            # no blank, no control character but GS.
            assert code.isascii(), it
            assert not set(code) & set(";| "), it  # space: not in the GS1 character set
            assert all(ch == c.GS or ch.isprintable() for ch in code), it
        for r in it.manifest:
            assert any(r[k] for k in ("destination", "postcode", "country", "origin")), it
            assert any(r["barcode"] in code for code in it.codes), it


# --- 2. replay against the ground truth ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replayed:
    items: list[Item]
    with_manifest: list[dict[str, str]]
    without_manifest: list[dict[str, str]]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    folder = tmp_path_factory.mktemp("crossborder")
    items = generate(ITEMS, SEED)
    scans = write_scans(folder / "SCANS.csv", scan_rows(items))
    (folder / "manifests").mkdir()
    write_manifest(folder / "manifests" / "preadvice.csv", items)
    site = write_site(folder, str(folder / "manifests" / "*.csv"))
    return Replayed(
        items,
        replay(site, scans, folder / "DECISIONS.csv"),
        replay(site, scans, folder / "DECISIONS-no-manifest.csv", "--no-manifest"),
    )


@pytest.mark.timeout(900)
def test_replay_decides_as_the_ground_truth(replayed: Replayed) -> None:
    rows = replayed.with_manifest
    assert [r["tracking_id"] for r in rows] == [str(i + 1) for i in range(ITEMS)]
    wrong = _mismatches(replayed.items, rows, lambda it: it.truth)
    assert not wrong, _table(wrong, len(rows))


@pytest.mark.timeout(900)
def test_replay_without_manifest(replayed: Replayed) -> None:
    rows = replayed.without_manifest
    wrong = _mismatches(replayed.items, rows, lambda it: it.without_manifest)
    assert not wrong, _table(wrong, len(rows))
    # What changed is exactly what the pre-advice decides, and that is a real share.
    changed = {
        i
        for i, (a, b) in enumerate(zip(replayed.with_manifest, rows, strict=True))
        if _truth(a) != _truth(b)
    }
    dependent = {i for i, it in enumerate(replayed.items) if it.manifest_dependent}
    assert changed == dependent, _table(
        [
            (i, it, it.truth, _truth(rows[i]))
            for i, it in enumerate(replayed.items)
            if i in changed ^ dependent
        ],
        len(rows),
    )
    assert len(dependent) > 0.08 * ITEMS


def _truth(row: dict[str, str]) -> Truth:
    return Truth(row["destination"], row["reason"], row["barcode"])


Mismatch = tuple[int, Item, Truth, Truth]


def _mismatches(
    items: Sequence[Item], rows: Sequence[dict[str, str]], truth_of: Callable[[Item], Truth]
) -> list[Mismatch]:
    assert len(rows) == len(items)
    return [
        (i, it, truth_of(it), _truth(r))
        for i, (it, r) in enumerate(zip(items, rows, strict=True))
        if _truth(r) != truth_of(it)
    ]


def _table(wrong: Sequence[Mismatch], total: int, per_scenario: int = 3) -> str:
    """The first mismatches of each scenario, compactly: what to look at first."""
    by = Counter(f"{it.scenario}/{it.variant}" for _, it, _, _ in wrong)
    lines = [f"{len(wrong)} of {total} items differ from the ground truth:"]
    lines += [f"  {n:5d}  {key}" for key, n in by.most_common()]
    shown: Counter[str] = Counter()
    for i, it, want, got in wrong:
        if shown[it.scenario] >= per_scenario:
            continue
        shown[it.scenario] += 1
        rows = [{k: v for k, v in r.items() if v} for r in it.manifest]
        lines.append(f"row {i + 1} {it.scenario}/{it.variant} codes={it.codes!r} manifest={rows}")
        lines.append(f"    want {want.destination or '-':28} {want.reason:20} {want.barcode!r}")
        lines.append(f"    got  {got.destination or '-':28} {got.reason:20} {got.barcode!r}")
    return "\n".join(lines)


# --- 3. the live line and replay --------------------------------------------------------

LIVE_ITEMS = 300
LIVE_SEED = 41
# The fast test belt with the Casablanca machine's 240 chutes: a loop long enough for them,
# and chutes that never fill, so that chute state changes no reason (no no_chute).
LIVE_LINE = replace(FAST_LINE, loop_length_m=200.0, chute_capacity=None, empty_after_s=None)
LIVE_RATE = 36_000
# Reasons only a live line has: the scan came too late, or the item went round too often.
LIVE_ONLY = ("timeout", "max_recirc")


@pytest.mark.timeout(300)
async def test_live_line_and_replay_decide_the_same(broker: LocalBroker, tmp_path: Path) -> None:
    items = generate(LIVE_ITEMS, LIVE_SEED)
    folder = tmp_path / "manifests"
    folder.mkdir()
    rows = write_manifest(folder / "preadvice.csv", items)
    async with line_with_daemon(
        broker,
        tmp_path,
        params=LIVE_LINE,
        plan_path=PLAN,
        manifests=str(folder / "*.csv"),
    ) as rig:
        daemon, line, sub = rig.daemon, rig.line, rig.sub
        await wait_until(lambda: daemon.manifest is not None and daemon.manifest.rows == rows, 30)
        sims = [SimItem(codes=it.codes) for it in items]
        assert await line.conveyor.run(sims, LIVE_RATE) == LIVE_ITEMS
        assert await line.drain(120), line.ledger.summary()
        await wait_until(
            lambda: len(_unique(sub.of("decisions"))) >= daemon.pipeline.counters.decisions, 20
        )

    item_of = {
        (rec.tracking_id, p.seq): items[rec.index] for rec in line.ledger.items for p in rec.passes
    }
    decisions = _unique(sub.of("decisions"))
    assert {(d["tracking_id"], d["seq"]) for d in decisions} == set(item_of)
    compared = [d for d in decisions if d["reason"] not in LIVE_ONLY]
    assert len(decisions) - len(compared) <= max(3, len(decisions) // 50), Counter(
        d["reason"] for d in decisions
    )
    for d in compared:
        assert tuple(d["codes"]) == item_of[d["tracking_id"], d["seq"]].codes, d
    # The same items through replay, with the same site (plan, manifests, country), the
    # decision's recirculation count and its time (cut-offs apply as they did live).
    scans = write_scans(tmp_path / "SCANS.csv", [_scan_row(d, item_of) for d in compared])
    replayed = replay(tmp_path / "site.toml", scans, tmp_path / "DECISIONS.csv")
    assert len(replayed) == len(compared)
    differ = [
        (d, r)
        for d, r in zip(compared, replayed, strict=True)
        if _truth(r) != Truth(d["destination"], d["reason"], d["barcode"])
    ]
    assert not differ, "\n".join(f"live {d}\nreplay {r}" for d, r in differ[:10])
    _live_agrees_with_the_truth(compared, item_of)


def _unique(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Delivery is at least once: one message per id."""
    return list({m["id"]: m for m in messages}.values())


def _scan_row(d: dict[str, Any], item_of: dict[tuple[int, int], Item]) -> dict[str, object]:
    item = item_of[d["tracking_id"], d["seq"]]
    return {
        "tracking_id": d["tracking_id"],
        "codes": codes_cell(item.codes),
        "recirculations": d["recirculations"],
        "time": d["ts"],
    }


def _live_agrees_with_the_truth(
    decisions: list[dict[str, Any]], item_of: dict[tuple[int, int], Item]
) -> None:
    """The live decisions also match the ground truth; a destination past its cut-off (by
    the wall clock of the run) keeps its destination with reason after_cutoff."""
    for d in decisions:
        want = item_of[d["tracking_id"], d["seq"]].truth
        got = Truth(d["destination"], d["reason"], d["barcode"])
        if got.reason == "after_cutoff" and want.reason == "ok":
            got = replace(got, reason="ok")
        assert got == want, (d, want)


def test_scans_file_is_byte_exact(tmp_path: Path) -> None:
    """The SCANS cell keeps a GS1 FNC1 (0x1D) and parentheses exactly as read."""
    items = [it for it in generate(400, 3) if any(c.GS in code for code in it.codes)]
    assert items
    path = write_scans(tmp_path / "SCANS.csv", scan_rows(items))
    with path.open(newline="", encoding="utf-8") as f:
        cells = [row["codes"] for row in csv.DictReader(f)]
    assert cells == [";".join(it.codes) for it in items]
