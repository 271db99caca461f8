"""The composition root: ``create_app(settings)`` builds the ASGI application.

/v1/* goes to the hot-path proxy (plain ASGI); everything else to the FastAPI app. The app owns
the lifespan: provider clients are opened at startup inside the event loop and closed at exit.
Nothing is built at import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from gateway.api import build_api
from gateway.auth import Authenticator
from gateway.proxy import Proxy
from gateway.settings import Settings, load_settings, with_upstream_override
from gateway.types import Receive, Scope, Send
from router.table import RouteTable
from router.upstream import AiohttpUpstream, Upstream, build_upstreams, close_all

log = logging.getLogger("gateway")

CONFIG_ENV = "GATEWAY_CONFIG"
UPSTREAM_OVERRIDE_ENV = "GATEWAY_UPSTREAM_OVERRIDE"


class GatewayApp:
    def __init__(self, settings: Settings, upstreams: Mapping[str, Upstream] | None = None):
        self.settings = settings
        self._injected_upstreams = upstreams
        self._owned_upstreams: dict[str, AiohttpUpstream] = {}
        self.upstreams: dict[str, Upstream] = {}
        self.ready = False
        self.proxy = Proxy(
            routes=RouteTable.from_config(settings.routes),
            upstreams=self.upstreams,
            authenticator=Authenticator(settings.auth),
            passthrough_provider=settings.passthrough_provider,
            max_body_bytes=settings.server.max_body_bytes,
        )
        self.api = build_api(lambda: self.ready)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["path"].startswith("/v1/"):
            await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.api(scope, receive, send)

    async def startup(self) -> None:
        if self._injected_upstreams is not None:
            self.upstreams.update(self._injected_upstreams)
        else:
            self._owned_upstreams = build_upstreams(self.settings.providers)
            self.upstreams.update(self._owned_upstreams)
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False
        await close_all(self._owned_upstreams.values())

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
    return GatewayApp(settings, upstreams)


def create_app_from_environment() -> GatewayApp:
    """Factory for uvicorn workers: the config path (and simulator override) come from env."""
    settings = load_settings(os.environ[CONFIG_ENV])
    override = os.environ.get(UPSTREAM_OVERRIDE_ENV)
    if override:
        settings = with_upstream_override(settings, override)
    return create_app(settings)
