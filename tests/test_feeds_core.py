"""The live hub feeds' core (sorter.feeds, sorter.manifest.delta): payload parsing, row
checks identical to the manifest CSV's, the live index against a plain-dict model of
docs/interfaces.md section 7's semantics, and the decider on it."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sorter.decide import Decider
from sorter.feeds import (
    MAX_FEED_MESSAGE_BYTES,
    BadRow,
    CustomsUpdate,
    FeedBatch,
    FeedRow,
    LiveManifest,
    Source,
    _customs_update,
    _parse_each,
    _preadvice_row,
    _string_objects,
    parse_customs,
    parse_preadvice,
)
from sorter.kernel import ChuteState
from sorter.manifest import Manifest, ManifestRow, encode_keys, parse_manifest, unpack_row
from sorter.plan import compile_plan, letters_index, load_plan
from sorter.ports import Reason
from sorter.postcode import NO_POSTCODE, postcode_features
from tests.test_manifest import (
    CUSTOMS_CHUTE,
    DEMO_PLAN,
    GS1_RABAT,
    NO_RULE_CHUTE,
    S10_CP_MA,
    S10_RB_GB,
)

DESTS = ["CASABLANCA", "RABAT", "MARRAKECH"]
MA = letters_index("MA")
HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def rows_of(payload: object) -> FeedBatch:
    return parse_preadvice(json.dumps(payload).encode())


def reasons(batch: FeedBatch) -> list[str]:
    return [b.reason for b in batch.bad]


def files_of(text: str, names: list[str] | None = None) -> Manifest:
    names = DESTS if names is None else names
    part, report = parse_manifest(text.encode(), "m.csv", names)
    return Manifest([part], [report], names)


# --- 1. parsing ------------------------------------------------------------------------


def test_one_object_or_an_array() -> None:
    one = rows_of({"barcode": "A1", "destination": "RABAT", "id": "x"})
    assert one == FeedBatch([FeedRow("A1", "RABAT", None, None, None, None, "x")], [], [])
    many = rows_of([{"barcode": "A1", "country": "ma"}, {"barcode": " B2 ", "postcode": "K1A 0B1"}])
    assert [(r.barcode, r.country, r.postcode) for r in many.rows] == [
        ("A1", "MA", None),
        ("B2", None, "K1A 0B1"),
    ]
    assert many.bad == []


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"destination": "RABAT"}, "no_barcode"),
        ({"barcode": "   ", "destination": "RABAT"}, "no_barcode"),
        ({"barcode": 12, "destination": "RABAT"}, "wrong_type"),
        ({"barcode": "A1", "postcode": 20250}, "wrong_type"),
        ({"barcode": "A1", "country": None}, "wrong_type"),
        ({"barcode": "A1", "country": "MA", "weight_g": 5}, "wrong_type"),
        ({"barcode": "A1", "country": "MA", "id": 7}, "wrong_type"),
        ({"barcode": "A1", "destination": ["RABAT"]}, "wrong_type"),
        ({"barcode": "X" * 33, "country": "MA"}, "bad_value"),
        ({"barcode": "A 1", "country": "MA"}, "bad_value"),
        ({"barcode": "Aé", "country": "MA"}, "bad_value"),
        ({"barcode": "A1", "country": "XX"}, "bad_value"),
        ({"barcode": "A1", "country": "MAR"}, "bad_value"),
        ({"barcode": "A1", "country": "ß"}, "bad_value"),  # "SS" only once upper-cased
        ({"barcode": "A1", "origin": "EU"}, "bad_value"),
        ({"barcode": "A1", "country": "MA", "service": "E"}, "bad_value"),
        ({"barcode": "A1", "country": "MA", "customs": "maybe"}, "bad_value"),
        ({"barcode": "A1", "country": "MA", "weight_g": "1.5"}, "bad_value"),
        ({"barcode": "A1", "country": "MA", "weight_g": "²"}, "bad_value"),
        ({"barcode": "A1"}, "no_routing"),
        ({"barcode": "A1", "postcode": " - ", "customs": "hold"}, "no_routing"),
    ],
)
def test_a_bad_row_is_refused_and_the_rest_applied(row: dict[str, object], reason: str) -> None:
    batch = rows_of(
        [{"barcode": "GOOD1", "country": "MA"}, row, {"barcode": "GOOD2", "origin": "cn"}]
    )
    assert reasons(batch) == [reason]
    assert [r.barcode for r in batch.rows] == ["GOOD1", "GOOD2"]
    assert batch.bad[0].detail


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "bad_json"),
        (b"{not json", "bad_json"),
        (b'{"barcode": "A\xff", "country": "MA"}', "bad_json"),
        (b"[" * 100_000, "bad_json"),
        (b'"A1"', "wrong_type"),
        (b"42", "wrong_type"),
        (b"null", "wrong_type"),
    ],
)
def test_a_bad_message_is_one_bad_row(payload: bytes, reason: str) -> None:
    for parse in (parse_preadvice, parse_customs):
        batch = parse(payload)
        assert reasons(batch) == [reason]
        assert batch.rows == []
        assert batch.customs == []


def test_an_oversized_message_applies_nothing() -> None:
    row = json.dumps({"barcode": "A1", "country": "MA"}).encode()
    payload = b"[" + b",".join([row] * (MAX_FEED_MESSAGE_BYTES // len(row) + 1)) + b"]"
    assert len(payload) > MAX_FEED_MESSAGE_BYTES
    for parse in (parse_preadvice, parse_customs):
        batch = parse(payload)
        assert reasons(batch) == ["too_large"]
        assert batch.rows == []
        assert batch.customs == []


def test_array_items_that_are_not_objects() -> None:
    batch = rows_of([1, {"barcode": "A1", "country": "MA"}, "x", None])
    assert reasons(batch) == ["wrong_type"] * 3
    assert len(batch.rows) == 1


def test_customs_messages() -> None:
    assert parse_customs(b'{"barcode": "A1", "status": "hold", "id": "c1"}') == FeedBatch(
        [], [CustomsUpdate("A1", True, "c1")], []
    )
    batch = parse_customs(
        json.dumps(
            [
                {"barcode": "A1", "status": "Release"},
                {"barcode": "A2", "status": "held"},
                {"barcode": "A3"},
                {"status": "hold"},
                {"barcode": "A4", "status": 1},
                {"barcode": "A5", "status": "hold", "id": 9},
            ]
        ).encode()
    )
    assert batch.customs == [CustomsUpdate("A1", False, None)]
    assert reasons(batch) == [
        "unknown_status",
        "unknown_status",
        "no_barcode",
        "wrong_type",
        "wrong_type",
    ]


def test_customs_words_of_a_row() -> None:
    words = {"hold": "hold", "YES": "hold", "no": "release", "Clear": "release",
             "release": "release", "none": "release", "": None}  # fmt: skip
    for word, meaning in words.items():
        batch = rows_of({"barcode": "A1", "country": "MA", "customs": word})
        assert batch.rows[0].customs == meaning, word


# --- 2. the same checks as the manifest CSV --------------------------------------------

_TEXT = st.sampled_from(
    ["", " ", "MA", "ma", "cn", "XX", "EU", "ß", "E", "EE", "hold", "yes", "Release", "none",
     "maybe", "20250", "K1A 0B1", "1000-001", "-", "12345678901", "é1", "5", "1.5", "²",
     "RABAT", "rabat", "AGADIR", "CASABLANCA", ' "q" ', "a,b", "x\ny"]
)  # fmt: skip
_COLUMNS = ("destination", "postcode", "country", "origin", "service", "customs", "weight_g")


@st.composite
def raw_rows(draw: st.DrawFn) -> dict[str, str]:
    row = {c: draw(_TEXT) for c in _COLUMNS if draw(st.booleans())}
    row["barcode"] = draw(st.sampled_from(["A1", " A2 ", "", "Aé", "X" * 33, "B 3", "RB1"]))
    return row


def _csv_of(row: dict[str, str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    header = ["barcode", *_COLUMNS]
    writer.writerow(header)
    writer.writerow([row.get(c, "") for c in header])
    return buffer.getvalue().encode()


@HYPOTHESIS
@given(raw_rows())
def test_rows_are_checked_as_the_csv_checks_them(row: dict[str, str]) -> None:
    """A row the CSV parser takes is taken from the feed, with the same fields; a row it
    refuses is refused (by the parser, or at apply for a destination not in the plan)."""
    part, report = parse_manifest(_csv_of(row), "m.csv", DESTS)
    live = LiveManifest(None, DESTS)
    batch = parse_preadvice(json.dumps(row).encode())
    applied = live.apply(batch, 1)
    assert (report.rows == 1) == (applied.rows == 1), (report.problems, batch, applied)
    if report.rows:
        csv_row = unpack_row(int(part.postcode[0]), int(part.packed[0]))
        assert live.lookup(row["barcode"].strip(" ")) == csv_row


_JSON_VALUES = st.one_of(
    _TEXT, st.sampled_from(["A1", "MA", "hold", "RABAT", "\ud800", " "]), st.none(),
    st.integers(), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
)  # fmt: skip


@HYPOTHESIS
@given(
    st.one_of(
        st.lists(
            st.one_of(
                st.dictionaries(
                    st.sampled_from(["barcode", *_COLUMNS, "id", "other"]), _JSON_VALUES
                ),
                _JSON_VALUES,
            ),
            max_size=4,
        ),
        st.dictionaries(st.sampled_from(["barcode", *_COLUMNS, "id"]), _JSON_VALUES),
    ),
    st.sampled_from(["", " ", "\n\t"]),
)
def test_the_fast_decoding_gives_what_the_checks_one_by_one_give(
    payload: object, blank: str
) -> None:
    """A message of string values is decoded by msgspec (`_string_objects`), anything else
    by json.loads and the checks one value at a time: the same rows and bad rows whichever
    way it goes."""
    raw = (blank + json.dumps(payload) + blank).encode()
    one_by_one = _parse_each(raw, _preadvice_row, lambda batch: batch.rows)
    assert parse_preadvice(raw) == one_by_one
    customs = _parse_each(raw, _customs_update, lambda batch: batch.customs)
    assert parse_customs(raw) == customs


def test_the_usual_message_takes_the_fast_decoding() -> None:
    rows = [{"barcode": f"A{i}", "country": "MA", "id": f"i{i}"} for i in range(3)]
    assert _string_objects(json.dumps(rows).encode()) == rows
    assert _string_objects(b' {"barcode": "A1"}') == [{"barcode": "A1"}]
    assert _string_objects(b'[{"barcode": 1}]') is None  # the checks say why
    assert _string_objects(b"[1]") is None
    assert _string_objects(b"\xff") is None


# --- 3. the live index against a plain-dict model --------------------------------------

BARCODES = ["A1", "B2", "C3", "D4", "E5"]
IDS = ["i1", "i2", "i3", None]
NAMES = ["CASABLANCA", "RABAT", "MARRAKECH", "AGADIR"]


@dataclass
class Model:
    """docs/interfaces.md section 7, as plainly as it can be said."""

    names: list[str]
    files: dict[str, tuple[ManifestRow, str | None]] = field(default_factory=dict)
    feed: dict[str, tuple[ManifestRow, str | None]] = field(default_factory=dict)
    override: dict[str, bool] = field(default_factory=dict)  # customs messages' decisions
    seen: set[str] = field(default_factory=set)

    def expected(self, barcode: str) -> tuple[ManifestRow | None, Source | None]:
        base, name = self.feed.get(barcode) or self.files.get(barcode) or (None, None)
        hold = self.override.get(barcode)
        source = (
            Source.CUSTOMS if hold is not None
            else Source.FEED if barcode in self.feed
            else Source.FILE if barcode in self.files
            else None
        )  # fmt: skip
        if base is None:
            held = ManifestRow(NO_POSTCODE, 0, -1, -1, -1, True, -1)
            return (held if hold else None), source
        dest = self.names.index(name) if name in self.names else -1
        row = base._replace(destination=dest)
        if hold is not None:
            row = row._replace(customs_hold=hold)
        return row, source


def _row_fields(row: FeedRow) -> ManifestRow:
    pc, digits = postcode_features(row.postcode) if row.postcode else (NO_POSTCODE, 0)
    return ManifestRow(
        pc, digits, letters_index(row.country or ""), -1, -1, row.customs == "hold",
        letters_index(row.origin or ""),
    )  # fmt: skip


feed_rows = st.builds(
    FeedRow,
    barcode=st.sampled_from(BARCODES),
    destination=st.sampled_from([*NAMES, None]),
    postcode=st.sampled_from(["20250", "K1A0B1", None]),
    country=st.sampled_from(["MA", "CN", None]),
    origin=st.sampled_from(["MA", None]),
    customs=st.sampled_from(["hold", "release", None]),
    id=st.sampled_from(IDS),
)
customs_updates = st.builds(
    CustomsUpdate, st.sampled_from(BARCODES), st.booleans(), st.sampled_from(IDS)
)
file_rows = st.lists(
    st.tuples(st.sampled_from(BARCODES), st.sampled_from([*NAMES[:3], ""]),
              st.sampled_from(["", "hold"]), st.sampled_from(["", "20000"])),
    max_size=5,
)  # fmt: skip
operations = st.lists(
    st.one_of(
        st.tuples(st.just("rows"), st.lists(feed_rows, max_size=4)),
        st.tuples(st.just("customs"), st.lists(customs_updates, max_size=3)),
        st.tuples(st.just("files"), file_rows),
        st.tuples(st.just("plan"), st.permutations(NAMES).map(lambda p: p[:3])),
        st.tuples(st.just("retire"), st.lists(st.sampled_from(BARCODES), max_size=3)),
    ),
    max_size=25,
)


def _apply_rows(live: LiveManifest, model: Model, rows: list[FeedRow]) -> None:
    applied = live.apply(FeedBatch(rows, [], []), 1)
    expected_rows = expected_dups = expected_bad = 0
    for row in rows:
        if row.id is not None and row.id in model.seen:
            expected_dups += 1
            continue
        if row.destination is not None and row.destination not in model.names:
            expected_bad += 1
            continue
        if row.customs is not None:
            model.override.pop(row.barcode, None)  # the latest customs word wins
        model.feed[row.barcode] = (_row_fields(row), row.destination)
        if row.id is not None:
            model.seen.add(row.id)
        expected_rows += 1
    assert (applied.rows, applied.duplicates, len(applied.bad)) == (
        expected_rows, expected_dups, expected_bad,
    )  # fmt: skip


def _apply_customs(live: LiveManifest, model: Model, updates: list[CustomsUpdate]) -> None:
    applied = live.apply(FeedBatch([], updates, []), 1)
    expected = 0
    for update in updates:
        if update.id is not None and update.id in model.seen:
            continue
        model.override[update.barcode] = update.hold
        if update.id is not None:
            model.seen.add(update.id)
        expected += 1
    assert applied.customs == expected


def _replace_files(live: LiveManifest, model: Model, rows: list[tuple[str, str, str, str]]) -> None:
    # The files are loaded under their own names (NAMES' order), as a reload would.
    text = "barcode,destination,customs,postcode,country\n" + "".join(
        f"{b},{d},{c},{p},MA\n" for b, d, c, p in rows
    )
    live.replace_files(files_of(text, NAMES))
    model.files = {}
    for b, d, c, p in rows:
        pc, digits = postcode_features(p) if p else (NO_POSTCODE, 0)
        model.files[b] = (ManifestRow(pc, digits, MA, -1, -1, c == "hold", -1), d or None)


def _check(live: LiveManifest, model: Model) -> None:
    for barcode in [*BARCODES, "Z9"]:
        row, source = model.expected(barcode)
        assert live.lookup(barcode) == row, barcode
        assert live.source_of(barcode) == source, barcode
        assert live.lookup_source(barcode) == (row, source), barcode
    assert live.delta_rows == len(set(model.feed) | set(model.override))


@HYPOTHESIS
@given(operations)
def test_the_live_index_follows_the_model(ops: list[tuple[str, object]]) -> None:
    live = LiveManifest(None, NAMES[:3])
    model = Model(NAMES[:3])
    for kind, arg in ops:
        if kind == "rows":
            _apply_rows(live, model, arg)  # type: ignore[arg-type]
        elif kind == "customs":
            _apply_customs(live, model, arg)  # type: ignore[arg-type]
        elif kind == "files":
            _replace_files(live, model, arg)  # type: ignore[arg-type]
        elif kind == "plan":
            live.set_destinations(arg)  # type: ignore[arg-type]
            model.names = list(arg)  # type: ignore[call-overload]
        else:
            live.retire(arg)  # type: ignore[arg-type]
            for barcode in arg:  # type: ignore[attr-defined]
                model.feed.pop(barcode, None)
                model.override.pop(barcode, None)
        _check(live, model)
    # The batch lookup says what the lookups one at a time say.
    queries = [*BARCODES, "Z9", "", "é"]
    source, postcode, packed = live.lookup_batch(encode_keys(queries))
    for i, barcode in enumerate(queries[:6]):
        row, expected_source = model.expected(barcode)
        assert source[i] == [None, Source.FILE, Source.FEED, Source.CUSTOMS].index(expected_source)
        if row is not None:
            assert unpack_row(int(postcode[i]), int(packed[i])) == row
    assert list(source[6:]) == [0, 0]


def test_semantics_in_words() -> None:
    files = files_of("barcode,destination,customs\nF1,RABAT,hold\nF2,CASABLANCA,\n")
    live = LiveManifest(files, DESTS)
    assert live.lookup("F1") == ManifestRow(NO_POSTCODE, 0, -1, -1, 1, True, -1)
    assert live.source_of("F1") is Source.FILE
    # A release clears a hold from a file.
    live.apply(parse_customs(b'{"barcode": "F1", "status": "release", "id": "c1"}'), 1)
    assert live.lookup("F1") == ManifestRow(NO_POSTCODE, 0, -1, -1, 1, False, -1)
    assert live.source_of("F1") is Source.CUSTOMS
    # A row without a customs value replaces the fields; the customs decision stays.
    live.apply(rows_of({"barcode": "F1", "destination": "MARRAKECH"}), 2)
    assert live.lookup("F1") == ManifestRow(NO_POSTCODE, 0, -1, -1, 2, False, -1)
    # A later row with customs = hold holds again, and decides as a feed row.
    live.apply(rows_of({"barcode": "F1", "destination": "MARRAKECH", "customs": "hold"}), 3)
    assert live.lookup("F1") == ManifestRow(NO_POSTCODE, 0, -1, -1, 2, True, -1)
    assert live.source_of("F1") is Source.FEED
    # The same id twice applies once.
    applied = live.apply(parse_customs(b'{"barcode": "F1", "status": "release", "id": "c1"}'), 4)
    assert (applied.customs, applied.duplicates) == (0, 1)
    assert live.lookup("F1").customs_hold  # type: ignore[union-attr]
    # A hold for a barcode nobody pre-advised: held; a release of it: nothing known.
    live.apply(parse_customs(b'{"barcode": "N1", "status": "hold"}'), 5)
    assert live.lookup("N1") == ManifestRow(NO_POSTCODE, 0, -1, -1, -1, True, -1)
    live.apply(parse_customs(b'{"barcode": "N1", "status": "release"}'), 6)
    assert live.lookup("N1") is None
    assert live.source_of("N1") is Source.CUSTOMS
    # A file reload keeps the feed rows and customs decisions, and they still win.
    live.replace_files(files_of("barcode,destination\nF1,CASABLANCA\nF2,RABAT\nN1,RABAT\n"))
    assert live.lookup("F1") == ManifestRow(NO_POSTCODE, 0, -1, -1, 2, True, -1)
    assert live.lookup("F2") == ManifestRow(NO_POSTCODE, 0, -1, -1, 1, False, -1)
    assert live.lookup("N1") == ManifestRow(NO_POSTCODE, 0, -1, -1, 1, False, -1)
    assert live.delta_rows == 2
    assert live.last_arrival_ns == 6


def test_a_plan_reload_remaps_without_losing_a_destination() -> None:
    live = LiveManifest(files_of("barcode,destination\nF1,RABAT\n"), DESTS)
    live.apply(rows_of({"barcode": "A1", "destination": "MARRAKECH"}), 1)
    live.set_destinations(["CASABLANCA", "AGADIR"])
    assert live.lookup("A1").destination == -1  # type: ignore[union-attr]
    assert live.lookup("F1").destination == -1  # type: ignore[union-attr]
    applied = live.apply(rows_of({"barcode": "B2", "destination": "RABAT"}), 2)
    assert [b.reason for b in applied.bad] == ["bad_value"]
    live.set_destinations(["MARRAKECH", "RABAT"])
    assert live.lookup("A1").destination == 0  # type: ignore[union-attr]
    assert live.lookup("F1").destination == 1  # type: ignore[union-attr]
    assert live.lookup("B2") is None


def test_seen_ids_are_bounded() -> None:
    live = LiveManifest(None, DESTS, seen_ids_capacity=2)
    for i in range(3):
        live.apply(rows_of({"barcode": f"A{i}", "country": "MA", "id": f"i{i}"}), i)
    assert len(live.seen_ids) == 2
    assert "i0" not in live.seen_ids
    assert "i2" in live.seen_ids


def test_the_delta_grows_in_place_and_retires_entries() -> None:
    live = LiveManifest(None, DESTS)
    n = 5000
    for start in range(0, n, 250):
        rows = [{"barcode": f"S{i}", "postcode": f"{10000 + i}", "country": "MA"}
                for i in range(start, start + 250)]  # fmt: skip
        live.apply(rows_of(rows), start)
    live.apply(rows_of([{"barcode": "S7", "destination": "RABAT"}]), n)
    assert live.delta_rows == n
    # Retired entries leave (their rows filled by the last ones): what stays is intact.
    live.retire([f"S{i}" for i in range(0, n, 2) if i != 4998] + ["S7", "NEVER"])
    assert live.delta_rows == n // 2 - 1 + 1
    assert live.lookup("S0") is None
    assert live.lookup("S7") is None
    assert all(live.lookup(f"S{i}") is not None for i in range(1, n, 2) if i != 7)
    assert live.lookup("S4998") == ManifestRow(*postcode_features("14998"), MA, -1, -1, False, -1)
    live.apply(rows_of([{"barcode": f"S{i}", "country": "MA"} for i in range(0, n, 2)]), n + 1)
    live.apply(rows_of([{"barcode": "S7", "destination": "RABAT"}]), n + 2)
    assert live.delta_rows == n
    assert live.lookup("S7") == ManifestRow(NO_POSTCODE, 0, -1, -1, 1, False, -1)
    assert live.lookup("S4999") == ManifestRow(*postcode_features("14999"), MA, -1, -1, False, -1)
    assert live.lookup("S5000") is None
    assert live.nbytes() >= n * 48


# --- 4. the decider on a live manifest -------------------------------------------------


@pytest.fixture
def decider() -> Decider:
    compiled = compile_plan(load_plan(DEMO_PLAN))
    return Decider(
        compiled, ChuteState.for_plan(compiled), timezone="Africa/Casablanca", site_country="MA"
    )


def test_the_decider_follows_the_feeds(decider: Decider) -> None:
    names = decider.destination_names
    files = files_of(f"barcode,destination\n{S10_RB_GB},RABAT\n", ["RABAT"])
    live = LiveManifest(files, ["RABAT"])
    decider.use_manifest(live)
    assert live.destinations == tuple(names)  # the decider's plan's names
    assert decider.manifest is not None
    assert decider.manifest.rows == 1

    choice = decider.decide([S10_RB_GB])
    assert (choice.destination, choice.source) == ("RABAT", Source.FILE)
    no_rule = decider.decide([S10_CP_MA])
    assert (no_rule.chute, no_rule.source) == (NO_RULE_CHUTE, None)

    # Pre-advice arrives: the next decision uses it.
    live.apply(rows_of({"barcode": S10_CP_MA, "postcode": "20250"}), 1)
    choice = decider.decide([S10_CP_MA])
    assert (choice.destination, choice.reason, choice.source) == (
        "CASABLANCA", Reason.OK, Source.FEED,
    )  # fmt: skip
    # Customs holds it, then releases it.
    live.apply(parse_customs(f'{{"barcode": "{S10_CP_MA}", "status": "hold"}}'.encode()), 2)
    choice = decider.decide([S10_CP_MA])
    assert (choice.chute, choice.reason, choice.source) == (
        CUSTOMS_CHUTE, Reason.CUSTOMS_HOLD, Source.CUSTOMS,
    )  # fmt: skip
    live.apply(parse_customs(f'{{"barcode": "{S10_CP_MA}", "status": "release"}}'.encode()), 3)
    choice = decider.decide([S10_CP_MA, GS1_RABAT])  # a ship-to label wins as a whole
    assert (choice.destination, choice.source) == ("RABAT", Source.CUSTOMS)
    assert decider.last_source is Source.CUSTOMS
    assert (decider.manifest_lookups, decider.manifest_hits) == (5, 4)


def test_a_file_manifest_still_works_for_replay(decider: Decider) -> None:
    decider.use_manifest(files_of(f"barcode,destination\n{S10_RB_GB},RABAT\n", ["RABAT"]))
    assert decider.live is None
    choice = decider.decide([S10_RB_GB])
    assert (choice.destination, choice.source) == ("RABAT", Source.FILE)


def test_bad_rows_never_raise() -> None:
    @HYPOTHESIS
    @given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
    def parse_anything(payload: bytes) -> None:
        for parse in (parse_preadvice, parse_customs):
            batch = parse(payload)
            assert all(isinstance(b, BadRow) for b in batch.bad)

    parse_anything()


def test_nested_json_never_raises() -> None:
    payload = json.dumps([{"barcode": "A1", "country": {"x": [1, 2]}}]).encode()
    assert reasons(parse_preadvice(payload)) == ["wrong_type"]
    assert np.array_equal(
        LiveManifest(None, DESTS).lookup_batch(encode_keys([]))[0], np.zeros(0, np.int8)
    )


def test_two_codes_that_disagree_have_no_source(decider: Decider) -> None:
    live = LiveManifest(files_of(f"barcode,destination\n{S10_RB_GB},RABAT\n", ["RABAT"]), [])
    decider.use_manifest(live)
    live.apply(rows_of({"barcode": S10_CP_MA, "destination": "CASABLANCA"}), 1)
    choice = decider.decide([S10_CP_MA, S10_RB_GB])
    assert (choice.reason, choice.source) == (Reason.MULTI_READ_CONFLICT, None)
    live.apply(rows_of({"barcode": S10_RB_GB, "destination": "CASABLANCA"}), 2)
    choice = decider.decide([S10_CP_MA, S10_RB_GB])
    assert (choice.destination, choice.source) == ("CASABLANCA", Source.FEED)


def test_rows_not_made_by_the_parser_are_checked_for_their_barcode() -> None:
    live = LiveManifest(None, DESTS)
    bad_rows = [FeedRow(b, None, None, "MA", None, None, None) for b in ("", "é", "X" * 33)]
    bad_customs = [CustomsUpdate(b, True, None) for b in ("", "a b")]
    applied = live.apply(FeedBatch(bad_rows, bad_customs, []), 1)
    assert (applied.rows, applied.customs, len(applied.bad)) == (0, 0, 5)
    assert live.delta_rows == 0
    assert list(live.lookup_batch(encode_keys(["", "é"]))[0]) == [0, 0]
