"""Both dialects in, every dialect out: the official SDKs against the gateway in front of the
simulator speaking OpenAI's API, Anthropic's Messages API and Azure OpenAI's URLs.

Anthropic SDK -> gateway -> Anthropic provider (same dialect, passed through) and -> an
OpenAI-format student (translated); OpenAI SDK -> gateway -> Anthropic provider (translated) and
-> Azure (deployment URLs and the v1 API); streams, tools, count_tokens, errors in the caller's
dialect, fallbacks on 529, and what is captured.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import MessageParam, ToolParam

from tests.processes import ZERO_LATENCY_PROFILE, Running, start_gateway, start_simulator

GATEWAY_KEY = "sk-gw-dialects-4c1e"
PROVIDER_KEY = "sk-provider-dialects-77ad"
ENV = {"DIALECTS_GATEWAY_KEY": GATEWAY_KEY, "DIALECTS_PROVIDER_KEY": PROVIDER_KEY}
CLAUDE = "claude-sonnet-4-5"
STUDENT = "ft:gpt-4o-mini:acme::s1"
AZURE_VERSION = "2024-10-21"

ASK: list[MessageParam] = [{"role": "user", "content": "My order 1234 has not arrived."}]
SYSTEM = "You are a terse support agent."
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "unit", "days"],
    },
}
OPENAI_WEATHER: Any = {
    "type": "function",
    "function": {
        "name": WEATHER["name"],
        "description": WEATHER["description"],
        "parameters": WEATHER["input_schema"],
    },
}


@pytest.fixture(scope="module")
def sim(workdir: Path) -> Iterator[Running]:
    profile = {
        **ZERO_LATENCY_PROFILE,
        "faults": [{"model": "claude-flaky", "kind": 529, "rate": 1.0}],
    }
    running = start_simulator(workdir, profile)
    yield running
    running.stop()


def _config(sim_url: str, db: Path) -> dict[str, Any]:
    key = "${DIALECTS_PROVIDER_KEY}"
    return {
        "auth": {"keys": [{"name": "tests", "key": "${DIALECTS_GATEWAY_KEY}"}]},
        "providers": {
            "sim": {"base_url": f"{sim_url}/v1", "api_key": key},
            "claude": {"base_url": f"{sim_url}/v1", "api": "anthropic", "api_key": key},
            "azure": {
                "base_url": sim_url,
                "api": "azure",
                "api_version": AZURE_VERSION,
                "api_key": key,
            },
            "azure-v1": {"base_url": f"{sim_url}/openai/v1", "api": "azure", "api_key": key},
        },
        "routes": {
            CLAUDE: {"variants": {"teacher": {"provider": "claude", "model": CLAUDE}}},
            "claude-student": {"variants": {"student": {"provider": "sim", "model": STUDENT}}},
            "gpt-on-claude": {
                "variants": {"teacher": {"provider": "claude", "model": CLAUDE, "max_tokens": 777}}
            },
            "azure-gpt": {"variants": {"d": {"provider": "azure", "model": "gpt4o-deploy"}}},
            "azure-v1": {"variants": {"d": {"provider": "azure-v1", "model": "gpt-4o"}}},
            "claude-fallback": {
                "variants": {
                    "primary": {"provider": "claude", "model": "claude-flaky"},
                    "backup": {"provider": "sim", "model": "gpt-4o-mini", "weight": 0},
                },
                "fallbacks": ["backup"],
                "retry": {"attempts": 1},
            },
        },
        "capture": {"database_url": f"sqlite+aiosqlite:///{db}", "flush_interval_ms": 20},
    }


@pytest.fixture(scope="module")
def db(workdir: Path) -> Path:
    return workdir / "dialects-capture.db"


@pytest.fixture(scope="module")
def gw(workdir: Path, sim: Running, db: Path) -> Iterator[Running]:
    running = start_gateway(workdir, _config(sim.url, db), env=ENV)
    yield running
    running.stop()


@pytest.fixture
def claude(gw: Running) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0)


@pytest.fixture
def claude_direct(sim: Running) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="direct", max_retries=0)


@pytest.fixture
def oai(gw: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


def _last(sim: Running) -> dict[str, Any]:
    recorded: list[dict[str, Any]] = httpx.get(f"{sim.url}/_sim/requests").json()
    assert recorded
    return recorded[-1]


def _headers(request: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in request["headers"].items()}


def _text(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


# --- Anthropic in, Anthropic out ------------------------------------------------------------


def test_anthropic_to_anthropic_is_passed_through(
    claude: anthropic.Anthropic, claude_direct: anthropic.Anthropic, sim: Running
) -> None:
    raw = claude.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=200, system=SYSTEM, messages=ASK
    )
    ours = raw.parse()
    sent = _last(sim)
    theirs = claude_direct.messages.create(
        model=CLAUDE, max_tokens=200, system=SYSTEM, messages=ASK
    )
    assert _text(ours) and _text(ours) == _text(theirs)
    assert ours.usage.input_tokens == theirs.usage.input_tokens
    assert ours.stop_reason == "end_turn"
    assert raw.headers["x-gateway-route"] == CLAUDE
    assert sent["path"] == "/v1/messages"
    headers = _headers(sent)
    assert headers["x-api-key"] == PROVIDER_KEY
    assert "authorization" not in headers
    assert GATEWAY_KEY not in json.dumps(sent)
    assert headers["anthropic-version"]  # the SDK's own, passed on


def test_the_key_may_come_as_x_api_key_or_bearer(gw: Running) -> None:
    body = {"model": CLAUDE, "max_tokens": 20, "messages": ASK}
    for auth in ({"x-api-key": GATEWAY_KEY}, {"authorization": f"Bearer {GATEWAY_KEY}"}):
        answer = httpx.post(
            f"{gw.url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01", **auth}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["type"] == "message"


def test_anthropic_stream_passed_through_matches_the_whole_answer(
    claude: anthropic.Anthropic,
) -> None:
    whole = claude.messages.create(model=CLAUDE, max_tokens=200, system=SYSTEM, messages=ASK)
    with claude.messages.stream(
        model=CLAUDE, max_tokens=200, system=SYSTEM, messages=ASK
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == _text(whole)
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.stop_reason == "end_turn"


# --- Anthropic in, OpenAI-format student out ------------------------------------------------


def test_anthropic_call_answered_by_an_openai_format_student(
    claude: anthropic.Anthropic, sim: Running
) -> None:
    raw = claude.messages.with_raw_response.create(
        model="claude-student",
        max_tokens=300,
        system=SYSTEM,
        messages=ASK,
        stop_sequences=["\n\n\n"],
        metadata={"user_id": "user-42"},
        extra_headers={"anthropic-beta": "some-beta"},
    )
    message = raw.parse()
    sent = _last(sim)
    assert message.type == "message" and message.role == "assistant"
    assert _text(message)
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-gateway-upstream-model"] == STUDENT
    assert sent["path"] == "/v1/chat/completions"
    headers = _headers(sent)
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert not any(name.startswith("anthropic-") for name in headers)
    body = sent["body"]
    assert body["model"] == STUDENT
    assert body["messages"][0] == {"role": "system", "content": SYSTEM}
    assert body["messages"][1]["role"] == "user"
    assert body["stop"] == ["\n\n\n"]
    assert body["user"] == "user-42"


def test_anthropic_stream_from_an_openai_format_student(claude: anthropic.Anthropic) -> None:
    whole = claude.messages.create(
        model="claude-student", max_tokens=300, system=SYSTEM, messages=ASK
    )
    with claude.messages.stream(
        model="claude-student", max_tokens=300, system=SYSTEM, messages=ASK
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == _text(whole)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_tool_round_trip_through_an_openai_format_student(
    claude: anthropic.Anthropic, stream: bool
) -> None:
    first: anthropic.types.Message
    if stream:
        with claude.messages.stream(
            model="claude-student", max_tokens=300, messages=ASK, tools=[WEATHER]
        ) as events:
            first = events.get_final_message()
    else:
        first = claude.messages.create(
            model="claude-student", max_tokens=300, messages=ASK, tools=[WEATHER]
        )
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather"
    assert isinstance(use.input, dict) and set(use.input) == {"city", "unit", "days"}
    follow_up: list[MessageParam] = [
        *ASK,
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C, sunny"}],
        },
    ]
    answer = claude.messages.create(
        model="claude-student", max_tokens=300, messages=follow_up, tools=[WEATHER]
    )
    assert answer.stop_reason == "end_turn"
    assert _text(answer)


def test_tool_input_streamed_equals_the_whole_answer(claude: anthropic.Anthropic) -> None:
    whole = claude.messages.create(
        model="claude-student", max_tokens=300, messages=ASK, tools=[WEATHER]
    )
    with claude.messages.stream(
        model="claude-student", max_tokens=300, messages=ASK, tools=[WEATHER]
    ) as events:
        streamed = events.get_final_message()
    whole_use = next(b for b in whole.content if b.type == "tool_use")
    streamed_use = next(b for b in streamed.content if b.type == "tool_use")
    assert streamed_use.input == whole_use.input
    assert streamed_use.id == whole_use.id


def test_count_tokens_asks_anthropic_or_counts_itself(
    claude: anthropic.Anthropic, sim: Running
) -> None:
    asked = claude.messages.count_tokens(model=CLAUDE, system=SYSTEM, messages=ASK)
    assert _last(sim)["path"] == "/v1/messages/count_tokens"
    answered = claude.messages.create(model=CLAUDE, max_tokens=50, system=SYSTEM, messages=ASK)
    assert asked.input_tokens == answered.usage.input_tokens

    before = len(httpx.get(f"{sim.url}/_sim/requests").json())
    counted = claude.messages.count_tokens(
        model="claude-student", system=SYSTEM, messages=ASK, tools=[WEATHER]
    )
    assert len(httpx.get(f"{sim.url}/_sim/requests").json()) == before  # counted here
    plain = claude.messages.count_tokens(model="claude-student", system=SYSTEM, messages=ASK)
    assert 10 < plain.input_tokens < counted.input_tokens


def test_models_list_in_anthropic_shape(claude: anthropic.Anthropic) -> None:
    models = claude.models.list()
    ids = [model.id for model in models.data]
    assert CLAUDE in ids and "claude-student" in ids
    assert claude.models.retrieve(CLAUDE).type == "model"
    with pytest.raises(anthropic.NotFoundError):
        claude.models.retrieve("no-such-model")


# --- errors in Anthropic's shape --------------------------------------------------------------


def _anthropic_error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["type"] == "error"
    assert set(body["error"]) >= {"type", "message"}
    return body["error"]  # type: ignore[no-any-return]


def test_errors_have_anthropic_shape(gw: Running, claude: anthropic.Anthropic) -> None:
    url = f"{gw.url}/v1/messages"
    ok = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"}
    missing = httpx.post(url, json={"model": CLAUDE, "messages": ASK}, headers=ok)
    assert missing.status_code == 400
    error = _anthropic_error(missing)
    assert error["type"] == "invalid_request_error" and "max_tokens" in error["message"]

    bad_json = httpx.post(url, content=b"{nope", headers=ok)
    assert bad_json.status_code == 400
    assert _anthropic_error(bad_json)["type"] == "invalid_request_error"

    no_key = httpx.post(url, json={"model": CLAUDE, "max_tokens": 5, "messages": ASK})
    assert no_key.status_code == 401
    assert _anthropic_error(no_key)["type"] == "authentication_error"

    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key="wrong", max_retries=0).messages.create(
            model=CLAUDE, max_tokens=5, messages=ASK
        )
    with pytest.raises(anthropic.NotFoundError) as unknown:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=ASK)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_an_openai_upstream_error_reaches_an_anthropic_client_in_its_shape(
    claude: anthropic.Anthropic,
) -> None:
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(
            model="claude-student",
            max_tokens=50,
            messages=ASK,
            extra_headers={"x-sim-fault": "429", "x-sim-fault-delay-ms": "0"},
        )
    assert limited.value.body["type"] == "error"  # type: ignore[index]
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_untranslatable_fields_are_refused_naming_them(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model="claude-student",
            max_tokens=50,
            messages=ASK,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "tools" in refused.value.body["error"]["message"]  # type: ignore[index]


def test_a_broken_stream_ends_with_an_anthropic_error_event(
    claude: anthropic.Anthropic, gw: Running
) -> None:
    headers = {"x-sim-fault": "drop", "x-sim-fault-after": "3"}
    for model in ("claude-student", CLAUDE):
        with httpx.stream(
            "POST",
            f"{gw.url}/v1/messages",
            json={"model": model, "max_tokens": 200, "messages": ASK, "stream": True},
            headers={"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01", **headers},
        ) as response:
            assert response.status_code == 200
            raw = response.read().decode()
        assert raw.rstrip().splitlines()[-2] == "event: error", raw
        error = json.loads(raw.rstrip().splitlines()[-1].removeprefix("data: "))
        assert error["type"] == "error" and error["error"]["type"] == "api_error"
        with (
            pytest.raises(anthropic.APIStatusError),
            claude.messages.stream(
                model=model, max_tokens=200, messages=ASK, extra_headers=headers
            ) as stream,
        ):
            "".join(stream.text_stream)


# --- OpenAI in, Anthropic out -----------------------------------------------------------------


def test_openai_call_answered_by_claude(oai: openai.OpenAI, sim: Running) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-on-claude",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi there"}],
        temperature=0.5,
        stop=["END"],
        user="u-7",
    )
    completion = raw.parse()
    sent = _last(sim)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert sent["path"] == "/v1/messages"
    headers = _headers(sent)
    assert headers["x-api-key"] == PROVIDER_KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    body = sent["body"]
    assert body["model"] == CLAUDE
    assert body["max_tokens"] == 777  # the variant's default: Anthropic requires one
    assert body["system"] == SYSTEM
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-7"}
    assert body["temperature"] == 0.5


def test_openai_stream_from_claude_with_and_without_usage(oai: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Tell me about shipping."}]
    whole = oai.chat.completions.create(model="gpt-on-claude", messages=messages)
    with_usage = list(
        oai.chat.completions.create(
            model="gpt-on-claude",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in with_usage if c.choices)
    assert text == whole.choices[0].message.content
    assert with_usage[-1].choices == [] and with_usage[-1].usage == whole.usage
    finishes = [c.choices[0].finish_reason for c in with_usage if c.choices]
    assert finishes[-1] == "stop"
    without = list(
        oai.chat.completions.create(model="gpt-on-claude", messages=messages, stream=True)
    )
    assert all(c.usage is None for c in without) and all(c.choices for c in without)


def test_openai_tool_calls_from_claude_streamed_and_not(oai: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Weather in Paris?"}]
    whole = oai.chat.completions.create(
        model="gpt-on-claude", messages=messages, tools=[OPENAI_WEATHER]
    )
    assert whole.choices[0].finish_reason == "tool_calls"
    calls = whole.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    chunks = list(
        oai.chat.completions.create(
            model="gpt-on-claude", messages=messages, tools=[OPENAI_WEATHER], stream=True
        )
    )
    pieces = [
        call.function.arguments or ""
        for c in chunks
        if c.choices
        for call in c.choices[0].delta.tool_calls or []
        if call.function is not None
    ]
    assert json.loads("".join(pieces)) == arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    follow_up: Any = [
        *messages,
        whole.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "21 C"},
    ]
    answer = oai.chat.completions.create(
        model="gpt-on-claude", messages=follow_up, tools=[OPENAI_WEATHER]
    )
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content


def test_openai_fields_claude_cannot_take_are_refused(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(
            model="gpt-on-claude", messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert refused.value.body["param"] == "n"  # type: ignore[index]


def test_a_claude_529_falls_back_to_the_next_variant(oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="claude-fallback", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-gateway-variant"] == "backup"
    assert raw.parse().choices[0].message.content


def test_a_claude_error_reaches_an_openai_client_in_its_shape(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        oai.chat.completions.create(
            model="gpt-on-claude",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-sim-fault": "500"},
        )
    assert failed.value.status_code == 500
    body = failed.value.body
    assert isinstance(body, dict) and set(body) >= {"message", "type"}


# --- Azure --------------------------------------------------------------------------------------


def test_azure_deployment_urls_match_the_azure_client(oai: openai.OpenAI, sim: Running) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    answer = oai.chat.completions.create(model="azure-gpt", messages=messages)
    assert answer.choices[0].message.content
    ours = _last(sim)
    azure = openai.AzureOpenAI(
        azure_endpoint=sim.url, api_version=AZURE_VERSION, api_key="direct", max_retries=0
    )
    azure.chat.completions.create(model="gpt4o-deploy", messages=messages)
    theirs = _last(sim)
    assert ours["path"] == theirs["path"] == "/openai/deployments/gpt4o-deploy/chat/completions"
    assert ours["query"] == theirs["query"]
    headers = _headers(ours)
    assert headers["api-key"] == PROVIDER_KEY and "authorization" not in headers


def test_azure_v1_api_and_streams(oai: openai.OpenAI, sim: Running) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    chunks = list(oai.chat.completions.create(model="azure-v1", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    sent = _last(sim)
    assert sent["path"] == "/openai/v1/chat/completions"
    assert _headers(sent)["api-key"] == PROVIDER_KEY


# --- capture ------------------------------------------------------------------------------------


def _row(db: Path, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as connection:
            connection.row_factory = sqlite3.Row
            row = connection.execute("SELECT * FROM calls WHERE id = ?", (request_id,)).fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"call {request_id} was not captured")


def test_calls_are_captured_with_their_dialects_and_a_chat_view(
    claude: anthropic.Anthropic, oai: openai.OpenAI, db: Path
) -> None:
    inbound = claude.messages.with_raw_response.create(
        model="claude-student", max_tokens=100, system=SYSTEM, messages=ASK
    )
    row = _row(db, inbound.headers["x-request-id"])
    assert row["endpoint"] == "messages"
    assert (row["dialect"], row["upstream_api"]) == ("anthropic", "openai")
    view = json.loads(row["normalized"])
    assert view["request"]["messages"][0] == {"role": "system", "content": SYSTEM}
    assert row["prompt_tokens"] > 0 and row["cost_usd"] is not None

    outbound = oai.chat.completions.with_raw_response.create(
        model="gpt-on-claude", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    list(outbound.parse())
    row = _row(db, outbound.headers["x-request-id"])
    assert (row["endpoint"], row["dialect"], row["upstream_api"]) == ("chat", "openai", "anthropic")
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert row["cost_usd"] is not None and row["cost_usd"] > 0  # Claude's price
    answer = json.loads(row["normalized"])["response"]
    assert answer["choices"][0]["message"]["content"]
