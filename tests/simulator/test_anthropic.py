"""Anthropic's Messages API on the simulator, through the official anthropic SDK and raw HTTP:
answers, tools, stop reasons, thinking, streams and their event sequence, count_tokens, prompt
caching, errors and faults, latency by model, and what the recorder keeps."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam, ToolParam

from simulator.anthropic_request import IMAGE_TOKENS
from simulator.tokens import count_tokens, split_tokens

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator

FAST = {"x-sim-ttft-ms": "0", "x-sim-token-ms": "0"}
HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01", **FAST}
MODEL = "claude-sonnet-4-5"
ASK: list[MessageParam] = [{"role": "user", "content": "Tell me about the gateway."}]
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city", "unit", "days", "tags"],
    },
}
CLOCK: ToolParam = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
PNG_1PX = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9"
    "awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def claude(simulator: RunningSimulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=simulator.base_url, api_key="x", max_retries=0, default_headers=FAST
    )


def post(
    simulator: RunningSimulator,
    body: Any,
    path: str = "/v1/messages",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = HEADERS if headers is None else headers
    return httpx.post(
        simulator.base_url + path,
        content=content,
        headers={"content-type": "application/json", **sent},
        timeout=30,
    )


def events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The (name, data) of each event of a stream, checking each event's framing."""
    out = []
    for chunk in response.text.split("\n\n"):
        if not chunk:
            continue
        name_line, data_line = chunk.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), chunk
        name = name_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        out.append((name, data))
    return out


def anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["request-id"].startswith("req_")
    body = response.json()
    assert body["type"] == "error" and body["request_id"] == response.headers["request-id"]
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    message: str = body["error"]["message"]
    assert message
    return message


def blocks(message: Any) -> list[dict[str, Any]]:
    """A message's content as plain data (a streamed message's blocks are Parsed* models)."""
    return [block.model_dump(exclude_none=True) for block in message.content]


def full_text(claude: anthropic.Anthropic, messages: list[MessageParam] = ASK) -> str:
    reply = claude.messages.create(model=MODEL, max_tokens=4096, messages=messages)
    block = reply.content[0]
    assert block.type == "text"
    return block.text


def test_a_text_answer(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(model=MODEL, max_tokens=1024, messages=ASK)
    assert raw.headers["request-id"].startswith("req_")
    reply = raw.parse()
    assert reply.id.startswith("msg_") and reply.type == "message" and reply.role == "assistant"
    assert reply.model == MODEL
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    [block] = reply.content
    assert block.type == "text" and block.text
    assert reply.usage.output_tokens == count_tokens(block.text)
    assert reply.usage.input_tokens == count_tokens("Tell me about the gateway.") + 3 + 3
    assert reply.usage.cache_creation_input_tokens == 0
    assert reply.usage.cache_read_input_tokens == 0
    # Deterministic: the same request, the same answer; another prompt or model, another one.
    assert full_text(claude) == full_text(claude) == block.text
    assert full_text(claude, [{"role": "user", "content": "Something else."}]) != block.text
    other = claude.messages.create(model="claude-opus-4-1", max_tokens=1024, messages=ASK)
    assert blocks(other) != blocks(reply)
    # A string content and its one text block are the same prompt.
    as_text_block: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": "Tell me about the gateway."}]}
    ]
    as_blocks = claude.messages.create(model=MODEL, max_tokens=1024, messages=as_text_block)
    assert blocks(as_blocks) == blocks(reply)


def test_system_images_and_documents_are_taken(claude: anthropic.Anthropic) -> None:
    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {
                    "type": "document",
                    "source": {
                        "type": "text",
                        "media_type": "text/plain",
                        "data": "Four words of text",
                    },
                    "title": "Notes",
                },
                {"type": "text", "text": "Describe these."},
            ],
        }
    ]
    system: list[Any] = [{"type": "text", "text": "You are terse."}]
    reply = claude.messages.create(model=MODEL, max_tokens=512, system=system, messages=messages)
    text_tokens = count_tokens("You are terse.") + count_tokens("Four words of text")
    text_tokens += count_tokens("Notes") + count_tokens("Describe these.")
    assert reply.usage.input_tokens == 2 * IMAGE_TOKENS + text_tokens + 3 + 3
    counted = claude.messages.count_tokens(model=MODEL, system=system, messages=messages)
    assert counted.input_tokens == reply.usage.input_tokens


def test_max_tokens_cuts_the_answer(claude: anthropic.Anthropic) -> None:
    whole = split_tokens(full_text(claude))
    assert len(whole) > 5
    reply = claude.messages.create(model=MODEL, max_tokens=5, messages=ASK)
    assert reply.stop_reason == "max_tokens"
    assert reply.usage.output_tokens == 5
    block = reply.content[0]
    assert block.type == "text" and block.text == "".join(whole[:5])


def test_a_stop_sequence_cuts_before_it(claude: anthropic.Anthropic) -> None:
    whole = full_text(claude)
    word = split_tokens(whole)[6].strip()
    reply = claude.messages.create(
        model=MODEL, max_tokens=4096, messages=ASK, stop_sequences=[word, "zzz-never"]
    )
    assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == word
    block = reply.content[0]
    assert block.type == "text" and block.text == whole[: whole.find(word)]
    # Streamed, the same cut.
    with claude.messages.stream(
        model=MODEL, max_tokens=4096, messages=ASK, stop_sequences=[word]
    ) as stream:
        assert "".join(stream.text_stream) == block.text
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == word
    # A stop sequence the text does not hold changes nothing.
    reply = claude.messages.create(
        model=MODEL, max_tokens=4096, messages=ASK, stop_sequences=["zzz"]
    )
    assert reply.stop_reason == "end_turn" and reply.content[0].type == "text"
    assert reply.content[0].text == whole


def test_stream_equals_the_answer(claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(model=MODEL, max_tokens=1024, messages=ASK)
    with claude.messages.stream(model=MODEL, max_tokens=1024, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert reply.content[0].type == "text" and text == reply.content[0].text
    assert blocks(final) == blocks(reply)
    assert final.stop_reason == reply.stop_reason == "end_turn"
    assert final.usage.output_tokens == reply.usage.output_tokens
    assert final.usage.input_tokens == reply.usage.input_tokens


def test_the_event_sequence(simulator: RunningSimulator) -> None:
    body = {"model": MODEL, "max_tokens": 1024, "messages": ASK, "stream": True}
    response = post(simulator, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    seen = events(response)
    names = [name for name, _ in seen]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = seen[0][1]["message"]
    assert (
        start["content"] == [] and start["stop_reason"] is None and start["stop_sequence"] is None
    )
    assert start["usage"]["output_tokens"] == 1 and start["usage"]["input_tokens"] > 0
    assert {"cache_creation_input_tokens", "cache_read_input_tokens"} <= set(start["usage"])
    assert seen[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [data["delta"] for name, data in seen if name == "content_block_delta"]
    assert all(delta["type"] == "text_delta" for delta in deltas)
    closing = seen[-2][1]
    assert closing["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert closing["usage"]["output_tokens"] == len(deltas)
    text = "".join(delta["text"] for delta in deltas)
    plain = post(simulator, {**body, "stream": False}).json()
    assert plain["content"] == [{"type": "text", "text": text}]


def test_tools_round_trip(claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(
        model=MODEL, max_tokens=1024, messages=ASK, tools=[WEATHER, CLOCK]
    )
    assert reply.stop_reason == "tool_use"
    [call] = reply.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    arguments: dict[str, Any] = call.input
    assert set(arguments) == {"city", "unit", "days", "tags"}
    assert arguments["unit"] in ("celsius", "fahrenheit") and 1 <= arguments["days"] <= 7
    assert reply.usage.output_tokens > 0
    # The same again: the same call, id included.
    again = claude.messages.create(
        model=MODEL, max_tokens=1024, messages=ASK, tools=[WEATHER, CLOCK]
    )
    assert blocks(again) == blocks(reply)
    # The result goes back; the answer is text.
    follow: list[MessageParam] = [
        *ASK,
        {"role": "assistant", "content": reply.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C, dry"}],
        },
    ]
    answer = claude.messages.create(
        model=MODEL, max_tokens=1024, messages=follow, tools=[WEATHER, CLOCK]
    )
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"
    # tool_choice: a named tool, or none.
    forced = claude.messages.create(
        model=MODEL,
        max_tokens=1024,
        messages=ASK,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "tool", "name": "get_time"},
    )
    assert forced.content[0].type == "tool_use" and forced.content[0].name == "get_time"
    assert forced.content[0].input == {}
    plain = claude.messages.create(
        model=MODEL, max_tokens=1024, messages=ASK, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert plain.stop_reason == "end_turn" and plain.content[0].type == "text"


def test_a_streamed_tool_call(simulator: RunningSimulator, claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(model=MODEL, max_tokens=1024, messages=ASK, tools=[WEATHER])
    with claude.messages.stream(
        model=MODEL, max_tokens=1024, messages=ASK, tools=[WEATHER]
    ) as stream:
        final = stream.get_final_message()
    assert blocks(final) == blocks(reply) and final.stop_reason == "tool_use"
    call = final.content[0]
    assert call.type == "tool_use"
    body = {"model": MODEL, "max_tokens": 1024, "messages": ASK, "tools": [WEATHER], "stream": True}
    seen = events(post(simulator, body))
    opening = seen[1][1]["content_block"]
    assert opening == {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {}}
    parts = [
        data["delta"]["partial_json"]
        for name, data in seen
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta"
    ]
    assert parts[0] == "" and len(parts) > 3
    assert json.loads("".join(parts)) == call.input
    assert seen[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        (
            [
                *ASK,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}
                    ],
                },
                {"role": "user", "content": "And?"},
            ],
            "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1",
        ),
        (
            [
                *ASK,
                {"role": "assistant", "content": "Let me check."},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}],
                },
            ],
            "unexpected `tool_use_id` found in `tool_result` blocks: toolu_9",
        ),
    ],
)
def test_tool_results_must_pair_with_tool_calls(
    simulator: RunningSimulator, messages: list[Any], problem: str
) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": messages, "tools": [CLOCK]}
    assert problem in anthropic_error(post(simulator, body), 400, "invalid_request_error")


def test_thinking_comes_first_with_a_signature(claude: anthropic.Anthropic) -> None:
    whole = full_text(claude)
    reply = claude.messages.create(
        model=MODEL,
        max_tokens=4096,
        messages=ASK,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    thinking, text = reply.content
    assert thinking.type == "thinking" and thinking.thinking and len(thinking.signature) > 100
    assert text.type == "text" and text.text == whole  # thinking leaves the text as it was
    thought = count_tokens(thinking.thinking)
    assert reply.usage.output_tokens == thought + count_tokens(whole)
    with claude.messages.stream(
        model=MODEL,
        max_tokens=4096,
        messages=ASK,
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        kinds = [event.delta.type for event in stream if event.type == "content_block_delta"]
        final = stream.get_final_message()
    assert blocks(final) == blocks(reply)
    first_text = kinds.index("text_delta")
    assert (
        set(kinds[: first_text - 1]) == {"thinking_delta"}
        and kinds[first_text - 1] == "signature_delta"
    )
    # Thinking tokens count towards max_tokens: what is left is all the text gets.
    cut = claude.messages.create(
        model=MODEL,
        max_tokens=1024 + 1,
        messages=ASK,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert cut.usage.output_tokens <= 1025
    # Omitted: no thinking text, the signature still there.
    omitted = claude.messages.create(
        model=MODEL,
        max_tokens=4096,
        messages=ASK,
        thinking={"type": "enabled", "budget_tokens": 1024, "display": "omitted"},
    )
    assert omitted.content[0].type == "thinking" and omitted.content[0].thinking == ""
    assert omitted.content[0].signature == thinking.signature


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"thinking": {"type": "enabled", "budget_tokens": 1000}},
            "thinking.enabled.budget_tokens",
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, "max_tokens"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 1024}, "temperature": 0.5},
            "temperature",
        ),
        (
            {
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "tools": [CLOCK],
                "tool_choice": {"type": "any"},
            },
            "tool_choice forces tool use",
        ),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"max_tokens": "5"}, "max_tokens: Input should be a valid integer"),
        ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
        ({"top_p": -0.1}, "top_p"),
        ({"messages": []}, "messages: at least one message is required"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": ""}]},
            "messages.0: all messages must have non-empty content",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
            "text content blocks must be non-empty",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages.0.content.0.type: Input tag 'video'",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/bmp",
                                    "data": PNG_1PX,
                                },
                            }
                        ],
                    }
                ]
            },
            "messages.0.content.0.source.base64.media_type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": "not base64!",
                                },
                            }
                        ],
                    }
                ]
            },
            "messages.0.content.0.source.base64.data",
        ),
        ({"messages": [*ASK, {"role": "assistant", "content": "Well "}]}, "trailing whitespace"),
        (
            {"messages": [{"role": "user", "content": "x", "name": "bob"}]},
            "messages.0.name: Extra inputs are not permitted",
        ),
        ({"n": 2}, "n: Extra inputs are not permitted"),
        (
            {"stop_sequences": ["\n"]},
            "stop_sequences: each stop sequence must contain non-whitespace",
        ),
        ({"system": [{"type": "image"}]}, "system.0.type"),
        (
            {"tools": [{"name": "bad name", "input_schema": {"type": "object"}}]},
            "tools.0.custom.name",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            "tools.0.type: Input tag 'function'",
        ),
        ({"tools": [CLOCK, CLOCK]}, "Tool names must be unique"),
        (
            {"tools": [CLOCK], "tool_choice": {"type": "tool", "name": "nope"}},
            "tool_choice.tool.name",
        ),
        ({"tool_choice": {"type": "any"}}, "tool_choice"),
        ({"metadata": {"user_id": 5}}, "metadata.user_id: Input should be a valid string"),
        ({"cache_control": {"type": "permanent"}}, "cache_control.type"),
        (
            {
                "system": [
                    {"type": "text", "text": f"s{i}", "cache_control": {"type": "ephemeral"}}
                    for i in range(5)
                ]
            },
            "A maximum of 4 blocks with cache_control may be provided. Found 5.",
        ),
    ],
)
def test_bad_requests_name_the_field(
    simulator: RunningSimulator, change: dict[str, Any], problem: str
) -> None:
    body = {"model": MODEL, "max_tokens": 1500, "messages": ASK, **change}
    assert problem in anthropic_error(post(simulator, body), 400, "invalid_request_error")


def test_missing_max_tokens_is_a_bad_request(simulator: RunningSimulator) -> None:
    response = post(simulator, {"model": MODEL, "messages": ASK})
    assert anthropic_error(response, 400, "invalid_request_error") == "max_tokens: Field required"
    bad_json = post(simulator, b'{"model": "claude', headers=HEADERS)
    anthropic_error(bad_json, 400, "invalid_request_error")


def test_headers_are_required(simulator: RunningSimulator) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": ASK}
    no_key = {"anthropic-version": "2023-06-01"}
    assert "x-api-key" in anthropic_error(
        post(simulator, body, headers=no_key), 401, "authentication_error"
    )
    blank = {**no_key, "x-api-key": ""}
    anthropic_error(post(simulator, body, headers=blank), 401, "authentication_error")
    bearer = {**no_key, "authorization": "Bearer sk-ant-test"}
    assert post(simulator, body, headers=bearer).status_code == 200
    no_version = {"x-api-key": "k"}
    message = anthropic_error(
        post(simulator, body, headers=no_version), 400, "invalid_request_error"
    )
    assert "anthropic-version" in message
    odd_version = {"x-api-key": "k", "anthropic-version": "latest"}
    anthropic_error(post(simulator, body, headers=odd_version), 400, "invalid_request_error")
    wrong_method = httpx.get(simulator.base_url + "/v1/messages", headers=HEADERS)
    anthropic_error(wrong_method, 405, "invalid_request_error")


def test_count_tokens_agrees_with_usage(claude: anthropic.Anthropic) -> None:
    system = "You answer questions about the weather, briefly."
    messages: list[MessageParam] = [
        *ASK,
        {"role": "assistant", "content": [{"type": "text", "text": "Which city?"}]},
        {"role": "user", "content": "Paris, in celsius."},
    ]
    counted = claude.messages.count_tokens(
        model=MODEL, system=system, messages=messages, tools=[WEATHER]
    )
    reply = claude.messages.create(
        model=MODEL, max_tokens=512, system=system, messages=messages, tools=[WEATHER]
    )
    assert counted.input_tokens == reply.usage.input_tokens > 0
    bigger = claude.messages.count_tokens(
        model=MODEL, system=system + " Always.", messages=messages, tools=[WEATHER]
    )
    assert bigger.input_tokens == counted.input_tokens + 2


def test_count_tokens_takes_no_max_tokens(simulator: RunningSimulator) -> None:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 10}
    message = anthropic_error(
        post(simulator, body, "/v1/messages/count_tokens"), 400, "invalid_request_error"
    )
    assert message == "max_tokens: Extra inputs are not permitted"
    good = post(simulator, {"model": MODEL, "messages": ASK}, "/v1/messages/count_tokens")
    assert good.status_code == 200 and set(good.json()) == {"input_tokens"}
    assert good.headers["request-id"].startswith("req_")


def test_prompt_caching_writes_then_reads(claude: anthropic.Anthropic) -> None:
    unique = uuid.uuid4().hex  # the simulator is shared: a prefix no other test has sent
    system: list[Any] = [
        {"type": "text", "text": f"Reference {unique}: " + "the gateway routes calls. " * 40},
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
    ]
    prefix = count_tokens(system[0]["text"]) + count_tokens("Be brief.")
    first = claude.messages.create(model=MODEL, max_tokens=256, system=system, messages=ASK)
    assert first.usage.cache_creation_input_tokens == prefix
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == prefix
    assert first.usage.input_tokens == count_tokens(ASK[0]["content"]) + 3 + 3  # type: ignore[arg-type]
    second = claude.messages.create(model=MODEL, max_tokens=256, system=system, messages=ASK)
    assert second.usage.cache_read_input_tokens == prefix
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == first.usage.input_tokens
    # A later question after the same system prompt reads it too; the total is what counts.
    later: list[MessageParam] = [{"role": "user", "content": "A different question entirely."}]
    third = claude.messages.create(model=MODEL, max_tokens=256, system=system, messages=later)
    assert third.usage.cache_read_input_tokens == prefix
    counted = claude.messages.count_tokens(model=MODEL, system=system, messages=later)
    usage = third.usage
    assert counted.input_tokens == usage.input_tokens + usage.cache_read_input_tokens  # type: ignore[operator]
    # Another model has a cache of its own.
    other = claude.messages.create(
        model="claude-haiku-4-5", max_tokens=256, system=system, messages=ASK
    )
    assert other.usage.cache_creation_input_tokens == prefix


def test_caching_a_longer_prefix_reads_the_shorter_one(claude: anthropic.Anthropic) -> None:
    unique = uuid.uuid4().hex
    system: list[Any] = [
        {
            "type": "text",
            "text": f"Manual {unique}.",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    first_turn: list[Any] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "First question here.",
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        }
    ]
    shorter = count_tokens(f"Manual {unique}.")
    first = claude.messages.create(model=MODEL, max_tokens=64, system=system, messages=ASK)
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == shorter
    longer = claude.messages.create(model=MODEL, max_tokens=64, system=system, messages=first_turn)
    assert longer.usage.cache_read_input_tokens == shorter
    assert longer.usage.cache_creation_input_tokens == 3 + count_tokens("First question here.")
    assert longer.usage.input_tokens == 3  # only the reply's priming comes after the breakpoint
    # Top-level cache_control marks the last block.
    auto = claude.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": f"Automatic {unique}."}],
        extra_body={"cache_control": {"type": "ephemeral"}},
    )
    assert auto.usage.cache_creation_input_tokens == 3 + count_tokens(f"Automatic {unique}.")


def test_rate_limit_and_overload(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(
            model=MODEL, max_tokens=10, messages=ASK, extra_headers={"x-sim-fault": "429"}
        )
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    for fault in ("529", "503"):
        with pytest.raises(anthropic.InternalServerError) as overloaded:
            claude.messages.create(
                model=MODEL, max_tokens=10, messages=ASK, extra_headers={"x-sim-fault": fault}
            )
        assert overloaded.value.status_code == 529
        assert isinstance(overloaded.value, anthropic.OverloadedError)
        assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as failed:
        claude.messages.create(
            model=MODEL, max_tokens=10, messages=ASK, extra_headers={"x-sim-fault": "500"}
        )
    assert failed.value.status_code == 500
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.count_tokens(
            model=MODEL, messages=ASK, extra_headers={"x-sim-fault": "529"}
        )


def test_a_stream_dropped_after_n_events(simulator: RunningSimulator) -> None:
    body = {"model": MODEL, "max_tokens": 1024, "messages": ASK, "stream": True}
    received: list[bytes] = []
    headers = {
        "content-type": "application/json",
        **HEADERS,
        "x-sim-fault": "drop",
        "x-sim-fault-after": "4",
    }
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST", simulator.base_url + "/v1/messages", json=body, headers=headers, timeout=30
        ) as response,
    ):
        for chunk in response.iter_bytes():
            received.append(chunk)
    text = b"".join(received).decode()
    assert text.count("event: ") == 4 and "message_stop" not in text


def test_an_error_event_ends_the_stream(
    simulator: RunningSimulator, claude: anthropic.Anthropic
) -> None:
    fault = {"x-sim-fault": "error-event", "x-sim-fault-after": "5"}
    body = {"model": MODEL, "max_tokens": 1024, "messages": ASK, "stream": True}
    response = post(simulator, body, headers={**HEADERS, **fault})
    assert response.status_code == 200
    seen = events(response)
    assert len(seen) == 6 and [name for name, _ in seen][:3] == [
        "message_start",
        "content_block_start",
        "ping",
    ]
    assert seen[-1] == (
        "error",
        {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded (simulated)"},
        },
    )
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        claude.messages.stream(
            model=MODEL, max_tokens=1024, messages=ASK, extra_headers=fault
        ) as stream,
    ):
        for _ in stream:
            pass
    assert raised.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    # Not streamed: the same fault is an overloaded answer.
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.create(model=MODEL, max_tokens=10, messages=ASK, extra_headers=fault)


def _first_event_seconds(simulator: RunningSimulator, model: str) -> float:
    body = {"model": model, "max_tokens": 64, "messages": ASK, "stream": True}
    headers = {
        "content-type": "application/json",
        "x-api-key": "k",
        "anthropic-version": "2023-06-01",
    }
    started = time.monotonic()
    with httpx.stream(
        "POST", simulator.base_url + "/v1/messages", json=body, headers=headers, timeout=30
    ) as response:
        chunks: Iterator[bytes] = response.iter_bytes()
        next(chunks)
        return time.monotonic() - started


def test_teacher_and_student_latency_by_model(simulator: RunningSimulator) -> None:
    """The built-in profile: claude-*opus*/*sonnet* answer like teachers, *haiku* like a student."""
    assert _first_event_seconds(simulator, "claude-opus-4-1") >= 0.4
    assert _first_event_seconds(simulator, "claude-sonnet-4-5") >= 0.4
    assert 0.1 <= _first_event_seconds(simulator, "claude-haiku-4-5") < 0.4


def test_requests_are_recorded(simulator: RunningSimulator, claude: anthropic.Anthropic) -> None:
    marker = uuid.uuid4().hex
    claude.messages.create(
        model=MODEL,
        max_tokens=20,
        messages=[{"role": "user", "content": marker}],
        metadata={"user_id": "u-1"},
    )
    entry = next(e for e in reversed(simulator.recorded()) if marker in json.dumps(e["body"]))
    assert entry["path"] == "/v1/messages" and entry["method"] == "POST"
    headers = entry["headers"]
    assert isinstance(headers, dict) and "anthropic-version" in headers
    assert entry["body"] == {
        "model": MODEL,
        "max_tokens": 20,
        "messages": [{"role": "user", "content": marker}],
        "metadata": {"user_id": "u-1"},
    }


PROFILE_FAULTS = """
faults:
  - {model: "claude-opus-*", kind: 529}
  - {model: "claude-haiku-*", kind: error-event, after: 3}
"""


def test_profile_faults_for_claude(
    simulator_with_profile: Callable[[str], RunningSimulator],
) -> None:
    running = simulator_with_profile(PROFILE_FAULTS)
    overloaded = post(running, {"model": "claude-opus-4-1", "max_tokens": 10, "messages": ASK})
    anthropic_error(overloaded, 529, "overloaded_error")
    body = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": ASK, "stream": True}
    seen = events(post(running, body))
    assert [name for name, _ in seen] == ["message_start", "content_block_start", "ping", "error"]
    fine = post(running, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": ASK})
    assert fine.status_code == 200


def test_tokens_are_paced(simulator: RunningSimulator) -> None:
    paced = {**HEADERS, "x-sim-ttft-ms": "50", "x-sim-token-ms": "10"}
    body = {"model": MODEL, "max_tokens": 1024, "messages": ASK}
    started = time.monotonic()
    plain = post(simulator, body, headers=paced)
    elapsed = time.monotonic() - started
    output_tokens = plain.json()["usage"]["output_tokens"]
    assert elapsed >= 0.05 + 0.01 * output_tokens
    arrivals: list[float] = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        simulator.base_url + "/v1/messages",
        json={**body, "stream": True},
        headers={"content-type": "application/json", **paced},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("event: content_block_delta"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == output_tokens
    assert arrivals[0] >= 0.05
    assert arrivals[-1] - arrivals[0] >= 0.01 * (output_tokens - 1) * 0.9
