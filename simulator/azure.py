"""Azure OpenAI's URL scheme and headers, in front of the OpenAI endpoints.

Deployment URLs, as the ``AzureOpenAI`` client builds them::

    POST /openai/deployments/{deployment}/chat/completions?api-version=2024-10-21
    POST /openai/deployments/{deployment}/completions?api-version=...
    POST /openai/deployments/{deployment}/embeddings?api-version=...

need the ``api-key`` header (else 401 with Azure's ``{"error": {"code": "401", "message":
"Access denied due to invalid subscription key or wrong API endpoint..."}}``) and an
``api-version`` query (absent: 404 "Resource not found"; not a date, optionally
``-preview``: 400 "API version not supported"). The deployment is the model: the answer's
``model`` is the deployment's name, and the body's ``model``, if any, is ignored.

The v1 API (``/openai/v1/chat/completions``, ``/completions``, ``/embeddings``,
``/responses``) takes the ``api-key`` header or ``Authorization: Bearer``; ``api-version`` is
optional (``v1``, ``preview`` or ``latest``), and the body's ``model`` names the deployment.

Past these checks each call is the OpenAI endpoint's: the same content, streaming, latency
profile (by deployment name) and faults. Any other path under /openai/ is a 404.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson
from aiohttp import web

from simulator.chat import chat_completions
from simulator.completions import completions
from simulator.embeddings import embeddings
from simulator.exchange import DEPLOYMENT, GATE, Gate, Handler, record
from simulator.responses import responses
from simulator.wire import ShapedError

ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide"
    " a valid key for an active subscription and use a correct regional API endpoint for your"
    " resource."
)
DATED_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
V1_VERSIONS = ("v1", "preview", "latest")


class AzureError(ShapedError):
    """An error in the shape Azure's front door answers: ``{"error": {"code", "message"}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status_code = status
        super().__init__(
            headers=headers,
            text=orjson.dumps({"error": {"code": code, "message": message}}).decode(),
            content_type="application/json",
        )


def _key(headers: dict[str, str], bearer: bool) -> str:
    key = headers.get("api-key", "")
    if not key.strip() and bearer:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        key = token if scheme.lower() == "bearer" else ""
    return key.strip()


def deployment_gate(request: web.Request, headers: dict[str, str]) -> None:
    if not _key(headers, bearer=False):
        raise AzureError(401, "401", ACCESS_DENIED)
    version = request.query.get("api-version")
    if version is None:
        raise AzureError(404, "404", "Resource not found")
    if not DATED_VERSION.fullmatch(version):
        raise AzureError(400, "BadRequest", "API version not supported")


def v1_gate(request: web.Request, headers: dict[str, str]) -> None:
    if not _key(headers, bearer=True):
        raise AzureError(401, "401", ACCESS_DENIED)
    version = request.query.get("api-version")
    if version is not None and version not in V1_VERSIONS:
        raise AzureError(400, "BadRequest", "API version not supported")


def _routed(handler: Handler, gate: Gate, by_deployment: bool) -> Handler:
    async def route(request: web.Request) -> web.StreamResponse:
        request[GATE] = gate
        if by_deployment:
            request[DEPLOYMENT] = request.match_info["deployment"]
        return await handler(request)

    return route


async def not_found(request: web.Request) -> web.StreamResponse:
    await record(request)
    raise AzureError(404, "404", "Resource not found")


def add_azure_routes(app: web.Application) -> None:
    router = app.router
    endpoints: dict[str, Handler] = {
        "chat/completions": chat_completions,
        "completions": completions,
        "embeddings": embeddings,
    }
    for tail, handler in endpoints.items():
        router.add_post(
            "/openai/deployments/{deployment}/" + tail, _routed(handler, deployment_gate, True)
        )
    for tail, handler in {**endpoints, "responses": responses}.items():
        router.add_post("/openai/v1/" + tail, _routed(handler, v1_gate, False))
    router.add_route("*", "/openai/{tail:.*}", not_found)
