"""atheris: MQTT command topic suffix and payload (P/cmd/...). First two bytes: the length
of the suffix. Only CommandError may come out."""

from __future__ import annotations

import contextlib
import sys

import _common
import atheris

with _common.instrument():
    from sorter.commands import CommandError, parse_command


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    n = int.from_bytes(data[:2], "big") % 64
    suffix = data[2 : 2 + n].decode("utf-8", "replace")
    with contextlib.suppress(CommandError):
        parse_command(suffix, data[2 + n :])


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
