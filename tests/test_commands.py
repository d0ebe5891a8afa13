"""Commands over MQTT and plan hot reload, through a real broker and the running line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import aiomqtt
import pytest

from drivers.broker import LocalBroker
from sorter.commands import (
    ChuteAction,
    ChuteCommand,
    CommandError,
    CommandName,
    ManifestReload,
    PlanReload,
    TrackingQuery,
    parse_command,
)
from sorter.contract import Topics
from sorterd.control import CommandHandler
from tests.linekit import FAST_LINE, PLAN_PATH, PREFIX, Rig, line_with_daemon, wait_until

FAST = FAST_LINE


async def _send(broker: LocalBroker, suffix: str, payload: object = None) -> None:
    body = b"" if payload is None else json.dumps(payload).encode()
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="operator") as c:
        await c.publish(f"{PREFIX}/cmd/{suffix}", body, qos=1)


def _answer(rig: Rig, request_id: str) -> dict[str, object] | None:
    return next((m for m in rig.sub.of("cmd-result") if m.get("id") == request_id), None)


async def test_plan_reload_swaps_and_a_bad_plan_is_refused(
    broker: LocalBroker, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN_PATH.read_text())
    async with line_with_daemon(broker, tmp_path, params=FAST, plan_path=plan) as rig:
        await rig.line.run(100_000, count=30)
        assert await rig.line.drain(30)
        before = {d["tracking_id"] for d in rig.sub.of("decisions")}
        assert any(d["destination"] == "CASABLANCA" for d in rig.sub.of("decisions"))

        # A new plan: Casablanca goes to chutes 14-15 from now on.
        plan.write_text(
            PLAN_PATH.read_text()
            .replace("chutes = [1, 2, 3, 4, 5, 6]", "chutes = [14, 15]")
            .replace('name = "casablanca-day"', 'name = "casablanca-night"')
        )
        await _send(broker, "plan/reload", {"id": "r1"})
        await wait_until(lambda: _answer(rig, "r1") is not None, 20)
        answer = _answer(rig, "r1")
        assert answer is not None
        assert answer["ok"] is True
        assert answer["plan"] == "casablanca-night"
        await rig.line.run(100_000, count=60)
        assert await rig.line.drain(30)
        after = [d for d in rig.sub.of("decisions") if d["tracking_id"] not in before]
        casablanca = [d for d in after if d["destination"] == "CASABLANCA"]
        assert casablanca
        assert {d["chute"] for d in casablanca} <= {14, 15, 40}

        # A broken plan is refused with its reason; the running plan stays.
        plan.write_text(plan.read_text().replace("chutes = [14, 15]", "chutes = [14, 999]"))
        await _send(broker, "plan/reload", {"id": "r2"})
        await wait_until(lambda: _answer(rig, "r2") is not None, 20)
        refused = _answer(rig, "r2")
        assert refused is not None
        assert refused["ok"] is False
        assert "chute 999 does not exist" in str(refused["reason"])
        assert rig.daemon.plan.name == "casablanca-night"
        # Every item still ended, decided exactly once.
        keys = [(d["tracking_id"], d["seq"]) for d in rig.sub.of("decisions")]
        assert len(keys) == len(set(keys))
    assert rig.line.ledger.in_flight == 0


async def test_chute_disable_and_enable(broker: LocalBroker, tmp_path: Path) -> None:
    async with line_with_daemon(broker, tmp_path, params=FAST) as rig:
        await _send(broker, "chute/1/disable", {"id": "d1"})
        await wait_until(lambda: _answer(rig, "d1") is not None, 20)
        await wait_until(lambda: (rig.sub.last("chutes/1") or {}).get("state") == "disabled", 20)
        await rig.line.run(100_000, count=60)
        assert await rig.line.drain(30)
        casablanca = [d for d in rig.sub.of("decisions") if d["destination"] == "CASABLANCA"]
        assert casablanca
        assert all(d["chute"] != 1 for d in casablanca)
        await _send(broker, "chute/1/enable", {"id": "e1"})
        await wait_until(lambda: (rig.sub.last("chutes/1") or {}).get("state") == "ok", 20)

        # An id no answer could carry: refused, and the daemon goes on (it used to take the
        # MQTT task, and with it the line, down).
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bad-cmd") as c:
            await c.publish(f"{PREFIX}/cmd/chute/2/disable", b'{"id": "\\ud800"}', qos=1)
        await _send(broker, "chute/999/disable", {"id": "x1"})
        await _send(broker, "frobnicate", {"id": "x2"})
        await _send(broker, "plan/reload", {"id": "x3", "extra": 1})
        await wait_until(lambda: all(_answer(rig, i) for i in ("x1", "x2", "x3")), 20)
        for request_id, words in (
            ("x1", "does not exist"),
            ("x2", "unknown command"),
            ("x3", "unknown payload key"),
        ):
            answer = _answer(rig, request_id)
            assert answer is not None
            assert answer["ok"] is False
            assert words in str(answer["reason"])


@pytest.mark.parametrize(
    ("suffix", "payload", "words"),
    [
        ("plan/reload", b"x" * 2000, "over 1024 bytes"),
        ("plan/reload", b"[1]", "JSON object"),
        ("plan/reload", b"{", "not JSON"),
        ("chute/abc/disable", b"", "not a chute number"),
        ("chute/1/explode", b"", "unknown command"),
        ("plan/reload", b'{"id": 5}', "id must be a string"),
        # Found by review: JSON may carry a lone surrogate, which UTF-8 cannot.
        ("chute/1/disable", b'{"id": "\\ud800"}', "printable"),
        ("plan/reload", b'{"id": "a\\u0000b"}', "printable"),
    ],
)
def test_command_shapes_are_bounded(suffix: str, payload: bytes, words: str) -> None:
    with pytest.raises(CommandError, match=words):
        parse_command(suffix, payload)


def test_good_commands_parse() -> None:
    assert parse_command("plan/reload", b"").name == "plan/reload"
    assert parse_command("plan/reload", b"") == PlanReload()
    assert parse_command("manifest/reload", b'{"id": "m"}') == ManifestReload("m")
    cmd = parse_command("chute/12/disable", b'{"id": "abc"}')
    assert isinstance(cmd, ChuteCommand)
    assert (cmd.name, cmd.chute, cmd.request_id) == ("chute/disable", 12, "abc")
    assert cmd.action is ChuteAction.DISABLE
    for action in ChuteAction:
        cmd = parse_command(f"chute/7/{action}", b"")
        assert cmd == ChuteCommand(7, action)
        assert cmd.name == CommandName(f"chute/{action}")
    assert parse_command("tracking/42/query", b"") == TrackingQuery(42)
    assert parse_command("tracking/42/query", b"").name is CommandName.TRACKING_QUERY


async def test_chute_full_by_hand_and_tracking_query(broker: LocalBroker, tmp_path: Path) -> None:
    async with line_with_daemon(broker, tmp_path, params=FAST) as rig:
        await _send(broker, "chute/2/full", {"id": "f1"})
        await wait_until(lambda: (rig.sub.last("chutes/2") or {}).get("state") == "full", 20)
        await rig.line.run(100_000, count=40)
        assert await rig.line.drain(30)
        casablanca = [d for d in rig.sub.of("decisions") if d["destination"] == "CASABLANCA"]
        assert casablanca
        assert all(d["chute"] != 2 for d in casablanca)
        await _send(broker, "chute/2/emptied", {"id": "f2"})
        await wait_until(lambda: (rig.sub.last("chutes/2") or {}).get("state") == "ok", 20)
        assert (rig.sub.last("chutes/2") or {}).get("count") == 0

        decided = rig.sub.of("decisions")[-1]
        await _send(broker, f"tracking/{decided['tracking_id']}/query", {"id": "q1"})
        await _send(broker, "tracking/4294967295/query", {"id": "q2"})
        await _send(broker, "tracking/99999999999/query", {"id": "q3"})
        await wait_until(lambda: all(_answer(rig, i) for i in ("q1", "q2", "q3")), 20)
        q1, q2, q3 = (_answer(rig, i) for i in ("q1", "q2", "q3"))
        assert q1 is not None
        assert q1["ok"] is True
        assert q1["decision"] == decided  # the same message that went to P/decisions
        assert q2 is not None
        assert q2["ok"] is False
        assert "no recent decision" in str(q2["reason"])
        assert q3 is not None
        assert q3["ok"] is False
        assert "not 0..4294967295" in str(q3["reason"])


class _Recorder:
    """Stands in for the pipeline, the reloads and the answers of a CommandHandler."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.plan = SimpleNamespace(machine_chutes=frozenset({1, 2, 3}))

    def set_host_disabled(self, chute: int, disabled: bool) -> None:
        self.calls.append(("disabled", chute, disabled))

    def set_host_full(self, chute: int, full: bool) -> None:
        self.calls.append(("full", chute, full))

    def last_decision(self, tracking_id: int) -> dict[str, object] | None:
        return {"tracking_id": tracking_id} if tracking_id == 7 else None

    def last_source(self, tracking_id: int) -> str | None:
        return "feed" if tracking_id == 7 else None

    def request_plan(self, request_id: str | None) -> None:
        self.calls.append(("plan", request_id))

    def request_manifests(self, request_id: str | None) -> None:
        self.calls.append(("manifests", request_id))

    def __call__(self, command: str, request_id: str | None, *, ok: bool, **detail: object) -> None:
        self.calls.append(("answer", command, request_id, ok, detail))


@pytest.mark.parametrize(
    ("suffix", "calls"),
    [
        ("plan/reload", [("plan", "i")]),
        ("manifest/reload", [("manifests", "i")]),
        (
            "chute/2/disable",
            [("disabled", 2, True), ("answer", "chute/disable", "i", True, {"chute": 2})],
        ),
        (
            "chute/2/enable",
            [("disabled", 2, False), ("answer", "chute/enable", "i", True, {"chute": 2})],
        ),
        ("chute/3/full", [("full", 3, True), ("answer", "chute/full", "i", True, {"chute": 3})]),
        (
            "chute/3/emptied",
            [("full", 3, False), ("answer", "chute/emptied", "i", True, {"chute": 3})],
        ),
        (
            "chute/4/full",
            [
                (
                    "answer",
                    "chute/full",
                    "i",
                    False,
                    {"reason": "chute 4 does not exist on the machine"},
                )
            ],
        ),
        (
            "tracking/7/query",
            [
                (
                    "answer",
                    "tracking/query",
                    "i",
                    True,
                    {"decision": {"tracking_id": 7}, "source": "feed"},
                )
            ],
        ),
        (
            "tracking/8/query",
            [
                (
                    "answer",
                    "tracking/query",
                    "i",
                    False,
                    {"reason": "no recent decision for tracking id 8"},
                )
            ],
        ),
        (
            "chute/2/explode",
            [
                (
                    "answer",
                    "chute/2/explode",
                    "i",
                    False,
                    {"reason": "unknown command 'chute/2/explode'"},
                )
            ],
        ),
    ],
)
def test_each_command_does_its_one_thing(suffix: str, calls: list[tuple[object, ...]]) -> None:
    rec = _Recorder()
    handler = CommandHandler(Topics("p"), rec, rec, rec)  # type: ignore[arg-type]
    handler.on_message(f"p/cmd/{suffix}", b'{"id": "i"}')
    handler.on_message(f"elsewhere/cmd/{suffix}", b'{"id": "i"}')  # not ours: ignored
    assert rec.calls == calls
