"""The response cache, opt-in per route: exact matches of the normalised request.

Only deterministic calls are cached unless the route says otherwise: ``temperature: 0`` or a
``seed``. The key is the endpoint, the upstream model the call was routed to (so each variant of
an A/B test keeps its own answers), and the body without ``model``, ``user``, ``metadata`` and
``stream_options``, with sorted keys. A streamed call is stored as the upstream's event stream
and replayed as a stream; a plain call as its JSON body. Only complete 200 answers are stored.
Backends: in this process (LRU, bounded), or Redis shared by every replica; a Redis that cannot
be reached is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from capture.errortext import describe_error
from gateway.resp import PipelinedRedis

log = logging.getLogger("gateway.cache")

_IGNORED = frozenset({"model", "user", "metadata", "stream_options"})


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    stream: bool
    body: bytes

    def encode(self) -> bytes:
        return (b"s" if self.stream else b"j") + self.body

    @classmethod
    def decode(cls, data: bytes) -> CachedAnswer | None:
        if not data or data[:1] not in (b"s", b"j"):
            return None
        return cls(data[:1] == b"s", data[1:])


def cacheable(body: dict[str, Any], deterministic_only: bool) -> bool:
    if body.get("n") not in (None, 1):
        return False
    if not deterministic_only:
        return True
    return body.get("temperature") == 0 or body.get("seed") is not None


def cache_key(path: str, upstream_model: str, body: dict[str, Any]) -> str:
    kept = {k: v for k, v in body.items() if k not in _IGNORED}
    digest = hashlib.sha256(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{path}:{upstream_model}:{digest}"


class ResponseCache(Protocol):
    async def get(self, key: str) -> CachedAnswer | None: ...

    async def put(self, key: str, answer: CachedAnswer, ttl_s: float) -> None: ...


class MemoryCache:
    """An LRU of at most ``max_entries`` answers and ``max_bytes`` in all, with TTLs."""

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0

    async def get(self, key: str) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if expires < time.monotonic():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return answer

    async def put(self, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        if len(answer.body) > self._max_bytes:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (time.monotonic() + ttl_s, answer)
        self._bytes += len(answer.body)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._remove(next(iter(self._entries)))

    def _remove(self, key: str) -> None:
        _, answer = self._entries.pop(key)
        self._bytes -= len(answer.body)


class RedisCache:
    """Answers shared by every replica. Errors are misses, and Redis is left alone for
    ``retry_s`` seconds after one, so a dead Redis costs the calls nothing."""

    def __init__(
        self,
        client: Any,
        prefix: str = "gateway",
        retry_s: float = 1.0,
        connection: PipelinedRedis | None = None,
    ) -> None:
        self._redis = client
        # With a lean connection (gateway/resp.py) lookups and stores share it, in order: an
        # answer stored is found by the very next call; otherwise redis-py.
        self._connection = connection
        self._prefix = f"{prefix}:cache:"
        self._retry_s = retry_s
        self._down_until = 0.0
        self.errors = 0

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if time.monotonic() >= self._down_until:
            log.warning(
                "response cache: Redis unreachable (%s); treating calls as misses",
                describe_error(exc),
            )
        self._down_until = time.monotonic() + self._retry_s

    async def get(self, key: str) -> CachedAnswer | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            if self._connection is not None:
                data = await self._connection.execute("GET", self._prefix + key)
            else:
                data = await self._redis.get(self._prefix + key)
        except Exception as exc:
            self._failed(exc)
            return None
        return CachedAnswer.decode(data) if data else None

    async def put(self, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        if time.monotonic() < self._down_until:
            return
        try:
            if self._connection is not None:
                ttl_ms = max(1, int(ttl_s * 1000))
                await self._connection.execute(
                    "SET", self._prefix + key, answer.encode(), "PX", ttl_ms
                )
            else:
                await self._redis.set(self._prefix + key, answer.encode(), px=int(ttl_s * 1000))
        except Exception as exc:
            self._failed(exc)
