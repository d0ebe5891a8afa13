"""Logging: structlog JSON lines for journald and log shippers, readable lines on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog

__all__ = ["LEVELS", "setup_logging"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def setup_logging(
    level: str | None = None, stream: TextIO | None = None, json: bool | None = None
) -> None:
    """Configure structlog once per process. Level from SORTERD_LOG_LEVEL, default info."""
    out = stream or sys.stderr
    name = (level or os.environ.get("SORTERD_LOG_LEVEL", "info")).lower()
    numeric = LEVELS.get(name, logging.INFO)
    as_json = (not out.isatty()) if json is None else json
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library: keep their warnings, drop their chatter.
    logging.basicConfig(level=logging.WARNING, stream=out, format="%(name)s: %(message)s")
    for noisy in ("pymodbus", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
