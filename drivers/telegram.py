"""Scanner telegram framing and parsing (INTERFACES.md section 4). No I/O here.

The layering follows pymodbus' framers: `scan_frames` cuts a byte buffer into frames and
reports how many bytes it used; the caller keeps the rest for the next read. A
`TelegramFormat` (preset) pairs a framer with a payload parser, so a new scanner dialect
(SICK CLV, Cognex, Datalogic, a custom pattern) is one more object in `FORMATS`.
`TelegramDecoder` holds the buffer of one link and turns bytes into `ScanRead` events.

Framing rules of the `index` preset (STX payload ETX):
- bytes before an STX are garbage: counted and skipped;
- an STX inside an open frame restarts the frame; the abandoned bytes are garbage;
- a frame that reaches `MAX_FRAME_BYTES` (STX and ETX included) without its ETX is dropped
  as garbage and scanning resumes at the next STX; a complete frame over the limit is
  dropped the same way, so the outcome never depends on how the bytes were chunked;
- an incomplete frame at the end is left unconsumed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from sorter.events import NOREAD, ScanRead

STX: Final = 0x02
ETX: Final = 0x03
GS: Final = 0x1D
MAX_FRAME_BYTES: Final = 4096
MAX_TRACKING_ID: Final = 2**32 - 1
HEARTBEAT_PAYLOAD: Final = b"HB"

# Stripped around the tracking id and each code: scanners configured to append CR LF (or
# padded with spaces) before the ETX are common, and the padding is never part of a code.
_PAD: Final = " \t\r\n"
# C0 controls other than GS (GS separates GS1 element strings), DEL and C1 controls: in a
# code they mean a misconfigured scanner or line noise, and sorting on them would be wrong.
_BAD_CODE_CHARS: Final = re.compile("[\x00-\x1c\x1e\x1f\x7f-\x9f]")
_DIGITS: Final = re.compile("[0-9]+")
_EXCERPT_BYTES: Final = 64


class TelegramError(ValueError):
    """A frame arrived whole but its payload is not a valid telegram of the preset."""


@dataclass(frozen=True, slots=True)
class Frame:
    """The bytes between STX and ETX."""

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
    """A telegram preset: how a byte stream is cut into frames and what a frame means."""

    @property
    def name(self) -> str: ...

    def scan_frames(self, buf: bytes | bytearray) -> FrameScan:
        """Cut `buf` into frames; never raises."""
        ...

    def parse_payload(self, payload: bytes) -> Telegram | Heartbeat | None:
        """One frame's meaning; None when it carries nothing (an empty frame).

        Raises TelegramError, and only that, for a malformed payload.
        """
        ...


def scan_frames(buf: bytes | bytearray, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> FrameScan:
    """Cut an STX/ETX byte stream into frames (rules in the module docstring)."""
    frames: list[Frame] = []
    garbage = 0
    oversize = 0
    pos = 0
    end = len(buf)
    while pos < end:
        start = buf.find(STX, pos)
        if start < 0:
            garbage += end - pos
            pos = end
            break
        garbage += start - pos
        # The ETX of an acceptable frame lies before start + max_frame_bytes.
        window_end = start + max_frame_bytes
        etx = buf.find(ETX, start + 1, min(end, window_end))
        restart = buf.find(STX, start + 1, etx if etx >= 0 else min(end, window_end))
        if restart >= 0:
            garbage += restart - start
            pos = restart
        elif etx >= 0:
            frames.append(Frame(bytes(buf[start + 1 : etx])))
            pos = etx + 1
        elif end >= window_end:
            oversize += 1
            resync = buf.find(STX, window_end)
            stop = resync if resync >= 0 else end
            garbage += stop - start
            pos = stop
        else:
            # Incomplete: keep it, from its STX, for the next read.
            return FrameScan(start, tuple(frames), garbage, oversize)
    return FrameScan(pos, tuple(frames), garbage, oversize)


def parse_frames(buf: bytes | bytearray) -> tuple[int, list[bytes], int]:
    """`(consumed, payloads, garbage_bytes)` of an STX/ETX stream; see `scan_frames`."""
    scan = scan_frames(buf)
    return scan.consumed, [frame.payload for frame in scan.frames], scan.garbage_bytes


def _excerpt(payload: bytes) -> str:
    if len(payload) <= _EXCERPT_BYTES:
        return repr(payload)
    return f"{payload[:_EXCERPT_BYTES]!r}... ({len(payload)} bytes)"


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
    id_text = id_text.strip(_PAD)
    if not _DIGITS.fullmatch(id_text):
        raise TelegramError(f"tracking id {id_text!r} is not decimal in {_excerpt(payload)}")
    # Leading zeros are harmless; the length check keeps int() away from huge inputs.
    significant = id_text.lstrip("0") or "0"
    if len(significant) > 10 or int(significant) > MAX_TRACKING_ID:
        raise TelegramError(f"tracking id {id_text} exceeds {MAX_TRACKING_ID}")
    if "|" in codes_text:
        raise TelegramError(f"more than one '|' in {_excerpt(payload)}")
    codes: dict[str, None] = {}
    for raw in codes_text.split(";"):
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
        raise TelegramError(f"no code after the tracking id in {_excerpt(payload)}")
    codes.pop(NOREAD, None)
    return IndexTelegram(tracking_id=int(significant), codes=tuple(codes))


def format_index_telegram(tracking_id: int, codes: Sequence[str]) -> bytes:
    """Build an `index` telegram, STX and ETX included; no codes means a no-read.

    Strict where the parser is lenient, so that parsing the result gives back exactly
    `tracking_id` and `codes` (less duplicates and NOREAD). Raises TelegramError for a
    tracking id out of range or a code the format cannot carry; TypeError for a bare str.
    """
    if isinstance(codes, str):
        raise TypeError("codes must be a sequence of codes, not one str")
    if not 0 <= tracking_id <= MAX_TRACKING_ID:
        raise TelegramError(f"tracking id {tracking_id} outside 0..{MAX_TRACKING_ID}")
    for code in codes:
        if not code or code != code.strip(_PAD):
            raise TelegramError(f"code {code!r} is empty or has blanks around it")
        if ";" in code or "|" in code or _BAD_CODE_CHARS.search(code) is not None:
            raise TelegramError(f"code {code!r} contains ';', '|' or a control character")
        if max(map(ord, code)) > 0xFF:
            raise TelegramError(f"code {code!r} is not latin-1")
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

    def scan_frames(self, buf: bytes | bytearray) -> FrameScan:
        return scan_frames(buf)

    def parse_payload(self, payload: bytes) -> IndexTelegram | Heartbeat | None:
        return parse_index_telegram(payload)


FORMATS: Final[Mapping[str, TelegramFormat]] = {"index": IndexFormat()}


def get_format(name: str) -> TelegramFormat:
    """The preset called `name`; KeyError naming the known presets otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
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

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray) -> list[ScanRead | Heartbeat]:
        """Add received bytes; return the reads and heartbeats they completed, in order."""
        self._buf += data
        scan = self.format.scan_frames(self._buf)
        del self._buf[: scan.consumed]
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
        self.stats.garbage_bytes += discarded
        return discarded
