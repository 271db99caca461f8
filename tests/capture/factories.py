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
