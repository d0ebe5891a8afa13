"""The simulators' telegram encoder against the daemon's decoder, for every preset.

The two are written independently (simulators/telegrams.py from the documented telegram
shapes, drivers/telegram.py for the daemon); here every frame the simulator sends must
decode to exactly the read it meant, for the presets' defaults and for option
combinations the config check accepts, and both encoders must agree byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from drivers.telegram import HEARTBEAT, TelegramDecoder, TelegramError, format_from_options
from simulators.sortplan import machine_chutes, parse_chutes
from simulators.telegrams import (
    MAX_TRACKING_ID,
    TelegramEncodeError,
    TelegramEncoder,
    encoder_for,
)
from sorter.config import ConfigError
from sorter.ports import ScanRead
from sorter.telegram_options import (
    PAD,
    PRESET_DEFAULTS,
    PRESET_KEYS,
    TelegramOptions,
    problems,
    resolve,
)
from sorterd.demo import demo_config_dir

CUSTOM = [
    {
        "start": "<",
        "end": ">\r\n",
        "pattern": r"ID=(?P<tracking_id>\d+) CODES=(?P<codes>.*)",
        "template": "ID={tracking_id} CODES={codes}",
        "heartbeat": "PING",
    },
    {
        "start": "[",
        "end": "]",
        "pattern": r"(?P<codes>[^\]]*)",
        "separator": "",
        "template": "{codes}",
    },
    {"pattern": r"R:(?P<codes>.*)", "template": "R:{codes}", "separator": "/"},
]
DEFAULTS = [name for name in PRESET_DEFAULTS if name != "custom"]

# Settings values that make the framing hard: shared bytes, multi-byte delimiters, blanks.
_TEXTS = st.sampled_from(
    ["", "#", "/", ":", "|", ";", ",", "<", ">", "\x02", "\x03", "\r\n", "\n", "\r", "AB",
     "X", "ab", " ", "HB", "NR", "END", "\x02\x02", "a\x03"]
)  # fmt: skip
_CODE = st.text(alphabet="ABHNR01]\x1d-.:/,#|;<>xa ", min_size=1, max_size=12)


@st.composite
def _configured(draw: st.DrawFn) -> TelegramOptions:
    """A preset with settings the config check accepts (as a site's [[scanner]] gives)."""
    preset = draw(st.sampled_from(["sick", "cognex", "datalogic", "lines"]))
    keys = sorted(PRESET_KEYS[preset] - {"max_frame_bytes", "tracking_id"})
    given: dict[str, Any] = {k: draw(_TEXTS) for k in draw(st.sets(st.sampled_from(keys)))}
    if "tracking_id" in PRESET_KEYS[preset]:
        given["tracking_id"] = draw(st.booleans())
    if draw(st.booleans()) and "max_frame_bytes" in PRESET_KEYS[preset]:
        given["max_frame_bytes"] = draw(st.integers(8, 64))
    options = resolve(preset, given)
    assume(problems(options, set(given)) == [])
    return options


def _decoded(options: TelegramOptions, frame: bytes) -> list[ScanRead | object]:
    decoder = TelegramDecoder("s", lambda: 0, telegram_format=format_from_options(options))
    out: list[ScanRead | object] = list(decoder.feed(frame))
    assert decoder.stats.bad_telegrams == 0, decoder.last_error
    assert decoder.stats.garbage_bytes == decoder.stats.oversize_frames == 0
    assert decoder.buffered_bytes == 0
    return out


def _round_trip(options: TelegramOptions, tracking_id: int, codes: list[str]) -> None:
    """What the simulator sends decodes to the read it meant, as the daemon's encoder
    would have sent it; a read one side refuses, the other refuses too."""
    sim = TelegramEncoder(options)
    driver = format_from_options(options)
    assert sim.carries_tracking_id == driver.carries_tracking_id
    sent_id = tracking_id if sim.carries_tracking_id else None
    try:
        frame = sim.encode_read(sent_id, codes)
    except TelegramEncodeError:
        with pytest.raises(TelegramError):
            driver.encode_read(sent_id, codes)
        return
    expected = tuple(c for c in dict.fromkeys(codes) if c != options.noread)
    assert _decoded(options, frame) == [ScanRead("s", sent_id, expected, 0)]
    assert driver.encode_read(sent_id, codes) == frame


def _heartbeat(options: TelegramOptions) -> None:
    sim = TelegramEncoder(options).encode_heartbeat()
    assert sim == format_from_options(options).encode_heartbeat()
    if sim is not None:
        assert _decoded(options, sim) == [HEARTBEAT]


@pytest.mark.parametrize(
    "options",
    [PRESET_DEFAULTS[name] for name in DEFAULTS] + [resolve("custom", g) for g in CUSTOM],
    ids=[*DEFAULTS, "custom-id", "custom-one-code", "custom-no-start"],
)
def test_each_preset_with_its_samples(options: TelegramOptions) -> None:
    _heartbeat(options)
    one = options.format == "custom" and not options.separator
    for codes in (
        [],
        ["RB123456785GB"],
        ["RB123456785GB", "]C1\x1d00061110", "RB123456785GB"][: 1 if one else 3],
        [options.noread, "1Z999AA10123456784"][: 1 if one else 2],
    ):
        _round_trip(options, 4711, codes)


@settings(max_examples=300, deadline=None)
@given(
    options=st.sampled_from(DEFAULTS).map(lambda n: PRESET_DEFAULTS[n]) | _configured(),
    tracking_id=st.integers(0, MAX_TRACKING_ID),
    codes=st.lists(_CODE, max_size=4),
    draw_heartbeat=st.booleans(),
)
def test_every_option_combination_round_trips(
    options: TelegramOptions, tracking_id: int, codes: list[str], draw_heartbeat: bool
) -> None:
    codes = [c for c in (c.strip(PAD) for c in codes) if c]
    if options.heartbeat and draw_heartbeat:
        codes = [options.heartbeat]  # a read that would look like the heartbeat
    _heartbeat(options)
    _round_trip(options, tracking_id, codes)


@settings(max_examples=100, deadline=None)
@given(
    given_index=st.sampled_from(range(len(CUSTOM))),
    tracking_id=st.integers(0, MAX_TRACKING_ID),
    codes=st.lists(st.text(alphabet="AB01]\x1d-.", min_size=1, max_size=12), max_size=3),
)
def test_custom_presets_round_trip(given_index: int, tracking_id: int, codes: list[str]) -> None:
    options = resolve("custom", CUSTOM[given_index])
    if not options.separator:
        codes = codes[:1]
    _round_trip(options, tracking_id, codes)


def test_refusals() -> None:
    index = encoder_for("index")
    for tracking_id, codes in [
        (None, ["A"]),
        (-1, ["A"]),
        (MAX_TRACKING_ID + 1, ["A"]),
        (1, ["A;B"]),
        (1, ["A|B"]),
        (1, [" A"]),
        (1, [""]),
        (1, ["A\x01"]),
        (1, ["\u20ac"]),
        (1, ["A\x03"]),
        (1, ["X" * 5000]),
    ]:
        with pytest.raises(TelegramEncodeError):
            index.encode_read(tracking_id, codes)
    with pytest.raises(TelegramEncodeError, match="heartbeat"):
        encoder_for("sick").encode_read(None, ["HB"])  # a read the daemon takes for one
    with pytest.raises(TelegramEncodeError, match="carries no tracking id"):
        encoder_for("lines").encode_read(1, ["A"])
    with pytest.raises(TelegramEncodeError, match="no template"):
        TelegramEncoder(resolve("custom", {"pattern": "(?P<codes>.*)"})).encode_read(None, ["A"])
    with pytest.raises(TypeError):
        index.encode_read(1, "ABC")


def test_encoder_for() -> None:
    assert encoder_for("index").encode_read(4711, ["A", "B"]) == b"\x024711|A;B\x03"
    assert encoder_for("index").encode_heartbeat() == b"\x02HB\x03"
    assert encoder_for("cognex").encode_heartbeat() is None
    assert encoder_for(PRESET_DEFAULTS["sick"]).name == "sick"
    with pytest.raises(KeyError, match="known: cognex"):
        encoder_for("zebra")
    with pytest.raises(KeyError, match="needs a pattern"):
        encoder_for("custom")


# --- the sort plan's chutes, as the simulated line reads them -----------------------------


def test_parse_chutes() -> None:
    assert parse_chutes("1-3") == (1, 2, 3)
    assert parse_chutes("1-2, 7,5-5") == (1, 2, 5, 7)
    assert parse_chutes([3, 1]) == (1, 3)
    for bad in ("", "1-", "a", "0", "1-2400000000", [1, "2"], 5, None, []):
        with pytest.raises(ValueError, match=r"chute"):
            parse_chutes(bad)


def test_machine_chutes_of_the_demo_plan(tmp_path: Path) -> None:
    assert machine_chutes(demo_config_dir() / "sortplan.toml") == tuple(range(1, 61))
    plan = tmp_path / "sortplan.toml"
    plan.write_text('version = 2\n[machine]\nchutes = "1-x"\n')
    with pytest.raises(ConfigError, match=r"sortplan.toml: machine.chutes: '1-x'"):
        machine_chutes(plan)
    with pytest.raises(ConfigError, match="cannot read"):
        machine_chutes(tmp_path / "missing.toml")
