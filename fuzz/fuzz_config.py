"""atheris: site config and sort plan files from arbitrary bytes (first byte picks which).

Only ConfigError may come out; a plan that loads must compile for the kernel. Seed the
corpus with config/demo/*.toml: random bytes rarely get past the TOML parser.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import _common
import atheris

with _common.instrument():
    from sorter.config import ConfigError, load_site
    from sorter.plan import compile_plan, load_plan

FOLDER = Path(tempfile.mkdtemp(prefix="sorterd-atheris-"))
FILE = FOLDER / "config.toml"


def test_one_input(data: bytes) -> None:
    if not data:
        return
    FILE.write_bytes(data[1:])
    try:
        if data[0] % 2 == 0:
            load_site(FILE, env={})
        else:
            compile_plan(load_plan(FILE))
    except ConfigError as exc:
        if not exc.problems:
            raise AssertionError("ConfigError without problems") from exc


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
