"""Alembic environment for the capture schema.

Run through ``capture.migrate``, which hands over an open connection in
``config.attributes["connection"]``. Also works from the alembic command line with a URL in
``config.attributes["url"]`` or ``sqlalchemy.url`` (aiosqlite and asyncpg alike), and offline
(``--sql``) to print the SQL.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from capture.engine import create_engine
from capture.schema import metadata

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass one to capture.migrate or set sqlalchemy.url")
    return str(url)


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _migrate_url(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate)
    finally:
        await engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
    else:
        asyncio.run(_migrate_url(_url()))


main()
