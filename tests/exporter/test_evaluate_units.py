"""Evaluation pieces: intervals, the schema check, format checks, the judge's order and
verdicts."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from exporter.evaluate.checks import check
from exporter.evaluate.judge import judge, read_verdict
from exporter.evaluate.schema import problems
from exporter.evaluate.stats import Tally, wilson


def test_wilson_interval() -> None:
    low, high = wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


def test_tally_score_and_verdict() -> None:
    assert Tally(60, 20, 20).score == 0.7
    assert Tally(60, 20, 20).verdict() == "the candidate is better"
    assert Tally(10, 10, 10).verdict().startswith("no significant")
    assert Tally(5, 5, 90).verdict() == "the candidate is worse"
    low, high = Tally(3, 0, 2).score_interval()
    assert 0 <= low < 0.6 < high <= 1


def test_schema_subset() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["n"],
        "additionalProperties": False,
    }
    assert problems({"n": 1, "tags": ["a"]}, schema) == []
    assert problems({"n": -1}, schema) == ["$.n: below 0"]
    assert problems({"tags": [1]}, schema) == ["$: missing 'n'", "$.tags[0]: expected string"]
    assert problems({"n": 1, "x": 0}, schema) == ["$: unexpected 'x'"]
    assert problems(True, {"type": "integer"}) == ["$: expected integer"]


def test_format_checks() -> None:
    request = {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object", "required": ["a"]}},
        }
    }
    assert check(request, {"content": '{"a": 1}'}, {"content": '{"a": 1}'}) == {
        "exact": True,
        "json": True,
        "schema": True,
    }
    assert check(request, {"content": '{"b": 1}'}, {"content": '{"a": 1}'})["schema"] is False
    tools = {
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object", "required": ["id"]}},
            }
        ]
    }
    call = {"tool_calls": [{"function": {"name": "f", "arguments": '{"id": 3}'}}]}
    bad = {"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}
    assert check(tools, call, call) == {"tool_name": True, "tool_arguments": True}
    assert check(tools, bad, call)["tool_arguments"] is False


def verdicts(winner: str, draws: int = 40) -> tuple[list[str | None], list[bool]]:
    """What ``judge`` returns, and whether the candidate was shown first, per draw."""
    shown_first: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        text = body["messages"][1]["content"]
        shown_first.append(text.index("CANDIDATE") < text.index("BASELINE"))
        content = json.dumps({"winner": winner, "reason": "r"})
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})

    async def go() -> list[str | None]:
        async with httpx.AsyncClient(
            base_url="http://gw", transport=httpx.MockTransport(handler)
        ) as client:
            rng = random.Random(1)
            prompt = [{"role": "user", "content": "q"}]
            return [
                await judge(
                    client, "judge", prompt, {"content": "CANDIDATE"}, {"content": "BASELINE"}, rng
                )
                for _ in range(draws)
            ]

    found = asyncio.run(go())
    return list(found), shown_first


def test_the_judge_randomises_the_order_and_maps_verdicts_back() -> None:
    found, first = verdicts("A")
    assert 10 < sum(first) < 30  # both orders are used
    assert found == ["candidate" if f else "baseline" for f in first]
    assert set(verdicts("tie")[0]) == {"tie"}


def test_unreadable_verdicts() -> None:
    assert read_verdict({"choices": [{"message": {"content": "A is better"}}]}) is None
    assert read_verdict({"choices": [{"message": {"content": '{"winner": "C"}'}}]}) is None
