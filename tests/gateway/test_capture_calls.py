"""Capture through real processes: what one call leaves in the store, on SQLite and PostgreSQL.

The gateway runs under uvicorn in front of the simulator; the openai SDK is the client; the rows
are read straight from the database with SQLAlchemy, never through the gateway.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionFunctionToolParam

from capture.pricing import PriceTable
from gateway.settings import hash_key
from tests.capture_support import (
    BACKENDS,
    ENV,
    GATEWAY_KEY,
    PRICED_MODEL,
    PROVIDER_KEY,
    SHADOW_MODEL,
    UNPRICED_MODEL,
    Backend,
    BackendKind,
    Rows,
    capture_config,
    open_backend,
    poll,
    rows_of,
)
from tests.processes import Running, start_gateway

TAGS_HEADER = {"x-gateway-tags": "team=a,env=test"}
METADATA = {"purpose": "eval", "team": "b"}
MERGED_TAGS = {"team": "a", "env": "test", "purpose": "eval"}
"""The header's tags plus the body's metadata; the header wins the conflict on ``team``."""

SENSITIVE = (
    "Reach me at jane.doe@example.com or +44 20 7946 0958; "
    "card 4111 1111 1111 1111; key sk-proj-Zx81Qw27Er45Ty63Ui09Op"
)
REDACTED = "Reach me at [EMAIL] or [PHONE]; card [CARD]; key [SECRET]"
SENSITIVE_PIECES = (
    "jane.doe@example.com",
    "7946 0958",
    "4111 1111 1111 1111",
    "sk-proj-Zx81Qw27Er45Ty63Ui09Op",
)

WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    kind: BackendKind = request.param
    with open_backend(kind, tmp_path_factory.mktemp(f"capture-calls-{kind}"), __name__) as b:
        yield b


@pytest.fixture(scope="module")
def database_url(backend: Backend) -> str:
    return backend.new_url()


@pytest.fixture(scope="module")
def gw(backend: Backend, database_url: str, simulator: Running) -> Iterator[Running]:
    running = start_gateway(backend.workdir, capture_config(simulator.url, database_url), env=ENV)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rows(database_url: str, gw: Running) -> Iterator[Rows]:
    with rows_of(database_url) as reader:
        yield reader


@pytest.fixture
def sdk(gw: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20)


@pytest.fixture
def sim_sdk(simulator: Running) -> openai.OpenAI:
    """The simulator without the gateway: what the upstream reports for the same request."""
    return openai.OpenAI(
        base_url=f"{simulator.url}/v1", api_key="direct", max_retries=0, timeout=20
    )


def chunks_of(raw: Any) -> list[ChatCompletionChunk]:
    """The chunks of a streamed call made ``with_raw_response``, read to the end."""
    stream = raw.parse()
    assert isinstance(stream, openai.Stream)
    return list(stream)


def expected_cost(model: str, prompt: int, completion: int) -> float:
    cost = PriceTable().cost_usd(model, prompt, completion, 0)
    assert cost is not None, f"{model} should have a built-in price"
    return cost


def test_a_non_streamed_call_is_recorded(
    sdk: openai.OpenAI, sim_sdk: openai.OpenAI, rows: Rows
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Summarise Hamlet in one line."}]
    raw = sdk.chat.completions.with_raw_response.create(
        model="assistant",
        messages=messages,
        max_tokens=12,
        metadata=METADATA,
        extra_headers={**TAGS_HEADER, "x-gateway-user": "user-42"},
    )
    request_id = raw.headers["x-request-id"]
    answer = raw.http_response.json()
    direct = sim_sdk.chat.completions.create(model=PRICED_MODEL, messages=messages, max_tokens=12)
    assert direct.usage is not None

    row = rows.wait_for_call(request_id)

    assert row["id"] == request_id
    assert row["endpoint"] == "chat"
    assert (row["route"], row["variant"], row["provider"]) == ("assistant", "teacher", "sim")
    assert row["requested_model"] == "assistant"
    assert row["upstream_model"] == PRICED_MODEL == raw.headers["x-gateway-upstream-model"]
    assert row["request"] == {
        "messages": messages,
        "model": "assistant",
        "max_tokens": 12,
        "metadata": METADATA,
    }
    assert row["response"] == answer
    assert row["finish_reason"] == answer["choices"][0]["finish_reason"]
    assert row["status"] == 200
    assert row["error"] is None
    assert row["stream"] is False
    assert row["shadow_of"] is None
    assert row["prompt_tokens"] == direct.usage.prompt_tokens
    assert row["completion_tokens"] == direct.usage.completion_tokens
    assert row["cost_usd"] == pytest.approx(
        expected_cost(PRICED_MODEL, direct.usage.prompt_tokens, direct.usage.completion_tokens)
    )
    assert row["total_ms"] > 0
    assert row["overhead_ms"] >= 0
    assert row["upstream_ms"] is not None and row["upstream_ms"] >= 0
    assert row["tags"] == MERGED_TAGS
    assert row["user_key"] == "user-42"
    age = dt.datetime.now(dt.UTC) - row["created_at"]
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=5)


def test_a_streamed_call_is_recorded_with_the_assembled_answer(
    sdk: openai.OpenAI, sim_sdk: openai.OpenAI, rows: Rows
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Write a haiku about the sea."}]
    raw = sdk.chat.completions.with_raw_response.create(
        model="assistant",
        messages=messages,
        max_tokens=16,
        stream=True,
        metadata=METADATA,
        extra_headers={**TAGS_HEADER, "x-sim-ttft-ms": "20", "x-sim-token-ms": "2"},
    )
    request_id = raw.headers["x-request-id"]
    chunks = chunks_of(raw)
    assert all(chunk.usage is None for chunk in chunks), "the client did not ask for usage"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    direct = sim_sdk.chat.completions.create(model=PRICED_MODEL, messages=messages, max_tokens=16)
    assert direct.usage is not None and streamed == direct.choices[0].message.content

    row = rows.wait_for_call(request_id)

    assert (row["route"], row["variant"], row["provider"]) == ("assistant", "teacher", "sim")
    assert (row["requested_model"], row["upstream_model"]) == ("assistant", PRICED_MODEL)
    # The client's request as sent: no stream_options, which only the upstream was asked for.
    assert row["request"] == {
        "messages": messages,
        "model": "assistant",
        "max_tokens": 16,
        "metadata": METADATA,
        "stream": True,
    }
    response = row["response"]
    assert response["object"] == "chat.completion"
    message = response["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"] == streamed
    assert response["choices"][0]["finish_reason"] == direct.choices[0].finish_reason
    assert row["finish_reason"] == direct.choices[0].finish_reason
    assert row["stream"] is True
    assert row["status"] == 200 and row["error"] is None
    assert row["prompt_tokens"] == direct.usage.prompt_tokens
    assert row["completion_tokens"] == direct.usage.completion_tokens
    assert row["cost_usd"] == pytest.approx(
        expected_cost(PRICED_MODEL, direct.usage.prompt_tokens, direct.usage.completion_tokens)
    )
    assert row["ttft_ms"] is not None and row["ttft_ms"] > 0
    assert row["total_ms"] >= row["ttft_ms"]
    assert row["overhead_ms"] >= 0
    assert row["tags"] == MERGED_TAGS


def test_a_streamed_tool_call_is_stored_with_its_arguments_merged(
    sdk: openai.OpenAI, sim_sdk: openai.OpenAI, rows: Rows
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Will it rain in Oslo this week?"}]
    raw = sdk.chat.completions.with_raw_response.create(
        model="assistant", messages=messages, tools=[WEATHER_TOOL], stream=True
    )
    request_id = raw.headers["x-request-id"]
    pieces = []
    for chunk in chunks_of(raw):
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                if delta.function is not None and delta.function.arguments:
                    pieces.append(delta.function.arguments)
    assert len(pieces) > 1, "the simulator should stream the arguments in several deltas"
    direct = sim_sdk.chat.completions.create(
        model=PRICED_MODEL, messages=messages, tools=[WEATHER_TOOL]
    )
    direct_calls = direct.choices[0].message.tool_calls
    assert direct_calls and direct.usage is not None
    expected = direct_calls[0]
    assert expected.type == "function"

    row = rows.wait_for_call(request_id)

    stored_calls = row["response"]["choices"][0]["message"]["tool_calls"]
    assert len(stored_calls) == 1
    stored = stored_calls[0]
    assert stored["id"] == expected.id
    assert stored["type"] == "function"
    assert stored["function"]["name"] == expected.function.name == "get_weather"
    assert stored["function"]["arguments"] == "".join(pieces) == expected.function.arguments
    assert json.loads(stored["function"]["arguments"]).keys() >= {"city", "days"}
    assert row["finish_reason"] == "tool_calls"
    assert row["request"]["tools"] == [WEATHER_TOOL]
    assert row["prompt_tokens"] == direct.usage.prompt_tokens
    assert row["completion_tokens"] == direct.usage.completion_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_unpriced_model_has_tokens_and_no_cost(
    sdk: openai.OpenAI, sim_sdk: openai.OpenAI, rows: Rows, stream: bool
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Name three rivers."}]
    raw = sdk.chat.completions.with_raw_response.create(
        model="local", messages=messages, max_tokens=8, stream=stream
    )
    if stream:
        list(raw.parse())
    else:
        raw.parse()
    direct = sim_sdk.chat.completions.create(model=UNPRICED_MODEL, messages=messages, max_tokens=8)
    assert direct.usage is not None

    row = rows.wait_for_call(raw.headers["x-request-id"])

    assert row["upstream_model"] == UNPRICED_MODEL
    assert row["prompt_tokens"] == direct.usage.prompt_tokens
    assert row["completion_tokens"] == direct.usage.completion_tokens
    assert row["cost_usd"] is None  # unknown price: NULL, never 0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_personal_data_and_secrets_are_redacted_before_storage(
    sdk: openai.OpenAI, rows: Rows, stream: bool
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[{"role": "user", "content": SENSITIVE}],
        max_tokens=8,
        stream=stream,
        extra_headers={"x-gateway-tags": "owner=jane.doe@example.com"},
    )
    if stream:
        list(raw.parse())
    else:
        raw.parse()

    row = rows.wait_for_call(raw.headers["x-request-id"])

    assert row["request"]["messages"] == [{"role": "user", "content": REDACTED}]
    assert row["tags"] == {"owner": "[EMAIL]"}
    stored = json.dumps(row, default=str)
    for piece in SENSITIVE_PIECES:
        assert piece not in stored  # nowhere: request, response, tags, error


def test_a_route_with_redaction_off_stores_text_as_sent(sdk: openai.OpenAI, rows: Rows) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="plain-text", messages=[{"role": "user", "content": SENSITIVE}], max_tokens=8
    )
    raw.parse()

    row = rows.wait_for_call(raw.headers["x-request-id"])

    assert row["request"]["messages"] == [{"role": "user", "content": SENSITIVE}]


def test_calls_asked_not_to_be_recorded_leave_no_row(sdk: openai.OpenAI, rows: Rows) -> None:
    messages: list[Any] = [{"role": "user", "content": "off the record"}]
    by_header = sdk.chat.completions.with_raw_response.create(
        model="assistant",
        messages=messages,
        max_tokens=4,
        extra_headers={"x-gateway-capture": "off"},
    )
    by_header.parse()
    by_route = sdk.chat.completions.with_raw_response.create(
        model="unrecorded", messages=messages, max_tokens=4
    )
    by_route.parse()
    by_route_stream = sdk.chat.completions.with_raw_response.create(
        model="unrecorded", messages=messages, max_tokens=4, stream=True
    )
    list(by_route_stream.parse())
    skipped = [r.headers["x-request-id"] for r in (by_header, by_route, by_route_stream)]
    # The writer stores records in the order they were handed over: once a later call's row
    # is in, the rows of these calls would be too.
    marker = sdk.chat.completions.with_raw_response.create(
        model="assistant", messages=messages, max_tokens=4
    )
    marker.parse()
    rows.wait_for_call(marker.headers["x-request-id"])

    assert rows.ids(skipped) == set()


def test_no_key_is_stored_anywhere(sdk: openai.OpenAI, rows: Rows) -> None:
    messages: list[Any] = [{"role": "user", "content": "which key did I use?"}]
    plain = sdk.chat.completions.with_raw_response.create(
        model="assistant", messages=messages, max_tokens=4
    )
    plain.parse()
    streamed = sdk.chat.completions.with_raw_response.create(
        model="assistant", messages=messages, max_tokens=4, stream=True
    )
    list(streamed.parse())
    for raw in (plain, streamed):
        row = rows.wait_for_call(raw.headers["x-request-id"])
        stored = json.dumps(row, default=str)
        for secret in (GATEWAY_KEY, PROVIDER_KEY, "Bearer", "authorization"):
            assert secret.lower() not in stored.lower()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_shadow_call_is_stored_linked_to_its_primary(
    sdk: openai.OpenAI, rows: Rows, stream: bool
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Translate 'good morning' to French."}]
    raw = sdk.chat.completions.with_raw_response.create(
        model="shadowed",
        messages=messages,
        max_tokens=8,
        stream=stream,
        extra_headers=TAGS_HEADER,
    )
    if stream:
        list(raw.parse())
    else:
        raw.parse()
    request_id = raw.headers["x-request-id"]
    assert raw.headers["x-gateway-variant"] == "teacher"

    primary = rows.wait_for_call(request_id)
    shadows = poll(lambda: rows.shadows_of(request_id) or None, f"the shadow of {request_id}")

    assert primary["variant"] == "teacher"
    assert primary["shadow_of"] is None
    assert len(shadows) == 1
    shadow = shadows[0]
    assert shadow["id"] != request_id
    assert shadow["shadow_of"] == request_id
    assert (shadow["route"], shadow["variant"]) == ("shadowed", "student")
    assert shadow["upstream_model"] == SHADOW_MODEL
    assert shadow["status"] == 200 and shadow["error"] is None
    assert shadow["stream"] is stream
    assert shadow["request"]["messages"] == messages
    assert shadow["tags"] == {"team": "a", "env": "test"}
    assert shadow["prompt_tokens"] == primary["prompt_tokens"]
    assert shadow["completion_tokens"] is not None
    assert shadow["cost_usd"] is not None and shadow["cost_usd"] > 0
    assert shadow["response"]["choices"][0]["message"]["content"]


def test_a_shadow_row_stores_the_request_the_client_sent(sdk: openai.OpenAI, rows: Rows) -> None:
    messages: list[Any] = [{"role": "user", "content": "Count to three."}]
    raw = sdk.chat.completions.with_raw_response.create(
        model="shadowed", messages=messages, max_tokens=8, stream=True
    )
    list(raw.parse())
    request_id = raw.headers["x-request-id"]
    primary = rows.wait_for_call(request_id)
    shadow = poll(lambda: rows.shadows_of(request_id) or None, f"the shadow of {request_id}")[0]

    assert shadow["request"] == primary["request"]


def test_the_gateway_keys_digest_is_not_stored(sdk: openai.OpenAI, rows: Rows) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "no user here"}], max_tokens=4
    )
    raw.parse()
    row = rows.wait_for_call(raw.headers["x-request-id"])

    assert hash_key(GATEWAY_KEY) not in json.dumps(row, default=str)
