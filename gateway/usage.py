"""Token usage read off an answer cheaply, without parsing the whole body.

OpenAI puts ``usage`` at the end of a response object, and a stream's usage chunk comes last,
so the last ``"usage"`` key in the bytes is the one; only that small object is decoded.

Anthropic's usage counts input in three parts (``input_tokens`` uncached,
``cache_creation_input_tokens``, ``cache_read_input_tokens``); here ``prompt_tokens`` is their
sum, as OpenAI's counts cached tokens in. Its stream reports input in ``message_start`` (the
first usage) and output in ``message_delta`` (the last), so both ends are read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()
_KEY = b'"usage"'
_TAIL = 8192


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int = 0


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and value >= 0 else 0


def _anthropic_usage(data: Any, start: Any = None) -> Usage | None:
    """Anthropic's usage object; ``start`` is a stream's first (``message_start``'s), whose
    input counts stand where the last one lacks them."""
    merged: dict[str, Any] = {}
    for part in (start, data):
        if isinstance(part, dict):
            merged.update({k: v for k, v in part.items() if v is not None})
    if not isinstance(merged.get("input_tokens"), int):
        return None
    written = _count(merged, "cache_creation_input_tokens")
    read = _count(merged, "cache_read_input_tokens")
    prompt = _count(merged, "input_tokens") + written + read
    return Usage(prompt, _count(merged, "output_tokens"), read, written)


def _as_usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    if "cache_creation_input_tokens" in data or "cache_read_input_tokens" in data:
        return _anthropic_usage(data)
    prompt = data.get("prompt_tokens", data.get("input_tokens"))
    completion = data.get("completion_tokens", data.get("output_tokens", 0))
    details = data.get("prompt_tokens_details") or data.get("input_tokens_details") or {}
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    written = details.get("cache_creation_input_tokens", 0) if isinstance(details, dict) else 0
    if not isinstance(prompt, int):
        return None
    return Usage(
        prompt,
        completion if isinstance(completion, int) else 0,
        cached if isinstance(cached, int) else 0,
        written if isinstance(written, int) else 0,
    )


def _decode_at(body: bytes, at: int) -> Any:
    """The JSON object after the ``"usage"`` key at ``at``, or None."""
    start = body.find(b":", at + len(_KEY))
    if start < 0:
        return None
    text = body[start + 1 : start + 1 + 2048].decode("utf-8", "replace").lstrip()
    if not text.startswith("{"):
        return None
    try:
        value, _ = _DECODER.raw_decode(text)
    except ValueError:
        return None
    return value


def usage_from_body(body: bytes, anthropic: bool = False) -> Usage | None:
    if anthropic:
        at = body.rfind(_KEY)
        return _anthropic_usage(_decode_at(body, at)) if at >= 0 else None
    at = body.rfind(_KEY)
    while at >= 0:
        start = body.find(b":", at + len(_KEY))
        if start < 0:
            return None
        text = body[start + 1 : start + 1 + 2048].decode("utf-8", "replace").lstrip()
        if text.startswith("{"):
            try:
                value, _ = _DECODER.raw_decode(text)
            except ValueError:
                value = None
            usage = _as_usage(value)
            if usage is not None:
                return usage
        at = body.rfind(_KEY, 0, at)
    return None


def usage_from_chunks(chunks: Sequence[bytes], anthropic: bool = False) -> Usage | None:
    tail = b""
    for chunk in reversed(chunks):
        tail = chunk + tail
        if len(tail) >= _TAIL:
            break
    tail = tail[-_TAIL:]
    if not anthropic:
        return usage_from_body(tail)
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= _TAIL:
            break
    first, last = head.find(_KEY), tail.rfind(_KEY)
    if first < 0 or last < 0:
        return None
    return _anthropic_usage(_decode_at(tail, last), _decode_at(head, first))
