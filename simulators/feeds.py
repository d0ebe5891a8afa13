"""Live hub feeds as a hub's systems send them: pre-advice rows and customs decisions on MQTT.

The contract is the site config's `[feeds] preadvice` and `customs` topics (docs of the
hub feeds, section 7 of the interfaces): a pre-advice message is one JSON object or an
array of them, each a manifest row with an optional `id`; a customs message is
`{"barcode", "status": "hold" | "release", "id"}`.

`FeedPlan` makes a seeded stream for the simulated line's own parcels (the same
`Traffic(seed)` the line inducts, one item every `interval_s` from stream time 0): most
items pre-advised seconds to hours before they reach the scan tunnel, a share held by
customs and released later (some before induction, some after their first pass), a few
bad rows of every kind and duplicate deliveries (the same ids again). Rows due before
stream time 0 are the day's backlog, published first. `FeedPublisher` publishes it at
QoS 1 to a real broker, retrying what the broker did not acknowledge, and keeps the
`FeedLog`: every message with the wall-clock times it was first sent and acknowledged,
from which `FeedLog.state` says what a barcode's pre-advice and customs state is at any
time. Nothing here reads the daemon's parsing: the payloads are written from the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import ssl
import time
import tomllib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import aiomqtt
import structlog

from simulators.conveyor import LineParams, SimItem
from simulators.labels import GeneratedCode, make_s10, moroccan_postcode
from simulators.manifests import naming_code
from simulators.traffic import Traffic
from sorter.addresses import parse_mqtt_url, parse_mqtt_urls
from sorter.backoff import Backoff
from sorter.errors import SorterdError

__all__ = [
    "BAD_KINDS",
    "BadKind",
    "FeedError",
    "FeedKind",
    "FeedLog",
    "FeedMessage",
    "FeedMix",
    "FeedPlan",
    "FeedPublisher",
    "FeedRow",
    "FeedSite",
    "Filler",
    "Published",
    "RowState",
    "fold",
    "line_plan",
    "publish_stream",
    "read_feed_site",
    "simulate_feeds",
]

log = structlog.get_logger(__name__)

FeedKind = Literal["preadvice", "customs"]
BadKind = Literal["bad_json", "no_barcode", "wrong_types", "unknown_status", "oversized"]
BAD_KINDS: Final[tuple[BadKind, ...]] = (
    "bad_json",
    "no_barcode",
    "wrong_types",
    "unknown_status",
    "oversized",
)
# An oversized message is megabytes on the wire: rarer than the other bad rows.
_BAD_WEIGHTS: Final = (3, 3, 3, 3, 1)
HOLD: Final = "hold"
RELEASE: Final = "release"
# Where parcels without an S10 code were posted, as their pre-advice says.
_ORIGINS: Final = ("CN", "CN", "CN", "FR", "ES", "DE", "US", "TR")
_EXPORT_COUNTRIES: Final = ("FR", "ES", "DE", "GB", "US", "NL", "IT")


class FeedError(SorterdError):
    """The feed simulator cannot run: no `[feeds]` topics, or an unusable broker URL."""


# --- what is published ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One good row or customs decision, to be applied once: `fields` are the JSON keys
    besides `id` and `barcode` (all strings, as the contract wants them)."""

    id: str
    kind: FeedKind
    barcode: str
    fields: tuple[tuple[str, str], ...]

    def as_json(self) -> dict[str, str]:
        return {"id": self.id, "barcode": self.barcode, **dict(self.fields)}


@dataclass(frozen=True, slots=True)
class FeedMessage:
    """One MQTT message: `at_s` is when it is due in stream time (0: the line's first
    induction; negative: the backlog published first). `rows` are the good rows in it,
    `bad` one entry per bad row; `duplicate`: the same payload was due earlier."""

    at_s: float
    kind: FeedKind
    payload: bytes
    rows: tuple[FeedRow, ...] = ()
    bad: tuple[BadKind, ...] = ()
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class RowState:
    """What a barcode's rows say at a moment: the last pre-advice row's fields (None:
    never pre-advised) and whether customs holds it (the latest word by arrival)."""

    fields: Mapping[str, str] | None = None
    held: bool = False


def fold(rows: Iterable[FeedRow], start: RowState | None = None) -> RowState:
    """The state after `rows` in arrival order: a pre-advice row replaces what was known
    (its `customs` column holds or not), a customs message holds or releases."""
    state = start or RowState()
    for row in rows:
        fields = dict(row.fields)
        if row.kind == "customs":
            state = RowState(state.fields, fields.get("status") == HOLD)
        else:
            state = RowState(fields, fields.get("customs") == HOLD)
    return state


# --- the stream ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedMix:
    """The shape of the stream; shares are per item (bad rows: per good row)."""

    preadvised: float = 0.85
    lead_min_s: float = 2.0  # pre-advice comes this long before the scan tunnel, at least
    lead_max_s: float = 3 * 3600.0  # ... and at most; log-uniform in between
    held: float = 0.06
    released_before: float = 0.5  # of the held: released before they reach the tunnel
    hold_in_row: float = 0.3  # of the held: the hold is the pre-advice row's customs column
    duplicates: float = 0.03  # of messages: delivered a second time, same ids
    bad: float = 0.03  # one bad row per this many good ones
    batch_rows: int = 50  # rows at most in one pre-advice message
    batch_window_s: float = 0.05  # rows due this close together go in one message
    oversized_bytes: int = 2 * 1024 * 1024  # an oversized message is bigger than this
    destinations: tuple[str, ...] = ()  # plan destinations a row may name
    destination_share: float = 0.1  # of the rows of parcels without a ship-to label

    def __post_init__(self) -> None:
        shares = ("preadvised", "held", "released_before", "hold_in_row", "duplicates", "bad")
        for name in shares:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if not 0 < self.lead_min_s <= self.lead_max_s:
            raise ValueError("need 0 < lead_min_s <= lead_max_s")
        if self.batch_rows < 1:
            raise ValueError("batch_rows must be >= 1")


@dataclass(slots=True)
class _Event:
    """A row (good or bad) before messages are made of them."""

    at_s: float
    kind: FeedKind
    row: FeedRow | None = None
    bad: BadKind | None = None
    raw: Any = None  # the bad row's JSON value, or a whole bad payload (bytes)


@dataclass(slots=True)
class FeedPlan:
    """The seeded feed stream for the first `count` items of `Traffic(seed)`, inducted one
    every `interval_s` from stream time 0 and at the tunnel `induct_to_scan_s` later.

    `messages` are in the order they are due; `timeline` holds each barcode's good rows
    by due time, and `scan_s` each pre-advised or held item's time at the tunnel."""

    seed: int
    interval_s: float
    count: int
    induct_to_scan_s: float = 0.0
    mix: FeedMix = field(default_factory=FeedMix)
    messages: list[FeedMessage] = field(init=False, default_factory=list)
    timeline: dict[str, list[tuple[float, FeedRow]]] = field(init=False, default_factory=dict)
    scan_s: dict[str, float] = field(init=False, default_factory=dict)
    _ids: Iterator[int] = field(init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self._ids = iter(range(1, 1 << 62))
        self._rng = random.Random(self.seed ^ 0xFEED)
        events: list[_Event] = []
        for index, item in enumerate(Traffic(seed=self.seed).items(self.count)):
            events += self._item_events(item, index * self.interval_s + self.induct_to_scan_s)
        events.sort(key=lambda e: e.at_s)
        self.messages = self._with_duplicates(self._batched(events))

    def _id(self) -> str:
        return f"s{self.seed}-{next(self._ids)}"

    def _row(self, at_s: float, kind: FeedKind, barcode: str, **fields: str) -> _Event:
        row = FeedRow(self._id(), kind, barcode, tuple(fields.items()))
        self.timeline.setdefault(barcode, []).append((at_s, row))
        return _Event(at_s, kind, row=row)

    def _item_events(self, item: SimItem, scan_s: float) -> list[_Event]:
        barcode = naming_code(item)
        if barcode is None:
            return []  # nothing readable a shipper could pre-advise
        rng, mix = self._rng, self.mix
        preadvised = rng.random() < mix.preadvised
        held = rng.random() < mix.held
        if not (preadvised or held):
            return []
        self.scan_s[barcode] = scan_s
        lead_s = math.exp(rng.uniform(math.log(mix.lead_min_s), math.log(mix.lead_max_s)))
        row_s = scan_s - lead_s
        events: list[_Event] = []
        hold_in_row = held and preadvised and rng.random() < mix.hold_in_row
        if preadvised:
            fields = self._preadvice_fields(item)
            if hold_in_row:
                fields["customs"] = HOLD
            events.append(self._row(row_s, "preadvice", barcode, **fields))
        if held:
            hold_s = row_s + (scan_s - row_s) * rng.uniform(0.3, 0.6) if preadvised else row_s
            if not hold_in_row:
                events.append(self._row(hold_s, "customs", barcode, status=HOLD))
            if rng.random() < mix.released_before:
                release_s = hold_s + (scan_s - hold_s) * rng.uniform(0.3, 0.6)
            else:
                release_s = scan_s + rng.uniform(1.0, 30.0)  # after its first pass
            events.append(self._row(release_s, "customs", barcode, status=RELEASE))
        events += self._bad_events(barcode, events)
        return events

    def _preadvice_fields(self, item: SimItem) -> dict[str, str]:
        """What a shipper says of the item: a Moroccan address (the label's postcode when
        it has one; a foreign one for carrier export parcels), where it was posted when no
        S10 code says it, now and then a destination of the plan for parcels without a
        ship-to label."""
        rng, mix = self._rng, self.mix
        codes = [c for c in item.codes if isinstance(c, GeneratedCode)]
        ship_to = any(c.ship_to for c in codes)
        if not ship_to and mix.destinations and rng.random() < mix.destination_share:
            return {"destination": rng.choice(mix.destinations)}
        if any(c.kind in ("ups", "dhl") for c in codes):
            # A carrier's export parcel: its consignee is abroad.
            return {
                "country": rng.choice(_EXPORT_COUNTRIES),
                "postcode": f"{rng.randint(1000, 99999)}",
            }
        postcode = next((c.postcode for c in codes if c.postcode), "") or moroccan_postcode(rng)
        fields = {"postcode": postcode, "country": "MA"}
        if not any(c.kind == "s10" and c.valid for c in codes):
            fields["origin"] = rng.choice(_ORIGINS)
        return fields

    def _bad_events(self, barcode: str, good: Sequence[_Event]) -> list[_Event]:
        """Bad rows beside an item's good ones, about the same barcode where the kind has
        one: applied, any of them would change what the item's decision says."""
        out = []
        for event in good:
            if self._rng.random() >= self.mix.bad:
                continue
            kind = self._rng.choices(BAD_KINDS, weights=_BAD_WEIGHTS)[0]
            at_s = event.at_s + self._rng.uniform(0.01, 0.5)
            out.append(self._bad(at_s, kind, barcode))
        return out

    def _bad(self, at_s: float, kind: BadKind, barcode: str) -> _Event:
        bad_id = f"bad-{self._id()}"
        if kind == "bad_json":
            raw: Any = f'[{{"id": "{bad_id}", "barcode": "{barcode}", "customs": "ho'.encode()
        elif kind == "no_barcode":
            raw = {"id": bad_id, "postcode": "20250", "country": "MA", "customs": HOLD}
        elif kind == "wrong_types":
            raw = self._rng.choice(
                (
                    {"id": bad_id, "barcode": barcode, "postcode": 20250, "customs": HOLD},
                    {"id": bad_id, "barcode": [barcode], "customs": HOLD},
                    {"id": bad_id, "barcode": barcode, "destination": None, "customs": True},
                )
            )
        elif kind == "unknown_status":
            raw = json.dumps({"id": bad_id, "barcode": barcode, "status": "maybe"}).encode()
        else:
            # Oversized: one row over the size, which a wrong type makes bad as well, so
            # that it stays one bad row whatever size limit the reader has.
            pad = "x" * self.mix.oversized_bytes
            row = {"id": bad_id, "barcode": barcode, "customs": HOLD, "weight_g": 1, "note": pad}
            raw = json.dumps(row).encode()
        topic: FeedKind = "customs" if kind == "unknown_status" else "preadvice"
        return _Event(at_s, topic, bad=kind, raw=raw)

    def _batched(self, events: Sequence[_Event]) -> list[FeedMessage]:
        """Pre-advice rows due close together (all of the backlog) go in one array; customs
        messages and whole bad payloads go alone."""
        out: list[FeedMessage] = []
        batch: list[_Event] = []
        for event in events:
            alone = event.kind == "customs" or isinstance(event.raw, bytes)
            if batch and (alone or not self._fits(batch, event)):
                out.append(self._preadvice_message(batch))
                batch = []
            if alone:
                out.append(self._single(event))
            else:
                batch.append(event)
        if batch:
            out.append(self._preadvice_message(batch))
        return out

    def _fits(self, batch: Sequence[_Event], event: _Event) -> bool:
        if len(batch) >= self.mix.batch_rows:
            return False
        first_s = batch[0].at_s
        return (event.at_s < 0 and first_s < 0) or event.at_s - first_s <= self.mix.batch_window_s

    def _single(self, event: _Event) -> FeedMessage:
        if event.row is not None:
            payload = json.dumps(event.row.as_json()).encode()
            return FeedMessage(event.at_s, event.kind, payload, rows=(event.row,))
        assert event.bad is not None
        assert isinstance(event.raw, bytes)
        return FeedMessage(event.at_s, event.kind, event.raw, bad=(event.bad,))

    def _preadvice_message(self, batch: Sequence[_Event]) -> FeedMessage:
        values = [e.row.as_json() if e.row is not None else e.raw for e in batch]
        rows = tuple(e.row for e in batch if e.row is not None)
        bad = tuple(e.bad for e in batch if e.bad is not None)
        # One row alone goes as an object now and then: both forms are the contract's.
        one = len(values) == 1 and self._rng.random() < 0.5
        payload = json.dumps(values[0] if one else values).encode()
        return FeedMessage(batch[0].at_s, "preadvice", payload, rows=rows, bad=bad)

    def _with_duplicates(self, messages: list[FeedMessage]) -> list[FeedMessage]:
        """Some messages delivered again, as a publisher that resends: after the barcode's
        next row where it has one (applied again, the second delivery would undo that
        row), else a few seconds later. Messages with bad rows are not repeated: their bad
        rows carry no id to tell a repeat by, so the daemon counts them again."""
        extra = []
        for message in messages:
            if message.bad or self._rng.random() >= self.mix.duplicates:
                continue
            again_s = message.at_s + self._rng.uniform(0.3, 3.0)
            for row in message.rows:
                later = [t for t, r in self.timeline[row.barcode] if t > message.at_s]
                if later:
                    again_s = max(again_s, min(later) + self._rng.uniform(0.2, 1.0))
            extra.append(
                FeedMessage(again_s, message.kind, message.payload, message.rows, duplicate=True)
            )
        return sorted([*messages, *extra], key=lambda m: m.at_s)

    def rows(self) -> list[FeedRow]:
        """Every good row the plan holds, each once."""
        return [row for m in self.messages if not m.duplicate for row in m.rows]

    def state_at(self, barcode: str, at_s: float) -> RowState:
        """What the plan means the barcode's state to be at stream time `at_s`."""
        return fold(r for t, r in self.timeline.get(barcode, ()) if t <= at_s)


class Filler:
    """Pre-advice for parcels that never come to this line (the hub's other lines, later
    days): rows from a fixed pool of barcodes, each with a new id, cheap enough to publish
    50,000 a second. Applied like any row; the line's own items are never among them."""

    def __init__(self, seed: int, pool: int = 20_000) -> None:
        rng = random.Random(seed ^ 0xF111)
        self._prefix = f"fill{seed}-"
        self._n = 0
        self._bodies = [
            f'"barcode": "{make_s10(rng, service="UZ", country="CN")}", '
            f'"postcode": "{moroccan_postcode(rng)}", "country": "MA"}}'
            for _ in range(pool)
        ]

    def message(self, rows: int) -> FeedMessage:
        parts = []
        for _ in range(rows):
            self._n += 1
            body = self._bodies[self._n % len(self._bodies)]
            parts.append(f'{{"id": "{self._prefix}{self._n}", {body}')
        payload = ("[" + ", ".join(parts) + "]").encode()
        return FeedMessage(0.0, "preadvice", payload, bad=())

    @property
    def rows_made(self) -> int:
        return self._n


# --- the record of what was published ------------------------------------------------------


@dataclass(slots=True)
class Published:
    """A message handed to the publisher: wall-clock times (time.time()) of its first
    send and of the broker's acknowledgement; `filler_rows` for filler messages."""

    seq: int
    message: FeedMessage
    filler_rows: int = 0
    first_sent_s: float | None = None
    acked_s: float | None = None
    attempts: int = 0


@dataclass(slots=True)
class FeedLog:
    """Every message of the stream in the order it was handed to the broker connection;
    filler rows only as a count (their barcodes are no item's, and a long run at the
    hub's rate must not keep every payload)."""

    published: list[Published] = field(default_factory=list)
    reconnects: int = 0
    filler_acked: int = 0  # filler rows the broker acknowledged

    def acked(self) -> list[Published]:
        return [p for p in self.published if p.acked_s is not None]

    def counts(self) -> dict[str, int]:
        """What the daemon must have counted once every acknowledged message arrived:
        good rows and customs decisions once per id, bad rows once per delivery."""
        ids: set[str] = set()
        out = {"rows": self.filler_acked, "customs": 0, "bad": 0, "duplicates": 0, "retried": 0}
        out["filler"] = self.filler_acked
        for p in self.acked():
            out["bad"] += len(p.message.bad)
            out["duplicates"] += p.message.duplicate
            out["retried"] += p.attempts > 1
            for row in p.message.rows:
                if row.id in ids:
                    continue
                ids.add(row.id)
                out["customs" if row.kind == "customs" else "rows"] += 1
        return out

    def timeline(self, barcode: str) -> list[tuple[Published, FeedRow]]:
        """The barcode's good rows in the order they were sent, each id once (its first
        send: a repeat of an id must not be applied)."""
        seen: set[str] = set()
        out = []
        for p in self.published:
            if p.first_sent_s is None:
                continue
            for row in p.message.rows:
                if row.barcode == barcode and row.id not in seen:
                    seen.add(row.id)
                    out.append((p, row))
        return out

    def barcodes(self) -> set[str]:
        return {row.barcode for p in self.published for row in p.message.rows}

    def state(self, barcode: str, wall_s: float) -> RowState:
        """The barcode's state by the rows the broker had acknowledged at `wall_s`."""
        rows = [
            r for p, r in self.timeline(barcode) if p.acked_s is not None and p.acked_s <= wall_s
        ]
        return fold(rows)


# --- the publisher -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedSite:
    """Where to publish, read from the site config's TOML: the broker and the topics."""

    url: str
    preadvice: str
    customs: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    # The other nodes of a clustered broker (`[mqtt] url` as a list, docs/cluster.md):
    # after a failure the publisher tries the next node.
    more_urls: tuple[str, ...] = ()

    def topic(self, kind: FeedKind) -> str:
        return self.preadvice if kind == "preadvice" else self.customs


def read_feed_site(path: Path) -> FeedSite:
    """`[mqtt]` and `[feeds]` of a site config, read as TOML; FeedError when the file has
    no `[feeds]` topics or the broker URL does not parse."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FeedError(f"{path}: cannot read the site config: {exc}") from exc
    mqtt, feeds = data.get("mqtt"), data.get("feeds")
    if not isinstance(feeds, dict) or not isinstance(mqtt, dict):
        raise FeedError(f"{path}: no [feeds] table (preadvice and customs topics) to publish to")
    topics = {key: feeds.get(key) for key in ("preadvice", "customs")}
    missing = [k for k, v in topics.items() if not isinstance(v, str) or not v]
    if missing:
        raise FeedError(f"{path}: [feeds] needs the topic(s) {', '.join(missing)}")
    url = mqtt.get("url")
    if not isinstance(url, str | list) or not url:
        raise FeedError(f"{path}: [mqtt] url is missing")
    try:
        parse_mqtt_urls(url)  # one URL or a cluster's nodes, as check-config checks them
    except ValueError as exc:
        raise FeedError(f"{path}: mqtt.url: {exc}") from exc
    urls = [url] if isinstance(url, str) else url
    ca = mqtt.get("ca_file")
    return FeedSite(
        url=urls[0],
        more_urls=tuple(urls[1:]),
        preadvice=str(topics["preadvice"]),
        customs=str(topics["customs"]),
        username=mqtt.get("username"),
        password=mqtt.get("password"),
        ca_file=path.resolve().parent / ca if isinstance(ca, str) else None,
    )


class FeedPublisher:
    """Publishes feed messages at QoS 1 to the site's topics, `window` unacknowledged at
    most, in order. When the broker goes, what it did not acknowledge is sent again after
    the reconnect (the same ids: the daemon applies an id once)."""

    def __init__(self, site: FeedSite, *, identifier: str | None = None, window: int = 64):
        self.site = site
        self.identifier = identifier or f"sorterd-feedsim-{time.time_ns() % 10**9}"
        self.window = window
        self.log = FeedLog()
        self.connected = asyncio.Event()
        self._queue: asyncio.Queue[Published | None] = asyncio.Queue(maxsize=window * 4)
        self._inflight: dict[int, Published] = {}
        self._pending: deque[Published] = deque()
        self._closed = False  # the end of the queue was taken
        self._closing = False  # close() was called
        self._seq = 0
        self._node = 0  # which of the site's broker nodes the next connection goes to

    def _client(self) -> aiomqtt.Client:
        urls = (self.site.url, *self.site.more_urls)
        ep = parse_mqtt_url(urls[self._node % len(urls)])
        tls = None
        if ep.tls:
            tls = ssl.create_default_context(
                cafile=str(self.site.ca_file) if self.site.ca_file else None
            )
        client = aiomqtt.Client(
            ep.host,
            ep.port,
            identifier=self.identifier,
            username=self.site.username or ep.username,
            password=self.site.password or ep.password,
            tls_context=tls,
            keepalive=5,
            max_inflight_messages=self.window,
        )
        client.pending_calls_threshold = self.window * 2
        return client

    async def submit(self, message: FeedMessage, filler_rows: int = 0) -> Published:
        """Queue one message (waits while the window and queue are full)."""
        self._seq += 1
        p = Published(self._seq, message, filler_rows)
        if not filler_rows:
            self.log.published.append(p)
        await self._queue.put(p)
        return p

    async def close(self) -> None:
        """No more messages: `run` returns once every queued one is acknowledged. Does not
        wait, even while the broker is away with the queue full."""
        self._closing = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    async def run(self) -> None:
        """Connect, publish, reconnect with backoff when the broker goes; returns after
        `close` once everything was acknowledged."""
        backoff = Backoff(initial_s=0.1, cap_s=2.0)
        while True:
            try:
                async with self._client() as client:
                    self.connected.set()
                    backoff.reset()
                    await self._pump(client)
                    return
            except* aiomqtt.MqttError as group:
                # Once per outage: when the link is lost, or the first attempt fails.
                if self.connected.is_set() or backoff.failures == 0:
                    log.warning("feed broker connection lost", error=str(group.exceptions[0]))
                self.connected.clear()
                self.log.reconnects += 1
                self._node += 1  # the next node of a cluster (the same with one URL)
                # Unacknowledged messages go again first, in their order.
                again = sorted(self._inflight.values(), key=lambda p: p.seq)
                self._inflight.clear()
                self._pending.extendleft(reversed(again))
            await asyncio.sleep(backoff.next_delay_s())

    async def _pump(self, client: aiomqtt.Client) -> None:
        slots = asyncio.Semaphore(self.window)
        async with asyncio.TaskGroup() as tg:
            while True:
                if self._pending:
                    p = self._pending.popleft()
                elif self._closed or (self._closing and self._queue.empty()):
                    break
                else:
                    got = await self._queue.get()
                    if got is None:
                        self._closed = True
                        continue
                    p = got
                await slots.acquire()
                self._inflight[p.seq] = p
                tg.create_task(self._publish(client, p, slots), name=f"feed-publish-{p.seq}")

    async def _publish(
        self, client: aiomqtt.Client, p: Published, slots: asyncio.Semaphore
    ) -> None:
        try:
            p.attempts += 1
            if p.first_sent_s is None:
                p.first_sent_s = time.time()
            await client.publish(self.site.topic(p.message.kind), p.message.payload, qos=1)
            p.acked_s = time.time()
            self._inflight.pop(p.seq, None)
            self.log.filler_acked += p.filler_rows
        finally:
            slots.release()


async def publish_stream(
    publisher: FeedPublisher,
    messages: Sequence[FeedMessage],
    *,
    start_s: float,
    rows_per_s: float | None = None,
    filler: Filler | None = None,
    filler_batch: int = 100,
    until_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Hand `messages` to the publisher as they fall due (stream time 0 is the loop time
    `start_s`; the backlog goes at once), at most `rows_per_s` rows a second, the rest of
    that rate filled with `filler` rows; until the messages end (with no filler), the
    loop time `until_s`, or `stop`."""
    loop = asyncio.get_running_loop()
    begin_s = loop.time()  # the rate counts from here, whatever the stream time
    sent_rows = 0
    queue = deque(messages)
    while not (stop is not None and stop.is_set()):
        now = loop.time()
        if until_s is not None and now >= until_s:
            return
        if not queue and filler is None:
            return
        allowed = math.inf if rows_per_s is None else (now - begin_s) * rows_per_s - sent_rows
        due = queue and start_s + queue[0].at_s <= now
        if due and allowed >= 0:
            message = queue.popleft()
            await publisher.submit(message)
            sent_rows += max(1, len(message.rows) + len(message.bad))
        elif filler is not None and allowed >= filler_batch:
            await publisher.submit(filler.message(filler_batch), filler_batch)
            sent_rows += filler_batch
        else:
            await asyncio.sleep(_pause_s(queue, start_s, now, rows_per_s, allowed, filler_batch))


def _pause_s(
    queue: deque[FeedMessage],
    start_s: float,
    now: float,
    rows_per_s: float | None,
    allowed: float,
    filler_batch: int,
) -> float:
    """How long until the next message falls due or the rate allows the next rows."""
    waits = [0.5]
    if queue:
        waits.append(start_s + queue[0].at_s - now)
    if rows_per_s is not None:
        waits.append((filler_batch - allowed) / rows_per_s)
    return max(0.0005, min(waits))


def line_plan(
    seed: int, items_per_h: float, params: LineParams, count: int, mix: FeedMix | None = None
) -> FeedPlan:
    """The feed stream for a simulated line with `params` inducting `items_per_h` from
    `Traffic(seed)`: the same spacing as its conveyor (`Conveyor.run`), so that stream
    time 0 is the first induction."""
    interval_s = max(3600.0 / items_per_h, params.item_pitch_m / params.belt_speed_m_s)
    return FeedPlan(
        seed=seed,
        interval_s=interval_s,
        count=count,
        induct_to_scan_s=params.induct_to_scan_m / params.belt_speed_m_s,
        mix=mix or FeedMix(),
    )


async def simulate_feeds(
    site: FeedSite,
    plan: FeedPlan,
    *,
    rows_per_s: float | None,
    duration_s: float | None,
    stop: asyncio.Event,
) -> FeedLog:
    """`sorterd simulate feeds`: publish `plan` from now (stream time 0), filled up to
    `rows_per_s` when given, until `duration_s`, the plan's end (without a rate) or `stop`;
    then wait for the broker to acknowledge what was sent."""
    publisher = FeedPublisher(site)
    loop = asyncio.get_running_loop()
    start_s = loop.time()
    filler = Filler(plan.seed) if rows_per_s is not None else None
    stream = publish_stream(
        publisher,
        plan.messages,
        start_s=start_s,
        rows_per_s=rows_per_s,
        filler=filler,
        until_s=None if duration_s is None else start_s + duration_s,
    )
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(publisher.run(), name="feed-publisher")
        streaming = tg.create_task(stream, name="feed-stream")
        stopping = tg.create_task(stop.wait(), name="feed-stop")
        await asyncio.wait({streaming, stopping}, return_when=asyncio.FIRST_COMPLETED)
        streaming.cancel()  # stopped: a submit may wait for a broker that is away
        stopping.cancel()
        await publisher.close()
        try:
            async with asyncio.timeout(5 if stop.is_set() else 30):
                await asyncio.shield(runner)
        except TimeoutError:
            log.warning("feed messages still unacknowledged; giving up")
            runner.cancel()
    return publisher.log
