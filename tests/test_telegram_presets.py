"""The telegram presets beside `index`, with bytes only: framer, parsers, encoders, config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.telegram import (
    FORMATS,
    HEARTBEAT,
    MAX_TRACKING_ID,
    DelimitedFormat,
    Frame,
    Framer,
    Heartbeat,
    Telegram,
    TelegramDecoder,
    TelegramError,
    TelegramFormat,
    format_from_options,
    get_format,
)
from sorter.config import ConfigError, load_site
from sorter.ports import ScanRead
from sorter.telegram_options import OPTION_KEYS, PRESET_KEYS, PRESETS, problems, resolve
from sorterd.demo import demo_config_dir


def build(preset: str, **given: object) -> TelegramFormat:
    """A preset as the site config would give it; the settings must pass the config check."""
    options = resolve(preset, given)
    assert problems(options, set(given)) == []
    return format_from_options(options)


@dataclass(frozen=True)
class Variant:
    id: str
    fmt: TelegramFormat
    specials: str  # characters a code of this variant cannot contain
    max_codes: int = 4


CUSTOM_ID = {
    "start": "<",
    "end": ">\r\n",
    "pattern": r"ID=(?P<tracking_id>\d+) CODES=(?P<codes>.*)",
    "template": "ID={tracking_id} CODES={codes}",
}
VARIANTS = [
    Variant("index", FORMATS["index"], ";|"),
    Variant("sick", FORMATS["sick"], ","),
    Variant(
        "sick-id",
        build("sick", tracking_id=True, header="CLV", trailer="END", separator="/",
              id_separator=":", heartbeat="ALIVE"),
        "/:",
    ),
    Variant("cognex", FORMATS["cognex"], ","),
    Variant(
        "cognex-leading",
        build("cognex", header="<R>", trailer="</R>", noread="NR", end="\r", start="\u0002"),
        ",<>",
    ),
    Variant("datalogic", FORMATS["datalogic"], ","),
    Variant(
        "datalogic-sep", build("datalogic", header="DL", separator="#", id_separator="|"), "#|"
    ),
    Variant("lines", FORMATS["lines"], ","),
    Variant("lines-crlf-space", build("lines", end="\r\n", separator=" "), " "),
    Variant("custom-id", build("custom", **CUSTOM_ID), ",<>"),
    Variant(
        "custom-one-code",
        build("custom", start="[", end="]", pattern=r"(?P<codes>[^\]]*)", separator="",
              template="{codes}"),
        "[]{}",
        max_codes=1,
    ),
]  # fmt: skip
BY_ID = {v.id: v for v in VARIANTS}


def _parse_all(fmt: TelegramFormat, data: bytes) -> list[ScanRead | Heartbeat]:
    decoder = TelegramDecoder("s", lambda: 0, telegram_format=fmt)
    out = decoder.feed(data)
    assert decoder.stats.bad_telegrams == 0, decoder.last_error
    return out


# --- the documented sample telegrams (docs/scanners.md) -----------------------------------


S10 = "RB123456785GB"
UPS = "1Z999AA10123456784"


@pytest.mark.parametrize(
    ("fmt", "data", "expected"),
    [
        (FORMATS["sick"], b"\x02RB123456785GB,]C100061110\x03", (None, (S10, "]C100061110"))),
        (FORMATS["sick"], b"\x02NoRead\x03", (None, ())),
        (build("sick", tracking_id=True), b"\x024711;RB123456785GB\x03", (4711, (S10,))),
        (FORMATS["cognex"], b"RB123456785GB,1Z999AA10123456784\r\n", (None, (S10, UPS))),
        (FORMATS["cognex"], b"NOREAD\r\n", (None, ())),
        (build("cognex", header="[", trailer="]"), b"[RB123456785GB]\r\n", (None, (S10,))),
        (
            FORMATS["datalogic"],
            b"\x024711,RB123456785GB,1Z999AA10123456784\x03",
            (4711, (S10, UPS)),
        ),
        (FORMATS["datalogic"], b"\x024712,NOREAD\x03", (4712, ())),
        (FORMATS["lines"], b"RB123456785GB\r\n", (None, (S10,))),
        (FORMATS["lines"], b"RB123456785GB,JJD0001\n", (None, (S10, "JJD0001"))),
        (build("custom", **CUSTOM_ID), b"<ID=4711 CODES=RB123456785GB>\r\n", (4711, (S10,))),
    ],
)
def test_sample_telegrams(
    fmt: TelegramFormat, data: bytes, expected: tuple[int | None, tuple[str, ...]]
) -> None:
    [read] = _parse_all(fmt, data)
    assert isinstance(read, ScanRead)
    assert (read.tracking_id, read.codes) == expected


def test_heartbeats() -> None:
    assert _parse_all(FORMATS["sick"], b"\x02HB\x03") == [HEARTBEAT]
    sick = BY_ID["sick-id"].fmt
    assert sick.encode_heartbeat() == b"\x02ALIVE\x03"
    assert _parse_all(sick, b"\x02ALIVE\r\n\x03") == [HEARTBEAT]
    for name in ("cognex", "datalogic", "lines"):
        assert FORMATS[name].encode_heartbeat() is None
    assert _parse_all(FORMATS["lines"], b"\r\n\n  \n") == []  # blank lines carry nothing


def test_which_presets_carry_a_tracking_id() -> None:
    carries = {name: fmt.carries_tracking_id for name, fmt in FORMATS.items()}
    assert carries == {
        "index": True,
        "sick": False,
        "cognex": False,
        "datalogic": True,
        "lines": False,
    }
    assert BY_ID["sick-id"].fmt.carries_tracking_id
    assert BY_ID["custom-id"].fmt.carries_tracking_id
    assert not BY_ID["custom-one-code"].fmt.carries_tracking_id
    with pytest.raises(KeyError, match="needs a pattern"):
        get_format("custom")


@pytest.mark.parametrize(
    ("variant", "payload", "message"),
    [
        ("sick-id", b"XLV4711:A/BEND", "no header"),
        ("sick-id", b"CLV4711:A/BENX", "no trailer"),
        ("sick-id", b"CLVEND", "no ':' after the tracking id"),
        ("sick-id", b"CLVx:AEND", "not decimal"),
        ("sick-id", b"CLV4711:/ /END", "no code after the tracking id"),
        ("datalogic", b"99999999999,A", "exceeds"),
        ("datalogic", b"4711;A", "no ','"),
        ("lines", b"A,B\x00", "control character 0x00"),
        ("custom-id", b"ID=x CODES=A", "does not match"),
        ("custom-id", b"ID=1 CODES=", "no code"),
    ],
)
def test_malformed_payloads_raise_telegram_error(
    variant: str, payload: bytes, message: str
) -> None:
    assert BY_ID["sick-id"].fmt.parse_payload(b"CLV4711:AEND") == Telegram(4711, ("A",))
    with pytest.raises(TelegramError, match=message):
        BY_ID[variant].fmt.parse_payload(payload)


def test_custom_optional_tracking_id_group() -> None:
    fmt = build("custom", pattern=r"(?:(?P<tracking_id>\d+):)?(?P<codes>.+)")
    assert fmt.parse_payload(b"12:A,B") == Telegram(12, ("A", "B"))
    assert fmt.parse_payload(b"A,B") == Telegram(None, ("A", "B"))
    with pytest.raises(TelegramError, match="no template"):
        fmt.encode_read(12, ["A"])


# --- encoders: strict ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "tracking_id", "codes", "message"),
    [
        ("sick", 1, ["A"], "carries no tracking id"),
        ("datalogic", None, ["A"], "needs a tracking id"),
        ("datalogic", MAX_TRACKING_ID + 1, ["A"], "outside"),
        ("sick", None, ["A,B"], "contains ','"),
        ("cognex", None, [" A"], "blanks"),
        ("lines", None, ["A\nB"], "control character"),
        ("lines", None, ["\u20ac"], "latin-1"),
        ("sick", None, ["HB"], "would parse as"),  # the heartbeat text as the only code
        ("custom-one-code", None, ["A", "B"], "one code"),
        ("custom-one-code", None, ["A]"], "would not frame"),
        ("custom-id", 1, ["A>\r\nB"], "control character"),
    ],
)
def test_encoders_refuse_what_would_not_come_back(
    variant: str, tracking_id: int | None, codes: list[str], message: str
) -> None:
    with pytest.raises(TelegramError, match=message):
        BY_ID[variant].fmt.encode_read(tracking_id, codes)


def test_encoder_refuses_an_overlap_with_the_end_delimiter() -> None:
    fmt = DelimitedFormat("x", Framer(b"", b"aa"), separator=",")
    assert fmt.encode_read(None, ["xb"]) == b"xbaa"
    with pytest.raises(TelegramError, match="would not frame"):
        fmt.encode_read(None, ["xa"])  # b"xaaa" would end after "x"


def test_encoder_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError):
        FORMATS["lines"].encode_read(None, "ABC")


# --- round trips (hypothesis) ---------------------------------------------------------------

_ALPHABET = [chr(c) for c in range(0x20, 0x7F)] + ["\x1d", "\u00e9", "\u00ff"]


@st.composite
def _reads(draw: st.DrawFn, variant: Variant) -> tuple[int | None, list[str]]:
    fmt = variant.fmt
    alphabet = st.sampled_from([c for c in _ALPHABET if c not in variant.specials])
    code = st.text(alphabet, min_size=1, max_size=20).map(str.strip).filter(bool)
    noread = getattr(fmt, "noread", "NOREAD")
    heartbeat = getattr(fmt, "heartbeat", "HB")
    codes = draw(
        st.lists(st.one_of(code, st.just(noread)), max_size=variant.max_codes).filter(
            lambda c: c != [heartbeat]  # that telegram would be the heartbeat
        )
    )
    tracking_id = draw(st.integers(0, MAX_TRACKING_ID)) if fmt.carries_tracking_id else None
    return tracking_id, codes


def _expected(fmt: TelegramFormat, read: tuple[int | None, list[str]]) -> tuple[object, ...]:
    noread = getattr(fmt, "noread", "NOREAD")
    tracking_id, codes = read
    return tracking_id, tuple(c for c in dict.fromkeys(codes) if c != noread)


def _feed_in_pieces(
    decoder: TelegramDecoder, stream: bytes, cuts: list[int]
) -> list[ScanRead | Heartbeat]:
    out: list[ScanRead | Heartbeat] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    return out


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.id)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_through_noise_and_arbitrary_splits(
    variant: Variant, data: st.DataObject
) -> None:
    fmt = variant.fmt
    framer: Framer | None = getattr(fmt, "framer", None)
    start = framer.start if framer is not None else b"\x02"
    end = framer.end if framer is not None else b"\x03"
    heartbeat = fmt.encode_heartbeat()
    item = _reads(variant) if heartbeat is None else st.one_of(_reads(variant), st.just(None))
    if start:
        # Noise outside frames: without a start (skipped) or without an end (a false
        # start, abandoned at the next start).
        noise = st.one_of(
            st.binary(max_size=12).map(lambda b: b.replace(start, b"")),
            st.binary(max_size=12).map(lambda b: b.replace(end, b"")),
        )
    else:
        noise = st.sampled_from([b"", end, b" " + end])  # blank lines carry nothing
    items = data.draw(st.lists(st.tuples(noise, item), max_size=8))
    stream = b"".join(
        n + (fmt.encode_read(*r) if r is not None else heartbeat or b"") for n, r in items
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = TelegramDecoder("s", lambda: 0, telegram_format=fmt)
    out = _feed_in_pieces(decoder, stream, cuts)
    got = [HEARTBEAT if isinstance(o, Heartbeat) else (o.tracking_id, o.codes) for o in out]
    assert got == [HEARTBEAT if r is None else _expected(fmt, r) for _, r in items]
    assert decoder.stats.bad_telegrams == 0
    assert decoder.buffered_bytes == 0
    if start:
        assert decoder.stats.garbage_bytes == sum(len(n) for n, _ in items)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.id)
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_encoders_are_strict_inverses(variant: Variant, data: st.DataObject) -> None:
    """Whatever the codes, the encoder either refuses them or they come back exactly."""
    fmt = variant.fmt
    codes = data.draw(st.lists(st.text(st.sampled_from([*_ALPHABET, "\r", "\x02"]), max_size=8)))
    tracking_id = 7 if fmt.carries_tracking_id else None
    try:
        frame = fmt.encode_read(tracking_id, codes)
    except TelegramError:
        return
    [read] = _parse_all(fmt, frame)
    assert isinstance(read, ScanRead)
    assert (read.tracking_id, read.codes) == _expected(fmt, (tracking_id, codes))


# --- the generalised framer ---------------------------------------------------------------


def test_framer_with_multi_byte_delimiters() -> None:
    framer = Framer(b"<<", b">>", 16)
    scan = framer.scan(b"x<<a>>y<<b<<c>><")
    assert scan.frames == (Frame(b"a"), Frame(b"c"))
    assert scan.garbage_bytes == 1 + 1 + 3  # x, y, the abandoned "<<b"
    assert scan.consumed == 15  # the last "<" may begin the next start


def test_lines_framer_drops_an_oversize_line_across_reads() -> None:
    framer = Framer(b"", b"\n", 8)
    first = framer.scan(b"ok\n" + b"Z" * 10)
    assert first.frames == (Frame(b"ok"),)
    assert (first.oversize_frames, first.discarding, first.consumed) == (1, True, 13)
    second = framer.scan(b"ZZZ\nnext\n", discarding=True)
    assert second.frames == (Frame(b"next"),)  # the tail of the long line is not a frame
    assert (second.garbage_bytes, second.discarding) == (4, False)


@pytest.mark.parametrize(
    ("start", "end"),
    [(b"\x02", b"\x03"), (b"ab", b"ba"), (b"<<", b">"), (b"", b"\n"), (b"", b"ab"), (b"", b"aa")],
)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_framing_never_depends_on_how_bytes_are_chunked(
    start: bytes, end: bytes, data: st.DataObject
) -> None:
    alphabet = sorted(set(start + end + b"xy"))
    stream = bytes(data.draw(st.lists(st.sampled_from(alphabet), max_size=80)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    fmt = DelimitedFormat("x", Framer(start, end, 10), separator="y")
    whole = TelegramDecoder("s", lambda: 0, telegram_format=fmt)
    pieces = TelegramDecoder("s", lambda: 0, telegram_format=fmt)
    assert whole.feed(stream) == _feed_in_pieces(pieces, stream, cuts)
    assert whole.stats == pieces.stats
    assert whole.buffered_bytes == pieces.buffered_bytes
    stats = whole.stats
    assert stats.reads + stats.noreads + stats.heartbeats + stats.bad_telegrams <= stats.frames


# --- bad input ----------------------------------------------------------------------------

_SAMPLE_READS = [(4711, ["RB123456785GB", "]C1\x1d00061110"]), (4712, []), (4713, ["1Z999AA1"])]


@pytest.mark.parametrize("receiver", VARIANTS, ids=lambda v: v.id)
def test_telegrams_of_another_preset_never_give_a_tracking_id(receiver: Variant) -> None:
    decoder = TelegramDecoder("s", lambda: 0, telegram_format=receiver.fmt)
    sent = 0
    for sender in VARIANTS:
        if sender.id.split("-")[0] == receiver.id.split("-")[0]:
            continue  # the same preset, differently configured
        for tracking_id, codes in _SAMPLE_READS:
            carried = tracking_id if sender.fmt.carries_tracking_id else None
            for read in decoder.feed(sender.fmt.encode_read(carried, codes[: sender.max_codes])):
                assert isinstance(read, ScanRead) or read is HEARTBEAT
                # A foreign telegram never becomes a read with a (wrong) tracking id.
                assert not isinstance(read, ScanRead) or read.tracking_id is None
            sent += 1
    decoder.reset()
    stats = decoder.stats
    assert sent > 0
    assert stats.bad_telegrams + stats.garbage_bytes + stats.oversize_frames > 0


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.id)
@settings(max_examples=60, deadline=None)
@given(stream=st.binary(max_size=400), data=st.data())
def test_random_bytes_never_raise(variant: Variant, stream: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = TelegramDecoder("s", lambda: 0, telegram_format=variant.fmt)
    for read in _feed_in_pieces(decoder, stream, cuts):
        if isinstance(read, ScanRead):
            assert all(code and code == code.strip() for code in read.codes)
    assert decoder.reset() >= 0
    assert decoder.buffered_bytes == 0


def test_reset_drops_a_cut_line_and_the_discarding_state() -> None:
    decoder = TelegramDecoder("s", lambda: 0, telegram_format=build("lines", max_frame_bytes=8))
    assert decoder.feed(b"RB1234") == []
    assert decoder.reset() == 6
    assert decoder.feed(b"ABC\n") == [ScanRead("s", None, ("ABC",), 0)]  # not "RB1234ABC"
    assert decoder.feed(b"Z" * 20) == []  # oversize: discarding up to its end
    assert decoder.reset() == 0
    assert decoder.feed(b"DEF\n") == [ScanRead("s", None, ("DEF",), 0)]  # a new link


# --- config -------------------------------------------------------------------------------


def test_preset_keys_are_known_options() -> None:
    assert set(PRESET_KEYS) == set(PRESETS)
    for keys in PRESET_KEYS.values():
        assert keys <= set(OPTION_KEYS)
    assert PRESET_KEYS["index"] == frozenset()


def _site(tmp_path: Path, scanner_lines: str) -> Path:
    good = (demo_config_dir() / "site.toml").read_text()
    (tmp_path / "sortplan.toml").write_text((demo_config_dir() / "sortplan.toml").read_text())
    site = tmp_path / "site.toml"
    site.write_text(good.replace('format = "index"', scanner_lines, 1))
    return site


def test_site_config_builds_the_format(tmp_path: Path) -> None:
    site = load_site(
        _site(
            tmp_path,
            'format = "custom"\nstart = "\\u0002"\nend = "\\u0003"\n'
            'pattern = "(?P<tracking_id>[0-9]+)/(?P<codes>.*)"\ntemplate = "{tracking_id}/{codes}"',
        )
    )
    section = site.config.scanner[0]
    fmt = format_from_options(section.telegram_options())
    assert fmt.encode_read(12, ["A", "B"]) == b"\x0212/A,B\x03"
    assert fmt.parse_payload(b"12/A,B") == Telegram(12, ("A", "B"))


@pytest.mark.parametrize(
    ("lines", "key", "words"),
    [
        ('format = "custom"\npattern = "(?P<codes>.*"', "pattern", "invalid regular expression"),
        ('format = "custom"\npattern = "(?P<code>.*)"', "pattern", "(?P<codes>...)"),
        ('format = "custom"', "pattern", "required"),
        ('format = "custom"\npattern = "(?P<codes>.*)"\ntemplate = "{code}"', "template", "code"),
        (
            'format = "custom"\npattern = "(?P<codes>.*)"\ntemplate = "{tracking_id}{codes}"',
            "template",
            "exactly when",
        ),
        ('format = "lines"\nheader = "X"', "header", "not a key of format 'lines'"),
        ('format = "index"\nseparator = ","', "separator", "not a key of format 'index'"),
        ('format = "sick"\nseperator = ","', "seperator", "unknown key"),
        ('format = "sick"\nend = ""', "end", "must not be empty"),
        ('format = "sick"\nseparator = "\\u0003"', "separator", "start or end bytes"),
        ('format = "sick"\nheader = "\\u20ac"', "header", "not Latin-1"),
        ('format = "sick"\nheader = " H"', "header", "blanks"),
        ('format = "datalogic"\nid_separator = "0"', "id_separator", "digits"),
        ('format = "cognex"\nnoread = "NO,READ"', "noread", "separator"),
        ('format = "cognex"\nmax_frame_bytes = 2', "max_frame_bytes", "greater than or equal"),
        ('format = "sick"\ntracking_id = "yes"', "tracking_id", "boolean"),
        # A start inside the end: framing would depend on where the stream is cut.
        (
            'format = "custom"\npattern = "(?P<codes>.*)"\nstart = "#"\nend = "#\\r\\n"',
            "start",
            "must not occur in end",
        ),
        ('format = "sick"\nheartbeat = "NoRead"', "heartbeat", "equals noread"),
        # The daemon refuses codes with control characters: no no-read would ever arrive.
        ('format = "lines"\nnoread = "\\u0007NOREAD"', "noread", "control character"),
        (
            'format = "custom"\npattern = "(?P<codes>.*)"\ntemplate = "{codes:d}"',
            "template",
            "invalid template",
        ),
    ],
)
def test_config_problems_name_the_key(tmp_path: Path, lines: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_site(_site(tmp_path, lines))
    messages = [str(p) for p in info.value.problems]
    assert any(f"scanner[0].{key}: " in m and words in m for m in messages), messages
