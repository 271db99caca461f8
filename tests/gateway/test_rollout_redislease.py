"""The controller's lease in Redis (gateway.redislease), against the real Redis: one holder at
a time, renewal only by the holder, release only by the holder, expiry by Redis's clock."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from gateway.redislease import RedisLease
from gateway.redisscripts import LEASE_EXTEND
from gateway.resp import PipelinedRedis
from tests.gateway.test_limits import REDIS_URL, needs_redis


@needs_redis
def test_one_holder_at_a_time_and_only_the_holder_renews_or_releases() -> None:
    prefix = f"test-{uuid.uuid4().hex}"

    async def run() -> None:
        clients = [aioredis.Redis.from_url(REDIS_URL) for _ in range(2)]
        try:
            a, b = (RedisLease(c, prefix) for c in clients)
            assert await a.holder() is None
            assert await a.acquire("replica-a", 0.4)
            assert not await b.acquire("replica-b", 0.4)
            assert await a.holder() == "replica-a"
            await b.release("replica-b")  # not b's: nothing happens
            assert await b.holder() == "replica-a"
            # renewing keeps it past its first expiry
            for _ in range(4):
                await asyncio.sleep(0.2)
                assert await a.acquire("replica-a", 0.4)
                assert not await b.acquire("replica-b", 0.4)
            # the holder stops renewing: it expires and b takes it; a cannot extend b's
            await asyncio.sleep(0.5)
            assert await b.acquire("replica-b", 5.0)
            assert not await a.acquire("replica-a", 5.0)
            assert await a.holder() == "replica-b"
            ttl = await clients[0].pttl(a.key)
            assert 4000 < ttl <= 5000
            await a.release("replica-a")
            assert await a.holder() == "replica-b"
            await b.release("replica-b")  # handed over at once
            assert await a.holder() is None
            assert await a.acquire("replica-a", 5.0)
        finally:
            for c in clients:
                await c.delete(f"{prefix}:lease:autopilot")
                await c.aclose()
            for lease in (a, b):
                await lease.aclose()

    asyncio.run(run())


@needs_redis
def test_two_replicas_racing_never_both_hold_it() -> None:
    prefix = f"test-{uuid.uuid4().hex}"

    async def run() -> None:
        clients = [aioredis.Redis.from_url(REDIS_URL) for _ in range(8)]
        try:
            leases = [RedisLease(c, prefix) for c in clients]
            for _ in range(20):
                taken = await asyncio.gather(
                    *(lease.acquire(f"r{i}", 0.05) for i, lease in enumerate(leases))
                )
                assert sum(taken) == 1
                await asyncio.sleep(0.06)
        finally:
            await clients[0].delete(f"{prefix}:lease:autopilot")
            for c in clients:
                await c.aclose()
            for lease in leases:
                await lease.aclose()

    asyncio.run(run())


def test_an_unreachable_redis_means_no_lease() -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(
            "redis://127.0.0.1:9/0", socket_timeout=0.2, socket_connect_timeout=0.2
        )
        try:
            lease = RedisLease(client, "nowhere")
            assert not await lease.acquire("replica-a", 1.0)
            await lease.release("replica-a")  # logged, not raised
            await lease.aclose()
        finally:
            await client.aclose()

    asyncio.run(run())


@needs_redis
def test_a_redis_that_forgot_the_scripts_is_sent_them_again_over_the_given_connection() -> None:
    """The scripts go by sha1; after SCRIPT FLUSH (or a restarted Redis) they go whole. A
    connection the lease was given is its owner's to close, not the lease's."""
    prefix = f"test-{uuid.uuid4().hex}"

    async def run() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        connection = PipelinedRedis.like(client)
        lease = RedisLease(client, prefix, connection=connection)
        try:
            assert await lease.acquire("replica-a", 5.0)
            await client.script_flush()
            assert await lease.acquire("replica-a", 5.0)  # renewed: NOSCRIPT, then EVAL
            assert await client.script_exists(LEASE_EXTEND.sha) == [True]
            await client.script_flush()
            await lease.release("replica-a")
            assert await lease.holder() is None
            await lease.aclose()
            assert await connection.execute("PING") in (b"PONG", "PONG")  # still open
        finally:
            await client.delete(f"{prefix}:lease:autopilot")
            await connection.aclose()
            await client.aclose()

    asyncio.run(run())
