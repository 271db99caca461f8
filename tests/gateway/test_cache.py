"""The response cache: in process and shared through Redis by two replicas."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.cache import CachedAnswer, RedisCache
from gateway.resp import PipelinedRedis
from tests.gateway.test_limits import needs_redis
from tests.processes import Running, free_port, start_gateway

MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]


def config(sim_url: str, redis_prefix: str | None) -> dict[str, Any]:
    cached = {"variants": {"t": {"provider": "sim", "model": "gpt-4o"}}, "cache": {"ttl_s": 60}}
    result: dict[str, Any] = {
        "auth": "none",
        "providers": {"sim": {"base_url": f"{sim_url}/v1"}},
        "routes": {
            "cached": cached,
            "uncached": {"variants": {"t": {"provider": "sim", "model": "gpt-4o"}}},
        },
    }
    if redis_prefix is not None:
        result["redis"] = {"url": "redis://127.0.0.1:6379/0", "prefix": redis_prefix}
    return result


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, simulator: Running) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp("cache-local")
    running = start_gateway(
        workdir,
        {
            **config(simulator.url, None),
            "capture": {
                "database_url": f"sqlite+aiosqlite:///{workdir}/capture.db",
                "flush_interval_ms": 20,
            },
        },
    )
    yield running
    running.stop()


def client(gateway: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)


def upstream_calls(simulator: Running, model: str = "gpt-4o") -> int:
    recorded = httpx.get(f"{simulator.url}/_sim/requests").json()
    return sum(1 for r in recorded if (r.get("body") or {}).get("model") == model)


def test_deterministic_calls_are_answered_from_the_cache(
    local: Running, simulator: Running
) -> None:
    sdk = client(local)
    seed = uuid.uuid4().int % 10_000
    httpx.delete(f"{simulator.url}/_sim/requests")
    first = sdk.chat.completions.with_raw_response.create(
        model="cached", messages=MESSAGES, temperature=0, seed=seed
    )
    second = sdk.chat.completions.with_raw_response.create(
        model="cached", messages=MESSAGES, temperature=0, seed=seed, user="someone-else"
    )
    assert first.headers["x-gateway-cache"] == "miss"
    assert second.headers["x-gateway-cache"] == "hit"
    assert first.parse().choices[0].message.content == second.parse().choices[0].message.content
    assert upstream_calls(simulator) == 1
    other = sdk.chat.completions.with_raw_response.create(
        model="cached", messages=MESSAGES, temperature=0, seed=seed + 1
    )
    assert other.headers["x-gateway-cache"] == "miss"


def test_random_calls_and_other_routes_are_not_cached(local: Running) -> None:
    sdk = client(local)
    sampled = sdk.chat.completions.with_raw_response.create(
        model="cached", messages=MESSAGES, temperature=0.7
    )
    assert "x-gateway-cache" not in sampled.headers
    plain = sdk.chat.completions.with_raw_response.create(
        model="uncached", messages=MESSAGES, temperature=0
    )
    assert "x-gateway-cache" not in plain.headers


def test_a_stream_is_replayed_as_a_stream(local: Running, simulator: Running) -> None:
    sdk = client(local)
    seed = uuid.uuid4().int % 10_000

    def streamed(include_usage: bool) -> tuple[str, list[Any], str]:
        with sdk.chat.completions.with_streaming_response.create(
            model="cached",
            messages=MESSAGES,
            seed=seed,
            stream=True,
            stream_options={"include_usage": include_usage},
        ) as response:
            chunks = list(response.parse())
            outcome = response.headers["x-gateway-cache"]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, chunks, outcome

    text_1, _, outcome_1 = streamed(False)
    text_2, chunks_2, outcome_2 = streamed(False)
    assert (outcome_1, outcome_2) == ("miss", "hit")
    assert text_1 == text_2 and text_1
    assert all(c.usage is None for c in chunks_2)


def test_a_cache_hit_is_captured_as_such_at_no_cost(local: Running) -> None:
    sdk = client(local)
    seed = uuid.uuid4().int % 10_000
    ids = []
    for _ in range(2):
        raw = sdk.chat.completions.with_raw_response.create(
            model="cached", messages=MESSAGES, temperature=0, seed=seed
        )
        ids.append(raw.headers["x-request-id"])
    database = next(Path(local.log.parent).glob("capture.db"))
    rows: list[Any] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(rows) < 2:
        rows = _rows(f"sqlite+aiosqlite:///{database}", ids)
        time.sleep(0.05)
    by_id = {row.id: row for row in rows}
    assert not by_id[ids[0]].cache_hit and by_id[ids[0]].cost_usd > 0
    assert by_id[ids[1]].cache_hit and by_id[ids[1]].cost_usd == 0


def _rows(url: str, ids: list[str]) -> list[Any]:
    async def fetch() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(
                    sa.text("SELECT id, cache_hit, cost_usd FROM calls WHERE id IN (:a, :b)"),
                    {"a": ids[0], "b": ids[1]},
                )
                return list(result)
        finally:
            await engine.dispose()

    return asyncio.run(fetch())


@needs_redis
def test_replicas_share_the_cache_through_redis(tmp_path: Path, simulator: Running) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    first = start_gateway(tmp_path, config(simulator.url, prefix))
    second = start_gateway(tmp_path, config(simulator.url, prefix))
    try:
        seed = uuid.uuid4().int % 10_000
        miss = client(first).chat.completions.with_raw_response.create(
            model="cached", messages=MESSAGES, temperature=0, seed=seed
        )
        time.sleep(0.1)  # stored just after the answer
        hit = client(second).chat.completions.with_raw_response.create(
            model="cached", messages=MESSAGES, temperature=0, seed=seed
        )
        assert miss.headers["x-gateway-cache"] == "miss"
        assert hit.headers["x-gateway-cache"] == "hit"
        assert hit.parse().choices[0].message.content == miss.parse().choices[0].message.content
    finally:
        first.stop()
        second.stop()


@needs_redis
@pytest.mark.parametrize("lean", [True, False], ids=["lean-connection", "redis-py"])
def test_the_redis_backend_stores_answers_and_treats_a_dead_redis_as_a_miss(lean: bool) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        connection = PipelinedRedis.like(client) if lean else None
        cache = RedisCache(client, prefix=f"test-{uuid.uuid4().hex}", connection=connection)
        answer = CachedAnswer(True, b"data: {}\n\ndata: [DONE]\n\n")
        assert await cache.get("k") is None
        await cache.put("k", answer, 5)
        assert await cache.get("k") == answer
        if connection is not None:
            # a store started in the background is found by the very next lookup (one socket)
            stored = asyncio.get_running_loop().create_task(cache.put("next", answer, 5))
            await asyncio.sleep(0)
            assert await cache.get("next") == answer
            await stored
        await cache.put("short", CachedAnswer(False, b"{}"), 0.05)
        await asyncio.sleep(0.1)
        assert await cache.get("short") is None  # the TTL holds
        if connection is not None:
            await connection.aclose()
        await client.aclose()

        dead = aioredis.Redis.from_url(
            f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, socket_connect_timeout=0.2
        )
        cache = RedisCache(dead, connection=PipelinedRedis.like(dead) if lean else None)
        assert await cache.get("k") is None
        assert cache.errors == 1
        assert await cache.get("k") is None  # not asked again for a while
        assert cache.errors == 1
        await dead.aclose()

    asyncio.run(run())
