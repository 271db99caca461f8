"""The capture schema's migrations (Alembic), run from code: no alembic.ini needed.

For the CLI: ``gateway db upgrade --config FILE`` calls ``upgrade(settings.capture.database_url)``;
the gateway refuses to start when ``Store.check_schema`` finds ``current(url) != head()``.
``upgrade``, ``current`` and ``downgrade`` run their own event loop: call them from synchronous
code (a CLI), or use the ``*_async`` forms inside a running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from capture.engine import create_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for the capture migrations, e.g. for ``alembic.command.revision``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    return config


def head() -> str:
    """The revision this code needs."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None, "capture/migrations/versions holds no revision"
    return revision


def known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def revision_of(connection: AsyncConnection) -> str | None:
    """The revision the database behind ``connection`` is at; None when never migrated."""
    return await connection.run_sync(_current)


MIGRATION_LOCK = 0x6761_7465_7761_79
"""PostgreSQL advisory lock key held while migrating: several replicas or workers starting on
a fresh database migrate one after the other (the later ones find it at head)."""


async def _run(engine: AsyncEngine, action: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)

    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        await connection.run_sync(run)


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite") or "///" not in url:
        return None
    name = url.split("///", 1)[1].split("?", 1)[0]
    return None if name in ("", ":memory:") else Path(name)


@contextlib.asynccontextmanager
async def _sqlite_lock(url: str) -> AsyncIterator[None]:
    """An exclusive lock on a file beside a SQLite database while it is migrated (SQLite runs
    DDL outside transactions, so two processes creating the tables at once would collide)."""
    path = _sqlite_file(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = await asyncio.to_thread(Path(f"{path}.migrate-lock").open, "a+b")
    try:
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Migrate to ``revision``; safe when several processes start on a fresh database at once."""
    async with _sqlite_lock(url):
        engine = create_engine(url)
        try:
            await _run(engine, "upgrade", revision)
        finally:
            await engine.dispose()


async def downgrade_async(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        await _run(engine, "downgrade", revision)
    finally:
        await engine.dispose()


async def current_async(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await revision_of(connection)
    finally:
        await engine.dispose()


def _no_running_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"capture.migrate.{name}() runs its own event loop: await {name}_async()")


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (the newest by default); idempotent.

    Creates a SQLite file (and its directory) when there is none yet.
    """
    _no_running_loop("upgrade")
    asyncio.run(upgrade_async(url, revision))


def downgrade(url: str, revision: str) -> None:
    """Migrate back to ``revision`` (``base`` drops the capture tables)."""
    _no_running_loop("downgrade")
    asyncio.run(downgrade_async(url, revision))


def current(url: str) -> str | None:
    """The revision the database is at; None for a database without capture tables."""
    _no_running_loop("current")
    return asyncio.run(current_async(url))
