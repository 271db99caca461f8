"""A normaliser for the capture's tests: the chat view of a call in Anthropic's dialect.

The gateway hands the capture ``dialects.capture.chat_view``; these tests must not depend on
that package's progress, so this is a small translation of our own, written from Anthropic's
Messages API documentation, for what the tests send: a ``system`` string or text blocks, text
content (a string or text blocks), ``tool_use`` and ``tool_result`` blocks, function tools and
``tool_choice``; a Message's text, tool calls, stop reason and usage. Anything else (an image,
a document) makes that half None with an ``error``, as the contract says.

``chat_views()`` lists it with the real one when that can be imported, for tests that check
the capture and the exporter with either.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import orjson

ChatView = Callable[[Any, str, Any, str], dict[str, Any] | None]

FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


class _Unsupported(ValueError):
    pass


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for block in content:
        if block.get("type") != "text":
            raise _Unsupported(f"{block.get('type')} block")
        texts.append(block["text"])
    return "\n".join(texts)


def _messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = request.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system)})
    for turn in request["messages"]:
        content = turn["content"]
        if isinstance(content, str):
            messages.append({"role": turn["role"], "content": content})
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in content:
            kind = block.get("type")
            if kind == "text":
                texts.append(block["text"])
            elif kind == "tool_use":
                arguments = orjson.dumps(block["input"]).decode()
                function = {"name": block["name"], "arguments": arguments}
                calls.append({"id": block["id"], "type": "function", "function": function})
            elif kind == "tool_result":
                result = block.get("content", "")
                messages.append(
                    {"role": "tool", "tool_call_id": block["tool_use_id"], "content": _text(result)}
                )
            else:
                raise _Unsupported(f"{kind} block")
        if texts or calls:
            message: dict[str, Any] = {"role": turn["role"], "content": "\n".join(texts) or None}
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
    return messages


def _request(request: dict[str, Any]) -> dict[str, Any]:
    chat: dict[str, Any] = {"model": request.get("model"), "messages": _messages(request)}
    if "max_tokens" in request:
        chat["max_tokens"] = request["max_tokens"]
    tools = request.get("tools")
    if tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool.get("description", ""),
                    "parameters": tool["input_schema"],
                },
            }
            for tool in tools
        ]
    return chat


def _response(message: dict[str, Any]) -> dict[str, Any]:
    texts = [b["text"] for b in message["content"] if b["type"] == "text"]
    calls = [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": orjson.dumps(b["input"]).decode()},
        }
        for b in message["content"]
        if b["type"] == "tool_use"
    ]
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        answer["tool_calls"] = calls
    usage = message.get("usage") or {}
    read = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + read + written
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": 0,
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": answer,
                "finish_reason": FINISH.get(message.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": usage.get("output_tokens") or 0,
            "total_tokens": prompt + (usage.get("output_tokens") or 0),
            "prompt_tokens_details": {
                "cached_tokens": read,
                "cache_creation_input_tokens": written,
            },
        },
    }


def simple_chat_view(
    request: Any, request_dialect: str, response: Any, response_dialect: str
) -> dict[str, Any] | None:
    """``dialects.capture.chat_view``'s contract, for the tests' calls."""
    if request_dialect == response_dialect == "openai":
        return None
    view: dict[str, Any] = {"request": request, "response": response}
    errors: list[str] = []
    if request_dialect == "anthropic":
        try:
            view["request"] = _request(request)
        except (_Unsupported, KeyError, TypeError, AttributeError) as exc:
            view["request"] = None
            errors.append(f"request: {exc}")
    if response_dialect == "anthropic":
        if isinstance(response, dict) and response.get("type") == "message":
            try:
                view["response"] = _response(response)
            except (KeyError, TypeError) as exc:
                view["response"] = None
                errors.append(f"response: {exc}")
        else:
            view["response"] = None
    if errors:
        view["error"] = "; ".join(errors)
    return view


def chat_views() -> dict[str, ChatView]:
    """This module's normaliser, and ``dialects.capture.chat_view`` once it exists."""
    views: dict[str, ChatView] = {"tests": simple_chat_view}
    try:
        module = importlib.import_module("dialects.capture")
    except ImportError:
        return views
    real = getattr(module, "chat_view", None)
    if callable(real):
        views["dialects"] = real
    return views
