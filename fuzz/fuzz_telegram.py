"""atheris: scanner telegrams, every preset in drivers.telegram.FORMATS.

First byte: the preset and how the rest is cut into chunks. The decoder must never raise,
must give the same reads whatever the chunking, and a payload parses or raises
TelegramError only.
"""

from __future__ import annotations

import contextlib
import sys

import _common
import atheris

with _common.instrument():
    from drivers.telegram import FORMATS, MAX_FRAME_BYTES, TelegramDecoder, TelegramError

PRESETS = sorted(FORMATS)


def decode(preset: str, chunks: list[bytes]) -> list[object]:
    decoder = TelegramDecoder("fuzz", lambda: 0, telegram_format=FORMATS[preset])
    out: list[object] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
        if decoder.buffered_bytes > MAX_FRAME_BYTES:
            raise AssertionError(f"{preset}: {decoder.buffered_bytes} bytes buffered")
    return out


def test_one_input(data: bytes) -> None:
    if not data:
        return
    preset = PRESETS[data[0] % len(PRESETS)]
    step = data[0] // len(PRESETS) % 17 + 1
    body = data[1:]
    fmt = FORMATS[preset]
    scan = fmt.scan_frames(body)
    if not 0 <= scan.consumed <= len(body) or scan.garbage_bytes > scan.consumed:
        raise AssertionError(f"{preset}: bad accounting {scan}")
    for frame in scan.frames:
        with contextlib.suppress(TelegramError):
            fmt.parse_payload(frame.payload)
    with contextlib.suppress(TelegramError):
        fmt.parse_payload(body)  # the parser alone, without the framer's filtering
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    if decode(preset, [body]) != decode(preset, chunks):
        raise AssertionError(f"{preset}: reads depend on chunking (step {step})")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
