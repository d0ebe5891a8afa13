"""Scanner telegrams: every preset in drivers.telegram.FORMATS, from arbitrary bytes.

The presets are taken from the registry at collection time, so a preset added later is
fuzzed without a change here. Properties: the framer never raises and accounts for what it
consumed; a payload parses or raises TelegramError, nothing else; the decoder never raises,
keeps its buffer bounded, and gives the same reads however the stream is cut into chunks
(TCP segments fall anywhere).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.telegram import (
    FORMATS,
    MAX_FRAME_BYTES,
    MAX_TRACKING_ID,
    Heartbeat,
    Telegram,
    TelegramDecoder,
    TelegramError,
    TelegramFormat,
)
from tests.fuzz.profile import fuzz

PRESETS = sorted(FORMATS)

# Pieces that mean something to some framer or parser, mixed with arbitrary bytes: random
# bytes alone almost never make a frame, so the parsers behind the framer would go untested.
TOKENS = [
    b"\x02", b"\x03", b"\x02\x03", b"\r", b"\n", b"\r\n", b"\x1d", b"|", b";", b",", b" ",
    b"\t", b"HB", b"NOREAD", b"0", b"1", b"4294967295", b"4294967296", b"0000000000042",
    b"12345", b"3SABC1234", b"]C1", b"\x00", b"\xff", b"\x7f", b"\x85", b"\xc3\xa9",
    b"99999999999999999999", b"-1", b"+1", b"\xef\xbb\xbf", b"STX", b"<", b">", b"\x1e",
]  # fmt: skip

token_streams = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.binary(max_size=16)), max_size=80
).map(b"".join)
streams = st.one_of(token_streams, st.binary(max_size=600))


def _max_frame(fmt: TelegramFormat) -> int:
    return int(getattr(fmt, "max_frame_bytes", MAX_FRAME_BYTES))


def _check_parsed(parsed: Telegram | Heartbeat | None) -> None:
    if parsed is None or isinstance(parsed, Heartbeat):
        return
    assert isinstance(parsed, Telegram)
    assert parsed.tracking_id is None or 0 <= parsed.tracking_id <= MAX_TRACKING_ID
    assert isinstance(parsed.codes, tuple)
    assert all(isinstance(c, str) and c for c in parsed.codes)
    assert len(set(parsed.codes)) == len(parsed.codes)  # duplicates removed


@pytest.mark.parametrize("preset", PRESETS)
@fuzz()
@given(buf=streams)
@example(buf=b"\x02" * 5000)
@example(buf=b"\x02" + b"1|" + b"A" * 5000 + b"\x03")
def test_framer_accounts_for_its_input(preset: str, buf: bytes) -> None:
    fmt = FORMATS[preset]
    scan = fmt.scan_frames(buf)
    assert 0 <= scan.consumed <= len(buf)
    assert 0 <= scan.garbage_bytes <= scan.consumed
    assert scan.oversize_frames >= 0
    consumed = buf[: scan.consumed]
    assert sum(len(f.payload) for f in scan.frames) + scan.garbage_bytes <= scan.consumed
    for frame in scan.frames:
        assert frame.payload in consumed
    # What is left for the next read is at most one incomplete frame.
    assert len(buf) - scan.consumed <= _max_frame(fmt)


@pytest.mark.parametrize("preset", PRESETS)
@fuzz()
@given(payload=streams)
@example(payload=b"0" * 10_000 + b"1|A")
@example(payload=b"1|" + b";" * 3000)
def test_payload_parses_or_raises_telegram_error(preset: str, payload: bytes) -> None:
    try:
        parsed = FORMATS[preset].parse_payload(payload)
    except TelegramError as exc:
        reason = str(exc)
        assert reason  # for the log
        return
    _check_parsed(parsed)


def _decode(preset: str, chunks: list[bytes]) -> tuple[list[object], TelegramDecoder]:
    decoder = TelegramDecoder("fuzz", lambda: 0, telegram_format=FORMATS[preset])
    events: list[object] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
        assert decoder.buffered_bytes <= _max_frame(FORMATS[preset])
    return events, decoder


@pytest.mark.parametrize("preset", PRESETS)
@fuzz()
@given(buf=streams, cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=12))
def test_decoder_is_chunking_invariant(preset: str, buf: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(buf), *(c for c in cuts if c <= len(buf))})
    chunks = [buf[a:b] for a, b in itertools.pairwise(bounds)]
    whole, dec_whole = _decode(preset, [buf])
    pieces, dec_pieces = _decode(preset, chunks)
    assert pieces == whole
    s1, s2 = dec_whole.stats, dec_pieces.stats
    assert (s1.frames, s1.reads, s1.noreads, s1.heartbeats, s1.bad_telegrams) == (
        s2.frames,
        s2.reads,
        s2.noreads,
        s2.heartbeats,
        s2.bad_telegrams,
    )
    # Every frame is exactly one of: read, no-read, heartbeat, bad, or an empty keep-alive.
    assert s1.reads + s1.noreads + s1.heartbeats + s1.bad_telegrams <= s1.frames
