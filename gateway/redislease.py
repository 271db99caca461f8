"""A named lease in Redis: one holder at a time across the replicas that share it.

The same protocol as the database's lease (``capture.lease.Lease``), for deployments with
Redis: one key, ``<prefix>:lease:<name>``, holding the holder's name with a time-to-live.
``acquire`` renews the key if it holds our name (compare-and-extend, one Lua script, so a lease
that expired and was taken by another replica in between is never extended over theirs), and
otherwise takes it only if nobody holds it (``SET NX PX``). ``release`` deletes the key only if it
is still ours (compare-and-delete). Expiry is Redis's clock, not the caller's, so the replicas'
clocks need not agree; the ``now`` arguments of the protocol are accepted and unused.

A Redis that cannot be reached means the lease cannot be had: ``acquire`` answers False (the
replica stops deciding) and logs why, rather than failing the controller's loop.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from capture.errortext import describe_error
from gateway.redisscripts import LEASE_DELETE, LEASE_EXTEND
from gateway.resp import PipelinedRedis

log = logging.getLogger("gateway.lease")


class RedisLease:
    """A lease as one Redis key with a time-to-live."""

    def __init__(
        self,
        redis: Any,
        prefix: str = "gateway",
        name: str = "autopilot",
        connection: PipelinedRedis | None = None,
    ) -> None:
        """``redis``: a redis-py client naming the server; the scripts go over ``connection``
        (the gateway's lean connection, closed by its owner) or one of the lease's own like it
        (closed by ``aclose``)."""
        if not name:
            raise ValueError("a lease needs a name")
        self.key = f"{prefix}:lease:{name}"
        self._own = connection is None
        self._connection = connection or PipelinedRedis.like(redis)

    async def acquire(self, holder: str, ttl_s: float, now: dt.datetime | None = None) -> bool:
        if not holder:
            raise ValueError("a holder needs a name")
        if not ttl_s > 0:
            raise ValueError("the lease's time-to-live must be > 0 seconds")
        ttl_ms = max(1, round(ttl_s * 1000))
        try:
            taken = await LEASE_EXTEND.run(self._connection, [self.key], [holder, ttl_ms])
        except Exception as exc:
            log.warning("the lease %s cannot be taken (Redis: %s)", self.key, describe_error(exc))
            return False
        return bool(taken)

    async def release(self, holder: str, now: dt.datetime | None = None) -> None:
        try:
            await LEASE_DELETE.run(self._connection, [self.key], [holder])
        except Exception as exc:
            log.warning(
                "the lease %s was not released (Redis: %s); it expires by itself",
                self.key,
                describe_error(exc),
            )

    async def holder(self, now: dt.datetime | None = None) -> str | None:
        value = await self._connection.execute("GET", self.key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def aclose(self) -> None:
        """Close the lease's own connection (not one it was given)."""
        if self._own:
            await self._connection.aclose()
