"""Chat completions through the gateway, compared with the simulator answering directly."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.conftest import GATEWAY_KEY
from tests.processes import Running

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a terse support agent."},
    {"role": "user", "content": "My order 1234 has not arrived. What can I do?"},
]


def test_non_stream_matches_the_upstream(client: openai.OpenAI, direct: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="support-bot", messages=MESSAGES, seed=7
    )
    ours = raw.parse()
    theirs = direct.chat.completions.create(
        model="ft:gpt-4o-mini:acme::s1", messages=MESSAGES, seed=7
    )
    assert ours.choices[0].message.content == theirs.choices[0].message.content
    assert ours.choices[0].message.content
    assert ours.usage == theirs.usage
    assert ours.model == "ft:gpt-4o-mini:acme::s1"
    assert raw.headers["x-gateway-route"] == "support-bot"
    assert raw.headers["x-gateway-variant"] == "student"
    assert raw.headers["x-gateway-upstream-model"] == "ft:gpt-4o-mini:acme::s1"
    assert len(raw.headers["x-request-id"]) == 32
    assert float(raw.headers["x-gateway-overhead-ms"]) >= 0


def test_stream_matches_non_stream_with_usage(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, seed=3)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def _sse_payloads(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def test_stream_without_usage_has_no_usage_anywhere(gateway: Running, simulator: Running) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "seed": 3}
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        payloads = _sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    assert events and all("usage" not in event for event in events)
    assert all(event["choices"] for event in events)
    # The gateway did ask the upstream for the usage, so that it knows the cost.
    upstream = httpx.get(f"{simulator.url}/_sim/requests").json()[-1]
    assert upstream["body"]["stream_options"] == {"include_usage": True}


def test_stream_chunks_arrive_as_they_are_produced(gateway: Running) -> None:
    """Tokens 80 ms apart reach the client spread out, not all at once at the end."""
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "max_tokens": 6}
    headers = {
        "authorization": f"Bearer {GATEWAY_KEY}",
        "x-sim-ttft-ms": "0",
        "x-sim-token-ms": "80",
    }
    arrivals: list[float] = []
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        for line in response.iter_lines():
            if '"content":"' in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) >= 5
    # Buffered, they would all arrive within a millisecond or two; relayed, ~80 ms apart.
    assert arrivals[-1] - arrivals[0] > 0.15


def test_tool_calls_round_trip(client: openai.OpenAI) -> None:
    tools: list[ChatCompletionToolParam] = [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Find an order by its number",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}, "verbose": {"type": "boolean"}},
                    "required": ["order_id"],
                },
            },
        }
    ]
    first = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=tools)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "lookup_order"
    arguments: dict[str, Any] = json.loads(call.function.arguments)
    assert isinstance(arguments["order_id"], str)

    followup: list[ChatCompletionMessageParam] = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped"}'},
    ]
    second = client.chat.completions.create(model="gpt-4o", messages=followup, tools=tools)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content

    streamed = list(
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=tools, stream=True)
    )
    names = [
        tc.function.name
        for c in streamed
        if c.choices
        for tc in c.choices[0].delta.tool_calls or []
        if tc.function and tc.function.name
    ]
    assert names == ["lookup_order"]
