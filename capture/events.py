"""What the capture assembles answers with: the assembled answer's types, server-sent events
framed from bytes split anywhere, and the lenient readers of JSON values (nothing here raises on
bad input). Used by ``capture.assemble`` (OpenAI's streams) and
``capture.assemble_anthropic``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

JSON = Any


@dataclass(slots=True)
class Usage:
    prompt_tokens: int | None = None
    """Input tokens, cached ones included."""
    completion_tokens: int | None = None
    """Output tokens, reasoning tokens included."""
    cached_tokens: int | None = None
    """Input tokens read from the provider's prompt cache."""
    cache_write_tokens: int | None = None
    """Input tokens written to the provider's prompt cache (Anthropic bills them above the input
    price); 0 when the usage does not report any (OpenAI's never does)."""


@dataclass(slots=True)
class Assembled:
    response: JSON
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    """The first choice's; the stored response has every choice's."""
    model: str | None = None
    complete: bool = True
    note: str | None = None
    """What was wrong with the stream (error event, cut short, unparsable events)."""


@dataclass(slots=True)
class Event:
    name: str | None
    data: bytes


# --- server-sent events ---------------------------------------------------------------------


def frame(raw: bytes) -> Iterator[tuple[str | None, bytes]]:
    """(event name, data) of each event in ``raw``; the last may lack its blank line."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for block in raw.split(b"\n\n"):
        if block.startswith(b"data: ") and b"\n" not in block:
            yield None, block[6:]  # the common case: one data line
            continue
        name: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            key, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if key == b"data":
                data.append(value)
            elif key == b"event":
                name = value.decode("utf-8", "replace")
        if data:
            yield name, b"\n".join(data)


def parse_events(chunks: Iterable[bytes]) -> list[Event]:
    """The events of an SSE byte stream, split anywhere into ``chunks``."""
    return [Event(name, data) for name, data in frame(b"".join(chunks))]


def load_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def non_negative_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def string_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def error_message(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str):
            return message
    return str(error)[:500]
