"""The MQTT contract (sorter.contract): topic names and payloads as docs/interfaces.md
section 5 lists them, keys in that order."""

from __future__ import annotations

import gc
import json
import re

from sorter import __version__
from sorter.contract import (
    MessageIds,
    Messages,
    Topics,
    chute_state_word,
    command_answer,
    iso_from_ns,
    iso_now,
    manifest_figures,
    status_payload,
)
from sorter.decide import Choice
from sorter.line_events import Assignment, ChuteChange, Decided, DeviceReport, ResultRecorded
from sorter.ports import ChuteFlag, Confirmation, MessageKind, Outcome, Reason, SortRequest

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_topics() -> None:
    t = Topics("site/line")
    assert (t.status, t.decisions, t.results, t.stats) == (
        "site/line/status",
        "site/line/decisions",
        "site/line/results",
        "site/line/stats",
    )
    assert (t.cmd, t.cmd_result) == ("site/line/cmd", "site/line/cmd-result")
    assert t.chute(12) == "site/line/chutes/12"
    assert t.device("tunnel-1") == "site/line/devices/tunnel-1"


def test_timestamps() -> None:
    assert ISO.match(iso_now())
    assert iso_from_ns(1_764_134_837_285_123_456) == "2025-11-26T05:27:17.285Z"


def test_status_and_command_answers() -> None:
    offline = status_payload("offline")
    assert list(offline) == ["state", "version", "since"]
    assert offline["version"] == __version__
    online = status_payload("online", alarms=("disk_low",))
    assert list(online) == ["state", "version", "since", "alarms"]
    assert online["alarms"] == ["disk_low"]
    assert status_payload("online", alarms=())["alarms"] == []
    answer = command_answer("chute/3/disable", None, ok=True, chute=3)
    assert list(answer) == ["id", "ts", "command", "ok", "chute"]
    assert (answer["id"], answer["command"], answer["ok"]) == (None, "chute/3/disable", True)


def test_message_ids_are_unique_and_say_their_kind() -> None:
    ids = MessageIds()
    first, second = ids.next("d"), ids.next("r")
    assert first.startswith("d-")
    assert second.startswith("r-")
    assert first.split("-")[1] == second.split("-")[1]  # the process's prefix
    assert (first.split("-")[2], second.split("-")[2]) == ("1", "2")


def test_decision_message() -> None:
    m = Messages(Topics("p"))
    req = SortRequest(7, 1234, 1, 0, 0, 0, 0)
    choice = Choice("NORTH", 4, Reason.OK, "RB123456785GB")
    out = m.decision(Decided(req, ("RB123456785GB", "x"), choice, 1, 0.12345))
    assert (out.kind, out.tracking_id, out.seq, out.chute) == (MessageKind.DECISION, 1234, 7, 4)
    assert (out.barcode, out.destination, out.recirculations, out.outcome) == (
        "RB123456785GB",
        "NORTH",
        1,
        0,
    )
    assert out.topic == "p/decisions"
    payload = out.payload
    assert list(payload) == [
        "id",
        "ts",
        "tracking_id",
        "seq",
        "codes",
        "barcode",
        "destination",
        "chute",
        "reason",
        "recirculations",
        "latency_ms",
    ]
    assert json.loads(json.dumps(payload))["codes"] == ["RB123456785GB", "x"]  # an array
    assert (payload["reason"], payload["latency_ms"]) == ("ok", 0.123)
    assert json.dumps(payload)  # plain JSON types only
    # Kept for P/cmd/tracking: nothing in it for the cyclic GC to walk once it passed.
    gc.collect()
    assert not gc.is_tracked(payload)


def test_result_message() -> None:
    m = Messages(Topics("p"))
    conf = Confirmation(7, 1234, 5, Outcome.RECIRC_FULL, 2)
    out = m.result(ResultRecorded(conf, Assignment("RB123456785GB", "NORTH", 4)))
    assert (out.kind, out.chute, out.outcome, out.recirculations) == (
        MessageKind.RESULT,
        5,
        int(Outcome.RECIRC_FULL),
        2,
    )
    assert out.topic == "p/results"
    payload = out.payload
    assert list(payload) == [
        "id",
        "ts",
        "tracking_id",
        "seq",
        "barcode",
        "destination",
        "chute_assigned",
        "chute_actual",
        "outcome",
        "recirculations",
    ]
    assert (payload["chute_assigned"], payload["chute_actual"]) == (4, 5)
    assert payload["outcome"] == "recirc_full"
    assert payload["id"].startswith("r-")


def test_chute_and_device_messages() -> None:
    m = Messages(Topics("p"))
    topic, payload = m.chute(ChuteChange(3, ChuteFlag.FULL | ChuteFlag.DISABLED, "B", 9))
    assert topic == "p/chutes/3"
    assert payload == {"state": "disabled", "destination": "B", "count": 9}
    assert list(payload) == ["state", "destination", "count"]
    topic, payload = m.device(DeviceReport("plc", True, 2, None, "connected"))
    assert topic == "p/devices/plc"
    assert payload == {"connected": True, "errors": 2, "last_seen": None, "detail": "connected"}
    _, payload = m.device(DeviceReport("plc", True, 2, 1_764_134_837_285_000_000, ""))
    assert payload["last_seen"] == "2025-11-26T05:27:17.285Z"


def test_chute_state_word_ranks_fault_over_disabled_over_full() -> None:
    assert chute_state_word(0) == "ok"
    assert chute_state_word(ChuteFlag.FULL) == "full"
    assert chute_state_word(ChuteFlag.FULL | ChuteFlag.DISABLED) == "disabled"
    assert chute_state_word(ChuteFlag.FULL | ChuteFlag.DISABLED | ChuteFlag.FAULT) == "fault"


def test_manifest_figures_without_a_manifest() -> None:
    assert manifest_figures(None, 0, 0) == {
        "rows": 0,
        "barcodes": 0,
        "files": 0,
        "bad_rows": 0,
        "lookups": 0,
        "hit_rate": None,
    }
    assert manifest_figures(None, 3, 1)["hit_rate"] == 0.3333
