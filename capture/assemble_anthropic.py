"""Anthropic answers in the capture's terms: a ``Message``'s usage (``prompt_tokens`` = every
input token: uncached, cache writes and cache reads; ``cached_tokens`` = reads,
``cache_write_tokens`` = writes) and stop reason as the chat finish reason
(``ANTHROPIC_FINISH_REASONS``), and an Anthropic SSE stream assembled into its ``Message``
(each content block rebuilt from its deltas, tool inputs from their JSON fragments; no
``message_stop`` or an ``error`` event: ``complete=False`` with a note)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from capture.events import (
    Assembled,
    Usage,
    error_message,
    frame,
    load_json,
    non_negative_int,
    string_or_none,
)


def parse_anthropic_usage(usage: Any) -> Usage:
    """An Anthropic Message's usage in OpenAI's terms: ``prompt_tokens`` counts every input
    token (uncached, written to the cache and read from it, as OpenAI's counts cached ones),
    ``cached_tokens`` the cache reads, ``cache_write_tokens`` the cache writes."""
    if not isinstance(usage, dict):
        return Usage()
    uncached = non_negative_int(usage.get("input_tokens"))
    output = non_negative_int(usage.get("output_tokens"))
    written = non_negative_int(usage.get("cache_creation_input_tokens")) or 0
    read = non_negative_int(usage.get("cache_read_input_tokens")) or 0
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
        payloads = [load_json(data) for data in datas]
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
    events = list(frame(raw))
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
        notes.insert(0, f"upstream error event in stream: {error_message(error)}")
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
        string_or_none(message.get("model")),
        complete,
        "; ".join(notes) or None,
    )
