"""Which files make the manifest, in which order, and rebuilding it when they change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from sorter.manifest.files import FileReport, load_file
from sorter.manifest.index import Manifest
from sorter.manifest.rows import ManifestPart

__all__ = ["FileSignature", "ManifestSource", "file_order_key", "load_manifests"]


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
    return Manifest.adopting(parts, reports, destinations)


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
            manifest = last.sharing_index(last.part, reports, names)
        else:
            manifest = Manifest.adopting(pieces, reports, names)
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
