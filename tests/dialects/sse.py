"""Reading SSE bytes in tests, and assembling streams with the official SDKs' own accumulators."""

from __future__ import annotations

from typing import Any

import orjson
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter

_ANTHROPIC_EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


def anthropic_event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def openai_chunk(payload: dict[str, Any] | str) -> bytes:
    if isinstance(payload, str):
        return b"data: " + payload.encode() + b"\n\n"
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def events(stream: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) for every event of an SSE stream; [DONE] stays a string."""
    assert stream == b"" or stream.endswith(b"\n\n"), stream[-200:]
    parsed: list[tuple[str | None, Any]] = []
    for block in stream.split(b"\n\n")[:-1]:
        name = None
        data = None
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
        assert data is not None, block
        parsed.append((name, "[DONE]" if data == b"[DONE]" else orjson.loads(data)))
    return parsed


def assemble_anthropic(stream: bytes) -> dict[str, Any]:
    """The Message the anthropic SDK builds from these events (each one validated first)."""
    snapshot: Any = None
    json_bufs: dict[int, bytes] = {}
    for name, payload in events(stream):
        assert name == payload["type"], (name, payload)
        if payload["type"] in ("ping", "error"):
            continue
        event = _ANTHROPIC_EVENT.validate_python(payload)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    result: dict[str, Any] = snapshot.to_dict()
    return result


def assemble_openai(stream: bytes) -> dict[str, Any]:
    """The chat.completion the openai SDK builds from these chunks (each one validated first)."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    seen_done = False
    for _, payload in events(stream):
        assert not seen_done, "nothing may follow [DONE]"
        if payload == "[DONE]":
            seen_done = True
            continue
        assert "error" not in payload, payload
        for _ in state.handle_chunk(ChatCompletionChunk.model_validate(payload)):
            pass
    assert seen_done
    # the snapshot, not get_final_completion(): that one raises on length and content_filter
    result: dict[str, Any] = state.current_completion_snapshot.to_dict()
    return result
