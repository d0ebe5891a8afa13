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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from sorter.bounded import BoundedMap
from sorter.manifest import Manifest, ManifestRow

__all__ = [
    "BAD_REASON_WORDS",
    "MAX_FEED_MESSAGE_BYTES",
    "SEEN_IDS_CAPACITY",
    "Applied",
    "BadRow",
    "CustomsUpdate",
    "FeedBatch",
    "FeedRow",
    "LiveManifest",
    "Source",
    "parse_customs",
    "parse_preadvice",
]

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


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One pre-advice row, checked as the manifest CSV checks its columns. Values are as
    sent, blanks around trimmed; None for absent or empty. `country`, `origin` and
    `service` upper case; `customs` "hold" or "release" (the CSV words normalised: hold,
    yes -> hold; no, clear, release, none -> release), None when the row does not say.
    `destination` is checked against the plan when applied (the parser knows no plan)."""

    barcode: str
    destination: str | None
    postcode: str | None
    country: str | None
    origin: str | None
    customs: str | None
    id: str | None
    service: str | None = None


@dataclass(frozen=True, slots=True)
class CustomsUpdate:
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
    destination the plan does not have)."""

    rows: int = 0
    customs: int = 0
    duplicates: int = 0
    bad: list[BadRow] = field(default_factory=list)


class Source(enum.StrEnum):
    """Who decided what the index says of a barcode."""

    FILE = "file"  # a manifest file's row
    FEED = "feed"  # a pre-advice row from the feed
    CUSTOMS = "customs"  # a customs message's hold or release is in force


def parse_preadvice(payload: bytes) -> FeedBatch:
    """A pre-advice message: one JSON object or an array of them. Never raises."""
    raise NotImplementedError


def parse_customs(payload: bytes) -> FeedBatch:
    """A customs message: one JSON object (or an array of them). Never raises."""
    raise NotImplementedError


class LiveManifest:
    """The file manifest (sorter.manifest.Manifest) with a delta layer of feed rows and
    customs decisions over it. Synchronous, event-loop-only, no I/O.

    Every method runs to its end before the next lookup (one thread), so a decision never
    sees half a row. `lookup` is the decider's hot path: a dict of the newest rows, then
    one numba call over the compacted delta table and the file index.
    """

    seen_ids: BoundedMap[str, None]

    def __init__(
        self,
        files: Manifest | None,
        destinations: Sequence[str],
        seen_ids_capacity: int = SEEN_IDS_CAPACITY,
    ) -> None:
        raise NotImplementedError

    def apply(self, batch: FeedBatch, arrival_ns: int) -> Applied:
        """Apply a batch in order (its rows, then its customs decisions); an id applied
        before is skipped; a row naming a destination the plan does not have is refused
        (in Applied.bad). `arrival_ns`: when the message arrived (time.monotonic_ns or
        time.time_ns; kept as `last_arrival_ns`)."""
        raise NotImplementedError

    def replace_files(self, files: Manifest | None) -> None:
        """A file reload: the feed rows and customs decisions are kept and still win."""
        raise NotImplementedError

    def set_destinations(self, destinations: Sequence[str]) -> None:
        """A plan reload: rows' destinations are looked up under the new plan's names (a
        feed row naming a destination the new plan lacks has none, and has it again if a
        later plan brings the name back)."""
        raise NotImplementedError

    def lookup(self, barcode: str) -> ManifestRow | None:
        """What the decider needs: the row for the barcode with its customs hold resolved,
        None when nothing is known."""
        raise NotImplementedError

    def lookup_source(self, barcode: str) -> tuple[ManifestRow | None, Source | None]:
        """As lookup, and who decided it (one lookup, for the decider)."""
        raise NotImplementedError

    def source_of(self, barcode: str) -> Source | None:
        """For P/cmd/tracking: CUSTOMS when a customs message's decision is in force, else
        FEED when a feed row is, else FILE when a file row is, else None."""
        raise NotImplementedError

    @property
    def delta_rows(self) -> int:
        """Barcodes the delta layer holds (feed rows and customs decisions): P/stats
        `feeds.delta_rows`."""
        raise NotImplementedError

    @property
    def pending_rows(self) -> int:
        """Of those, the newest, not yet compacted (held in a dict)."""
        raise NotImplementedError

    def compact(self) -> None:
        """Move the newest rows into the delta's table: costs in proportion to the rows
        moved, not to the delta's size (the table is updated in place, and grows by
        doubling). `apply` calls it itself past COMPACT_PENDING_ROWS; call it any time."""
        raise NotImplementedError

    # What sorter.contract.manifest_figures and the decider read of a Manifest.
    @property
    def size(self) -> int:
        """Barcodes known, files and delta (a barcode in both counts twice); 0 empty."""
        raise NotImplementedError

    @property
    def files(self) -> Manifest | None:
        raise NotImplementedError
