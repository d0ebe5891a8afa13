"""The one bounded map: what a process that runs for years remembers, with a cap.

Decisions awaiting confirmation, requests already answered, results already published,
recirculation counts, scans already seen: each is remembered for a while to answer a
re-read or drop a re-send, and each must stay flat in memory however long the daemon
runs. A `BoundedMap` keeps at most `capacity` entries and forgets the least recently
written one first. Reads do not refresh an entry: what matters is when it was learned.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar, overload

__all__ = ["BoundedMap"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class BoundedMap(Generic[K, V]):
    """A mapping of at most `capacity` entries; writing beyond it forgets the oldest."""

    __slots__ = ("_data", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def __setitem__(self, key: K, value: V) -> None:
        """Remember `value`; an existing key counts as newly written."""
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.capacity:
            data.popitem(last=False)

    def add(self, key: K) -> bool:
        """Use as a bounded set of values `None`: True when `key` is new (and now added)."""
        if key in self._data:
            return False
        self[key] = None  # type: ignore[assignment]  # only meaningful for BoundedMap[K, None]
        return True

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...
    def get(self, key: K, default: object = None) -> object:
        return self._data.get(key, default)

    @overload
    def pop(self, key: K) -> V | None: ...
    @overload
    def pop(self, key: K, default: D) -> V | D: ...
    def pop(self, key: K, default: object = None) -> object:
        return self._data.pop(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(self._data.items())

    def retain(self, keep: set[K] | dict[K, object]) -> None:
        """Forget every key not in `keep`, keeping the order of the rest."""
        for key in [key for key in self._data if key not in keep]:
            del self._data[key]

    def clear(self) -> None:
        self._data.clear()
