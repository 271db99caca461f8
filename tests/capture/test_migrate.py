from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from capture.engine import create_engine
from capture.errors import SchemaOutOfDate, SchemaTooNew
from capture.migrate import current, downgrade, head, upgrade, upgrade_async
from capture.schema import metadata
from capture.store import Store


def _check(url: str, config_path: str = "FILE") -> None:
    async def check() -> None:
        store = await Store.connect(url)
        try:
            await store.check_schema(config_path)
        finally:
            await store.close()

    asyncio.run(check())


def test_upgrade_an_empty_database_to_head(empty_url: str) -> None:
    assert current(empty_url) is None
    upgrade(empty_url)
    assert current(empty_url) == head()
    upgrade(empty_url)  # idempotent
    assert current(empty_url) == head()


def test_check_schema_names_the_command_until_the_database_is_upgraded(empty_url: str) -> None:
    with pytest.raises(SchemaOutOfDate) as raised:
        _check(empty_url, "config/gateway.yaml")
    message = str(raised.value)
    assert "run `gateway db upgrade --config config/gateway.yaml`" in message
    assert f"needs {head()}" in message
    assert "none (no capture tables yet)" in message
    upgrade(empty_url)
    _check(empty_url)


def test_a_database_behind_head_is_out_of_date(database_url: str) -> None:
    downgrade(database_url, "base")
    assert current(database_url) is None
    with pytest.raises(SchemaOutOfDate):
        _check(database_url)


def test_a_database_migrated_by_a_newer_gateway_says_so(database_url: str) -> None:
    async def bump() -> None:
        engine = create_engine(database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        finally:
            await engine.dispose()

    asyncio.run(bump())
    with pytest.raises(SchemaTooNew, match="revision 9999, which this code does not know"):
        _check(database_url)


DASHBOARD_INDEXES = {"ix_calls_dashboard", "ix_calls_errors"}


def test_migrations_create_exactly_the_tables_of_schema_py(database_url: str) -> None:
    def outside_schema_py(obj: object, name: str | None, kind: str, *_: object) -> bool:
        # PostgreSQL-only objects of migration 0003 (the dashboard's), not in schema.py.
        if kind == "table" and (name or "").startswith("dashboard_"):
            return False
        return not (kind == "index" and name in DASHBOARD_INDEXES)

    def compare(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": outside_schema_py}
        )
        diff: list[object] = compare_metadata(context, metadata)
        return diff

    def index_names(connection: Connection) -> set[str]:
        inspector = inspect(connection)
        return {ix["name"] or "" for t in ("calls", "feedback") for ix in inspector.get_indexes(t)}

    async def run() -> tuple[list[object], set[str]]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare), await connection.run_sync(index_names)
        finally:
            await engine.dispose()

    diff, indexes = asyncio.run(run())
    assert diff == []
    expected = {
        "ix_calls_created_at",
        "ix_calls_route_variant_created_at",
        "ix_calls_upstream_model_created_at",
        "ix_calls_shadow_of",
        "ix_feedback_request_id",
    }
    if database_url.startswith("postgresql"):
        expected |= DASHBOARD_INDEXES
    assert indexes == expected


def test_sqlite_file_and_directory_are_created_and_use_wal(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "gateway.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    assert path.exists()
    import sqlite3

    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_the_sync_functions_say_what_to_use_inside_an_event_loop(sqlite_url: str) -> None:
    async def inside() -> None:
        with pytest.raises(RuntimeError, match="await upgrade_async"):
            upgrade(sqlite_url)
        await upgrade_async(sqlite_url)

    asyncio.run(inside())
    assert current(sqlite_url) == head()


def test_the_migrations_ship_as_packages() -> None:
    root = Path(__file__).parents[2] / "capture" / "migrations"
    assert (root / "__init__.py").exists() and (root / "versions" / "__init__.py").exists()
