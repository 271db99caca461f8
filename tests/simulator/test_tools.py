"""Tool calls through the official SDK: a call, its arguments, the result, the answer."""

from __future__ import annotations

import json

from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "threshold": {"type": "number"},
                "alerts": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "where": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat", "lon"],
                },
                "optional_note": {"type": "string"},
            },
            "required": ["city", "unit", "days", "threshold", "alerts", "tags", "where"],
        },
    },
}
CLOCK: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Paris?"}]


def test_tool_call_round_trip(client: OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o", messages=ASK, tools=[WEATHER, CLOCK])

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit", "days", "threshold", "alerts", "tags", "where"}
    assert isinstance(arguments["city"], str)
    assert arguments["unit"] in ("celsius", "fahrenheit")
    assert isinstance(arguments["days"], int) and 1 <= arguments["days"] <= 7
    assert isinstance(arguments["threshold"], float)
    assert isinstance(arguments["alerts"], bool)
    assert arguments["tags"] and all(isinstance(tag, str) for tag in arguments["tags"])
    assert set(arguments["where"]) == {"lat", "lon"}

    follow_up: list[ChatCompletionMessageParam] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    answer = client.chat.completions.create(
        model="gpt-4o", messages=follow_up, tools=[WEATHER, CLOCK]
    )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content
    assert not answer.choices[0].message.tool_calls


def test_tool_choice_names_the_function_and_none_disables_tools(client: OpenAI) -> None:
    named = client.chat.completions.create(
        model="gpt-4o",
        messages=ASK,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = named.choices[0].message.tool_calls
    assert calls and calls[0].type == "function"
    assert calls[0].function.name == "get_time"
    assert calls[0].function.arguments == "{}"

    plain = client.chat.completions.create(
        model="gpt-4o", messages=ASK, tools=[WEATHER], tool_choice="none"
    )
    assert plain.choices[0].message.content and not plain.choices[0].message.tool_calls


def test_streamed_tool_call_adds_up_to_the_same_call(client: OpenAI) -> None:
    whole = client.chat.completions.create(model="gpt-4o", messages=ASK, tools=[WEATHER])
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=ASK,
            tools=[WEATHER],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    opening = chunks[0].choices[0].delta
    assert opening.role == "assistant" and opening.tool_calls
    head = opening.tool_calls[0]
    assert head.index == 0 and head.type == "function"
    assert head.function and head.function.name == "get_weather"
    assert head.function.arguments == ""
    fragments = []
    for chunk in chunks[1:]:
        deltas = chunk.choices[0].delta.tool_calls if chunk.choices else None
        if deltas:
            assert deltas[0].index == 0 and deltas[0].function
            fragments.append(deltas[0].function.arguments or "")
    expected_calls = whole.choices[0].message.tool_calls
    assert expected_calls and expected_calls[0].type == "function"
    assert head.id == expected_calls[0].id
    assert "".join(fragments) == expected_calls[0].function.arguments
    assert len(fragments) > 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage == whole.usage
