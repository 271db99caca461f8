"""The composition root: ``create_app(settings)`` builds the ASGI application.

/v1/* goes to the hot-path proxy (plain ASGI); everything else to the FastAPI app (health,
admin). The app owns the lifespan: provider clients are opened at startup inside the event loop
and closed at exit. Nothing is built at import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from gateway.admin import build_admin
from gateway.api import build_api
from gateway.proxy import Proxy
from gateway.runtime import RuntimeManager, UpstreamFactory
from gateway.settings import Settings, load_settings, with_upstream_override
from gateway.shadow import ShadowRunner
from gateway.types import Receive, Scope, Send
from router.config import ProviderConfig
from router.upstream import Upstream

log = logging.getLogger("gateway")

CONFIG_ENV = "GATEWAY_CONFIG"
UPSTREAM_OVERRIDE_ENV = "GATEWAY_UPSTREAM_OVERRIDE"
SHUTDOWN_GRACE_SECONDS = 10.0


class GatewayApp:
    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        upstream_factory: UpstreamFactory | None = None,
        upstream_override: str | None = None,
    ) -> None:
        self.config_path = config_path
        self.upstream_override = upstream_override
        self.manager = RuntimeManager(settings, upstream_factory)
        self.shadows = ShadowRunner()
        self.proxy = Proxy(self.manager, self.shadows)
        self.ready = False
        self.api = build_api(
            lambda: self.ready, build_admin(self.manager, lambda: self.config_path, self.load)
        )

    def load(self, path: Path) -> Settings:
        """Read the config file as at startup (with the simulator override, if any)."""
        settings = load_settings(path)
        if self.upstream_override:
            settings = with_upstream_override(settings, self.upstream_override)
        return settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["path"].startswith("/v1/"):
            await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.api(scope, receive, send)

    async def startup(self) -> None:
        self.manager.start()
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False
        await self.shadows.drain(SHUTDOWN_GRACE_SECONDS)
        await self.manager.stop()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings, upstreams: Mapping[str, Upstream] | None = None) -> GatewayApp:
    """The gateway for ``settings``; ``upstreams`` replaces the provider clients (tests)."""
    factory: UpstreamFactory | None = None
    if upstreams is not None:
        given = dict(upstreams)

        def factory(name: str, config: ProviderConfig) -> Upstream:
            return given[name]

    return GatewayApp(settings, upstream_factory=factory)


def create_app_from_environment() -> GatewayApp:
    """Factory for uvicorn workers: the config path (and simulator override) come from env."""
    path = Path(os.environ[CONFIG_ENV])
    override = os.environ.get(UPSTREAM_OVERRIDE_ENV) or None
    settings = load_settings(path)
    if override:
        settings = with_upstream_override(settings, override)
    return GatewayApp(settings, config_path=path, upstream_override=override)
