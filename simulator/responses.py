"""POST /v1/responses: the Responses API, with text, JSON or one function call.

Non-streaming answers a ``response`` object; streaming sends named events as OpenAI does
(response.created, response.in_progress, response.output_item.added, ..., the deltas,
..., response.completed) with no [DONE] line. max_output_tokens caps the reply and makes the
response "incomplete". An `error-event` fault ends the stream with an ``error`` event.
"""

from __future__ import annotations

import random
import time
from typing import Any

from aiohttp import web

from simulator.content import (
    Reply,
    TextReply,
    ToolCallReply,
    json_reply,
    request_seed,
    text_reply,
    tool_reply,
)
from simulator.exchange import SERVER_ERROR_MESSAGE, Call, begin, respond
from simulator.streaming import Event, stream_events
from simulator.tokens import PER_MESSAGE, PER_REPLY, count_content
from simulator.wire import InvalidRequest, MissingParameter, new_id, positive_int, sse_named


def input_items(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value:
        return value
    raise InvalidRequest(
        "Invalid 'input': expected a string or a non-empty array of items.",
        "input",
        "invalid_value",
    )


def count_items(items: list[Any], instructions: Any) -> int:
    total = PER_REPLY + count_content(instructions)
    for item in items:
        total += PER_MESSAGE
        if isinstance(item, dict):
            for field in ("content", "output", "arguments", "name"):
                total += count_content(item.get(field))
    return total


def tool_target(body: dict[str, Any], items: list[Any]) -> tuple[str, Any] | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or choice == "none":
        return None
    last = items[-1]
    if isinstance(last, dict) and last.get("type") == "function_call_output":
        return None
    functions: dict[str, Any] = {}
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "function":
            name = tool.get("name")
            if isinstance(name, str):
                functions.setdefault(name, tool.get("parameters"))
    if not functions:
        return None
    wanted = choice.get("name") if isinstance(choice, dict) else None
    name = wanted if isinstance(wanted, str) and wanted in functions else next(iter(functions))
    return name, functions[name]


def _output_format(body: dict[str, Any]) -> tuple[bool, Any]:
    text = body.get("text")
    spec = text.get("format") if isinstance(text, dict) else None
    if not isinstance(spec, dict):
        return False, None
    kind = spec.get("type")
    return kind in ("json_schema", "json_object"), spec.get("schema")


def _item(reply: Reply, item_id: str, status: str) -> dict[str, Any]:
    if isinstance(reply, ToolCallReply):
        return {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "call_id": reply.call_id,
            "name": reply.name,
            "arguments": reply.arguments if status != "in_progress" else "",
        }
    text = reply.text if status != "in_progress" else ""
    content = [] if status == "in_progress" else [_part(text)]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _head(call: Call) -> dict[str, Any]:
    body = call.body
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": call.model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


async def responses(request: web.Request) -> web.StreamResponse:
    call = await begin(request)
    body = call.body
    if not call.model:
        raise MissingParameter("model")
    if body.get("input") is None:
        raise MissingParameter("input")
    items = input_items(body["input"])
    cap = positive_int(body, "max_output_tokens")
    seed = request_seed(
        "responses",
        call.model,
        items,
        body.get("instructions"),
        body.get("tools"),
        body.get("tool_choice"),
        cap,
        body.get("text"),
    )
    rng = random.Random(seed)
    target = tool_target(body, items)
    as_json, schema = _output_format(body)
    reply: Reply
    if target is not None:
        reply = tool_reply(rng, target[0], target[1])
    elif as_json:
        reply = json_reply(rng, cap, schema)
    else:
        reply = text_reply(rng, cap)
    incomplete = isinstance(reply, TextReply) and reply.finish_reason == "length"
    status = "incomplete" if incomplete else "completed"
    head = _head(call)
    final = {
        **head,
        "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "output": [_item(reply, new_id("msg_" if isinstance(reply, TextReply) else "fc_"), status)],
        "usage": _usage(count_items(items, body.get("instructions")), reply.tokens),
    }
    ttft_s, token_s = call.delays(seed)
    if body.get("stream") is True:
        events = _events(head, final, reply)
        return await stream_events(request, call, events, ttft_s, token_s, error_event=_error_event)
    steps = len(reply.pieces if isinstance(reply, TextReply) else reply.argument_pieces)
    return await respond(request, call, final, ttft_s + token_s * steps)


def _events(head: dict[str, Any], final: dict[str, Any], reply: Reply) -> list[Event]:
    """The Responses API event sequence for one output item, deltas paced like tokens."""
    item = final["output"][0]
    item_id = item["id"]
    where = {"item_id": item_id, "output_index": 0}
    opening = _item(reply, item_id, "in_progress")
    events: list[tuple[str, dict[str, Any], bool]] = [
        ("response.created", {"response": head}, False),
        ("response.in_progress", {"response": head}, False),
        ("response.output_item.added", {"output_index": 0, "item": opening}, False),
    ]
    if isinstance(reply, ToolCallReply):
        for step, piece in enumerate(reply.argument_pieces):
            delta = {**where, "delta": piece}
            events.append(("response.function_call_arguments.delta", delta, step > 0))
        done = {**where, "name": reply.name, "arguments": reply.arguments}
        events.append(("response.function_call_arguments.done", done, True))
    else:
        part = {**where, "content_index": 0}
        events.append(("response.content_part.added", {**part, "part": _part("")}, False))
        for step, piece in enumerate(reply.pieces):
            delta = {**part, "delta": piece, "logprobs": []}
            events.append(("response.output_text.delta", delta, step > 0))
        done = {**part, "text": reply.text, "logprobs": []}
        events.append(("response.output_text.done", done, True))
        events.append(("response.content_part.done", {**part, "part": _part(reply.text)}, False))
    events.append(("response.output_item.done", {"output_index": 0, "item": item}, False))
    closing = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    events.append((closing, {"response": final}, False))
    return [
        (sse_named(name, {"type": name, "sequence_number": number, **data}), paced)
        for number, (name, data, paced) in enumerate(events)
    ]


def _error_event(sent: int) -> bytes:
    """The Responses API's ``error`` event, numbered after the ``sent`` events before it."""
    error = {
        "type": "error",
        "code": "server_error",
        "message": SERVER_ERROR_MESSAGE,
        "param": None,
        "sequence_number": sent,
    }
    return sse_named("error", error)
