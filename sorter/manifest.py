"""Shipper pre-advice (manifests): tracking number -> destination data, at hub scale.

A manifest is a CSV file with a header: `barcode` and at least one of `destination`,
`postcode`, `country`, `origin`; optionally `service`, `customs`, `weight_g` (validated, not
used); gzip-compressed when the
name ends in `.gz`. Other columns are ignored. Rows are parsed by a numba parser straight
from the file's bytes, and indexed by an open-addressing hash table over the full barcode
bytes: a barcode that is not in the manifest never matches another's row, whatever the
hashes do. Later rows for the same barcode replace earlier ones (files in order of
modification time, then name).

Memory per row: the barcode in 32 bytes, the postcode's code and the other fields in 16,
the table ~7: under 64 bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

from sorter.config import Problem
from sorter.countries import ISO_ALPHA2
from sorter.postcode import MAX_POSTCODE_CHARS, NO_POSTCODE, UNUSABLE_POSTCODE

__all__ = [
    "BAD_REASONS",
    "COLUMNS",
    "KEY_BYTES",
    "MAX_BAD_LINES_KEPT",
    "MAX_DEST_NAME_BYTES",
    "READ_CHUNK_BYTES",
    "ROUTING_COLUMNS",
    "FileReport",
    "FileSignature",
    "Manifest",
    "ManifestPart",
    "ManifestRow",
    "ManifestSource",
    "Readable",
    "encode_key",
    "encode_keys",
    "file_order_key",
    "load_file",
    "load_manifests",
    "pack_fields",
    "parse_manifest",
    "parse_stream",
    "unpack_row",
    "warm",
]

KEY_BYTES: Final = 32
MAX_DEST_NAME_BYTES: Final = 64
MAX_BAD_LINES_KEPT: Final = 100  # per file; every bad row is counted

COLUMNS: Final = (
    "barcode", "destination", "postcode", "country", "service", "customs", "weight_g", "origin",
)  # fmt: skip
# Column roles inside the numba parser.
(
    _C_IGNORE, _C_BARCODE, _C_DEST, _C_POSTCODE, _C_COUNTRY, _C_SERVICE, _C_CUSTOMS, _C_WEIGHT,
    _C_ORIGIN,
) = range(9)  # fmt: skip
# What a row must give besides its barcode (any one of them).
ROUTING_COLUMNS: Final = ("destination", "postcode", "country", "origin")

BAD_REASONS: Final = {
    1: "missing barcode",
    2: f"barcode longer than {KEY_BYTES} characters or not printable ASCII",
    3: "country is not an ISO 3166-1 alpha-2 code",
    4: "service is not a two-letter code",
    5: "customs is not one of hold, yes, no, clear, release, none",
    6: "weight_g is not a whole number of grams",
    7: "destination is not a destination of the sort plan",
    8: "wrong number of fields",
    9: "no destination, postcode, country or origin",
    10: "unterminated quoted field",
    11: "origin is not an ISO 3166-1 alpha-2 code",
}

_F = TypeVar("_F", bound=Callable[..., Any])


def _kernel(fn: _F) -> _F:
    return cast(_F, njit(cache=True, nogil=True, error_model="numpy")(fn))


def _lookup_kernel(fn: _F) -> _F:
    """Without numba's runtime: the lookups never allocate, and the reference counting of
    the key rows they slice costs more than the lookup itself (see sorter.kernel)."""
    dispatcher = njit(  # type: ignore[call-overload]  # _nrt is not in numba's stubs
        fn, cache=True, nogil=True, error_model="numpy", _nrt=False
    )
    return cast(_F, dispatcher)


class ManifestRow(NamedTuple):
    postcode: int  # sorter.postcode's code; NO_POSTCODE (-1) none, UNUSABLE_POSTCODE (-2)
    postcode_digits: int  # its length when all digits, else 0
    country: int  # destination country, 0..675 two-letter index, -1 none
    service: int
    destination: int  # index into the plan's destinations at load, -1 none
    customs_hold: bool
    origin: int  # where the item was posted, two-letter index, -1 none


# Officially assigned ISO 3166-1 alpha-2 codes as a table the parser indexes by letter pair.
_ISO_TABLE: Final = np.zeros(26 * 26, np.bool_)
for _code in ISO_ALPHA2:
    _ISO_TABLE[(ord(_code[0]) - 65) * 26 + ord(_code[1]) - 65] = True
# The postcode character codes of sorter.postcode: 0-9 -> 1..10, A-Z -> 11..36.
_PC_BITS: Final = 6


# --- parsing -----------------------------------------------------------------------------


@_kernel
def _upper(b: int) -> int:
    return b - 32 if 97 <= b <= 122 else b


@_kernel
def _letters(buf: Any, s: int, e: int) -> int:
    """Two letters (any case) -> 0..675; -1 for an empty field; -2 for anything else."""
    if e == s:
        return -1
    if e - s != 2:
        return -2
    a = _upper(buf[s]) - 65
    b = _upper(buf[s + 1]) - 65
    if 0 <= a < 26 and 0 <= b < 26:
        return a * 26 + b
    return -2


@_kernel
def _postcode_code(buf: Any, s: int, e: int) -> tuple[int, int]:
    """(code, digit count) of a postcode field, as sorter.postcode.encode_postcode: spaces
    and hyphens dropped, letters upper-cased; UNUSABLE_POSTCODE beyond 10 characters or
    with any other byte."""
    code = 0
    n = 0
    digits_only = True
    for i in range(s, e):
        b = _upper(buf[i])
        if b in (32, 45):
            continue
        if 48 <= b <= 57:
            v = b - 47
        elif 65 <= b <= 90:
            v = b - 54
            digits_only = False
        else:
            return UNUSABLE_POSTCODE, 0
        n += 1
        if n > MAX_POSTCODE_CHARS:
            return UNUSABLE_POSTCODE, 0
        code = (code << _PC_BITS) | v
    if n == 0:
        return NO_POSTCODE, 0  # only blanks and hyphens: as an empty field
    return code << (_PC_BITS * (MAX_POSTCODE_CHARS - n)), n if digits_only else 0


@_kernel
def _field_is(buf: Any, s: int, e: int, word: Any) -> bool:
    if e - s != word.shape[0]:
        return False
    for i in range(e - s):
        if _upper(buf[s + i]) != word[i]:
            return False
    return True


# One row's fields while it is read, in a small array the parse allocates once.
_PC, _DIGITS, _CTRY, _ORIG, _SERV, _DST, _HOLD, _HAS_KEY = range(8)
_ROW_SLOTS: Final = 8


@_kernel
def _quoted_field(buf: Any, pos: int, line: int) -> tuple[int, int, int, int, bool, int]:
    """The field whose opening quote is at buf[pos], honouring "" inside: (start, end,
    position of the separator after it, line, whether it holds "", reason: 10 when the
    closing quote is missing)."""
    n = buf.shape[0]
    pos += 1
    s = pos
    has_escape = False
    while pos < n:
        if buf[pos] == 34:
            if pos + 1 < n and buf[pos + 1] == 34:
                has_escape = True
                pos += 2
                continue
            break
        if buf[pos] == 10:
            line += 1  # a line break inside quotes: line numbers stay true
        pos += 1
    reason = 0
    if pos >= n:
        reason = 10
        e = n
    else:
        e = pos
        pos += 1  # closing quote
    # Anything up to the separator after a closing quote is ignored.
    while pos < n and buf[pos] != 44 and buf[pos] != 10:
        pos += 1
    return s, e, pos, line, has_escape, reason


@_kernel
def _plain_field(buf: Any, pos: int) -> tuple[int, int, int]:
    """An unquoted field from buf[pos]: (start, end without the CR of CR LF, separator)."""
    n = buf.shape[0]
    s = pos
    while pos < n and buf[pos] != 44 and buf[pos] != 10:
        pos += 1
    e = pos
    if e > s and buf[e - 1] == 13 and (pos >= n or buf[pos] == 10):
        e -= 1  # CR of CR LF
    return s, e, pos


@_kernel
def _split_record(
    buf: Any, pos: int, line: int, fs: Any, fe: Any, quoted: Any, escaped: Any
) -> tuple[int, int, int, int]:
    """Split the record at buf[pos] into fields (their bounds in fs/fe, without quotes and
    blanks around): (position after its newline, which is past the end when it has none;
    last line read; fields found; reason it is bad, 0 none)."""
    n = buf.shape[0]
    col = 0
    reason = 0
    while True:
        in_quotes = pos < n and buf[pos] == 34
        has_escape = False
        if in_quotes:
            s, e, pos, line, has_escape, field_reason = _quoted_field(buf, pos, line)
            if field_reason:
                reason = field_reason
        else:
            s, e, pos = _plain_field(buf, pos)
        # Trim blanks around the content (shippers pad quoted fields too).
        while s < e and buf[s] == 32:
            s += 1
        while e > s and buf[e - 1] == 32:
            e -= 1
        if col < fs.shape[0]:
            fs[col] = s
            fe[col] = e
            quoted[col] = in_quotes
            escaped[col] = has_escape
        col += 1
        if pos < n and buf[pos] == 44:
            pos += 1
            continue
        return pos + 1, line, col, reason  # past the newline (or past the end)


@_kernel
def _unescape(buf: Any, s: int, e: int, scratch: Any) -> tuple[int, int]:
    """Copy buf[s:e] with each "" collapsed to " into the second half of scratch; its
    bounds there."""
    half = scratch.shape[0] // 2
    k = half
    i = s
    while i < e:
        scratch[k] = buf[i]
        k += 1
        i += 2 if buf[i] == 34 and i + 1 < e and buf[i + 1] == 34 else 1
    return half, k


@_kernel
def _barcode_reason(src: Any, s: int, e: int, width: int) -> int:
    """0 for a barcode the index can hold (1-32 printable ASCII), else the bad reason."""
    if e == s:
        return 1
    if e - s > width:
        return 2
    for i in range(s, e):
        if src[i] < 33 or src[i] > 126:
            return 2
    return 0


@_kernel
def _destination(src: Any, s: int, e: int, dest_names: Any, dest_lens: Any) -> int:
    """Index of the destination named src[s:e] (exact bytes), -1 for none."""
    for k in range(dest_names.shape[0]):
        length = dest_lens[k]
        if length == e - s:
            same = True
            for i in range(length):
                if dest_names[k, i] != src[s + i]:
                    same = False
                    break
            if same:
                return k
    return -1


@_kernel
def _customs_hold(buf: Any, s: int, e: int, words: Any, word_lens: Any) -> int:
    """1 for a hold word, 0 for a release word, -1 for neither."""
    for w in range(words.shape[0]):
        if _field_is(buf, s, e, words[w, : word_lens[w]]):
            return 1 if w < 2 else 0
    return -1


@_kernel
def _weight_ok(buf: Any, s: int, e: int) -> bool:
    """A whole number of grams, at most 9 digits."""
    if e - s > 9:
        return False
    for i in range(s, e):
        d = buf[i] - 48
        if d < 0 or d > 9:
            return False
    return True


@_kernel
def _named_field(
    role: int, buf: Any, s: int, e: int, escaped: bool, scratch: Any,
    keys: Any, good: int, dest_names: Any, dest_lens: Any, row: Any,
) -> int:  # fmt: skip
    """The barcode (copied into keys[good]) or the destination: the two fields read as
    exact bytes, "" collapsed. Returns the bad reason, 0 none."""
    src = buf
    if escaped:
        if e - s > scratch.shape[0] // 2:
            return 2 if role == _C_BARCODE else 7
        s, e = _unescape(buf, s, e, scratch)
        src = scratch
    if role == _C_BARCODE:
        reason = _barcode_reason(src, s, e, keys.shape[1])
        if reason == 0:
            row[_HAS_KEY] = 1
            for i in range(keys.shape[1]):
                keys[good, i] = src[s + i] if s + i < e else 0
        return reason
    if e > s:
        row[_DST] = _destination(src, s, e, dest_names, dest_lens)
        if row[_DST] < 0:
            return 7
    return 0


@_kernel
def _attribute_field(
    role: int, buf: Any, s: int, e: int, words: Any, word_lens: Any, iso: Any, row: Any
) -> int:
    """Postcode, country, origin, service, customs or weight into row; the bad reason, 0
    none. Other columns are ignored."""
    if role == _C_POSTCODE:
        if e > s:
            row[_PC], row[_DIGITS] = _postcode_code(buf, s, e)
        return 0
    if role in (_C_COUNTRY, _C_ORIGIN):
        code = _letters(buf, s, e)
        if code == -2 or (code >= 0 and not iso[code]):
            return 3 if role == _C_COUNTRY else 11
        row[_CTRY if role == _C_COUNTRY else _ORIG] = code
        return 0
    if role == _C_SERVICE:
        row[_SERV] = _letters(buf, s, e)
        return 4 if row[_SERV] == -2 else 0
    if e == s:
        return 0
    if role == _C_CUSTOMS:
        row[_HOLD] = _customs_hold(buf, s, e, words, word_lens)
        return 5 if row[_HOLD] < 0 else 0
    if role == _C_WEIGHT and not _weight_ok(buf, s, e):
        return 6
    return 0


@_kernel
def _read_row(
    buf: Any, roles: Any, fs: Any, fe: Any, escaped: Any, scratch: Any, tables: Any,
    keys: Any, good: int, row: Any,
) -> int:  # fmt: skip
    """Every field of one well-formed record into row (the barcode into keys[good]); the
    bad reason, 0 none. `tables`: destination names and lengths, customs words and
    lengths, the ISO table."""
    dest_names, dest_lens, words, word_lens, iso = tables
    row[_PC] = NO_POSTCODE
    row[_DIGITS] = 0
    row[_CTRY] = row[_ORIG] = row[_SERV] = row[_DST] = -1
    row[_HOLD] = row[_HAS_KEY] = 0
    for c in range(roles.shape[0]):
        role = roles[c]
        if role in (_C_BARCODE, _C_DEST):
            reason = _named_field(
                role, buf, fs[c], fe[c], escaped[c], scratch, keys, good, dest_names,
                dest_lens, row,
            )  # fmt: skip
        else:
            reason = _attribute_field(role, buf, fs[c], fe[c], words, word_lens, iso, row)
        if reason:
            return reason
    if not row[_HAS_KEY]:
        return 1
    if row[_DST] < 0 and row[_PC] == NO_POSTCODE and row[_CTRY] < 0 and row[_ORIG] < 0:
        return 9
    return 0


@_kernel
def _packed_row(row: Any) -> int:
    """As pack_fields, for one row: the parse needs no column arrays of its own."""
    packed: int = (
        (row[_CTRY] + 1)
        | (row[_SERV] + 1) << 10
        | (row[_DST] + 1) << 20
        | row[_DIGITS] << 36
        | row[_HOLD] << 41
        | (row[_ORIG] + 1) << 42
    )
    return packed


@_kernel
def _parse(
    buf: Any, start: int, final: bool, roles: Any, dest_names: Any, dest_lens: Any,
    words: Any, word_lens: Any, iso: Any, line: int, good: int, bad: int, keys: Any,
    postcode: Any, packed: Any, bad_lines: Any, bad_reasons: Any,
) -> tuple[int, int, int, int]:  # fmt: skip
    """Parse data rows from buf[start:] into keys, postcode and packed from row `good` on.

    `line` is the number of the last line already read, `good` and `bad` the rows so far.
    Returns (good rows, bad rows, last line read, bytes of buf consumed). Unless `final`,
    a record that does not end with its newline inside buf is left for the next call,
    with the rest of the file after it: a record's fields depend on no byte after that
    newline, so rows parsed a chunk at a time are the rows of the whole. Parsing also
    stops before a record when the outputs are full (the caller makes room and calls
    again). Bad rows beyond the length of bad_lines are counted but not kept. Field
    boundaries are found with a small state machine that honours double quotes ("" inside
    quotes is a quote) and CR LF line ends.
    """
    n = buf.shape[0]
    n_cols = roles.shape[0]
    fs = np.empty(n_cols, np.int64)  # field starts and ends, without the quotes
    fe = np.empty(n_cols, np.int64)
    quoted = np.zeros(n_cols, np.bool_)
    escaped = np.zeros(n_cols, np.bool_)  # the field holds "" pairs, each one quote
    scratch = np.empty(2 * MAX_DEST_NAME_BYTES + 2 * KEY_BYTES, np.uint8)
    row = np.empty(_ROW_SLOTS, np.int64)
    tables = (dest_names, dest_lens, words, word_lens, iso)
    pos = start
    while pos < n:
        if good >= keys.shape[0]:
            return good, bad, line, pos  # no room: numba does not check bounds
        record_start = pos
        line_before = line
        row_line = line + 1  # a quoted line break moves `line` on; the row starts here
        pos, line, col, reason = _split_record(buf, pos, row_line, fs, fe, quoted, escaped)
        if pos > n and not final:
            return good, bad, line_before, record_start  # its newline is in the next chunk
        if col == 1 and fe[0] == fs[0] and not quoted[0]:
            continue  # a blank line
        if reason == 0 and col != n_cols:
            reason = 8
        if reason == 0:
            reason = _read_row(buf, roles, fs, fe, escaped, scratch, tables, keys, good, row)
        if reason:
            if bad < bad_lines.shape[0]:
                bad_lines[bad] = row_line
                bad_reasons[bad] = reason
            bad += 1
            continue
        postcode[good] = row[_PC]
        packed[good] = _packed_row(row)
        good += 1
    return good, bad, line, n


@_kernel
def _newlines(buf: Any, start: int) -> tuple[int, int]:
    """(how many newlines buf[start:] holds, the position of the first; -1 without any):
    counted here, the chunk needs no temporary array of comparisons."""
    count = 0
    first = -1
    for i in range(start, buf.shape[0]):
        if buf[i] == 10:
            if count == 0:
                first = i
            count += 1
    return count, first


# --- the index ---------------------------------------------------------------------------


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
    for i in range(keys.shape[1]):
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
def _find_fields_bytes(
    keys: Any, table: Any, raw: Any, postcode: Any, packed: Any
) -> tuple[int, int, int]:
    """As _find_fields, straight from the barcode's bytes (1-32 printable ASCII): the words
    are assembled here, little-endian as the key rows are viewed, saving the live path an
    array per lookup."""
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


# --- files -------------------------------------------------------------------------------


@dataclass(slots=True)
class FileReport:
    """What loading one manifest file found."""

    path: str
    rows: int = 0
    bad_rows: int = 0
    lines: int = 0
    problems: list[Problem] = field(default_factory=list)  # first bad lines, or why unreadable
    readable: bool = True


@dataclass(slots=True)
class ManifestPart:
    """Parsed rows: the key, the postcode's code, and the other fields packed in 64 bits
    (country+1: 10 bits, service+1: 10, destination+1: 16, postcode digits: 5, customs
    hold: 1, origin+1: 10), so that a lookup reads two words and a row costs 48 bytes."""

    keys: npt.NDArray[np.uint8]  # (n, 32), zero padded
    postcode: npt.NDArray[np.int64]
    packed: npt.NDArray[np.int64]

    @property
    def rows(self) -> int:
        return int(self.keys.shape[0])


def pack_fields(
    pc_digits: npt.NDArray[Any],
    country: npt.NDArray[Any],
    service: npt.NDArray[Any],
    dest: npt.NDArray[Any],
    customs: npt.NDArray[Any],
    origin: npt.NDArray[Any],
) -> npt.NDArray[np.int64]:
    i64 = np.int64
    return (
        (country.astype(i64) + 1)
        | (service.astype(i64) + 1) << 10
        | (dest.astype(i64) + 1) << 20
        | pc_digits.astype(i64) << 36
        | customs.astype(i64) << 41
        | (origin.astype(i64) + 1) << 42
    )


def unpack_row(postcode: int, packed: int) -> ManifestRow:
    return ManifestRow(
        postcode,
        (packed >> 36) & 31,
        (packed & 1023) - 1,
        ((packed >> 10) & 1023) - 1,
        ((packed >> 20) & 0xFFFF) - 1,
        bool((packed >> 41) & 1),
        ((packed >> 42) & 1023) - 1,
    )


_CUSTOMS_WORDS = ("HOLD", "YES", "NO", "CLEAR", "RELEASE", "NONE")


def _name_matrix(names: Sequence[str]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    encoded = [n.encode("utf-8")[:MAX_DEST_NAME_BYTES] for n in names]
    width = max([len(e) for e in encoded] + [1])
    mat = np.zeros((max(len(encoded), 1), width), np.uint8)
    lens = np.full(max(len(encoded), 1), -1, np.int64)
    for i, e in enumerate(encoded):
        mat[i, : len(e)] = np.frombuffer(e, np.uint8)
        lens[i] = len(e)
    return mat, lens


_WORDS, _WORD_LENS = _name_matrix(_CUSTOMS_WORDS)


def _empty_part() -> ManifestPart:
    return ManifestPart(
        np.zeros((0, KEY_BYTES), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
    )


# The file is read and parsed this many bytes at a time: what a load holds besides the
# rows, whatever the file's size (a record longer than this is read whole).
READ_CHUNK_BYTES: Final = 1 << 20


class _FileParser:
    """One file's rows, parsed from its bytes a chunk at a time (`feed`), into arrays sized
    once from the file's size, grown if they must be, and trimmed in place at the end
    (`finish`): the load never holds the whole file, nor rows' worth of arrays that are
    copied once more."""

    def __init__(self, file: str, destinations: Sequence[str], size_hint: int = 0) -> None:
        self.report = FileReport(file)
        self._size_hint = size_hint  # the file's bytes, as far as known; 0 unknown
        self._names, self._lens = _name_matrix(destinations)
        self._roles: npt.NDArray[np.int64] | None = None
        self._keys = np.empty((0, KEY_BYTES), np.uint8)
        self._postcode = np.empty(0, np.int64)
        self._packed = np.empty(0, np.int64)
        self._good = 0
        self._bad = 0
        self._line = 1  # the header's
        self._bad_lines = np.zeros(MAX_BAD_LINES_KEPT, np.int64)
        self._bad_reasons = np.zeros(MAX_BAD_LINES_KEPT, np.int8)

    def feed(self, buf: npt.NDArray[np.uint8], *, final: bool) -> int:
        """Parse the complete records at the start of buf (all of it when `final`); returns
        the bytes consumed. The rest is to come again, followed by the next bytes."""
        start = 0
        if self._roles is None:
            if not self.report.readable:
                # A refused header: the rest is read, not parsed, so that a gzip file
                # corrupt further on is still reported as unreadable, as when read whole.
                return len(buf)
            start = self._header(buf, final=final)
            if start < 0:
                return 0  # the header line is not all here yet
            if self._roles is None:
                return len(buf)
        consumed = start
        while True:
            newlines = int(_newlines(buf, consumed)[0])
            needed = self._good + newlines + 1
            if needed > len(self._keys):
                self._make_room(needed, newlines, len(buf) - consumed)
            roles = self._roles
            good, bad, line, end = _parse(
                buf, consumed, final, roles, self._names, self._lens, _WORDS, _WORD_LENS,
                _ISO_TABLE, self._line, self._good, self._bad, self._keys, self._postcode,
                self._packed, self._bad_lines, self._bad_reasons,
            )  # fmt: skip
            self._good, self._bad, self._line = int(good), int(bad), int(line)
            progressed = end > consumed
            consumed = int(end)
            if consumed == len(buf) or self._good < self._keys.shape[0] or not progressed:
                return consumed

    def _make_room(self, needed: int, newlines: int, chunk_bytes: int) -> None:
        if not len(self._keys) and self._size_hint > chunk_bytes:
            # The whole file's rows at this first chunk's rows per byte, and a little more.
            # Allocated, not written: pages that no row reaches never become resident,
            # and the shrink in `finish` gives them back.
            rows = (newlines + 1) * self._size_hint // max(chunk_bytes, 1)
            rows = max(needed, rows + rows // 32 + 64)
            with contextlib.suppress(MemoryError):  # a wild hint: grow as the rows come
                self._keys = np.empty((rows, KEY_BYTES), np.uint8)
                self._postcode = np.empty(rows, np.int64)
                self._packed = np.empty(rows, np.int64)
                return
        # resize reallocates: large arrays are mremapped on Linux, not copied; the new rows
        # are zeroed (resident), and most are written by the parse right after.
        self._keys.resize((needed, KEY_BYTES), refcheck=False)
        self._postcode.resize(needed, refcheck=False)
        self._packed.resize(needed, refcheck=False)

    def _header(self, buf: npt.NDArray[np.uint8], *, final: bool) -> int:
        """Read the header line: where the data rows start; -1 when its end is not in buf
        yet. A refused header leaves the roles unset, with the problem reported."""
        end = int(_newlines(buf, 0)[1])
        if end < 0:
            if not final:
                return -1
            end = len(buf)  # a header and nothing else
        bom = 3 if buf[:3].tobytes() == b"\xef\xbb\xbf" else 0
        file = self.report.path
        try:
            header_text = buf[bom:end].tobytes().decode("utf-8").strip("\r")
        except UnicodeDecodeError:
            self.report.readable = False
            self.report.problems.append(Problem(file, "line 1", "header is not UTF-8 text"))
            return end
        header = [h.strip().strip('"').lower() for h in header_text.split(",")]
        if "barcode" not in header or not set(ROUTING_COLUMNS) & set(header):
            self.report.readable = False
            self.report.problems.append(
                Problem(
                    file,
                    "line 1",
                    f"header needs barcode and at least one of {', '.join(ROUTING_COLUMNS)}",
                )
            )
            return end
        self._roles = np.array(
            [COLUMNS.index(h) + 1 if h in COLUMNS else _C_IGNORE for h in header],
            dtype=np.int64,
        )
        return min(end + 1, len(buf))

    def finish(self) -> tuple[ManifestPart, FileReport]:
        report = self.report
        if self._roles is None:
            return _empty_part(), report
        g, bad = self._good, self._bad
        report.rows, report.bad_rows, report.lines = g, bad, self._line - 1
        kept = min(bad, MAX_BAD_LINES_KEPT)
        lines, reasons = self._bad_lines[:kept].tolist(), self._bad_reasons[:kept].tolist()
        for line, reason in zip(lines, reasons, strict=True):
            report.problems.append(Problem(report.path, f"line {line}", BAD_REASONS[reason]))
        # Trimmed in place (realloc): no second copy of the rows, not even for a moment.
        self._keys.resize((g, KEY_BYTES), refcheck=False)
        self._postcode.resize(g, refcheck=False)
        self._packed.resize(g, refcheck=False)
        part = ManifestPart(self._keys, self._postcode, self._packed)
        empty = _empty_part()
        self._keys, self._postcode, self._packed = empty.keys, empty.postcode, empty.packed
        return part, report


def parse_manifest(
    data: bytes | bytearray, file: str, destinations: Sequence[str]
) -> tuple[ManifestPart, FileReport]:
    """Parse one manifest's bytes; bad rows are counted and the first ones named by line."""
    parser = _FileParser(file, destinations)
    # Writable bytes: the parser is compiled for one array type.
    buf = np.frombuffer(bytearray(data) if isinstance(data, bytes) else data, np.uint8)
    parser.feed(buf, final=True)
    return parser.finish()


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


def parse_stream(
    stream: Readable,
    file: str,
    destinations: Sequence[str],
    chunk_bytes: int = READ_CHUNK_BYTES,
    size_hint: int = 0,
) -> tuple[ManifestPart, FileReport]:
    """Parse a manifest read from a stream, a chunk at a time; as parse_manifest of all its
    bytes. `size_hint`, the bytes expected, sizes the rows' arrays at once."""
    parser = _FileParser(file, destinations, size_hint)
    buf = np.empty(max(chunk_bytes, 1), np.uint8)
    filled = 0
    while True:
        if filled == buf.shape[0]:
            # One record fills the buffer: twice the room, so that reading it again from
            # its start each time costs no more than reading it once more.
            bigger = np.empty(2 * buf.shape[0], np.uint8)
            bigger[:filled] = buf[:filled]
            buf = bigger
        n = stream.readinto(buf.data[filled:])
        final = not n
        filled += n or 0
        consumed = parser.feed(buf[:filled], final=final)
        if final:
            return parser.finish()
        rest = filled - consumed
        buf[:rest] = buf[consumed:filled].copy()
        filled = rest


def _gzip_size(path: Path, compressed: int) -> int:
    """The uncompressed size a gzip file's trailer states (that of its last member, modulo
    4 GiB), when plausible (deflate packs at most ~1032 to 1); 0 otherwise. A hint only."""
    if compressed < 18:
        return 0
    with path.open("rb") as f:
        f.seek(-4, 2)
        size = int.from_bytes(f.read(4), "little")
    return size if size <= 1032 * compressed else 0


def load_file(path: Path, destinations: Sequence[str]) -> tuple[ManifestPart, FileReport]:
    """One manifest file; an unreadable one is reported and contributes nothing."""
    try:
        size = path.stat().st_size
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as z:
                return parse_stream(z, str(path), destinations, size_hint=_gzip_size(path, size))
        with path.open("rb") as f:
            return parse_stream(f, str(path), destinations, size_hint=size)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        report = FileReport(str(path), readable=False)
        report.problems.append(Problem(str(path), "", f"cannot read: {exc}"))
        return _empty_part(), report


# --- the combined, indexed manifest ------------------------------------------------------


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
        return _empty_part()
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
    def _of(
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

    def _sharing(
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
        return self._sharing(part, self.reports, names)


def file_order_key(path: Path) -> tuple[float, str]:
    """Older files first, so that rows of a newer file replace theirs."""
    try:
        return (path.stat().st_mtime, str(path))
    except OSError:
        return (0.0, str(path))


def _load_files(
    paths: Sequence[Path], destinations: Sequence[str]
) -> tuple[list[ManifestPart], list[FileReport]]:
    parts: list[ManifestPart] = []
    reports: list[FileReport] = []
    for path in paths:
        part, report = load_file(path, destinations)
        parts.append(part)
        reports.append(report)
    return parts, reports


def load_manifests(paths: Sequence[Path], destinations: Sequence[str]) -> Manifest:
    parts, reports = _load_files(sorted(paths, key=file_order_key), destinations)
    return Manifest._of(parts, reports, destinations)


FileSignature = tuple[int, int]  # (mtime_ns, size)


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A file as last built: its signature, its report, and where its rows are in the
    last manifest built (start..stop-1)."""

    signature: FileSignature
    report: FileReport
    start: int
    stop: int


class ManifestSource:
    """The manifest files a site's globs name; rebuilt when files come, change or go.

    Parsed files are remembered by (path, mtime, size), so a new file in the morning's
    folder costs its own parse, not a reparse of the day so far: the rows of the files
    that did not change are copied from the last manifest built, where they are. (Kept
    as parts of their own, they were a second copy of every row, for the whole run.)
    `build` runs in a worker thread; one at a time.
    """

    def __init__(self, globs: Sequence[str]) -> None:
        self.globs = tuple(globs)
        self._parsed: dict[str, _Parsed] = {}
        self._last: Manifest | None = None
        self._built: dict[str, FileSignature] | None = None
        self._last_scan: dict[str, FileSignature] | None = None
        self._names: tuple[str, ...] = ()

    def scan(self) -> dict[str, FileSignature]:
        found: dict[str, FileSignature] = {}
        for pattern in self.globs:
            base = Path(pattern)
            anchor = Path(base.anchor) if base.is_absolute() else Path()
            relative = str(base.relative_to(anchor)) if base.is_absolute() else pattern
            for path in sorted(anchor.glob(relative)):
                try:
                    st = path.stat()
                except OSError:
                    continue
                if path.is_file():
                    found[str(path)] = (st.st_mtime_ns, st.st_size)
        return found

    def changed(self) -> bool:
        """Files came, changed or went, and have stayed so since the previous look: a file
        still being uploaded (its size or time still moving) waits for the next one."""
        scan = self.scan()
        stable = scan == self._last_scan
        self._last_scan = scan
        return stable and scan != self._built

    def build(self, destinations: Sequence[str]) -> Manifest:
        names = tuple(destinations)
        if names != self._names:
            # Destination names are resolved at parse time: everything is parsed again.
            self._parsed.clear()
            self._last = None
            self._names = names
        files = sorted(self.scan().items(), key=lambda kv: (kv[1][0], kv[0]))
        pieces, reports, kept = self._pieces(files)
        stops = list(accumulate(p.rows for p in pieces))  # no name left holding a piece
        spans = list(zip([0, *stops], stops, strict=False))
        at = stops[-1] if stops else 0
        last = self._last
        if last is not None and kept == last.rows and kept == at:
            # The same rows in the same order (files unchanged, or new ones without rows):
            # the same arrays and table, with this build's reports.
            pieces.clear()
            manifest = last._sharing(last.part, reports, names)
        else:
            manifest = Manifest._of(pieces, reports, names)
        self._parsed = {
            path: _Parsed(signature, report, start, stop)
            for (path, signature), report, (start, stop) in zip(files, reports, spans, strict=True)
        }
        self._built = dict(files)
        self._last = manifest
        return manifest

    def _pieces(
        self, files: Sequence[tuple[str, FileSignature]]
    ) -> tuple[list[ManifestPart], list[FileReport], int]:
        """Each file's rows in order: views into the last manifest for the files unchanged
        since, parsed for the others; their reports; and how many rows were kept from the
        last manifest, in their order there, from its first row on (all of them kept in
        order: nothing to copy)."""
        last = self._last
        pieces: list[ManifestPart] = []
        reports: list[FileReport] = []
        kept = 0
        for path, signature in files:
            cached = self._parsed.get(path)
            if last is not None and cached is not None and cached.signature == signature:
                pieces.append(last.rows_between(cached.start, cached.stop))
                reports.append(cached.report)
                if cached.start == kept:
                    kept = cached.stop
                elif cached.stop > cached.start:
                    kept = -1  # out of order
            else:
                part, report = load_file(Path(path), self._names)
                pieces.append(part)
                reports.append(report)
                if part.rows:
                    kept = -1
        return pieces, reports, kept


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
