"""Telegram framing and parsing, with bytes only (drivers/telegram.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.telegram import (
    FORMATS,
    HEARTBEAT,
    MAX_FRAME_BYTES,
    MAX_TRACKING_ID,
    Heartbeat,
    IndexTelegram,
    TelegramDecoder,
    TelegramError,
    format_heartbeat,
    format_index_telegram,
    get_format,
    parse_frames,
    parse_index_telegram,
    scan_frames,
)
from sorter.ports import NOREAD, ScanRead

STX = b"\x02"
ETX = b"\x03"


def frame(payload: bytes) -> bytes:
    return STX + payload + ETX


# --- framing ------------------------------------------------------------------------------


def test_frames_and_leading_garbage() -> None:
    buf = b"junk" + frame(b"1|A") + b"\r\n" + frame(b"HB")
    assert parse_frames(buf) == (len(buf), [b"1|A", b"HB"], 6)


def test_empty_buffer() -> None:
    assert parse_frames(b"") == (0, [], 0)
    assert parse_frames(bytearray()) == (0, [], 0)


def test_incomplete_frame_is_kept_from_its_stx() -> None:
    buf = b"xy" + frame(b"1|A") + b"zz" + STX + b"2|B"
    consumed, payloads, garbage = parse_frames(buf)
    assert payloads == [b"1|A"]
    assert garbage == 4
    assert buf[consumed:] == STX + b"2|B"


def test_stx_inside_a_frame_restarts_it() -> None:
    buf = STX + b"7|CUT" + STX + b"8|OK" + ETX
    assert parse_frames(buf) == (len(buf), [b"8|OK"], 6)


def test_etx_without_stx_is_garbage() -> None:
    assert parse_frames(b"1|A" + ETX) == (4, [], 4)


def test_frame_of_exactly_the_maximum_is_accepted() -> None:
    payload = b"1|" + b"A" * (MAX_FRAME_BYTES - 4)
    buf = frame(payload)
    assert len(buf) == MAX_FRAME_BYTES
    scan = scan_frames(buf)
    assert [f.payload for f in scan.frames] == [payload]
    assert scan.oversize_frames == 0


def test_oversize_frame_without_etx_is_dropped_and_scanning_resyncs() -> None:
    big = STX + b"Z" * MAX_FRAME_BYTES
    buf = big + b"tail" + frame(b"9|OK")
    scan = scan_frames(buf)
    assert [f.payload for f in scan.frames] == [b"9|OK"]
    assert scan.oversize_frames == 1
    assert scan.garbage_bytes == len(big) + 4
    assert scan.consumed == len(buf)


def test_oversize_frame_with_late_etx_is_dropped_too() -> None:
    # Same outcome whether the ETX arrives in this read or a later one.
    big = frame(b"1|" + b"Z" * MAX_FRAME_BYTES)
    scan = scan_frames(big + frame(b"2|B"))
    assert [f.payload for f in scan.frames] == [b"2|B"]
    assert scan.oversize_frames == 1
    assert scan.garbage_bytes == len(big)


def test_oversize_frame_still_open_is_consumed_as_garbage() -> None:
    buf = b"ab" + STX + b"Z" * (MAX_FRAME_BYTES + 10)
    scan = scan_frames(buf)
    assert scan == scan_frames(buf)  # pure
    assert scan.consumed == len(buf)
    assert scan.garbage_bytes == len(buf)
    assert scan.oversize_frames == 1


def test_almost_oversize_open_frame_waits_for_more() -> None:
    buf = STX + b"Z" * (MAX_FRAME_BYTES - 2)
    assert parse_frames(buf) == (0, [], 0)


# --- index telegrams ----------------------------------------------------------------------


def test_interfaces_example() -> None:
    payload = b"4711|RB123456785GB;]C10006111001000100001242020250"
    assert parse_index_telegram(payload) == IndexTelegram(
        4711, ("RB123456785GB", "]C10006111001000100001242020250")
    )


def test_heartbeat_and_empty_frame() -> None:
    assert parse_index_telegram(b"HB") is HEARTBEAT
    assert parse_index_telegram(b"HB\r\n") is HEARTBEAT
    assert parse_index_telegram(b"") is None
    assert parse_index_telegram(b" \r\n") is None


def test_noread() -> None:
    assert parse_index_telegram(b"12|NOREAD") == IndexTelegram(12, ())
    assert parse_index_telegram(b"12|NOREAD;NOREAD") == IndexTelegram(12, ())
    assert parse_index_telegram(b"12|NOREAD;ABC") == IndexTelegram(12, ("ABC",))


def test_codes_are_stripped_deduplicated_and_keep_gs() -> None:
    payload = b" 0042 | A ;B\r\n;;A; \x1dC\x1d1\r\n"
    assert parse_index_telegram(payload) == IndexTelegram(42, ("A", "B", "\x1dC\x1d1"))


def test_latin1_bytes_decode() -> None:
    assert parse_index_telegram(b"1|CAF\xc9") == IndexTelegram(1, ("CAF\u00c9",))


def test_largest_tracking_id() -> None:
    assert parse_index_telegram(f"{MAX_TRACKING_ID}|A".encode()) == IndexTelegram(
        MAX_TRACKING_ID, ("A",)
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"4711", "no '|'"),
        (b"HBX", "no '|'"),
        (b"|A", "not decimal"),
        (b"-1|A", "not decimal"),
        (b"12a|A", "not decimal"),
        (b"\xb2|A", "not decimal"),  # latin-1 superscript two: a digit to str.isdigit()
        (b"1 2|A", "not decimal"),
        (f"{MAX_TRACKING_ID + 1}|A".encode(), "exceeds"),
        (b"9" * 4000 + b"|A", "exceeds"),
        (b"1|", "no code"),
        (b"1| ;\r\n; ", "no code"),
        (b"1|A|B", "more than one"),
        (b"1|A\x00B", "control character 0x00"),
        (b"1|A\tB", "control character 0x09"),
        (b"1|A\x7f", "control character 0x7f"),
        (b"1|A\x85", "control character 0x85"),
    ],
)
def test_malformed_telegrams_raise(payload: bytes, message: str) -> None:
    with pytest.raises(TelegramError, match=message):
        parse_index_telegram(payload)


def test_telegram_error_is_a_value_error() -> None:
    assert issubclass(TelegramError, ValueError)


def test_format_index_telegram() -> None:
    assert format_index_telegram(4711, ["A", "]C1\x1dB"]) == b"\x024711|A;]C1\x1dB\x03"
    assert format_index_telegram(1, []) == b"\x021|NOREAD\x03"
    assert format_heartbeat() == b"\x02HB\x03"


@pytest.mark.parametrize(
    ("tracking_id", "codes"),
    [(-1, ["A"]), (MAX_TRACKING_ID + 1, ["A"]), (1, [""]), (1, [" A"]), (1, ["A;B"]),
     (1, ["A|B"]), (1, ["A\x03"]), (1, ["\u20ac"])],
)  # fmt: skip
def test_format_rejects_what_cannot_round_trip(tracking_id: int, codes: list[str]) -> None:
    with pytest.raises(TelegramError):
        format_index_telegram(tracking_id, codes)


def test_format_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError):
        format_index_telegram(1, "ABC")


def test_get_format() -> None:
    assert get_format("index") is FORMATS["index"]
    assert get_format("index").name == "index"
    with pytest.raises(KeyError, match="known: cognex, datalogic, index, lines, sick"):
        get_format("sick-clv")


# --- decoder ------------------------------------------------------------------------------


def test_decoder_counts_everything_and_never_raises() -> None:
    ticks = iter(range(100, 200))
    decoder = TelegramDecoder("tunnel-1", lambda: next(ticks))
    data = (
        b"noise"
        + frame(b"1|A;B")
        + frame(b"HB")
        + frame(b"2|NOREAD")
        + frame(b"bad")
        + frame(b"")
        + STX
        + b"X" * MAX_FRAME_BYTES
        + frame(b"3|C")
        + STX
        + b"4|D"
    )
    out = decoder.feed(data[:7]) + decoder.feed(data[7:])
    assert out == [
        ScanRead("tunnel-1", 1, ("A", "B"), 100),
        HEARTBEAT,
        ScanRead("tunnel-1", 2, (), 100),
        ScanRead("tunnel-1", 3, ("C",), 100),
    ]
    stats = decoder.stats
    assert (stats.frames, stats.reads, stats.noreads, stats.heartbeats) == (6, 2, 1, 1)
    assert (stats.bad_telegrams, stats.oversize_frames) == (1, 1)
    assert stats.garbage_bytes == 5 + 1 + MAX_FRAME_BYTES
    assert decoder.last_error is not None
    assert "no '|'" in decoder.last_error
    assert decoder.buffered_bytes == 4
    assert decoder.reset() == 4
    assert stats.garbage_bytes == 5 + 1 + MAX_FRAME_BYTES + 4
    assert decoder.feed(ETX) == []  # the cut frame is not completed by later bytes


def test_decoder_keeps_a_frame_split_byte_by_byte() -> None:
    decoder = TelegramDecoder("s", lambda: 7)
    out: list[ScanRead | Heartbeat] = []
    for byte in format_index_telegram(5, ["X"]):
        out += decoder.feed(bytes([byte]))
    assert out == [ScanRead("s", 5, ("X",), 7)]


# --- properties ---------------------------------------------------------------------------

_CODE_ALPHABET = st.sampled_from(
    [chr(c) for c in range(0x20, 0x7F) if chr(c) not in ";|"] + ["\x1d", "\u00e9", "\u00ff"]
)
codes_st = st.text(_CODE_ALPHABET, min_size=1, max_size=30).map(str.strip).filter(bool)
prefixed_code_st = st.one_of(codes_st, codes_st.map(lambda c: "]C1" + c))
read_st = st.tuples(
    st.integers(0, MAX_TRACKING_ID),
    st.lists(st.one_of(prefixed_code_st, st.just(NOREAD)), max_size=4),
)
telegram_st = st.one_of(st.just(HEARTBEAT), read_st)
# Garbage between frames: without STX (skipped) or without ETX (a false start, abandoned at
# the next STX). Garbage with STX ... ETX would be a frame, not garbage.
garbage_st = st.one_of(
    st.binary(max_size=20).map(lambda b: b.replace(STX, b"")),
    st.binary(max_size=20).map(lambda b: b.replace(ETX, b"")),
)
trailing_garbage_st = st.binary(max_size=20).map(lambda b: b.replace(STX, b""))


def _expected(
    telegram: Heartbeat | tuple[int, list[str]],
) -> Heartbeat | tuple[int, tuple[str, ...]]:
    if isinstance(telegram, Heartbeat):
        return telegram
    tracking_id, codes = telegram
    return tracking_id, tuple(c for c in dict.fromkeys(codes) if c != NOREAD)


def _encode(telegram: Heartbeat | tuple[int, list[str]]) -> bytes:
    if isinstance(telegram, Heartbeat):
        return format_heartbeat()
    return format_index_telegram(*telegram)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(st.tuples(garbage_st, telegram_st), max_size=12),
    trailing=trailing_garbage_st,
    data=st.data(),
)
def test_round_trip_through_garbage_and_arbitrary_splits(
    items: list[tuple[bytes, Heartbeat | tuple[int, list[str]]]],
    trailing: bytes,
    data: st.DataObject,
) -> None:
    stream = b"".join(garbage + _encode(telegram) for garbage, telegram in items) + trailing
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = TelegramDecoder("s", lambda: 0)
    out: list[ScanRead | Heartbeat] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    got = [item if isinstance(item, Heartbeat) else (item.tracking_id, item.codes) for item in out]
    assert got == [_expected(telegram) for _, telegram in items]
    assert decoder.stats.garbage_bytes == sum(len(g) for g, _ in items) + len(trailing)
    assert decoder.stats.bad_telegrams == 0
    assert decoder.buffered_bytes == 0


@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=600), data=st.data())
def test_arbitrary_bytes_never_raise_and_every_byte_is_accounted(
    stream: bytes, data: st.DataObject
) -> None:
    # Few distinct bytes, many of them STX/ETX/'|', to reach the interesting paths.
    stream = bytes(b % 8 if b < 128 else b for b in stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = TelegramDecoder("s", lambda: 0)
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.feed(stream[start:end])
    stats = decoder.stats
    consumed, payloads, garbage = parse_frames(stream)
    assert stats.frames == len(payloads)
    assert stats.garbage_bytes == garbage
    assert consumed + decoder.buffered_bytes == len(stream)
    assert consumed == garbage + sum(len(p) + 2 for p in payloads)
    assert consumed == len(stream) or stream[consumed] == STX[0]
    assert stats.reads + stats.noreads + stats.heartbeats + stats.bad_telegrams <= stats.frames


@settings(max_examples=500, deadline=None)
@given(payload=st.binary(max_size=80))
def test_payload_parser_raises_only_telegram_error(payload: bytes) -> None:
    try:
        parsed = parse_index_telegram(payload)
    except TelegramError:
        return
    if isinstance(parsed, IndexTelegram):
        assert 0 <= parsed.tracking_id <= MAX_TRACKING_ID
        assert len(set(parsed.codes)) == len(parsed.codes)
        assert all(code and code == code.strip() for code in parsed.codes)


@settings(max_examples=100, deadline=None)
@given(
    before=st.lists(read_st, max_size=3),
    after=st.lists(read_st, max_size=3),
    oversize_bytes=st.integers(MAX_FRAME_BYTES - 1, 2 * MAX_FRAME_BYTES),
    with_etx=st.booleans(),
    chunk_bytes=st.integers(1, 5000),
)
def test_oversize_frames_are_counted_and_skipped(
    before: list[tuple[int, list[str]]],
    after: list[tuple[int, list[str]]],
    oversize_bytes: int,
    with_etx: bool,
    chunk_bytes: int,
) -> None:
    big = STX + b"1|" + b"Z" * oversize_bytes + (ETX if with_etx else b"")
    stream = b"".join(map(_encode, before)) + big + b"".join(map(_encode, after))
    decoder = TelegramDecoder("s", lambda: 0)
    out: list[ScanRead | Heartbeat] = []
    for start in range(0, len(stream), chunk_bytes):
        out += decoder.feed(stream[start : start + chunk_bytes])
    assert [(r.tracking_id, r.codes) for r in out if isinstance(r, ScanRead)] == [
        _expected(t) for t in [*before, *after]
    ]
    assert decoder.stats.oversize_frames == 1
    assert decoder.stats.garbage_bytes == len(big)
