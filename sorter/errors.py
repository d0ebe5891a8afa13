"""The one exception base of sorterd.

Every error sorterd raises on purpose is a `SorterdError`, so the command line can tell
"the user's input or the line is wrong" (a clear message, no traceback) from a bug (a
traceback). Errors that are timeouts are also `TimeoutError`, so `except TimeoutError`
around an await catches asyncio's and ours alike. Each package defines its own subclasses
next to the code that raises them (ConfigError in sorter.config, PlcError in drivers.plc).
"""

from __future__ import annotations

__all__ = ["SorterdError", "SorterdTimeoutError"]


class SorterdError(Exception):
    """Base of every error sorterd raises on purpose."""


class SorterdTimeoutError(SorterdError, TimeoutError):
    """A device or service did not answer in time."""
