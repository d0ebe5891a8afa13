"""All loaded rows indexed for exact lookup: an open-addressing hash table over the full
key bytes, so a barcode not in the manifest never matches another's row."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sorter.manifest.files import FileReport, parse_manifest
from sorter.manifest.jit import kernel as _kernel
from sorter.manifest.jit import lookup_kernel as _lookup_kernel
from sorter.manifest.rows import KEY_BYTES, ManifestPart, ManifestRow, empty_part, unpack_row

__all__ = ["Manifest", "encode_key", "encode_keys", "raw_words", "warm"]

# Keys are compared and hashed as four 64-bit words (the 32 key bytes): a quarter of the
# work of a byte loop, and one cache line per key row.
_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xC2B2AE3D27D4EB4F)


@_lookup_kernel
def _hash4(w0: Any, w1: Any, w2: Any, w3: Any) -> np.uint64:
    h = np.uint64(0)
    for w in (w0, w1, w2, w3):
        h = (h ^ w) * _K1
        h ^= h >> np.uint64(29)
    h *= _K2
    h ^= h >> np.uint64(32)
    return h


@_lookup_kernel
def _hash(key: Any) -> np.uint64:
    return _hash4(key[0], key[1], key[2], key[3])


@_lookup_kernel
def _same(keys: Any, row: int, key: Any) -> bool:
    for i in range(keys.shape[1]):  # noqa: SIM110  (numba compiles the loop, not all())
        if keys[row, i] != key[i]:
            return False
    return True


@_lookup_kernel
def _build_table(keys: Any, n: int, table: Any) -> int:
    """Insert rows 0..n-1 in order; a later equal key takes the slot. Returns distinct keys."""
    mask = np.uint64(table.shape[0] - 1)
    distinct = 0
    for row in range(n):
        key = keys[row]
        slot = np.int64(_hash(key) & mask)
        while True:
            other = table[slot]
            if other < 0:
                table[slot] = row
                distinct += 1
                break
            if _same(keys, other, key):
                table[slot] = row
                break
            slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
    return distinct


@_lookup_kernel
def _find(keys: Any, table: Any, key: Any) -> int:
    mask = np.uint64(table.shape[0] - 1)
    slot = np.int64(_hash(key) & mask)
    while True:
        row = table[slot]
        if row < 0:
            return -1
        if _same(keys, row, key):
            return int(row)
        slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)


@_lookup_kernel
def _find_fields(
    keys: Any, table: Any, key: Any, postcode: Any, packed: Any
) -> tuple[int, int, int]:
    """(row, postcode, packed fields) in one call: the live path pays one dispatch."""
    row = _find(keys, table, key)
    if row < 0:
        return -1, -1, 0
    return row, postcode[row], packed[row]


@_lookup_kernel
def raw_words(raw: Any) -> tuple[Any, Any, Any, Any]:
    """The key words of a barcode's bytes (1-32), little-endian as key rows are viewed."""
    w0 = w1 = w2 = w3 = np.uint64(0)
    for i in range(len(raw)):
        b = np.uint64(raw[i]) << np.uint64(8 * (i % 8))
        word = i // 8
        if word == 0:
            w0 |= b
        elif word == 1:
            w1 |= b
        elif word == 2:
            w2 |= b
        else:
            w3 |= b
    return w0, w1, w2, w3


@_lookup_kernel
def _find_fields_bytes(
    keys: Any, table: Any, raw: Any, postcode: Any, packed: Any
) -> tuple[int, int, int]:
    """As _find_fields, straight from the barcode's bytes (1-32 printable ASCII): the words
    are assembled here, little-endian as the key rows are viewed, saving the live path an
    array per lookup."""
    w0, w1, w2, w3 = raw_words(raw)
    mask = np.uint64(table.shape[0] - 1)
    slot = np.int64(_hash4(w0, w1, w2, w3) & mask)
    while True:
        row = table[slot]
        if row < 0:
            return -1, -1, 0
        if keys[row, 0] == w0 and keys[row, 1] == w1 and keys[row, 2] == w2 and keys[row, 3] == w3:
            return row, postcode[row], packed[row]
        slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)


@_lookup_kernel
def _find_batch(keys: Any, table: Any, queries: Any, out: Any) -> None:
    for i in range(queries.shape[0]):
        out[i] = _find(keys, table, queries[i])


def _words(keys: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """(n, 32) bytes viewed as (n, 4) words, no copy."""
    return keys.view(np.uint64).reshape(keys.shape[0], KEY_BYTES // 8)


# What a manifest can hold: 1-32 printable ASCII characters. Anything else (a NUL that the
# zero padding would hide, a non-ASCII character) is in no manifest, and must not be made
# to look like a code that is.
_KEY_RE = re.compile(f"[!-~]{{1,{KEY_BYTES}}}")
_LITTLE_ENDIAN: Final = sys.byteorder == "little"


def encode_key(barcode: str) -> npt.NDArray[np.uint64] | None:
    """A barcode as the index stores it (4 words); None when it cannot be in any manifest."""
    if _KEY_RE.fullmatch(barcode) is None:
        return None
    return np.frombuffer(barcode.encode("ascii").ljust(KEY_BYTES, b"\0"), np.uint64)


def encode_keys(barcodes: Sequence[str]) -> npt.NDArray[np.uint8]:
    """Many barcodes at once (for batch lookups); ones no manifest can hold become all-zero
    keys, which match nothing."""
    fit = [b if _KEY_RE.fullmatch(b) else "" for b in barcodes]
    arr = np.array(fit, dtype=f"S{KEY_BYTES}")
    return arr.view(np.uint8).reshape(len(barcodes), KEY_BYTES)


def _combine(pieces: list[ManifestPart]) -> ManifestPart:
    """The pieces' rows in order, as one part; the list is emptied. A lone piece with rows
    that owns its arrays is the part itself, not a copy (a view is copied: it would keep
    all of what it views alive). Otherwise each piece is let go as soon as it is copied:
    a parsed part that nobody else holds is freed before the next is copied, so that the
    parsed rows and the combined arrays are not both whole at once."""
    total = sum(p.rows for p in pieces)
    full = [p for p in pieces if p.rows]
    pieces.clear()
    if not full:
        return empty_part()
    if len(full) == 1 and full[0].keys.base is None:
        return full[0]
    keys = np.empty((total, KEY_BYTES), np.uint8)
    postcode = np.empty(total, np.int64)
    packed = np.empty(total, np.int64)
    full.reverse()
    at = 0
    while full:
        piece = full.pop()
        n = piece.rows
        keys[at : at + n] = piece.keys
        postcode[at : at + n] = piece.postcode
        packed[at : at + n] = piece.packed
        at += n
        del piece
    return ManifestPart(keys, postcode, packed)


@_kernel
def _remap_destinations(packed: Any, mapping: Any, out: Any) -> None:
    """out = packed with each row's destination (bits 20-35, index + 1, 0 none) mapped by
    index onto another list: mapping[index], -1 for none. In one pass: the vectorised
    version held five temporaries of the column."""
    for i in range(packed.shape[0]):
        p = packed[i]
        old = (p >> 20) & 0xFFFF
        new = mapping[old - 1] + 1 if 0 < old <= mapping.shape[0] else 0
        out[i] = (p & ~(0xFFFF << 20)) | (new << 20)


class Manifest:
    """All loaded manifest rows, indexed for exact lookup. Immutable once built."""

    def __init__(
        self,
        parts: Sequence[ManifestPart] = (),
        reports: Sequence[FileReport] = (),
        destinations: Sequence[str] = (),
    ) -> None:
        self._index(_combine(list(parts)), reports, destinations)

    @classmethod
    def adopting(
        cls, pieces: list[ManifestPart], reports: Sequence[FileReport], destinations: Sequence[str]
    ) -> Manifest:
        """As Manifest(pieces, ...), emptying the list: pieces held by nobody else are freed
        as their rows are copied."""
        manifest = cls.__new__(cls)
        manifest._index(_combine(pieces), reports, destinations)
        return manifest

    def _index(
        self, whole: ManifestPart, reports: Sequence[FileReport], destinations: Sequence[str]
    ) -> None:
        self.part = whole
        self.reports = tuple(reports)
        self.destinations = tuple(destinations)
        n = whole.rows
        # Load factor at most 0.7: probes stay short, the table stays ~7 bytes a row.
        capacity = 1 << max(int(np.ceil(np.log2(max(n, 1) / 0.7))), 4)
        self.table = np.full(capacity, -1, np.int32)
        self._words = _words(whole.keys)
        self.size = int(_build_table(self._words, n, self.table)) if n else 0

    def sharing_index(
        self, part: ManifestPart, reports: Sequence[FileReport], destinations: Sequence[str]
    ) -> Manifest:
        """Another manifest over the same keys and table (same rows in the same order)."""
        clone = Manifest.__new__(Manifest)
        clone.part = part
        clone.reports = tuple(reports)
        clone.destinations = tuple(destinations)
        clone.table = self.table
        clone.size = self.size
        clone._words = self._words
        return clone

    @property
    def rows(self) -> int:
        return self.part.rows

    @property
    def words(self) -> npt.NDArray[np.uint64]:
        """The keys as (rows, 4) words, as the table's kernels read them."""
        return self._words

    @property
    def bad_rows(self) -> int:
        return sum(r.bad_rows for r in self.reports)

    def nbytes(self) -> int:
        p = self.part
        return int(p.keys.nbytes + p.postcode.nbytes + p.packed.nbytes + self.table.nbytes)

    def rows_between(self, start: int, stop: int) -> ManifestPart:
        """Rows start..stop-1, as views."""
        p = self.part
        return ManifestPart(p.keys[start:stop], p.postcode[start:stop], p.packed[start:stop])

    def find(self, barcode: str) -> int:
        """Row of the barcode, -1 when absent."""
        if not self.size:
            return -1
        key = encode_key(barcode)
        if key is None:
            return -1
        return int(_find(self._words, self.table, key))

    def find_batch(self, keys: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        """Rows of many keys (`encode_keys`), -1 where absent."""
        out = np.full(keys.shape[0], -1, np.int64)
        if self.size:
            _find_batch(self._words, self.table, _words(keys), out)
        return out

    def row(self, index: int) -> ManifestRow:
        return unpack_row(int(self.part.postcode[index]), int(self.part.packed[index]))

    def lookup(self, barcode: str) -> ManifestRow | None:
        """The row pre-advised for this barcode, or None; exact match only."""
        if not self.size or _KEY_RE.fullmatch(barcode) is None:
            return None
        if _LITTLE_ENDIAN:
            row, postcode, packed = _find_fields_bytes(
                self._words, self.table, barcode.encode("ascii"), self.part.postcode,
                self.part.packed,
            )  # fmt: skip
        else:
            key = encode_key(barcode)
            assert key is not None
            row, postcode, packed = _find_fields(
                self._words, self.table, key, self.part.postcode, self.part.packed
            )
        return None if row < 0 else unpack_row(postcode, packed)

    def for_destinations(self, destinations: Sequence[str]) -> Manifest:
        """The same rows, their destination column mapped onto another plan's names. Under
        the names it was built with, the manifest itself: the daemon builds with the plan's
        names, and a copy of the column would be 8 bytes a row held for nothing."""
        names = tuple(destinations)
        if names == self.destinations:
            return self
        mapping = np.array(
            [names.index(d) if d in names else -1 for d in self.destinations], dtype=np.int16
        )
        packed = np.empty_like(self.part.packed)
        _remap_destinations(self.part.packed, mapping, packed)
        part = ManifestPart(self.part.keys, self.part.postcode, packed)
        return self.sharing_index(part, self.reports, names)


def warm() -> None:
    """Compile (or load from numba's cache) the parser and the index before they are needed:
    compiling holds the GIL, and a first manifest arriving mid-shift must not freeze the
    event loop for a second."""
    data = (
        b"barcode,destination,postcode,country,service,customs,weight_g,origin\n"
        b"A1,X,20000,MA,EE,hold,5,CN\n"
    )
    part, report = parse_manifest(data, "<warm-up>", ["X"])
    manifest = Manifest([part], [report], ["X"])
    manifest.lookup("A1")
    manifest.lookup("B2")
    manifest.find_batch(encode_keys(["A1"]))
    manifest.for_destinations(["Y", "X"]).lookup("A1")  # a plan reload's remapping
