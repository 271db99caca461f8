"""Turning raw upstream responses into what is stored: the answer, its usage and finish reason.

Streams arrive as the upstream's raw server-sent-event bytes, split anywhere. They are joined,
framed into events and assembled into the object the same call would have returned without
streaming: for chat, one ``chat.completion`` with each choice's message (content concatenated,
tool calls merged from their deltas by index, refusal), finish reason and the usage chunk's
usage; for completions, a ``text_completion``; for the Responses API, the final ``response``
object (or what can be rebuilt from the deltas when the stream stopped short); for an Anthropic
upstream (``upstream_api`` "anthropic", whatever the client's dialect), its ``Message`` with each
content block rebuilt from its deltas (tool inputs from their JSON fragments).

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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

JSON = Any


@dataclass(slots=True)
class Usage:
    prompt_tokens: int | None = None
    """Input tokens, cached ones included."""
    completion_tokens: int | None = None
    """Output tokens, reasoning tokens included."""
    cached_tokens: int | None = None
    """Input tokens read from the provider's prompt cache."""
    cache_write_tokens: int | None = None
    """Input tokens written to the provider's prompt cache (Anthropic bills them above the input
    price); 0 when the usage does not report any (OpenAI's never does)."""


@dataclass(slots=True)
class Assembled:
    response: JSON
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    """The first choice's; the stored response has every choice's."""
    model: str | None = None
    complete: bool = True
    note: str | None = None
    """What was wrong with the stream (error event, cut short, unparsable events)."""


@dataclass(slots=True)
class Event:
    name: str | None
    data: bytes


# --- server-sent events ---------------------------------------------------------------------


def _frame(raw: bytes) -> Iterator[tuple[str | None, bytes]]:
    """(event name, data) of each event in ``raw``; the last may lack its blank line."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for block in raw.split(b"\n\n"):
        if block.startswith(b"data: ") and b"\n" not in block:
            yield None, block[6:]  # the common case: one data line
            continue
        name: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            key, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if key == b"data":
                data.append(value)
            elif key == b"event":
                name = value.decode("utf-8", "replace")
        if data:
            yield name, b"\n".join(data)


def parse_events(chunks: Iterable[bytes]) -> list[Event]:
    """The events of an SSE byte stream, split anywhere into ``chunks``."""
    return [Event(name, data) for name, data in _frame(b"".join(chunks))]


def _datas(chunks: Iterable[bytes]) -> list[bytes]:
    """The data of each event, for streams whose event names do not matter (chat)."""
    raw = b"".join(chunks)
    if raw.startswith(b"data: ") and raw.endswith(b"\n\n") and b"\r" not in raw:
        # The usual stream, nothing but "data: ...\n\n" events: split it in C.
        datas = raw[6:-2].split(b"\n\ndata: ")
        if raw.count(b"\n") == 2 * len(datas):
            return datas
    return [data for _, data in _frame(raw)]


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
        return [_load(data) for data in datas], done


def _load(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str):
            return message
    return str(error)[:500]


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
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    if prompt is None:
        prompt = _int(usage.get("input_tokens"))
        completion = _int(usage.get("output_tokens"))
        details = usage.get("input_tokens_details")
    if prompt is None and completion is None:
        return Usage()
    cached = written = None
    if isinstance(details, dict):
        cached = _int(details.get("cached_tokens"))
        # What the gateway's translation of a Claude answer for an OpenAI client carries.
        written = _int(details.get("cache_creation_input_tokens"))
    if completion is None:
        completion = 0  # embeddings report prompt tokens only
    return Usage(prompt, completion, cached if cached is not None else 0, written if written else 0)


def parse_anthropic_usage(usage: Any) -> Usage:
    """An Anthropic Message's usage in OpenAI's terms: ``prompt_tokens`` counts every input
    token (uncached, written to the cache and read from it, as OpenAI's counts cached ones),
    ``cached_tokens`` the cache reads, ``cache_write_tokens`` the cache writes."""
    if not isinstance(usage, dict):
        return Usage()
    uncached = _int(usage.get("input_tokens"))
    output = _int(usage.get("output_tokens"))
    written = _int(usage.get("cache_creation_input_tokens")) or 0
    read = _int(usage.get("cache_read_input_tokens")) or 0
    if uncached is None and output is None and not written and not read:
        return Usage()
    return Usage((uncached or 0) + written + read, output or 0, read, written)


ANTHROPIC_FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic's ``stop_reason`` as the chat finish reason the dashboards and the exporter use;
a reason not listed is kept as it came."""


def anthropic_finish_reason(stop_reason: Any) -> str | None:
    if not isinstance(stop_reason, str):
        return None
    return ANTHROPIC_FINISH_REASONS.get(stop_reason, stop_reason)


def is_anthropic_message(body: Any) -> bool:
    return isinstance(body, dict) and body.get("type") == "message"


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
        return "length" if reason == "max_output_tokens" else _str(reason) or "incomplete"
    return _str(status)


def summarize(endpoint: str, body: JSON) -> Assembled:
    """Usage, finish reason and model of a parsed non-stream response body."""
    if not isinstance(body, dict):
        return Assembled(body)
    if body.get("type") == "message":  # an Anthropic Message (the upstream's dialect)
        return Assembled(
            body,
            parse_anthropic_usage(body.get("usage")),
            anthropic_finish_reason(body.get("stop_reason")),
            _str(body.get("model")),
        )
    if endpoint == "responses" or body.get("object") == "response":
        finish = responses_finish_reason(body)
    else:
        finish = None
        choices = body.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            finish = _str(choices[0].get("finish_reason"))
    return Assembled(body, parse_usage(body.get("usage")), finish, _str(body.get("model")))


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
        notes.append(f"upstream error event in stream: {_error_message(error)}")
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
        _str(head.get("model")),
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
        payload = _load(event.data)
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
            notes.append(f"response failed: {_error_message(final.get('error'))}")
    else:
        result = dict(base)
        result["output"] = _rebuild_output(items, texts, arguments)
        result["status"] = "incomplete"
        complete = False
        if error is None:
            notes.append(f"stream cut: ended before response.completed after {events} events")
    if error is not None:
        result["error"] = error
        notes.append(f"upstream error event in stream: {_error_message(error)}")
        complete = False
    if unparsable:
        notes.append(f"{unparsable} stream events were not JSON objects")
    return Assembled(
        result,
        parse_usage(result.get("usage")),
        responses_finish_reason(result) if final is not None else None,
        _str(result.get("model")),
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


# --- Anthropic Messages streams ---------------------------------------------------------------


@dataclass(slots=True)
class _Block:
    block: dict[str, Any]
    """The ``content_block`` of its ``content_block_start`` (a copy), completed at the end."""
    texts: list[str] | None = None
    partial_json: list[str] | None = None
    thinking: list[str] | None = None
    signature: list[str] | None = None


_BLOCK_DELTAS = {
    "text_delta": ("text", "texts"),
    "input_json_delta": ("partial_json", "partial_json"),
    "thinking_delta": ("thinking", "thinking"),
    "signature_delta": ("signature", "signature"),
}
"""Delta type -> (the delta's field, the ``_Block`` list it is gathered in)."""


def _anthropic_payloads(chunks: Iterable[bytes]) -> list[tuple[str | None, Any]]:
    """(type, payload) of each event of an Anthropic SSE stream; the payload None when its data
    is not JSON. The type is the payload's own, else the ``event:`` line's."""
    names, datas = _named_datas(b"".join(chunks))
    try:
        payloads: list[Any] = orjson.loads(b"[" + b",".join(datas) + b"]")
    except orjson.JSONDecodeError:
        payloads = [_load(data) for data in datas]
    typed: list[tuple[str | None, Any]] = []
    for name, payload in zip(names, payloads, strict=True):
        kind = payload.get("type") if isinstance(payload, dict) else None
        typed.append((kind if isinstance(kind, str) else name, payload))
    return typed


def _named_datas(raw: bytes) -> tuple[list[str | None], list[bytes]]:
    """The event names and data of an SSE stream; fast for Anthropic's usual
    ``event: NAME\ndata: JSON\n\n`` events, the general framing otherwise."""
    if raw.endswith(b"\n\n") and b"\r" not in raw:
        names: list[str | None] = []
        datas: list[bytes] = []
        for block in raw[:-2].split(b"\n\n"):
            head, _, data = block.partition(b"\n")
            if not head.startswith(b"event: ") or not data.startswith(b"data: ") or b"\n" in data:
                break
            names.append(head[7:].decode("utf-8", "replace"))
            datas.append(data[6:])
        else:
            return names, datas
    events = list(_frame(raw))
    return [name for name, _ in events], [data for _, data in events]


def _block_of(blocks: dict[int, _Block], payload: dict[str, Any]) -> _Block | None:
    index = payload.get("index")
    return blocks.get(index) if isinstance(index, int) else None


def _finish_block(index: int, block: _Block, notes: list[str]) -> dict[str, Any]:
    content = block.block
    kind = content.get("type")
    if block.texts is not None:
        content["text"] = str(content.get("text") or "") + "".join(block.texts)
    if block.thinking is not None:
        content["thinking"] = str(content.get("thinking") or "") + "".join(block.thinking)
    if block.signature is not None:
        content["signature"] = block.signature[-1]  # sent whole, in one delta
    if block.partial_json is not None:
        joined = "".join(block.partial_json)
        if joined.strip():
            try:
                content["input"] = orjson.loads(joined)
            except orjson.JSONDecodeError:
                content["input"] = joined
                notes.append(f"content block {index} ({kind}): its input is not JSON, kept as text")
    return content


def assemble_anthropic(chunks: Iterable[bytes]) -> Assembled:
    """The Anthropic ``Message`` of a streamed Messages API answer, or what arrived of it.

    ``message_start`` gives the message; each content block is its ``content_block_start``'s
    block with its deltas applied (``text_delta`` text, ``thinking_delta`` and
    ``signature_delta`` for thinking, ``input_json_delta`` fragments joined and parsed into
    ``input``; fragments that do not parse are kept as the string, with a note);
    ``message_delta`` sets ``stop_reason``/``stop_sequence`` (and any other field it carries)
    and updates the usage (its counts are cumulative totals, and overwrite). Without
    ``message_stop``, or with an ``error`` event, ``complete`` is False and the note says why.
    """
    message: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    blocks: dict[int, _Block] = {}
    error: Any = None
    stopped = False
    unparsable = 0
    notes: list[str] = []
    typed = _anthropic_payloads(chunks)
    for kind, payload in typed:
        if not isinstance(payload, dict):
            unparsable += 1
            continue
        if kind == "content_block_delta":
            block = _block_of(blocks, payload)
            delta = payload.get("delta")
            if block is None or not isinstance(delta, dict):
                continue
            delta_type = delta.get("type")
            gathered = _BLOCK_DELTAS.get(delta_type) if isinstance(delta_type, str) else None
            if gathered is None:
                if delta_type == "citations_delta" and "citation" in delta:
                    block.block.setdefault("citations", []).append(delta["citation"])
                continue
            field_name, attribute = gathered
            value = delta.get(field_name)
            if isinstance(value, str):
                parts = getattr(block, attribute)
                if parts is None:
                    setattr(block, attribute, [value])
                else:
                    parts.append(value)
        elif kind == "content_block_start":
            index = payload.get("index")
            content = payload.get("content_block")
            if isinstance(index, int) and isinstance(content, dict):
                blocks[index] = _Block(dict(content))
        elif kind == "message_start":
            start = payload.get("message")
            if isinstance(start, dict):
                message = dict(start)
                if isinstance(start.get("usage"), dict):
                    usage.update(start["usage"])
        elif kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict):
                for key, value in delta.items():
                    if value is not None or key in ("stop_reason", "stop_sequence"):
                        message[key] = value
            if isinstance(payload.get("usage"), dict):
                usage.update({k: v for k, v in payload["usage"].items() if v is not None})
        elif kind == "message_stop":
            stopped = True
        elif kind == "error":
            error = payload.get("error", payload)
    message.setdefault("type", "message")
    message.setdefault("role", "assistant")
    message["content"] = [_finish_block(i, blocks[i], notes) for i in sorted(blocks)]
    if usage:
        message["usage"] = usage
    complete = True
    if error is not None:
        message["error"] = error
        notes.insert(0, f"upstream error event in stream: {_error_message(error)}")
        complete = False
    elif not stopped:
        notes.insert(0, f"stream cut: ended before message_stop after {len(typed)} events")
        complete = False
    if unparsable:
        notes.append(f"{unparsable} stream events were not JSON objects")
    return Assembled(
        message,
        parse_anthropic_usage(usage),
        anthropic_finish_reason(message.get("stop_reason")),
        _str(message.get("model")),
        complete,
        "; ".join(notes) or None,
    )


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
