"""A named lease in the capture database: one holder at a time across replicas.

The autopilot's controller runs on every replica, but decides only while it holds the lease
``autopilot``. ``acquire`` is one atomic UPDATE ... WHERE the lease is expired or already
ours (after an INSERT ... ON CONFLICT DO NOTHING that creates the row the first time, and
inserts nothing if another replica created it first), so two replicas racing for it never
both get it: the database serialises the two UPDATEs (or INSERTs), and the second finds the row
no longer expired (or already there).

Times come from the caller's clock (``now``, UTC), so the replicas' clocks must agree to well
within the time-to-live; a holder renews (``acquire`` again) well before its lease expires, and
``release`` lets another take over at once. A holder that cannot renew in time must stop
deciding: ``acquire`` returning False means exactly that.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.schema import NAME_LENGTH, leases


class Lease(Protocol):
    """One holder at a time for a named lease (the database's here; Redis's could follow)."""

    async def acquire(self, holder: str, ttl_s: float, now: dt.datetime | None = None) -> bool:
        """Take or renew the lease for ``ttl_s`` seconds; False while another holds it."""

    async def release(self, holder: str, now: dt.datetime | None = None) -> None:
        """Give the lease up (a no-op unless ``holder`` holds it)."""

    async def holder(self, now: dt.datetime | None = None) -> str | None:
        """Who holds the lease now; None when nobody does."""


class DatabaseLease:
    """A lease as a row of the ``leases`` table."""

    def __init__(self, engine: AsyncEngine, name: str = "autopilot") -> None:
        if not name or len(name) > NAME_LENGTH:
            raise ValueError(f"a lease name must have 1 to {NAME_LENGTH} characters")
        self.engine = engine
        self.name = name

    @staticmethod
    def _now(now: dt.datetime | None) -> dt.datetime:
        if now is None:
            return dt.datetime.now(dt.UTC)
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now

    async def acquire(self, holder: str, ttl_s: float, now: dt.datetime | None = None) -> bool:
        if not holder or len(holder) > NAME_LENGTH:
            raise ValueError(f"a holder must have 1 to {NAME_LENGTH} characters")
        if not ttl_s > 0:
            raise ValueError("the lease's time-to-live must be > 0 seconds")
        now = self._now(now)
        expires = now + dt.timedelta(seconds=ttl_s)
        c = leases.c
        take = (
            leases.update()
            .where(c.name == self.name, sa.or_(c.holder == holder, c.expires_at <= now))
            .values(holder=holder, expires_at=expires)
        )
        async with self.engine.begin() as connection:
            if (await connection.execute(take)).rowcount == 1:
                return True
            # The first time: create the row. If another holder created it first, nothing is
            # inserted (and nothing fails), and the lease is theirs.
            insert = (
                postgresql.insert(leases)
                if connection.dialect.name == "postgresql"
                else sqlite.insert(leases)
            )
            created = await connection.execute(
                insert.values(
                    name=self.name, holder=holder, expires_at=expires
                ).on_conflict_do_nothing(index_elements=["name"])
            )
            return bool(created.rowcount == 1)

    async def release(self, holder: str, now: dt.datetime | None = None) -> None:
        now = self._now(now)
        c = leases.c
        async with self.engine.begin() as connection:
            await connection.execute(
                leases.update()
                .where(c.name == self.name, c.holder == holder, c.expires_at > now)
                .values(expires_at=now)
            )

    async def holder(self, now: dt.datetime | None = None) -> str | None:
        now = self._now(now)
        c = leases.c
        query = sa.select(c.holder).where(c.name == self.name, c.expires_at > now)
        async with self.engine.connect() as connection:
            return (await connection.execute(query)).scalar_one_or_none()
