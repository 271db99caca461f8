"""The gateway calling its own /v1 routes, in-process: judges and other background calls.

`InternalClient` sends a call through the whole gateway (routing, fallbacks, breakers, capture,
metrics) without a socket: an ``httpx.AsyncClient`` over ``httpx.ASGITransport`` straight into
the gateway's ASGI app, in the same event loop. It authenticates with a random per-process key
(gateway/auth.py's `InternalKey`) that is never logged, stored or forwarded, and that counts only
on requests whose ASGI scope carries it, which only this transport sets: the same key sent to
the gateway's port is refused like any unknown key (and is nobody in particular under
``auth: none``). As principal ``gateway-internal`` the calls may use every route, have no
limits, and keep their ``gateway.*`` tags (the marks of capture/ledger.py).

Bounded: at most ``concurrency`` calls at once (the others wait their turn), each given up after
``timeout_s``. Build it once the app exists (in its startup), close it at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from gateway.auth import INTERNAL_SCOPE, InternalKey
from gateway.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("gateway.internal")

_BASE_URL = "http://gateway.internal"


class _Marked:
    """The app, with the internal key in each request's scope (what makes the key count)."""

    def __init__(self, app: ASGIApp, key: InternalKey) -> None:
        self._app = app
        self._key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app({**scope, INTERNAL_SCOPE: self._key}, receive, send)


def tags_header(tags: Mapping[str, str]) -> str:
    """``x-gateway-tags`` for ``tags``; ValueError for a pair the header cannot carry."""
    pairs = []
    for key, value in tags.items():
        if not key.strip() or any(c in key for c in ",=") or "," in value:
            raise ValueError(f"tag {key!r}={value!r} cannot be sent in x-gateway-tags")
        pairs.append(f"{key}={value}")
    return ",".join(pairs)


class InternalClient:
    def __init__(self, app: ASGIApp, *, concurrency: int = 8, timeout_s: float = 120.0) -> None:
        if concurrency < 1 or timeout_s <= 0:
            raise ValueError("concurrency must be >= 1 and timeout_s > 0")
        # Here, not at the top: the gateway imports this module at start, and only a gateway
        # whose autopilot judges builds a client (httpx is ~40 ms of imports).
        import httpx

        self._key = InternalKey()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_Marked(app, self._key)),
            base_url=_BASE_URL,
            timeout=timeout_s,
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout_s = timeout_s
        self.failed = 0
        """Calls that got no answer (an error status, a timeout, an exception)."""

    async def chat(
        self, body: dict[str, Any], tags: Mapping[str, str]
    ) -> tuple[dict[str, Any] | None, str | None]:
        """POST /v1/chat/completions; (the completion, or None on any failure; its request id,
        or None when the gateway answered none). ``body`` must not stream."""
        headers = {
            "authorization": self._key.authorization(),
            "x-gateway-tags": tags_header(tags),
        }
        async with self._slots:
            try:
                async with asyncio.timeout(self._timeout_s):
                    response = await self._client.post(
                        "/v1/chat/completions", json={**body, "stream": False}, headers=headers
                    )
            except Exception as exc:
                self.failed += 1
                log.warning("internal call failed: %s", type(exc).__name__)
                return None, None
        request_id = response.headers.get("x-request-id")
        if response.status_code != 200:
            self.failed += 1
            log.warning("internal call %s answered %s", request_id, response.status_code)
            return None, request_id
        try:
            answer = response.json()
        except ValueError:
            self.failed += 1
            return None, request_id
        return (answer if isinstance(answer, dict) else None), request_id

    async def aclose(self) -> None:
        await self._client.aclose()
