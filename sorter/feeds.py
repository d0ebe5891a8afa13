"""Live hub feeds (docs/interfaces.md section 7, "Live hub feeds"): pre-advice rows and
customs decisions parsed from MQTT payloads, and the live manifest index they update.

Pure core, no I/O: the daemon (sorterd) subscribes, journals and acknowledges; this module
says what a payload means and keeps the index the decider looks items up in.

- `parse_preadvice` / `parse_customs`: bytes -> `FeedBatch` (checked rows, customs
  updates, bad rows with a stable reason word). Never raise.
- `LiveManifest`: the file manifest (`sorter.manifest.Manifest`) with a delta layer of
  feed rows and customs decisions over it (`sorter.manifest.delta`).

Semantics, per barcode:
- a pre-advice row replaces what the index knew of the barcode from files and earlier
  feed rows (all its fields), and wins over file rows, across file reloads too;
- customs: the latest decision by arrival wins, whatever its source. A customs message
  (hold or release) decides until a later customs message or a later pre-advice row that
  states `customs` (non-empty: `hold`/`yes` hold, `no`/`clear`/`release`/`none` release).
  A later pre-advice row WITHOUT a customs value replaces the row's fields but leaves a
  customs message's decision in force: a shipper re-sending its data does not lift a
  hold that customs made;
- an `id` already applied (rows or customs) is skipped;
- every value a JSON string; a bad row is reported and the rest of the message applied.
"""

from __future__ import annotations

import enum
import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from sorter.bounded import BoundedMap
from sorter.countries import ISO_ALPHA2
from sorter.manifest import (
    KEY_BYTES,
    FileReport,
    Manifest,
    ManifestRow,
    unpack_row,
)
from sorter.manifest.delta import (
    HAS_ROW,
    HOLD_BIT,
    KEEP_OVERRIDE,
    NO_ROW,
    OVERRIDE_HOLD,
    OVERRIDE_SET,
    RETIRE,
    SOURCE_NONE,
    DeltaTable,
    find_live,
    find_live_batch,
    words_of,
)
from sorter.plan import letters_index
from sorter.postcode import NO_POSTCODE, postcode_features

__all__ = [
    "BAD_REASON_WORDS",
    "MAX_FEED_MESSAGE_BYTES",
    "SEEN_IDS_CAPACITY",
    "Applied",
    "BadRow",
    "CustomsUpdate",
    "FeedBatch",
    "FeedPacker",
    "FeedRow",
    "LiveManifest",
    "PackedUpdate",
    "Source",
    "parse_customs",
    "parse_preadvice",
]

_T = TypeVar("_T")

# One MQTT message at most this big is parsed; a bigger one is one bad row, nothing applied
# (a 1 MiB message holds ~7,000 rows; mosquitto's own default limit is far higher).
MAX_FEED_MESSAGE_BYTES: Final = 8 << 20
# Ids remembered to drop a re-sent row or decision (at 50,000 rows/s: 5 s of ids; the
# broker re-delivers what was not acknowledged, within seconds of a reconnect).
SEEN_IDS_CAPACITY: Final = 1 << 18

BAD_REASON_WORDS: Final = {
    "too_large": "the message is larger than MAX_FEED_MESSAGE_BYTES",
    "bad_json": "not JSON text (UTF-8)",
    "wrong_type": "not an object, or a value that is not a JSON string",
    "no_barcode": "no barcode, or an empty one",
    "bad_value": "a value the manifest columns refuse (barcode, country, origin, service, "
    "customs word, weight_g, destination not in the plan)",
    "no_routing": "no destination, postcode, country or origin",
    "unknown_status": "a customs status other than hold or release",
}


class FeedRow(NamedTuple):
    """One pre-advice row, checked as the manifest CSV checks its columns. Values are as
    sent, blanks around trimmed; None for absent or empty. `country`, `origin` and
    `service` upper case; `customs` "hold" or "release" (the CSV words normalised: hold,
    yes -> hold; no, clear, release, none -> release), None when the row does not say.
    `destination` is checked against the plan when applied (the parser knows no plan).
    A named tuple: the feeds make 50,000 a second, and a frozen dataclass's `__init__`
    costs about four times as much."""

    barcode: str
    destination: str | None
    postcode: str | None
    country: str | None
    origin: str | None
    customs: str | None
    id: str | None
    service: str | None = None


class CustomsUpdate(NamedTuple):
    """One customs decision: {"barcode", "status": "hold" | "release", "id"}."""

    barcode: str
    hold: bool
    id: str | None


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row (or a whole message) refused: `reason` one of BAD_REASON_WORDS, `detail` for
    the log (names the field, never the whole payload)."""

    reason: str
    detail: str


@dataclass(slots=True)
class FeedBatch:
    """What one MQTT message carried, in message order."""

    rows: list[FeedRow] = field(default_factory=list)
    customs: list[CustomsUpdate] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)


@dataclass(slots=True)
class Applied:
    """What `LiveManifest.apply` did with one batch: rows and customs decisions applied,
    those skipped because their id was applied before, and rows refused only now (a
    destination the plan does not have). `accepted`: the rows and decisions applied, in
    order: what the journal keeps (a refused row is not replayed)."""

    rows: int = 0
    customs: int = 0
    duplicates: int = 0
    bad: list[BadRow] = field(default_factory=list)
    accepted: FeedBatch = field(default_factory=FeedBatch)


class Source(enum.StrEnum):
    """Who decided what the index says of a barcode."""

    FILE = "file"  # a manifest file's row
    FEED = "feed"  # a pre-advice row from the feed
    CUSTOMS = "customs"  # a customs message's hold or release is in force


_HOLD_WORDS: Final = {"HOLD": "hold", "YES": "hold", "NO": "release", "CLEAR": "release",
                      "RELEASE": "release", "NONE": "release"}  # fmt: skip
_STATUSES: Final = {"hold": True, "release": False}
_MAX_WEIGHT_DIGITS: Final = 9
_DETAIL_CHARS: Final = 40  # of a value quoted in a bad row's detail


def _quote(value: str) -> str:
    return repr(value[:_DETAIL_CHARS])


def _too_large(payload: bytes) -> FeedBatch | None:
    if len(payload) > MAX_FEED_MESSAGE_BYTES:
        detail = f"{len(payload)} bytes, more than {MAX_FEED_MESSAGE_BYTES}"
        return FeedBatch(bad=[BadRow("too_large", detail)])
    return None


def _objects(payload: bytes, batch: FeedBatch) -> list[dict[str, Any]]:
    """The message's objects (one, or an array's); what is not one goes to batch.bad."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        batch.bad.append(BadRow("bad_json", str(exc)[:80]))
        return []
    items = doc if isinstance(doc, list) else [doc]
    objects: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            objects.append(item)
        else:
            batch.bad.append(BadRow("wrong_type", f"item {i} is a {type(item).__name__}"))
    return objects


# The usual message, every value a string: decoded and type-checked by msgspec in C.
_STRING_ROWS: Final = msgspec.json.Decoder(list[dict[str, str]])
_STRING_ROW: Final = msgspec.json.Decoder(dict[str, str])
_AN_OBJECT: Final = re.compile(rb"[ \t\r\n]*\{")


def _string_objects(payload: bytes) -> list[dict[str, str]] | None:
    """The message's objects when it is one object or an array of objects whose values
    are all strings: the feeds' usual message, decoded and checked by msgspec (~2.5x as
    fast as json.loads and a Python loop over the values). None for anything else:
    `_objects` then says what is wrong, item by item and row by row."""
    try:
        if _AN_OBJECT.match(payload):
            return [_STRING_ROW.decode(payload)]
        return _STRING_ROWS.decode(payload)
    except (msgspec.MsgspecError, ValueError):
        return None


def _is_key(barcode: str) -> bool:
    """1-KEY_BYTES printable ASCII characters, no blank: what a manifest can hold
    (sorter.manifest.index's pattern, in string methods: this runs once per feed row)."""
    return (
        0 < len(barcode) <= KEY_BYTES
        and barcode.isascii()
        and barcode.isprintable()
        and " " not in barcode
    )


def _barcode(obj: dict[str, Any]) -> str | BadRow:
    barcode = obj.get("barcode")
    if barcode is None:
        return BadRow("no_barcode", "no barcode")
    if not isinstance(barcode, str):
        return BadRow("wrong_type", f"barcode is a {type(barcode).__name__}")
    barcode = barcode.strip(" ")
    if not barcode:
        return BadRow("no_barcode", "empty barcode")
    if not _is_key(barcode):
        return BadRow(
            "bad_value",
            f"barcode {_quote(barcode)} is longer than {KEY_BYTES} characters or not "
            "printable ASCII",
        )
    return barcode


def _country(value: str, column: str) -> str | BadRow:
    code = value.upper()  # ASCII only: str.upper would make "ß" the code "SS"
    if value.isascii() and code in ISO_ALPHA2:
        return code
    return BadRow("bad_value", f"{column} {_quote(value)} is not an ISO 3166-1 alpha-2 code")


def _optional(obj: dict[str, Any], column: str) -> str | None:
    value = obj.get(column)
    if value is None:
        return None
    return value.strip(" ") or None  # checked: every value a str


def _refusal(obj: dict[str, Any], barcode: str) -> FeedRow | BadRow:
    """The columns after the barcode, each checked as the manifest CSV checks it, one at a
    time: why a row is refused (`_checked_fields` is the fast way to the same answer)."""
    country = _optional(obj, "country")
    if country is not None and isinstance(checked := _country(country, "country"), BadRow):
        return checked
    origin = _optional(obj, "origin")
    if origin is not None and isinstance(checked := _country(origin, "origin"), BadRow):
        return checked
    service = _optional(obj, "service")
    if service is not None and not (len(service) == 2 and service.isascii() and service.isalpha()):
        return BadRow("bad_value", f"service {_quote(service)} is not a two-letter code")
    customs = _optional(obj, "customs")
    if customs is not None:
        word = _HOLD_WORDS.get(customs.upper()) if customs.isascii() else None
        if word is None:
            return BadRow(
                "bad_value",
                f"customs {_quote(customs)} is not one of hold, yes, no, clear, release, none",
            )
        customs = word
    weight = _optional(obj, "weight_g")
    if weight is not None and not (
        len(weight) <= _MAX_WEIGHT_DIGITS and weight.isascii() and weight.isdigit()
    ):
        return BadRow("bad_value", f"weight_g {_quote(weight)} is not a whole number of grams")
    destination = _optional(obj, "destination")
    postcode = _optional(obj, "postcode")
    if (
        destination is None
        and country is None
        and origin is None
        and (postcode is None or postcode_features(postcode)[0] == NO_POSTCODE)
    ):
        return BadRow("no_routing", "no destination, postcode, country or origin")
    return FeedRow(
        barcode, destination, postcode, country and country.upper(), origin and origin.upper(),
        customs, obj.get("id") or None, service and service.upper(),
    )  # fmt: skip


def _checked_fields(obj: dict[str, Any], barcode: str) -> FeedRow | BadRow:
    """The columns after the barcode, checked as `_refusal` checks them, in one expression
    (the rows of a feed are good ones, and 50,000 a second go through here); a row that
    fails goes to `_refusal` for its reason. Every value is a str (checked before)."""
    get = obj.get
    country = (get("country") or "").strip(" ")
    origin = (get("origin") or "").strip(" ")
    service = (get("service") or "").strip(" ")
    word = (get("customs") or "").strip(" ")
    weight = (get("weight_g") or "").strip(" ")
    destination = (get("destination") or "").strip(" ")
    postcode = (get("postcode") or "").strip(" ")
    customs = _HOLD_WORDS.get(word.upper()) if word.isascii() else None
    good = (
        (not country or (country.isascii() and country.upper() in ISO_ALPHA2))
        and (not origin or (origin.isascii() and origin.upper() in ISO_ALPHA2))
        and (not service or (len(service) == 2 and service.isascii() and service.isalpha()))
        and (not word or customs is not None)
        and (not weight or (len(weight) <= _MAX_WEIGHT_DIGITS and weight.isascii()
                            and weight.isdigit()))
        and (destination or country or origin
             or (postcode and postcode_features(postcode)[0] != NO_POSTCODE))
    )  # fmt: skip
    if not good:
        return _refusal(obj, barcode)
    return FeedRow(
        barcode, destination or None, postcode or None, country.upper() or None,
        origin.upper() or None, customs, get("id") or None, service.upper() or None,
    )  # fmt: skip


def _preadvice_row(obj: dict[str, Any]) -> FeedRow | BadRow:
    for column, value in obj.items():
        if not isinstance(value, str):
            return BadRow("wrong_type", f"{column[:_DETAIL_CHARS]} is a {type(value).__name__}")
    return _string_row(obj)


def _string_row(obj: dict[str, Any]) -> FeedRow | BadRow:
    """A row whose values are all strings (checked before)."""
    barcode = _barcode(obj)
    if isinstance(barcode, BadRow):
        return barcode
    return _checked_fields(obj, barcode)


def parse_preadvice(payload: bytes) -> FeedBatch:
    """A pre-advice message: one JSON object or an array of them, each a manifest row
    (docs/interfaces.md section 7 columns, every value a JSON string, optional "id").
    Never raises: what is refused is in `bad`, one per row (or one for the message)."""
    return _parse_each(payload, _preadvice_row, lambda batch: batch.rows, _string_row)


def _parse_each(
    payload: bytes,
    one: Callable[[dict[str, Any]], _T | BadRow],
    kept: Callable[[FeedBatch], list[_T]],
    strings: Callable[[dict[str, Any]], _T | BadRow] | None = None,
) -> FeedBatch:
    """Each object of the message through `one`: what it accepts goes into `kept(batch)`,
    what it refuses into `batch.bad`. `strings`: as `one`, for an object whose values are
    all strings (the message decoded by `_string_objects`)."""
    batch = _too_large(payload)
    if batch is not None:
        return batch
    batch = FeedBatch()
    good = kept(batch)
    objects = _string_objects(payload) if strings is not None else None
    check = one
    if objects is None:
        objects = _objects(payload, batch)
    elif strings is not None:
        check = strings
    for obj in objects:
        item = check(obj)
        if isinstance(item, BadRow):
            batch.bad.append(item)
        else:
            good.append(item)
    return batch


def _customs_update(obj: dict[str, Any]) -> CustomsUpdate | BadRow:
    for column in ("status", "id"):
        value = obj.get(column)
        if value is not None and not isinstance(value, str):
            return BadRow("wrong_type", f"{column} is a {type(value).__name__}")
    barcode = _barcode(obj)
    if isinstance(barcode, BadRow):
        return barcode
    status = obj.get("status")
    hold = _STATUSES.get(status.strip(" ").lower()) if status is not None else None
    if hold is None:
        return BadRow("unknown_status", f"status {_quote(status or '')} is not hold or release")
    return CustomsUpdate(barcode, hold, obj.get("id") or None)


def parse_customs(payload: bytes) -> FeedBatch:
    """A customs message: {"barcode", "status": "hold" | "release", "id"} (an array of them
    too). Never raises: what is refused is in `bad`."""
    return _parse_each(payload, _customs_update, lambda batch: batch.customs)


# Queries a batch lookup reads together (sorter.manifest.delta.find_live_batch).
_BATCH_BLOCK: Final = 32
# A customs release of a barcode no row names: nothing to route it by.
_RELEASED_ONLY: Final = NO_ROW | HOLD_BIT
_SOURCES: Final = (None, Source.FILE, Source.FEED, Source.CUSTOMS)
_NO_WORDS: Final = np.zeros((0, KEY_BYTES // 8), np.uint64)
_NO_TABLE: Final = np.zeros(0, np.int32)
_NO_COLUMN: Final = np.zeros(0, np.int64)
# The destination field holds a known name's index + 1 in 16 bits.
_MAX_KNOWN_NAMES: Final = 0xFFFE


# Two letters -> their index + 1 (sorter.plan.letters_index + 1), "" or None -> 0: what a
# packed field holds.
_LETTERS_1: Final[dict[str | None, int]] = {
    a + b: letters_index(a + b) + 1 for a in string.ascii_uppercase for b in string.ascii_uppercase
}
_LETTERS_1[None] = 0


def _fields(row: FeedRow, dest: int) -> tuple[int, int]:
    """(postcode code, packed fields) of a checked row; `dest` the destination's index."""
    pc, digits = postcode_features(row.postcode) if row.postcode else (NO_POSTCODE, 0)
    letters = _LETTERS_1
    packed = (
        letters.get(row.country, 0) | letters.get(row.service, 0) << 10 | (dest + 1) << 20
        | digits << 36 | (row.customs == "hold") << 41 | letters.get(row.origin, 0) << 42
    )  # fmt: skip
    return pc, packed


@dataclass(frozen=True, slots=True)
class PackedUpdate:
    """Rows and customs decisions checked and packed (`FeedPacker.take`), for the index to
    merge in one call (`LiveManifest.apply_packed`): plain arrays, cheap to send between
    processes. `names`: destination names the packer added to its list of known names
    (in order; the index appends them to its own, so both lists stay the same)."""

    words: npt.NDArray[np.uint64]  # (m, 4): the barcodes' keys
    postcode: npt.NDArray[np.int64]
    code: npt.NDArray[np.int64]  # fields and flags (sorter.manifest.delta)
    names: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return int(self.words.shape[0])

    def part(self, start: int, stop: int) -> PackedUpdate:
        """Updates start..stop-1 (the new names go with the first part)."""
        names = self.names if start == 0 else ()
        return PackedUpdate(
            self.words[start:stop], self.postcode[start:stop], self.code[start:stop], names
        )


class FeedPacker:
    """What `LiveManifest.apply` decides about a batch, without the index: which rows and
    decisions apply (an id applied before is skipped; a destination the plan lacks is
    refused), packed as updates for the index (`take`). The daemon runs it beside the
    line (sorterd/feeds_worker.py) and the line's index merges what it packed."""

    seen_ids: BoundedMap[str, None]

    def __init__(
        self,
        destinations: Sequence[str],
        seen_ids_capacity: int = SEEN_IDS_CAPACITY,
        known: Sequence[str] = (),
    ) -> None:
        self.seen_ids = BoundedMap(seen_ids_capacity)
        self._plan: frozenset[str] = frozenset(destinations)
        # Every destination name an update named (append only): the index of a packed row's
        # destination field (the index maps it to the plan's: sorter.manifest.delta).
        self._known: dict[str, int] = {name: i for i, name in enumerate(known)}
        self._new_names: list[str] = []
        self._barcodes: list[str] = []
        self._postcodes: list[int] = []
        self._codes: list[int] = []

    @property
    def known_names(self) -> tuple[str, ...]:
        return tuple(self._known)

    @property
    def pending(self) -> int:
        """Updates packed and not taken yet."""
        return len(self._barcodes)

    def set_destinations(self, destinations: Sequence[str]) -> None:
        """The plan's names: a row naming another is refused (unless replayed)."""
        self._plan = frozenset(destinations)

    def adopt_known(self, known: Sequence[str]) -> None:
        """Go on from the index's list of destination names (what is packed and not taken
        yet is dropped): the daemon replayed the journal into its index itself."""
        self._known = {name: i for i, name in enumerate(known)}
        self.drop()

    def drop(self) -> None:
        """Forget what was packed and not taken."""
        self._new_names, self._barcodes, self._postcodes, self._codes = [], [], [], []

    def apply(self, batch: FeedBatch, arrival_ns: int, *, replay: bool = False) -> Applied:
        """Check and pack a batch in order (its rows, then its customs decisions), as
        `LiveManifest.apply` applies it; the updates wait for `take`."""
        del arrival_ns  # the order of calls is the order of arrival
        applied = Applied()
        self._pack_rows(batch.rows, applied, replay)
        self._pack_customs(batch.customs, applied)
        return applied

    def retire(self, barcodes: Sequence[str]) -> None:
        """Entries to remove from the index (the feeds' retention), after what waits."""
        for barcode in barcodes:
            if _is_key(barcode):  # the journal's, checked when they were applied
                self._add(barcode, NO_POSTCODE, RETIRE)

    def take(self) -> PackedUpdate | None:
        """What was packed since the last take, in order; None when nothing was."""
        if not self._barcodes:
            return None
        # Every barcode was checked (`_is_key`) when it was packed: encoded as it is.
        keys = np.array(self._barcodes, dtype=f"S{KEY_BYTES}").view(np.uint8)
        update = PackedUpdate(
            words_of(keys.reshape(len(self._barcodes), KEY_BYTES)).copy(),
            np.array(self._postcodes, np.int64),
            np.array(self._codes, np.int64),
            tuple(self._new_names),
        )
        self._barcodes, self._postcodes, self._codes, self._new_names = [], [], [], []
        return update

    def _add(self, barcode: str, postcode: int, code: int) -> None:
        self._barcodes.append(barcode)
        self._postcodes.append(postcode)
        self._codes.append(code)

    def _name_index(self, name: str, replay: bool) -> int | None:
        found = self._known.get(name)
        if found is not None and (replay or name in self._plan):
            return found
        if not replay and name not in self._plan:
            return None
        if len(self._known) >= _MAX_KNOWN_NAMES:
            return None
        found = self._known[name] = len(self._known)
        self._new_names.append(name)
        return found

    def _pack_rows(self, rows: list[FeedRow], applied: Applied, replay: bool) -> None:
        seen = self.seen_ids
        accepted = applied.accepted.rows
        before = len(accepted)
        # Bound once: 50,000 rows a second go through here (the feeds worker).
        barcodes, postcodes, codes = self._barcodes, self._postcodes, self._codes
        for row in rows:
            if row.id is not None and row.id in seen:
                applied.duplicates += 1
                continue
            if not _is_key(row.barcode):  # a row not made by the parser
                applied.bad.append(BadRow("bad_value", f"barcode {_quote(row.barcode)}"))
                continue
            dest = -1
            if row.destination is not None:
                found = self._name_index(row.destination, replay)
                if found is None:
                    detail = f"destination {row.destination[:40]!r} is not in the sort plan"
                    applied.bad.append(BadRow("bad_value", detail))
                    continue
                dest = found
            pc, packed = _fields(row, dest)
            keep = KEEP_OVERRIDE if row.customs is None else 0  # a customs decision stays
            barcodes.append(row.barcode)
            postcodes.append(pc)
            codes.append(packed | HAS_ROW | keep)
            if row.id is not None:
                seen[row.id] = None  # not in it (above)
            accepted.append(row)
        applied.rows += len(accepted) - before

    def _pack_customs(self, updates: list[CustomsUpdate], applied: Applied) -> None:
        seen = self.seen_ids
        accepted = applied.accepted.customs
        for update in updates:
            if update.id is not None and update.id in seen:
                applied.duplicates += 1
                continue
            if not _is_key(update.barcode):
                applied.bad.append(BadRow("bad_value", f"barcode {_quote(update.barcode)}"))
                continue
            hold = OVERRIDE_HOLD if update.hold else 0
            self._add(update.barcode, NO_POSTCODE, OVERRIDE_SET | hold)
            if update.id is not None:
                seen.add(update.id)
            accepted.append(update)
            applied.customs += 1


class LiveManifest:
    """The file manifest (sorter.manifest.Manifest) with a delta layer of feed rows and
    customs decisions over it. Synchronous, event-loop-only, no I/O.

    Every method runs to its end before the next lookup (one thread), so a decision never
    sees half a row. `lookup` is the decider's hot path: one numba call over the delta's
    table and the file index (sorter.manifest.delta.find_live). Rows come in checked and
    packed (`apply_packed`, from a FeedPacker here or in another process: the daemon's
    feeds worker), or as a batch (`apply`: this index's own packer, then `apply_packed`).
    """

    def __init__(
        self,
        files: Manifest | None,
        destinations: Sequence[str],
        seen_ids_capacity: int = SEEN_IDS_CAPACITY,
    ) -> None:
        self.packer = FeedPacker(destinations, seen_ids_capacity)
        self.last_arrival_ns = 0
        # Called with the plan's names when they change (the daemon tells its feeds worker).
        self.on_destinations: Callable[[tuple[str, ...]], None] | None = None
        self._delta = DeltaTable()
        self._known: list[str] = []  # the destination names updates named, in order
        self._names: tuple[str, ...] = ()
        self._to_plan = np.zeros(0, np.int64)
        self._files: Manifest | None = None
        self._files_as_loaded: Manifest | None = None
        self._file_arrays = (_NO_WORDS, _NO_TABLE, _NO_COLUMN, _NO_COLUMN)
        self.set_destinations(destinations)
        self.replace_files(files)

    @property
    def seen_ids(self) -> BoundedMap[str, None]:
        """The ids `apply` has applied (its packer's)."""
        return self.packer.seen_ids

    @property
    def known_names(self) -> tuple[str, ...]:
        """The destination names the delta's rows index (what a new packer starts from)."""
        return tuple(self._known)

    # --- changes -----------------------------------------------------------------------

    def apply(self, batch: FeedBatch, arrival_ns: int, *, replay: bool = False) -> Applied:
        """Apply a batch in order (its rows, then its customs decisions); an id applied
        before is skipped; a row naming a destination the plan does not have is refused
        (in Applied.bad). `arrival_ns`: when the message arrived (kept as
        `last_arrival_ns`; order of arrival is order of `apply`).

        `replay`: rows journaled when they were accepted (sorterd/feeds.py at a restart):
        a destination the plan of now lacks is kept as a name the plan does not have (the
        row has no destination until a later plan brings the name back), as a plan reload
        does to a live row, so that a replay ends in the state the live index was in."""
        applied = self.packer.apply(batch, arrival_ns, replay=replay)
        update = self.packer.take()
        if update is not None:
            self.apply_packed(update)
        self.last_arrival_ns = arrival_ns
        return applied

    def retire(self, barcodes: Sequence[str]) -> None:
        """Remove the barcodes' entries (the feeds' retention): files decide them again."""
        self.packer.retire(barcodes)
        update = self.packer.take()
        if update is not None:
            self.apply_packed(update)

    def apply_packed(self, update: PackedUpdate, start: int = 0, stop: int | None = None) -> None:
        """Merge updates start..stop-1 of a packed update (FeedPacker.take), in order, in
        one numba call; its new destination names are taken with the first part."""
        if update.names and start == 0:
            self._add_names(update.names)
        self._delta.merge(update.words, update.postcode, update.code, start, stop)

    def _add_names(self, names: Sequence[str]) -> None:
        self._known.extend(names)
        plan = {name: i for i, name in reversed(list(enumerate(self._names)))}  # first wins
        self._to_plan = np.array([plan.get(name, -1) for name in self._known], np.int64)

    def replace_files(self, files: Manifest | None) -> None:
        """A file reload: the feed rows and customs decisions are kept and still win."""
        self._files_as_loaded = files  # remapped from these names at every plan reload
        if files is not None and files.destinations != self._names:
            files = files.for_destinations(self._names)
        self._files = files
        if files is None or not files.size:
            self._file_arrays = (_NO_WORDS, _NO_TABLE, _NO_COLUMN, _NO_COLUMN)
        else:
            part = files.part
            self._file_arrays = (files.words, files.table, part.postcode, part.packed)

    def set_destinations(self, destinations: Sequence[str]) -> None:
        """A plan reload: rows' destinations are looked up under the new plan's names (a
        feed row naming a destination the new plan lacks has none, and has it again if a
        later plan brings the name back). Rewrites no row."""
        names = tuple(destinations)
        if names == self._names:
            return
        self._names = names
        self.packer.set_destinations(names)
        self._add_names(())
        self.replace_files(self._files_as_loaded)
        if self.on_destinations is not None:
            self.on_destinations(names)

    def reserve(self, rows: int) -> None:
        """Room for this many delta entries now: the table's doublings (a copy and a
        rehash, ~90 ms at 1,000,000 entries) are paid here, at start, not mid-shift."""
        self._delta.reserve(rows)

    # --- lookups -----------------------------------------------------------------------

    def find_arrays(self) -> tuple[Any, Any, Any, Any, Any, Any, Any, Any, Any]:
        """The arrays sorter.manifest.delta.find_live reads after the key, in its order:
        the delta's words, table, postcodes and packed fields, the destination map, the
        files' words, table, postcodes and packed fields (also for sorter.fastpath)."""
        d = self._delta
        f_words, f_table, f_pc, f_packed = self._file_arrays
        to_plan = self._to_plan
        return d.words, d.table, d.postcode, d.packed, to_plan, f_words, f_table, f_pc, f_packed

    def _find(self, barcode: str) -> tuple[int, int, int]:
        """(source code, postcode, packed fields) of a barcode."""
        if not _is_key(barcode):
            return SOURCE_NONE, NO_POSTCODE, 0
        return find_live(barcode.encode("ascii"), *self.find_arrays())

    def lookup(self, barcode: str) -> ManifestRow | None:
        """What the decider needs: the row for the barcode with its customs hold resolved;
        None when nothing is known (or only a customs release)."""
        source, pc, packed = self._find(barcode)
        if source == SOURCE_NONE or packed & _RELEASED_ONLY == NO_ROW:
            return None
        return unpack_row(pc, packed)

    def lookup_source(self, barcode: str) -> tuple[ManifestRow | None, Source | None]:
        """As lookup, and who decided it (one lookup, for the decider)."""
        source, pc, packed = self._find(barcode)
        if source == SOURCE_NONE or packed & _RELEASED_ONLY == NO_ROW:
            return None, _SOURCES[source]
        return unpack_row(pc, packed), _SOURCES[source]

    def source_of(self, barcode: str) -> Source | None:
        """For P/cmd/tracking: CUSTOMS when a customs message's decision is in force, else
        FEED when a feed row is, else FILE when a file row is, else None."""
        return _SOURCES[self._find(barcode)[0]]

    def lookup_batch(
        self, keys: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Many keys (sorter.manifest.encode_keys) at once: (source codes, postcodes,
        packed fields), as `_find` gives them one at a time."""
        n = keys.shape[0]
        source = np.zeros(n, np.int8)
        postcode = np.empty(n, np.int64)
        packed = np.empty(n, np.int64)
        queries = keys.view(np.uint64).reshape(n, KEY_BYTES // 8)
        find_live_batch(
            queries, *self.find_arrays(), source, postcode, packed,
            np.empty((_BATCH_BLOCK, 4), np.int64),
        )  # fmt: skip
        return source, postcode, packed

    # --- figures -----------------------------------------------------------------------

    @property
    def delta_rows(self) -> int:
        """Barcodes the delta layer holds (feed rows and customs decisions): P/stats
        `feeds.delta_rows`."""
        return self._delta.n

    @property
    def files(self) -> Manifest | None:
        """The file manifest under the plan's names."""
        return self._files

    @property
    def destinations(self) -> tuple[str, ...]:
        return self._names

    # What sorter.contract.manifest_figures and the decider read of a Manifest.
    @property
    def size(self) -> int:
        """Barcodes known, files and delta (one in both counts twice); 0 when empty."""
        return (self._files.size if self._files is not None else 0) + self.delta_rows

    @property
    def rows(self) -> int:
        return self._files.rows if self._files is not None else 0

    @property
    def bad_rows(self) -> int:
        return self._files.bad_rows if self._files is not None else 0

    @property
    def reports(self) -> tuple[FileReport, ...]:
        return self._files.reports if self._files is not None else ()

    def nbytes(self) -> int:
        """The indexes' bytes: files and the delta's rows and table."""
        return (self._files.nbytes() if self._files is not None else 0) + self._delta.nbytes()
