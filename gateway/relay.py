"""Sending answers to the client: whole bodies, relayed streams, and the gateway's headers."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from gateway.draining import DRAIN, SHUTTING_DOWN
from gateway.errors import GatewayError
from gateway.ids import new_request_id
from gateway.limits import Limits
from gateway.streaming import error_event
from gateway.types import RawHeaders, Send
from router.errors import UpstreamError
from router.fallback import Attempt
from router.table import Decision
from router.upstream import UpstreamResponse

log = logging.getLogger("gateway.proxy")


JSON = b"application/json"
_SSE_HEADERS: RawHeaders = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_SSE_HEADER_NAMES = frozenset(name for name, _ in _SSE_HEADERS)
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


class ChunkFilter(Protocol):
    """Rewrites a stream on its way to the client: the usage stripper, a dialect's translator."""

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Call:
    """What one call has learned so far: the error path reads it to answer correctly, and the
    recorder turns it into metrics and a capture record once the answer has been sent."""

    __slots__ = (
        "attempts",
        "cache_hit",
        "cache_key",
        "cache_ttl",
        "capture",
        "chunks",
        "decision",
        "dialect",
        "endpoint",
        "error",
        "extra_headers",
        "first_byte_at",
        "first_decision",
        "key_id",
        "limits",
        "overhead_ms",
        "redact",
        "request_body",
        "request_id",
        "requested_model",
        "responded",
        "response_body",
        "sent",
        "started",
        "started_wall",
        "status",
        "stream",
        "tags",
        "upstream_api",
        "upstream_seconds",
        "user",
    )

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.request_id = new_request_id()
        self.decision: Decision | None = None
        self.first_decision: Decision | None = None
        self.upstream_seconds = 0.0
        self.overhead_ms = 0.0
        self.responded = False
        self.first_byte_at: float | None = None
        # Filled in for routed calls only (``endpoint`` set): what the recorder needs.
        self.endpoint: str | None = None
        self.requested_model: str | None = None
        self.request_body = b""
        self.stream = False
        self.status = 0
        self.error: str | None = None
        self.response_body: bytes | None = None
        self.chunks: list[bytes] | None = None
        self.attempts: list[Attempt] = []
        self.user: str | None = None
        self.tags: str | None = None
        self.capture = True
        self.redact: tuple[str, ...] | None = None
        # Set for keys with limits: counted again after the call, announced in the headers.
        self.limits: Limits | None = None
        self.key_id = ""
        self.extra_headers: RawHeaders | None = None
        self.cache_key: str | None = None
        self.cache_ttl = 0.0
        self.cache_hit = False
        self.dialect = "openai"
        """The client's wire format: ``openai`` or ``anthropic`` (errors are answered in it)."""
        self.upstream_api = "openai"
        """The API of the provider that answered (``openai``, ``anthropic``, ``azure``)."""
        self.sent: list[bytes] | None = None
        """A translated answer as the client got it, kept for the cache (which stores what the
        client sees); None when the answer is the upstream's own bytes."""
        DRAIN.call_opened(self)

    def shutting_down(self) -> None:
        """The shutdown deadline came before the answer: it is a 503 (recorded as such)."""
        self.error = "ended before the answer: the gateway is shutting down"
        self.status = 503

    def add_header(self, name: bytes, value: bytes) -> None:
        if self.extra_headers is None:
            self.extra_headers = []
        self.extra_headers.append((name, value))

    def headers(self) -> RawHeaders:
        out: RawHeaders = [(b"x-request-id", self.request_id.encode())]
        decision = self.decision
        if decision is not None:
            out.append((b"x-gateway-route", decision.route.encode()))
            out.append((b"x-gateway-variant", decision.variant.encode()))
            out.append((b"x-gateway-upstream-model", decision.upstream_model.encode()))
        if self.extra_headers:
            out.extend(self.extra_headers)
        self.overhead_ms = (time.perf_counter() - self.started - self.upstream_seconds) * 1000.0
        out.append((b"x-gateway-overhead-ms", f"{self.overhead_ms:.3f}".encode()))
        return out


class _Truncated(Exception):
    detail = "the stream ended before its end marker"


class _Unreadable(_Truncated):
    detail = "the upstream sent an event the gateway could not translate"


def _rewrite(stripper: ChunkFilter, chunk: bytes | None) -> bytes:
    """The stripper's or translator's output; an upstream event it cannot take ends the stream
    with an error event, like a cut, never a traceback."""
    try:
        return stripper.feed(chunk) if chunk is not None else stripper.flush()
    except Exception as exc:
        log.warning("stream rewrite failed: %s", type(exc).__name__)
        raise _Unreadable() from None


def upstream_headers(response: UpstreamResponse, call: Call) -> RawHeaders:
    """The upstream's headers worth passing on (its rate limits only when the key has none)."""
    own_limits = call.limits is not None
    out: RawHeaders = []
    for name, value in response.headers.items():
        lower = name.lower()
        if own_limits and lower.startswith("x-ratelimit-"):
            continue
        if lower in _RESPONSE_HEADERS_KEPT_BACK:
            if lower == "x-request-id":
                out.append((b"x-upstream-request-id", value.encode("latin-1")))
            continue
        out.append((lower.encode("latin-1"), value.encode("latin-1")))
    return out


async def send_full(send: Send, status: int, headers: RawHeaders, body: bytes, call: Call) -> None:
    headers.extend(call.headers())
    headers.append((b"content-length", str(len(body)).encode()))
    call.responded = True
    call.status = status
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, exc: GatewayError, call: Call) -> None:
    body = exc.body_for(call.dialect)
    await send_full(send, exc.status, [(b"content-type", JSON), *exc.headers], body, call)


async def relay_stream(
    response: UpstreamResponse,
    send: Send,
    call: Call,
    stripper: ChunkFilter | None,
    *,
    sse: bool,
    end_marker: bytes | None,
    sink: list[bytes] | None = None,
) -> bool:
    """Pass the upstream's body through chunk by chunk; True when it arrived whole.

    With ``sse``, a stream that breaks off ends with an error event (in the call's dialect)
    instead of silently; with ``end_marker`` (``[DONE]`` for chat and completions,
    ``message_stop`` for Anthropic's) so does one whose last bytes lack it. ``stripper``
    rewrites what the client gets; ``sink`` collects the upstream's bytes for the capture.
    """
    headers = upstream_headers(response, call)
    if sse:
        headers = [h for h in headers if h[0] not in _SSE_HEADER_NAMES] + _SSE_HEADERS
    headers.extend(call.headers())
    call.responded = True
    call.status = response.status
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    tail = b""
    last = b""
    task = DRAIN.stream_opened()
    try:
        async for chunk in response.iter_chunks():
            if call.first_byte_at is None:
                call.first_byte_at = time.perf_counter()
            if sink is not None:
                sink.append(chunk)
            if end_marker is not None:
                tail = (tail + chunk)[-40:]
            if stripper is not None:
                chunk = _rewrite(stripper, chunk)
                if not chunk:
                    continue
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            last = chunk
            if call.sent is not None:
                call.sent.append(chunk)
        if stripper is not None and (rest := _rewrite(stripper, None)):
            await send({"type": "http.response.body", "body": rest, "more_body": True})
            last = rest
            if call.sent is not None:
                call.sent.append(rest)
        if end_marker is not None and end_marker not in tail:
            raise _Truncated()
    except (UpstreamError, _Truncated) as exc:
        call.error = f"stream interrupted: {exc.detail}"
        if not sse:
            raise  # not a stream the client can read an error event from: the connection drops
        log.warning("stream %s cut off: %s", call.request_id, exc.detail)
        message = f"The upstream stream was interrupted ({exc.detail}); the answer is incomplete."
        error = ("upstream_error", "upstream_stream_interrupted")
    except asyncio.CancelledError:
        if not DRAIN.was_ended(task):
            raise
        response.close()
        call.error = "stream ended: the gateway is shutting down"
        if not sse:
            # A body without events: ending it would pass a truncated answer for a whole one.
            raise
        DRAIN.resume(task)
        log.warning("stream %s ended: the gateway is shutting down", call.request_id)
        message = (
            "The gateway is shutting down and ended this stream before the answer was complete;"
            " send the request again."
        )
        error = ("server_error", SHUTTING_DOWN)
    else:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True
    finally:
        DRAIN.stream_closed(task)
    # An event cut in half by the upstream is closed first, so that the error is an event of
    # its own for the client's parser.
    gap = b"" if not last or last.endswith((b"\n\n", b"\r\n\r\n")) else b"\n\n"
    event = gap + error_event(message, *error, call.dialect)
    await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return False
