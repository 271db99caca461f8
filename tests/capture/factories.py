"""Realistic upstream bytes and capture records for the capture tests."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Any

import orjson

from capture.record import CallRecord

_ids = itertools.count(1)


def new_id() -> str:
    """A fresh 32-hex id, unique within the test session and sortable by creation."""
    return f"{int(time.time() * 1000):012x}7{next(_ids):019x}"


def sse(*payloads: Any, done: bool = True) -> bytes:
    """``data: {json}`` events as an OpenAI-compatible upstream writes them."""
    events = [b"data: " + orjson.dumps(payload) + b"\n\n" for payload in payloads]
    if done:
        events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def split_every(raw: bytes, size: int) -> list[bytes]:
    """``raw`` cut into ``size``-byte pieces: across events, JSON and UTF-8 characters."""
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def split_at(raw: bytes, positions: Iterable[int]) -> list[bytes]:
    cuts = [0, *sorted(positions), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(cuts)]


CHUNK_HEAD = {
    "id": "chatcmpl-9x",
    "object": "chat.completion.chunk",
    "created": 1_760_000_000,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_0ba0d124f1",
}


def chat_chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> Any:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**CHUNK_HEAD, "choices": [choice], "usage": None}


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> Any:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    return {**CHUNK_HEAD, "choices": [], "usage": usage}


def chat_text_stream(pieces: list[str], prompt: int = 12, cached: int = 0) -> bytes:
    """A streamed chat answer of ``pieces`` with the usage chunk and [DONE]."""
    return sse(
        chat_chunk({"role": "assistant", "content": "", "refusal": None}),
        *(chat_chunk({"content": piece}) for piece in pieces),
        chat_chunk({}, "stop"),
        usage_chunk(prompt, len(pieces), cached),
    )


def chat_body(text: str = "Hello there", model: str = "gpt-4o-mini-2024-07-18") -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-abc",
            "object": "chat.completion",
            "created": 1_760_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 1000,
                "completion_tokens": 200,
                "total_tokens": 1200,
                "prompt_tokens_details": {"cached_tokens": 400},
            },
        }
    )


def chat_request(content: str = "Say hello", *, stream: bool = False, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": content}],
        **extra,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def make_record(**fields: Any) -> CallRecord:
    """A non-streamed chat call to gpt-4o-mini; any field can be overridden."""
    values: dict[str, Any] = {
        "id": new_id(),
        "started_at": time.time(),
        "endpoint": "chat",
        "route": "gpt-4o-mini",
        "variant": "teacher",
        "provider": "openai",
        "requested_model": "gpt-4o-mini",
        "upstream_model": "gpt-4o-mini",
        "request_body": chat_request(),
        "response_body": chat_body(),
        "status": 200,
        "stream": False,
        "total_ms": 250.0,
        "upstream_ms": 249.2,
        "overhead_ms": 0.8,
        "user_key": "user-1",
    }
    values.update(fields)
    return CallRecord(**values)


def make_stream_record(pieces: list[str], **fields: Any) -> CallRecord:
    raw = chat_text_stream(pieces, prompt=30)
    values: dict[str, Any] = {
        "request_body": chat_request(stream=True),
        "response_body": None,
        "stream_chunks": split_every(raw, 37),
        "stream": True,
        "ttft_ms": 80.0,
    }
    values.update(fields)
    return make_record(**values)


# --- Anthropic's Messages API ---------------------------------------------------------------------

CLAUDE_MODEL = "claude-sonnet-4-5-20250929"


def anthropic_sse(*payloads: Any) -> bytes:
    """Anthropic's events: ``event: TYPE`` and ``data: {json}`` per payload."""
    return b"".join(
        b"event: " + str(p["type"]).encode() + b"\ndata: " + orjson.dumps(p) + b"\n\n"
        for p in payloads
    )


def anthropic_usage(
    uncached: int = 25, output: int = 15, cache_write: int = 0, cache_read: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": uncached,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
        "service_tier": "standard",
    }


def anthropic_message(
    content: list[dict[str, Any]] | str = "Hello there",
    *,
    stop_reason: str | None = "end_turn",
    usage: dict[str, Any] | None = None,
    model: str = CLAUDE_MODEL,
) -> dict[str, Any]:
    """A Message as Anthropic's API returns it."""
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage if usage is not None else anthropic_usage(),
    }


def _pieces(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def anthropic_events(message: dict[str, Any], *, stop: bool = True) -> list[dict[str, Any]]:
    """The events Anthropic streams for ``message``, as its streaming guide shows them: the
    message with no content and the input usage first, each block started empty and filled by
    deltas (tool input as JSON fragments, the first one empty), a ping, the stop reason and the
    output tokens in ``message_delta``, ``message_stop`` (unless ``stop`` is False)."""
    usage = dict(message["usage"])
    started = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    started["usage"] = {**usage, "output_tokens": 1}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": started}]
    events.append({"type": "ping"})
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            first: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        elif kind == "tool_use":
            first = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            arguments = orjson.dumps(block["input"]).decode()
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": p} for p in _pieces(arguments)]
        elif kind == "thinking":
            first = {"type": "thinking", "thinking": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            first, deltas = block, []
        events.append({"type": "content_block_start", "index": index, "content_block": first})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        }
    )
    if stop:
        events.append({"type": "message_stop"})
    return events


def anthropic_stream(message: dict[str, Any], *, stop: bool = True) -> bytes:
    return anthropic_sse(*anthropic_events(message, stop=stop))


TOOL_ANSWER = anthropic_message(
    [
        {"type": "thinking", "thinking": "The user wants the weather.", "signature": "EqQBCgIYAh"},
        {"type": "text", "text": "Let me check the weather in Paris 🌦."},
        {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "input": {"city": "Paris", "unit": "celsius", "days": [1, 2]},
        },
    ],
    stop_reason="tool_use",
    usage=anthropic_usage(uncached=12, output=48, cache_write=1000, cache_read=3000),
)
"""A Claude answer with thinking, text and a tool call, and cache writes and reads."""


def anthropic_request(content: str = "Say hello", *, stream: bool = False, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": content}],
        **extra,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def make_anthropic_record(**fields: Any) -> CallRecord:
    """A non-streamed Anthropic Messages call answered by Claude; any field can be overridden."""
    values: dict[str, Any] = {
        "endpoint": "messages",
        "dialect": "anthropic",
        "upstream_api": "anthropic",
        "route": "claude",
        "requested_model": "claude",
        "upstream_model": "claude-sonnet-4-5",
        "provider": "anthropic",
        "request_body": anthropic_request(),
        "response_body": orjson.dumps(anthropic_message()),
    }
    values.update(fields)
    return make_record(**values)
