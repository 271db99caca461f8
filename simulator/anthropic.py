"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API.

Written from Anthropic's documentation, like the rest of the simulator, and sharing only its
content, token rule, latency profile and faults with the OpenAI endpoints:

- Headers: ``x-api-key`` or ``Authorization: Bearer`` (what the anthropic SDK sends from 2.x;
  any non-empty value, else 401 authentication_error) and
  ``anthropic-version`` (a date such as 2023-06-01, else 400); every answer has a
  ``request-id``. Bodies over 32 MB get 413 request_too_large. The body is checked as
  Anthropic checks it (see ``anthropic_request``).
- The answer: the same model, system, messages and tools always give the same content, streamed
  or not, whatever max_tokens and stop_sequences say (they only cut it). With tools, and unless
  tool_choice is ``none`` or the last turn carries tool results or is the assistant's, the
  answer calls the forced tool or else the first custom one (``tool_use``, input filled from
  its schema), as the chat endpoint does. Otherwise 12..60 tokens of text: cut at max_tokens
  (``max_tokens``) or before the first stop sequence it contains (``stop_sequence``, with the
  sequence), else ``end_turn``. Thinking (``enabled`` or ``adaptive``) puts a thinking block
  with a signature first; its tokens count towards max_tokens and output_tokens.
- Prompt caching: the prompt up to and including the last block marked ``cache_control`` (a
  top-level ``cache_control`` marks the last block) is written to the cache the first time that
  prefix is seen for the model and read from it afterwards, for 5 minutes or an hour (``ttl``)
  after its last use; a hit at an earlier breakpoint reads up to there and writes the rest.
  ``input_tokens`` counts only the tokens after the last breakpoint, as Anthropic does. The
  cache is a bounded LRU of prefix hashes (no minimum prompt length, unlike Anthropic).
- Streaming: message_start (usage with the input and cache counts, output_tokens 1), per block
  content_block_start, its deltas (thinking_delta then one signature_delta; text_delta per
  token; input_json_delta: an empty one, then one per token of the JSON), content_block_stop;
  a ping after the first content_block_start (after message_start when there is no block),
  message_delta with stop_reason, stop_sequence and the usage, message_stop.
- Faults (``x-sim-fault`` or the profile): 429 is a rate_limit_error with retry-after, 500 an
  api_error, 503 and 529 an overloaded_error (529), `drop` cuts the connection after N events,
  `error-event` ends the stream with an ``error`` event (overloaded_error) after N events.
- count_tokens: ``{"input_tokens": N}`` for the same body less max_tokens (and the other fields
  of generation), N being the sum of the three input counts of the answer's usage.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from simulator.anthropic_request import MessagesRequest, Segment, parse
from simulator.anthropic_wire import (
    AnthropicError,
    Invalid,
    error_event,
    event,
    new_message_id,
    new_request_id,
)
from simulator.content import ToolCallReply, request_seed, sentences, text_reply, tool_reply
from simulator.exchange import Call, HeaderError, record, respond, settle, triage
from simulator.streaming import Event, stream_events
from simulator.wire import loads_or_none, nested_deeper_than

VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
"""An ``anthropic-version``: a date (2023-06-01 is the long-standing one; newer SDKs send
newer dates, so any date passes)."""
MAX_BODY_BYTES = 32 * 1024 * 1024
CACHE_ENTRIES = 4096
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
THINKING_SALT = 0x7468696E6B
MIN_THINKING, MAX_THINKING = 16, 48


class PromptCache:
    """Cached prompt prefixes (their hashes) with when each expires; the least recently used
    go first beyond ``maxlen``."""

    def __init__(self, maxlen: int = CACHE_ENTRIES) -> None:
        self.maxlen = maxlen
        self._entries: OrderedDict[bytes, float] = OrderedDict()

    def hit(self, key: bytes, now: float) -> bool:
        expiry = self._entries.get(key)
        if expiry is None:
            return False
        if expiry < now:
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def put(self, key: bytes, expiry: float) -> None:
        self._entries[key] = max(expiry, self._entries.get(key, expiry))
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxlen:
            self._entries.popitem(last=False)


PROMPT_CACHE = web.AppKey("simulator.prompt_cache", PromptCache)


@dataclass(frozen=True, slots=True)
class InputUsage:
    uncached: int
    read: int
    written_5m: int
    written_1h: int

    @property
    def written(self) -> int:
        return self.written_5m + self.written_1h

    def fields(self) -> dict[str, Any]:
        return {
            "input_tokens": self.uncached,
            "cache_creation_input_tokens": self.written,
            "cache_read_input_tokens": self.read,
        }


def cache_usage(cache: PromptCache, model: str, segments: list[Segment], now: float) -> InputUsage:
    """The input tokens split into read from the cache, written to it, and the rest."""
    hasher = hashlib.sha256(model.encode())
    breakpoints: list[tuple[bytes, int, str]] = []
    total = 0
    for segment in segments:
        hasher.update(orjson.dumps(segment.material, option=orjson.OPT_SORT_KEYS) + b"\x1e")
        total += segment.tokens
        if segment.ttl is not None:
            breakpoints.append((hasher.copy().digest(), total, segment.ttl))
    if not breakpoints:
        return InputUsage(total, 0, 0, 0)
    hit = -1
    for index in range(len(breakpoints) - 1, -1, -1):
        if cache.hit(breakpoints[index][0], now):
            hit = index
            break
    read = breakpoints[hit][1] if hit >= 0 else 0
    written = {"5m": 0, "1h": 0}
    done = read
    for _, upto, ttl in breakpoints[hit + 1 :]:
        written[ttl if ttl in written else "5m"] += upto - done
        done = upto
    for key, _, ttl in breakpoints:
        cache.put(key, now + TTL_SECONDS.get(ttl, 300.0))
    return InputUsage(total - breakpoints[-1][1], read, written["5m"], written["1h"])


@dataclass(slots=True)
class Answer:
    """What the model says: an optional thinking block, then text or one tool call."""

    thinking: list[str] | None
    signature: str
    thinking_shown: bool
    text: list[str]
    tool: ToolCallReply | None
    stop_reason: str
    stop_sequence: str | None
    output_tokens: int

    def content(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.thinking is not None:
            shown = "".join(self.thinking) if self.thinking_shown else ""
            blocks.append({"type": "thinking", "thinking": shown, "signature": self.signature})
        if self.tool is not None:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": tool_use_id(self.tool),
                    "name": self.tool.name,
                    "input": orjson.loads(self.tool.arguments),
                }
            )
        elif self.text:
            blocks.append({"type": "text", "text": "".join(self.text)})
        return blocks


def tool_use_id(reply: ToolCallReply) -> str:
    return "toolu_" + reply.call_id.removeprefix("call_")


def tool_target(request: MessagesRequest) -> tuple[str, Any] | None:
    """The custom tool to call (name, input schema), or None to answer with text."""
    choice = request.tool_choice
    if choice is not None and choice["type"] == "none":
        return None
    functions = request.custom_tools()
    if not functions:
        return None
    role, blocks = request.messages[-1]
    if role == "assistant" or any(block["type"] == "tool_result" for block in blocks):
        return None
    if choice is not None and choice["type"] == "tool" and choice["name"] in functions:
        return choice["name"], functions[choice["name"]]
    name = next(iter(functions))
    return name, functions[name]


def cut(
    pieces: list[str], cap: int | None, stops: list[str]
) -> tuple[list[str], str, str | None, int]:
    """(pieces kept, stop_reason, stop_sequence, tokens generated) for a text reply."""
    limit = len(pieces) if cap is None else min(cap, len(pieces))
    text = "".join(pieces[:limit])
    best: tuple[int, int, str] | None = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0 and (best is None or at + len(stop) < best[1]):
            best = (at, at + len(stop), stop)
    if best is not None:
        at, end, stop = best
        kept: list[str] = []
        used = 0
        position = 0
        for piece in pieces:
            if position >= end:
                break
            used += 1
            if position < at:
                kept.append(piece[: at - position])
            position += len(piece)
        return [piece for piece in kept if piece], "stop_sequence", stop, used
    if cap is not None and len(pieces) > cap:
        return pieces[:cap], "max_tokens", None, cap
    return pieces, "end_turn", None, len(pieces)


def compose(request: MessagesRequest, seed: int) -> Answer:
    rng = random.Random(seed)
    thinking: list[str] | None = None
    signature = ""
    if request.thinking is not None and request.thinking.budget >= MIN_THINKING:
        thinker = random.Random(seed ^ THINKING_SALT)
        length = thinker.randint(MIN_THINKING, min(MAX_THINKING, request.thinking.budget))
        thinking = sentences(thinker, length)
        digest = hashlib.shake_256(("".join(thinking) + request.model).encode()).digest(120)
        signature = base64.b64encode(digest).decode()
    thought = len(thinking) if thinking is not None else 0
    shown = request.thinking is None or not request.thinking.omitted
    target = tool_target(request)
    if target is not None:
        tool = tool_reply(rng, target[0], target[1])
        tokens = thought + tool.tokens
        return Answer(thinking, signature, shown, [], tool, "tool_use", None, tokens)
    pieces = text_reply(rng, None).pieces
    cap = None if request.max_tokens is None else max(0, request.max_tokens - thought)
    kept, reason, stop, used = cut(pieces, cap, request.stop_sequences)
    return Answer(thinking, signature, shown, kept, None, reason, stop, thought + used)


def fault_error(kind: str) -> AnthropicError:
    if kind == "429":
        return AnthropicError(
            429,
            "This request would exceed the rate limit for your organization (simulated)."
            " Please try again in 1s.",
            headers={"retry-after": "1"},
        )
    if kind == "500":
        return AnthropicError(500, "Internal server error (simulated)")
    return AnthropicError(529, "Overloaded (simulated)")


def _stream_error(sent: int) -> bytes:
    return error_event("overloaded_error", "Overloaded (simulated)")


async def begin(request: web.Request) -> Call:
    """Record the request, check its headers and body, and apply its fault (Anthropic's
    errors throughout)."""
    raw, headers = await record(request)
    if len(raw) > MAX_BODY_BYTES:
        raise AnthropicError(413, "Request exceeds the maximum allowed number of bytes.")
    key = headers.get("x-api-key")
    if key is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            raise AnthropicError(401, "x-api-key header is required")
        key = token
    if not key.strip():
        raise AnthropicError(401, "invalid x-api-key")
    version = headers.get("anthropic-version")
    if version is None:
        raise Invalid("anthropic-version: header is required")
    if not VERSION.fullmatch(version):
        raise Invalid(f"anthropic-version: '{version}' is not a valid version")
    body = loads_or_none(raw)
    if not isinstance(body, dict):
        raise Invalid("The request body is not valid JSON: expected a JSON object.")
    if nested_deeper_than(raw, body):
        raise Invalid("The request body nests arrays and objects too deeply.")
    model = body.get("model")
    model = model if isinstance(model, str) else ""
    try:
        fault, latency = triage(request, model, headers)
    except HeaderError as error:
        raise Invalid(str(error)) from None
    fault = await settle(fault, body.get("stream") is True, fault_error)
    return Call(body, model, latency, fault)


async def messages(request: web.Request) -> web.StreamResponse:
    call = await begin(request)
    parsed = parse(call.body)
    seed = request_seed(
        "messages",
        parsed.model,
        parsed.system,
        parsed.messages,
        parsed.tools,
        parsed.tool_choice,
    )
    answer = compose(parsed, seed)
    usage = cache_usage(
        request.app[PROMPT_CACHE], parsed.model, parsed.segments(), time.monotonic()
    )
    ttft_s, token_s = call.delays(seed)
    headers = {"request-id": new_request_id()}
    message = {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": parsed.model,
        "content": answer.content(),
        "stop_reason": answer.stop_reason,
        "stop_sequence": answer.stop_sequence,
        "usage": _usage(usage, answer.output_tokens),
    }
    if parsed.stream:
        events = _events(message, answer)
        return await stream_events(
            request, call, events, ttft_s, token_s, error_event=_stream_error, headers=headers
        )
    wait_s = ttft_s + token_s * answer.output_tokens
    return await respond(request, call, message, wait_s, headers)


def _usage(usage: InputUsage, output_tokens: int) -> dict[str, Any]:
    return {
        **usage.fields(),
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.written_5m,
            "ephemeral_1h_input_tokens": usage.written_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _events(message: dict[str, Any], answer: Answer) -> list[Event]:
    """Anthropic's event sequence for ``message``; every delta after the first waits a token."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    opening_event = event("message_start", {"type": "message_start", "message": start})
    events: list[Event] = [(opening_event, False)]
    ping = (event("ping", {"type": "ping"}), False)
    deltas = 0

    def delta(index: int, body: dict[str, Any]) -> None:
        nonlocal deltas
        payload = {"type": "content_block_delta", "index": index, "delta": body}
        events.append((event("content_block_delta", payload), deltas > 0))
        deltas += 1

    for index, block in enumerate(message["content"]):
        kind = block["type"]
        opening = {
            "thinking": {"type": "thinking", "thinking": "", "signature": ""},
            "text": {"type": "text", "text": ""},
            "tool_use": {**block, "input": {}},
        }[kind]
        payload = {"type": "content_block_start", "index": index, "content_block": opening}
        events.append((event("content_block_start", payload), False))
        if index == 0:
            events.append(ping)
        if kind == "thinking":
            if answer.thinking is not None and answer.thinking_shown:
                for piece in answer.thinking:
                    delta(index, {"type": "thinking_delta", "thinking": piece})
            payload = {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "signature_delta", "signature": block["signature"]},
            }
            events.append((event("content_block_delta", payload), False))
        elif kind == "text":
            for piece in answer.text:
                delta(index, {"type": "text_delta", "text": piece})
        else:
            assert answer.tool is not None
            delta(index, {"type": "input_json_delta", "partial_json": ""})
            for piece in answer.tool.argument_pieces:
                delta(index, {"type": "input_json_delta", "partial_json": piece})
        stop = {"type": "content_block_stop", "index": index}
        events.append((event("content_block_stop", stop), False))
    if not message["content"]:
        events.append(ping)
    closing = {
        "type": "message_delta",
        "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
        "usage": {
            key: usage[key]
            for key in (
                "input_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
                "output_tokens",
            )
        },
    }
    events.append((event("message_delta", closing), False))
    events.append((event("message_stop", {"type": "message_stop"}), False))
    return events


async def count_tokens(request: web.Request) -> web.StreamResponse:
    call = await begin(request)
    parsed = parse(call.body, count_only=True)
    payload = {"input_tokens": parsed.input_tokens()}
    return await respond(request, call, payload, 0.0, {"request-id": new_request_id()})


async def not_allowed(request: web.Request) -> web.StreamResponse:
    """/v1/messages and /v1/messages/count_tokens take POST only."""
    await record(request)
    raise AnthropicError(405, f"Method {request.method} not allowed", headers={"Allow": "POST"})


def add_anthropic_routes(app: web.Application) -> None:
    app[PROMPT_CACHE] = PromptCache()
    router = app.router
    router.add_post("/v1/messages", messages)
    router.add_route("*", "/v1/messages", not_allowed)
    router.add_post("/v1/messages/count_tokens", count_tokens)
    router.add_route("*", "/v1/messages/count_tokens", not_allowed)
