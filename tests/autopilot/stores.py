"""Migrated capture databases for the autopilot's tests (SQLite and PostgreSQL), and rows
written straight into them."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.migrate import upgrade
from capture.schema import calls, feedback, judgements
from tests.capture_support import BACKENDS, Backend, open_backend

T0 = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(params=BACKENDS, scope="module")
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    with open_backend(
        request.param, tmp_path_factory.mktemp("autopilot"), request.module.__name__
    ) as b:
        yield b


@pytest.fixture
def database_url(backend: Backend) -> str:
    """A fresh database migrated to head, on each backend in turn."""
    url = backend.new_url()
    upgrade(url)
    return url


def answer(
    text: str | None = "Paris is the capital of France.", finish: str = "stop"
) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        ],
    }


def call_row(
    *,
    at: dt.datetime,
    variant: str,
    route: str = "support",
    status: int = 200,
    text: str | None = "Paris is the capital of France.",
    tags: dict[str, str] | None = None,
    cost: float | None = 0.001,
    total_ms: float = 100.0,
    ttft_ms: float | None = None,
    shadow_of: str | None = None,
    call_id: str | None = None,
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": call_id or uuid.uuid4().hex,
        "created_at": at,
        "endpoint": "chat",
        "route": route,
        "variant": variant,
        "request": request
        or {
            "model": route,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
        },
        "response": answer(text) if status == 200 else {"error": {"message": "upstream failed"}},
        "status": status,
        "finish_reason": "stop" if status == 200 else None,
        "cost_usd": cost,
        "total_ms": total_ms,
        "ttft_ms": ttft_ms,
        "overhead_ms": 1.0,
        "tags": tags or {},
        "stream": ttft_ms is not None,
        "shadow_of": shadow_of,
        "cache_hit": False,
        # every row has every key: an executemany takes its columns from the first row
        "dialect": None,
        "upstream_api": None,
        "normalized": None,
        "content_refs": None,
    }


async def insert_calls(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as connection:
        await connection.execute(calls.insert(), rows)


async def insert_feedback(
    engine: AsyncEngine, request_id: str, score: float, at: dt.datetime
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            feedback.insert().values(request_id=request_id, score=score, created_at=at)
        )


async def insert_judgement(
    engine: AsyncEngine,
    verdict: str | None,
    at: dt.datetime,
    slice: str = "*",
    route: str = "support",
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            judgements.insert().values(
                created_at=at, route=route, slice=slice, incumbent_call=uuid.uuid4().hex,
                candidate_call=uuid.uuid4().hex, incumbent="teacher", candidate="student",
                verdict=verdict, judge_calls=[], checks={}, reason="test",
            )
        )  # fmt: skip


async def count(engine: AsyncEngine, query: sa.Select[Any]) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())
