"""The archive's message parser and its [archive] config table, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.archive_db import describe_error, shown_url
from drivers.archive_rows import (
    BadMessageError,
    parse_message,
    row_values,
    split_topic,
    trace_json,
)
from sorter.config import ConfigError, load_site
from sorterd.archive import hub_prefix, subscriptions
from sorterd.demo import demo_config_dir, write_site

DECISION = {
    "id": "d-1", "ts": "2026-12-07T10:00:00.123Z", "tracking_id": 7, "seq": 3,
    "codes": ["RB123456785GB", "]C1000611"], "barcode": "RB123456785GB",
    "destination": "CASA", "chute": 4, "reason": "ok", "recirculations": 1, "latency_ms": 0.25,
}  # fmt: skip
RESULT = {
    "id": "r-1", "ts": "2026-12-07T10:00:05.000Z", "tracking_id": 7, "seq": 3,
    "barcode": None, "destination": None, "chute_assigned": None, "chute_actual": 0,
    "outcome": "reject", "recirculations": 0,
}  # fmt: skip


def test_decision_and_result_to_trace_json() -> None:
    row = parse_message("hub/a/line-1/decisions", json.dumps(DECISION).encode())
    assert trace_json(row) == {
        "kind": "decision", "line": "hub/a/line-1", "ts": "2026-12-07T10:00:00.123Z",
        "id": "d-1", "tracking_id": 7, "seq": 3, "barcode": "RB123456785GB",
        "codes": ["RB123456785GB", "]C1000611"], "destination": "CASA", "chute": 4,
        "reason": "ok", "chute_actual": None, "outcome": None, "recirculations": 1,
    }  # fmt: skip
    row = parse_message("x/results", json.dumps(RESULT).encode())
    shown = trace_json(row)
    assert (shown["kind"], shown["line"], shown["chute"], shown["chute_actual"]) == (
        "result", "x", None, 0,
    )  # fmt: skip
    assert (shown["outcome"], shown["codes"], shown["reason"]) == ("reject", None, None)


@pytest.mark.parametrize(
    ("topic", "payload", "why"),
    [
        ("a/decisions", b"\xff\xfe", "not JSON"),
        ("a/decisions", b"{", "not JSON"),
        ("a/decisions", b"[]", "not a JSON object"),
        ("a/decisions", b'{"seq": ' + b"1" * 5000 + b"}", "not JSON"),
        ("a/decisions", b"[" * 100_000, "not JSON"),
        ("a/decisions", json.dumps({**DECISION, "id": ""}).encode(), "id is empty"),
        ("a/decisions", json.dumps({**DECISION, "ts": "10:00"}).encode(), "ISO 8601"),
        ("a/decisions", json.dumps({**DECISION, "ts": "2026-12-07T10:00"}).encode(), "zone"),
        ("a/decisions", json.dumps({**DECISION, "seq": "3"}).encode(), "seq"),
        ("a/decisions", json.dumps({**DECISION, "seq": True}).encode(), "seq"),
        ("a/decisions", json.dumps({**DECISION, "seq": 2**70}).encode(), "range"),
        ("a/decisions", json.dumps({**DECISION, "codes": "A"}).encode(), "codes"),
        ("a/decisions", json.dumps({**DECISION, "codes": ["A\u0000"]}).encode(), "NUL"),
        ("a/decisions", json.dumps({**DECISION, "latency_ms": "1"}).encode(), "latency"),
        ("a/results", json.dumps({**RESULT, "outcome": None}).encode(), "outcome"),
        ("a/stats", json.dumps(DECISION).encode(), "topic"),
    ],
)
def test_bad_messages_say_why(topic: str, payload: bytes, why: str) -> None:
    with pytest.raises(BadMessageError, match=why):
        parse_message(topic, payload)
    where = split_topic(topic)
    if where is not None:  # the archiver's way: the same refusal, the same reason
        with pytest.raises(BadMessageError, match=why):
            row_values(*where, payload)


def _both(line: str, kind: str, payload: bytes) -> tuple[object, object]:
    """What the archiver's fast way and parse_message make of one message."""
    outcomes: list[object] = []
    for parse in (
        lambda: row_values(line, kind, payload),
        lambda: parse_message(f"{line}/{kind}s", payload).values(),
    ):
        try:
            outcomes.append(parse())
        except BadMessageError:
            outcomes.append("refused")
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("decision", DECISION),
        ("decision", {**DECISION, "barcode": None, "chute": None, "latency_ms": 1}),
        ("decision", {**DECISION, "ts": "2026-12-07T12:00:00.5+02:00", "extra": [1]}),
        ("decision", {**DECISION, "seq": 2**63 - 1, "tracking_id": -(2**63)}),
        ("decision", {**DECISION, "seq": 2**63}),
        ("decision", {**DECISION, "codes": [], "destination": "\u00e9\t"}),
        ("result", RESULT),
        ("result", {**RESULT, "chute_actual": None, "latency_ms": "x", "codes": 3}),
        ("result", {k: v for k, v in RESULT.items() if k != "barcode"}),
    ],
)
def test_the_fast_way_reads_as_parse_message(kind: str, message: dict[str, object]) -> None:
    fast, slow = _both("hub/line-1", kind, json.dumps(message).encode())
    assert fast == slow


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=False), st.text(max_size=4), st.lists(st.text(max_size=3), max_size=2),
    st.sampled_from(["2026-12-07T10:00:00Z", "2026-12-07T10:00:00", "2026-12-07 10:00+01:00"]),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["decision", "result"]),
    base=st.sampled_from([DECISION, RESULT]),
    changes=st.dictionaries(st.sampled_from(sorted({*DECISION, *RESULT})), _VALUES, max_size=3),
    dropped=st.sets(st.sampled_from(sorted({*DECISION, *RESULT})), max_size=2),
)
def test_the_fast_way_accepts_and_refuses_as_parse_message(
    kind: str, base: dict[str, object], changes: dict[str, object], dropped: set[str]
) -> None:
    message = {k: v for k, v in {**base, **changes}.items() if k not in dropped}
    fast, slow = _both("hub/line-1", kind, json.dumps(message).encode())
    assert fast == slow


def test_topics() -> None:
    assert split_topic("a/b/decisions") == ("a/b", "decision")
    assert split_topic("decisions") is None
    assert subscriptions(["hub/+"]) == [
        "$share/sorterd-archive/hub/+/decisions",
        "$share/sorterd-archive/hub/+/results",
    ]
    assert hub_prefix(["sortcentre/casablanca-hub/+", "x/y"]) == "sortcentre/casablanca-hub"
    assert hub_prefix(["solo"]) == "solo"


def _site(folder: Path, table: str) -> Path:
    return write_site(
        folder, plc_port=1, scanner_port=1, mqtt_url="mqtt://127.0.0.1:1883",
        plan=demo_config_dir() / "sortplan.toml", prefix="hub/line", extra=table,
    )  # fmt: skip


def test_archive_table_and_password_from_the_environment(tmp_path: Path) -> None:
    site = _site(tmp_path, '\n[archive]\nurl = "postgresql://s@db:5432/a"\nlines = ["hub/+"]\n')
    section = load_site(site, env={"SORTERD_ARCHIVE_PASSWORD": "pw"}).config.archive
    assert section is not None
    assert (section.password, section.retention_days, section.lines) == ("pw", 90, ["hub/+"])
    assert "pw" not in repr(section)
    assert load_site(site, env={}).config.archive is not None


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('url = "mysql://u:hunter2@db/a"\nlines = ["hub/+"]', "archive.url"),
        ('url = "postgresql://u:hunter2@db:99999/a"\nlines = ["hub/+"]', "archive.url"),
        ('url = "postgresql://u:hunter2@db"\nlines = ["hub/+"]', "archive.url"),
        ('url = "postgresql://u@db/a"\nlines = []', "archive.lines"),
        ('url = "postgresql://u@db/a"\nlines = ["hub/#"]', "archive.lines"),
        ('url = "postgresql://u@db/a"\nlines = ["hub/a+"]', "archive.lines"),
        ('url = "postgresql://u@db/a"\nlines = ["hub/"]', "archive.lines"),
        (
            'url = "postgresql://u@db/a"\nlines = ["h"]\nretention_days = 0',
            "archive.retention_days",
        ),
        (
            'url = "postgresql://u@db/a"\nlines = ["h"]\nretension_days = 3',
            "archive.retension_days",
        ),
    ],
)
def test_bad_archive_tables_name_the_key_never_the_password(
    tmp_path: Path, table: str, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_site(_site(tmp_path, f"\n[archive]\n{table}\n"), env={})
    assert [p.key for p in caught.value.problems] == [key]
    assert "hunter2" not in str(caught.value)


def test_urls_and_errors_hide_the_password() -> None:
    assert shown_url("postgresql://u:hunter2@db:5432/a") == "postgresql://u@db:5432/a"
    assert shown_url("postgresql://u@db/a") == "postgresql://u@db/a"
    assert describe_error(ValueError("bad  hunter2\n here"), "hunter2") == "bad *** here"
