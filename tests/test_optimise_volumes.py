"""VOLUMES.csv (contract section 11): every problem named with file, line and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from sorter.config import ConfigError
from sorter.optimise import load_volumes, parse_volumes

NAMES = ("CASA", "RABAT", "FR-PARIS")


def test_counts_by_destination_and_hour_missing_ones_are_zero() -> None:
    volumes = parse_volumes(
        "destination,hour,items\nCASA,0,10\nCASA,23,5\nRABAT,7,0\n\n", "v.csv", NAMES
    )
    assert volumes.of("CASA")[0] == 10
    assert volumes.of("CASA")[23] == 5
    assert sum(volumes.of("CASA")) == 15
    assert volumes.of("FR-PARIS") == (0,) * 24
    assert volumes.total == 15


def test_header_is_case_and_blank_tolerant_and_a_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_text("\ufeffDestination, Hour ,ITEMS\r\nCASA, 07 ,12\r\n", encoding="utf-8")
    assert load_volumes(path, NAMES).of("CASA")[7] == 12


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("MARS,3,10", "unknown destination 'MARS'"),
        ("CASA,3,-4", "items '-4' is negative"),
        ("CASA,3,4.5", "items '4.5' is not a whole number"),
        ("CASA,3,lots", "items 'lots' is not a whole number"),
        ("CASA,3,", "items '' is not a whole number"),
        ("CASA,24,4", "hour '24': a whole hour 0-23"),
        ("CASA,-1,4", "hour '-1'"),
        ("CASA,7.5,4", "hour '7.5'"),
        ("CASA,3", "2 fields, expected 3"),
        ("CASA,3,4,5", "4 fields, expected 3"),
        ("CASA,3,9999999999", "more than 1,000,000 in an hour"),
    ],
)
def test_a_bad_row_names_file_line_and_value(row: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_volumes(f"destination,hour,items\nCASA,2,1\n{row}\n", "v.csv", NAMES)
    (problem,) = info.value.problems
    assert (problem.file, problem.key) == ("v.csv", "line 3")
    assert message in problem.message
    assert str(problem).startswith("v.csv: line 3: ")


def test_a_duplicate_names_both_lines() -> None:
    with pytest.raises(ConfigError) as info:
        parse_volumes("destination,hour,items\nCASA,2,1\nRABAT,2,1\nCASA,2,3\n", "v.csv", NAMES)
    (problem,) = info.value.problems
    assert problem.key == "line 4"
    assert "CASA hour 2 is given twice (first on line 2)" in problem.message


def test_every_problem_is_listed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_volumes("destination,hour,items\nX,1,1\nCASA,99,-1\n", "v.csv", NAMES)
    assert [p.key for p in info.value.problems] == ["line 2", "line 3", "line 3"]


def test_a_wholly_wrong_file_is_cut_short() -> None:
    text = "destination,hour,items\n" + "X,1,1\n" * 500
    with pytest.raises(ConfigError) as info:
        parse_volumes(text, "v.csv", NAMES)
    assert len(info.value.problems) == 51
    assert "450 more problem(s)" in info.value.problems[-1].message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("dest,hour,items\nCASA,1,1\n", "expected destination,hour,items"),
        ("destination,items,hour\n", "expected destination,hour,items"),
    ],
)
def test_a_bad_header(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_volumes(text, "v.csv", NAMES)
    (problem,) = info.value.problems
    assert problem.key == "line 1"
    assert message in problem.message


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_volumes(tmp_path / "missing.csv", NAMES)
    binary = tmp_path / "v.csv"
    binary.write_bytes(b"destination,hour,items\n\xff\xfe,1,1\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_volumes(binary, NAMES)
