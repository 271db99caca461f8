"""Virtual keys: made with ``gateway keys create`` or the admin API, stored hashed in the
database, held in memory by every replica.

A key is shown once, when it is made; the database keeps its sha256 and its first characters.
Every replica keeps the active keys in memory and reloads them when told (a message on the Redis
channel ``<prefix>:keys``, sent by whoever changed a key) and every ``refresh_s`` seconds in any
case, so a revoked key stops working everywhere within a second with Redis, and within
``refresh_s`` without it. While the channel is heard the reload is only a safety net, every
``heard_refresh_s`` seconds: each reload holds the calls' event loop for a few tenths of a
millisecond (the database driver's Python), and a replica that loses the channel reloads at
once and polls every ``refresh_s`` until it hears it again (it reloads on subscribing too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.errortext import describe_error
from capture.schema import gateway_keys
from gateway.auth import Principal
from gateway.limits import Limits
from gateway.settings import hash_key

log = logging.getLogger("gateway.keys")

KEY_PREFIX = "sk-gw-"


@dataclass(frozen=True, slots=True)
class KeySpec:
    name: str
    routes: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None
    allow_variant_override: bool = False


def describe(row: Any) -> dict[str, Any]:
    """A key as the admin API and the CLI show it: never the key or its hash."""
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "routes": row.routes,
        "rpm": row.rpm,
        "tpm": row.tpm,
        "daily_budget_usd": row.daily_budget_usd,
        "monthly_budget_usd": row.monthly_budget_usd,
        "allow_variant_override": row.allow_variant_override,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


def principal_of(row: Any) -> Principal:
    return Principal(
        row.name,
        row.sha256,
        bool(row.allow_variant_override),
        frozenset(row.routes) if row.routes is not None else None,
        Limits(row.rpm, row.tpm, row.daily_budget_usd, row.monthly_budget_usd),
    )


_ACTIVE = sa.select(gateway_keys).where(gateway_keys.c.revoked_at.is_(None))
"""Built once: a statement keeps its cache key, which SQLAlchemy would otherwise compute again
on each poll (about a third of the poll's CPU, on the event loop)."""


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, spec: KeySpec) -> tuple[str, dict[str, Any]]:
        """Make a key; returns the key itself (shown once) and its description."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        values = {
            "id": secrets.token_hex(16),
            "name": spec.name,
            "sha256": hash_key(key),
            "prefix": key[:12],
            "routes": spec.routes,
            "rpm": spec.rpm,
            "tpm": spec.tpm,
            "daily_budget_usd": spec.daily_budget_usd,
            "monthly_budget_usd": spec.monthly_budget_usd,
            "allow_variant_override": spec.allow_variant_override,
            "created_at": dt.datetime.now(dt.UTC),
            "revoked_at": None,
        }
        async with self.engine.begin() as connection:
            await connection.execute(gateway_keys.insert().values(**values))
            row = (
                await connection.execute(
                    sa.select(gateway_keys).where(gateway_keys.c.id == values["id"])
                )
            ).one()
        return key, describe(row)

    async def list(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        query = sa.select(gateway_keys).order_by(gateway_keys.c.created_at)
        if not include_revoked:
            query = query.where(gateway_keys.c.revoked_at.is_(None))
        async with self.engine.connect() as connection:
            return [describe(row) for row in await connection.execute(query)]

    async def revoke(self, key_id_or_name: str) -> int:
        """Revoke by id, or every active key of that name; how many were revoked."""
        table = gateway_keys
        match = sa.or_(table.c.id == key_id_or_name, table.c.name == key_id_or_name)
        async with self.engine.begin() as connection:
            result = await connection.execute(
                table.update()
                .where(match, table.c.revoked_at.is_(None))
                .values(revoked_at=dt.datetime.now(dt.UTC))
            )
        return int(result.rowcount or 0)

    async def active(self) -> dict[str, Principal]:
        async with self.engine.connect() as connection:
            return {row.sha256: principal_of(row) for row in await connection.execute(_ACTIVE)}


class VirtualKeys:
    """The active virtual keys of this replica, by sha256; swapped whole on each reload."""

    def __init__(
        self,
        store: KeyStore,
        redis: Any = None,
        channel: str = "gateway:keys",
        refresh_s: float = 5.0,
        heard_refresh_s: float = 60.0,
    ) -> None:
        self.store = store
        self.by_digest: dict[str, Principal] = {}
        self.reloads = 0
        self._redis = redis
        self._channel = channel
        self._refresh_s = refresh_s
        self._heard_refresh_s = heard_refresh_s
        self.hearing = False
        """Subscribed to the channel: changes arrive as messages, the poll is a safety net."""
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.reload()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._poll()))
        if self._redis is not None:
            self._tasks.append(loop.create_task(self._listen()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def reload(self) -> None:
        self.reloads += 1
        try:
            self.by_digest = await self.store.active()
        except Exception as exc:  # keep the keys we have; the next refresh tries again
            log.warning("reloading virtual keys failed: %s", describe_error(exc))

    async def changed(self) -> None:
        """After a change made here: reload now and tell the other replicas."""
        await self.reload()
        await notify(self._redis, self._channel)

    async def _poll(self) -> None:
        while True:
            interval = self._heard_refresh_s if self.hearing else self._refresh_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), interval)
            self._lost.clear()
            await self.reload()

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(self._channel)
                self.hearing = True
                await self.reload()  # changes missed while not subscribed
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("virtual keys: Redis channel lost (%s); retrying", describe_error(exc))
                if self.hearing:
                    self.hearing = False
                    self._lost.set()  # the poller reloads now, then every refresh_s
                await asyncio.sleep(1.0)


async def notify(redis: Any, channel: str) -> None:
    if redis is None:
        return
    try:
        await redis.publish(channel, "changed")
    except Exception as exc:
        log.warning("virtual keys: could not tell the other replicas (%s)", describe_error(exc))
