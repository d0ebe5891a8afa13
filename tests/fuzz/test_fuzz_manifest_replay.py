"""Manifest rows (the numba CSV parser) and replay scans (SCANS.csv), from arbitrary bytes.

Manifests arrive from shippers; scans files from wherever a recording was made. Properties:
the manifest parser never raises, counts no more rows than lines, and every row it keeps
is found again by its barcode; the replay reader yields rows or raises ConfigError.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sorter.config import ConfigError
from sorter.manifest import KEY_BYTES, Manifest, parse_manifest, parse_stream
from sorter.replay import read_scans
from tests.fuzz.profile import fuzz

DESTINATIONS = ["CASABLANCA", "RABAT", "Zoné"]

HEADERS = [
    b"barcode,destination", b"barcode,postcode,country,service,customs,weight_g",
    b'"barcode","destination",extra', b"\xef\xbb\xbfBARCODE , Destination", b"barcode",
    b"destination,barcode,barcode", b"", b"\xff",
]  # fmt: skip
CELLS = [
    b"", b"1Z999AA10123456784", b"EE123456789MA", b"A" * 32, b"A" * 33, b"CASABLANCA",
    b"RABAT", b"Zon\xc3\xa9", b"20000", b"MA", b"ma", b"M", b"EE", b"hold", b"CLEAR", b"x",
    b"12", b"-1", b"4194303", b"99999999999999999999", b'"', b'"a,b"', b'"a""b"', b'"open',
    b" ", b"\t", b"\x00", b"\xff", b"\r",
]  # fmt: skip
rows = st.lists(st.one_of(st.sampled_from(CELLS), st.binary(max_size=6)), max_size=8).map(b",".join)
manifests = st.builds(
    lambda header, body, end: header + b"\n" + b"\n".join(body) + end,
    st.one_of(st.sampled_from(HEADERS), st.binary(max_size=20)),
    st.lists(rows, max_size=30),
    st.sampled_from([b"", b"\n", b"\r\n"]),
)


@fuzz()
@given(data=st.one_of(manifests, st.binary(max_size=400)))
@example(data=b"barcode,destination\n" + b'"' * 100)
@example(data=b"barcode,destination\nA,RABAT")
@example(data=b"barcode,destination\r\n\r\n\r\n")
def test_manifest_parser_never_raises(data: bytes) -> None:
    part, report = parse_manifest(data, "fuzz.csv", DESTINATIONS)
    assert report.rows == part.rows
    assert report.rows + report.bad_rows <= max(report.lines, 0) + 1
    assert report.lines <= data.count(b"\n") + 1
    assert len(report.problems) <= 100
    assert part.keys.shape == (part.rows, KEY_BYTES)
    if part.rows:
        keys = part.keys
        nonzero = keys[keys != 0]
        assert ((nonzero >= 0x21) & (nonzero <= 0x7E)).all()  # printable ASCII only
        manifest = Manifest([part], [report], DESTINATIONS)
        for i in range(min(part.rows, 5)):
            barcode = bytes(keys[i][keys[i] != 0]).decode("ascii")
            found = manifest.find(barcode)
            assert found >= 0
            assert bytes(manifest.part.keys[found]) == bytes(keys[i])


@fuzz()
@given(
    data=st.one_of(manifests, st.binary(max_size=400)),
    chunk=st.integers(1, 12),
    hint=st.sampled_from([0.0, 0.3, 1.0, 5.0]),
)
@example(data=b"barcode,destination\r\nA,RABAT\r\nB,RABAT\r\n", chunk=1, hint=0.0)
@example(data=b'\xef\xbb\xbfbarcode,postcode\n"A\n""B",1\n\nC,2', chunk=3, hint=1.0)
@example(data=b"barcode,destination\n" + b'"' * 40 + b"\nA,RABAT\n", chunk=5, hint=0.3)
def test_manifest_parsed_in_chunks_as_whole(data: bytes, chunk: int, hint: float) -> None:
    """Files are parsed a chunk at a time: a record cut anywhere, even a quoted line break
    or a CR LF, must come out as from the whole bytes; and whatever size the rows' arrays
    are first given from the file's stated size (too small, too large), the same rows."""
    whole, expected = parse_manifest(data, "fuzz.csv", DESTINATIONS)
    part, report = parse_stream(
        io.BytesIO(data),
        "fuzz.csv",
        DESTINATIONS,
        chunk_bytes=chunk,
        size_hint=int(hint * len(data)),
    )
    assert report == expected
    assert np.array_equal(part.keys, whole.keys)
    assert np.array_equal(part.postcode, whole.postcode)
    assert np.array_equal(part.packed, whole.packed)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sorterd-fuzz-") as name:
        yield Path(name)


SCAN_HEADERS = [
    b"tracking_id,codes", b"tracking_id,codes,time", b"tracking_id,codes,recirculations",
    b"tracking_id,codes,length_mm,width_mm,height_mm,weight_g,recirculations,time",
    b"codes", b"\xef\xbb\xbftracking_id,codes,time", b"",
]  # fmt: skip
SCAN_CELLS = [
    b"", b"1", b"42", b"NOREAD", b"EE123456789MA;1Z999AA10123456784", b";;", b"12:30",
    b"1:", b":", b"99:99", b"2026-11-26T05:27:17Z", b"0001-01-01T00:00:00+14:00",
    b"9999-12-31T23:59:59-14:00", b"2026-13-01", b"-5", b"9" * 30, b'"', b'"a\nb"', b"\xff",
    b"\xc3\xa9", b"\x00",
]  # fmt: skip
scan_rows = st.lists(st.one_of(st.sampled_from(SCAN_CELLS), st.binary(max_size=6)), max_size=8).map(
    b",".join
)
scan_files = st.builds(
    lambda header, body: header + b"\n" + b"\n".join(body),
    st.one_of(st.sampled_from(SCAN_HEADERS), st.binary(max_size=20)),
    st.lists(scan_rows, max_size=20),
)


@fuzz()
@given(
    data=st.one_of(scan_files, st.binary(max_size=300)),
    tz=st.sampled_from([None, "UTC", "Africa/Casablanca"]),
)
@example(data=b"tracking_id,codes,time\n1,A,0001-01-01T00:00:00+14:00\n", tz="Africa/Casablanca")
@example(data=b"tracking_id,codes,time\n1,A,9999-12-31T23:59:59-14:00\n", tz="Africa/Casablanca")
@example(data=b"tracking_id,codes,time\n1,A,99:99\n2,B,-1:00\n", tz=None)
def test_replay_scans_read_or_raise_config_error(folder: Path, data: bytes, tz: str | None) -> None:
    path = folder / "scans.csv"
    path.write_bytes(data)
    try:
        got = list(read_scans(path, tz))
    except ConfigError as exc:
        assert exc.problems  # noqa: PT017
        return
    for row in got:
        assert row.line >= 2
        assert -1 <= row.minute_of_day < 24 * 60
        assert "NOREAD" not in row.codes or len(row.codes) > 1
