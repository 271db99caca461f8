"""Databases for the capture tests: a SQLite file per test, and a PostgreSQL database per session
on the server at ``CAPTURE_TEST_POSTGRES_URL`` (default: the local one, database ``test``),
named ``capture_test_<random>`` for the session (emptied before each test) and dropped at
its end, so parallel runs never meet.
PostgreSQL tests are skipped, saying why, only when that server cannot be reached."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from capture.migrate import upgrade

POSTGRES_URL = os.environ.get(
    "CAPTURE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")

_SESSION = secrets.token_hex(3)


async def _admin(url: URL, *statements: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 3})
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> URL:
    """The server's URL; skips the test when PostgreSQL cannot be reached."""
    url = make_url(POSTGRES_URL)
    try:
        asyncio.run(_admin(url, "SELECT 1"))
    except Exception as exc:
        pytest.skip(f"PostgreSQL is not reachable at {url!r}: {type(exc).__name__}: {exc}")
    return url


@pytest.fixture(scope="session")
def postgres_database(postgres_server: URL) -> Iterator[URL]:
    """This session's own database, dropped at the end."""
    name = f"capture_test_{_SESSION}"
    asyncio.run(_admin(postgres_server, f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_server.set(database=name)
    finally:
        asyncio.run(_admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(postgres_database: URL) -> str:
    """The session's database, emptied for this test (a fresh ``public`` schema: much faster
    than a database per test, which costs PostgreSQL a checkpoint to drop)."""
    asyncio.run(
        _admin(
            postgres_database,
            "SET lock_timeout = '5s'",
            "DROP SCHEMA IF EXISTS public CASCADE",
            "CREATE SCHEMA public",
        )
    )
    return postgres_database.render_as_string(hide_password=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file that does not exist yet (in a directory that does not either)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'capture.db'}"


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest) -> str:
    """An empty database, on each backend in turn."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def database_url(empty_url: str) -> str:
    """A database migrated to head, on each backend in turn."""
    upgrade(empty_url)
    return empty_url
