"""Rate limits and budgets: the local windows, and the same behaviour through real Redis."""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis.asyncio as aioredis

from gateway.limits import Limiter, LimiterOutcome, Limits, LocalLimiter, Verdict
from gateway.redislimits import RedisLimiter
from tests.processes import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self, now: float = 1_795_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def redis_limiter(
    clock: Clock,
    url: str = REDIS_URL,
    fail_open: bool = True,
    on_error: Callable[[LimiterOutcome], None] | None = None,
) -> RedisLimiter:
    """Every call asks the script (credits off: these tests check its answers call by call;
    tests/gateway/test_limits_credits.py checks the credits)."""
    client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return RedisLimiter(
        client,
        prefix=f"test-{uuid.uuid4().hex}",
        clock=clock,
        fail_open=fail_open,
        credits=False,
        on_error=on_error,
    )


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
        limiter.record("t", tpm, 120, None)
        await limiter.flush()
        refused = await limiter.admit("t", tpm)
        assert not refused.allowed and refused.reason == "tpm" and refused.used_tokens == 120
        clock.now += 61
        assert (await limiter.admit("t", tpm)).allowed

        budget = Limits(daily_usd=0.01, monthly_usd=1.0)
        assert (await limiter.admit("b", budget)).allowed
        limiter.record("b", budget, 10, 0.004)
        await limiter.flush()
        assert (await limiter.admit("b", budget)).allowed
        limiter.record("b", budget, 10, 0.007)
        await limiter.flush()
        refused = await limiter.admit("b", budget)
        assert not refused.allowed and refused.reason == "daily_budget"
        assert 0 < refused.retry_after <= 86400
        clock.now += 86400  # a new day; the month's budget still has room
        assert (await limiter.admit("b", budget)).allowed
        limiter.record("b", budget, 0, 2.0)
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
        limiters = [RedisLimiter(c, prefix=prefix, clock=clock, credits=False) for c in clients]
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
def test_usage_still_counts_after_redis_forgot_its_scripts(
    own_redis: tuple[int, list[subprocess.Popen[bytes]]],
) -> None:
    """Tokens and spend are recorded by a script sent by its sha; a Redis that forgot it (a
    restart, SCRIPT FLUSH) gets it whole and the usage still counts, several keys in one flush."""
    port, processes = own_redis
    processes.append(start_redis(port))
    clock = Clock()
    limiter = redis_limiter(clock, url=f"redis://127.0.0.1:{port}/0")

    async def scenario() -> None:
        tpm = Limits(tpm=100)
        for key in ("a", "b"):
            assert (await limiter.admit(key, tpm)).allowed
            limiter.record(key, tpm, 120, None)
        await limiter.flush()  # the record script is now cached by Redis
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            await client.script_flush()
        finally:
            await client.aclose()
        clock.now += 61
        both = Limits(tpm=100, daily_usd=0.4)
        for key in ("a", "b"):
            assert (await limiter.admit(key, both)).allowed  # the admit script is sent again
            limiter.record(key, both, 150, 0.5)
        await limiter.flush()
        for key in ("a", "b"):
            refused = await limiter.admit(key, tpm)
            assert not refused.allowed and refused.reason == "tpm" and refused.used_tokens == 150
            refused = await limiter.admit(key, Limits(daily_usd=0.4))
            assert not refused.allowed and refused.reason == "daily_budget"
        await close_limiter(limiter)

    asyncio.run(scenario())


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
    reported: list[str] = []
    url = f"redis://127.0.0.1:{port}/0"
    limiter = redis_limiter(clock, url, fail_open=fail_open, on_error=reported.append)
    limits = Limits(rpm=1)

    async def scenario() -> None:
        assert (await limiter.admit("k", limits)).allowed
        assert not (await limiter.admit("k", limits)).allowed
        processes[0].terminate()
        processes[0].wait(timeout=10)
        down = await limiter.admit("k", limits)
        assert down.allowed is fail_open
        assert down.remaining_requests is None  # not known: no header will claim a figure
        assert limiter.failures >= 1
        assert reported == ["admitted" if fail_open else "refused"]
        processes.append(start_redis(port))  # a new, empty Redis on the same port
        await asyncio.sleep(1.1)  # the limiter waits a second before asking Redis again
        assert (await limiter.admit("k", limits)).allowed
        assert not (await limiter.admit("k", limits)).allowed

    asyncio.run(scenario())


# The token window: one hash per key with a field per second, "sum" and "low" (Redis), and the
# same answers from the local windows.


def tpm_limiter(backend: str, clock: Clock) -> Limiter:
    if backend == "local":
        return LocalLimiter(clock)
    if not redis_is_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    return redis_limiter(clock)


async def close_limiter(limiter: Limiter) -> None:
    """Delete the keys of a Redis limiter's own prefix and close its connections."""
    if isinstance(limiter, RedisLimiter):
        client = limiter._redis
        keys = [key async for key in client.scan_iter(match=f"{limiter._prefix}:*")]
        if keys:
            await client.delete(*keys)
        await limiter._connection.aclose()
        await client.aclose()


async def tpm_hash(limiter: RedisLimiter, key_id: str) -> dict[str, int]:
    raw = await limiter._redis.hgetall(f"{limiter._prefix}:limits:{{{key_id}}}:tpm")
    return {field.decode(): int(float(value)) for field, value in raw.items()}


def assert_consistent(fields: dict[str, int]) -> None:
    """The "sum" field is the sum of the second fields; no second field is older than "low"."""
    seconds = {int(name): value for name, value in fields.items() if name not in ("sum", "low")}
    assert fields.get("sum", 0) == sum(seconds.values()), fields
    assert all(second >= fields["low"] for second in seconds), fields


class TokenModel:
    """The exact answer: the tokens of the seconds within the last 60 s."""

    def __init__(self, clock: Clock, tpm: int) -> None:
        self.clock, self.tpm = clock, tpm
        self.buckets: dict[int, int] = {}

    def add(self, tokens: int) -> None:
        second = int(self.clock.now)
        self.buckets[second] = self.buckets.get(second, 0) + tokens

    def counted(self) -> dict[int, int]:
        cutoff = int(self.clock.now) - 59
        return {s: v for s, v in self.buckets.items() if s >= cutoff}

    def used(self) -> int:
        return sum(self.counted().values())

    def retry_after(self) -> float:
        oldest = min(self.counted(), default=int(self.clock.now))
        return min(60.0, max(1.0, oldest + 60.0 - self.clock.now))


class TokenScenario:
    """Does each step on the limiter under test and on a LocalLimiter, checked against the model."""

    def __init__(self, backend: str, clock: Clock, tpm: int, key_id: str = "k") -> None:
        self.clock = clock
        self.limiter = tpm_limiter(backend, clock)
        self.reference = LocalLimiter(clock)
        self.model = TokenModel(clock, tpm)
        self.limits = Limits(tpm=tpm)
        self.key_id = key_id

    async def record(self, tokens: int) -> None:
        self.limiter.record(self.key_id, self.limits, tokens, None)
        await self.limiter.flush()
        self.reference.record(self.key_id, self.limits, tokens, None)
        self.model.add(tokens)

    async def check(self) -> Verdict:
        verdict = await self.limiter.admit(self.key_id, self.limits)
        reference = self.reference.admit_now(self.key_id, self.limits)
        used = self.model.used()
        at = f"at t0+{self.clock.now - Clock().now:g}"
        assert verdict.used_tokens == used, at
        assert reference.used_tokens == used, at
        assert verdict.allowed is reference.allowed is (used < self.model.tpm), at
        if used >= self.model.tpm:
            assert verdict.reason == reference.reason == "tpm", at
            assert verdict.retry_after == pytest.approx(self.model.retry_after()), at
            assert reference.retry_after == pytest.approx(self.model.retry_after()), at
        if isinstance(self.limiter, RedisLimiter):
            assert_consistent(await tpm_hash(self.limiter, self.key_id))
        return verdict


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_tokens_leave_the_window_one_second_at_a_time(backend: str) -> None:
    clock = Clock()
    t0 = clock.now
    scenario = TokenScenario(backend, clock, tpm=100)

    async def run() -> None:
        try:
            for tokens in (10, 20, 30, 45):  # at t0, t0+10, t0+20, t0+30
                await scenario.check()
                await scenario.record(tokens)
                await scenario.check()
                clock.now += 10
            clock.now = t0 + 30
            refused = await scenario.check()
            assert not refused.allowed and refused.used_tokens == 105
            assert refused.retry_after == pytest.approx(30.0)
            # every 0.5 s up to t0+100: the buckets of t0, t0+10, t0+20, t0+30 leave at +60 each
            used_seen: list[int] = []
            for step in range(61, 201):
                clock.now = t0 + step / 2
                used = (await scenario.check()).used_tokens
                assert used is not None
                used_seen.append(used)
            assert used_seen[0] == 105 and used_seen[-1] == 0
            assert sorted(set(used_seen), reverse=True) == [105, 95, 75, 45, 0]
            # the last call before a bucket leaves still counts it
            clock.now = t0 + 110.5
            await scenario.record(5)  # bucket t0+110
            clock.now = t0 + 115
            await scenario.record(7)  # bucket t0+115
            assert (await scenario.check()).used_tokens == 12
            clock.now = t0 + 169.999
            assert (await scenario.check()).used_tokens == 12
            clock.now = t0 + 170
            assert (await scenario.check()).used_tokens == 7
            clock.now = t0 + 174.999
            assert (await scenario.check()).used_tokens == 7
            clock.now = t0 + 175
            assert (await scenario.check()).used_tokens == 0
        finally:
            await close_limiter(scenario.limiter)

    asyncio.run(run())


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_tokens_after_an_idle_gap_longer_than_the_window(backend: str) -> None:
    clock = Clock()
    t0 = clock.now
    scenario = TokenScenario(backend, clock, tpm=100)

    async def run() -> None:
        try:
            await scenario.record(50)
            clock.now = t0 + 10
            await scenario.record(60)
            assert not (await scenario.check()).allowed
            clock.now = t0 + 200  # every second of the hash is older than the window
            verdict = await scenario.check()
            assert verdict.allowed and verdict.used_tokens == 0
            if isinstance(scenario.limiter, RedisLimiter):
                fields = await tpm_hash(scenario.limiter, "k")
                assert fields == {"sum": 0, "low": int(t0) + 141}
            await scenario.record(30)
            clock.now = t0 + 201
            await scenario.record(40)
            verdict = await scenario.check()
            assert verdict.allowed and verdict.used_tokens == 70
            clock.now = t0 + 205
            await scenario.record(40)
            refused = await scenario.check()
            assert not refused.allowed and refused.used_tokens == 110
            assert refused.retry_after == pytest.approx(55.0)
            for now in (259.5, 260, 261, 265, 300):
                clock.now = t0 + now
                await scenario.check()
            assert (await scenario.check()).used_tokens == 0

            # a gap with no admit in between: old seconds and a second still in the window
            scenario.key_id = "gap"
            clock.now = t0 + 400
            await scenario.record(50)
            clock.now = t0 + 500
            await scenario.record(30)
            clock.now = t0 + 530  # "low" is t0+400: more than 60 s before the window starts
            verdict = await scenario.check()
            assert verdict.allowed and verdict.used_tokens == 30
            if isinstance(scenario.limiter, RedisLimiter):
                fields = await tpm_hash(scenario.limiter, "gap")
                assert fields == {"sum": 30, "low": int(t0) + 471, str(int(t0) + 500): 30}
            await scenario.record(80)
            refused = await scenario.check()
            assert not refused.allowed and refused.used_tokens == 110
            assert refused.retry_after == pytest.approx(30.0)
        finally:
            await close_limiter(scenario.limiter)

    asyncio.run(run())


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_tpm_retry_after_is_when_the_oldest_counted_second_leaves(backend: str) -> None:
    clock = Clock()
    t0 = clock.now
    scenario = TokenScenario(backend, clock, tpm=100)

    async def run() -> None:
        try:
            await scenario.record(60)
            clock.now = t0 + 20
            await scenario.record(50)
            clock.now = t0 + 30
            refused = await scenario.check()
            assert not refused.allowed and refused.reason == "tpm"
            assert refused.retry_after == pytest.approx(30.0)
            clock.now = t0 + 30.25
            assert (await scenario.check()).retry_after == pytest.approx(29.75)
            clock.now = t0 + 59.5
            assert (await scenario.check()).retry_after == pytest.approx(1.0)  # 0.5, at least 1
            clock.now = t0 + 60
            assert (await scenario.check()).used_tokens == 50  # t0 left: admitted
            await scenario.record(60)
            clock.now = t0 + 61.5
            refused = await scenario.check()  # the oldest counted second is now t0+20
            assert not refused.allowed and refused.retry_after == pytest.approx(18.5)
            clock.now = t0 + 80
            assert (await scenario.check()).used_tokens == 60
            clock.now = t0 + 100.5
            await scenario.record(100)  # one second alone over the limit
            refused = await scenario.check()
            assert refused.used_tokens == 160 and refused.retry_after == pytest.approx(19.5)
            clock.now = t0 + 120  # t0+60 left; t0+100 alone is still over the limit
            refused = await scenario.check()
            assert refused.used_tokens == 100 and refused.retry_after == pytest.approx(40.0)
            assert 1.0 <= refused.retry_after <= 60.0
        finally:
            await close_limiter(scenario.limiter)

    asyncio.run(run())


@needs_redis
def test_a_late_record_older_than_low_still_counts() -> None:
    clock = Clock()
    t0 = clock.now
    limiter = redis_limiter(clock)
    limits = Limits(tpm=1000)

    async def record(tokens: int) -> None:
        limiter.record("k", limits, tokens, None)
        await limiter.flush()

    async def run() -> None:
        try:
            await record(100)
            clock.now = t0 + 30
            await record(200)
            clock.now = t0 + 75  # t0 leaves the window; "low" moves up to t0+16
            assert (await limiter.admit("k", limits)).used_tokens == 200
            fields = await tpm_hash(limiter, "k")
            assert fields == {"sum": 200, "low": int(t0) + 16, str(int(t0) + 30): 200}

            clock.now = t0 + 5  # a record for a second older than "low", e.g. a slow replica
            await record(7)
            fields = await tpm_hash(limiter, "k")
            assert_consistent(fields)
            assert fields["sum"] == 207 and fields["low"] == int(t0) + 16
            clock.now = t0 + 75
            assert (await limiter.admit("k", limits)).used_tokens == 207  # not lost
            assert_consistent(await tpm_hash(limiter, "k"))
            clock.now = t0 + 76  # counted in the oldest second kept, which leaves now
            assert (await limiter.admit("k", limits)).used_tokens == 200
            fields = await tpm_hash(limiter, "k")
            assert_consistent(fields)
            assert fields["sum"] == 200
            clock.now = t0 + 90
            assert (await limiter.admit("k", limits)).used_tokens == 0
            assert_consistent(await tpm_hash(limiter, "k"))

            # a late record before any admit moved "low": "low" is the first second recorded
            clock.now = t0 + 300
            await record(40)
            clock.now = t0 + 290
            await record(2)
            fields = await tpm_hash(limiter, "k")
            assert_consistent(fields)
            clock.now = t0 + 300
            assert (await limiter.admit("k", limits)).used_tokens == 42
            assert_consistent(await tpm_hash(limiter, "k"))
        finally:
            await close_limiter(limiter)

    asyncio.run(run())


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_token_window_matches_the_exact_sum_over_random_steps(backend: str) -> None:
    clock = Clock()
    rng = random.Random(20240611)
    scenarios = [TokenScenario(backend, clock, tpm=300, key_id=f"r{i}") for i in range(3)]
    if isinstance(scenarios[0].limiter, RedisLimiter):  # one limiter (and prefix) for all keys
        for scenario in scenarios[1:]:
            scenario.limiter = scenarios[0].limiter

    async def run() -> None:
        try:
            for _ in range(250):
                clock.now += rng.choice([0.0, 0.001, 0.4, 1.0, 3.0, 9.5, 30.0, 59.0, 61.0, 150.0])
                scenario = rng.choice(scenarios)
                if rng.random() < 0.6:
                    await scenario.record(rng.randint(1, 120))
                await scenario.check()
        finally:
            await close_limiter(scenarios[0].limiter)

    asyncio.run(run())


@needs_redis
def test_tpm_refusal_when_another_replica_recorded_a_second_ahead() -> None:
    """Two replicas whose clocks are 2 ms apart, across a second boundary: the one ahead records
    the first tokens of the window (so "low" is its second), the one behind admits next."""
    ahead, behind = Clock(1_795_000_001.001), Clock(1_795_000_000.999)
    first = redis_limiter(ahead)
    second = redis_limiter(behind)
    second._prefix = first._prefix  # one shared window, as for replicas of one gateway
    limits = Limits(tpm=100)

    async def run() -> None:
        try:
            first.record("k", limits, 200, None)
            await first.flush()
            assert (await tpm_hash(first, "k"))["low"] == int(ahead.now)
            verdict = await second.admit("k", limits)
            assert second.failures == 0, "the script failed: Redis was taken for unreachable"
            assert not verdict.allowed and verdict.reason == "tpm", verdict
            assert verdict.used_tokens == 200
            assert 1.0 <= verdict.retry_after <= 60.0
        finally:
            await close_limiter(first)
            await second._connection.aclose()
            await second._redis.aclose()

    asyncio.run(run())


def test_headers_carry_only_the_figures_the_verdict_knows() -> None:
    from gateway.ratelimits import ratelimit_headers

    limits = Limits(rpm=10, tpm=1000)
    known = dict(ratelimit_headers(Verdict(True, None, 0.0, 7, 100), limits))
    assert known[b"x-ratelimit-remaining-requests"] == b"7"
    assert known[b"x-ratelimit-remaining-tokens"] == b"900"
    # admitted while the limits could not be checked (fail open): nothing made up
    assert ratelimit_headers(Verdict(True), limits) == []
    # refused for tokens: the requests left are not known
    tokens = dict(ratelimit_headers(Verdict(False, "tpm", 5.0, None, 1200), limits))
    assert b"x-ratelimit-remaining-requests" not in tokens
    assert tokens[b"x-ratelimit-remaining-tokens"] == b"0"
    assert tokens[b"x-ratelimit-reset-tokens"] == b"5.000s"
