"""Registered students and their lineage (the ``students`` table): written by
``gateway register``, read by the dashboard and ``gateway eval``.

A row says which model serves a (route, variant) since when, and what made it: the backend and
job, the base model, the student it continued from, and ``lineage`` (the export's manifest and
file hashes, the hyperparameters, the price it was registered with).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.schema import NAME_LENGTH, students


def _clip(value: Any, length: int = NAME_LENGTH) -> str | None:
    return None if value is None else str(value)[:length]


async def record_student(
    engine: AsyncEngine,
    *,
    route: str,
    variant: str,
    model: str,
    provider: str | None = None,
    backend: str | None = None,
    base_model: str | None = None,
    parent_model: str | None = None,
    job_id: str | None = None,
    lineage: dict[str, Any] | None = None,
    created_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """Store one registration; the row as stored."""
    row = {
        "id": uuid.uuid4().hex,
        "created_at": created_at or dt.datetime.now(dt.UTC),
        "route": _clip(route),
        "variant": _clip(variant),
        "model": _clip(model),
        "provider": _clip(provider),
        "backend": _clip(backend, 40),
        "base_model": _clip(base_model),
        "parent_model": _clip(parent_model),
        "job_id": _clip(job_id),
        "lineage": lineage,
    }
    async with engine.begin() as connection:
        await connection.execute(students.insert().values(**row))
    return row


async def list_students(engine: AsyncEngine, route: str | None = None) -> list[dict[str, Any]]:
    """Every registration, newest first (of one route when given)."""
    query = sa.select(students).order_by(students.c.created_at.desc())
    if route is not None:
        query = query.where(students.c.route == route)
    async with engine.connect() as connection:
        result = await connection.execute(query)
        return [dict(row._mapping) for row in result]


async def current_student(engine: AsyncEngine, route: str, variant: str) -> dict[str, Any] | None:
    """The newest registration of a (route, variant), or None."""
    query = (
        sa.select(students)
        .where(students.c.route == route, students.c.variant == variant)
        .order_by(students.c.created_at.desc())
        .limit(1)
    )
    async with engine.connect() as connection:
        row = (await connection.execute(query)).first()
    return dict(row._mapping) if row is not None else None
