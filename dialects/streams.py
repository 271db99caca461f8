"""Streams translated event by event, both ways: Anthropic Messages SSE <-> OpenAI chat chunks.

Both classes have the interface of ``gateway.streaming.UsageStripper``: ``feed(chunk)`` takes the
upstream's bytes split anywhere and returns the translated bytes to send now (complete events
only; a partial event is held back), ``flush()`` at the upstream's end, ``usage`` once known and
``ended`` once the upstream's end-of-stream event was seen and translated.

Events are framed with ``bytes.find``, each event's data is decoded once (orjson) and the output
is built from pre-encoded prefixes, so the cost per event is one parse and one small dump.

Anthropic -> OpenAI: message_start gives the first chunk (``role``), text_delta -> ``content``,
thinking_delta -> ``reasoning_content``, a tool_use block -> a first ``tool_calls`` delta with
index, id, type, name and ``arguments: ""``, then each input_json_delta's fragment as it comes
(a tool call whose arguments never came gets ``"{}"`` at its block's end, so it parses);
message_delta -> the chunk with ``finish_reason`` (and vLLM's ``stop_reason`` for a matched stop
sequence); message_stop -> the usage chunk (``choices: []``, when asked) and ``[DONE]``. Usage is
Anthropic's input tokens from message_start with the output tokens (and any later input counts)
of message_delta. ``ping`` and signature/citation deltas give nothing. An ``error`` event becomes
OpenAI's ``data: {"error": ...}``.

OpenAI -> Anthropic: the first chunk gives message_start; ``reasoning_content`` (or
``reasoning``), ``content`` (and ``refusal``) and ``tool_calls`` open thinking, text and
tool_use blocks, each stopped when another begins; fragments of tool arguments are
input_json_delta events as they come. The finish_reason closes the last block; message_delta
waits for the usage chunk that follows it (or ``[DONE]``) so its usage is right, and ``[DONE]``
gives message_stop. An upstream ``{"error": ...}`` event becomes Anthropic's ``event: error``,
which ends the translation as Anthropic's own error events end its streams (vLLM sends
``[DONE]`` after its error chunk: no message_stop follows).
Anthropic blocks cannot interleave: a fragment for a tool call whose block was already stopped
(no known server sends one) ends the translation with an error event instead of losing it.

A stream whose end-of-message event came (message_delta, or a finish_reason) but whose final
event did not is completed by ``flush``; one cut earlier is not, and ``ended`` stays False so
the caller can send its own error event.
"""

from __future__ import annotations

from typing import Any

import orjson

from dialects.errors import (
    anthropic_error_event,
    anthropic_error_from_openai_payload,
    openai_error_from_anthropic_payload,
)
from dialects.responses import FINISH_REASONS, anthropic_usage, openai_usage, stop_reason, string

_SEPARATOR = b"\n\n"
_DONE = b"data: [DONE]\n\n"
_CHOICE_END = b',"logprobs":null,"finish_reason":null}]}\n\n'
_NOT_JSON = "The upstream sent a stream event that is not JSON."


def _data(block: bytes) -> bytes | None:
    """The data of one SSE event (its ``data:`` lines joined), None when it has none."""
    if block.startswith(b"data:"):
        payload = block[5:]
    else:
        at = block.find(b"\ndata:")
        if at < 0:
            return None
        payload = block[at + 6 :]
    if b"\n" not in payload:
        return payload[1:] if payload[:1] == b" " else payload
    lines = [line[5:] for line in block.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)


class AnthropicToOpenAIStream:
    """Anthropic Messages SSE bytes in, OpenAI chat completion chunks out."""

    def __init__(self, *, include_usage: bool, model: str | None = None, created: int = 0) -> None:
        self.ended = False
        self.usage: dict[str, Any] | None = None
        self._include_usage = include_usage
        self._model = model
        self._created = created
        self._pending = b""
        self._head = b""  # b'data: {"id":...,"object":...,"created":...,"model":...'
        self._delta = b""  # the head with the one choice's opening, up to its delta
        self._tool_index: dict[int, int] = {}  # a tool_use block's index -> its OpenAI index
        self._tool_args: dict[int, bool] = {}  # whether any arguments went out for that block
        self._anthropic_usage: dict[str, Any] = {}
        self._finished = False  # the finish_reason chunk went out

    def feed(self, chunk: bytes) -> bytes:
        """The OpenAI chunks to send now, given the next bytes from the upstream."""
        data = self._pending + chunk if self._pending else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.find(_SEPARATOR)
        if end < 0:
            self._pending = data
            return b""
        out: list[bytes] = []
        start = 0
        while end >= 0:
            self._event(data[start:end], out)
            start = end + 2
            end = data.find(_SEPARATOR, start)
        self._pending = data[start:]
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever the held bytes still give, at the upstream's end."""
        rest, self._pending = self._pending, b""
        out: list[bytes] = []
        if rest.strip():
            self._event(rest.rstrip(b"\r\n"), out)
        if not self.ended and self._finished:
            self._stop(out)
        return b"".join(out)

    # ------------------------------------------------------------------ events

    def _event(self, event: bytes, out: list[bytes]) -> None:
        data = _data(event)
        if data is None or self.ended:
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            if data.strip():
                out.append(_openai_error(_NOT_JSON))
            return
        if type(payload) is not dict:
            return
        kind = payload.get("type")
        if kind == "content_block_delta":
            delta = payload.get("delta")
            if type(delta) is dict and delta.get("type") == "text_delta" and self._delta:
                text = delta.get("text")  # nearly every event: inline
                if text and isinstance(text, str):
                    out.append(
                        self._delta + b'{"content":' + orjson.dumps(text) + b"}" + _CHOICE_END
                    )
            else:
                self._block_delta(payload, out)
        elif kind == "content_block_start":
            self._block_start(payload, out)
        elif kind == "content_block_stop":
            index = payload.get("index")
            if isinstance(index, int) and index in self._tool_index and not self._tool_args[index]:
                self._tool_args[index] = True  # no arguments came: say {} so they parse
                out.append(self._arguments(self._tool_index[index], "{}"))
        elif kind == "message_start":
            self._message_start(payload, out)
        elif kind == "message_delta":
            self._message_delta(payload, out)
        elif kind == "message_stop":
            if not self.ended:
                self._stop(out)
        elif kind == "error":
            out.append(b"data: " + orjson.dumps(openai_error_from_anthropic_payload(payload)))
            out.append(_SEPARATOR)

    def _start_head(self, message_id: Any, model: Any) -> None:
        model = self._model if self._model is not None else model
        self._head = (
            b'data: {"id":'
            + orjson.dumps(message_id if isinstance(message_id, str) else "")
            + b',"object":"chat.completion.chunk","created":'
            + str(int(self._created)).encode()
            + b',"model":'
            + orjson.dumps(model if isinstance(model, str) else "")
        )
        self._delta = self._head + b',"choices":[{"index":0,"delta":'

    def _message_start(self, payload: dict[str, Any], out: list[bytes]) -> None:
        message = payload.get("message")
        if not isinstance(message, dict):
            message = {}
        self._start_head(message.get("id"), message.get("model"))
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._anthropic_usage.update(usage)
            self.usage = openai_usage(self._anthropic_usage)
        out.append(self._delta + b'{"role":"assistant","content":""}' + _CHOICE_END)

    def _chunk(self, delta: bytes) -> bytes:
        if not self._delta:
            self._start_head("", "")
        return self._delta + delta + _CHOICE_END

    def _arguments(self, tool_index: int, fragment: str) -> bytes:
        return self._chunk(
            b'{"tool_calls":[{"index":'
            + str(tool_index).encode()
            + b',"function":{"arguments":'
            + orjson.dumps(fragment)
            + b"}}]}"
        )

    def _block_start(self, payload: dict[str, Any], out: list[bytes]) -> None:
        index = payload.get("index")
        block = payload.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                out.append(self._chunk(b'{"content":' + orjson.dumps(text) + b"}"))
        elif kind == "tool_use":
            tool_index = len(self._tool_index)
            self._tool_index[index] = tool_index
            self._tool_args[index] = False
            call = {
                "index": tool_index,
                "id": string(block.get("id"), f"toolu_{index}"),
                "type": "function",
                "function": {"name": string(block.get("name")), "arguments": ""},
            }
            out.append(self._chunk(orjson.dumps({"tool_calls": [call]})))
            given = block.get("input")
            if isinstance(given, dict) and given:  # the whole input at once (not Anthropic's way)
                self._tool_args[index] = True
                out.append(self._arguments(tool_index, orjson.dumps(given).decode()))
        elif kind == "thinking":
            text = block.get("thinking")
            if isinstance(text, str) and text:
                out.append(self._chunk(b'{"reasoning_content":' + orjson.dumps(text) + b"}"))
        # redacted thinking and server tool blocks have nothing to say in OpenAI's dialect

    def _block_delta(self, payload: dict[str, Any], out: list[bytes]) -> None:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                out.append(self._chunk(b'{"content":' + orjson.dumps(text) + b"}"))
        elif kind == "input_json_delta":
            fragment = delta.get("partial_json")
            index = payload.get("index")
            if isinstance(fragment, str) and fragment and isinstance(index, int):
                tool_index = self._tool_index.get(index)
                if tool_index is not None:
                    self._tool_args[index] = True
                    out.append(self._arguments(tool_index, fragment))
        elif kind == "thinking_delta":
            text = delta.get("thinking")
            if isinstance(text, str) and text:
                out.append(self._chunk(b'{"reasoning_content":' + orjson.dumps(text) + b"}"))

    def _message_delta(self, payload: dict[str, Any], out: list[bytes]) -> None:
        usage = payload.get("usage")
        if isinstance(usage, dict):
            for key, value in usage.items():
                if value is not None:
                    self._anthropic_usage[key] = value
            self.usage = openai_usage(self._anthropic_usage)
        delta = payload.get("delta")
        if not isinstance(delta, dict) or self._finished:
            return
        reason = delta.get("stop_reason")
        if reason is None:
            return
        finish = FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"
        sequence = delta.get("stop_sequence")
        matched = sequence if reason == "stop_sequence" and isinstance(sequence, str) else None
        out.append(self._finish_chunk(finish, matched))

    def _finish_chunk(self, finish: str, matched: str | None) -> bytes:
        self._finished = True
        if not self._delta:
            self._start_head("", "")
        end = b',"logprobs":null,"finish_reason":"' + finish.encode() + b'"'
        if matched is not None:
            end += b',"stop_reason":' + orjson.dumps(matched)  # where vLLM reports it
        return self._delta + b"{}" + end + b"}]}\n\n"

    def _stop(self, out: list[bytes]) -> None:
        if not self._finished:
            out.append(self._finish_chunk("stop", None))
        if self.usage is None:
            self.usage = openai_usage(self._anthropic_usage)
        if self._include_usage:
            if not self._head:
                self._start_head("", "")
            out.append(self._head + b',"choices":[],"usage":' + orjson.dumps(self.usage) + b"}\n\n")
        out.append(_DONE)
        self.ended = True


def _openai_error(message: str) -> bytes:
    error = {"message": message, "type": "server_error", "param": None, "code": "api_error"}
    return b"data: " + orjson.dumps({"error": error}) + _SEPARATOR


class OpenAIToAnthropicStream:
    """OpenAI chat completion chunks in, Anthropic Messages SSE events out."""

    def __init__(self, *, model: str | None = None, message_id: str | None = None) -> None:
        self.ended = False
        self.usage: dict[str, Any] | None = None
        self._model = model
        self._message_id = message_id
        self._pending = b""
        self._started = False
        self._failed = False
        self._index = -1  # the current Anthropic block's index
        self._open: str | None = None  # the open block's kind: text, thinking or tool
        self._block_delta = b""  # b'event: content_block_delta\ndata: {...,"index":N,"delta":'
        self._open_tool: Any = None  # the OpenAI index of the open tool call
        self._tools: dict[Any, bool] = {}  # OpenAI tool index -> whether arguments went out
        self._tool_ids: dict[str, Any] = {}
        self._finish: Any = None
        self._matched: Any = None
        self._refused = False
        self._usage_seen = False
        self._delta_sent = False

    def feed(self, chunk: bytes) -> bytes:
        """The Anthropic events to send now, given the next bytes from the upstream."""
        data = self._pending + chunk if self._pending else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.find(_SEPARATOR)
        if end < 0:
            self._pending = data
            return b""
        out: list[bytes] = []
        start = 0
        while end >= 0 and not self._failed:
            self._event(data[start:end], out)
            start = end + 2
            end = data.find(_SEPARATOR, start)
        self._pending = data[start:] if not self._failed else b""
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever the held bytes still give, at the upstream's end."""
        rest, self._pending = self._pending, b""
        out: list[bytes] = []
        if rest.strip() and not self._failed:
            self._event(rest.rstrip(b"\r\n"), out)
        if not self.ended and not self._failed and self._finish is not None:
            self._done(out)
        return b"".join(out)

    # ------------------------------------------------------------------ events

    def _event(self, event: bytes, out: list[bytes]) -> None:
        if event.startswith(b"data: {") and b"\n" not in event:  # nearly every event
            data = event[6:]
        else:
            found = _data(event)
            if found is None:
                return
            data = found
            if not data.startswith(b"{") and data.strip() == b"[DONE]":
                if not self.ended:
                    self._done(out)
                return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            if data.strip():
                out.append(anthropic_error_event("api_error", _NOT_JSON))
            return
        if type(payload) is not dict or self.ended:
            return
        choices = payload.get("choices")
        if not choices and "error" in payload:
            error_type, message = anthropic_error_from_openai_payload(payload)
            out.append(anthropic_error_event(error_type, message))
            self._failed = True  # an Anthropic stream ends at its error event: nothing follows
            return
        if not self._started:
            self._message_start(payload, out)
        usage = payload.get("usage")
        if usage and isinstance(usage, dict):
            self.usage = anthropic_usage(usage)
            self._usage_seen = True
        if choices and isinstance(choices, list):
            choice = choices[0]
            if isinstance(choice, dict):
                self._choice(choice, out)
        elif self._finish is not None and self._usage_seen and not self._delta_sent:
            self._message_delta(out)  # the usage chunk after the finish_reason

    def _message_start(self, payload: dict[str, Any], out: list[bytes]) -> None:
        self._started = True
        model = self._model if self._model is not None else payload.get("model")
        message_id = self._message_id if self._message_id is not None else payload.get("id")
        usage = payload.get("usage")
        start_usage = (
            {**anthropic_usage(usage), "output_tokens": 0}
            if isinstance(usage, dict)
            else {"input_tokens": 0, "output_tokens": 0}
        )
        message: dict[str, Any] = {
            "id": message_id if isinstance(message_id, str) else "",
            "type": "message",
            "role": "assistant",
            "model": model if isinstance(model, str) else "",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        out.append(
            _anthropic_event(b"message_start", {"type": "message_start", "message": message})
        )

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta")
        if delta and isinstance(delta, dict):
            for key, value in delta.items():
                if not value:
                    continue
                if key == "content":
                    if isinstance(value, str):
                        self._text(value, out)
                elif key == "reasoning_content" or key == "reasoning":
                    if key == "reasoning" and delta.get("reasoning_content"):
                        continue  # vLLM sends both names with the same text
                    if isinstance(value, str):
                        self._thinking(value, out)
                elif key == "tool_calls":
                    if isinstance(value, list):
                        for call in value:
                            if isinstance(call, dict):
                                self._tool_call(call, out)
                                if self._failed:
                                    return
                elif key == "refusal" and isinstance(value, str):
                    self._refused = True
                    self._text(value, out)
        finish = choice.get("finish_reason")
        if finish is not None and self._finish is None:
            self._finish = finish
            self._matched = choice.get("stop_reason")
            self._close_block(out)

    def _thinking(self, text: str, out: list[bytes]) -> None:
        if self._open != "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
            self._open_block(out, "thinking", block)
        out.append(
            self._block_delta
            + b'{"type":"thinking_delta","thinking":'
            + orjson.dumps(text)
            + b"}}\n\n"
        )

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open != "text":
            self._open_block(out, "text", {"type": "text", "text": ""})
        out.append(
            self._block_delta + b'{"type":"text_delta","text":' + orjson.dumps(text) + b"}}\n\n"
        )

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        key = call.get("index")
        if not isinstance(key, int | str):
            key = None
        call_id = call.get("id")
        if key is None:  # servers that leave the index out: a new id is a new call
            if isinstance(call_id, str) and call_id and call_id not in self._tool_ids:
                key = f"id:{call_id}"
            else:
                key = self._open_tool
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        if key not in self._tools:
            self._close_block(out)
            if not isinstance(call_id, str) or not call_id:
                call_id = f"toolu_{self._index + 1}"
            self._tool_ids[call_id] = key
            name = function.get("name")
            block = {
                "type": "tool_use",
                "id": call_id,
                "name": name if isinstance(name, str) else "",
                "input": {},
            }
            self._open_block(out, "tool", block)
            self._open_tool = key
            self._tools[key] = False
        elif key != self._open_tool or self._open != "tool":
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                self._failed = True
                out.append(
                    anthropic_error_event(
                        "api_error",
                        "The upstream interleaved the arguments of several tool calls, "
                        "which Anthropic's stream events cannot carry.",
                    )
                )
            return
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self._tools[key] = True
            out.append(
                self._block_delta
                + b'{"type":"input_json_delta","partial_json":'
                + orjson.dumps(arguments)
                + b"}}\n\n"
            )

    def _open_block(self, out: list[bytes], kind: str, block: dict[str, Any]) -> None:
        self._close_block(out)
        self._index += 1
        self._open = kind
        index = str(self._index).encode()
        out.append(
            b'event: content_block_start\ndata: {"type":"content_block_start","index":'
            + index
            + b',"content_block":'
            + orjson.dumps(block)
            + b"}\n\n"
        )
        self._block_delta = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
            + index
            + b',"delta":'
        )

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        if self._open == "tool" and not self._tools.get(self._open_tool):
            self._tools[self._open_tool] = True  # no arguments came: say {} so it parses
            out.append(self._block_delta + b'{"type":"input_json_delta","partial_json":"{}"}}\n\n')
        out.append(
            b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
            + str(self._index).encode()
            + b"}\n\n"
        )
        self._open = None
        self._open_tool = None

    def _message_delta(self, out: list[bytes]) -> None:
        self._delta_sent = True
        reason, sequence = stop_reason(self._finish, self._matched)
        if self._refused and reason == "end_turn":
            reason = "refusal"
        usage: dict[str, Any] = (
            {
                "input_tokens": self.usage["input_tokens"],
                "cache_creation_input_tokens": self.usage["cache_creation_input_tokens"],
                "cache_read_input_tokens": self.usage["cache_read_input_tokens"],
                "output_tokens": self.usage["output_tokens"],
            }
            if self.usage is not None
            else {"output_tokens": 0}
        )
        out.append(
            _anthropic_event(
                b"message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": usage,
                },
            )
        )

    def _done(self, out: list[bytes]) -> None:
        if not self._started:
            self._message_start({}, out)
        self._close_block(out)
        if not self._delta_sent:
            self._message_delta(out)
        out.append(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        self.ended = True


def _anthropic_event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + _SEPARATOR
