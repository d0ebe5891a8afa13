"""atheris: manifest bytes through the numba CSV parser, and SCANS.csv through the replay
reader. First byte even: manifest; odd: replay.

The parser runs as plain Python (NUMBA_DISABLE_JIT=1, unless set otherwise): the same
source, instrumented, so the fuzzer sees its branches; and a read past the end of the
buffer is an IndexError here where compiled code would read silently out of bounds.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NUMBA_DISABLE_JIT", "1")  # before numba is imported

import _common
import atheris

with _common.instrument():
    from sorter.config import ConfigError
    from sorter.manifest import Manifest, parse_manifest
    from sorter.replay import read_scans

DESTINATIONS = ["CASABLANCA", "RABAT", "Zoné"]
FOLDER = Path(tempfile.mkdtemp(prefix="sorterd-atheris-"))
SCANS = FOLDER / "scans.csv"


def manifest(data: bytes) -> None:
    part, report = parse_manifest(data, "fuzz.csv", DESTINATIONS)
    if report.rows != part.rows or report.lines > data.count(b"\n") + 1:
        raise AssertionError(f"counts: {report}")
    if part.rows:
        m = Manifest([part], [report], DESTINATIONS)
        key = part.keys[0]
        barcode = bytes(key[key != 0]).decode("ascii")
        if m.find(barcode) < 0:
            raise AssertionError(f"kept row {barcode!r} not found")


def replay(data: bytes) -> None:
    SCANS.write_bytes(data)
    try:
        for row in read_scans(SCANS, "Africa/Casablanca"):
            if not -1 <= row.minute_of_day < 1440:
                raise AssertionError(f"minute {row.minute_of_day}")
    except ConfigError:
        pass


def test_one_input(data: bytes) -> None:
    if not data:
        return
    (manifest if data[0] % 2 == 0 else replay)(data[1:])


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
