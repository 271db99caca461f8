"""Upstream answers with fields of the wrong type: whatever the upstream put in an id, a tool's
name or the model, the client gets an answer its SDK can read (strings where strings belong),
whole and streamed, both ways."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from dialects.responses import anthropic_message_to_openai_chat, openai_chat_to_anthropic_message
from dialects.streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from tests.dialects.sse import anthropic_event, events, openai_chunk

WRONG = [5, -1.5, True, ["x"], {"a": 1}]
"""Values no id, name or model may be."""

ANTHROPIC_EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


@pytest.mark.parametrize("wrong", WRONG)
def test_a_chat_completion_with_wrong_types_gives_a_readable_message(wrong: Any) -> None:
    completion = {
        "id": wrong,
        "object": "chat.completion",
        "model": wrong,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "hi",
                    "tool_calls": [
                        {"id": wrong, "type": "function", "function": {"name": wrong}},
                        {"id": "call_2", "type": "function", "function": {"name": "f"}},
                    ],
                    "function_call": None,
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    message = Message.model_validate(openai_chat_to_anthropic_message(completion))
    uses = [block for block in message.content if block.type == "tool_use"]
    assert [use.name for use in uses] == ["", "f"]
    assert uses[0].id and uses[0].id != uses[1].id
    legacy = {"choices": [{"message": {"function_call": {"name": wrong, "arguments": "{}"}}}]}
    Message.model_validate(openai_chat_to_anthropic_message(legacy))


@pytest.mark.parametrize("wrong", WRONG)
def test_an_anthropic_message_with_wrong_types_gives_a_readable_completion(wrong: Any) -> None:
    message = {
        "id": wrong,
        "type": "message",
        "role": "assistant",
        "model": wrong,
        "content": [
            {"type": "tool_use", "id": wrong, "name": wrong, "input": {}},
            {"type": "tool_use", "id": "toolu_2", "name": "f", "input": {}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    completion = ChatCompletion.model_validate(anthropic_message_to_openai_chat(message))
    calls = completion.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls] == ["", "f"]  # type: ignore[union-attr]
    assert calls[0].id and calls[0].id != calls[1].id


@pytest.mark.parametrize("wrong", WRONG)
def test_an_anthropic_stream_with_wrong_types_gives_readable_chunks(wrong: Any) -> None:
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": []}
    stream = b"".join(
        [
            anthropic_event("message_start", {"type": "message_start", "message": start}),
            anthropic_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "tool_use", "id": wrong, "name": wrong},
                },
            ),
            anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            anthropic_event("message_stop", {"type": "message_stop"}),
        ]
    )
    translator = AnthropicToOpenAIStream(include_usage=True)
    out = translator.feed(stream) + translator.flush()
    chunks = [data for _, data in events(out) if data != "[DONE]"]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    call = chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    assert isinstance(call["id"], str) and call["id"] and call["function"]["name"] == ""


@pytest.mark.parametrize("wrong", WRONG)
def test_an_openai_stream_with_wrong_types_gives_readable_events(wrong: Any) -> None:
    head = {"id": wrong, "object": "chat.completion.chunk", "created": 1, "model": wrong}
    call = {"index": 0, "id": wrong, "type": "function", "function": {"name": wrong}}
    stream = b"".join(
        [
            openai_chunk({**head, "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}),
            openai_chunk({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            openai_chunk("[DONE]"),
        ]
    )
    translator = OpenAIToAnthropicStream()
    out = translator.feed(stream) + translator.flush()
    for _, data in events(out):
        ANTHROPIC_EVENT.validate_python(data)
    assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_an_upstream_error_chunk_ends_the_translated_stream() -> None:
    """Anthropic's streams end at an error event; an OpenAI-format server's error chunk (vLLM
    still sends [DONE] after it) is translated to one, and nothing follows it."""
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    error = {"error": {"message": "engine overloaded", "type": "server_error", "code": 503}}
    stream = b"".join(
        [
            openai_chunk({**head, "choices": [{"index": 0, "delta": {"content": "part"}}]}),
            openai_chunk(error),
            openai_chunk({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            openai_chunk("[DONE]"),
        ]
    )
    translator = OpenAIToAnthropicStream()
    out = translator.feed(stream) + translator.flush()
    names = [name for name, _ in events(out)]
    assert names[-1] == "error" and names.count("error") == 1
    assert "message_stop" not in names and not translator.ended
