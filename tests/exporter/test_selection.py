"""Selection: keyset pages and every filter, on SQLite and (when reachable) PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from capture.migrate import upgrade
from capture.store import Store
from exporter.database import open_store
from exporter.filters import Filters, parse_tags, parse_time
from exporter.selection import count, stream_pages
from tests.exporter.factory import START, chat_call, store_calls

PG_ADMIN = os.environ.get(
    "EXPORTER_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


FIRST = f"aa{0:030x}"


def rows() -> list[dict[str, object]]:
    same_moment = [chat_call(f"q{i}", "a", minutes=1, call_id=f"aa{i:030x}") for i in range(7)]
    return [
        *same_moment,
        chat_call("other route", "a", route="billing", minutes=2),
        chat_call("student", "a", variant="student", model="ft:gpt-4o-mini:acme::x", minutes=3),
        chat_call("failed", "a", status=500, minutes=4),
        chat_call("cut", "a", finish_reason="length", minutes=5),
        chat_call("tagged", "a", tags={"team": "eu", "tier": "gold"}, minutes=6),
        chat_call("shadow copy", "a", shadow_of=FIRST, variant="student", minutes=7),
        chat_call("late", "a", minutes=60 * 24 * 3),
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield store_calls(tmp_path / "c.db", rows(), feedback=[(FIRST, 1.0)])
        return
    name = f"exporter_test_{os.getpid()}"

    async def run(statement: str) -> None:
        admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        try:
            async with admin.connect() as connection:
                await connection.execute(text(statement))
        finally:
            await admin.dispose()

    try:
        asyncio.run(run(f"DROP DATABASE IF EXISTS {name}"))
        asyncio.run(run(f"CREATE DATABASE {name}"))
    except Exception as exc:  # no PostgreSQL here
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    target = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    upgrade(target)

    async def fill() -> None:
        store = await Store.connect(target)
        await store.insert_calls(rows())
        await store.add_feedback(FIRST, 1.0)
        await store.close()

    asyncio.run(fill())
    yield target
    asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def select(url: str, filters: Filters, page_size: int = 3, limit: int | None = None) -> list[str]:
    async def go() -> list[str]:
        prompts: list[str] = []
        async with open_store(url) as store:
            async for page in stream_pages(store.engine, filters, page_size, limit):
                assert len(page) <= page_size
                prompts += [row["request"]["messages"][-1]["content"] for row in page]
        return prompts

    return asyncio.run(go())


def test_keyset_pages_read_every_row_once_even_at_one_timestamp(url: str) -> None:
    selected = select(url, Filters(route="support"), page_size=3)
    assert selected == [f"q{i}" for i in range(7)] + ["student", "tagged", "late"]
    assert select(url, Filters(route="support"), page_size=2, limit=5) == [
        f"q{i}" for i in range(5)
    ]


def test_filters(url: str) -> None:
    assert select(url, Filters(route="billing")) == ["other route"]
    assert select(url, Filters(variant="student")) == ["student"]
    assert select(url, Filters(upstream_model="ft:gpt-4o-mini:acme::x")) == ["student"]
    assert select(url, Filters(tags=parse_tags(["team=eu,tier=gold"]))) == ["tagged"]
    assert select(url, Filters(tags={"team": "us"})) == []
    assert select(url, Filters(min_feedback=0.5)) == ["q0"]
    assert "cut" in select(url, Filters(finish_reasons=()))
    assert "failed" not in select(url, Filters(finish_reasons=()))
    assert select(url, Filters(shadow="only")) == ["shadow copy"]
    assert "shadow copy" in select(url, Filters(shadow="include"))
    window = Filters(since=START + dt.timedelta(minutes=2), until=START + dt.timedelta(days=1))
    assert select(url, window) == ["other route", "student", "tagged"]
    assert select(url, Filters(min_tokens=31)) == []
    assert len(select(url, Filters(max_tokens=30))) == 11

    async def counted() -> int:
        async with open_store(url) as store:
            return await count(store.engine, Filters())

    assert asyncio.run(counted()) == 11


def test_times_parse_as_durations_or_dates() -> None:
    now = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    assert parse_time("7d", now) == now - dt.timedelta(days=7)
    assert parse_time("2026-11-01", now) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
