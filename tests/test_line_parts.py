"""The line core's smaller owners: the device board (sorter.devices) and the line's
bounded memory (sorter.memory)."""

from __future__ import annotations

from typing import Any

from sorter.bounded import BoundedMap
from sorter.contract import Messages, Topics
from sorter.devices import DeviceBoard
from sorter.line_events import Assignment
from sorter.memory import MAX_ANSWERED, MAX_QUERYABLE, MAX_REMEMBERED, LineMemory
from sorter.ports import Recovered


class Watcher:
    def __init__(self) -> None:
        self.devices: list[tuple[str, bool, int]] = []

    def on_decision(self, reason: str, destination: str, chute: int, latency_ms: float) -> None:
        pass

    def on_result(self, outcome: str, chute_actual: int) -> None:
        pass

    def on_device(self, name: str, connected: bool, errors: int) -> None:
        self.devices.append((name, connected, errors))


def test_device_board_announces_changes_and_tells_observers_everything() -> None:
    published: list[tuple[str, dict[str, Any], int, bool]] = []

    def publish(topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False) -> None:
        published.append((topic, payload, qos, retain))

    watcher = Watcher()
    board = DeviceBoard(publish, Messages(Topics("p")), [watcher], wall_ns=lambda: 0)
    board.report("plc", connected=True, detail="connected")
    board.report("plc", connected=True, detail="still")  # same state: not announced
    board.report("plc", connected=False, detail="timeout")  # a failure counts one error
    board.report("plc", connected=False, detail="again", force=True)
    assert [p for _, p, _, _ in published] == [
        {
            "connected": True,
            "errors": 0,
            "last_seen": "1970-01-01T00:00:00.000Z",
            "detail": "connected",
        },
        {
            "connected": False,
            "errors": 1,
            "last_seen": "1970-01-01T00:00:00.000Z",
            "detail": "timeout",
        },
        {
            "connected": False,
            "errors": 2,
            "last_seen": "1970-01-01T00:00:00.000Z",
            "detail": "again",
        },
    ]
    assert {(t, q, r) for t, _, q, r in published} == {("p/devices/plc", 1, True)}
    assert watcher.devices == [
        ("plc", True, 0),
        ("plc", True, 0),
        ("plc", False, 1),
        ("plc", False, 2),
    ]
    board.report("head", connected=True, errors=5, last_seen_wall_ns=2_000_000_000)
    assert published[-1][1]["errors"] == 5
    assert published[-1][1]["last_seen"] == "1970-01-01T00:00:02.000Z"


def test_memory_is_bounded_and_restored_from_a_journal() -> None:
    memory = LineMemory()
    bounds = {
        "answered": MAX_ANSWERED,
        "results_seen": MAX_ANSWERED,
        "assigned": MAX_REMEMBERED,
        "recirculations": MAX_REMEMBERED,
        "last_decision": MAX_QUERYABLE,
    }
    for name, capacity in bounds.items():
        store = getattr(memory, name)
        assert isinstance(store, BoundedMap)
        assert store.capacity == capacity, name
    memory.restore(
        Recovered(
            answered={(1, 2): 7},
            assigned={(1, 2): ("RB123456785GB", "NORTH", 7)},
            recirculations={1: 2},
            results_seen={(3, 4)},
        )
    )
    assert memory.answered.get((1, 2)) == 7
    assert memory.assigned.get((1, 2)) == Assignment("RB123456785GB", "NORTH", 7)
    assert memory.recirculations.get(1) == 2
    assert (3, 4) in memory.results_seen
