"""POST /v1/chat/completions: deterministic text, JSON or tool calls, streamed or not."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
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
from simulator.exchange import Call, begin, respond
from simulator.quality import defective, degrade, judged
from simulator.slices import RULES
from simulator.streaming import interleave, stream_events
from simulator.tokens import count_prompt, split_tokens
from simulator.wire import (
    SSE_DONE,
    SYSTEM_FINGERPRINT,
    InvalidRequest,
    MissingParameter,
    new_id,
    positive_int,
    usage,
)

MAX_CHOICES = 128

_DUMPS = orjson.dumps


def tool_target(body: dict[str, Any], messages: list[Any]) -> tuple[str, Any] | None:
    """The function to call (name, parameters schema), or None to answer with text."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "tool":
        return None
    functions: dict[str, Any] = {}
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            functions.setdefault(function["name"], function.get("parameters"))
    if not functions:
        return None
    if isinstance(choice, dict):
        wanted = choice.get("function")
        name = wanted.get("name") if isinstance(wanted, dict) else None
        if isinstance(name, str) and name in functions:
            return name, functions[name]
    name = next(iter(functions))
    return name, functions[name]


def _json_schema(response_format: Any) -> tuple[bool, Any]:
    """(answer in JSON?, the schema to fill if any) from an OpenAI response_format."""
    if not isinstance(response_format, dict):
        return False, None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        return True, spec.get("schema") if isinstance(spec, dict) else None
    return kind == "json_object", None


def _message(reply: Reply) -> dict[str, Any]:
    if isinstance(reply, ToolCallReply):
        call = {"name": reply.name, "arguments": reply.arguments}
        return {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "annotations": [],
            "tool_calls": [{"id": reply.call_id, "type": "function", "function": call}],
        }
    return {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}


def _finish_reason(reply: Reply) -> str:
    return "tool_calls" if isinstance(reply, ToolCallReply) else reply.finish_reason


def _steps(reply: Reply) -> int:
    return len(reply.pieces if isinstance(reply, TextReply) else reply.argument_pieces)


def _lane(reply: Reply, index: int, prefix: bytes, suffix: bytes) -> list[bytes]:
    """One choice's chunks: the role, then one per token, then the finish."""
    head = prefix + b'{"index":' + str(index).encode()
    tail = b',"logprobs":null,"finish_reason":null}]' + suffix
    if isinstance(reply, ToolCallReply):
        opening = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": reply.call_id,
                    "type": "function",
                    "function": {"name": reply.name, "arguments": ""},
                }
            ],
            "refusal": None,
        }
        lane = [head + b',"delta":' + _DUMPS(opening) + tail]
        for piece in reply.argument_pieces:
            fragment = b'{"tool_calls":[{"index":0,"function":{"arguments":' + _DUMPS(piece)
            lane.append(head + b',"delta":' + fragment + b"}}]}" + tail)
    else:
        lane = [head + b',"delta":{"role":"assistant","content":"","refusal":null}' + tail]
        for piece in reply.pieces:
            lane.append(head + b',"delta":{"content":' + _DUMPS(piece) + b"}" + tail)
    finish = _DUMPS(_finish_reason(reply))
    lane.append(head + b',"delta":{},"logprobs":null,"finish_reason":' + finish + b"}]" + suffix)
    return lane


async def chat_completions(request: web.Request) -> web.StreamResponse:
    call = await begin(request)
    body = call.body
    if not call.model:
        raise MissingParameter("model")
    messages = body.get("messages")
    if messages is None:
        raise MissingParameter("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "Invalid 'messages': expected a non-empty array of messages.",
            "messages",
            "invalid_value",
        )
    n = positive_int(body, "n", MAX_CHOICES) or 1
    max_tokens = positive_int(body, "max_tokens")
    max_completion_tokens = positive_int(body, "max_completion_tokens")
    tools = body.get("tools")
    response_format = body.get("response_format")
    seed = request_seed(
        "chat",
        call.model,
        messages,
        body.get("seed"),
        n,
        max_tokens,
        max_completion_tokens,
        tools,
        body.get("tool_choice"),
        response_format,
    )
    cap = max_completion_tokens or max_tokens
    target = tool_target(body, messages)
    as_json, schema = _json_schema(response_format)
    replies: list[Reply] = []
    for index in range(n):
        rng = random.Random(seed + index)
        if target is not None:
            replies.append(tool_reply(rng, target[0], target[1]))
        elif as_json:
            verdict = judged(messages, schema, rng)
            if verdict is not None:  # a pairwise judge's request: see simulator.quality
                replies.append(TextReply(split_tokens(verdict), "stop"))
            else:
                replies.append(json_reply(rng, cap, schema))
        else:
            replies.append(text_reply(rng, cap))
    quality = request.app[RULES].quality(call.model, messages, call.latency.quality)
    if quality < 1.0:
        replies = [
            degrade(reply, as_json) if defective(seed, index, quality) else reply
            for index, reply in enumerate(replies)
        ]
    prompt_tokens = count_prompt(messages, tools)
    completion_tokens = sum(reply.tokens for reply in replies)
    ttft_s, token_s = call.delays(seed)
    if body.get("stream") is True:
        return await _stream(request, call, replies, prompt_tokens, ttft_s, token_s)
    payload = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": [
            {
                "index": index,
                "message": _message(reply),
                "logprobs": None,
                "finish_reason": _finish_reason(reply),
            }
            for index, reply in enumerate(replies)
        ],
        "usage": usage(prompt_tokens, completion_tokens),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    wait_s = ttft_s + token_s * max(_steps(reply) for reply in replies)
    return await respond(request, call, payload, wait_s)


async def _stream(
    request: web.Request,
    call: Call,
    replies: list[Reply],
    prompt_tokens: int,
    ttft_s: float,
    token_s: float,
) -> web.StreamResponse:
    options = call.body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    head = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": call.model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    prefix = b"data: " + _DUMPS(head)[:-1] + b',"choices":['
    suffix = (b',"usage":null' if include_usage else b"") + b"}\n\n"
    lanes = [_lane(reply, index, prefix, suffix) for index, reply in enumerate(replies)]
    trailer = SSE_DONE
    if include_usage:
        completion_tokens = sum(reply.tokens for reply in replies)
        totals = _DUMPS(usage(prompt_tokens, completion_tokens))
        trailer = prefix + b'],"usage":' + totals + b"}\n\n" + SSE_DONE
    return await stream_events(request, call, interleave(lanes, 2), ttft_s, token_s, trailer)
