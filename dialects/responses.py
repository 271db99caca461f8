"""Whole answers between Anthropic Messages and OpenAI chat completions.

Anthropic Message -> chat.completion
    Text blocks are concatenated into ``content`` (None when the answer is only tool calls);
    ``tool_use`` blocks become ``tool_calls`` with their ids unchanged (``toolu_...`` ids work as
    OpenAI call ids) and the input dumped compactly; thinking blocks become the message's
    ``reasoning_content``, the field vLLM and DeepSeek use for reasoning (redacted thinking has
    no readable text and is left out). Stop reasons: end_turn, stop_sequence and pause_turn ->
    stop; max_tokens and model_context_window_exceeded -> length; tool_use -> tool_calls;
    refusal -> content_filter. A matched stop sequence is kept as the choice's ``stop_reason``,
    where vLLM reports it. Usage: prompt_tokens counts every input token (uncached, cache
    writes and cache reads), ``prompt_tokens_details`` has ``cached_tokens`` (cache reads) and
    ``cache_creation_input_tokens`` (cache writes, so cost can price them). ``created`` is a
    parameter: these are pure functions, with no clock.

chat.completion -> Anthropic Message (first choice only)
    ``reasoning_content`` (or ``reasoning``) becomes a thinking block with an empty signature,
    text (and a refusal's text) a text block, ``tool_calls`` tool_use blocks. Arguments that are
    not a JSON object (a model's broken JSON) are kept whole as ``{"_raw": "<arguments>"}``
    rather than failing the answer: the client's tool then sees what the model wrote (and the
    reverse translation gives the string back). Stop reasons: stop -> end_turn (stop_sequence
    with its sequence when the upstream says which, as vLLM does), length -> max_tokens,
    tool_calls and function_call -> tool_use, content_filter -> refusal. Usage: input_tokens are
    the prompt tokens not read from or written to the cache.
"""

from __future__ import annotations

from typing import Any

import orjson

from dialects.errors import Untranslatable

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
RAW_ARGUMENTS = "_raw"


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's finish_reason for an Anthropic stop_reason."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def stop_reason(finish: Any, matched: Any = None) -> tuple[str, str | None]:
    """(Anthropic stop_reason, stop_sequence) for an OpenAI finish_reason and vLLM's stop_reason."""
    if finish == "stop" and isinstance(matched, str) and matched:
        return "stop_sequence", matched
    return (STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"), None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def openai_usage(usage: Any) -> dict[str, Any]:
    """OpenAI's usage for Anthropic's."""
    if not isinstance(usage, dict):
        usage = {}
    uncached = _count(usage.get("input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    read = _count(usage.get("cache_read_input_tokens"))
    output = _count(usage.get("output_tokens"))
    prompt = uncached + written + read
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read, "cache_creation_input_tokens": written},
    }


def anthropic_usage(usage: Any) -> dict[str, Any]:
    """Anthropic's usage for OpenAI's."""
    if not isinstance(usage, dict):
        usage = {}
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, dict):
        details = {}
    read = _count(details.get("cached_tokens"))
    written = _count(details.get("cache_creation_input_tokens"))
    return {
        "input_tokens": max(_count(usage.get("prompt_tokens")) - read - written, 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": _count(usage.get("completion_tokens")),
    }


def string(value: Any, default: str = "") -> str:
    """``value`` when it is a non-empty string, else ``default``: an upstream's id, name or
    model of another type must not reach a client whose SDK reads a string there."""
    return value if isinstance(value, str) and value else default


def tool_arguments(arguments: Any) -> str:
    """A tool_use block's input as OpenAI's arguments string (compact JSON)."""
    if isinstance(arguments, dict) and len(arguments) == 1:
        raw = arguments.get(RAW_ARGUMENTS)
        if isinstance(raw, str):
            return raw
    return orjson.dumps({} if arguments is None else arguments).decode()


def tool_input(arguments: Any) -> dict[str, Any]:
    """OpenAI's arguments string as a tool_use block's input (an object, whatever came)."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str):
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
        return {RAW_ARGUMENTS: arguments}
    return {RAW_ARGUMENTS: orjson.dumps(arguments).decode()}


def anthropic_message_to_openai_chat(
    message: dict[str, Any], *, model: str | None = None, created: int = 0
) -> dict[str, Any]:
    """An Anthropic Message as an OpenAI chat.completion."""
    if not isinstance(message, dict):
        raise Untranslatable("body", "the upstream's answer is not a JSON object")
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    content = message.get("content")
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str):
                texts.append(text)
        elif kind == "tool_use":
            calls.append(
                {
                    "id": string(block.get("id"), f"toolu_{len(calls)}"),
                    "type": "function",
                    "function": {
                        "name": string(block.get("name")),
                        "arguments": tool_arguments(block.get("input")),
                    },
                }
            )
        elif kind == "thinking":
            text = block.get("thinking")
            if isinstance(text, str):
                thinking.append(text)
    out_message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if thinking:
        out_message["reasoning_content"] = "".join(thinking)
    if calls:
        out_message["tool_calls"] = calls
    reason = message.get("stop_reason")
    choice: dict[str, Any] = {
        "index": 0,
        "message": out_message,
        "logprobs": None,
        "finish_reason": finish_reason(reason),
    }
    sequence = message.get("stop_sequence")
    if reason == "stop_sequence" and isinstance(sequence, str):
        choice["stop_reason"] = sequence
    return {
        "id": string(message.get("id")),
        "object": "chat.completion",
        "created": created,
        "model": model if model is not None else string(message.get("model")),
        "choices": [choice],
        "usage": openai_usage(message.get("usage")),
    }


def openai_chat_to_anthropic_message(completion: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat.completion as an Anthropic Message (its first choice)."""
    if not isinstance(completion, dict):
        raise Untranslatable("body", "the upstream's answer is not a JSON object")
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    if not isinstance(choice, dict):
        choice = {}
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    blocks: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if reasoning is None:
        reasoning = message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _text_of(message.get("content"))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        text += refusal
    if text:
        blocks.append({"type": "text", "text": text})
    tool_calls = message.get("tool_calls")
    for k, call in enumerate(tool_calls if isinstance(tool_calls, list) else ()):
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        blocks.append(
            {
                "type": "tool_use",
                "id": string(call.get("id"), f"call_{k}"),
                "name": string(function.get("name")),
                "input": tool_input(function.get("arguments")),
            }
        )
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and not tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": "call_0",
                "name": string(legacy.get("name")),
                "input": tool_input(legacy.get("arguments")),
            }
        )
    finish = choice.get("finish_reason")
    reason, sequence = stop_reason(finish, choice.get("stop_reason"))
    if isinstance(refusal, str) and refusal and finish == "stop":
        reason = "refusal"
    return {
        "id": string(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": string(completion.get("model")),
        "content": blocks,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(completion.get("usage")),
    }


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts, as some servers answer
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
