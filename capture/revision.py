"""The capture schema's revision: the one this code needs, and the one a database is at.

Read at every start with capture on (``Store.check_schema``), so without Alembic: importing it
(with Mako and its migration machinery) cost every start ~85 ms and ~8 MiB that no call uses.
``HEAD_REVISION`` is written here by hand with each new migration; tests/capture/test_revision.py
checks it against Alembic's reading of ``capture/migrations/versions`` (and ``revision_of``
against Alembic's reading of a database), so a migration that forgets it fails the tests.
Migrating, and naming the revisions a database may be at, stay Alembic's (``capture.migrate``).
"""

from __future__ import annotations

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection

HEAD_REVISION = "0010"
"""The newest revision in capture/migrations/versions: the one this code needs."""

VERSION_TABLE = "alembic_version"
"""Where Alembic keeps a database's revision (its default: one row, ``version_num``)."""


class SeveralHeads(Exception):
    """The version table names more than one revision (never so for the capture schema)."""


def _read(connection: Connection) -> str | None:
    if not connection.dialect.has_table(connection, VERSION_TABLE):
        return None
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:
        raise SeveralHeads(f"{VERSION_TABLE} names several revisions: {', '.join(rows)}")
    return str(rows[0]) if rows else None


async def revision_of(connection: AsyncConnection) -> str | None:
    """The revision the database behind ``connection`` is at; None when never migrated."""
    return await connection.run_sync(_read)
