"""The live manifest's delta layer: feed rows and customs decisions over the file index, in
a hash table updated in place, and the one lookup that reads both layers.

A delta entry is a row as the file index stores it (32-byte key, postcode code, packed
fields: sorter.manifest.rows) with flags in the packed word's free high bits:

- HAS_ROW: a pre-advice row supplies the fields (without it the entry only carries a
  customs decision, over whatever the files say);
- OVERRIDE_SET / OVERRIDE_HOLD: a customs message's decision, in force over the row's own
  customs value.

The destination field of a delta entry indexes the live manifest's list of every
destination name it has known (append only), not the plan's: a lookup maps it through
`to_plan` (that list's index -> the plan's, -1 none), so that a plan reload rewrites no
row and a destination a plan drops comes back with the plan that brings it back.

Memory: 48 bytes a row (key 32, postcode 8, packed 8) plus the table at a load factor
between 0.35 and 0.7 (6 to 11 bytes); rows are appended into arrays reserved for
RESERVED_ROWS entries (doubling beyond), allocated and not written, so only the rows in
use are resident.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sorter.manifest.index import _hash4, encode_keys, raw_words
from sorter.manifest.jit import lookup_kernel as _lookup_kernel
from sorter.manifest.rows import KEY_BYTES

__all__ = [
    "FIELDS_MASK",
    "HAS_ROW",
    "HOLD_BIT",
    "NO_ROW",
    "OVERRIDE_HOLD",
    "OVERRIDE_SET",
    "RESERVED_ROWS",
    "SOURCE_CUSTOMS",
    "SOURCE_FEED",
    "SOURCE_FILE",
    "SOURCE_NONE",
    "DeltaTable",
    "find_live",
    "find_live_batch",
    "resolve_entry",
]

HOLD_BIT: Final = 1 << 41  # the manifest's customs hold (sorter.manifest.rows.pack_fields)
FIELDS_MASK: Final = (1 << 52) - 1  # every field pack_fields writes
HAS_ROW: Final = 1 << 52
OVERRIDE_SET: Final = 1 << 53
OVERRIDE_HOLD: Final = 1 << 54
# In a lookup's answer: no row anywhere, only a customs decision (unpack_row ignores it).
NO_ROW: Final = 1 << 55
_DEST_SHIFT: Final = 20
_DEST_MASK: Final = 0xFFFF << _DEST_SHIFT

# Who a lookup's answer comes from (sorter.feeds.Source, as the kernels return it).
SOURCE_NONE: Final = 0
SOURCE_FILE: Final = 1
SOURCE_FEED: Final = 2
SOURCE_CUSTOMS: Final = 3

# Rows' arrays are reserved for this many entries at once (192 MB of address space, not
# of memory: only the rows written become resident), so that a day's delta is never
# copied to grow; beyond it they double.
RESERVED_ROWS: Final = 1 << 22
_NO_POSTCODE: Final = -1  # sorter.postcode.NO_POSTCODE, as a numba constant
_MAX_LOAD: Final = 0.7


@_lookup_kernel
def _probe_from(words: Any, table: Any, slot: Any, w0: Any, w1: Any, w2: Any, w3: Any) -> int:
    """_probe from a known first slot (the hash already taken)."""
    if table.shape[0] == 0:
        return -1
    mask = np.uint64(table.shape[0] - 1)
    while True:
        row = table[slot]
        if row < 0:
            return -1
        same = words[row, 0] == w0 and words[row, 1] == w1
        if same and words[row, 2] == w2 and words[row, 3] == w3:
            return int(row)
        slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)


@_lookup_kernel
def _probe(words: Any, table: Any, w0: Any, w1: Any, w2: Any, w3: Any) -> int:
    """Row of the key (w0..w3) in an open-addressing table, -1 when absent."""
    if table.shape[0] == 0:
        return -1
    slot = np.int64(_hash4(w0, w1, w2, w3) & np.uint64(table.shape[0] - 1))
    return _probe_from(words, table, slot, w0, w1, w2, w3)


@_lookup_kernel
def _map_destination(packed: Any, to_plan: Any) -> Any:
    old = (packed >> _DEST_SHIFT) & 0xFFFF
    new = to_plan[old - 1] + 1 if 0 < old <= to_plan.shape[0] else 0
    return (packed & ~np.int64(_DEST_MASK)) | (np.int64(new) << _DEST_SHIFT)


@_lookup_kernel
def _resolve(
    d: int, d_pc: Any, d_packed: Any, to_plan: Any, f: int, f_pc: Any, f_packed: Any
) -> tuple[int, int, int]:
    """(source, postcode, packed fields with the hold resolved) from a delta row d and a
    file row f (-1 absent)."""
    if d < 0:
        if f < 0:
            return SOURCE_NONE, _NO_POSTCODE, 0
        return SOURCE_FILE, f_pc[f], f_packed[f]
    e = d_packed[d]
    return resolve_entry(d_pc[d], e, to_plan, f, f_pc, f_packed)


@_lookup_kernel
def resolve_entry(
    pc: int, e: int, to_plan: Any, f: int, f_pc: Any, f_packed: Any
) -> tuple[int, int, int]:
    """(source, postcode, packed fields) of a delta entry (pc, e) over file row f."""
    source = SOURCE_FEED
    if e & HAS_ROW:
        fields = _map_destination(e & FIELDS_MASK, to_plan)
    elif f >= 0:
        pc = f_pc[f]
        fields = f_packed[f]
    else:
        pc = _NO_POSTCODE
        fields = np.int64(NO_ROW)
    if e & OVERRIDE_SET:
        source = SOURCE_CUSTOMS
        fields &= ~np.int64(HOLD_BIT)
        if e & OVERRIDE_HOLD:
            fields |= np.int64(HOLD_BIT)
    return source, pc, fields


@_lookup_kernel
def find_live(
    raw: Any, d_words: Any, d_table: Any, d_pc: Any, d_packed: Any, to_plan: Any,
    f_words: Any, f_table: Any, f_pc: Any, f_packed: Any,
) -> tuple[int, int, int]:  # fmt: skip
    """One barcode's bytes through both layers: the delta, then the files (also under a
    delta entry that only carries a customs decision)."""
    w0, w1, w2, w3 = raw_words(raw)
    d = _probe(d_words, d_table, w0, w1, w2, w3)
    f = -1
    if d < 0 or not d_packed[d] & HAS_ROW:
        f = _probe(f_words, f_table, w0, w1, w2, w3)
    return _resolve(d, d_pc, d_packed, to_plan, f, f_pc, f_packed)


@_lookup_kernel
def _touch(
    queries: Any, start: int, stop: int, d_words: Any, d_table: Any, d_packed: Any,
    f_words: Any, f_table: Any, f_packed: Any, slots: Any,
) -> int:  # fmt: skip
    """The first slot of each query of a block in both tables, and the key rows they name,
    read query after query with no branch on what was read: the misses overlap (the
    probes after them find the lines in the cache). Returns a sum so that nothing read
    is optimised away."""
    d_mask = np.uint64(max(d_table.shape[0], 1) - 1)
    f_mask = np.uint64(max(f_table.shape[0], 1) - 1)
    sink = 0
    for i in range(start, stop):
        h = _hash4(queries[i, 0], queries[i, 1], queries[i, 2], queries[i, 3])
        j = i - start
        slots[j, 0] = np.int64(h & d_mask)
        slots[j, 1] = np.int64(h & f_mask)
    if d_table.shape[0]:
        for j in range(stop - start):
            slots[j, 2] = d_table[slots[j, 0]]
    if f_table.shape[0]:
        for j in range(stop - start):
            slots[j, 3] = f_table[slots[j, 1]]
    for j in range(stop - start):
        if d_table.shape[0] and slots[j, 2] >= 0:
            sink += d_words[slots[j, 2], 0] + d_packed[slots[j, 2]]
        if f_table.shape[0] and slots[j, 3] >= 0:
            sink += f_words[slots[j, 3], 0] + f_packed[slots[j, 3]]
    return sink


@_lookup_kernel
def find_live_batch(
    queries: Any, d_words: Any, d_table: Any, d_pc: Any, d_packed: Any, to_plan: Any,
    f_words: Any, f_table: Any, f_pc: Any, f_packed: Any,
    source: Any, postcode: Any, packed: Any, slots: Any,
) -> int:  # fmt: skip
    """find_live for many keys (words, (n, 4)), into source, postcode and packed; `slots`
    a scratch (block, 4) int64 array. A block of queries at a time: their first slots
    and key rows are read together (_touch), then probed."""
    block = slots.shape[0]
    n = queries.shape[0]
    sink = 0
    for start in range(0, n, block):
        stop = min(start + block, n)
        sink += _touch(
            queries, start, stop, d_words, d_table, d_packed, f_words, f_table, f_packed, slots
        )
        for i in range(start, stop):
            j = i - start
            w0, w1, w2, w3 = queries[i, 0], queries[i, 1], queries[i, 2], queries[i, 3]
            d = _probe_from(d_words, d_table, slots[j, 0], w0, w1, w2, w3)
            f = -1
            if d < 0 or not d_packed[d] & HAS_ROW:
                f = _probe_from(f_words, f_table, slots[j, 1], w0, w1, w2, w3)
            source[i], postcode[i], packed[i] = _resolve(
                d, d_pc, d_packed, to_plan, f, f_pc, f_packed
            )
    return sink


@_lookup_kernel
def _find_many(queries: Any, words: Any, table: Any, out: Any) -> None:
    for i in range(queries.shape[0]):
        w0, w1, w2, w3 = queries[i, 0], queries[i, 1], queries[i, 2], queries[i, 3]
        out[i] = _probe(words, table, w0, w1, w2, w3)


@_lookup_kernel
def _find_raw(raw: Any, words: Any, table: Any) -> int:
    w0, w1, w2, w3 = raw_words(raw)
    return _probe(words, table, w0, w1, w2, w3)


@_lookup_kernel
def _upsert(
    words: Any, pc: Any, packed: Any, n: int, table: Any,
    new_words: Any, new_pc: Any, new_packed: Any,
) -> int:  # fmt: skip
    """Insert or replace each new entry in order; returns the rows now used. The caller
    made room: rows for n + len(new), and a table that stays under its load factor."""
    mask = np.uint64(table.shape[0] - 1)
    for i in range(new_words.shape[0]):
        w0, w1, w2, w3 = new_words[i, 0], new_words[i, 1], new_words[i, 2], new_words[i, 3]
        slot = np.int64(_hash4(w0, w1, w2, w3) & mask)
        while True:
            row = table[slot]
            if row < 0:
                for k in range(4):
                    words[n, k] = new_words[i, k]
                pc[n] = new_pc[i]
                packed[n] = new_packed[i]
                table[slot] = n
                n += 1
                break
            same = words[row, 0] == w0 and words[row, 1] == w1
            if same and words[row, 2] == w2 and words[row, 3] == w3:
                pc[row] = new_pc[i]
                packed[row] = new_packed[i]
                break
            slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
    return n


@_lookup_kernel
def _rehash(words: Any, n: int, table: Any) -> None:
    """Rows 0..n-1 (distinct keys) into an empty table."""
    mask = np.uint64(table.shape[0] - 1)
    for row in range(n):
        slot = np.int64(_hash4(words[row, 0], words[row, 1], words[row, 2], words[row, 3]) & mask)
        while table[slot] >= 0:
            slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
        table[slot] = row


def _words_of(keys: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    return keys.view(np.uint64).reshape(keys.shape[0], KEY_BYTES // 8)


class DeltaTable:
    """Delta entries by barcode: the newest in a dict (`pending`, cheap to write), the
    others in a hash table updated in place (cheap to hold): `compact` moves the dict's
    into the table, costing in proportion to the entries moved (plus, now and then, a
    doubling of the table)."""

    __slots__ = ("n", "packed", "pending", "pending_new", "postcode", "table", "words")

    def __init__(self) -> None:
        self.pending: dict[str, tuple[int, int]] = {}  # barcode -> (postcode, packed)
        self.pending_new = 0  # pending barcodes the table does not hold
        self.n = 0
        self.words = np.zeros((0, KEY_BYTES // 8), np.uint64)
        self.postcode = np.zeros(0, np.int64)
        self.packed = np.zeros(0, np.int64)
        self.table = np.zeros(0, np.int32)

    def nbytes(self) -> int:
        """Bytes in use (rows and table), not the capacity reserved."""
        return self.n * (KEY_BYTES + 16) + int(self.table.nbytes)

    def find(self, raw: bytes) -> int:
        """Row of a barcode's bytes (1-32 printable ASCII), -1 when absent."""
        if not self.n:
            return -1
        return int(_find_raw(raw, self.words, self.table))

    def table_rows(self, barcodes: list[str]) -> list[int]:
        """Rows of the table for these barcodes (-1 absent), in one call: the table does
        not change while a batch is applied (a compaction comes after)."""
        if not self.n or not barcodes:
            return [-1] * len(barcodes)
        return self.find_many(encode_keys(barcodes)).tolist()  # type: ignore[no-any-return]

    def current(self, barcode: str, table_row: int) -> tuple[int, int] | None:
        """The entry of a barcode (at `table_row` of the table unless a newer one waits in
        the dict), None when it has none."""
        entry = self.pending.get(barcode)
        if entry is not None or table_row < 0:
            return entry
        return int(self.postcode[table_row]), int(self.packed[table_row])

    def put(self, barcode: str, postcode: int, packed: int, new: bool) -> None:
        """A barcode's entry, into the dict; `new`: no entry had it."""
        self.pending[barcode] = (postcode, packed)
        if new:
            self.pending_new += 1

    def compact(self) -> None:
        """The dict's entries into the table."""
        pending = self.pending
        if not pending:
            return
        keys = encode_keys(list(pending))
        values = np.array(list(pending.values()), np.int64).reshape(len(pending), 2)
        self.upsert(keys, values[:, 0].copy(), values[:, 1].copy())
        pending.clear()
        self.pending_new = 0

    def find_many(self, keys: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        """Rows of many keys (sorter.manifest.encode_keys), -1 where absent."""
        out = np.full(keys.shape[0], -1, np.int64)
        if self.n:
            _find_many(_words_of(keys), self.words, self.table, out)
        return out

    def upsert(
        self,
        keys: npt.NDArray[np.uint8],
        postcode: npt.NDArray[np.int64],
        packed: npt.NDArray[np.int64],
    ) -> None:
        """Each key's entry, inserted or replaced, in order (a later equal key wins)."""
        m = keys.shape[0]
        if not m:
            return
        self.reserve(self.n + m)
        n = _upsert(
            self.words, self.postcode, self.packed, self.n, self.table, _words_of(keys),
            postcode, packed,
        )  # fmt: skip
        self.n = int(n)

    def reserve(self, rows: int) -> None:
        """Room for `rows` entries (rows reserved, not resident; the table sized)."""
        if rows > self.words.shape[0]:
            capacity = max(RESERVED_ROWS, 1 << (rows - 1).bit_length())
            # np.empty: pages no row reaches are never resident (address space only).
            words = np.empty((capacity, KEY_BYTES // 8), np.uint64)
            postcode = np.empty(capacity, np.int64)
            packed = np.empty(capacity, np.int64)
            words[: self.n] = self.words[: self.n]
            postcode[: self.n] = self.postcode[: self.n]
            packed[: self.n] = self.packed[: self.n]
            self.words, self.postcode, self.packed = words, postcode, packed
        if rows > _MAX_LOAD * self.table.shape[0]:
            slots = max(1 << 11, 1 << int(np.ceil(np.log2(rows / _MAX_LOAD))))
            table = np.full(slots, -1, np.int32)
            _rehash(self.words, self.n, table)
            self.table = table
