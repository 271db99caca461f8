"""A named lease in the capture database: one holder at a time across replicas.

The autopilot's controller runs on every replica, but decides only while it holds the lease
``autopilot``. ``acquire`` is one atomic UPDATE ... WHERE the lease is expired or already
ours (after an INSERT that creates the row the first time and fails harmlessly if another
replica created it first), so two replicas racing for it never both get it: the database
serialises the two UPDATEs, and the second finds the row no longer expired.

Times come from the caller's clock (``now``, UTC), so the replicas' clocks must agree to well
within the time-to-live; a holder renews (``acquire`` again) well before its lease expires, and
``release`` lets another take over at once. A holder that cannot renew in time must stop
deciding: ``acquire`` returning False means exactly that.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
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
        try:
            async with self.engine.begin() as connection:
                await connection.execute(
                    leases.insert().values(name=self.name, holder=holder, expires_at=expires)
                )
            return True
        except IntegrityError:  # another holder created the row first: it holds the lease
            return False

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
