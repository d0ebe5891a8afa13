"""The archiver's database side (sorterd/archive.py): open and migrate, write a batch until
it commits however long the database is away, drop expired partitions.

An outage (the server down, the connection lost) is waited out: the batch is tried again
on a new connection with backoff, and the caller acknowledges nothing meanwhile. Any other
database error (rights taken away, a table dropped under us) is an ArchiveDbError: one
line, exit 1, nothing acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from drivers.archive_db import ArchiveDb, ArchiveDbError, connect, describe_error
from sorter.backoff import Backoff
from sorter.config import ArchiveSection

__all__ = ["Store"]

log = structlog.get_logger(__name__)

_OUTAGE = (psycopg.OperationalError, psycopg.InterfaceError)


class Store:
    def __init__(self, section: ArchiveSection) -> None:
        self.section = section
        self.db_errors = 0
        self._db: ArchiveDb | None = None

    def _fatal(self, exc: BaseException) -> ArchiveDbError:
        return ArchiveDbError(f"archive database: {describe_error(exc, self.section.password)}")

    async def open(self) -> tuple[int, list[str]]:
        """Connect, migrate, drop expired partitions: the schema version and what was
        dropped. Fatal errors here (a wrong password, no server) end the archiver."""
        section = self.section
        self._db = ArchiveDb(await connect(section.url, section.password))
        try:
            version = await self._db.migrate()
            dropped = await self._db.drop_expired(section.retention_days, dt.datetime.now(dt.UTC))
        except psycopg.Error as exc:
            await self.close()
            raise self._fatal(exc) from None
        return version, dropped

    async def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(psycopg.Error):
                await self._db.conn.close()

    async def write(
        self,
        rows: list[tuple[Any, ...]],
        give_up: Callable[[], bool],
        on_state: Callable[[str], None],
    ) -> int | None:
        """How many rows (the values of drivers.archive_rows.COLUMNS) were new; None when
        `give_up` said so while the database was away.
        `on_state` hears `database_down` and `online`."""
        backoff = Backoff(0.2, 5.0)
        while not give_up():
            assert self._db is not None
            try:
                new = await self._db.write(rows)
            except _OUTAGE as exc:
                self.db_errors += 1
                on_state("database_down")
                log.warning(
                    "archive database unavailable; rows wait, unacknowledged",
                    error=describe_error(exc, self.section.password),
                    rows=len(rows),
                )
                await asyncio.sleep(backoff.next_delay_s())
                await self._reconnect()
                continue
            except psycopg.Error as exc:
                raise self._fatal(exc) from None
            on_state("online")
            return new
        return None

    async def _reconnect(self) -> None:
        await self.close()
        try:
            conn = await connect(self.section.url, self.section.password)
        except ArchiveDbError as exc:
            log.warning("archive database reconnect failed", error=str(exc))
            return
        self._db = ArchiveDb(conn)

    async def retention(self) -> bool:
        """Drop expired partitions, then put one day of an archive older than the codes
        table into it (drivers/archive_db.py); whether more days wait for that. Postponed
        while the database is away."""
        assert self._db is not None
        try:
            dropped = await self._db.drop_expired(
                self.section.retention_days, dt.datetime.now(dt.UTC)
            )
            if dropped:
                log.info("expired partitions dropped", partitions=dropped)
            day = await self._db.backfill_day()
        except _OUTAGE as exc:
            log.warning("retention postponed", error=describe_error(exc, self.section.password))
            return False
        except psycopg.Error as exc:
            raise self._fatal(exc) from None
        if day is not None:
            log.info("codes of a day filled in", day=day.isoformat())
        return day is not None
