"""Liveness, readiness and metrics: answered as plain ASGI, before (and without) the FastAPI app.

A gateway is probed and scraped from its first second on; answering ``GET /healthz``,
``GET /readyz`` and ``GET /metrics`` here lets the FastAPI app (admin, dashboard, feedback:
gateway/api.py) be built when it is first asked for, not at every start (FastAPI with its
OpenAPI models is ~0.3 s of a start and ~11 MiB of every process). gateway/api.py answers the
same three from these same functions (other methods, and an app built on its own in tests).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

from gateway.errors import error_body
from gateway.metrics import Metrics
from gateway.types import Scope, Send

log = logging.getLogger("gateway.api")

PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
JSON = "application/json"

Answer = tuple[int, bytes, str]
"""(status, body, content type)."""


class ProbedState(Protocol):
    ready: bool
    metrics: Metrics

    def sync_metrics(self) -> None: ...


def _json(data: dict[str, str]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def healthz() -> Answer:
    """Liveness: the process answers."""
    return 200, _json({"status": "ok"}), JSON


def readyz(state: ProbedState) -> Answer:
    """Readiness: started, provider clients open, not shutting down (503 from SIGTERM on,
    while calls are still served: a load balancer stops sending before the listener goes)."""
    if state.ready:
        return 200, _json({"status": "ready"}), JSON
    return 503, _json({"status": "not ready"}), JSON


async def metrics(state: ProbedState) -> Answer:
    state.sync_metrics()
    if state.metrics.multiprocess:  # merging every worker's files: not on the event loop
        body, content_type = await asyncio.to_thread(state.metrics.render)
    else:
        body, content_type = state.metrics.render()
    return 200, body, content_type


async def answer(state: ProbedState, path: str) -> Answer:
    """The answer to ``GET path`` (one of ``PATHS``)."""
    if path == "/healthz":
        return healthz()
    if path == "/readyz":
        return readyz(state)
    return await metrics(state)


async def serve(state: ProbedState, scope: Scope, send: Send) -> None:
    """Answer ``GET`` of one of ``PATHS`` as gateway/api.py did (500 in OpenAI's shape when
    rendering fails)."""
    try:
        status, body, content_type = await answer(state, scope["path"])
    except Exception:
        log.exception("unexpected error on %s", scope["path"])
        status, content_type = 500, JSON
        body = error_body(
            "The gateway failed to handle this request.", "server_error", None, "internal_error"
        )
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", content_type.encode("latin-1")),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
