"""`python -m benchmarks [NAME ...]`: run benchmarks and print their figures.

NAME is one of: decide, replay, manifest, journal, line. Without a name, all run.
"""

from __future__ import annotations

import gc
import importlib
import sys
import time

from benchmarks.common import machine

ALL = ("decide", "replay", "manifest", "journal", "line")


def main(argv: list[str]) -> int:
    names = argv or list(ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(ALL)}")
        return 2
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n== {name}")
        t0 = time.perf_counter()
        result = module.run()
        for line in module.report(result):
            print(line)
        print(f"({time.perf_counter() - t0:.0f} s)")
        # What one benchmark leaves (millions of objects) must not be collected during the
        # next one's timed part: the line benchmark once saw a 1 s pause from it.
        del result
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
