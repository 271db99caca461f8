"""Rollouts' states and decisions (the ``rollouts`` and ``rollout_decisions`` tables).

`RolloutTable` is the store the autopilot's controller saves through (its ``RolloutStore``
protocol): ``save`` writes a route's state and appends its decisions in one transaction, so a
restart never finds decisions without the state that followed them. SQLAlchemy Core, SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.schema import NAME_LENGTH, SLICE_LENGTH, rollout_decisions, rollouts

DECISION_FIELDS = ("slice", "action", "from_stage", "to_stage", "share", "reason", "evidence")
_ALL_STATES = sa.select(rollouts.c.route, rollouts.c.state).order_by(rollouts.c.route)
"""Built once, as the autopilot reads it every few seconds: a statement keeps its cache key."""


def _at(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


class RolloutTable:
    """Rollouts kept in the capture database; one per route."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def load(self, route: str) -> dict[str, Any] | None:
        query = sa.select(rollouts.c.state).where(rollouts.c.route == route[:NAME_LENGTH])
        async with self.engine.connect() as connection:
            state = (await connection.execute(query)).scalar_one_or_none()
        return dict(state) if state is not None else None

    async def save(
        self,
        route: str,
        state: dict[str, Any],
        status: str,
        decisions: Sequence[dict[str, Any]],
        now: dt.datetime | None = None,
    ) -> None:
        """Replace the route's state and append its decisions, at once."""
        now = now or dt.datetime.now(dt.UTC)
        route = route[:NAME_LENGTH]
        rows = [
            {
                "route": route,
                "at": _at(d.get("at", now)),
                "slice": str(d["slice"])[:SLICE_LENGTH],
                "action": str(d["action"])[:20],
                "from_stage": int(d["from_stage"]),
                "to_stage": int(d["to_stage"]),
                "share": float(d["share"]),
                "reason": str(d["reason"]),
                "evidence": d.get("evidence"),
            }
            for d in decisions
        ]
        async with self.engine.begin() as connection:
            updated = await connection.execute(
                rollouts.update()
                .where(rollouts.c.route == route)
                .values(state=state, status=status[:20], updated_at=now)
            )
            if updated.rowcount == 0:
                await connection.execute(
                    rollouts.insert().values(
                        route=route,
                        state=state,
                        status=status[:20],
                        created_at=now,
                        updated_at=now,
                    )
                )
            if rows:
                await connection.execute(rollout_decisions.insert(), rows)

    async def load_all(self) -> dict[str, dict[str, Any]]:
        """Every route's rollout state, by route."""
        async with self.engine.connect() as connection:
            return {r.route: dict(r.state) for r in await connection.execute(_ALL_STATES)}

    async def request_abort(
        self, route: str, reason: str, live: Sequence[str] = ("running", "promoted")
    ) -> bool:
        """Ask for the route's rollout to be aborted, with why (any replica may ask; the
        controller's holder acts on it at its next look). False when the route has no rollout
        whose status is one of ``live`` (a promoted rollout is still watched, so it can still
        be aborted)."""
        c = rollouts.c
        async with self.engine.begin() as connection:
            result = await connection.execute(
                rollouts.update()
                .where(c.route == route[:NAME_LENGTH], c.status.in_(list(live)))
                .values(abort=reason)
            )
        return bool(result.rowcount)

    async def pending_abort(self, route: str) -> str | None:
        """The abort asked for the route's rollout and not yet acted on (its reason), or None."""
        query = sa.select(rollouts.c.abort).where(rollouts.c.route == route[:NAME_LENGTH])
        async with self.engine.connect() as connection:
            reason: str | None = (await connection.execute(query)).scalar_one_or_none()
        return reason

    async def clear_abort(self, route: str, reason: str | None = None) -> None:
        """Forget the route's pending abort (the controller acted on it, or a new rollout
        started); with ``reason``, only if it is still that one (a newer ask stays)."""
        c = rollouts.c
        where = [c.route == route[:NAME_LENGTH]]
        if reason is not None:
            where.append(c.abort == reason)
        async with self.engine.begin() as connection:
            await connection.execute(rollouts.update().where(*where).values(abort=None))

    async def delete(self, route: str) -> bool:
        """Forget a route's rollout state (its decisions stay, for the record)."""
        async with self.engine.begin() as connection:
            result = await connection.execute(
                rollouts.delete().where(rollouts.c.route == route[:NAME_LENGTH])
            )
        return bool(result.rowcount)

    async def list_rollouts(self) -> list[dict[str, Any]]:
        """Every rollout: route, status, created_at, updated_at (not the state), by route."""
        query = sa.select(
            rollouts.c.route, rollouts.c.status, rollouts.c.created_at, rollouts.c.updated_at
        ).order_by(rollouts.c.route)
        async with self.engine.connect() as connection:
            return [dict(r._mapping) for r in await connection.execute(query)]

    async def decisions(
        self, route: str, since: dt.datetime | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """A route's decisions, oldest first (the newest ``limit`` of them)."""
        query = sa.select(rollout_decisions).where(rollout_decisions.c.route == route[:NAME_LENGTH])
        if since is not None:
            query = query.where(rollout_decisions.c.at >= since)
        query = query.order_by(rollout_decisions.c.id.desc()).limit(max(0, limit))
        async with self.engine.connect() as connection:
            rows = [dict(r._mapping) for r in await connection.execute(query)]
        return rows[::-1]
