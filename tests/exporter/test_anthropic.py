"""Claude-taught traffic exported as the same chat rows and DPO pairs as OpenAI traffic.

Each conversation is captured three ways, each prepared by the capture's own ``Preparer`` (with
a normaliser, as the gateway runs it) and stored in a store of its own: an OpenAI chat call
answered by an OpenAI-format model, the same conversation sent by an Anthropic client to
``/v1/messages`` and answered by Claude, and the OpenAI chat call answered by Claude (whose
stored response is Claude's Message). The three exports must be equal, row for row and side
for side. They run with the tests' own normaliser and, once it exists, with
``dialects.capture.chat_view``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest

from capture.config import CaptureSettings
from capture.prepare import Preparer
from capture.record import CallRecord
from exporter.cli import main
from exporter.database import open_store
from exporter.evaluate.held_out import HeldOut, held_out
from exporter.filters import CHAT_ENDPOINTS, Filters
from tests.capture.chat_view import ChatView, chat_views
from tests.capture.factories import anthropic_message, anthropic_usage, new_id
from tests.exporter.factory import questions, store_calls
from tests.exporter.helpers import export, export_pairs, read_rows

Way = Literal["openai", "anthropic", "chat-to-claude"]
WAYS: tuple[Way, ...] = ("openai", "anthropic", "chat-to-claude")
VIEWS = chat_views()
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp()
SYSTEM = "You are Acme's support agent. Be brief."
TOOL = {
    "name": "get_order",
    "description": "Look an order up by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}
_minutes = itertools.count()


def chat_completion(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_760_000_000,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40},
    }


class Conversation:
    """One exchange, said in OpenAI's and in Anthropic's wire format.

    ``kind``: "text" (a question, a text answer), "tool round" (the prompt holds a tool call
    and its result, the answer is text) or "tool call" (the answer is text and a tool call).
    """

    def __init__(self, question: str, answer: str, kind: str, number: int) -> None:
        self.question, self.answer, self.kind = question, answer, kind
        self.call_id = f"toolu_{number:04d}"
        self.arguments = {"order_id": f"A-{number}"}

    def _tool_call(self) -> dict[str, Any]:
        function = {"name": "get_order", "arguments": orjson.dumps(self.arguments).decode()}
        return {"id": self.call_id, "type": "function", "function": function}

    def _tool_use(self) -> dict[str, Any]:
        return {
            "type": "tool_use",
            "id": self.call_id,
            "name": "get_order",
            "input": self.arguments,
        }

    def openai_request(self) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": self.question},
        ]
        request: dict[str, Any] = {"model": "support", "messages": messages}
        if self.kind == "tool round":
            messages.append(
                {"role": "assistant", "content": None, "tool_calls": [self._tool_call()]}
            )
            messages.append({"role": "tool", "tool_call_id": self.call_id, "content": "Shipped."})
        if self.kind != "text":
            request["tools"] = [{"type": "function", "function": TOOL}]
        return request

    def anthropic_request(self) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{"role": "user", "content": self.question}]
        request: dict[str, Any] = {
            "model": "support",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": SYSTEM}],
            "messages": messages,
        }
        if self.kind == "tool round":
            messages.append({"role": "assistant", "content": [self._tool_use()]})
            result = {"type": "tool_result", "tool_use_id": self.call_id, "content": "Shipped."}
            messages.append({"role": "user", "content": [result]})
        if self.kind != "text":
            tool = {k: v for k, v in TOOL.items() if k != "parameters"}
            request["tools"] = [{**tool, "input_schema": TOOL["parameters"]}]
        return request

    def openai_response(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.answer, "refusal": None}
        if self.kind == "tool call":
            message["tool_calls"] = [self._tool_call()]
            return chat_completion(message, "tool_calls")
        return chat_completion(message, "stop")

    def claude_response(self) -> dict[str, Any]:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": self.answer}]
        if self.kind == "tool call":
            blocks.append(self._tool_use())
            return anthropic_message(blocks, stop_reason="tool_use")
        return anthropic_message(blocks, usage=anthropic_usage(cache_read=2048))

    def record(self, way: Way, **fields: Any) -> CallRecord:
        anthropic_in = way == "anthropic"
        claude_out = way != "openai"
        request = self.anthropic_request() if anthropic_in else self.openai_request()
        response = self.claude_response() if claude_out else self.openai_response()
        values: dict[str, Any] = {
            "id": new_id(),
            "started_at": START + 60 * next(_minutes),
            "endpoint": "messages" if anthropic_in else "chat",
            "dialect": "anthropic" if anthropic_in else "openai",
            "upstream_api": "anthropic" if claude_out else "openai",
            "route": "support",
            "variant": "teacher",
            "provider": "anthropic" if claude_out else "openai",
            "requested_model": "support",
            "upstream_model": "claude-sonnet-4-5" if claude_out else "gpt-4o",
            "request_body": orjson.dumps(request),
            "response_body": orjson.dumps(response),
            "status": 200,
            "stream": False,
            "total_ms": 800.0,
            "overhead_ms": 0.4,
        }
        values.update(fields)
        return CallRecord(**values)


def conversations(count: int, seed: int = 21) -> list[Conversation]:
    kinds = ("text", "tool round", "tool call")
    return [
        Conversation(question, f"Answer {i}: open Settings, then Orders.", kinds[i % 3], i)
        for i, question in enumerate(questions(count, seed=seed))
    ]


def rows_of(records: list[CallRecord], view: ChatView | None) -> list[dict[str, Any]]:
    """The rows the capture stores for ``records`` (no redaction: the prompts are synthetic)."""
    preparer = Preparer(CaptureSettings(redact=[]), normalize=view)
    return [preparer.prepare(record).row for record in records]


def exported(directory: Path) -> dict[str, list[dict[str, Any]]]:
    return {side: read_rows(directory / f"{side}.jsonl") for side in ("train", "valid")}


@pytest.mark.parametrize("view", list(VIEWS))
def test_claude_taught_calls_export_the_same_chat_rows(tmp_path: Path, view: str) -> None:
    talks = conversations(30)
    results = {}
    for way in WAYS:
        rows = rows_of([talk.record(way) for talk in talks], VIEWS[view])
        url = store_calls(tmp_path / f"{way}.db", rows)
        results[way] = export(url, tmp_path / way, valid_share=0.2)
    reports = {way: result.report for way, result in results.items()}
    assert reports["openai"]["selected"] == reports["openai"]["kept"] == 30
    assert reports["openai"]["dropped"] == {}
    for way in WAYS[1:]:
        assert reports[way]["selected"] == reports[way]["kept"] == 30, reports[way]
        assert reports[way]["dropped"] == {}
        assert exported(tmp_path / way) == exported(tmp_path / "openai")
    written = exported(tmp_path / "anthropic")
    every = written["train"] + written["valid"]
    assert written["valid"] and written["train"]
    assert all(row["messages"][0] == {"role": "system", "content": SYSTEM} for row in every)
    with_tools = [row for row in every if "tools" in row]
    assert len(with_tools) == 20 and all(
        row["tools"] == [{"type": "function", "function": TOOL}] for row in with_tools
    )
    calls = [row["messages"][-1] for row in every if "tool_calls" in row["messages"][-1]]
    assert len(calls) == 10
    assert all(json.loads(m["tool_calls"][0]["function"]["arguments"]) for m in calls)
    rounds = [row for row in every if any(m["role"] == "tool" for m in row["messages"])]
    assert len(rounds) == 10


@pytest.mark.parametrize("view", list(VIEWS))
def test_feedback_pairs_of_claude_taught_calls_are_the_same(tmp_path: Path, view: str) -> None:
    talks = conversations(24, seed=22)
    for way in WAYS:
        records: list[CallRecord] = []
        feedback: list[tuple[str, float]] = []
        for talk in talks:
            good = talk.record(way)
            worse = Conversation(talk.question, "Not sure.", "text", 0)
            bad = talk.record(
                way,
                response_body=orjson.dumps(
                    worse.claude_response() if way != "openai" else worse.openai_response()
                ),
            )
            records += [good, bad]
            feedback += [(good.id, 1.0), (bad.id, -1.0)]
        url = store_calls(tmp_path / f"{way}.db", rows_of(records, VIEWS[view]), feedback)
        result = export_pairs(url, tmp_path / way, "feedback", valid_share=0.2)
        assert result.report["pairs_found"] == 24, result.report
    openai = exported(tmp_path / "openai")
    for way in WAYS[1:]:
        assert exported(tmp_path / way) == openai
    pairs = openai["train"] + openai["valid"]
    assert len(pairs) == 24
    assert all(row["non_preferred_output"][0]["content"] == "Not sure." for row in pairs)
    assert all(row["preferred_output"][0]["content"].startswith("Answer") for row in pairs)


def test_shadow_pairs_of_a_claude_teacher_and_an_openai_format_student(tmp_path: Path) -> None:
    """An Anthropic client's call answered by Claude, and its shadow copy answered by a student
    on vLLM (OpenAI's format): one pair each, the teacher preferred."""
    view = VIEWS["tests"]
    records: list[CallRecord] = []
    feedback: list[tuple[str, float]] = []
    for talk in conversations(12, seed=23):
        primary = talk.record("anthropic")
        student = Conversation(talk.question, "Dunno.", "text", 0).openai_response()
        shadow = talk.record(
            "anthropic",
            variant="student",
            upstream_api="openai",
            upstream_model="ft:qwen-7b:acme::s1",
            response_body=orjson.dumps(student),
            shadow_of=primary.id,
        )
        records += [primary, shadow]
        feedback += [(primary.id, 1.0), (shadow.id, 0.0)]
    url = store_calls(tmp_path / "c.db", rows_of(records, view), feedback)
    result = export_pairs(url, tmp_path / "out", "shadow", valid_share=0.2)
    written = read_rows(tmp_path / "out" / "train.jsonl", tmp_path / "out" / "valid.jsonl")
    assert len(written) == 12 and result.report["dropped"] == {}
    assert all(r["preferred_output"][0]["content"].startswith("Answer") for r in written)
    assert all(r["non_preferred_output"][0]["content"] == "Dunno." for r in written)
    assert all(r["input"]["messages"][0] == {"role": "system", "content": SYSTEM} for r in written)


def test_calls_without_a_sound_view_are_dropped_with_a_reason(tmp_path: Path) -> None:
    talks = conversations(16, seed=24)
    view = VIEWS["tests"]
    rows = rows_of([talk.record("anthropic") for talk in talks[:12]], view)
    # captured by a gateway without the normaliser: no view
    rows += rows_of([talks[12].record("anthropic"), talks[13].record("chat-to-claude")], None)
    # a part the view cannot translate (an image block): the view says it failed
    image = talks[14].anthropic_request()
    image["messages"][0]["content"] = [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "text", "text": "What is this?"},
    ]
    rows += rows_of([talks[14].record("anthropic", request_body=orjson.dumps(image))], view)
    # a view whose response is missing for an Anthropic answer
    broken = rows_of([talks[15].record("chat-to-claude")], view)[0]
    broken["normalized"] = {"request": broken["request"], "response": None}
    rows.append(broken)
    url = store_calls(tmp_path / "c.db", rows)
    report = export(url, tmp_path / "out", valid_share=0.2).report
    assert report["selected"] == 16 and report["kept"] == 12
    assert report["dropped"] == {"no normalized view": 2, "normalization failed": 2}


def test_an_anthropic_call_answered_by_an_openai_format_model_uses_the_stored_answer(
    tmp_path: Path,
) -> None:
    """The view leaves the side already in OpenAI's format out (None): the stored
    ``chat.completion`` is the answer."""
    talks = conversations(12, seed=25)
    records = [
        talk.record(
            "anthropic",
            upstream_api="azure",
            upstream_model="gpt-4o",
            response_body=orjson.dumps(talk.openai_response()),
        )
        for talk in talks
    ]
    rows = rows_of(records, VIEWS["tests"])
    assert all(row["normalized"]["response"] is None for row in rows)
    url = store_calls(tmp_path / "c.db", rows)
    openai = rows_of([talk.record("openai") for talk in talks], None)
    reference = store_calls(tmp_path / "ref.db", openai)
    export(url, tmp_path / "out", valid_share=0.2)
    export(reference, tmp_path / "ref", valid_share=0.2)
    assert exported(tmp_path / "out") == exported(tmp_path / "ref")


def run_cli(
    url: str, out: Path, capsys: pytest.CaptureFixture[str], *args: str, code: int = 0
) -> dict[str, Any]:
    exit_code = main(["export", "--database-url", url, "--out", str(out), "--json", *args])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert exit_code == code, report
    return report


def test_endpoint_chat_covers_both_chat_apis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    talks = conversations(36, seed=26)
    view = VIEWS["tests"]
    records = [t.record("openai") for t in talks[:12]]
    records += [t.record("anthropic") for t in talks[12:24]]
    records += [t.record("chat-to-claude") for t in talks[24:]]
    url = store_calls(tmp_path / "c.db", rows_of(records, view))
    share = ("--valid-share", "0.2")
    report = run_cli(url, tmp_path / "chat", capsys, "--endpoint", "chat", *share)
    assert report["selected"] == report["kept"] == 36
    assert "endpoint=chat|messages" in report["filters"]
    report = run_cli(url, tmp_path / "messages", capsys, "--endpoint", "messages", *share)
    assert report["selected"] == report["kept"] == 12
    assert "endpoint=messages" in report["filters"]
    # no Responses API call here: nothing selected, too few examples (exit 1)
    report = run_cli(url, tmp_path / "responses", capsys, "--endpoint", "responses", code=1)
    assert report["selected"] == 0
    report = run_cli(url, tmp_path / "all", capsys, *share)
    assert report["selected"] == 36
    manifest = json.loads((tmp_path / "messages" / "manifest.json").read_text())
    assert manifest["filters"]["endpoints"] == ["messages"]


def test_held_out_prompts_of_anthropic_calls_are_replayed_as_chat_requests(tmp_path: Path) -> None:
    talks = conversations(9, seed=27)
    view = VIEWS["tests"]
    records = [t.record("anthropic") for t in talks[:3]]
    records += [t.record("chat-to-claude") for t in talks[3:6]]
    records += [t.record("openai") for t in talks[6:]]
    rows = rows_of(records, view)
    url = store_calls(tmp_path / "c.db", rows)

    async def pick() -> tuple[list[HeldOut], int]:
        async with open_store(url) as store:
            filters = Filters(endpoints=CHAT_ENDPOINTS, route="support", variant="teacher")
            return await held_out(store.engine, filters, 100, 1.0, "salt")

    items, eligible = asyncio.run(pick())
    assert eligible == len(items) == 9
    by_id = {row["id"]: row for row in rows}
    for item in items:
        row = by_id[item.call_id]
        assert "messages" in item.request and "system" not in item.request
        assert item.request["messages"][0] == {"role": "system", "content": SYSTEM}
        view = row["normalized"]
        if row["dialect"] == "anthropic":
            assert item.request == view["request"]
        else:  # the request was OpenAI's already, and is not stored twice
            assert view is None or view["request"] is None
            assert item.request == row["request"]
        assert item.example.answer["content"].startswith("Answer")
