"""Chat completions through the official SDK: determinism, streaming, usage, validation."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import orjson
import pytest
from openai import BadRequestError, OpenAI
from openai.types.chat import ChatCompletionMessageParam

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say something about gateways, please."},
]


def test_same_request_same_answer_and_seed_changes_it(client: OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, seed=7)
    again = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, seed=7)
    other = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, seed=8)

    assert first.object == "chat.completion"
    assert first.id.startswith("chatcmpl-") and first.id != again.id
    assert first.model == "gpt-4o"
    assert first.system_fingerprint
    text = first.choices[0].message.content
    assert text and text == again.choices[0].message.content
    assert text != other.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    assert 12 <= first.usage.completion_tokens <= 60  # type: ignore[union-attr]


def test_usage_follows_the_documented_token_rule(client: OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello, world."}]
    reply = client.chat.completions.create(model="gpt-4", messages=messages)  # 4 tokens of text

    usage = reply.usage
    assert usage is not None
    assert usage.prompt_tokens == 4 + 3 + 3
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_stream_matches_the_non_streamed_answer(client: OpenAI) -> None:
    whole = client.chat.completions.create(model="gpt-4", messages=MESSAGES, seed=3)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4",
            messages=MESSAGES,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    token_chunks = [c for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert len(token_chunks) == whole.usage.completion_tokens  # type: ignore[union-attr]
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4" for c in chunks)


def _raw_events(simulator: RunningSimulator, body: dict[str, object]) -> list[bytes]:
    response = httpx.post(simulator.v1 + "/chat/completions", json=body, headers=simulator.fast)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content.endswith(b"data: [DONE]\n\n")
    events = response.content.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    return [event.removeprefix(b"data: ") for event in events[:-2]]


def test_usage_chunk_and_null_usage_only_when_asked(simulator: RunningSimulator) -> None:
    body: dict[str, object] = {"model": "gpt-4", "messages": MESSAGES, "stream": True}
    plain = _raw_events(simulator, body)
    assert all(b'"usage"' not in event for event in plain)
    assert all(orjson.loads(event)["choices"] for event in plain)

    asked = _raw_events(simulator, {**body, "stream_options": {"include_usage": True}})
    assert len(asked) == len(plain) + 1
    assert all(event.endswith(b',"usage":null}') for event in asked[:-1])
    last = orjson.loads(asked[-1])
    assert last["choices"] == []
    assert last["usage"]["total_tokens"] == (
        last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
    )


def test_max_tokens_caps_with_length_and_n_gives_distinct_choices(client: OpenAI) -> None:
    capped = client.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=5)
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage and capped.usage.completion_tokens == 5

    newer = client.chat.completions.create(
        model="gpt-4", messages=MESSAGES, max_completion_tokens=3, n=3
    )
    assert [choice.index for choice in newer.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in newer.choices}) == 3
    assert newer.usage and newer.usage.completion_tokens == 9


def test_n_choices_stream_interleaved_and_add_up(client: OpenAI) -> None:
    whole = client.chat.completions.create(model="gpt-4", messages=MESSAGES, n=2, seed=1)
    texts = ["", ""]
    for chunk in client.chat.completions.create(
        model="gpt-4", messages=MESSAGES, n=2, seed=1, stream=True
    ):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [choice.message.content for choice in whole.choices]


def test_json_response_formats(client: OpenAI) -> None:
    loose = client.chat.completions.create(
        model="gpt-4", messages=MESSAGES, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(loose.choices[0].message.content or ""), dict)

    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "population": {"type": "integer", "minimum": 1000, "maximum": 5000},
            "capital": {"type": "boolean"},
        },
        "required": ["city", "population", "capital"],
        "additionalProperties": False,
    }
    strict = client.chat.completions.create(
        model="gpt-4",
        messages=MESSAGES,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": schema, "strict": True},
        },
    )
    value = json.loads(strict.choices[0].message.content or "")
    assert set(value) == {"city", "population", "capital"}
    assert isinstance(value["city"], str)
    assert 1000 <= value["population"] <= 5000
    assert isinstance(value["capital"], bool)


def test_invalid_requests_get_openai_errors(simulator: RunningSimulator, client: OpenAI) -> None:
    url = simulator.v1 + "/chat/completions"
    not_json = httpx.post(url, content=b"{nope", headers=simulator.fast)
    assert not_json.status_code == 400
    error = not_json.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"

    with pytest.raises(BadRequestError) as raised:
        client.chat.completions.create(model="gpt-4", messages=[])
    assert raised.value.status_code == 400
    assert raised.value.param == "messages"

    missing = httpx.post(url, json={"model": "gpt-4"}, headers=simulator.fast)
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"
