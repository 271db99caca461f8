"""What a call runs on, and how a reload replaces it without failing a call.

A ``Runtime`` is an immutable snapshot: settings, route table, authenticator and provider
clients. A call takes the current one when it starts and keeps it to the end, so an admin change
or a reload affects only calls that start afterwards. Provider clients whose configuration did
not change are carried over; the others are closed once the last call using them has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from gateway.auth import Authenticator, Principal
from gateway.settings import Settings
from router.breaker import Breakers
from router.config import ProviderConfig
from router.table import RouteTable
from router.upstream import AiohttpUpstream, Upstream

log = logging.getLogger("gateway.runtime")

UpstreamFactory = Callable[[str, ProviderConfig], Upstream]


class Runtime:
    __slots__ = ("_retired", "authenticator", "in_flight", "routes", "settings", "upstreams")

    def __init__(
        self,
        settings: Settings,
        upstreams: Mapping[str, Upstream],
        extra_keys: Callable[[], Mapping[str, Principal]] | None = None,
    ) -> None:
        self.settings = settings
        self.routes = RouteTable.from_config(settings.routes)
        self.authenticator = Authenticator(settings.auth, extra_keys)
        self.upstreams = upstreams
        self.in_flight = 0
        self._retired: Callable[[], None] | None = None


def _default_factory(name: str, config: ProviderConfig) -> Upstream:
    return AiohttpUpstream(name, config)


class RuntimeManager:
    """Holds the current runtime; swaps it atomically (the event loop is single-threaded)."""

    def __init__(self, settings: Settings, factory: UpstreamFactory | None = None) -> None:
        self._factory = factory or _default_factory
        self._clients: dict[tuple[str, str], Upstream] = {}
        self._pending_close: set[asyncio.Task[None]] = set()
        self.breakers = Breakers()
        self._initial = settings
        self.current: Runtime | None = None
        self.extra_keys: Callable[[], Mapping[str, Principal]] | None = None
        """Virtual keys, by sha256, consulted after the config's keys."""
        self.on_replace: list[Callable[[Settings], None]] = []
        """Told of every new configuration (a reload, an admin change), after it is current."""

    @property
    def settings(self) -> Settings:
        return self.current.settings if self.current is not None else self._initial

    def start(self) -> None:
        """Open the provider clients; call inside the running event loop."""
        self.current = self._build(self._initial)

    async def stop(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    def acquire(self) -> Runtime:
        runtime = self.current
        assert runtime is not None, "the gateway has not started"
        runtime.in_flight += 1
        return runtime

    def release(self, runtime: Runtime) -> None:
        runtime.in_flight -= 1
        if runtime.in_flight == 0 and runtime._retired is not None:
            runtime._retired()
            runtime._retired = None

    def replace(self, settings: Settings) -> Runtime:
        """Make ``settings`` current; calls already running finish on the old runtime."""
        old = self.current
        new = self._build(settings)
        self.current = new
        if old is not None:
            kept = {id(client) for client in new.upstreams.values()}
            orphans = [c for c in old.upstreams.values() if id(c) not in kept]
            for key in [k for k, c in self._clients.items() if id(c) not in kept]:
                del self._clients[key]
            if orphans:

                def close_orphans() -> None:
                    task = asyncio.get_running_loop().create_task(_close_all(orphans))
                    self._pending_close.add(task)
                    task.add_done_callback(self._pending_close.discard)

                if old.in_flight == 0:
                    close_orphans()
                else:
                    old._retired = close_orphans
        for listener in self.on_replace:
            listener(settings)
        return new

    def _build(self, settings: Settings) -> Runtime:
        upstreams: dict[str, Upstream] = {}
        for name, config in settings.providers.items():
            # Secrets included: a changed key is a changed client.
            key = (name, config.model_dump_json() + config.api_key_value())
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self._factory(name, config)
            upstreams[name] = client
        return Runtime(settings, upstreams, self.extra_keys)


async def _close_all(clients: list[Upstream]) -> None:
    results = await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.warning("closing a provider client failed: %s", result)
