"""Validation of fine-tuning rows: the checks of OpenAI's chat fine-tuning data-prep guide,
with its gaps (tools and tool calls) filled, and the same for preference (DPO) rows.

Each check has a category name; a row's problems are the set of categories it fails. The
guide's: ``data_type``, ``missing_messages_list``, ``message_missing_key``,
``message_unrecognized_key``, ``unrecognized_role``, ``missing_content``,
``example_missing_assistant_message``, and over the token limit ``too_many_tokens`` (checked
with the token counts, in ``report``). Added: ``unknown_key`` (a top-level key the format
lacks; ``tools`` and ``parallel_tool_calls`` are known), ``invalid_tools`` (the ``tools`` list
is not function definitions), ``invalid_tool_calls`` (not a list of ``{id, type: function,
function: {name, arguments: str}}`` on an assistant message), ``unknown_tool`` (a call to a
function the row's tools do not define), ``invalid_tool_message`` (a ``tool`` message without
the ``tool_call_id`` of an earlier call), ``invalid_weight`` (``weight`` other than 0 or 1, or
not on an assistant message), ``invalid_json`` (a file line that is not JSON); for preference
rows ``missing_input`` and ``invalid_output``. An assistant message with tool calls may have
null content: that is not ``missing_content``.
"""

from __future__ import annotations

from typing import Any

CATEGORIES: dict[str, str] = {
    "invalid_json": "line is not JSON",
    "data_type": "row is not a JSON object",
    "missing_messages_list": "no messages, or an empty list",
    "unknown_key": "top-level key the format does not have",
    "message_missing_key": "message without role (or without content and tool calls)",
    "message_unrecognized_key": "message key the format does not have",
    "unrecognized_role": "role other than system, user, assistant, tool",
    "missing_content": "content missing, empty or not text",
    "example_missing_assistant_message": "no assistant message",
    "invalid_weight": "weight other than 0/1, or not on an assistant message",
    "invalid_tools": "tools is not a list of function definitions",
    "invalid_tool_calls": "malformed tool_calls, or on a non-assistant message",
    "unknown_tool": "tool call to a function the row's tools do not define",
    "invalid_tool_message": "tool message without the tool_call_id of an earlier call",
    "too_many_tokens": "example over the base model's token limit",
    "missing_input": "preference row without input.messages",
    "invalid_output": "preferred/non-preferred output is not one assistant message",
}

CHAT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
PREFERENCE_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "function_call", "weight", "tool_calls", "tool_call_id"}
)
ROLES = frozenset({"system", "user", "assistant", "tool", "function"})


def _has_text(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    if isinstance(content, list) and content:
        return all(
            isinstance(part, dict) and part.get("type") in ("text", "image_url") for part in content
        )
    return False


def tool_names(tools: Any, problems: set[str]) -> set[str] | None:
    """The function names ``tools`` defines (None when absent); ``invalid_tools`` if bad."""
    if tools is None:
        return None
    names: set[str] = set()
    if not isinstance(tools, list) or not tools:
        problems.add("invalid_tools")
        return names
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            problems.add("invalid_tools")
            continue
        name = function.get("name")
        if (
            not isinstance(name, str)
            or not name
            or not isinstance(function.get("parameters", {}), dict)
        ):
            problems.add("invalid_tools")
        else:
            names.add(name)
    return names


def _tool_calls(calls: Any, known: set[str] | None, problems: set[str]) -> list[str]:
    """The ids of well-formed calls; problems for the rest."""
    if not isinstance(calls, list) or not calls:
        problems.add("invalid_tool_calls")
        return []
    ids: list[str] = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(call.get("id"), str)
            or call.get("type", "function") != "function"
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str)
        ):
            problems.add("invalid_tool_calls")
            continue
        if known is None or function["name"] not in known:
            problems.add("unknown_tool")
        ids.append(call["id"])
    return ids


def check_messages(messages: Any, known_tools: set[str] | None, problems: set[str]) -> bool:
    """Check a message list; True if it has an assistant message."""
    call_ids: set[str] = set()
    has_assistant = False
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            problems.add("message_missing_key")
            continue
        role = message["role"]
        if not MESSAGE_KEYS.issuperset(message):
            problems.add("message_unrecognized_key")
        if role not in ROLES:
            problems.add("unrecognized_role")
        calls = message.get("tool_calls")
        if calls is not None:
            if role != "assistant":
                problems.add("invalid_tool_calls")
            call_ids.update(_tool_calls(calls, known_tools, problems))
        acts = calls is not None or message.get("function_call") is not None
        content = message.get("content")
        if "content" not in message and not acts:
            problems.add("message_missing_key")
        elif (not acts and not _has_text(content)) or (
            acts and content not in (None, "") and not _has_text(content)
        ):
            problems.add("missing_content")
        if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)):
            problems.add("invalid_weight")
        if role == "tool" and message.get("tool_call_id") not in call_ids:
            problems.add("invalid_tool_message")
        has_assistant = has_assistant or role == "assistant"
    return has_assistant


def check_chat_row(row: Any) -> set[str]:
    """The categories a chat fine-tuning row fails (empty: the row is valid)."""
    problems: set[str] = set()
    if not isinstance(row, dict):
        return {"data_type"}
    if not CHAT_KEYS.issuperset(row):
        problems.add("unknown_key")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.add("missing_messages_list")
        return problems
    known = tool_names(row.get("tools"), problems)
    if not check_messages(messages, known, problems):
        problems.add("example_missing_assistant_message")
    return problems


def _check_output(output: Any, known: set[str] | None, problems: set[str]) -> None:
    if (
        not isinstance(output, list)
        or len(output) != 1
        or not isinstance(output[0], dict)
        or output[0].get("role") != "assistant"
    ):
        problems.add("invalid_output")
        return
    check_messages(output, known, problems)


def check_preference_row(row: Any) -> set[str]:
    """The categories a preference (DPO) row fails."""
    problems: set[str] = set()
    if not isinstance(row, dict):
        return {"data_type"}
    if any(key not in PREFERENCE_KEYS for key in row):
        problems.add("unknown_key")
    given = row.get("input")
    if not isinstance(given, dict) or not isinstance(given.get("messages"), list):
        problems.add("missing_input")
        return problems
    messages = given["messages"]
    if not messages:
        problems.add("missing_input")
        return problems
    if any(key not in INPUT_KEYS for key in given):
        problems.add("unknown_key")
    known = tool_names(given.get("tools"), problems)
    check_messages(messages, known, problems)
    _check_output(row.get("preferred_output"), known, problems)
    _check_output(row.get("non_preferred_output"), known, problems)
    return problems
