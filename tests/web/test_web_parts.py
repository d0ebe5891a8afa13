"""The console's parts without I/O: the model and its deltas, line discovery, sessions,
throttling and the users file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sorter.config import ConfigError
from sorterd.web.model import HubModel, LineModel, Versions
from sorterd.web.sessions import SessionSigner, Throttle
from sorterd.web.users import Role, add_user, load_users, read_password

LINE = "hub/line-1"


def _raw(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_delta_carries_only_what_changed_since_the_page_last_looked() -> None:
    line = LineModel(LINE, Versions())
    for n in range(1, 241):
        line.on_raw(f"chutes/{n}", _raw({"state": "ok", "destination": "X", "count": 0}), 0.0)
    first = line.delta(0, 0.0, charts=False)
    assert len(first["chutes"]) == 240
    assert first["full"] is True
    seen = line.versions.value
    line.on_raw("chutes/7", _raw({"state": "disabled", "destination": "X", "count": 0}), 1.0)
    line.on_raw("chutes/7", _raw({"state": "full", "destination": "X", "count": 3}), 1.0)
    line.on_raw("devices/plc", _raw({"connected": False, "errors": 2}), 1.0)
    later = line.delta(seen, 1.0, charts=False)
    assert later["chutes"] == [[7, "full", "X", 3]]  # two messages, one change to render
    assert later["full"] is False
    assert list(later["devices"]) == ["plc"]
    assert later["line"]["chutes"]["full"] == 1
    assert later["line"]["devices_down"] == ["plc"]
    # A cleared retained chute: the page is sent everything again.
    seen = line.versions.value
    line.on_raw("chutes/240", b"", 2.0)
    assert line.delta(seen, 2.0, charts=False)["full"] is True


def test_decisions_are_counted_once_and_found_by_code_or_tracking_id() -> None:
    line = LineModel(LINE, Versions())
    decision = {
        "id": "d-1", "ts": "2026-12-07T10:00:00.000Z", "tracking_id": 4711, "seq": 2,
        "codes": ["RB123456785GB", "]C1X"], "barcode": "RB123456785GB",
        "destination": "RABAT", "chute": 7, "reason": "ok", "recirculations": 0,
    }  # fmt: skip
    line.on_raw("decisions", _raw(decision), 600.0)
    line.on_raw("decisions", _raw(decision), 600.5)  # a re-send: same id
    assert line.duplicates == 1
    line.on_raw("chutes/7", _raw({"state": "ok", "destination": "RABAT", "count": 10}), 600.0)
    line.on_raw("results", _raw({"id": "r-1", "tracking_id": 4711, "seq": 2,
                                 "outcome": "sorted", "chute_actual": 7}), 601.0)  # fmt: skip
    line.on_raw("results", _raw({"id": "r-1", "tracking_id": 4711, "seq": 2,
                                 "outcome": "sorted", "chute_actual": 7}), 601.0)  # fmt: skip
    assert line.chutes[7].count == 11  # the published count, and one sorted since (once)
    for code in ("RB123456785GB", "]C1X", "4711"):
        (found,) = line.search(code)
        assert (found["tracking_id"], found["outcome"]) == (4711, "sorted")
    assert line.search("nothing") == []
    charts = line.charts(601.0)
    assert charts["reasons"] == {"ok": [0] * 59 + [1]}
    line.on_raw("decisions", b"[not json", 602.0)
    line.on_raw("decisions", _raw([1, 2]), 602.0)
    assert line.ignored == 2


def test_lines_are_discovered_from_their_status_and_the_archiver_is_not_one() -> None:
    hub = HubModel(("hub/+", "other/line-9"))
    assert list(hub.lines) == ["other/line-9"]
    status = {"state": "online", "version": "0.1.0", "since": "2026-12-07T10:00:00.000Z"}
    archiver = {"state": "online", "lag_s": 0.1, "rows": 5, "since": "2026-12-07T10:00:00Z"}
    assert hub.discovered("hub/archive/status", _raw(archiver)) is None
    assert hub.discovered("hub/a/b/status", _raw(status)) is None  # one level only
    found = hub.discovered("hub/line-2/status", _raw(status))
    assert found is not None
    assert found.prefix == "hub/line-2"
    assert hub.line_of("hub/line-2/chutes/3") == (found, "chutes/3")
    assert hub.line_of("hub/line-22/chutes/3") is None


def test_session_cookies_are_signed_and_expire() -> None:
    signer = SessionSigner(b"k" * 64, max_age_s=3600)
    value, session = signer.issue("olga")
    assert signer.check(value) == session
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(None)
    assert not session.csrf_matches(session.csrf + "x")
    assert signer.check(value[:-2] + "AA") is None
    assert SessionSigner(b"j" * 64, 3600).check(value) is None  # another console's key
    assert SessionSigner(b"k" * 64, max_age_s=-1).check(value) is None  # expired


def test_throttle_refuses_after_the_limit_until_the_window_has_passed() -> None:
    throttle = Throttle(limit=3, window_s=60.0)
    for t in (0.0, 1.0, 2.0):
        assert throttle.retry_after_s("olga", t) == 0.0
        throttle.failed("olga", t)
    assert throttle.retry_after_s("olga", 3.0) == pytest.approx(57.0)
    assert throttle.retry_after_s("victor", 3.0) == 0.0
    assert throttle.retry_after_s("olga", 60.5) == 0.0


def test_users_file_round_trip_and_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    assert add_user(path, "olga", Role.OPERATOR, "password-1") is True
    assert add_user(path, "olga", Role.VIEWER, "password-2") is False
    assert load_users(path)["olga"].role is Role.VIEWER
    assert read_password("long enough\nrest") == "long enough"
    path.write_text('[users.x]\nrole = "admin"\npassword_hash = "plain"\n[users."b a d"]\n')
    with pytest.raises(ConfigError) as caught:
        load_users(path)
    keys = {p.key for p in caught.value.problems}
    assert keys == {"users.x.role", "users.b a d"}


# Payloads any client of the broker may publish, each of which once took the console down
# (ValueError or RecursionError out of its MQTT task) or, passed on as NaN/Infinity, made
# every page's JSON.parse fail, so that the wall stopped updating.
HOSTILE_PAYLOADS = (
    b'{"state": "ok", "count": ' + b"1" * 5000 + b"}",  # over Python's int digits limit
    b'{"state": "ok", "count": ' + b"9" * 400 + b"}",  # too large for a float
    b'{"connected": true, "errors": NaN}',
    b'{"connected": true, "errors": 1e400}',
    b'{"connected": true, "errors": -Infinity}',
    b"[" * 100_000,
)


@pytest.mark.parametrize("payload", HOSTILE_PAYLOADS, ids=lambda p: p[:30].decode())
def test_hostile_payloads_are_ignored_not_raised_nor_passed_on(payload: bytes) -> None:
    line = LineModel(LINE, Versions())
    for suffix in ("chutes/3", "devices/plc", "decisions", "results", "stats", "status"):
        line.on_raw(suffix, payload, 0.0)
    assert line.ignored == 6
    sent = json.dumps(line.delta(0, 0.0, charts=True), allow_nan=False)
    assert "Infinity" not in sent
    hub = HubModel(("hub/+",))
    assert hub.discovered("hub/line-3/status", payload) is None


@pytest.mark.parametrize("level", ["²", "٣", "9" * 5000])
def test_chute_topics_that_are_no_chute_number_are_ignored(level: str) -> None:
    line = LineModel(LINE, Versions())
    line.on_raw(f"chutes/{level}", _raw({"state": "ok", "destination": "X", "count": 1}), 0.0)
    line.on_raw(f"chutes/{level}", b"", 0.0)
    assert line.chutes == {}


def test_what_the_page_calls_methods_on_has_the_type_it_expects() -> None:
    """The page joins the alarms and slices a decision's ts: a P/status with alarms as a
    string, or a decision with a numeric ts, once threw in its render, and the wall (drawn
    after the header in the same render) stopped updating."""
    line = LineModel(LINE, Versions())
    line.on_raw("status", _raw({"state": "online", "version": "1", "alarms": "plc down"}), 0.0)
    assert line.summary()["alarms"] == ["plc down"]
    line.on_raw("status", _raw({"state": "online", "version": "1", "alarms": [1, None]}), 0.0)
    assert line.summary()["alarms"] == ["1", ""]
    line.on_raw("status", _raw({"state": "online", "version": "1", "alarms": {"a": 1}}), 0.0)
    assert all(isinstance(a, str) for a in line.summary()["alarms"])
    line.on_raw("decisions", _raw({"id": "d-9", "ts": 1765100000, "tracking_id": 9, "seq": 1,
                                   "codes": "RB1", "reason": "ok"}), 0.0)  # fmt: skip
    (shown,) = line.delta(0, 0.0, charts=False)["decisions"]
    assert isinstance(shown["ts"], str)
    assert shown["codes"] == []


def test_throttle_keeps_bounded_keys() -> None:
    """A sign-in form may carry a user name of 64 KiB: kept whole for each of 10,000 keys,
    the throttle alone could hold 640 MB."""
    throttle = Throttle(limit=2, keys_kept=10)
    for n in range(20):
        throttle.failed(f"{n}" + "x" * 65_000, 0.0)
    assert sum(len(k) for k in throttle._failures) <= 10 * 128
    long_name = "y" * 65_000
    throttle.failed(long_name, 0.0)
    throttle.failed(long_name, 0.0)
    assert throttle.retry_after_s(long_name, 1.0) > 0
    throttle.succeeded(long_name)
    assert throttle.retry_after_s(long_name, 1.0) == 0.0


def test_users_file_is_owner_only_even_over_a_stale_temporary_file(tmp_path: Path) -> None:
    """The users file is written to a temporary file and renamed: a temporary file left
    readable by all (planted, or from an older version) once gave the users file its mode."""
    path = tmp_path / "users.toml"
    stale = tmp_path / ".users.toml.tmp"
    stale.write_text("stale")
    stale.chmod(0o644)
    add_user(path, "olga", Role.OPERATOR, "password-1")
    assert path.stat().st_mode & 0o077 == 0
    assert load_users(path)["olga"].role is Role.OPERATOR
