"""Scanner telegram framing and parsing (docs/interfaces.md section 4). No I/O here.

The layering follows pymodbus' framers: a `Framer` cuts a byte buffer into frames and
reports how many bytes it used; the caller keeps the rest for the next read. A
`TelegramFormat` (preset) pairs a framer with a payload parser and its strict inverse
(an encoder that checks the parser gives its read back, for tests): `index` (the
contract), `sick`, `cognex`, `datalogic`, `lines` and `custom` (a regular expression).
The simulators do not use this encoder: they have their own (simulators/telegrams.py),
so that the daemon is tested against bytes it did not make. `format_from_options` builds
a preset from the site config's settings (sorter/telegram_options.py). `TelegramDecoder`
holds the buffer of one link and turns bytes into `ScanRead` events.

Framing rules, with a start delimiter (`index`: STX payload ETX):
- bytes before a start are garbage: counted and skipped;
- a start inside an open frame restarts the frame; the abandoned bytes are garbage;
- a frame that reaches `max_frame_bytes` (delimiters included) without its end is dropped
  as garbage and scanning resumes at the next start; a complete frame over the limit is
  dropped the same way, so the outcome never depends on how the bytes were chunked;
- an incomplete frame at the end is left unconsumed.
Without a start delimiter (lines ended by CR LF, say) every byte belongs to a frame that
runs to the next end. A line over the limit is dropped up to and including its end; when
that end has not arrived yet, `FrameScan.discarding` tells the caller to pass
`discarding=True` with the next bytes, so the rest of the line is not taken for a new one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from sorter.errors import SorterdError
from sorter.ports import NOREAD, ScanRead
from sorter.telegram_options import PAD, PRESET_DEFAULTS, PRESETS, TelegramOptions

__all__ = [
    "ETX",
    "FORMATS",
    "HEARTBEAT",
    "MAX_FRAME_BYTES",
    "MAX_TRACKING_ID",
    "STX",
    "DelimitedFormat",
    "Frame",
    "FrameScan",
    "Framer",
    "Heartbeat",
    "IndexFormat",
    "IndexTelegram",
    "PatternFormat",
    "Telegram",
    "TelegramDecoder",
    "TelegramError",
    "TelegramFormat",
    "TelegramStats",
    "format_from_options",
    "format_heartbeat",
    "format_index_telegram",
    "get_format",
    "parse_frames",
    "parse_index_telegram",
    "scan_frames",
]

STX: Final = 0x02
ETX: Final = 0x03
MAX_FRAME_BYTES: Final = 4096
MAX_TRACKING_ID: Final = 2**32 - 1
HEARTBEAT_PAYLOAD: Final = b"HB"

# Stripped around the tracking id and each code: scanners configured to append CR LF (or
# padded with spaces) before the ETX are common, and the padding is never part of a code.
_PAD: Final = PAD
# C0 controls other than GS (GS separates GS1 element strings), DEL and C1 controls: in a
# code they mean a misconfigured scanner or line noise, and sorting on them would be wrong.
_BAD_CODE_CHARS: Final = re.compile("[\x00-\x1c\x1e\x1f\x7f-\x9f]")
_DIGITS: Final = re.compile("[0-9]+")
_EXCERPT_BYTES: Final = 64


class TelegramError(SorterdError, ValueError):
    """A frame arrived whole but its payload is not a valid telegram of the preset."""


@dataclass(frozen=True, slots=True)
class Frame:
    """The bytes between a frame's start and end delimiters."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class FrameScan:
    """What one pass of a framer over a buffer found.

    `consumed` bytes of the buffer are accounted for (frames plus garbage); the caller drops
    them and keeps the rest, which is at most one incomplete frame.
    """

    consumed: int
    frames: tuple[Frame, ...]
    garbage_bytes: int
    oversize_frames: int
    # The buffer ended inside an oversize line (framing without a start delimiter): the
    # next scan must skip up to that line's end.
    discarding: bool = False


@dataclass(frozen=True, slots=True)
class Telegram:
    """A read telegram in any preset: the codes for one item, empty for a no-read."""

    tracking_id: int | None  # None for presets that carry no tracking id
    codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IndexTelegram(Telegram):
    """A telegram of the `index` preset, which always carries the PLC's tracking id."""

    tracking_id: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A keep-alive telegram: proves the scanner is there, carries no read."""


HEARTBEAT: Final = Heartbeat()


@dataclass(slots=True)
class TelegramStats:
    """Counters of one scanner link. `reads` and `noreads` partition the read telegrams."""

    frames: int = 0  # complete frames, whatever their payload
    heartbeats: int = 0
    reads: int = 0  # telegrams with at least one code
    noreads: int = 0  # telegrams with no code (NOREAD)
    garbage_bytes: int = 0  # bytes outside any valid frame, oversize frames included
    bad_telegrams: int = 0  # frames whose payload did not parse
    oversize_frames: int = 0


class TelegramFormat(Protocol):
    """A telegram preset: how a byte stream is cut into frames, what a frame means, and
    the inverse: the bytes a scanner of that preset sends."""

    @property
    def name(self) -> str: ...

    @property
    def carries_tracking_id(self) -> bool:
        """True when read telegrams carry the PLC's tracking id."""
        ...

    def scan_frames(self, buf: bytes | bytearray, *, discarding: bool = False) -> FrameScan:
        """Cut `buf` into frames; never raises. `discarding`: the previous scan's flag."""
        ...

    def parse_payload(self, payload: bytes) -> Telegram | Heartbeat | None:
        """One frame's meaning; None when it carries nothing (an empty frame).

        Raises TelegramError, and only that, for a malformed payload.
        """
        ...

    def encode_read(self, tracking_id: int | None, codes: Sequence[str]) -> bytes:
        """A whole read telegram, delimiters included; no codes means a no-read.

        Strict where the parser is lenient: parsing the result gives back exactly
        `tracking_id` and `codes` (less duplicates and the no-read text), or this raises
        TelegramError. `tracking_id` must be None exactly when the preset carries none.
        """
        ...

    def encode_heartbeat(self) -> bytes | None:
        """The heartbeat telegram, None when the preset has none."""
        ...


def _tail_keep(buf: bytes | bytearray, pos: int, delimiter: bytes) -> int:
    """How many bytes at the end of `buf[pos:]` could be the beginning of `delimiter`."""
    for keep in range(min(len(delimiter) - 1, len(buf) - pos), 0, -1):
        if buf.endswith(delimiter[:keep]):
            return keep
    return 0


@dataclass(frozen=True, slots=True)
class Framer:
    """Cuts a byte stream at `start` (may be empty) and `end` delimiters; no I/O.

    `max_frame_bytes` counts the delimiters too. Rules in the module docstring.
    """

    start: bytes
    end: bytes
    max_frame_bytes: int = MAX_FRAME_BYTES

    def __post_init__(self) -> None:
        if not self.end:
            raise ValueError("a framer needs an end delimiter")
        if self.max_frame_bytes <= len(self.start) + len(self.end):
            raise ValueError("max_frame_bytes leaves no room for a payload")

    def scan(self, buf: bytes | bytearray, *, discarding: bool = False) -> FrameScan:
        """Cut `buf` into frames; never raises."""
        if self.start:
            return self._scan_started(buf)
        return self._scan_lines(buf, discarding)

    def _scan_started(self, buf: bytes | bytearray) -> FrameScan:
        start_delim, end_delim, limit = self.start, self.end, self.max_frame_bytes
        frames: list[Frame] = []
        garbage = 0
        oversize = 0
        pos = 0
        end = len(buf)
        while pos < end:
            start = buf.find(start_delim, pos)
            if start < 0:
                # Keep what may be the first bytes of a start split by the read.
                stop = end - _tail_keep(buf, pos, start_delim)
                garbage += stop - pos
                return FrameScan(stop, tuple(frames), garbage, oversize)
            garbage += start - pos
            body = start + len(start_delim)
            # The end of an acceptable frame lies wholly before start + limit.
            window_end = start + limit
            stop_end = buf.find(end_delim, body, min(end, window_end))
            # A start that begins before the end does restart the frame, even when the two
            # overlap: the bytes after the end may not have arrived yet, and the outcome
            # must not depend on that.
            restart = buf.find(
                start_delim,
                body,
                stop_end + len(start_delim) - 1 if stop_end >= 0 else min(end, window_end),
            )
            if restart >= 0:
                garbage += restart - start
                pos = restart
            elif stop_end >= 0:
                frames.append(Frame(bytes(buf[body:stop_end])))
                pos = stop_end + len(end_delim)
            elif end >= window_end:
                oversize += 1
                resync = buf.find(start_delim, max(body, window_end - len(start_delim) + 1))
                stop = resync if resync >= 0 else end - _tail_keep(buf, start, start_delim)
                garbage += stop - start
                pos = stop
                if resync < 0:
                    return FrameScan(pos, tuple(frames), garbage, oversize)
            else:
                # Incomplete: keep it, from its start, for the next read.
                return FrameScan(start, tuple(frames), garbage, oversize)
        return FrameScan(pos, tuple(frames), garbage, oversize)

    def _scan_lines(self, buf: bytes | bytearray, discarding: bool) -> FrameScan:
        end_delim, limit = self.end, self.max_frame_bytes
        frames: list[Frame] = []
        garbage = 0
        oversize = 0
        pos = 0
        end = len(buf)
        while pos < end:
            if discarding:
                stop = buf.find(end_delim, pos)
                if stop < 0:
                    keep = _tail_keep(buf, pos, end_delim)
                    garbage += end - keep - pos
                    return FrameScan(end - keep, tuple(frames), garbage, oversize, True)
                garbage += stop + len(end_delim) - pos
                pos = stop + len(end_delim)
                discarding = False
                continue
            window_end = pos + limit
            stop = buf.find(end_delim, pos, min(end, window_end))
            if stop >= 0:
                frames.append(Frame(bytes(buf[pos:stop])))
                pos = stop + len(end_delim)
            elif end >= window_end:
                oversize += 1
                discarding = True  # the loop above drops the line up to its end
            else:
                break  # incomplete line: keep it for the next read
        return FrameScan(pos, tuple(frames), garbage, oversize, discarding)


STX_ETX: Final = Framer(bytes([STX]), bytes([ETX]))


def scan_frames(buf: bytes | bytearray, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> FrameScan:
    """Cut an STX/ETX byte stream into frames (rules in the module docstring)."""
    if max_frame_bytes == MAX_FRAME_BYTES:
        return STX_ETX.scan(buf)
    return Framer(STX_ETX.start, STX_ETX.end, max_frame_bytes).scan(buf)


def parse_frames(buf: bytes | bytearray) -> tuple[int, list[bytes], int]:
    """`(consumed, payloads, garbage_bytes)` of an STX/ETX stream; see `scan_frames`."""
    scan = scan_frames(buf)
    return scan.consumed, [frame.payload for frame in scan.frames], scan.garbage_bytes


def _excerpt(payload: bytes | str) -> str:
    if len(payload) <= _EXCERPT_BYTES:
        return repr(payload)
    return f"{payload[:_EXCERPT_BYTES]!r}... ({len(payload)} bytes)"


def _tracking_id(id_text: str, payload: bytes) -> int:
    if not _DIGITS.fullmatch(id_text):
        raise TelegramError(f"tracking id {id_text!r} is not decimal in {_excerpt(payload)}")
    # Leading zeros are harmless; the length check keeps int() away from huge inputs.
    significant = id_text.lstrip("0") or "0"
    if len(significant) > 10 or int(significant) > MAX_TRACKING_ID:
        raise TelegramError(f"tracking id {id_text} exceeds {MAX_TRACKING_ID}")
    return int(significant)


def _codes(fields: Sequence[str], payload: bytes, noread: str, where: str) -> tuple[str, ...]:
    """Stripped, non-empty, without duplicates and without the no-read text."""
    codes: dict[str, None] = {}
    for raw in fields:
        code = raw.strip(_PAD)
        if not code:
            continue
        bad = _BAD_CODE_CHARS.search(code)
        if bad is not None:
            raise TelegramError(
                f"control character 0x{ord(bad.group()):02x} in code {code!r} "
                f"of {_excerpt(payload)}"
            )
        codes[code] = None
    if not codes:
        raise TelegramError(f"no code {where}in {_excerpt(payload)}")
    codes.pop(noread, None)
    return tuple(codes)


def _check_codes(codes: Sequence[str], forbidden: Sequence[str]) -> None:
    """Encoder side: each code must come back unchanged from the parser."""
    if isinstance(codes, str):
        raise TypeError("codes must be a sequence of codes, not one str")
    for code in codes:
        if not code or code != code.strip(_PAD):
            raise TelegramError(f"code {code!r} is empty or has blanks around it")
        if _BAD_CODE_CHARS.search(code) is not None:
            raise TelegramError(f"code {code!r} contains a control character")
        if max(map(ord, code)) > 0xFF:
            raise TelegramError(f"code {code!r} is not latin-1")
        clash = next((text for text in forbidden if text and text in code), None)
        if clash is not None:
            raise TelegramError(f"code {code!r} contains {clash!r}, which this preset uses")


def _check_id(name: str, carries: bool, tracking_id: int | None) -> None:
    if not carries:
        if tracking_id is not None:
            raise TelegramError(f"preset {name} carries no tracking id")
        return
    if tracking_id is None:
        raise TelegramError(f"preset {name} needs a tracking id")
    if not 0 <= tracking_id <= MAX_TRACKING_ID:
        raise TelegramError(f"tracking id {tracking_id} outside 0..{MAX_TRACKING_ID}")


def _expected(tracking_id: int | None, codes: Sequence[str], noread: str) -> Telegram:
    return Telegram(tracking_id, tuple(c for c in dict.fromkeys(codes) if c != noread))


def parse_index_telegram(payload: bytes) -> IndexTelegram | Heartbeat | None:
    """Parse one `index` payload: `<tracking_id>|<code>[;<code>]...` or `HB`.

    Returns None for an empty (or all-blank) frame, which some scanners send as a
    keep-alive of their own. Codes are stripped of surrounding blanks, empty ones dropped,
    duplicates removed (first occurrence kept) and `NOREAD` removed, so a no-read gives
    `codes=()`. Bytes decode as latin-1, which cannot fail; control characters other than
    GS in a code are rejected. Raises TelegramError when malformed.
    """
    text = payload.decode("latin-1").strip(_PAD)
    if not text:
        return None
    if text == "HB":
        return HEARTBEAT
    id_text, sep, codes_text = text.partition("|")
    if not sep:
        raise TelegramError(f"no '|' after the tracking id in {_excerpt(payload)}")
    tracking_id = _tracking_id(id_text.strip(_PAD), payload)
    if "|" in codes_text:
        raise TelegramError(f"more than one '|' in {_excerpt(payload)}")
    codes = _codes(codes_text.split(";"), payload, NOREAD, "after the tracking id ")
    return IndexTelegram(tracking_id=tracking_id, codes=codes)


def format_index_telegram(tracking_id: int, codes: Sequence[str]) -> bytes:
    """Build an `index` telegram, STX and ETX included; no codes means a no-read.

    Strict where the parser is lenient, so that parsing the result gives back exactly
    `tracking_id` and `codes` (less duplicates and NOREAD). Raises TelegramError for a
    tracking id out of range or a code the format cannot carry; TypeError for a bare str.
    """
    _check_codes(codes, (";", "|"))
    _check_id("index", True, tracking_id)
    body = ";".join(codes) if codes else NOREAD
    return b"\x02" + f"{tracking_id}|{body}".encode("latin-1") + b"\x03"


def format_heartbeat() -> bytes:
    """The `index` heartbeat telegram, STX and ETX included."""
    return b"\x02" + HEARTBEAT_PAYLOAD + b"\x03"


class IndexFormat:
    """The `index` preset: `STX <tracking_id>|<code>[;<code>]... ETX`, `STX HB ETX`."""

    @property
    def name(self) -> str:
        return "index"

    @property
    def carries_tracking_id(self) -> bool:
        return True

    def scan_frames(self, buf: bytes | bytearray, *, discarding: bool = False) -> FrameScan:
        return STX_ETX.scan(buf)

    def parse_payload(self, payload: bytes) -> IndexTelegram | Heartbeat | None:
        return parse_index_telegram(payload)

    def encode_read(self, tracking_id: int | None, codes: Sequence[str]) -> bytes:
        if tracking_id is None:
            raise TelegramError("preset index needs a tracking id")
        return format_index_telegram(tracking_id, codes)

    def encode_heartbeat(self) -> bytes:
        return format_heartbeat()


class _Framed:
    """What the configurable presets share: a framer, the no-read and heartbeat texts."""

    name: str
    framer: Framer
    noread: str
    heartbeat: str

    def scan_frames(self, buf: bytes | bytearray, *, discarding: bool = False) -> FrameScan:
        return self.framer.scan(buf, discarding=discarding)

    def encode_heartbeat(self) -> bytes | None:
        if not self.heartbeat:
            return None
        return self.framer.start + self.heartbeat.encode("latin-1") + self.framer.end

    def _text(self, payload: bytes) -> str | Heartbeat | None:
        """The payload as text, or what it is when it carries no read."""
        text = payload.decode("latin-1").strip(_PAD)
        if not text:
            return None
        if self.heartbeat and text == self.heartbeat:
            return HEARTBEAT
        return text

    def _framed(self, body: str, expected: Telegram, parse: _Parse) -> bytes:
        """`body` framed, after checking that the parser gives `expected` back from it."""
        try:
            data = body.encode("latin-1")
        except UnicodeEncodeError:
            raise TelegramError(f"telegram {_excerpt(body)} is not latin-1") from None
        frame = self.framer.start + data + self.framer.end
        # The framer itself decides: catches delimiters inside the body, and overlaps of
        # the body's last bytes with the end delimiter, and oversize telegrams.
        scan = self.framer.scan(frame)
        if scan.frames != (Frame(data),) or scan.consumed != len(frame):
            raise TelegramError(f"telegram {_excerpt(body)} would not frame as one telegram")
        try:
            parsed = parse(data)
        except TelegramError as exc:
            raise TelegramError(f"telegram {_excerpt(body)} would not parse: {exc}") from None
        if parsed != expected:
            raise TelegramError(f"telegram {_excerpt(body)} would parse as {parsed!r}")
        return frame


class _Parse(Protocol):
    def __call__(self, payload: bytes, /) -> Telegram | Heartbeat | None: ...


class DelimitedFormat(_Framed):
    """`sick`, `cognex`, `datalogic` and `lines`: the same shape, different defaults.

    `start header [tracking_id id_separator] code (separator code)* trailer end`, or the
    heartbeat text alone. The header and trailer must be there and are not part of a
    code. A no-read is the `noread` text (dropped when next to real codes).
    """

    def __init__(
        self,
        name: str,
        framer: Framer,
        *,
        separator: str = ",",
        header: str = "",
        trailer: str = "",
        tracking_id: bool = False,
        id_separator: str = ";",
        noread: str = NOREAD,
        heartbeat: str = "",
    ) -> None:
        if not separator or not noread or (tracking_id and not id_separator):
            raise ValueError("separator, noread and id_separator must not be empty")
        self.name = name
        self.framer = framer
        self.separator = separator
        self.header = header
        self.trailer = trailer
        self.tracking_id = tracking_id
        self.id_separator = id_separator
        self.noread = noread
        self.heartbeat = heartbeat

    @property
    def carries_tracking_id(self) -> bool:
        return self.tracking_id

    def parse_payload(self, payload: bytes) -> Telegram | Heartbeat | None:
        text = self._text(payload)
        if not isinstance(text, str):
            return text
        header, trailer = self.header, self.trailer
        if not text.startswith(header):
            raise TelegramError(f"no header {header!r} in {_excerpt(payload)}")
        if not text.endswith(trailer) or len(text) < len(header) + len(trailer):
            raise TelegramError(f"no trailer {trailer!r} in {_excerpt(payload)}")
        body = text[len(header) : len(text) - len(trailer)]
        tracking_id = None
        where = ""
        if self.tracking_id:
            id_text, sep, body = body.partition(self.id_separator)
            if not sep:
                raise TelegramError(
                    f"no {self.id_separator!r} after the tracking id in {_excerpt(payload)}"
                )
            tracking_id = _tracking_id(id_text.strip(_PAD), payload)
            where = "after the tracking id "
        codes = _codes(body.split(self.separator), payload, self.noread, where)
        return Telegram(tracking_id, codes)

    def encode_read(self, tracking_id: int | None, codes: Sequence[str]) -> bytes:
        _check_codes(codes, (self.separator,))
        _check_id(self.name, self.tracking_id, tracking_id)
        body = self.separator.join(codes) if codes else self.noread
        if self.tracking_id:
            body = f"{tracking_id}{self.id_separator}{body}"
        expected = _expected(tracking_id, codes, self.noread)
        return self._framed(self.header + body + self.trailer, expected, self.parse_payload)


class PatternFormat(_Framed):
    """`custom`: a regular expression over the payload (blanks around it stripped).

    The whole payload must match. Group `codes` holds the codes, split at `separator`
    (an empty separator: the group is one code); an optional group `tracking_id` holds
    the decimal tracking id. `template` (`str.format` with `{tracking_id}`, `{codes}`) is
    the inverse, for encoding; without one the preset cannot be encoded.
    """

    def __init__(
        self,
        name: str,
        framer: Framer,
        pattern: str | re.Pattern[str],
        *,
        separator: str = ",",
        noread: str = NOREAD,
        heartbeat: str = "",
        template: str | None = None,
    ) -> None:
        compiled = re.compile(pattern)
        if "codes" not in compiled.groupindex:
            raise ValueError("the pattern needs a named group (?P<codes>...)")
        if not noread:
            raise ValueError("noread must not be empty")
        self.name = name
        self.framer = framer
        self.pattern = compiled
        self.separator = separator
        self.noread = noread
        self.heartbeat = heartbeat
        self.template = template

    @property
    def carries_tracking_id(self) -> bool:
        return "tracking_id" in self.pattern.groupindex

    def parse_payload(self, payload: bytes) -> Telegram | Heartbeat | None:
        text = self._text(payload)
        if not isinstance(text, str):
            return text
        match = self.pattern.fullmatch(text)
        if match is None:
            raise TelegramError(f"{_excerpt(payload)} does not match the pattern")
        tracking_id = None
        if self.carries_tracking_id:
            id_text = match.group("tracking_id")
            if id_text is not None:
                tracking_id = _tracking_id(id_text.strip(_PAD), payload)
        codes_text = match.group("codes") or ""
        fields = codes_text.split(self.separator) if self.separator else [codes_text]
        return Telegram(tracking_id, _codes(fields, payload, self.noread, ""))

    def encode_read(self, tracking_id: int | None, codes: Sequence[str]) -> bytes:
        if self.template is None:
            raise TelegramError("preset custom has no template: it cannot be encoded")
        _check_codes(codes, (self.separator,))
        _check_id(self.name, self.carries_tracking_id, tracking_id)
        body = self.separator.join(codes) if codes else self.noread
        if not self.separator and len(codes) > 1:
            raise TelegramError("without a separator a telegram carries one code")
        fields = {"codes": body, "tracking_id": "" if tracking_id is None else tracking_id}
        try:
            text = self.template.format(**fields)
        except (ValueError, IndexError, KeyError) as exc:
            raise TelegramError(f"template {self.template!r}: {exc}") from None
        return self._framed(text, _expected(tracking_id, codes, self.noread), self.parse_payload)


def format_from_options(options: TelegramOptions) -> TelegramFormat:
    """The preset described by `options` (checked by sorter.telegram_options.problems).

    ValueError for settings that cannot work, for options built without that check.
    """
    if options.format == "index":
        return FORMATS["index"]
    framer = Framer(
        options.start.encode("latin-1"), options.end.encode("latin-1"), options.max_frame_bytes
    )
    if options.format == "custom":
        if options.pattern is None:
            raise ValueError("format custom needs a pattern")
        return PatternFormat(
            options.format,
            framer,
            options.pattern,
            separator=options.separator,
            noread=options.noread,
            heartbeat=options.heartbeat,
            template=options.template,
        )
    if options.format not in PRESETS:
        raise ValueError(f"unknown telegram format {options.format!r}")
    return DelimitedFormat(
        options.format,
        framer,
        separator=options.separator,
        header=options.header,
        trailer=options.trailer,
        tracking_id=options.tracking_id,
        id_separator=options.id_separator,
        noread=options.noread,
        heartbeat=options.heartbeat,
    )


def _default_formats() -> dict[str, TelegramFormat]:
    formats: dict[str, TelegramFormat] = {"index": IndexFormat()}
    for name, options in PRESET_DEFAULTS.items():
        if name not in ("index", "custom"):
            formats[name] = format_from_options(options)
    return formats


# Every preset with its default settings; `custom` is not here: it needs a pattern.
FORMATS: Final[Mapping[str, TelegramFormat]] = _default_formats()


def get_format(name: str) -> TelegramFormat:
    """The preset called `name` with its defaults; KeyError naming the known ones otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        if name == "custom":
            message = "telegram format 'custom' needs a pattern: see format_from_options"
            raise KeyError(message) from None
        known = ", ".join(sorted(FORMATS))
        raise KeyError(f"unknown telegram format {name!r}; known: {known}") from None


class TelegramDecoder:
    """The receive side of one scanner link, without the I/O: bytes in, events out.

    Never raises on any input: garbage, bad telegrams and oversize frames are counted in
    `stats`, and `last_error` describes the most recent bad telegram for the log.
    """

    def __init__(
        self,
        scanner_name: str,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        *,
        telegram_format: TelegramFormat | None = None,
        stats: TelegramStats | None = None,
    ) -> None:
        self.scanner_name = scanner_name
        self.format: TelegramFormat = telegram_format or FORMATS["index"]
        self.stats = stats if stats is not None else TelegramStats()
        self.last_error: str | None = None
        self._clock_ns = clock_ns
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray) -> list[ScanRead | Heartbeat]:
        """Add received bytes; return the reads and heartbeats they completed, in order."""
        self._buf += data
        scan = self.format.scan_frames(self._buf, discarding=self._discarding)
        del self._buf[: scan.consumed]
        self._discarding = scan.discarding
        stats = self.stats
        stats.garbage_bytes += scan.garbage_bytes
        stats.oversize_frames += scan.oversize_frames
        stats.frames += len(scan.frames)
        if not scan.frames:
            return []
        received_ns = self._clock_ns()  # one chunk arrived at one time
        out: list[ScanRead | Heartbeat] = []
        for frame in scan.frames:
            try:
                parsed = self.format.parse_payload(frame.payload)
            except TelegramError as exc:
                stats.bad_telegrams += 1
                self.last_error = str(exc)
                continue
            if parsed is None:
                continue
            if isinstance(parsed, Heartbeat):
                stats.heartbeats += 1
                out.append(parsed)
                continue
            if parsed.codes:
                stats.reads += 1
            else:
                stats.noreads += 1
            out.append(ScanRead(self.scanner_name, parsed.tracking_id, parsed.codes, received_ns))
        return out

    def reset(self) -> int:
        """Discard an incomplete frame (the link dropped); count and return its bytes.

        Without this, the head of a frame cut by a disconnect would be glued to the first
        bytes of the next connection.
        """
        discarded = len(self._buf)
        self._buf.clear()
        self._discarding = False  # a new link starts with a new line
        self.stats.garbage_bytes += discarded
        return discarded
