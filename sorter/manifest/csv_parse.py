"""The numba CSV parser: a manifest's bytes to rows, a record at a time, without Python
objects per row. Field boundaries come from a small state machine that honours double
quotes and CR LF; each column is read by its own function."""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from sorter.countries import ISO_ALPHA2
from sorter.manifest.jit import kernel as _kernel
from sorter.manifest.rows import KEY_BYTES, MAX_DEST_NAME_BYTES
from sorter.postcode import MAX_POSTCODE_CHARS, NO_POSTCODE, UNUSABLE_POSTCODE

__all__ = [
    "BAD_REASONS",
    "COLUMNS",
    "IGNORED_COLUMN",
    "ISO_TABLE",
    "MAX_BAD_LINES_KEPT",
    "ROUTING_COLUMNS",
    "newlines",
    "parse",
]

MAX_BAD_LINES_KEPT: Final = 100  # per file; every bad row is counted

COLUMNS: Final = (
    "barcode", "destination", "postcode", "country", "service", "customs", "weight_g", "origin",
)  # fmt: skip
# Column roles inside the numba parser.
(
    IGNORED_COLUMN, _C_BARCODE, _C_DEST, _C_POSTCODE, _C_COUNTRY, _C_SERVICE, _C_CUSTOMS, _C_WEIGHT,
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


# Officially assigned ISO 3166-1 alpha-2 codes as a table the parser indexes by letter pair.
ISO_TABLE: Final = np.zeros(26 * 26, np.bool_)
for _code in ISO_ALPHA2:
    ISO_TABLE[(ord(_code[0]) - 65) * 26 + ord(_code[1]) - 65] = True
# The postcode character codes of sorter.postcode: 0-9 -> 1..10, A-Z -> 11..36.
_PC_BITS: Final = 6


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
    for i in range(e - s):  # noqa: SIM110  (numba compiles the loop, not all() of a generator)
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
def parse(
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
def newlines(buf: Any, start: int) -> tuple[int, int]:
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
