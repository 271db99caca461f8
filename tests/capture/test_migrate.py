from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Connection, MetaData, Table, insert, inspect, text

from capture.config import CaptureSettings
from capture.engine import create_engine
from capture.errors import SchemaOutOfDate, SchemaTooNew
from capture.migrate import current, downgrade, head, upgrade, upgrade_async
from capture.prepare import Preparer
from capture.schema import calls, metadata
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
PARTITION = re.compile(r"(calls|feedback)_(p\d{8}|default)")


def test_migrations_create_exactly_the_tables_of_schema_py(database_url: str) -> None:
    def outside_schema_py(obj: object, name: str | None, kind: str, *_: object) -> bool:
        # PostgreSQL-only objects of migration 0003 (the dashboard's), not in schema.py, and
        # the time partitions of migration 0009 (tables of their own to the inspector).
        if kind == "table" and (name or "").startswith("dashboard_"):
            return False
        if kind == "table" and PARTITION.fullmatch(name or ""):
            return False
        table = getattr(getattr(obj, "table", None), "name", "")
        if kind == "index" and PARTITION.fullmatch(table):
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
        "ix_feedback_created_at",
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


# --- 0004: the dialect columns ------------------------------------------------------------------

DIALECT_COLUMNS = ("dialect", "upstream_api", "cache_write_tokens", "normalized")


def test_head_is_0010() -> None:
    assert head() == "0010"


def _columns(url: str) -> set[str]:
    async def run() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: {c["name"] for c in inspect(sync).get_columns("calls")}
                )
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_0004_adds_the_dialect_columns_and_keeps_the_rows_before_it(empty_url: str) -> None:
    from tests.capture.chat_view import simple_chat_view
    from tests.capture.factories import make_anthropic_record, make_record

    upgrade(empty_url, "0003")
    assert _columns(empty_url).isdisjoint(DIALECT_COLUMNS)
    old = Preparer(CaptureSettings(content_store=False)).prepare(make_record()).row
    for column in DIALECT_COLUMNS:
        del old[column]
    calls_0003 = Table(
        "calls", MetaData(), *(Column(c.name, c.type) for c in calls.c if c.name in old)
    )

    async def write_old() -> None:
        store = await Store.connect(empty_url)
        try:
            async with store.engine.begin() as connection:
                await connection.execute(insert(calls_0003), [old])
            await store.add_feedback(old["id"], 1.0, "good")
        finally:
            await store.close()

    asyncio.run(write_old())

    upgrade(empty_url)
    assert current(empty_url) == head()
    assert set(DIALECT_COLUMNS) <= _columns(empty_url)
    new = Preparer(CaptureSettings(), simple_chat_view).prepare(make_anthropic_record()).row

    async def write_new_read_both() -> tuple[Any, Any, int]:
        store = await Store.connect(empty_url)
        try:
            await store.insert_calls([new])
            return (
                await store.get_call(old["id"]),
                await store.get_call(new["id"]),
                len(await store.feedback_for(old["id"])),
            )
        finally:
            await store.close()

    before, after, scores = asyncio.run(write_new_read_both())
    assert before is not None and after is not None and scores == 1
    assert {c: before[c] for c in DIALECT_COLUMNS} == dict.fromkeys(DIALECT_COLUMNS)
    assert before["request"] == old["request"] and before["cost_usd"] == old["cost_usd"]
    assert (after["dialect"], after["upstream_api"]) == ("anthropic", "anthropic")
    assert after["cache_write_tokens"] == 0
    assert after["normalized"] == new["normalized"] and after["normalized"]["request"]

    downgrade(empty_url, "0003")  # drops the columns, keeps the rows and their feedback
    assert _columns(empty_url).isdisjoint(DIALECT_COLUMNS)

    async def count() -> tuple[int, int]:
        engine = create_engine(empty_url)
        try:
            async with engine.connect() as connection:
                calls_n = await connection.scalar(text("SELECT count(*) FROM calls"))
                feedback_n = await connection.scalar(text("SELECT count(*) FROM feedback"))
                return int(calls_n or 0), int(feedback_n or 0)
        finally:
            await engine.dispose()

    assert asyncio.run(count()) == (2, 1)
    upgrade(empty_url)
    assert current(empty_url) == head()
