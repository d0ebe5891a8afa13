"""Realistic shipper pre-advice for the traffic generator's parcels.

The same seeded labels as `simulators.traffic`, so that a manifest written here names the
barcodes the simulated scanners will read: tests and benchmarks use one set of data. What
a label holds is what its generator put in it (`simulators.labels.GeneratedCode`), not
what the daemon's barcode reading makes of it.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from simulators.conveyor import SimItem
from simulators.labels import GeneratedCode, Kind, moroccan_postcode

__all__ = ["HEADER", "manifest_rows", "naming_code", "write_manifest"]

# Which generated code a shipper pre-advises when a parcel carries several: a carrier
# tracking number before a logistics unit number.
_NAMING_ORDER: tuple[Kind, ...] = ("s10", "ups", "dhl", "lp", "gs1")

HEADER = ("barcode", "postcode", "country", "service", "customs", "weight_g")


def _generated(item: SimItem) -> list[GeneratedCode]:
    """The item's codes as generated; a code made elsewhere (a test's literal, a stranger's
    label) is one no shipper pre-advises."""
    return [c for c in item.codes if isinstance(c, GeneratedCode)]


def naming_code(item: SimItem) -> str | None:
    """The barcode a shipper would pre-advise: the carrier code, else the SSCC."""
    codes = _generated(item)
    for kind in _NAMING_ORDER:
        for code in codes:
            if code.kind == kind and code.valid and code.tracking:
                return code.tracking
    return None


def manifest_rows(
    items: Iterable[SimItem], seed: int = 1, customs_hold_share: float = 0.01
) -> Iterator[tuple[str, str, str, str, str, str]]:
    """One pre-advice row per item that carries a readable code (others get none)."""
    rng = random.Random(seed)
    for item in items:
        barcode = naming_code(item)
        if barcode is None:
            continue
        codes = _generated(item)
        postcode = next((c.postcode for c in codes if c.postcode), "")
        yield (
            barcode,
            postcode or moroccan_postcode(rng),
            "MA",
            next((c.service for c in codes if c.service), ""),
            "hold" if rng.random() < customs_hold_share else "",
            str(item.weight_g),
        )


def write_manifest(
    path: Path,
    rows: Iterable[tuple[str, ...]],
    *,
    gzipped: bool = False,
    header: tuple[str, ...] = HEADER,
) -> int:
    """Write rows under a header, as a shipper's upload would arrive: complete, in one
    rename from a hidden temporary name. Returns the row count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    data = buffer.getvalue().encode()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(gzip.compress(data, compresslevel=1) if gzipped else data)
    tmp.replace(path)
    return n
