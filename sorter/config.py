"""Site configuration (docs/interfaces.md section 2): loaded from TOML, validated once, at the edge.

Every problem is reported together, each naming the file and the key, so an engineer
commissioning a line fixes a config in one pass instead of one error per restart.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)

from sorter import telegram_options as _telegram
from sorter.addresses import parse_mqtt_urls, parse_plc_url, parse_scanner_url
from sorter.barcodes import ISO_ALPHA2
from sorter.errors import SorterdError
from sorter.telegram_options import (
    MAX_FRAME_BYTES_LIMIT,
    MIN_FRAME_BYTES,
    PresetName,
    TelegramOptions,
)

__all__ = [
    "ENV_PREFIX",
    "MAX_TOPIC_BYTES",
    "ArchiveSection",
    "ConfigError",
    "FeedsSection",
    "JournalSection",
    "ManifestSection",
    "MetricsSection",
    "MqttSection",
    "PlanSection",
    "PlcSection",
    "Problem",
    "ScannerSection",
    "Site",
    "SiteConfig",
    "SiteSection",
    "TrackingSection",
    "WebSection",
    "identifier_sources",
    "load_site",
    "topic_filter_problem",
    "topic_filters_overlap",
    "validation_problems",
    "without_tracking_id",
]

ENV_PREFIX = "SORTERD_"
MAX_TOPIC_BYTES = 65535  # an MQTT string's length is two bytes


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config file: where, and what."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.message}"


class ConfigError(SorterdError):
    """A config, sort plan or manifest that cannot be used; lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteSection(_Model):
    name: str = Field(min_length=1)
    line: str = Field(min_length=1)
    timezone: str | None = None
    # ISO 3166-1 alpha-2 of the site: the destination country of a domestic (GS1 AI 420)
    # label, and of pre-advice that gives a postcode without a country.
    country: str | None = None

    @field_validator("country")
    @classmethod
    def _iso_country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.upper() not in ISO_ALPHA2:
            raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (e.g. 'MA')")
        return value.upper()  # any case, as in plans and manifests

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class PlcSection(_Model):
    url: str
    device_id: Annotated[int, Field(ge=0, le=247)] = 1
    poll_interval_ms: Annotated[int, Field(gt=0, le=1000)] = 5
    # 1 s without a change of plc_heartbeat means the link is dead (docs/interfaces.md section 3).
    heartbeat_timeout_ms: Annotated[int, Field(ge=250, le=60_000)] = 1000
    request_timeout_ms: Annotated[int, Field(ge=10, le=10_000)] = 500
    chute_status_interval_ms: Annotated[int, Field(ge=10, le=60_000)] = 100
    # Poll at once, and every millisecond for one poll interval, when a read comes whose
    # request is not read yet (docs/interfaces.md, the poll cycle). None: on for Modbus
    # TCP, off where a serial line is behind the link (RTU, RTU framing over TCP).
    poll_on_read: bool | None = None  # not strict: SORTERD_PLC_POLL_ON_READ=false works

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_plc_url(value)  # the driver's own parser (sorter/addresses.py)
        return value


class ScannerSection(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str
    format: PresetName = "index"
    # A scanner silent for longer than this (no read, no heartbeat) is reported offline.
    silence_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # The head always sends AIM symbology identifiers (]C1, ]C0, ...): a code without one
    # is then never taken for GS1 (docs/scanners.md, "Symbology identifiers").
    symbology_identifiers: StrictBool = False
    # Telegram settings (sorter/telegram_options.py): absent means the preset's default;
    # which keys a preset takes is checked by telegram_problems().
    start: str | None = None
    end: str | None = None
    header: str | None = None
    trailer: str | None = None
    separator: str | None = None
    tracking_id: StrictBool | None = None
    id_separator: str | None = None
    noread: str | None = None
    heartbeat: str | None = None
    pattern: str | None = None
    template: str | None = None
    max_frame_bytes: Annotated[int, Field(ge=MIN_FRAME_BYTES, le=MAX_FRAME_BYTES_LIMIT)] | None = (
        None
    )

    def _given(self) -> dict[str, Any]:
        return {
            key: getattr(self, key)
            for key in _telegram.OPTION_KEYS
            if getattr(self, key) is not None
        }

    def telegram_options(self) -> TelegramOptions:
        """The preset with this table's settings applied (unchecked: see telegram_problems)."""
        return _telegram.resolve(self.format, self._given())

    def telegram_problems(self) -> list[tuple[str, str]]:
        """`(key, message)` for each telegram setting that is wrong for the preset."""
        given = self._given()
        return _telegram.problems(self.telegram_options(), set(given))

    # Heads with the same tunnel name read the same items; their reads are merged per item.
    tunnel: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_scanner_url(value)  # the driver's own parser (sorter/addresses.py)
        return value


class MqttSection(_Model):
    # One URL, or the nodes of one clustered broker (docs/cluster.md): the clients connect
    # to one and move to the next when it fails.
    url: str | list[str]
    topic_prefix: str = Field(min_length=1)
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    keepalive_s: Annotated[int, Field(ge=1, le=3600)] = 10
    stats_interval_s: Annotated[float, Field(gt=0)] = 10.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # Whether the broker has MQTT shared subscriptions ($share/GROUP/...), which several
    # `sorterd archive` use to split the lines' messages. Default: yes with one URL (or a
    # list of one: mosquitto 2), no with a list of nodes (NATS 2.9 takes `$share/...` for a
    # plain topic and delivers nothing to it; docs/cluster.md).
    shared_subscriptions: StrictBool | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _url_type(cls, value: object) -> object:
        # One problem naming the key, not one per member of the str | list[str] union.
        if isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            return value
        raise ValueError("must be a URL (a string) or a list of the URLs of a cluster's nodes")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | list[str]) -> str | list[str]:
        parse_mqtt_urls(value)  # the parser of the drivers and of `top` (sorter/addresses.py)
        return value

    @property
    def urls(self) -> tuple[str, ...]:
        """`url` as a tuple of node URLs (one for a single broker)."""
        return (self.url,) if isinstance(self.url, str) else tuple(self.url)

    @property
    def shares(self) -> bool:
        """Whether `sorterd archive` subscribes with `$share/...` (see shared_subscriptions)."""
        if self.shared_subscriptions is not None:
            return self.shared_subscriptions
        # A list of one URL is that broker alone, as for the publisher (drivers/mqtt.py).
        return len(self.urls) == 1

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if any(c in value for c in "#+\0") or value.endswith("/") or value.startswith("/"):
            raise ValueError("topic_prefix must not contain # + or NUL, nor start/end with /")
        return value


class PlanSection(_Model):
    file: str


class ManifestSection(_Model):
    files: list[str] = Field(default_factory=list)
    # How often the globs are looked at for new or changed files while running.
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0


def topic_filter_problem(value: str) -> str | None:
    """Why `value` is not an MQTT topic filter a client may subscribe to; None if it is."""
    if not value:
        return "must not be empty"
    if "\0" in value:
        return "must not contain NUL"
    if len(value.encode()) > MAX_TOPIC_BYTES:
        return f"longer than {MAX_TOPIC_BYTES} bytes"
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "# must be a whole level, and the last one"
        if "+" in level and level != "+":
            return "+ must be a whole level"
    return None


class FeedsSection(_Model):
    """Live hub feeds (docs/interfaces.md section 7): both topics optional."""

    # Topic filters (MQTT wildcards allowed) of pre-advice rows and customs decisions.
    preadvice: str | None = None
    customs: str | None = None
    # The persistent session's client id: stable across restarts, so the broker keeps
    # what is published while the daemon is down. Default: sorterd-<site>-<line>-feeds.
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    # Ids (of rows and customs decisions) remembered, across restarts, so that the same
    # id delivered again is not applied twice.
    remember_ids: Annotated[int, Field(ge=1000, le=50_000_000)] = 1_000_000
    # Barcodes the live index makes room for at the start (a day's feed): growing its
    # table past it costs a rehash on the event loop (~90 ms at 1,000,000).
    expected_rows: Annotated[int, Field(ge=0, le=50_000_000)] = 1_000_000
    # Hours a barcode's feed entries are kept after its newest one arrived: older ones leave
    # the journal and the live index (the files decide that barcode again).
    retention_h: Annotated[float, Field(gt=0, le=8784)] = 72.0

    @field_validator("preadvice", "customs")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = topic_filter_problem(value)
        if problem is not None:
            raise ValueError(f"topic {value!r}: {problem}")
        return value

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(t for t in (self.preadvice, self.customs) if t is not None)


class JournalSection(_Model):
    path: str
    # Bound of the file; sent rows are pruned to stay under it, unsent rows never are.
    max_size_mb: Annotated[float, Field(ge=1, le=1_000_000)] = 1024.0
    # Sent rows are kept this long for inspection, then pruned.
    retention_h: Annotated[float, Field(gt=0, le=24 * 365)] = 72.0
    # "full": each commit is on the disk (survives a power cut); "normal": survives a crash.
    synchronous: Literal["full", "normal"] = "full"
    # P/status raises the alarm disk_low when the journal's file system has less free.
    min_free_mb: Annotated[float, Field(ge=0)] = 512.0


class MetricsSection(_Model):
    # host:port of the Prometheus /metrics endpoint; absent: no endpoint. Bind it to
    # 127.0.0.1 unless the scraper is elsewhere (then put a firewall in front).
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"listen must be host:port, got {value!r}")
        return value


class TrackingSection(_Model):
    # How long a sort request waits for its scan before it is decided with reason timeout.
    scan_wait_ms: Annotated[int, Field(ge=0, le=10_000)] = 200
    # A scan that no request claimed within this time is dropped and counted as unmatched.
    # Short: a read that waits longer is a late or repeated read of an item's pass, and
    # must not decide its next pass (a recirculation comes back with the same id).
    scan_ttl_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    # Reads without tracking id are paired with requests in belt order when the read came
    # at most window_before_ms before / window_after_ms after the request (docs/tunnels.md).
    window_before_ms: Annotated[int, Field(ge=0, le=10_000)] = 50
    window_after_ms: Annotated[int, Field(ge=0, le=10_000)] = 50
    # After an item's first read, how long to wait for the other heads of its tunnel
    # (never beyond scan_wait_ms after the request).
    merge_window_ms: Annotated[int, Field(ge=0, le=10_000)] = 50
    # A head that missed this many items in a row is not waited for until it reads again.
    head_miss_limit: Annotated[int, Field(ge=1, le=1000)] = 3
    # The shortest time between two items at the tunnel (item pitch / belt speed), when
    # known: with heads without tracking id, window_before_ms + window_after_ms must be
    # less, or a read could be paired with the neighbouring item (docs/tunnels.md).
    item_spacing_ms: Annotated[int, Field(gt=0, le=60_000)] | None = None


class ArchiveSection(_Model):
    """`[archive]`: the hub's per-piece history in PostgreSQL (docs/archive.md)."""

    # postgresql://USER@HOST[:PORT]/DB; the password comes from SORTERD_ARCHIVE_PASSWORD.
    url: str
    password: str | None = Field(default=None, repr=False)
    # Topic prefixes of the lines to keep (MQTT's + allowed: "hub/+" is every line).
    lines: list[str] = Field(min_length=1)
    retention_days: Annotated[int, Field(ge=1, le=36_500)] = 90
    # A batch is written when it holds this many rows or its oldest waited this long.
    batch_rows: Annotated[int, Field(ge=1, le=100_000)] = 5000
    batch_wait_ms: Annotated[int, Field(ge=1, le=60_000)] = 200
    # The archiver's MQTT client id (its persistent session); default from the host name.
    # Archivers that run at once need different ones.
    client_id: str | None = Field(default=None, min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from urllib.parse import urlsplit  # noqa: PLC0415

        # Never echo the value: it may carry a password.
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("not a URL (postgresql://USER@HOST:PORT/DB)") from None
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must start with postgresql:// (postgresql://USER@HOST:PORT/DB)")
        if not parts.hostname or parts.path in ("", "/"):
            raise ValueError("needs a host and a database: postgresql://USER@HOST:PORT/DB")
        return value

    @field_validator("lines")
    @classmethod
    def _lines(cls, value: list[str]) -> list[str]:
        for line in value:
            levels = line.split("/")
            if not line or "#" in line or "\0" in line or "" in levels:
                raise ValueError(f"{line!r} is not a topic prefix (no #, no empty level)")
            if any("+" in level and level != "+" for level in levels):
                raise ValueError(f"{line!r}: + must be a whole level")
        return value


class WebSection(_Model):
    """`[web]`: the web console, `sorterd web` (docs/web.md). Its files (users, TLS, the
    session key) are checked by sorterd/web/settings.py, which check-config calls."""

    # host:port; 127.0.0.1 unless the console must be reached from other machines.
    listen: str = "127.0.0.1:8080"
    # The users file (names, roles, argon2 hashes), written by `sorterd web --add-user`.
    users: str = Field(default="users.toml", min_length=1)
    # TLS: both or neither (PEM files); relative paths are relative to the config file.
    cert_file: str | None = Field(default=None, min_length=1)
    key_file: str | None = Field(default=None, min_length=1)
    # The key that signs session cookies; created (mode 0600) at the first start.
    session_key_file: str = Field(default="web-session.key", min_length=1)
    session_hours: Annotated[float, Field(gt=0, le=24 * 31)] = 12.0
    # Topic prefixes of the lines to show: exact prefixes, or with a + level to discover the
    # lines from their retained P/status ("hub/+"). Default: this site's mqtt.topic_prefix.
    lines: list[str] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        # The same host:port as [metrics] listen: one rule for both.
        MetricsSection._listen(value)
        return value

    @field_validator("lines")
    @classmethod
    def _lines(cls, value: list[str]) -> list[str]:
        # The same prefixes as [archive] lines: one rule for both.
        checked: list[str] = ArchiveSection._lines(value)
        return checked


def identifier_sources(scanners: list[ScannerSection]) -> frozenset[str]:
    """Names whose reads come only from heads that always send AIM identifiers: such heads,
    and tunnels all of whose heads do (a tunnel's merged read carries the tunnel's name)."""
    names = {s.name for s in scanners if s.symbology_identifiers}
    tunnels: dict[str, bool] = {}
    for s in scanners:
        if s.tunnel is not None:
            tunnels[s.tunnel] = tunnels.get(s.tunnel, True) and s.symbology_identifiers
    return frozenset(names | {t for t, every in tunnels.items() if every})


class SiteConfig(_Model):
    site: SiteSection
    plc: PlcSection
    scanner: list[ScannerSection] = Field(min_length=1)
    mqtt: MqttSection
    plan: PlanSection
    manifest: ManifestSection = Field(default_factory=ManifestSection)
    journal: JournalSection
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    feeds: FeedsSection = Field(default_factory=FeedsSection)
    archive: ArchiveSection | None = None
    web: WebSection | None = None


@dataclass(frozen=True, slots=True)
class Site:
    """A validated site config with its paths resolved against the config file's folder."""

    config: SiteConfig
    path: Path
    plan_path: Path
    manifest_globs: tuple[str, ...]
    journal_path: Path


def _key_of(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def validation_problems(file: str, exc: ValidationError, prefix: str = "") -> list[Problem]:
    """pydantic's errors as Problems: the key as the engineer wrote it, plain messages."""
    problems = []
    for err in exc.errors():
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (typo?)"
        elif err["type"] == "missing":
            message = "required key is missing"
        key = _key_of(tuple(err["loc"]))
        if prefix:
            key = f"{prefix}.{key}" if key else prefix
        problems.append(Problem(file, key, message))
    return problems


def _env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> list[Problem]:
    """Apply SORTERD_<SECTION>_<KEY> variables (for secrets); report unknown keys."""
    problems: list[Problem] = []
    table_sections: dict[str, type[BaseModel]] = {
        "site": SiteSection,
        "plc": PlcSection,
        "mqtt": MqttSection,
        "plan": PlanSection,
        "journal": JournalSection,
        "tracking": TrackingSection,
        "manifest": ManifestSection,
        "metrics": MetricsSection,
        "feeds": FeedsSection,
        "archive": ArchiveSection,
        "web": WebSection,
    }
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        model = table_sections.get(section)
        if model is None or not key:
            continue  # other SORTERD_ variables (e.g. for logging) are not config keys
        if key not in model.model_fields:
            problems.append(Problem(f"environment {var}", f"{section}.{key}", "unknown key"))
            continue
        table = data.setdefault(section, {})
        if isinstance(table, dict):
            table[key] = value
    return problems


def without_tracking_id(section: ScannerSection) -> bool:
    """Whether the scanner's reads carry no tracking id, so are matched by window."""
    options = section.telegram_options()
    if options.format == "custom":
        try:
            groups = re.compile(options.pattern or "").groupindex
        except re.error:
            return False  # reported as a bad pattern
        return "tracking_id" not in groups
    return not options.tracking_id


def _window_problems(file: str, config: SiteConfig) -> list[Problem]:
    """The window must be narrower than the item spacing (sorter/tracker.py): otherwise a
    head's missing read lets the neighbour's read into the item's window."""
    tracking = config.tracking
    spacing_ms = tracking.item_spacing_ms
    if spacing_ms is None:
        return []
    heads = [s.name for s in config.scanner if without_tracking_id(s)]
    width_ms = tracking.window_before_ms + tracking.window_after_ms
    if not heads or width_ms < spacing_ms:
        return []
    return [
        Problem(
            file,
            "tracking.window_after_ms",
            f"window_before_ms + window_after_ms = {width_ms} ms must be less than "
            f"item_spacing_ms = {spacing_ms} ms: scanner(s) {', '.join(heads)} send no "
            f"tracking id, and a window as wide as the item spacing can pair a read with "
            f"the neighbouring item (docs/tunnels.md, choosing the window)",
        )
    ]


def topic_filters_overlap(first: str, second: str) -> bool:
    """Whether some topic matches both MQTT topic filters (+ one level, # the rest and its
    parent: "hub/#" matches "hub")."""
    a, b = first.split("/"), second.split("/")
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and "+" not in (x, y):
            return False
    return True


def _feeds_problems(file: str, feeds: FeedsSection) -> list[Problem]:
    preadvice, customs = feeds.preadvice, feeds.customs
    if preadvice is not None and customs is not None and topic_filters_overlap(preadvice, customs):
        message = (
            f"{customs!r} and feeds.preadvice {preadvice!r} match the same topics: a message "
            "on such a topic could not say whether it is pre-advice or customs"
        )
        return [Problem(file, "feeds.customs", message)]
    return []


def _read_toml(file: Path, shown: str) -> dict[str, Any]:
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(shown, "", f"cannot read: {exc.strerror or exc}")]) from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(shown, "", f"not UTF-8 text: {exc.reason}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(shown, "", f"TOML syntax error: {exc}")]) from exc


def _scanner_problems(file: str, config: SiteConfig) -> list[Problem]:
    """Duplicate names and telegram settings that do not fit their preset."""
    problems = []
    names = [s.name for s in config.scanner]
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append(Problem(file, f"scanner[{i}].name", f"duplicate name {name!r}"))
    for i, section in enumerate(config.scanner):
        for key, message in section.telegram_problems():
            problems.append(Problem(file, f"scanner[{i}].{key}", message))
    return problems


def _tls_files(file: str, base: Path, mqtt: MqttSection) -> tuple[dict[str, str], list[Problem]]:
    """The TLS files resolved against the config's folder, and what is wrong with them."""
    # TLS files, like every path in the file, are relative to the config file's folder.
    paths = {
        key: str(base / value)
        for key in ("ca_file", "cert_file", "key_file")
        if (value := getattr(mqtt, key)) is not None
    }
    problems = []
    for key, tls_path in paths.items():
        # Found now rather than as a reconnect loop of "No such file" warnings at run time.
        if not Path(tls_path).is_file():
            problems.append(Problem(file, f"mqtt.{key}", f"no such file: {tls_path}"))
        elif not parse_mqtt_urls(mqtt.url)[0].tls:
            problems.append(
                Problem(file, f"mqtt.{key}", "TLS file given, but mqtt.url is not mqtts://")
            )
    if mqtt.key_file is not None and mqtt.cert_file is None:
        problems.append(Problem(file, "mqtt.key_file", "a key without mqtt.cert_file"))
    return paths, problems


def load_site(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Site:
    """Read and validate a site config; raise ConfigError naming every problem."""
    file = Path(path)
    shown = str(path)
    data = _read_toml(file, shown)
    problems = _env_overrides(data, os.environ if env is None else env)
    try:
        config = SiteConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(validation_problems(shown, exc))
        raise ConfigError(problems) from None
    problems.extend(_scanner_problems(shown, config))
    problems.extend(_window_problems(shown, config))
    problems.extend(_feeds_problems(shown, config.feeds))
    base = file.resolve().parent
    tls_paths, tls_problems = _tls_files(shown, base, config.mqtt)
    problems.extend(tls_problems)
    if problems:
        raise ConfigError(problems)
    if tls_paths:
        config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update=tls_paths)})
    return Site(
        config=config,
        path=file,
        plan_path=base / config.plan.file,
        manifest_globs=tuple(str(base / g) for g in config.manifest.files),
        journal_path=base / config.journal.path,
    )
