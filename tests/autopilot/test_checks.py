"""autopilot.checks: each failure kind, its pass, and no exception on any input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopilot.checks import check_answer

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def answer(
    content: Any = "Paris is the capital of France.",
    finish: str = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
    refusal: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    if refusal is not None:
        message["refusal"] = refusal
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


def request(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


JSON_SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA}}


@pytest.mark.parametrize(
    ("req", "resp", "expected"),
    [
        (request(), answer(), []),
        (request(), answer(content=""), ["empty"]),
        (request(), answer(content="   \n"), ["empty"]),
        (request(), answer(content=None), ["empty"]),
        (request(), {"choices": []}, ["empty"]),
        (request(), {}, ["empty"]),
        (request(), answer(content=[{"type": "text", "text": "Fine."}]), []),
        (request(), answer(content="I'm sorry, but I can't help with that."), ["refusal"]),
        (request(), answer(content="I cannot assist with this request."), ["refusal"]),
        (request(), answer(content=None, refusal="I will not do this."), ["refusal"]),
        (request(), answer(content=[{"type": "refusal", "refusal": "No."}]), ["refusal"]),
        (request(), answer(content="I can't wait to see Paris. It is lovely in May."), []),
        (request(), answer(content="The answer is", finish="length"), ["length"]),
        (request(response_format={"type": "json_object"}), answer(content='{"a": 1}'), []),
        (
            request(response_format={"type": "json_object"}),
            answer(content='{"a": '),
            ["invalid_json"],
        ),
        (request(response_format={"type": "text"}), answer(content='{"a": '), []),
        (
            request(response_format=JSON_SCHEMA_FORMAT),
            answer(content='{"city": "Oslo", "days": 3}'),
            [],
        ),
        (
            request(response_format=JSON_SCHEMA_FORMAT),
            answer(content='{"city": "Oslo", "days": 0}'),
            ["schema_invalid"],
        ),
        (
            request(response_format=JSON_SCHEMA_FORMAT),
            answer(content='{"city": "Oslo"'),
            ["invalid_json"],
        ),
        (
            request(response_format=JSON_SCHEMA_FORMAT),
            answer(content='{"city": "Os', finish="length"),
            ["length", "invalid_json"],
        ),
        (
            request(tools=[WEATHER]),
            answer(
                content=None,
                finish="tool_calls",
                tool_calls=[call("get_weather", '{"city": "Rome"}')],
            ),
            [],
        ),
        (
            request(tools=[WEATHER]),
            answer(
                content=None, finish="tool_calls", tool_calls=[call("get_weather", '{"city": "Ro')]
            ),
            ["tool_args_invalid"],
        ),
        (
            request(tools=[WEATHER]),
            answer(
                content=None,
                finish="tool_calls",
                tool_calls=[call("get_weather", '{"town": "Rome"}')],
            ),
            ["tool_args_invalid"],
        ),
        (
            request(tools=[WEATHER]),
            answer(content=None, finish="tool_calls", tool_calls=[call("get_time", "{}")]),
            ["tool_args_invalid"],
        ),
        (
            request(tools=[WEATHER]),
            answer(content=None, finish="tool_calls", tool_calls=[call("get_weather", "[1]")]),
            ["tool_args_invalid"],
        ),
        (
            # the client's own schema is broken: not the answer's fault
            request(
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "no-such-type"}},
                }
            ),
            answer(content='{"a": 1}'),
            [],
        ),
    ],
)
def test_check_answer(req: dict[str, Any], resp: dict[str, Any], expected: list[str]) -> None:
    assert check_answer(req, resp) == expected


JSONS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    [
        "choices",
        "message",
        "content",
        "tool_calls",
        "function",
        "arguments",
        "name",
        "tools",
        "response_format",
        "type",
        "json_schema",
        "schema",
        "finish_reason",
        "refusal",
        "parameters",
    ]
)
SHAPED = st.recursive(
    JSONS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(SHAPED, SHAPED)
def test_never_raises(req: Any, resp: Any) -> None:
    result = check_answer(req, resp)
    assert isinstance(result, list)
    assert len(set(result)) == len(result)


def _json_request(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Give JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }


def test_a_clients_backtracking_pattern_cannot_freeze_the_check() -> None:
    """`^(a+)+$` against "aaa...!" backtracks exponentially in Python's engine (which holds the
    GIL): 40 characters would take days. Patterns are not checked; the rest of the schema is."""
    evil = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(b+)+$": {"type": "integer"}},
        "additionalProperties": False,
        "required": ["code"],
    }
    payload = '{"code": "' + "a" * 40 + '!", "' + "b" * 40 + '!": 1}'
    assert check_answer(_json_request(evil), answer(payload)) == []  # returns at once
    assert check_answer(_json_request(evil), answer('{"code": 5}')) == ["schema_invalid"]
