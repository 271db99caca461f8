"""Hostile input: the translators answer Untranslatable (a 400 naming the field) or a result,
never another exception (a 500 at the gateway); the streams never raise at all."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialects.capture import chat_view
from dialects.errors import Untranslatable, anthropic_error_to_openai, openai_error_to_anthropic
from dialects.requests import anthropic_to_openai_chat, openai_chat_to_anthropic
from dialects.responses import anthropic_message_to_openai_chat, openai_chat_to_anthropic_message
from dialects.streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from tests.dialects.sse import events
from tests.dialects.test_roundtrip import (
    anthropic_streams,
    completions,
    openai_requests,
    openai_streams,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    # OpenAI's
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "image_url",
    "url",
    "file",
    "file_data",
    "file_id",
    "tool_calls",
    "id",
    "function",
    "name",
    "arguments",
    "tool_call_id",
    "tools",
    "parameters",
    "description",
    "strict",
    "tool_choice",
    "parallel_tool_calls",
    "max_tokens",
    "max_completion_tokens",
    "reasoning_effort",
    "temperature",
    "top_p",
    "stop",
    "user",
    "stream",
    "n",
    "logprobs",
    "response_format",
    "refusal",
    "delta",
    "choices",
    "finish_reason",
    "index",
    "usage",
    "prompt_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "reasoning_content",
    "error",
    "message",
    # Anthropic's
    "system",
    "source",
    "media_type",
    "data",
    "tool_use_id",
    "is_error",
    "input",
    "input_schema",
    "thinking",
    "budget_tokens",
    "stop_sequences",
    "top_k",
    "metadata",
    "user_id",
    "output_config",
    "effort",
    "stop_reason",
    "stop_sequence",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "content_block",
    "partial_json",
    "title",
]
STRINGS = [
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "function",
    "text",
    "image_url",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "auto",
    "any",
    "none",
    "required",
    "base64",
    "url",
    "file",
    "data:image/png;base64,AAAA",
    "https://x.test/a.png",
    "application/pdf",
    "{}",
    '{"a":1}',
    "{bad",
    "high",
    "low",
    "stop",
    "end_turn",
    "tool_calls",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "text_delta",
    "input_json_delta",
    "message_delta",
    "message_stop",
    "error",
    "custom",
    "enabled",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 5)
    | st.floats(-2, 3)
    | st.sampled_from(STRINGS)
    | st.text(max_size=5)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=25,
)
bodies = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)


def translated_or_refused(call: Any) -> None:
    try:
        result = call()
    except Untranslatable as exc:
        assert exc.field and exc.message
        return
    orjson.dumps(result)  # whatever came out is JSON


@SETTINGS
@given(bodies)
def test_requests_refuse_cleanly(body: dict[str, Any]) -> None:
    translated_or_refused(lambda: openai_chat_to_anthropic(body, model="m", default_max_tokens=64))
    translated_or_refused(lambda: anthropic_to_openai_chat(body, model="m"))


@SETTINGS
@given(values)
def test_answers_translate_or_refuse_cleanly(value: Any) -> None:
    translated_or_refused(lambda: anthropic_message_to_openai_chat(value))
    translated_or_refused(lambda: openai_chat_to_anthropic_message(value))
    assert chat_view(value, "anthropic", value, "anthropic") is not None


@SETTINGS
@given(st.lists(values, max_size=6), st.integers(1, 40), st.binary(max_size=20))
def test_streams_never_raise(payloads: list[Any], cut: int, junk: bytes) -> None:
    data = (
        b"".join(
            prefix + orjson.dumps(payload) + b"\n\n"
            for payload in payloads
            for prefix in (b"event: x\ndata: ", b"data: ")
        )
        + junk
    )
    for stream in (AnthropicToOpenAIStream(include_usage=True), OpenAIToAnthropicStream()):
        out = b"".join(stream.feed(data[i : i + cut]) for i in range(0, len(data), cut))
        out += stream.flush()
        assert isinstance(out, bytes)


@SETTINGS
@given(st.integers(100, 600), st.binary(max_size=40) | values.map(orjson.dumps))
def test_error_bodies_always_translate(status: int, body: bytes) -> None:
    for translated in (
        openai_error_to_anthropic(status, body),
        anthropic_error_to_openai(status, body),
    ):
        parsed = orjson.loads(translated)
        assert parsed["error"]["message"]


# ---------------------------------------------------------------- valid input, then broken


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _paths(value, (*prefix, index))


@st.composite
def broken(draw: st.DrawFn, docs: st.SearchStrategy[Any]) -> Any:
    """A valid document with one to three of its values replaced by anything, or removed."""
    doc = copy.deepcopy(draw(docs))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in _paths(doc) if p]))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            parent[path[-1]] = draw(values)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    return doc


def _payloads(stream: bytes) -> list[Any]:
    return [payload for _, payload in events(stream)]


@st.composite
def anthropic_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A translated request with Anthropic's own extras: thinking, effort, documents, errors."""
    body = openai_chat_to_anthropic(
        draw(openai_requests()), model="claude-x", default_max_tokens=100
    )
    if draw(st.booleans()):
        body["thinking"] = {"type": "enabled", "budget_tokens": draw(st.integers(1024, 20000))}
    if draw(st.booleans()):
        body["output_config"] = {"effort": draw(st.sampled_from(["low", "medium", "high"]))}
    if draw(st.booleans()):
        body["top_k"] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        body["messages"].append(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_z", "name": "f", "input": {"a": [1]}},
                ],
            }
        )
        body["messages"].append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_z",
                        "is_error": True,
                        "content": [{"type": "text", "text": "failed"}],
                    },
                    {
                        "type": "document",
                        "title": "d",
                        "source": {"type": "text", "media_type": "text/plain", "data": "body"},
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBE",
                        },
                    },
                ],
            }
        )
    return body


@SETTINGS
@given(broken(openai_requests()), broken(anthropic_requests()))
def test_broken_requests_refuse_cleanly(openai_body: Any, anthropic_body: Any) -> None:
    translated_or_refused(
        lambda: openai_chat_to_anthropic(openai_body, model="m", default_max_tokens=9)
    )
    translated_or_refused(lambda: anthropic_to_openai_chat(anthropic_body, model="m"))
    assert chat_view(anthropic_body, "anthropic", None, "openai") is not None


@SETTINGS
@given(broken(completions()), broken(completions().map(openai_chat_to_anthropic_message)))
def test_broken_answers_translate_or_refuse_cleanly(completion: Any, message: Any) -> None:
    translated_or_refused(lambda: openai_chat_to_anthropic_message(completion))
    translated_or_refused(lambda: anthropic_message_to_openai_chat(message))
    assert chat_view({"messages": []}, "anthropic", message, "anthropic") is not None


def _sse(payloads: list[Any], named: bool) -> bytes:
    out = b""
    for payload in payloads:
        if payload == "[DONE]":
            out += b"data: [DONE]\n\n"
        else:
            out += (b"event: x\n" if named else b"") + b"data: " + orjson.dumps(payload) + b"\n\n"
    return out


@SETTINGS
@given(
    broken(openai_streams().map(lambda g: _payloads(b"".join(g[0])))),
    broken(anthropic_streams().map(lambda chunks: _payloads(b"".join(chunks)))),
    st.integers(1, 64),
)
def test_broken_streams_never_raise(openai: list[Any], anthropic: list[Any], cut: int) -> None:
    for stream, data in (
        (OpenAIToAnthropicStream(), _sse(openai, named=False)),
        (AnthropicToOpenAIStream(include_usage=True), _sse(anthropic, named=True)),
    ):
        out = b"".join(stream.feed(data[i : i + cut]) for i in range(0, len(data), cut))
        out += stream.flush()
        events(out)  # still well-framed events
