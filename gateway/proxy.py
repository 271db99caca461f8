"""The hot path: /v1 calls, authenticated, routed by model and relayed to a provider.

A plain ASGI callable, no framework: every microsecond here is added to every call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.auth import Authenticator
from gateway.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    from_upstream,
)
from gateway.ids import new_request_id
from gateway.streaming import UsageStripper, error_event
from gateway.types import RawHeaders, Receive, Scope, Send
from gateway.wire import ROUTED_ENDPOINTS, parse_request
from router.errors import UpstreamError
from router.table import Decision, RouteTable
from router.upstream import Upstream, UpstreamResponse

log = logging.getLogger("gateway.proxy")

# Request headers that are ours or the connection's, never the upstream's business.
_REQUEST_HEADERS_KEPT_BACK = frozenset(
    {
        b"host",
        b"authorization",
        b"proxy-authorization",
        b"api-key",
        b"cookie",
        b"content-length",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
        b"accept-encoding",
    }
)
# Response headers the ASGI server or the gateway sets itself.
_RESPONSE_HEADERS_KEPT_BACK = frozenset(
    {
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "date",
        "server",
        "set-cookie",
        "x-request-id",
        "alt-svc",
    }
)
_JSON = b"application/json"
_SSE_HEADERS: RawHeaders = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_SSE_HEADER_NAMES = frozenset(name for name, _ in _SSE_HEADERS)


class _Call:
    """What one call has learned so far; the error path reads it to answer correctly."""

    __slots__ = ("decision", "request_id", "responded", "started", "upstream_seconds")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.responded = False
        self.request_id = new_request_id()
        self.decision: Decision | None = None
        self.upstream_seconds = 0.0

    def headers(self) -> RawHeaders:
        out: RawHeaders = [(b"x-request-id", self.request_id.encode())]
        decision = self.decision
        if decision is not None:
            out.append((b"x-gateway-route", decision.route.encode()))
            out.append((b"x-gateway-variant", decision.variant.encode()))
            out.append((b"x-gateway-upstream-model", decision.upstream_model.encode()))
        overhead_ms = (time.perf_counter() - self.started - self.upstream_seconds) * 1000.0
        out.append((b"x-gateway-overhead-ms", f"{overhead_ms:.3f}".encode()))
        return out


class Proxy:
    def __init__(
        self,
        *,
        routes: RouteTable,
        upstreams: Mapping[str, Upstream],
        authenticator: Authenticator,
        passthrough_provider: str,
        max_body_bytes: int,
    ) -> None:
        self.routes = routes
        self.upstreams = upstreams
        self.authenticator = authenticator
        self.passthrough_provider = passthrough_provider
        self.max_body_bytes = max_body_bytes
        self.models_created = int(time.time())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = _Call()
        try:
            await self._handle(scope, receive, send, call)
        except GatewayError as exc:
            if not call.responded:
                await _send_error(send, exc, call)
        except UpstreamError as exc:
            log.warning("request %s: %s", call.request_id, exc)
            if not call.responded:
                await _send_error(send, from_upstream(exc), call)
        except Exception:
            log.exception("unexpected error in request %s", call.request_id)
            if not call.responded:
                error = InternalError(
                    f"The gateway failed to handle this request (request id {call.request_id})."
                )
                await _send_error(send, error, call)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, call: _Call) -> None:
        authorization: bytes | None = None
        content_length: bytes | None = None
        forward: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                content_length = value
            elif name in _REQUEST_HEADERS_KEPT_BACK or name.startswith(b"x-gateway-"):
                continue
            else:
                forward[name.decode("latin-1")] = value.decode("latin-1")
        self.authenticator.authenticate(authorization)

        path: str = scope["path"]
        method: str = scope["method"]
        endpoint = ROUTED_ENDPOINTS.get(path) if method == "POST" else None
        if endpoint is None:
            if method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
                await self._models(path, send, call)
                return
            raw = await _read_body(receive, content_length, self.max_body_bytes)
            upstream = self.upstreams[self.passthrough_provider]
            query = scope["query_string"].decode("latin-1")
            sent = time.perf_counter()
            response = await upstream.send(method, path[3:], query, forward, raw)
            call.upstream_seconds = time.perf_counter() - sent
            await self._relay_stream(response, send, call, None, check_done=False)
            return

        raw = await _read_body(receive, content_length, self.max_body_bytes)
        body, model = parse_request(endpoint, raw)
        route = self.routes.get(model)
        if route is None:
            raise ModelNotFound(
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
            )
        decision = call.decision = route.choose()
        changed = decision.upstream_model != model
        if changed:
            body["model"] = decision.upstream_model
        stream = body.get("stream") is True
        stripper: UsageStripper | None = None
        if stream and endpoint.stream_usage_option:
            options = body.get("stream_options")
            if options is None or (isinstance(options, dict) and not options.get("include_usage")):
                body["stream_options"] = {**(options or {}), "include_usage": True}
                stripper = UsageStripper()
                changed = True
        if changed:
            raw = orjson.dumps(body)
        forward["content-type"] = "application/json"

        upstream = self.upstreams[decision.provider]
        sent = time.perf_counter()
        response = await upstream.send("POST", path[3:], "", forward, raw)
        if stream and response.status == 200:
            call.upstream_seconds = time.perf_counter() - sent
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("text/event-stream"):
                await self._relay_stream(response, send, call, stripper, check_done=True)
                return
        data = await response.read()
        call.upstream_seconds = time.perf_counter() - sent
        await _send_full(send, response.status, _upstream_headers(response), data, call)

    async def _relay_stream(
        self,
        response: UpstreamResponse,
        send: Send,
        call: _Call,
        stripper: UsageStripper | None,
        *,
        check_done: bool,
    ) -> None:
        headers = _upstream_headers(response)
        if check_done:
            headers = [h for h in headers if h[0] not in _SSE_HEADER_NAMES] + _SSE_HEADERS
        headers.extend(call.headers())
        call.responded = True
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        tail = b""
        try:
            async for chunk in response.iter_chunks():
                if check_done:
                    tail = (tail + chunk)[-16:]
                if stripper is not None:
                    chunk = stripper.feed(chunk)
                    if not chunk:
                        continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if stripper is not None and (rest := stripper.flush()):
                await send({"type": "http.response.body", "body": rest, "more_body": True})
            if check_done and b"[DONE]" not in tail:
                raise _Truncated()
        except (UpstreamError, _Truncated) as exc:
            detail = exc.detail if isinstance(exc, UpstreamError) else "the stream ended early"
            log.warning("stream %s cut off: %s", call.request_id, detail)
            event = error_event(
                f"The upstream stream was interrupted ({detail}); the answer is incomplete.",
                "upstream_error",
                "upstream_stream_interrupted",
            )
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _models(self, path: str, send: Send, call: _Call) -> None:
        def card(name: str) -> dict[str, Any]:
            return {
                "id": name,
                "object": "model",
                "created": self.models_created,
                "owned_by": "gateway",
            }

        if path == "/v1/models":
            body = {"object": "list", "data": [card(name) for name in self.routes.names()]}
        else:
            name = path.removeprefix("/v1/models/")
            if self.routes.get(name) is None:
                raise ModelNotFound(f"The model `{name}` does not exist.", param="model")
            body = card(name)
        await _send_full(send, 200, [(b"content-type", _JSON)], orjson.dumps(body), call)


class _Truncated(Exception):
    pass


def _upstream_headers(response: UpstreamResponse) -> RawHeaders:
    out: RawHeaders = []
    for name, value in response.headers.items():
        lower = name.lower()
        if lower in _RESPONSE_HEADERS_KEPT_BACK:
            if lower == "x-request-id":
                out.append((b"x-upstream-request-id", value.encode("latin-1")))
            continue
        out.append((lower.encode("latin-1"), value.encode("latin-1")))
    return out


async def _read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise InvalidRequest("Invalid Content-Length header.") from None
        if declared > limit:
            raise PayloadTooLarge(f"The request body is {declared} bytes; the limit is {limit}.")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("The client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        parts.append(chunk)
    return b"".join(parts)


async def _send_full(
    send: Send, status: int, headers: RawHeaders, body: bytes, call: _Call
) -> None:
    headers.extend(call.headers())
    headers.append((b"content-length", str(len(body)).encode()))
    call.responded = True
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_error(send: Send, exc: GatewayError, call: _Call) -> None:
    await _send_full(send, exc.status, [(b"content-type", _JSON)], exc.body(), call)
