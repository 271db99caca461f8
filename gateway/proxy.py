"""The hot path: /v1 calls, authenticated, routed by model and relayed to a provider.

A plain ASGI callable, no framework: every microsecond here is added to every call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable
from typing import Any

import orjson

from capture.ledger import FORCED_TAG, PURPOSE_TAG, ROLLOUT_TAG
from gateway.auth import INTERNAL, INTERNAL_SCOPE
from gateway.bodyread import BodyReader
from gateway.cache import CachedAnswer, MemoryCache, ResponseCache, cache_key, cacheable
from gateway.dialect import body_user, count_tokens, forwarded_headers, translate_answer
from gateway.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    from_upstream,
)
from gateway.limits import Limiter, LocalLimiter
from gateway.passthrough import upstream_target
from gateway.payload import UpstreamPayload, end_marker
from gateway.ratelimits import ratelimit_headers, refusal
from gateway.recording import Recorder, routing_tags, strip_marks
from gateway.relay import (
    JSON,
    Call,
    ChunkFilter,
    relay_stream,
    send_error,
    send_full,
    upstream_headers,
)
from gateway.runtime import Runtime, RuntimeManager
from gateway.shadow import ShadowResult, ShadowRunner
from gateway.types import Receive, Scope, Send
from gateway.wire import COUNT_TOKENS_PATH, ROUTED_ENDPOINTS, Endpoint, parse_request
from router.errors import UpstreamError
from router.fallback import send_with_fallbacks
from router.table import Decision, UnknownVariant
from router.upstream import BufferedResponse, Upstream, UpstreamResponse

log = logging.getLogger("gateway.proxy")

# Request headers that are ours or the connection's, never the upstream's business.
_REQUEST_HEADERS_KEPT_BACK = frozenset(
    {
        b"host",
        b"authorization",
        b"proxy-authorization",
        b"api-key",
        b"x-api-key",
        b"x-goog-api-key",
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


_STREAM_ERROR = re.compile(rb'^(?:event: ?error\r?$|data: ?\{\s*"error"\s*:)', re.MULTILINE)
"""An error event in a stream of either dialect: Anthropic's ``event: error``, OpenAI's (and
vLLM's) ``data: {"error": ...}``. A chunk's text cannot fake one: JSON escapes its newlines."""


class _Request:
    """The parts of the request headers the gateway reads, sorted out in one pass."""

    __slots__ = ("authorization", "capture", "content_length", "forward", "tags", "user", "variant")

    def __init__(self, scope: Scope) -> None:
        self.authorization: bytes | None = None
        self.content_length: bytes | None = None
        self.user: str | None = None
        self.variant: str | None = None
        self.tags: str | None = None
        self.capture = True
        self.forward: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"authorization":
                self.authorization = value
            elif name == b"x-api-key":
                # What Anthropic's SDKs send: the same gateway key, in their header.
                if self.authorization is None:
                    self.authorization = b"Bearer " + value
            elif name == b"content-length":
                self.content_length = value
            elif name.startswith(b"x-gateway-"):
                if name == b"x-gateway-user":
                    self.user = value.decode("latin-1")
                elif name == b"x-gateway-variant":
                    self.variant = value.decode("latin-1")
                elif name == b"x-gateway-tags":
                    self.tags = value.decode("latin-1")
                elif name == b"x-gateway-capture":
                    self.capture = value.strip().lower() not in (b"off", b"false", b"0", b"no")
            elif name not in _REQUEST_HEADERS_KEPT_BACK:
                self.forward[name.decode("latin-1")] = value.decode("latin-1")


class Proxy:
    def __init__(
        self,
        manager: RuntimeManager,
        shadows: ShadowRunner,
        recorder: Recorder,
        limiter: Limiter | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.manager = manager
        self.shadows = shadows
        self.recorder = recorder
        self.limiter: Limiter = limiter or LocalLimiter()
        self.cache: ResponseCache = cache or MemoryCache()
        self.bodies = BodyReader()
        self._background: set[asyncio.Task[None]] = set()
        self.models_created = int(time.time())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = Call()
        runtime = self.manager.acquire()
        try:
            await self._handle(runtime, scope, receive, send, call)
        except GatewayError as exc:
            call.error = call.error or exc.message
            if not call.responded:
                await send_error(send, exc, call)
            if call.endpoint is None:
                self.recorder.rejected(exc.status, exc.code)
        except UpstreamError as exc:
            log.warning("request %s: %s", call.request_id, exc)
            call.error = call.error or str(exc)
            if not call.responded:
                await send_error(send, from_upstream(exc), call)
        except Exception as exc:
            log.exception("unexpected error in request %s", call.request_id)
            call.error = call.error or f"internal error: {type(exc).__name__}"
            if not call.responded:
                error = InternalError(
                    f"The gateway failed to handle this request (request id {call.request_id})."
                )
                await send_error(send, error, call)
        finally:
            self.manager.release(runtime)
            if call.endpoint is not None:
                self.recorder.finish(call, call.capture)
                if call.cache_key is not None and not call.cache_hit:
                    self._keep_answer(call)

    def _read_body(self, runtime: Runtime, receive: Receive, request: _Request) -> Awaitable[bytes]:
        server = runtime.settings.server
        return self.bodies.read(
            receive, request.content_length, server.max_body_bytes, server.body_read_timeout_s
        )

    def _keep_answer(self, call: Call) -> None:
        """Store a complete 200 answer in the cache, in the background."""
        if call.status != 200 or call.error is not None or call.cache_key is None:
            return
        if call.sent is not None:  # translated: the client's dialect, as it was sent
            answer = CachedAnswer(call.stream, b"".join(call.sent))
        elif call.response_body is not None:
            answer = CachedAnswer(False, call.response_body)
        elif call.chunks:
            answer = CachedAnswer(True, b"".join(call.chunks))
        else:
            return
        if answer.stream and _STREAM_ERROR.search(answer.body):
            return  # an error event mid-stream (ended with [DONE] all the same): not to repeat
        task = asyncio.get_running_loop().create_task(
            self.cache.put(call.cache_key, answer, call.cache_ttl)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _handle(
        self, runtime: Runtime, scope: Scope, receive: Receive, send: Send, call: Call
    ) -> None:
        request = _Request(scope)
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/v1/messages"):
            call.dialect = "anthropic"  # errors from here on are in Anthropic's shape
        principal = runtime.authenticator.authenticate(
            request.authorization, scope.get(INTERNAL_SCOPE)
        )
        if request.tags is not None and "gateway." in request.tags and principal is not INTERNAL:
            request.tags = strip_marks(request.tags)  # a client may not mark its own calls
        endpoint = ROUTED_ENDPOINTS.get(path) if method == "POST" else None
        if endpoint is None:
            if method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
                anthropic = "anthropic-version" in request.forward
                await self._models(runtime, path, send, call, anthropic)
            elif method == "POST" and path == COUNT_TOKENS_PATH:
                # Counting is work (here, or a call on the provider's key): held to the key's
                # limits like a call, and counted as a request.
                if principal.limits:
                    verdict = await self.limiter.begin(principal.key_id, principal.limits)
                    if not verdict.allowed:
                        raise refusal(verdict, principal.limits)
                    call.extra_headers = ratelimit_headers(verdict, principal.limits)
                raw = await self._read_body(runtime, receive, request)
                await count_tokens(runtime, raw, principal, request.forward, send, call)
            else:
                await self._passthrough(runtime, scope, receive, send, call, request)
            return

        # The limits' answer (a Redis round trip) travels while the body is read and checked.
        admission = (
            self.limiter.begin(principal.key_id, principal.limits) if principal.limits else None
        )
        try:
            raw = await self._read_body(runtime, receive, request)
            body, model = parse_request(endpoint, raw)
            route = runtime.routes.get(model)
            if route is None:
                raise ModelNotFound(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    param="model",
                )
            if principal.routes is not None and route.name not in principal.routes:
                raise PermissionDenied(
                    f"This gateway key may not call the model `{model}`.", param="model"
                )
        except BaseException:
            if admission is not None:
                admission.discard()
            raise
        if admission is not None:
            verdict = await admission
            if not verdict.allowed:
                raise refusal(verdict, principal.limits)
            call.limits = principal.limits
            call.key_id = principal.key_id
            call.extra_headers = ratelimit_headers(verdict, principal.limits)
        if request.variant is not None and not principal.allow_variant_override:
            raise PermissionDenied("This gateway key may not choose a variant (x-gateway-variant).")
        user = request.user
        if user is None:
            user = body_user(endpoint, body)
        tags = None
        if route.has_slices:  # only then are the call's tags read before it is answered
            tags = routing_tags(request.tags, body if call.dialect == "openai" else None)
        try:
            # Without a user, stickiness falls back to the key (its digest is never stored).
            plan = route.plan(user or principal.key_digest, request.variant, None, tags)
        except UnknownVariant:
            raise InvalidRequest(
                f"Route `{route.name}` has no variant `{request.variant}` "
                f"(it has: {', '.join(route.decisions)}).",
                param="x-gateway-variant",
            ) from None
        payload = UpstreamPayload(endpoint, body, raw, model, path[3:])
        request.forward["content-type"] = "application/json"
        call.decision = call.first_decision = plan.primary
        call.endpoint = endpoint.kind
        call.requested_model = model
        call.request_body = raw
        call.stream = payload.stream
        call.user = user
        call.tags = request.tags
        if request.variant is not None:  # forced, not drawn: marked so no rollout counts it
            call.tags = f"{request.tags},{FORCED_TAG}=1" if request.tags else f"{FORCED_TAG}=1"
        call.capture = request.capture and self.recorder.wants(route.capture)
        call.redact = route.redact

        if route.cache is not None and cacheable(body, route.cache.deterministic_only):
            key = cache_key(path, plan.primary.upstream_model, body)
            hit = await self.cache.get(key)
            call.cache_key, call.cache_ttl = key, route.cache.ttl_s
            call.add_header(b"x-gateway-cache", b"hit" if hit is not None else b"miss")
            if hit is not None:
                call.cache_hit = True
                await self._replay(hit, payload, send, call)
                return

        async def attempt(decision: Decision) -> UpstreamResponse:
            call.decision = decision
            upstream = runtime.upstreams[decision.provider]
            upstream_path, query, upstream_body = payload.request_for(upstream, decision)
            return await upstream.send(
                "POST",
                upstream_path,
                query,
                forwarded_headers(request.forward, payload, upstream),
                upstream_body,
                decision.timeout,
            )

        sent = time.perf_counter()
        try:
            outcome = await send_with_fallbacks(
                plan.chain(),
                attempt,
                retry=route.retry,
                breaker=route.breaker,
                breakers=self.manager.breakers,
                attempts=call.attempts,
            )
            response = outcome.response
            call.decision = outcome.decision
            upstream = runtime.upstreams[outcome.decision.provider]
            await self._answer(endpoint, payload, upstream, response, send, call, sent)
        finally:
            # The shadow copy starts once the answer is out, so its work never delays it.
            if plan.shadow is not None:
                marks = None
                if plan.shadow_purpose is not None:
                    marks = {PURPOSE_TAG: plan.shadow_purpose, ROLLOUT_TAG: route.name}
                self._launch_shadow(
                    runtime, plan.shadow, payload, request, call, route.redact, marks
                )

    def _launch_shadow(
        self,
        runtime: Runtime,
        shadow: Decision,
        payload: UpstreamPayload,
        request: _Request,
        call: Call,
        redact: tuple[str, ...] | None,
        marks: dict[str, str] | None = None,
    ) -> None:
        upstream = runtime.upstreams[shadow.provider]
        try:
            path, query, body = payload.request_for(upstream, shadow)
        except InvalidRequest as exc:
            log.warning("shadow copy of %s to %s skipped: %s", call.request_id, shadow.variant, exc)
            return
        self.shadows.launch(
            upstream,
            forwarded_headers(request.forward, payload, upstream),
            ShadowResult(
                shadow_of=call.request_id,
                decision=shadow,
                path=path,
                query=query,
                endpoint=call.endpoint or "",
                requested_model=call.requested_model or "",
                request_body=body,
                client_body=call.request_body,
                started_at=time.time(),
                stream=payload.stream,
                record=call.capture,
                user=call.user,
                tags=request.tags,
                marks=marks,
                redact=redact,
                dialect=call.dialect,
                upstream_api=upstream.api,
            ),
        )

    async def _answer(
        self,
        endpoint: Endpoint,
        payload: UpstreamPayload,
        upstream: Upstream,
        response: UpstreamResponse,
        send: Send,
        call: Call,
        sent: float,
    ) -> None:
        call.upstream_api = upstream.api
        translated = payload.translates(upstream)
        if payload.stream and response.status == 200:
            call.upstream_seconds = time.perf_counter() - sent
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                call.chunks = []
                rewrite: ChunkFilter | None
                if translated:
                    rewrite = payload.translator(upstream)
                    if call.cache_key is not None:
                        call.sent = []
                else:
                    rewrite = payload.stripper()
                await relay_stream(
                    response,
                    send,
                    call,
                    rewrite,
                    sse=True,
                    end_marker=end_marker(endpoint, upstream),
                    sink=call.chunks,
                )
                return
        data = await response.read()
        call.response_body = data
        call.upstream_seconds = time.perf_counter() - sent
        headers = upstream_headers(response, call)
        status = response.status
        if translated:
            status, data = translate_answer(payload, upstream, status, data)
            headers = [h for h in headers if h[0] != b"content-type"]
            headers.append((b"content-type", JSON))
            if call.cache_key is not None:
                call.sent = [data]
        await send_full(send, status, headers, data, call)

    async def _replay(
        self, hit: CachedAnswer, payload: UpstreamPayload, send: Send, call: Call
    ) -> None:
        """Answer from the cache: a stream as a stream, usage removed if not asked for."""
        if not hit.stream:
            call.response_body = hit.body
            await send_full(send, 200, [(b"content-type", JSON)], hit.body, call)
            return
        call.chunks = [hit.body]
        await relay_stream(
            BufferedResponse(200, {}, hit.body),
            send,
            call,
            payload.stripper(),
            sse=True,
            end_marker=None,
        )

    async def _passthrough(
        self,
        runtime: Runtime,
        scope: Scope,
        receive: Receive,
        send: Send,
        call: Call,
        request: _Request,
    ) -> None:
        path, query = upstream_target(scope)
        raw = await self._read_body(runtime, receive, request)
        upstream = runtime.upstreams[runtime.settings.passthrough_provider]
        sent = time.perf_counter()
        response = await upstream.send(scope["method"], path, query, request.forward, raw)
        call.upstream_seconds = time.perf_counter() - sent
        is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
        await relay_stream(response, send, call, None, sse=is_sse, end_marker=None)

    async def _models(
        self, runtime: Runtime, path: str, send: Send, call: Call, anthropic: bool
    ) -> None:
        """The routes as models, in OpenAI's list shape, or in Anthropic's for its SDKs (which
        send ``anthropic-version``)."""
        created = self.models_created

        def card(name: str) -> dict[str, Any]:
            if anthropic:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
                return {"type": "model", "id": name, "display_name": name, "created_at": stamp}
            return {"id": name, "object": "model", "created": created, "owned_by": "gateway"}

        if path == "/v1/models":
            cards = [card(name) for name in runtime.routes.names()]
            body: dict[str, Any] = {"object": "list", "data": cards}
            if anthropic:
                first, last = (cards[0]["id"], cards[-1]["id"]) if cards else (None, None)
                body = {"data": cards, "has_more": False, "first_id": first, "last_id": last}
        else:
            name = path.removeprefix("/v1/models/")
            if runtime.routes.get(name) is None:
                if anthropic:
                    call.dialect = "anthropic"
                raise ModelNotFound(f"The model `{name}` does not exist.", param="model")
            body = card(name)
        await send_full(send, 200, [(b"content-type", JSON)], orjson.dumps(body), call)
