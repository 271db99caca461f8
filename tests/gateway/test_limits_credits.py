"""Credits: a busy key's admissions granted ahead to a replica, against the machine's Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis.asyncio as aioredis

from gateway import redislimits as limits_module
from gateway.limits import Limits, Verdict
from gateway.redislimits import CREDIT_LEASE_S, HOT_CALLS, RedisLimiter
from gateway.resp import Arg, PipelinedRedis
from tests.gateway.test_limits import REDIS_URL, Clock, needs_redis


class Counted(PipelinedRedis):
    """The real connection, counting the admit scripts sent through it."""

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", port=6379, timeout=1.0, connect_timeout=1.0)
        self.sent = 0

    def send(self, *args: Arg) -> asyncio.Future[Any] | None:
        self.sent += 1
        return super().send(*args)

    async def execute(self, *args: Arg) -> Any:
        self.sent += 1
        return await super().execute(*args)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Replica:
    def __init__(self, prefix: str, clock: Clock, ticks: Ticks) -> None:
        self.client = aioredis.Redis.from_url(REDIS_URL)
        self.connection = Counted()
        self.limiter = RedisLimiter(
            self.client, prefix=prefix, clock=clock, monotonic=ticks, connection=self.connection
        )

    async def close(self) -> None:
        await self.limiter.close()
        await self.client.aclose()


async def settle(*replicas: Replica) -> None:
    """Let background refills come back."""
    await asyncio.sleep(0)
    for replica in replicas:
        await asyncio.gather(*replica.limiter._refills)


WARM_CALLS = 2 * HOT_CALLS + 1


async def warm(replica: Replica, key: str, limits: Limits, ticks: Ticks) -> list[Verdict]:
    """Two seconds with HOT_CALLS calls each, then the next second: the key is busy (the
    WARM_CALLS-th call asks for credits)."""
    verdicts: list[Verdict] = []
    for _ in range(2):
        verdicts += [await replica.limiter.admit(key, limits) for _ in range(HOT_CALLS)]
        ticks.now += 1.0
    verdicts.append(await replica.limiter.admit(key, limits))  # asks for credits
    await settle(replica)
    return verdicts


async def zcard(client: Any, prefix: str, key: str) -> int:
    return int(await client.zcard(f"{prefix}:limits:{{{key}}}:rpm"))


@needs_redis
def test_a_busy_key_is_admitted_from_credits_without_a_round_trip() -> None:
    clock, ticks, prefix = Clock(), Ticks(), f"test-{uuid.uuid4().hex}"
    limits = Limits(rpm=10_000, tpm=1_000_000, daily_usd=100.0)

    async def run() -> None:
        replica = Replica(prefix, clock, ticks)
        try:
            assert all(v.allowed for v in await warm(replica, "k", limits, ticks))
            sent = replica.connection.sent
            verdicts = [await replica.limiter.admit("k", limits) for _ in range(2)]
            assert all(v.allowed for v in verdicts)
            assert replica.connection.sent == sent, "credits should have answered these"
            await settle(replica)  # the refill asked for when the credits ran low
            await replica.limiter.flush()
            left = verdicts[-1].remaining_requests
            assert left is not None and 0 < left < 10_000
            # What Redis counts: every call admitted so far plus the credits still held.
            held = len(replica.limiter._credits["k"].members)
            assert held > 0
            admitted = WARM_CALLS + 2
            assert await zcard(replica.client, prefix, "k") == admitted + held
        finally:
            await replica.close()
        # At shutdown the credits left are given back.
        check = aioredis.Redis.from_url(REDIS_URL)
        assert await zcard(check, prefix, "k") == admitted
        await check.aclose()

    asyncio.run(run())


@needs_redis
def test_a_used_credit_counts_from_the_time_of_its_call() -> None:
    clock, ticks, prefix = Clock(), Ticks(), f"test-{uuid.uuid4().hex}"
    limits = Limits(rpm=10_000)

    async def run() -> None:
        replica = Replica(prefix, clock, ticks)
        try:
            await warm(replica, "k", limits, ticks)
            granted_ms = int(clock.now * 1000)
            member = replica.limiter._credits["k"].members[-1]
            clock.now += 0.5  # the credit is used half a second after it was granted
            ticks.now += 0.5
            assert (await replica.limiter.admit("k", limits)).allowed
            await replica.limiter.flush()
            score = await replica.client.zscore(f"{prefix}:limits:{{k}}:rpm", member)
            assert score == granted_ms + 500
        finally:
            await replica.close()

    asyncio.run(run())


@needs_redis
def test_unused_credits_are_given_back_when_they_expire() -> None:
    clock, ticks, prefix = Clock(), Ticks(), f"test-{uuid.uuid4().hex}"
    limits = Limits(rpm=10_000)

    async def run() -> None:
        replica = Replica(prefix, clock, ticks)
        try:
            await warm(replica, "k", limits, ticks)
            assert await zcard(replica.client, prefix, "k") > WARM_CALLS
            ticks.now += CREDIT_LEASE_S + 0.1
            await replica.limiter.flush()
            assert await zcard(replica.client, prefix, "k") == WARM_CALLS
            # an expired credit is not used: the next call asks Redis
            sent = replica.connection.sent
            assert (await replica.limiter.admit("k", limits)).allowed
            assert replica.connection.sent > sent
        finally:
            await replica.close()

    asyncio.run(run())


@needs_redis
def test_credits_never_take_the_last_half_of_the_window() -> None:
    """One busy replica, a small limit: exactly the limit is admitted, the rest refused, and no
    more than a quarter of what is left is ever held as credits."""
    clock, ticks, prefix = Clock(), Ticks(), f"test-{uuid.uuid4().hex}"
    limits = Limits(rpm=80)

    async def run() -> None:
        replica = Replica(prefix, clock, ticks)
        try:
            verdicts = await warm(replica, "k", limits, ticks)
            credits = replica.limiter._credits["k"]
            assert 0 < len(credits.members) <= (80 - WARM_CALLS) // 4
            for _ in range(100):
                verdicts.append(await replica.limiter.admit("k", limits))
                await settle(replica)
                await replica.limiter.flush()  # credits replaced by a refill go back
                redis_count = await zcard(replica.client, prefix, "k")
                admitted = sum(v.allowed for v in verdicts)
                held = len(credits.members)
                assert redis_count == admitted + held <= 80
                if held:  # credits are granted only while half the window stays free
                    assert 80 - admitted - held >= 40
            assert sum(v.allowed for v in verdicts) == 80
            assert {v.reason for v in verdicts if not v.allowed} == {"rpm"}
        finally:
            await replica.close()

    asyncio.run(run())


@needs_redis
def test_two_busy_replicas_never_admit_more_than_the_limit() -> None:
    clock, ticks, prefix = Clock(), Ticks(), f"test-{uuid.uuid4().hex}"
    limits = Limits(rpm=300)

    async def run() -> None:
        replicas = [Replica(prefix, clock, ticks) for _ in range(2)]
        try:
            verdicts: list[Verdict] = []
            for _ in range(4):
                # both replicas busy, calls at once and one after the other
                verdicts += await asyncio.gather(
                    *(replicas[i % 2].limiter.admit("k", limits) for i in range(60))
                )
                for i in range(40):
                    verdicts.append(await replicas[i % 2].limiter.admit("k", limits))
                await settle(*replicas)
                ticks.now += 1.0
            admitted = sum(v.allowed for v in verdicts)
            assert 250 <= admitted <= 300  # credits held elsewhere cost few refusals
            ticks.now += CREDIT_LEASE_S + 1  # every credit left expires and is given back
            for replica in replicas:
                await replica.limiter.flush()
            assert await zcard(replicas[0].client, prefix, "k") == admitted
        finally:
            for replica in replicas:
                await replica.close()
        check = aioredis.Redis.from_url(REDIS_URL)
        assert await zcard(check, prefix, "k") == admitted
        await check.aclose()

    asyncio.run(run())


@needs_redis
def test_no_credits_near_a_budget_or_the_token_limit() -> None:
    clock, ticks, prefix = Clock(), Ticks(), f"test-{uuid.uuid4().hex}"

    async def run() -> None:
        replica = Replica(prefix, clock, ticks)
        try:
            budget = Limits(daily_usd=1.0)
            replica.limiter.record("b", budget, 0, 0.6)  # over half the budget
            tokens = Limits(tpm=1000)
            replica.limiter.record("t", tokens, 600, None)  # over half the tokens
            await replica.limiter.flush()
            for key, limits in (("b", budget), ("t", tokens)):
                await warm(replica, key, limits, ticks)
                assert replica.limiter._credits[key].members == []
                sent = replica.connection.sent
                assert (await replica.limiter.admit(key, limits)).allowed
                assert replica.connection.sent > sent
            # far from them, credits come (tickets only: there is no request window)
            await warm(replica, "free", Limits(daily_usd=1.0, tpm=1000), ticks)
            assert len(replica.limiter._credits["free"].members) >= 2
        finally:
            await replica.close()

    asyncio.run(run())


@needs_redis
def test_changed_limits_give_the_credits_back() -> None:
    clock, ticks, prefix = Clock(), Ticks(), f"test-{uuid.uuid4().hex}"

    async def run() -> None:
        replica = Replica(prefix, clock, ticks)
        try:
            await warm(replica, "k", Limits(rpm=10_000), ticks)
            assert replica.limiter._credits["k"].members
            tighter = Limits(rpm=5_000)
            sent = replica.connection.sent
            assert (await replica.limiter.admit("k", tighter)).allowed
            assert replica.connection.sent > sent  # the old credits were not used
            await replica.limiter.flush()
            assert await zcard(replica.client, prefix, "k") == WARM_CALLS + 1
        finally:
            await replica.close()

    asyncio.run(run())


def test_only_a_key_busy_two_seconds_running_asks_for_credits() -> None:
    credits = limits_module._Credits(Limits(rpm=100), "z")
    for second in range(5):  # steady, but under HOT_CALLS a second
        for _ in range(HOT_CALLS - 1):
            credits.count_call(1000.0 + second)
        assert credits.wanted() == 0
    for _ in range(HOT_CALLS * 8):  # a burst within one second
        credits.count_call(2000.0)
    credits.count_call(2001.0)
    assert credits.wanted() == 0
    for _ in range(HOT_CALLS * 8):  # and the next second too
        credits.count_call(2001.5)
    credits.count_call(2002.0)
    assert credits.wanted() == HOT_CALLS * 2  # a quarter of the last second's calls
    credits.count_call(2004.5)  # a second without calls in between
    assert credits.wanted() == 0


def test_a_flush_sends_a_command_per_key_for_its_credits() -> None:
    used = [("a", 1, "m1"), ("b", 2, "m2"), ("a", 3, "m3")]
    unused = [("a", ["x"]), ("b", ["z"]), ("a", ["y"])]
    assert limits_module._credit_commands(used, unused) == [
        ("ZADD", "a", 1, "m1", 3, "m3"),
        ("ZADD", "b", 2, "m2"),
        ("ZREM", "a", "x", "y"),
        ("ZREM", "b", "z"),
    ]


def test_a_flush_of_many_credits_is_sent_in_commands_of_a_bounded_size() -> None:
    """Each command is packed in its own step of the loop: hundreds of credits at c=50 are
    never one long step."""
    size = limits_module.CREDITS_PER_COMMAND
    used = [("a", index, f"m{index}") for index in range(size * 2 + 5)]
    unused = [("a", [f"x{index}" for index in range(size + 1)])]
    commands = limits_module._credit_commands(used, unused)
    assert [(c[0], (len(c) - 2) // (2 if c[0] == "ZADD" else 1)) for c in commands] == [
        ("ZADD", size),
        ("ZADD", size),
        ("ZADD", 5),
        ("ZREM", size),
        ("ZREM", 1),
    ]
    sent = [member for c in commands if c[0] == "ZADD" for member in c[3::2]]
    assert sent == [f"m{index}" for index in range(size * 2 + 5)]  # every one, in order
    assert [m for c in commands if c[0] == "ZREM" for m in c[2:]] == unused[0][1]
