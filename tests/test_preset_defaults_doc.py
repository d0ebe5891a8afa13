"""The telegram presets' defaults, held to docs/scanners.md.

The simulated scanners have their own encoder (simulators/telegrams.py) but take each
preset's framing from the preset records in sorter/telegram_options.py, the same records
the daemon's decoder resolves: a wrong default would be on both sides of every end-to-end
test. This test reads the default tables of docs/scanners.md (`| key | default |` under each
preset's heading) and checks the records against them, so a wrong default fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sorter.telegram_options import PRESET_DEFAULTS

DOC = Path(__file__).resolve().parent.parent / "docs" / "scanners.md"
HEADING = re.compile(r"^## `(\w+)`")
ROW = re.compile(r"^\| (`[^|]+`) \| (.+) \|$")
TICKED = re.compile(r"`([^`]*)`")


def _value(text: str) -> object:
    """A default as the document writes it: a JSON string, or true/false."""
    if text in ("true", "false"):
        return text == "true"
    value: object = json.loads(text)
    return value


def _documented() -> dict[str, dict[str, object]]:
    tables: dict[str, dict[str, object]] = {}
    preset = None
    in_defaults = False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if heading := HEADING.match(line):
            preset, in_defaults = heading.group(1), False
        elif line.startswith("| key | default |"):
            in_defaults = preset is not None
        elif in_defaults and (row := ROW.match(line)) and preset is not None:
            keys = TICKED.findall(row.group(1))
            values = TICKED.findall(row.group(2))[: len(keys)]
            tables.setdefault(preset, {}).update(zip(keys, map(_value, values), strict=True))
        elif not line.startswith("|"):
            in_defaults = False
    return tables


DOCUMENTED = _documented()


def test_the_document_has_a_default_table_for_each_configurable_preset() -> None:
    assert set(DOCUMENTED) >= {"sick", "cognex", "datalogic", "lines"}
    assert all(len(table) >= 4 for table in DOCUMENTED.values())


@pytest.mark.parametrize("preset", sorted(DOCUMENTED))
def test_preset_defaults_are_the_documented_ones(preset: str) -> None:
    options = PRESET_DEFAULTS[preset]
    for key, documented in DOCUMENTED[preset].items():
        assert getattr(options, key) == documented, f"{preset}.{key}"
