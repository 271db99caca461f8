"""Admin changes shared by every replica through Redis.

A change to a route made on one replica (weights, shadow, a new variant) is stored in the hash
``<prefix>:routes`` and announced on the channel of the same name; every replica applies it,
and one that starts later applies what the hash holds. A reload clears the hash and tells
every replica to re-read its own configuration file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from capture.errortext import describe_error
from gateway.runtime import RuntimeManager
from router.config import RouteConfig

log = logging.getLogger("gateway.sync")


class RouteSync:
    def __init__(
        self,
        redis: Any,
        prefix: str,
        manager: RuntimeManager,
        reload: Callable[[], None],
    ) -> None:
        self._redis = redis
        self._key = f"{prefix}:routes"
        self._manager = manager
        self._reload = reload
        self._origin = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            stored = await self._redis.hgetall(self._key)
        except Exception as exc:
            log.warning(
                "shared route changes unavailable (Redis: %s); using the file's",
                describe_error(exc),
            )
            stored = {}
        for route, data in stored.items():
            self._apply(_text(route), data)
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def share_route(self, route: str, config: RouteConfig) -> None:
        data = config.model_dump_json()
        message = orjson.dumps({"origin": self._origin, "route": route})
        try:
            await self._redis.hset(self._key, route, data)
            await self._redis.publish(self._key, message)
        except Exception as exc:
            log.warning(
                "could not share the change of route %s (Redis: %s)", route, describe_error(exc)
            )

    async def share_reload(self) -> None:
        try:
            await self._redis.delete(self._key)
            await self._redis.publish(
                self._key, orjson.dumps({"origin": self._origin, "reload": 1})
            )
        except Exception as exc:
            log.warning(
                "could not tell the other replicas to reload (Redis: %s)", describe_error(exc)
            )

    def _apply(self, route: str, data: bytes | str) -> None:
        settings = self._manager.settings
        try:
            config = RouteConfig.model_validate_json(data)
        except ValidationError as exc:
            log.warning("ignoring a shared change of route %s: %s", route, describe_error(exc))
            return
        missing = {v.provider for v in config.variants.values()} - set(settings.providers)
        if missing:
            log.warning(
                "ignoring a shared change of route %s: unknown provider(s) %s", route, missing
            )
            return
        self._manager.replace(
            settings.model_copy(update={"routes": {**settings.routes, route: config}})
        )

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(self._key)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    await self._handle(orjson.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "shared route changes: Redis channel lost (%s); retrying", describe_error(exc)
                )
                await asyncio.sleep(1.0)

    async def _handle(self, event: dict[str, Any]) -> None:
        if event.get("origin") == self._origin:
            return
        if event.get("reload"):
            try:
                self._reload()
            except Exception as exc:
                log.error("reload asked by another replica failed: %s", describe_error(exc))
            return
        route = event.get("route")
        if isinstance(route, str):
            data = await self._redis.hget(self._key, route)
            if data is not None:
                self._apply(route, data)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
