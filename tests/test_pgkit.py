"""The test PostgreSQL server itself: reachable with the role's password, refusing others."""

from __future__ import annotations

import psycopg
import pytest

from tests.pgkit import ROLE_PASSWORD

pytestmark = pytest.mark.requires("postgresql")


def test_database_takes_the_role_password_only(archive_db: str) -> None:
    with psycopg.connect(archive_db, password=ROLE_PASSWORD) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
    assert row is not None
    assert row[0] == "sorterd"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(archive_db, password="not-the-password")
