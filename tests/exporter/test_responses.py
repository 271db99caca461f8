"""Responses API calls (``/v1/responses``) exported as chat fine-tuning rows."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.check_file import validate_file
from exporter.cli import main
from exporter.database import open_store
from exporter.errors import BadFilter
from exporter.examples import Dropped, Example, example_from_call
from exporter.filters import Filters, check
from exporter.selection import count
from exporter.validate import check_chat_row
from tests.exporter.conftest import GATEWAY_KEY, Captured
from tests.exporter.factory import chat_call, questions, responses_call, store_calls
from tests.exporter.helpers import export, export_pairs, read_rows

SYSTEM = {"role": "system", "content": "You are a helpful support agent."}
FLAT_TOOL = {
    "type": "function",
    "name": "get_order",
    "description": "Look an order up by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
    "strict": True,
}
CHAT_TOOL = {
    "type": "function",
    "function": {k: v for k, v in FLAT_TOOL.items() if k != "type"},
}


def call(request: dict[str, Any], output: list[Any] | None = None, **response: Any) -> Example:
    """The example of a Responses call with this request and (default: a text) output."""
    if output is None:
        output = [text_item("Sure.")]
    answer = {"object": "response", "status": "completed", "output": output, **response}
    row = {"id": "c1", "endpoint": "responses", "request": request, "response": answer}
    return example_from_call(row)


def text_item(*texts: str) -> dict[str, Any]:
    parts = [{"type": "output_text", "text": text, "annotations": []} for text in texts]
    return {"type": "message", "role": "assistant", "status": "completed", "content": parts}


def function_call(call_id: str, arguments: str = '{"order_id": "42"}') -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": "get_order",
        "arguments": arguments,
        "status": "completed",
    }


def dropped(request: dict[str, Any], output: list[Any] | None = None, **response: Any) -> str:
    with pytest.raises(Dropped) as raised:
        call(request, output, **response)
    return raised.value.reason


# --- the conversion -------------------------------------------------------------------------


def test_string_input_is_one_user_message() -> None:
    example = call({"model": "support", "input": "Where is my order?"})
    assert example.messages == [
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "Sure."},
    ]
    assert example.tools is None and example.call_id == "c1"
    assert check_chat_row(example.row()) == set()


def test_instructions_and_list_input_with_developer_role_and_parts() -> None:
    request = {
        "model": "support",
        "instructions": "You are a helpful support agent.",
        "input": [
            {"role": "developer", "content": "Answer in one sentence."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "My order is late."},
                    {"type": "input_text", "text": "What now?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "Which order?"}]},
            {"type": "message", "role": "user", "content": [{"type": "text", "text": "No. 42"}]},
        ],
    }
    example = call(request, [text_item("It ships ", "today.")])
    assert example.messages == [
        SYSTEM,
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "My order is late.\nWhat now?"},
        {"role": "assistant", "content": "Which order?"},
        {"role": "user", "content": "No. 42"},
        {"role": "assistant", "content": "It ships today."},
    ]
    assert check_chat_row(example.row()) == set()


def test_function_call_round_trip_and_tools_reshaped() -> None:
    request = {
        "model": "support",
        "input": [
            {"role": "user", "content": "Where are orders 42 and 43?"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            function_call("call_a"),
            function_call("call_b", '{"order_id": "43"}'),
            {"type": "function_call_output", "call_id": "call_a", "output": '{"status": "sent"}'},
            {"type": "function_call_output", "call_id": "call_b", "output": '{"status": "late"}'},
        ],
        "tools": [FLAT_TOOL],
        "parallel_tool_calls": True,
    }
    example = call(
        request, [{"type": "reasoning", "id": "rs_2", "summary": []}, text_item("42 ok")]
    )
    calls = [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_order", "arguments": '{"order_id": "42"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "get_order", "arguments": '{"order_id": "43"}'},
        },
    ]
    assert example.messages == [
        {"role": "user", "content": "Where are orders 42 and 43?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"status": "sent"}'},
        {"role": "tool", "tool_call_id": "call_b", "content": '{"status": "late"}'},
        {"role": "assistant", "content": "42 ok"},
    ]
    assert example.tools == [CHAT_TOOL]
    assert example.row()["parallel_tool_calls"] is True
    assert check_chat_row(example.row()) == set()


def test_function_calls_in_the_answer_become_tool_calls() -> None:
    request = {"model": "support", "input": "Where is order 42?", "tools": [FLAT_TOOL]}
    example = call(request, [{"type": "reasoning", "summary": []}, function_call("call_x")])
    assert example.answer == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_x",
                "type": "function",
                "function": {"name": "get_order", "arguments": '{"order_id": "42"}'},
            }
        ],
    }
    assert check_chat_row(example.row()) == set()
    # text before the call is the same turn: one assistant message with both
    example = call(request, [text_item("Let me look."), function_call("call_x")])
    assert example.answer["content"] == "Let me look."
    assert [c["id"] for c in example.answer["tool_calls"]] == ["call_x"]


def test_status_missing_is_accepted() -> None:
    answer = {"output": [text_item("Fine.")]}
    row = {"id": "c", "endpoint": "responses", "request": {"input": "hi"}, "response": answer}
    assert example_from_call(row).answer == {"role": "assistant", "content": "Fine."}


@pytest.mark.parametrize(
    ("request_fields", "output", "response", "reason"),
    [
        ({"tools": [{"type": "web_search_preview"}]}, None, {}, "built-in tools"),
        ({"tools": [FLAT_TOOL, {"type": "file_search"}]}, None, {}, "built-in tools"),
        ({"previous_response_id": "resp_1"}, None, {}, "previous_response_id"),
        ({"conversation": "conv_1"}, None, {}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, None, {}, "stored prompt"),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "What is this?"},
                            {"type": "input_image", "image_url": "https://x/cat.png"},
                        ],
                    }
                ]
            },
            None,
            {},
            "non-text content",
        ),
        (
            {"input": [{"type": "item_reference", "id": "msg_1"}]},
            None,
            {},
            "unsupported input item (item_reference)",
        ),
        ({"input": [{"role": "critic", "content": "x"}]}, None, {}, "unsupported role"),
        ({"input": []}, None, {}, "no messages"),
        (
            {},
            [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "refusal", "refusal": "No."}],
                }
            ],
            {},
            "refusal",
        ),
        ({}, None, {"status": "incomplete"}, "incomplete response"),
        ({}, None, {"status": "failed"}, "incomplete response"),
        ({}, [], {}, "no answer recorded"),
        ({}, [text_item("")], {}, "empty answer"),
        ({}, [{"type": "reasoning", "summary": []}], {}, "empty answer"),
        (
            {},
            [{"type": "web_search_call", "id": "ws_1"}],
            {},
            "unsupported output item (web_search_call)",
        ),
    ],
)
def test_calls_that_make_no_example(
    request_fields: dict[str, Any], output: list[Any] | None, response: dict[str, Any], reason: str
) -> None:
    request = {"model": "support", "input": "hi", **request_fields}
    assert dropped(request, output, **response) == reason


def test_rows_of_other_endpoints_take_the_chat_path() -> None:
    row = chat_call("hi", "hello")
    assert example_from_call(row).messages[-1] == {"role": "assistant", "content": "hello"}
    del row["endpoint"]
    assert example_from_call(row).messages[-1] == {"role": "assistant", "content": "hello"}
    with pytest.raises(Dropped, match="no messages"):  # a Responses body on the chat path
        example_from_call({**row, "endpoint": "chat", "request": {"input": "hi"}})


def test_endpoint_filter_is_checked() -> None:
    assert check(Filters()).endpoints == ("chat", "messages", "responses")
    assert "endpoint=chat|messages|responses" in Filters().describe()
    with pytest.raises(BadFilter, match="endpoints"):
        check(Filters(endpoints=("embeddings",)))
    with pytest.raises(BadFilter, match="endpoints"):
        check(Filters(endpoints=()))


# --- exported from a store ------------------------------------------------------------------


def both_endpoints(count_each: int) -> list[dict[str, Any]]:
    asked = questions(2 * count_each, seed=11)
    rows = [
        chat_call(q, f"Chat answer {i}: open Settings.") for i, q in enumerate(asked[:count_each])
    ]
    for i, text in enumerate(asked[count_each:]):
        given: Any = (
            text if i % 2 else [{"role": "user", "content": [{"type": "input_text", "text": text}]}]
        )
        rows.append(responses_call(given, f"Responses answer {i}: open Billing."))
    rows.append(
        responses_call(
            [
                {"role": "user", "content": "Where is order 42?"},
                function_call("call_1"),
                {"type": "function_call_output", "call_id": "call_1", "output": "shipped"},
            ],
            "Order 42 has shipped.",
            tools=[FLAT_TOOL],
        )
    )
    rows.append(
        responses_call(
            "Where is order 43?",
            None,
            tools=[FLAT_TOOL],
            function_calls=[
                {"call_id": "call_2", "name": "get_order", "arguments": '{"order_id": "43"}'}
            ],
        )
    )
    rows.append(responses_call("Cut short", "Half an ans", status="incomplete"))
    rows.append(
        responses_call("Cut short, any reason", "Half", status="incomplete", finish_reason="stop")
    )
    follow_up = responses_call("Follow-up", "Yes.")
    follow_up["request"]["previous_response_id"] = "resp_earlier"
    rows.append(follow_up)
    return rows


def run(
    url: str, out: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any]]:
    code = main(["export", "--database-url", url, "--out", str(out), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_both_endpoints_export_as_valid_chat_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = both_endpoints(15)
    url = store_calls(tmp_path / "c.db", rows)

    code, report = run(url, tmp_path / "all", capsys, "--valid-share", "0.2")
    assert code == 0, report["errors"]
    # 15 chat, 15 + 2 tool rounds + 1 incomplete (stored with finish reason stop) + 1 follow-up;
    # the other incomplete call's finish reason (length) leaves it out in SQL
    assert report["selected"] == 34
    assert report["dropped"] == {"incomplete response": 1, "previous_response_id": 1}
    assert report["kept"] == 32
    assert "endpoint=chat|messages|responses" in report["filters"]
    written = read_rows(tmp_path / "all" / "train.jsonl", tmp_path / "all" / "valid.jsonl")
    assert len(written) == 32
    assert all(check_chat_row(row) == set() for row in written)
    for side in ("train", "valid"):
        checked = validate_file(tmp_path / "all" / f"{side}.jsonl", side=side)
        assert checked["errors"] == [] and checked["problems"] == {}, checked
    answers = [row["messages"][-1] for row in written]
    assert sum("Responses answer" in (a["content"] or "") for a in answers) == 15
    tool_rows = [row for row in written if "tools" in row]
    assert len(tool_rows) == 2 and all(row["tools"] == [CHAT_TOOL] for row in tool_rows)
    assert {row["messages"][0]["content"] for row in written} == {SYSTEM["content"]}
    manifest = json.loads((tmp_path / "all" / "manifest.json").read_text())
    assert manifest["filters"]["endpoints"] == ["chat", "messages", "responses"]

    code, report = run(url, tmp_path / "chat", capsys, "--endpoint", "chat", "--valid-share", "0.2")
    assert code == 0 and report["selected"] == 15 and report["dropped"] == {}
    written = read_rows(tmp_path / "chat" / "train.jsonl", tmp_path / "chat" / "valid.jsonl")
    assert len(written) == 15
    assert all(row["messages"][-1]["content"].startswith("Chat answer") for row in written)

    code, report = run(
        url, tmp_path / "resp", capsys, "--endpoint", "responses", "--valid-share", "0.2"
    )
    assert code == 0 and report["selected"] == 19 and report["kept"] == 17

    code, report = run(
        url, tmp_path / "any", capsys, "--finish-reason", "any", "--valid-share", "0.2"
    )
    assert report["selected"] == 35 and report["dropped"]["incomplete response"] == 2


def test_preference_pairs_from_responses_feedback(tmp_path: Path) -> None:
    better = responses_call("Where is my refund?", "It was sent on Monday; allow 3 days.")
    worse = responses_call("Where is my refund?", "No idea.")
    url = store_calls(
        tmp_path / "c.db", [better, worse], feedback=[(better["id"], 1.0), (worse["id"], 0.0)]
    )
    result = export_pairs(url, tmp_path / "dpo", "feedback", valid_share=0.0)
    assert result.report["pairs_found"] == 1 and result.report["kept"] == 1
    (row,) = read_rows(tmp_path / "dpo" / "train.jsonl")
    assert row["input"]["messages"] == [SYSTEM, {"role": "user", "content": "Where is my refund?"}]
    assert row["preferred_output"][0]["content"].startswith("It was sent")
    assert row["non_preferred_output"][0]["content"] == "No idea."


# --- through the real gateway ---------------------------------------------------------------


def _stored(url: str, filters: Filters) -> int:
    async def go() -> int:
        async with open_store(url) as store:
            return await count(store.engine, filters)

    return asyncio.run(go())


def test_responses_calls_through_the_gateway_are_exported(
    captured: Captured, tmp_path: Path
) -> None:
    import openai

    loop = captured.loop
    client = openai.OpenAI(base_url=f"{loop.gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    instructions = "You are Acme's support agent. Be brief."
    ids: list[str] = []

    raw = client.responses.with_raw_response.create(
        model="assistant", instructions=instructions, input="How do I reset my password?"
    )
    assert raw.parse().output_text
    ids.append(raw.headers["x-request-id"])

    with client.responses.with_streaming_response.create(
        model="assistant",
        instructions=instructions,
        input=[{"role": "user", "content": "How do I change my billing address?"}],
        stream=True,
    ) as streamed:
        for _ in streamed.iter_lines():
            pass
        ids.append(streamed.headers["x-request-id"])

    tools: Any = [FLAT_TOOL]
    first = client.responses.with_raw_response.create(
        model="assistant", instructions=instructions, input="Where is order 42?", tools=tools
    )
    ids.append(first.headers["x-request-id"])
    calls = [item for item in first.parse().output if item.type == "function_call"]
    assert calls, "the simulator calls the tool"
    history: Any = [
        {"role": "user", "content": "Where is order 42?"},
        *(item.model_dump(exclude_none=True) for item in calls),
        *(
            {
                "type": "function_call_output",
                "call_id": c.call_id,
                "output": '{"status": "shipped"}',
            }
            for c in calls
        ),
    ]
    second = client.responses.with_raw_response.create(
        model="assistant", instructions=instructions, input=history, tools=tools
    )
    assert second.parse().output_text
    ids.append(second.headers["x-request-id"])

    filters = Filters(route="assistant", endpoints=("responses",), finish_reasons=())
    deadline = time.monotonic() + 10
    while _stored(loop.database_url, filters) < len(ids):
        assert time.monotonic() < deadline, "the gateway did not store the calls in time"
        time.sleep(0.05)

    result = export(
        loop.database_url,
        tmp_path,
        filters=Filters(route="assistant", endpoints=("responses",)),
        valid_share=0.0,
    )
    assert result.report["selected"] == 4 and result.report["dropped"] == {}
    written = read_rows(tmp_path / "train.jsonl")
    assert len(written) == 4
    assert all(check_chat_row(row) == set() for row in written)
    by_first_user = {row["messages"][1]["content"]: row for row in written}
    for row in written:
        assert row["messages"][0] == {"role": "system", "content": instructions}
    streamed_row = by_first_user["How do I change my billing address?"]
    assert streamed_row["messages"][-1]["content"]  # the stream was assembled into the answer
    tool_rows = [row for row in written if "tools" in row]
    assert len(tool_rows) == 2 and all(
        row["tools"][0]["function"]["name"] == "get_order" for row in tool_rows
    )
    call_row = next(row for row in tool_rows if len(row["messages"]) == 3)
    assert call_row["messages"][-1]["tool_calls"][0]["id"] == calls[0].call_id
    round_row = next(row for row in tool_rows if len(row["messages"]) > 3)
    assert [m["role"] for m in round_row["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert round_row["messages"][3]["tool_call_id"] == calls[0].call_id

    # the chat-only selection leaves them out
    chat_only = export(
        loop.database_url, None, filters=Filters(route="assistant", endpoints=("chat",))
    )
    assert chat_only.report["selected"] == 0
