"""Turning raw upstream responses into what is stored: the answer, its usage and finish reason.

Streams arrive as the upstream's raw server-sent-event bytes, split anywhere. They are joined,
framed into events and assembled into the object the same call would have returned without
streaming: for chat, one ``chat.completion`` with each choice's message (content concatenated,
tool calls merged from their deltas by index, refusal), finish reason and the usage chunk's
usage; for completions, a ``text_completion``; for the Responses API, the final ``response``
object (or what can be rebuilt from the deltas when the stream stopped short); for an Anthropic
upstream (``upstream_api`` "anthropic", whatever the client's dialect), its ``Message`` with each
content block rebuilt from its deltas (tool inputs from their JSON fragments: in
``capture.assemble_anthropic``). The types and the SSE framing are ``capture.events``.

Anthropic answers (a ``Message``, streamed or not) are summarised in OpenAI's terms, so that one
set of columns serves every provider: usage as ``prompt_tokens`` = all input tokens (uncached,
cache writes and cache reads), ``cached_tokens`` = cache reads, ``cache_write_tokens`` = cache
writes, ``completion_tokens`` = output tokens; ``stop_reason`` as the chat finish reason
(``ANTHROPIC_FINISH_REASONS``).

A stream that carries an error event or stops before its end (no ``[DONE]`` and an unfinished
choice; no ``response.completed``; no ``message_stop``) still yields what arrived, with
``complete=False`` and a ``note`` saying what happened. Nothing here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from capture.assemble_anthropic import (
    anthropic_finish_reason,
    assemble_anthropic,
    parse_anthropic_usage,
)
from capture.events import (
    JSON,
    Assembled,
    Usage,
    error_message,
    frame,
    load_json,
    non_negative_int,
    parse_events,
    string_or_none,
)


def _datas(chunks: Iterable[bytes]) -> list[bytes]:
    """The data of each event, for streams whose event names do not matter (chat)."""
    raw = b"".join(chunks)
    if raw.startswith(b"data: ") and raw.endswith(b"\n\n") and b"\r" not in raw:
        # The usual stream, nothing but "data: ...\n\n" events: split it in C.
        datas = raw[6:-2].split(b"\n\ndata: ")
        if raw.count(b"\n") == 2 * len(datas):
            return datas
    return [data for _, data in frame(raw)]


def _decode(datas: list[bytes]) -> tuple[list[Any], bool]:
    """The JSON payloads of ``events`` (None for one that is not JSON) and whether [DONE] came.

    One ``orjson.loads`` over all of them as an array is much cheaper than one per event; a
    stream cut inside an event makes that fail, and then they are decoded one by one.
    """
    done = False
    while datas and datas[-1] == b"[DONE]":
        datas.pop()
        done = True
    datas = [d for d in datas if d != b"[DONE]"]
    try:
        return orjson.loads(b"[" + b",".join(datas) + b"]"), done
    except orjson.JSONDecodeError:
        return [load_json(data) for data in datas], done


# --- usage and finish reasons of whole bodies ------------------------------------------------


def parse_usage(usage: Any) -> Usage:
    """Chat/completions/embeddings (``prompt_tokens``...), Responses (``input_tokens``...) or
    Anthropic (``input_tokens`` with ``cache_creation_input_tokens`` and
    ``cache_read_input_tokens``) usage."""
    if not isinstance(usage, dict):
        return Usage()
    if "prompt_tokens" not in usage and (
        "cache_creation_input_tokens" in usage or "cache_read_input_tokens" in usage
    ):
        return parse_anthropic_usage(usage)
    prompt = non_negative_int(usage.get("prompt_tokens"))
    completion = non_negative_int(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    if prompt is None:
        prompt = non_negative_int(usage.get("input_tokens"))
        completion = non_negative_int(usage.get("output_tokens"))
        details = usage.get("input_tokens_details")
    if prompt is None and completion is None:
        return Usage()
    cached = written = None
    if isinstance(details, dict):
        cached = non_negative_int(details.get("cached_tokens"))
        # What the gateway's translation of a Claude answer for an OpenAI client carries.
        written = non_negative_int(details.get("cache_creation_input_tokens"))
    if completion is None:
        completion = 0  # embeddings report prompt tokens only
    return Usage(prompt, completion, cached if cached is not None else 0, written if written else 0)


def responses_finish_reason(response: Any) -> str | None:
    """A chat-style finish reason for a Responses API ``response`` object."""
    if not isinstance(response, dict):
        return None
    status = response.get("status")
    if status == "completed":
        output = response.get("output")
        if isinstance(output, list) and any(
            isinstance(item, dict) and item.get("type") == "function_call" for item in output
        ):
            return "tool_calls"
        return "stop"
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return "length" if reason == "max_output_tokens" else string_or_none(reason) or "incomplete"
    return string_or_none(status)


def summarize(endpoint: str, body: JSON) -> Assembled:
    """Usage, finish reason and model of a parsed non-stream response body."""
    if not isinstance(body, dict):
        return Assembled(body)
    if body.get("type") == "message":  # an Anthropic Message (the upstream's dialect)
        return Assembled(
            body,
            parse_anthropic_usage(body.get("usage")),
            anthropic_finish_reason(body.get("stop_reason")),
            string_or_none(body.get("model")),
        )
    if endpoint == "responses" or body.get("object") == "response":
        finish = responses_finish_reason(body)
    else:
        finish = None
        choices = body.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            finish = string_or_none(choices[0].get("finish_reason"))
    return Assembled(
        body, parse_usage(body.get("usage")), finish, string_or_none(body.get("model"))
    )


# --- chat and completions streams ------------------------------------------------------------


@dataclass(slots=True)
class _Choice:
    role: str | None = None
    content: list[str] | None = None
    refusal: list[str] | None = None
    reasoning: list[str] | None = None
    tool_calls: dict[int, dict[str, Any]] | None = None
    function_call: dict[str, str] | None = None
    logprobs: dict[str, list[Any]] | None = None
    finish_reason: str | None = None


def _append(parts: list[str] | None, value: Any) -> list[str] | None:
    if isinstance(value, str):
        if parts is None:
            return [value]
        parts.append(value)
    return parts


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: Any, position: int) -> None:
    if not isinstance(delta, dict):
        return
    index = delta.get("index")
    if not isinstance(index, int):
        index = position
    call = calls.get(index)
    if call is None:
        function: dict[str, str] = {"name": "", "arguments": ""}
        call = calls[index] = {"id": None, "type": "function", "function": function}
    if isinstance(delta.get("id"), str) and not call["id"]:
        call["id"] = delta["id"]
    if isinstance(delta.get("type"), str):
        call["type"] = delta["type"]
    fragment = delta.get("function")
    if isinstance(fragment, dict):
        name = fragment.get("name")
        if isinstance(name, str) and name != call["function"]["name"]:
            call["function"]["name"] += name
        arguments = fragment.get("arguments")
        if isinstance(arguments, str):
            call["function"]["arguments"] += arguments


def _merge_delta(choice: _Choice, delta: dict[str, Any]) -> None:
    """Everything of a chat delta but its content (the rare fields)."""
    if isinstance(delta.get("role"), str):
        choice.role = delta["role"]
    choice.refusal = _append(choice.refusal, delta.get("refusal"))
    choice.reasoning = _append(choice.reasoning, delta.get("reasoning_content"))
    tool_calls = delta.get("tool_calls")
    if isinstance(tool_calls, list):
        if choice.tool_calls is None:
            choice.tool_calls = {}
        for position, call in enumerate(tool_calls):
            _merge_tool_call(choice.tool_calls, call, position)
    function_call = delta.get("function_call")
    if isinstance(function_call, dict):
        merged = choice.function_call or {"name": "", "arguments": ""}
        for key in ("name", "arguments"):
            if isinstance(function_call.get(key), str):
                merged[key] += function_call[key]
        choice.function_call = merged


def _merge_logprobs(choice: _Choice, logprobs: Any) -> None:
    if not isinstance(logprobs, dict):
        return
    for key in ("content", "refusal"):
        items = logprobs.get(key)
        if isinstance(items, list):
            if choice.logprobs is None:
                choice.logprobs = {}
            choice.logprobs.setdefault(key, []).extend(items)


_HEAD = ("id", "created", "model", "system_fingerprint", "service_tier")


def _fill_head(head: dict[str, Any], payload: dict[str, Any]) -> None:
    for key in _HEAD:
        if key not in head and payload.get(key) is not None:
            head[key] = payload[key]


def _assemble_choices(chunks: Iterable[bytes], *, chat: bool) -> Assembled:
    """The chunks of a chat (``chat=True``) or legacy completions stream, merged by choice."""
    payloads, done = _decode(_datas(chunks))
    head: dict[str, Any] = {}
    usage: Any = None
    error: Any = None
    unparsable = 0
    choices: dict[int, _Choice] = {}
    for payload in payloads:
        if type(payload) is not dict:
            unparsable += 1
            continue
        items = payload.get("choices")
        if items is None and payload.get("error") is not None:
            error = payload["error"]
            continue
        if not head or payload.get("usage") is not None:
            _fill_head(head, payload)
            if isinstance(payload.get("usage"), dict):
                usage = payload["usage"]
        if type(items) is not list:
            continue
        for position, item in enumerate(items):
            if type(item) is not dict:
                continue
            index = item.get("index", position)
            choice = choices.get(index)
            if choice is None:
                if not isinstance(index, int):
                    continue
                choice = choices[index] = _Choice()
            if chat:
                delta = item.get("delta")
                if type(delta) is dict and delta:
                    content = delta.get("content")
                    if type(content) is str:
                        if choice.content is None:
                            choice.content = [content]
                        else:
                            choice.content.append(content)
                    if len(delta) > ("content" in delta):
                        _merge_delta(choice, delta)
            else:
                text = item.get("text")
                if type(text) is str:
                    choice.content = _append(choice.content, text)
            reason = item.get("finish_reason")
            if type(reason) is str:
                choice.finish_reason = reason
            if item.get("logprobs") and chat:
                _merge_logprobs(choice, item["logprobs"])
    if payloads and type(payloads[-1]) is dict:
        _fill_head(head, payloads[-1])
    response: dict[str, Any] = dict(head)
    if chat:
        response["object"] = "chat.completion"
        response["choices"] = [_chat_choice(i, choices[i]) for i in sorted(choices)]
    else:
        response["object"] = "text_completion"
        response["choices"] = [
            {
                "index": i,
                "text": "".join(choices[i].content or ()),
                "logprobs": None,
                "finish_reason": choices[i].finish_reason,
            }
            for i in sorted(choices)
        ]
    if usage is not None:
        response["usage"] = usage
    notes: list[str] = []
    complete = True
    if error is not None:
        response["error"] = error
        notes.append(f"upstream error event in stream: {error_message(error)}")
        complete = False
    finished = bool(choices) and all(c.finish_reason is not None for c in choices.values())
    if not done and not finished and error is None:
        notes.append(f"stream cut: ended before [DONE] after {len(payloads)} events")
        complete = False
    if unparsable:
        notes.append(f"{unparsable} stream events were not JSON objects")
    first = choices[min(choices)] if choices else None
    return Assembled(
        response,
        parse_usage(usage),
        first.finish_reason if first is not None else None,
        string_or_none(head.get("model")),
        complete,
        "; ".join(notes) or None,
    )


def _chat_choice(index: int, choice: _Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": choice.role or "assistant",
        "content": "".join(choice.content) if choice.content is not None else None,
        "refusal": "".join(choice.refusal) if choice.refusal is not None else None,
    }
    if choice.reasoning is not None:
        message["reasoning_content"] = "".join(choice.reasoning)
    if choice.tool_calls:
        message["tool_calls"] = [choice.tool_calls[i] for i in sorted(choice.tool_calls)]
    if choice.function_call is not None:
        message["function_call"] = choice.function_call
    return {
        "index": index,
        "message": message,
        "logprobs": choice.logprobs,
        "finish_reason": choice.finish_reason,
    }


def assemble_chat(chunks: Iterable[bytes]) -> Assembled:
    """A ``chat.completion`` from the chunks of a streamed chat completion."""
    return _assemble_choices(chunks, chat=True)


def assemble_completions(chunks: Iterable[bytes]) -> Assembled:
    """A ``text_completion`` from the chunks of a streamed (legacy) completion."""
    return _assemble_choices(chunks, chat=False)


# --- Responses API streams --------------------------------------------------------------------

_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


def assemble_responses(chunks: Iterable[bytes]) -> Assembled:
    """The final ``response`` of a streamed Responses API call, or what arrived of it."""
    base: dict[str, Any] = {}
    final: dict[str, Any] | None = None
    items: dict[int, dict[str, Any]] = {}
    texts: dict[tuple[int, int], list[str]] = {}
    arguments: dict[int, list[str]] = {}
    error: Any = None
    events = unparsable = 0
    for event in parse_events(chunks):
        if event.data == b"[DONE]":
            continue
        events += 1
        payload = load_json(event.data)
        if not isinstance(payload, dict):
            unparsable += 1
            continue
        kind = payload.get("type") or event.name
        response = payload.get("response")
        index = payload.get("output_index")
        if kind in _FINAL_EVENTS and isinstance(response, dict):
            final = response
        elif kind in ("response.created", "response.in_progress") and isinstance(response, dict):
            base = response
        elif kind == "error" or (kind is None and "error" in payload):
            error = payload.get("error", payload)
        elif not isinstance(index, int):
            continue
        elif kind in ("response.output_item.added", "response.output_item.done"):
            if isinstance(payload.get("item"), dict):
                items[index] = payload["item"]
        elif kind == "response.output_text.delta" and isinstance(payload.get("delta"), str):
            part = payload.get("content_index")
            texts.setdefault((index, part if isinstance(part, int) else 0), []).append(
                payload["delta"]
            )
        elif kind == "response.function_call_arguments.delta" and isinstance(
            payload.get("delta"), str
        ):
            arguments.setdefault(index, []).append(payload["delta"])
    notes: list[str] = []
    if final is not None:
        result = final
        complete = final.get("status") != "failed"
        if not complete:
            notes.append(f"response failed: {error_message(final.get('error'))}")
    else:
        result = dict(base)
        result["output"] = _rebuild_output(items, texts, arguments)
        result["status"] = "incomplete"
        complete = False
        if error is None:
            notes.append(f"stream cut: ended before response.completed after {events} events")
    if error is not None:
        result["error"] = error
        notes.append(f"upstream error event in stream: {error_message(error)}")
        complete = False
    if unparsable:
        notes.append(f"{unparsable} stream events were not JSON objects")
    return Assembled(
        result,
        parse_usage(result.get("usage")),
        responses_finish_reason(result) if final is not None else None,
        string_or_none(result.get("model")),
        complete,
        "; ".join(notes) or None,
    )


def _rebuild_output(
    items: dict[int, dict[str, Any]],
    texts: dict[tuple[int, int], list[str]],
    arguments: dict[int, list[str]],
) -> list[dict[str, Any]]:
    """Output items of a stream that stopped short, with the text and arguments that arrived."""
    output: list[dict[str, Any]] = []
    for index in sorted(set(items) | {i for i, _ in texts} | set(arguments)):
        item = dict(items.get(index) or {"type": "message", "role": "assistant", "content": []})
        if item.get("status") != "completed":
            if index in arguments and item.get("type") == "function_call":
                item["arguments"] = "".join(arguments[index])
            parts = sorted((p, "".join(t)) for (i, p), t in texts.items() if i == index)
            if parts:
                item["content"] = [{"type": "output_text", "text": text} for _, text in parts]
        output.append(item)
    return output


def assemble_stream(
    endpoint: str, chunks: Iterable[bytes], upstream_api: str = "openai"
) -> Assembled:
    """The assembled answer of a stream to ``endpoint`` (chat, completions, responses or
    messages), from an upstream speaking ``upstream_api`` ("anthropic": Anthropic's events,
    assembled into its Message; "openai" and "azure": OpenAI's chunks)."""
    if upstream_api == "anthropic":
        return assemble_anthropic(chunks)
    if endpoint in ("chat", "messages"):  # an Anthropic client's call to an OpenAI upstream
        return assemble_chat(chunks)
    if endpoint == "completions":
        return assemble_completions(chunks)
    if endpoint == "responses":
        return assemble_responses(chunks)
    events = parse_events(chunks)
    return Assembled(
        {"events": [e.data.decode("utf-8", "replace") for e in events][:10_000]},
        note=None if events else "stream with no events",
        complete=bool(events),
    )
