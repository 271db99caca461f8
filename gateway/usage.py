"""Token usage read off an answer cheaply, without parsing the whole body.

OpenAI puts ``usage`` at the end of a response object, and a stream's usage chunk comes last,
so the last ``"usage"`` key in the bytes is the one; only that small object is decoded.
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


def _as_usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt = data.get("prompt_tokens", data.get("input_tokens"))
    completion = data.get("completion_tokens", data.get("output_tokens", 0))
    details = data.get("prompt_tokens_details") or data.get("input_tokens_details") or {}
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    if not isinstance(prompt, int):
        return None
    return Usage(
        prompt,
        completion if isinstance(completion, int) else 0,
        cached if isinstance(cached, int) else 0,
    )


def usage_from_body(body: bytes) -> Usage | None:
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


def usage_from_chunks(chunks: Sequence[bytes]) -> Usage | None:
    tail = b""
    for chunk in reversed(chunks):
        tail = chunk + tail
        if len(tail) >= _TAIL:
            break
    return usage_from_body(tail[-_TAIL:])
