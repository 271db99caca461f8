"""The schema revision the gateway checks at start, read without Alembic, agrees with Alembic's."""

from __future__ import annotations

import asyncio

import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from capture.engine import create_engine
from capture.migrate import alembic_config, downgrade, upgrade
from capture.revision import HEAD_REVISION, SeveralHeads, revision_of


def test_the_head_revision_is_the_newest_migration() -> None:
    # A new migration in capture/migrations/versions moves HEAD_REVISION with it.
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def _both(url: str, *statements: str) -> tuple[str | None, str | None]:
    """(ours, Alembic's) reading of the database at ``url``, after ``statements``."""

    async def read() -> tuple[str | None, str | None]:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                for statement in statements:
                    await connection.execute(text(statement))
            async with engine.connect() as connection:
                ours = await revision_of(connection)
                theirs = await connection.run_sync(
                    lambda c: MigrationContext.configure(c).get_current_revision()
                )
                return ours, theirs
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_a_database_revision_reads_as_alembic_reads_it(empty_url: str) -> None:
    url = empty_url
    upgrade(url, "0001")  # SQLite: creates the file
    downgrade(url, "base")  # the version table, empty
    assert _both(url) == (None, None)
    upgrade(url)
    assert _both(url) == (HEAD_REVISION, HEAD_REVISION)
    downgrade(url, "0009")
    assert _both(url) == ("0009", "0009")
    assert _both(url, "UPDATE alembic_version SET version_num = '9999'") == ("9999", "9999")
    assert _both(url, "DROP TABLE alembic_version") == (None, None)


def test_no_version_table_is_no_revision(sqlite_url: str) -> None:
    upgrade(sqlite_url, "0001")
    assert _both(sqlite_url, "DROP TABLE alembic_version") == (None, None)


def test_several_revisions_are_refused(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    with pytest.raises(SeveralHeads):
        _both(sqlite_url, "INSERT INTO alembic_version VALUES ('0009')")
