from __future__ import annotations

import copy
from typing import Any

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from dialects.errors import Untranslatable
from dialects.responses import anthropic_message_to_openai_chat, openai_chat_to_anthropic_message


def to_openai(message: dict[str, Any], **kw: Any) -> dict[str, Any]:
    before = copy.deepcopy(message)
    out = anthropic_message_to_openai_chat(message, **kw)
    assert message == before
    ChatCompletion.model_validate(out)  # the openai SDK's own model accepts it
    return out


def to_anthropic(completion: dict[str, Any]) -> dict[str, Any]:
    before = copy.deepcopy(completion)
    out = openai_chat_to_anthropic_message(completion)
    assert completion == before
    Message.model_validate(out)  # the anthropic SDK's own model accepts it
    return out


def message(content: list[dict[str, Any]], stop: str = "end_turn", **extra: Any) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
        **extra,
    }


def test_text_thinking_and_tool_calls() -> None:
    out = to_openai(
        message(
            [
                {"type": "thinking", "thinking": "Paris is in France.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "x"},
                {"type": "text", "text": "Let me check "},
                {"type": "text", "text": "the weather."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_02", "name": "clock", "input": {}},
            ],
            stop="tool_use",
            usage={
                "input_tokens": 10,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 1000,
                "output_tokens": 7,
            },
        ),
        created=1700000000,
    )
    assert out == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-sonnet-4-5",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check the weather.",
                    "refusal": None,
                    "reasoning_content": "Paris is in France.",
                    "tool_calls": [
                        {
                            "id": "toolu_01",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "toolu_02",
                            "type": "function",
                            "function": {"name": "clock", "arguments": "{}"},
                        },
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 1110,
            "completion_tokens": 7,
            "total_tokens": 1117,
            "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_input_tokens": 100},
        },
    }


def test_only_tool_use_gives_null_content_and_empty_gives_empty_text() -> None:
    tools_only = to_openai(
        message([{"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}], stop="tool_use")
    )
    assert tools_only["choices"][0]["message"]["content"] is None
    empty = to_openai(message([]))
    assert empty["choices"][0]["message"]["content"] == ""
    assert "tool_calls" not in empty["choices"][0]["message"]


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
    ],
)
def test_stop_reasons(stop: Any, finish: str) -> None:
    assert to_openai(message([], stop=stop))["choices"][0]["finish_reason"] == finish


def test_the_matched_stop_sequence_is_kept_where_vllm_puts_it() -> None:
    out = to_openai(
        message([{"type": "text", "text": "1 2"}], stop="stop_sequence", stop_sequence="3")
    )
    assert out["choices"][0]["stop_reason"] == "3"
    back = to_anthropic(out)
    assert back["stop_reason"] == "stop_sequence"
    assert back["stop_sequence"] == "3"


def test_the_model_given_wins() -> None:
    assert to_openai(message([]), model="route-name")["model"] == "route-name"


def completion(message: dict[str, Any], finish: str = "stop", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59},
        **extra,
    }


def test_completion_with_reasoning_text_and_tools() -> None:
    out = to_anthropic(
        completion(
            {
                "role": "assistant",
                "content": "Checking.",
                "reasoning_content": "think",
                "tool_calls": [
                    {
                        "id": "toolu_01",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "clock", "arguments": ""},
                    },
                    {
                        "id": "call_c",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{oops"},
                    },
                ],
            },
            finish="tool_calls",
            usage={
                "prompt_tokens": 50,
                "completion_tokens": 9,
                "total_tokens": 59,
                "prompt_tokens_details": {"cached_tokens": 30},
            },
        )
    )
    assert out == {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o",
        "content": [
            {"type": "thinking", "thinking": "think", "signature": ""},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_b", "name": "clock", "input": {}},
            {"type": "tool_use", "id": "call_c", "name": "f", "input": {"_raw": "{oops"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 30,
            "output_tokens": 9,
        },
    }
    # the broken arguments come back whole
    again = to_openai(out)
    assert again["choices"][0]["message"]["tool_calls"][2]["function"]["arguments"] == "{oops"


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_finish_reasons(finish: Any, stop: str) -> None:
    assert (
        to_anthropic(completion({"role": "assistant", "content": "x"}, finish=finish))[
            "stop_reason"
        ]
        == stop
    )


def test_a_refusal_and_empty_or_missing_parts() -> None:
    out = to_anthropic(completion({"role": "assistant", "content": None, "refusal": "I can't."}))
    assert out["content"] == [{"type": "text", "text": "I can't."}]
    assert out["stop_reason"] == "refusal"
    empty = to_anthropic(completion({"role": "assistant", "content": ""}))
    assert empty["content"] == []
    bare = to_anthropic({"id": "x", "choices": []})
    assert bare["content"] == [] and bare["usage"]["input_tokens"] == 0
    legacy = to_anthropic(
        completion(
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "f", "arguments": "{}"},
            },
            finish="function_call",
        )
    )
    assert legacy["content"] == [{"type": "tool_use", "id": "call_0", "name": "f", "input": {}}]


def test_not_an_object() -> None:
    with pytest.raises(Untranslatable):
        anthropic_message_to_openai_chat([])  # type: ignore[arg-type]
    with pytest.raises(Untranslatable):
        openai_chat_to_anthropic_message("x")  # type: ignore[arg-type]


def test_usage_round_trips_with_cache_writes() -> None:
    original = message(
        [{"type": "text", "text": "hi"}],
        usage={
            "input_tokens": 3,
            "cache_creation_input_tokens": 4,
            "cache_read_input_tokens": 5,
            "output_tokens": 6,
        },
    )
    back = to_anthropic(to_openai(original))
    assert back["usage"] == original["usage"]
