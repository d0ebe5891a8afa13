"""One manifest file: read a chunk at a time, parsed, reported."""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from sorter.config import Problem
from sorter.manifest.csv_parse import (
    BAD_REASONS,
    COLUMNS,
    IGNORED_COLUMN,
    ISO_TABLE,
    MAX_BAD_LINES_KEPT,
    ROUTING_COLUMNS,
    newlines,
    parse,
)
from sorter.manifest.rows import KEY_BYTES, MAX_DEST_NAME_BYTES, ManifestPart, empty_part

__all__ = [
    "READ_CHUNK_BYTES",
    "FileReport",
    "Readable",
    "load_file",
    "parse_manifest",
    "parse_stream",
]


@dataclass(slots=True)
class FileReport:
    """What loading one manifest file found."""

    path: str
    rows: int = 0
    bad_rows: int = 0
    lines: int = 0
    problems: list[Problem] = field(default_factory=list)  # first bad lines, or why unreadable
    readable: bool = True


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
            pending = int(newlines(buf, consumed)[0])
            needed = self._good + pending + 1
            if needed > len(self._keys):
                self._make_room(needed, pending, len(buf) - consumed)
            roles = self._roles
            good, bad, line, end = parse(
                buf, consumed, final, roles, self._names, self._lens, _WORDS, _WORD_LENS,
                ISO_TABLE, self._line, self._good, self._bad, self._keys, self._postcode,
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
        end = int(newlines(buf, 0)[1])
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
            [COLUMNS.index(h) + 1 if h in COLUMNS else IGNORED_COLUMN for h in header],
            dtype=np.int64,
        )
        return min(end + 1, len(buf))

    def finish(self) -> tuple[ManifestPart, FileReport]:
        report = self.report
        if self._roles is None:
            return empty_part(), report
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
        empty = empty_part()
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
        return empty_part(), report
