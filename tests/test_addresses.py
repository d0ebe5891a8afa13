"""One parser per kind of address (sorter/addresses.py), and check-config agreeing with the
drivers: a config it accepts constructs every driver, one it refuses names file, key and
value."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import serial
from hypothesis import example, given, settings
from hypothesis import strategies as st
from serial.urlhandler import protocol_alt, protocol_socket, protocol_spy

from drivers.mqtt import MqttPublisher
from drivers.plc import PlcLink
from drivers.scanner import StreamScanner
from sorter.addresses import (
    ALT_CLASSES,
    SOCKET_LOGGING_LEVELS,
    SPY_OPTIONS,
    MqttEndpoint,
    SerialEndpoint,
    SerialSettings,
    TcpEndpoint,
    parse_mqtt_url,
    parse_plc_url,
    parse_scanner_url,
)
from sorter.config import ConfigError, load_site
from tests.linekit import PLAN_PATH

# Accepted by the old check-config, refused by the driver at start-up (issue 13).
ONCE_ACCEPTED_BY_CHECK_CONFIG_ONLY = (
    "rfc2217://h:4000",
    "spy://",
    "alt://",
    "tcp://h:1/x",
    "/dev/ttyS0?foo=1",
    "serial:///dev/ttyS0?baudrate=abc",
)


# --- scanner URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("tcp://127.0.0.1:5021", TcpEndpoint("127.0.0.1", 5021)),
        ("tcp://[::1]:5021/", TcpEndpoint("::1", 5021)),
        ("serial:///dev/ttyS0?baudrate=115200", SerialEndpoint("/dev/ttyS0", baudrate=115200)),
        (
            "serial:///dev/ttyUSB0?baudrate=9600&parity=e&stopbits=2&bytesize=7&rtscts=true",
            SerialEndpoint("/dev/ttyUSB0", parity="E", stopbits=2.0, bytesize=7, rtscts=True),
        ),
        (
            "/dev/ttyS0?parity=even&stopbits=1.5",
            SerialEndpoint("/dev/ttyS0", parity="E", stopbits=1.5),
        ),
        ("/dev/pts/5", SerialEndpoint("/dev/pts/5")),
        (" /dev/ttyS1?baudrate=19200 ", SerialEndpoint("/dev/ttyS1", baudrate=19200)),
        ("socket://10.0.0.9:4001", SerialEndpoint("socket://10.0.0.9:4001")),
        (
            "socket://10.0.0.9:4001?logging=debug&baudrate=38400",
            SerialEndpoint("socket://10.0.0.9:4001?logging=debug", baudrate=38400),
        ),
        ("hwgrep://0403:6001&n=2", SerialEndpoint("hwgrep://0403:6001&n=2")),
        ("spy:///dev/ttyS0?all&baudrate=19200", SerialEndpoint("spy:///dev/ttyS0?all=", 19200)),
        (
            "alt:///dev/ttyS0?class=PosixPollSerial",
            SerialEndpoint("alt:///dev/ttyS0?class=PosixPollSerial"),
        ),
    ],
)
def test_parse_scanner_url(url: str, endpoint: TcpEndpoint | SerialEndpoint) -> None:
    assert parse_scanner_url(url) == endpoint


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("ttyS0", "absolute device path"),
        ("tcp://127.0.0.1", "needs a port"),
        ("tcp://127.0.0.1:0", "needs a port"),
        ("tcp://127.0.0.1:99999", "bad port"),
        ("tcp://127.0.0.1:abc", "bad port"),
        ("tcp://:5021", "no host"),
        ("tcp://127.0.0.1:5021/x", "only host:port"),
        ("tcp://127.0.0.1:5021?baudrate=9600", "only host:port"),
        ("tcp://[::1", "not a URL"),
        ("serial://dev/ttyS0", "three slashes"),
        ("serial:///dev/ttyS0?baud=9600", "unknown option baud"),
        ("serial:///dev/ttyS0?baudrate=fast", "baudrate must be a whole number"),
        ("serial:///dev/ttyS0?baudrate=0", "baudrate 0 is not 300..4000000"),
        ("serial:///dev/ttyS0?parity=X", "parity"),
        ("serial:///dev/ttyS0?stopbits=3", "stopbits must be 1 or 1.5 or 2"),
        ("serial:///dev/ttyS0?bytesize=9", "bytesize"),
        ("serial:///dev/ttyS0?rtscts=maybe", "rtscts must be 0 or 1"),
        ("serial:///dev/ttyS0?baudrate=1&baudrate=2", "repeats"),
        ("serial:///dev/ttyS0?baudrate=", "no value"),
        ("serial:///dev/ttyS0?baudrate", "malformed query"),
        ("socket://host", "needs a port"),
        ("socket://host:4001?timeout=3", "unknown option timeout"),
        ("socket://host:4001?logging=loud", "logging must be"),
        ("hwgrep://", "no pattern"),
        ("hwgrep://0403:6001&count=2", "not n=N"),
        # pyserial refuses n=1 and n=0 (found in review: check-config took them).
        ("hwgrep://0403:6001&n=1", "not n=N"),
        ("hwgrep://0403:6001&n=0", "not n=N"),
        # urlsplit would cut the pattern at ? and silently change it.
        ("hwgrep://FTDI.*?", "starts the serial options"),
        ("spy:///dev/ttyS0?file=/tmp/spy.txt", "no file=, no raw"),
        ("spy:///dev/ttyS0?raw", "no file=, no raw"),
        ("alt:///dev/ttyS0?class=Nope", "class must be"),
        ("loop://", "does not work"),
        ("rfc2217://host:2217", "no file descriptor"),
        ("cp2110://1:2:3", "no file descriptor"),
        ("mqtt://broker:1883", "unknown scheme"),
        ("tcp://h:1#frag", "fragment"),
    ],
)
def test_bad_scanner_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as exc:
        parse_scanner_url(url)
    if url:
        assert repr(url) in str(exc.value)  # the value as written


def test_pyserial_handler_options_are_pyserials() -> None:
    # The parser knows the handlers' options as data (sorter/ imports no serial library);
    # here they are held to pyserial's own handlers.
    assert set(SOCKET_LOGGING_LEVELS) == set(protocol_socket.LOGGER_LEVELS)
    for name in ALT_CLASSES:
        assert issubclass(getattr(serial, name), serial.Serial)
    for url in (
        # Not logging=: pyserial's handler then calls logging.basicConfig() in this process.
        "socket://10.0.0.9:4001?baudrate=38400",
        "socket://[::1]:4001",
        f"spy:///dev/ttyS0?{'&'.join(SPY_OPTIONS)}",
        "alt:///dev/ttyS0?class=VTIMESerial",
    ):
        endpoint = parse_scanner_url(url)
        assert isinstance(endpoint, SerialEndpoint)
        if endpoint.url.startswith("socket://"):
            protocol_socket.Serial().from_url(endpoint.url)
        elif endpoint.url.startswith("spy://"):
            assert protocol_spy.Serial().from_url(endpoint.url) == "/dev/ttyS0"
        else:
            assert protocol_alt.serial_class_for_url(endpoint.url)[0] == "/dev/ttyS0"


# --- PLC and MQTT URLs ------------------------------------------------------------------------


def test_plc_serial_options_follow_the_common_rules() -> None:
    # The same words as a scanner's line; RTU narrows to 8 data bits and 1 or 2 stop bits.
    ep = parse_plc_url("rtu:///dev/ttyUSB0?parity=Odd&stopbits=2")
    assert ep.serial == SerialSettings(19200, "O", 2, 8)
    with pytest.raises(ValueError, match="stopbits must be 1 or 2"):
        parse_plc_url("rtu:///dev/ttyUSB0?stopbits=1.5")
    with pytest.raises(ValueError, match="repeats baudrate"):
        parse_plc_url("rtu:///dev/ttyUSB0?baudrate=9600&baudrate=19200")
    with pytest.raises(ValueError, match="unknown option rtscts"):
        parse_plc_url("rtu:///dev/ttyUSB0?rtscts=1")


def test_parse_mqtt_url() -> None:
    assert parse_mqtt_url("mqtt://127.0.0.1:1884") == MqttEndpoint("127.0.0.1", 1884)
    assert parse_mqtt_url("mqtt://broker") == MqttEndpoint("broker", 1883)
    assert parse_mqtt_url("mqtts://u%40x:p%3Aw@broker") == MqttEndpoint(
        "broker", 8883, tls=True, username="u@x", password="p:w"
    )
    assert parse_mqtt_url("mqtts://[::1]:8884").shown == "mqtts://[::1]:8884"
    for bad, words in (
        ("http://broker:1883", "mqtt://"),
        ("broker:1883", "mqtt://"),
        ("mqtt://", "no host"),
        ("mqtt://broker:99999", "not valid"),
        ("mqtt://broker:0", "needs a port"),
        ("mqtt://broker:1883/sortcentre", "topic prefix"),
        ("mqtt://broker:1883?x=1", "topic prefix"),
    ):
        with pytest.raises(ValueError, match=words):
            parse_mqtt_url(bad)


def test_a_password_in_a_bad_mqtt_url_is_not_shown() -> None:
    with pytest.raises(ValueError, match="bad port") as exc:
        parse_mqtt_url("mqtt://sorterd:s3cret@broker:99999")
    assert "s3cret" not in str(exc.value)
    assert "'mqtt://sorterd:***@broker:99999'" in str(exc.value)


def test_a_password_in_an_mqtt_url_too_broken_to_split_is_not_shown() -> None:
    with pytest.raises(ValueError, match="not a URL") as exc:
        parse_mqtt_url("mqtt://sorterd:s3cret@[::1")
    assert "s3cret" not in str(exc.value)


def test_the_publisher_and_top_decode_credentials_alike() -> None:
    # Once the driver took `u%40x` literally while `top` decoded it.
    pub = MqttPublisher("mqtts://u%40x:p%3Aw@broker")
    assert (pub.username, pub.password) == ("u@x", "p:w")
    assert pub.url == "mqtts://broker:8883"


# --- check-config agrees with the drivers ----------------------------------------------------


def _site(folder: Path, plc: str, scanner: str, mqtt: str) -> Path:
    # json.dumps writes a TOML basic string (same escapes) for any text without surrogates,
    # but for DEL, which TOML wants escaped too.
    def text(value: str) -> str:
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")

    site = folder / "site.toml"
    site.write_text(
        f'[site]\nname = "s"\nline = "l"\n'
        f"[plc]\nurl = {text(plc)}\n"
        f'[[scanner]]\nname = "tunnel-1"\nurl = {text(scanner)}\n'
        f'[mqtt]\nurl = {text(mqtt)}\ntopic_prefix = "t/p"\n'
        f"[plan]\nfile = {text(str(PLAN_PATH))}\n"
        f'[journal]\npath = "journal.sqlite"\n',
        encoding="utf-8",
    )
    return site


def _refusal(parse: Callable[[str], object], url: str) -> str | None:
    try:
        parse(url)
    except ValueError as exc:
        return str(exc)
    return None


class _NoHandler:
    """A PlcHandler for a link that is only constructed."""

    def on_requests(self, requests: object) -> None: ...
    def on_confirmations(self, confirmations: object) -> None: ...
    def on_chute_status(self, first_chute: int, status: object) -> None: ...
    def on_link_state(self, connected: bool, reason: str) -> None: ...
    def on_counters_jumped(self, ring: object) -> None: ...


def _pyserial_takes(endpoint: SerialEndpoint) -> None:
    """pyserial itself accepts what the parser accepted: the URL through its handler and
    the line settings through Serial(), without opening anything. hwgrep looks for a
    device while it reads the URL: finding none here is not the URL's fault."""
    kwargs = {
        "baudrate": endpoint.baudrate,
        "bytesize": endpoint.bytesize,
        "parity": endpoint.parity,
        "stopbits": endpoint.stopbits,
        "do_not_open": True,
    }
    try:
        serial.serial_for_url(endpoint.url, **kwargs)
    except serial.SerialException as exc:
        refusal = str(exc)
    else:
        return
    assert endpoint.url.startswith("hwgrep://"), refusal
    assert "no ports found" in refusal


def _agree(plc: str, scanner: str, mqtt: str) -> None:
    """check-config's verdict on each address is the parser's, and an accepted config
    constructs every driver the daemon builds from it."""
    with tempfile.TemporaryDirectory() as folder:
        site = _site(Path(folder), plc, scanner, mqtt)
        refusals = {
            "plc.url": _refusal(parse_plc_url, plc),
            "scanner[0].url": _refusal(parse_scanner_url, scanner),
            "mqtt.url": _refusal(parse_mqtt_url, mqtt),
        }
        try:
            loaded = load_site(site, env={})
        except ConfigError as exc:
            problems = {p.key: p for p in exc.problems}
            assert set(problems) == {key for key, why in refusals.items() if why}
            for key, problem in problems.items():
                assert problem.file == str(site)
                why = refusals[key]
                assert why is not None
                assert why in problem.message  # the parser's words, which quote the value
                assert key in str(problem)
                assert str(site) in str(problem)
            return
    assert not any(refusals.values()), refusals
    cfg = loaded.config
    link = PlcLink(cfg.plc.url, _NoHandler())  # constructed, not connected
    assert link.endpoint == parse_plc_url(plc)
    scanner_endpoint = parse_scanner_url(cfg.scanner[0].url)
    StreamScanner(cfg.scanner[0].name, cfg.scanner[0].url)
    if isinstance(scanner_endpoint, SerialEndpoint):
        _pyserial_takes(scanner_endpoint)
    pub = MqttPublisher(cfg.mqtt.url, username=cfg.mqtt.username, password=cfg.mqtt.password)
    assert (pub.username, pub.password) == (
        parse_mqtt_url(mqtt).username,
        parse_mqtt_url(mqtt).password,
    )


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_HOSTS = st.sampled_from(["127.0.0.1", "broker", "[::1]", "", "[::1", "h"])
_PORTS = st.sampled_from(["", ":1883", ":0", ":99999", ":abc", ":5020", ":"])
_PATHS = st.sampled_from(["", "/", "/dev/ttyS0", "/dev/pts/3", "dev/ttyUSB0", "/x/y"])
_KEYS = st.sampled_from(
    [
        "baudrate",
        "bytesize",
        "parity",
        "stopbits",
        "xonxoff",
        "rtscts",
        "dsrdtr",
        "local_echo",
        "framer",
        "logging",
        "class",
        "color",
        "raw",
        "file",
        "n",
        "baud",
        "foo",
    ]
)
_VALUES = st.sampled_from(
    [
        ";",
        "",
        "9600",
        "115200",
        "12",
        "abc",
        "E",
        "even",
        "x",
        "1",
        "1.5",
        "2",
        "3",
        "7",
        "8",
        "true",
        "maybe",
        "debug",
        "loud",
        "rtu",
        "socket",
        "PosixPollSerial",
        "Nope",
        "/dev/null",
    ]
)
_QUERIES = st.lists(st.tuples(_KEYS, _VALUES), max_size=3).map(
    lambda pairs: "&".join(f"{k}={v}" if v != ";" else k for k, v in pairs)
)


@st.composite
def _urls(draw: st.DrawFn, schemes: list[str]) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(_TEXT)
    scheme = draw(st.sampled_from(schemes))
    userinfo = draw(st.sampled_from(["", "", "u%40x:p%3Aw@", "user:secret@", ":@"]))
    query = draw(_QUERIES)
    if scheme == "":
        url = draw(_PATHS)
    else:
        url = f"{scheme}://{userinfo}{draw(_HOSTS)}{draw(_PORTS)}{draw(_PATHS)}"
    return url + (f"?{query}" if query else "")


@settings(max_examples=300, deadline=None)
@given(
    plc=_urls(["tcp", "rtu", "udp"]),
    scanner=_urls(
        ["tcp", "serial", "socket", "hwgrep", "spy", "alt", "rfc2217", "loop", "ftp", ""]
    ),
    mqtt=_urls(["mqtt", "mqtts", "http", "tcp"]),
)
@example(plc="tcp://127.0.0.1:5020", scanner="tcp://127.0.0.1:5021", mqtt="mqtt://h:1883")
@example(plc="rtu:///dev/ttyUSB0?parity=E", scanner="/dev/ttyS0", mqtt="mqtts://u%40x:p@h")
@example(plc="tcp://h:502", scanner="spy:///dev/ttyS0?color", mqtt="mqtt://h")
@example(plc="tcp://h:502", scanner="alt:///dev/ttyS0?class=PosixPollSerial", mqtt="mqtt://h")
@example(plc="tcp://h:502?framer=rtu", scanner="socket://h:4001?logging=info", mqtt="mqtt://h")
@example(plc="tcp://h:502", scanner="hwgrep://0403:6001&n=2", mqtt="mqtt://h")
@example(plc="tcp://h:502", scanner="hwgrep://0403:6001&n=1", mqtt="mqtt://h")
@example(plc="tcp://h:502", scanner="hwgrep://FTDI.*?", mqtt="mqtt://u:p@[::1")
def test_check_config_and_the_drivers_agree(plc: str, scanner: str, mqtt: str) -> None:
    _agree(plc, scanner, mqtt)


@pytest.mark.parametrize("url", ONCE_ACCEPTED_BY_CHECK_CONFIG_ONLY)
def test_urls_once_accepted_by_check_config_alone_are_refused_by_both(url: str) -> None:
    _agree("tcp://127.0.0.1:5020", url, "mqtt://127.0.0.1:1883")
    with pytest.raises(ValueError, match="scanner URL"):
        StreamScanner("tunnel-1", url)
    with tempfile.TemporaryDirectory() as folder:
        site = _site(Path(folder), "tcp://127.0.0.1:5020", url, "mqtt://127.0.0.1:1883")
        with pytest.raises(ConfigError) as exc:
            load_site(site, env={})
    (problem,) = exc.value.problems
    assert (problem.file, problem.key) == (str(site), "scanner[0].url")
    assert repr(url) in problem.message
