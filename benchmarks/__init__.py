"""Runnable benchmarks (`make bench`); results and method are recorded in BENCHMARKS.md."""

__all__: list[str] = []
