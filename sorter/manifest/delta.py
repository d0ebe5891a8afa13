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
use are resident. A retired entry (RETIRE: the feeds' retention) leaves the table by a
backward shift and the last row moves into its row: rows stay dense, no tombstones.

Updates (sorter.feeds.FeedPacker: key words, postcode, a code word) are merged into the
table by one numba call (`DeltaTable.merge`), which reads the entry there for what an
update keeps of it: a row without a customs value keeps a customs message's decision; a
customs decision keeps the row's fields.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sorter.manifest.index import _hash4, raw_words
from sorter.manifest.jit import lookup_kernel as _lookup_kernel
from sorter.manifest.rows import KEY_BYTES

__all__ = [
    "FIELDS_MASK",
    "HAS_ROW",
    "HOLD_BIT",
    "KEEP_OVERRIDE",
    "NO_ROW",
    "OVERRIDE_HOLD",
    "OVERRIDE_SET",
    "RESERVED_ROWS",
    "RETIRE",
    "SOURCE_CUSTOMS",
    "SOURCE_FEED",
    "SOURCE_FILE",
    "SOURCE_NONE",
    "DeltaTable",
    "find_live",
    "find_live_batch",
    "resolve_entry",
    "words_of",
]

HOLD_BIT: Final = 1 << 41  # the manifest's customs hold (sorter.manifest.rows.pack_fields)
FIELDS_MASK: Final = (1 << 52) - 1  # every field pack_fields writes
HAS_ROW: Final = 1 << 52
OVERRIDE_SET: Final = 1 << 53
OVERRIDE_HOLD: Final = 1 << 54
# In a lookup's answer: no row anywhere, only a customs decision (unpack_row ignores it).
NO_ROW: Final = 1 << 55
# In an update's code only (never stored): a row without a customs value keeps the customs
# message's decision in force (OVERRIDE_*); RETIRE removes the barcode's entry.
KEEP_OVERRIDE: Final = 1 << 56
RETIRE: Final = 1 << 57
_OVERRIDE_BITS: Final = OVERRIDE_SET | OVERRIDE_HOLD
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
def _slot_of(words: Any, table: Any, row: int) -> int:
    """The table slot that holds `row`."""
    mask = np.uint64(table.shape[0] - 1)
    slot = np.int64(_hash4(words[row, 0], words[row, 1], words[row, 2], words[row, 3]) & mask)
    while table[slot] != row:
        slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
    return int(slot)


@_lookup_kernel
def _remove(words: Any, pc: Any, packed: Any, n: int, table: Any, slot: Any) -> int:
    """Empty `slot` (linear probing's backward shift: no tombstones) and move the last row
    into the row it held, so that rows stay dense; returns the rows now used."""
    row = table[slot]
    mask = np.uint64(table.shape[0] - 1)
    i = slot
    j = slot
    while True:
        j = np.int64((np.uint64(j) + np.uint64(1)) & mask)
        r = table[j]
        if r < 0:
            break
        home = np.int64(_hash4(words[r, 0], words[r, 1], words[r, 2], words[r, 3]) & mask)
        stays = (i < home <= j) if i <= j else (home > i or home <= j)
        if not stays:
            table[i] = r
            i = j
    table[i] = -1
    last = n - 1
    if row != last:
        table[_slot_of(words, table, last)] = row
        for k in range(4):
            words[row, k] = words[last, k]
        pc[row] = pc[last]
        packed[row] = packed[last]
    return last


@_lookup_kernel
def _merge(
    words: Any, pc: Any, packed: Any, n: int, table: Any,
    new_words: Any, new_pc: Any, new_code: Any, start: int, stop: int,
) -> int:  # fmt: skip
    """Apply updates start..stop-1 in order (sorter.feeds.FeedPacker makes them); returns
    the rows now used. A row's code carries its fields and HAS_ROW (and KEEP_OVERRIDE:
    the entry's customs decision stays); a customs decision's code its OVERRIDE bits over
    whatever the entry has; RETIRE removes the entry. The caller made room: rows for n +
    (stop - start), and a table that stays under its load factor."""
    mask = np.uint64(table.shape[0] - 1)
    for i in range(start, stop):
        w0, w1, w2, w3 = new_words[i, 0], new_words[i, 1], new_words[i, 2], new_words[i, 3]
        code = new_code[i]
        slot = np.int64(_hash4(w0, w1, w2, w3) & mask)
        while True:
            row = table[slot]
            if row < 0:
                break
            same = words[row, 0] == w0 and words[row, 1] == w1
            if same and words[row, 2] == w2 and words[row, 3] == w3:
                break
            slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
        if code & RETIRE:
            if row >= 0:
                n = _remove(words, pc, packed, n, table, slot)
            continue
        if row < 0:
            row = n
            for k in range(4):
                words[row, k] = new_words[i, k]
            table[slot] = row
            n += 1
            old_pc, old = np.int64(_NO_POSTCODE), np.int64(0)
        else:
            old_pc, old = pc[row], packed[row]
        if code & HAS_ROW:
            value = code & ~np.int64(KEEP_OVERRIDE)
            if code & KEEP_OVERRIDE:
                value |= old & np.int64(_OVERRIDE_BITS)
            pc[row] = new_pc[i]
        else:
            value = (old & ~np.int64(_OVERRIDE_BITS)) | code
            pc[row] = old_pc
        packed[row] = value
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


def words_of(keys: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """Keys (sorter.manifest.encode_keys) as their (n, 4) words."""
    return keys.view(np.uint64).reshape(keys.shape[0], KEY_BYTES // 8)


class DeltaTable:
    """Delta entries by barcode in a hash table updated in place: `merge` costs in
    proportion to the updates (plus, now and then, a doubling of the table)."""

    __slots__ = ("n", "packed", "postcode", "table", "words")

    def __init__(self) -> None:
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

    def find_many(self, keys: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        """Rows of many keys (sorter.manifest.encode_keys), -1 where absent."""
        out = np.full(keys.shape[0], -1, np.int64)
        if self.n:
            _find_many(words_of(keys), self.words, self.table, out)
        return out

    def merge(
        self,
        words: npt.NDArray[np.uint64],
        postcode: npt.NDArray[np.int64],
        code: npt.NDArray[np.int64],
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        """Updates start..stop-1 ((m, 4) key words, postcodes, codes as
        sorter.feeds.FeedPacker makes them), in order, in one call."""
        stop = words.shape[0] if stop is None else stop
        if stop <= start:
            return
        self.reserve(self.n + stop - start)
        n = _merge(
            self.words, self.postcode, self.packed, self.n, self.table, words, postcode, code,
            start, stop,
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
