"""Every validation category, each produced by a crafted bad row, is found and reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.check_file import validate_file
from exporter.cli import main
from exporter.validate import CATEGORIES, check_chat_row, check_preference_row

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


def good(n: int = 0) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Question {n}?"},
            {"role": "assistant", "content": f"Answer {n}."},
        ]
    }


def with_tools(*messages: dict[str, Any], tools: Any = (TOOL,)) -> dict[str, Any]:
    row: dict[str, Any] = {"messages": [{"role": "user", "content": "Find it"}, *messages]}
    if tools is not None:
        row["tools"] = list(tools)
    return row


USER = {"role": "user", "content": "hi"}
ANSWER = {"role": "assistant", "content": "hello"}

BAD_CHAT: dict[str, Any] = {
    "data_type": ["not", "an", "object"],
    "missing_messages_list": {"messages": []},
    "unknown_key": {**good(), "prompt": "legacy"},
    "message_missing_key": {"messages": [{"content": "no role"}, ANSWER]},
    "message_unrecognized_key": {"messages": [{**USER, "mood": "happy"}, ANSWER]},
    "unrecognized_role": {"messages": [{"role": "narrator", "content": "once"}, ANSWER]},
    "missing_content": {"messages": [{"role": "user", "content": "  "}, ANSWER]},
    "example_missing_assistant_message": {"messages": [USER]},
    "invalid_weight": {"messages": [USER, {**ANSWER, "weight": 0.5}]},
    "invalid_tools": with_tools(ANSWER, tools=[{"type": "function", "function": {"name": ""}}]),
    "invalid_tool_calls": with_tools(
        {"role": "assistant", "content": None, "tool_calls": [{"id": 1, "function": {}}]}
    ),
    "unknown_tool": with_tools(
        {"role": "assistant", "content": None, "tool_calls": [CALL]}, tools=None
    ),
    "invalid_tool_message": with_tools(
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_other", "content": "{}"},
        ANSWER,
    ),
}


def test_a_tool_call_with_null_content_and_its_tool_message_are_valid() -> None:
    row = with_tools(
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"found": true}'},
        {"role": "assistant", "content": "Found it.", "weight": 1},
    )
    assert check_chat_row(row) == set()


@pytest.mark.parametrize("category", sorted(BAD_CHAT))
def test_each_bad_chat_row_fails_its_category(category: str) -> None:
    assert category in check_chat_row(BAD_CHAT[category])


def test_a_file_reports_every_category_with_line_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [orjson.dumps(good(n)) for n in range(12)]
    expected_line: dict[str, int] = {}
    for category, row in BAD_CHAT.items():
        lines.append(orjson.dumps(row))
        expected_line[category] = len(lines)
    lines.append(b'{"messages": [truncated')
    expected_line["invalid_json"] = len(lines)
    long = good(99)
    long["messages"][1]["content"] = "word " * 400
    lines.append(orjson.dumps(long))
    expected_line["too_many_tokens"] = len(lines)
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    code = main(["validate", str(path), "--max-example-tokens", "300", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    problems = report["problems"]
    assert set(problems) == set(expected_line)
    for category, line in expected_line.items():
        assert f"line {line}" in problems[category]["examples"], category
        assert problems[category]["meaning"] == CATEGORIES[category]
    assert report["over_limit"]["count"] == 1
    assert report["errors"]

    main(["validate", str(path), "--max-example-tokens", "300"])
    text = capsys.readouterr().out
    for category in expected_line:
        assert category in text


def test_too_few_examples_is_an_error_and_under_fifty_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "small.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(good(n)) for n in range(9)))
    report = validate_file(path)
    assert report["errors"] and "at least 10" in report["errors"][0]
    path.write_bytes(b"\n".join(orjson.dumps(good(n)) for n in range(20)))
    report = validate_file(path)
    assert not report["errors"] and "50" in report["warnings"][0]


def preference(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "input": {"messages": [USER]},
        "preferred_output": [{"role": "assistant", "content": "Hello! How can I help?"}],
        "non_preferred_output": [{"role": "assistant", "content": "what"}],
    }
    row.update(changes)
    return row


def test_preference_rows() -> None:
    assert check_preference_row(preference()) == set()
    assert check_preference_row(preference(input={"messages": []})) == {"missing_input"}
    assert "invalid_output" in check_preference_row(
        preference(preferred_output=[{"role": "user", "content": "x"}])
    )
    assert "invalid_output" in check_preference_row(preference(non_preferred_output=[]))
    assert "unknown_key" in check_preference_row(preference(extra=1))
    assert check_preference_row("row") == {"data_type"}
