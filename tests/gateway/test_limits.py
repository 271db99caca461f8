"""Rate limits and budgets: the local windows, and the same behaviour through real Redis."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from gateway.limits import Limiter, Limits, LocalLimiter, RedisLimiter
from tests.processes import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self, now: float = 1_795_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def redis_limiter(clock: Clock, url: str = REDIS_URL, **kwargs: bool) -> RedisLimiter:
    client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return RedisLimiter(client, prefix=f"test-{uuid.uuid4().hex}", clock=clock, **kwargs)


def redis_is_up() -> bool:
    async def ping() -> bool:
        client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
        try:
            return bool(await client.ping())
        except Exception:
            return False
        finally:
            await client.aclose()

    return asyncio.run(ping())


needs_redis = pytest.mark.skipif(not redis_is_up(), reason="no Redis at 127.0.0.1:6379")


def both(clock: Clock) -> list[Limiter]:
    limiters: list[Limiter] = [LocalLimiter(clock)]
    if redis_is_up():
        limiters.append(redis_limiter(clock))
    return limiters


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_rpm_is_a_sliding_window(backend: str) -> None:
    if backend == "redis" and not redis_is_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    clock = Clock()
    limiter: Limiter = LocalLimiter(clock) if backend == "local" else redis_limiter(clock)
    limits = Limits(rpm=3)

    async def scenario() -> None:
        verdicts = [await limiter.admit("k", limits) for _ in range(3)]
        assert all(v.allowed for v in verdicts)
        assert [v.remaining_requests for v in verdicts] == [2, 1, 0]
        refused = await limiter.admit("k", limits)
        assert not refused.allowed and refused.reason == "rpm"
        assert 59 < refused.retry_after <= 60
        assert (await limiter.admit("other-key", limits)).allowed
        clock.now += 60.5
        assert (await limiter.admit("k", limits)).allowed

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_tokens_and_budgets_count_after_the_call(backend: str) -> None:
    if backend == "redis" and not redis_is_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    clock = Clock()
    limiter: Limiter = LocalLimiter(clock) if backend == "local" else redis_limiter(clock)

    async def scenario() -> None:
        tpm = Limits(tpm=100)
        assert (await limiter.admit("t", tpm)).allowed
        await limiter.record("t", tpm, 120, None)
        await limiter.flush()
        refused = await limiter.admit("t", tpm)
        assert not refused.allowed and refused.reason == "tpm" and refused.used_tokens == 120
        clock.now += 61
        assert (await limiter.admit("t", tpm)).allowed

        budget = Limits(daily_usd=0.01, monthly_usd=1.0)
        assert (await limiter.admit("b", budget)).allowed
        await limiter.record("b", budget, 10, 0.004)
        await limiter.flush()
        assert (await limiter.admit("b", budget)).allowed
        await limiter.record("b", budget, 10, 0.007)
        await limiter.flush()
        refused = await limiter.admit("b", budget)
        assert not refused.allowed and refused.reason == "daily_budget"
        assert 0 < refused.retry_after <= 86400
        clock.now += 86400  # a new day; the month's budget still has room
        assert (await limiter.admit("b", budget)).allowed
        await limiter.record("b", budget, 0, 2.0)
        await limiter.flush()
        refused = await limiter.admit("b", Limits(monthly_usd=1.0))
        assert not refused.allowed and refused.reason == "monthly_budget"

    asyncio.run(scenario())


@needs_redis
def test_two_limiters_share_one_window() -> None:
    """Two replicas: the sum of admitted calls never exceeds the limit."""
    clock = Clock()
    prefix = f"test-{uuid.uuid4().hex}"

    async def scenario() -> int:
        clients = [aioredis.Redis.from_url(REDIS_URL) for _ in range(2)]
        limiters = [RedisLimiter(c, prefix=prefix, clock=clock) for c in clients]
        limits = Limits(rpm=25)
        verdicts = await asyncio.gather(
            *(limiters[i % 2].admit("shared", limits) for i in range(80))
        )
        for client in clients:
            await client.aclose()
        return sum(v.allowed for v in verdicts)

    assert asyncio.run(scenario()) == 25


@pytest.fixture
def own_redis() -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    port = free_port()
    processes: list[subprocess.Popen[bytes]] = []
    yield port, processes
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def start_redis(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], check=True, capture_output=True, timeout=2
            )
            return process
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


@pytest.mark.skipif(
    subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0,
    reason="redis-server is not installed",
)
@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_down_follows_the_policy_and_recovers(
    own_redis: tuple[int, list[subprocess.Popen[bytes]]], fail_open: bool
) -> None:
    port, processes = own_redis
    processes.append(start_redis(port))
    clock = Clock()
    limiter = redis_limiter(clock, f"redis://127.0.0.1:{port}/0", fail_open=fail_open)
    limits = Limits(rpm=1)

    async def scenario() -> None:
        assert (await limiter.admit("k", limits)).allowed
        assert not (await limiter.admit("k", limits)).allowed
        processes[0].terminate()
        processes[0].wait(timeout=10)
        down = await limiter.admit("k", limits)
        assert down.allowed is fail_open
        assert limiter.failures >= 1
        processes.append(start_redis(port))  # a new, empty Redis on the same port
        await asyncio.sleep(1.1)  # the limiter waits a second before asking Redis again
        assert (await limiter.admit("k", limits)).allowed
        assert not (await limiter.admit("k", limits)).allowed

    asyncio.run(scenario())
