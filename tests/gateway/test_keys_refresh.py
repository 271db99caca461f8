"""How often a replica reloads its virtual keys (gateway.keys.VirtualKeys), against a real SQLite
store and real Redis servers: every ``refresh_s`` without a channel, rarely while the channel is
heard (a message reloads at once), and every ``refresh_s`` again from the moment it is lost."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from capture.engine import create_engine
from capture.migrate import upgrade_async
from gateway.keys import KeySpec, KeyStore, VirtualKeys, notify
from tests.gateway.test_limits import needs_redis, start_redis
from tests.processes import free_port


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.01)


def scenario(tmp_path: Path, body: Callable[[KeyStore], Awaitable[None]]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"

    async def main() -> None:
        await upgrade_async(url)
        engine = create_engine(url)
        try:
            await body(KeyStore(engine))
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_without_a_channel_the_keys_are_reloaded_every_refresh_s(tmp_path: Path) -> None:
    async def body(store: KeyStore) -> None:
        keys = VirtualKeys(store, refresh_s=0.05)
        await keys.start()
        try:
            assert keys.reloads == 1 and not keys.hearing
            await store.create(KeySpec("made-elsewhere"))  # by another process, say
            await until(lambda: len(keys.by_digest) == 1, 2.0)
            before = keys.reloads
            await asyncio.sleep(0.5)
            assert 5 <= keys.reloads - before <= 11, keys.reloads - before
        finally:
            await keys.stop()

    scenario(tmp_path, body)


@needs_redis
def test_while_the_channel_is_heard_a_message_reloads_and_the_poll_is_rare(
    tmp_path: Path,
) -> None:
    channel = f"test-keys-{uuid.uuid4().hex[:8]}"

    async def body(store: KeyStore) -> None:
        redis = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = VirtualKeys(store, redis, channel, refresh_s=0.05, heard_refresh_s=30.0)
        await keys.start()
        try:
            await until(lambda: keys.hearing)
            await asyncio.sleep(0.1)  # the reload on subscribing
            before = keys.reloads
            await asyncio.sleep(0.5)
            assert keys.reloads == before  # no poll every 50 ms while the channel is heard
            await store.create(KeySpec("made-elsewhere"))
            await notify(redis, channel)
            await until(lambda: len(keys.by_digest) == 1, 2.0)
            assert keys.reloads == before + 1
        finally:
            await keys.stop()
            await redis.aclose()

    scenario(tmp_path, body)


def test_a_lost_channel_reloads_at_once_then_polls_every_refresh_s(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(port)

    async def body(store: KeyStore) -> None:
        redis = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
        keys = VirtualKeys(store, redis, "gateway:keys", refresh_s=0.1, heard_refresh_s=30.0)
        await keys.start()
        try:
            await until(lambda: keys.hearing)
            await store.create(KeySpec("made-while-redis-is-down"))  # no message: Redis is gone
            server.terminate()
            server.wait(timeout=10)
            await until(lambda: not keys.hearing)
            await until(lambda: len(keys.by_digest) == 1, 1.0)  # not 30 s later
            before = keys.reloads
            await asyncio.sleep(0.55)
            assert 3 <= keys.reloads - before <= 7, keys.reloads - before
        finally:
            await keys.stop()
            await redis.aclose()

    try:
        scenario(tmp_path, body)
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=10)
