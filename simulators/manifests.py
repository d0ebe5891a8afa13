"""Realistic shipper pre-advice for the traffic generator's parcels.

The same seeded labels as `simulators.traffic`, so that a manifest written here names the
barcodes the simulated scanners will read: tests and benchmarks use one set of data.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from simulators.conveyor import SimItem
from simulators.labels import moroccan_postcode
from sorter.barcodes import CodeKind, classify

HEADER = ("barcode", "postcode", "country", "service", "customs", "weight_g")


def naming_code(item: SimItem) -> str | None:
    """The barcode a shipper would pre-advise: the carrier code, else the SSCC."""
    labels = [classify(c) for c in item.codes]
    for kind in (CodeKind.S10, CodeKind.UPS, CodeKind.DHL, CodeKind.LP, CodeKind.GS1):
        for lab in labels:
            if lab.kind is kind and lab.valid and lab.barcode:
                return lab.barcode
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
        labels = [classify(c) for c in item.codes]
        postcode = next((lab.postcode for lab in labels if lab.postcode), "")
        yield (
            barcode,
            postcode or moroccan_postcode(rng),
            "MA",
            next((lab.s10_service for lab in labels if lab.s10_service), ""),
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
