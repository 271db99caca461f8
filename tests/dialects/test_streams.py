from __future__ import annotations

from typing import Any

import orjson

from dialects.responses import anthropic_message_to_openai_chat, openai_chat_to_anthropic_message
from dialects.streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from tests.dialects.sse import (
    anthropic_event,
    assemble_anthropic,
    assemble_openai,
    events,
    openai_chunk,
)


def a(payload: dict[str, Any]) -> bytes:
    return anthropic_event(payload["type"], payload)


def delta(index: int, **body: Any) -> bytes:
    return a({"type": "content_block_delta", "index": index, "delta": body})


def message_start(**usage: int) -> bytes:
    return a(
        {
            "type": "message_start",
            "message": {
                "id": "msg_01ABC",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage or {"input_tokens": 25, "output_tokens": 1},
            },
        }
    )


def message_end(
    stop: str = "end_turn", sequence: str | None = None, output: int = 42
) -> list[bytes]:
    return [
        a(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": sequence},
                "usage": {"output_tokens": output},
            }
        ),
        a({"type": "message_stop"}),
    ]


def anthropic_stream() -> list[bytes]:
    """Thinking, text before two tool calls (one with arguments in five pieces, one empty)."""
    return [
        message_start(
            input_tokens=25,
            cache_creation_input_tokens=3,
            cache_read_input_tokens=100,
            output_tokens=1,
        ),
        a({"type": "ping"}),
        a(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            }
        ),
        delta(0, type="thinking_delta", thinking="The user wants "),
        delta(0, type="thinking_delta", thinking="weather."),
        delta(0, type="signature_delta", signature="EqQBCgIYAhIM"),
        a({"type": "content_block_stop", "index": 0}),
        a(
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        delta(1, type="text_delta", text="I'll check "),
        delta(1, type="text_delta", text="the weather."),
        a({"type": "content_block_stop", "index": 1}),
        a(
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "weather",
                    "input": {},
                },
            }
        ),
        delta(2, type="input_json_delta", partial_json=""),
        delta(2, type="input_json_delta", partial_json='{"ci'),
        delta(2, type="input_json_delta", partial_json='ty": "Pa'),
        delta(2, type="input_json_delta", partial_json='ris", "unit'),
        delta(2, type="input_json_delta", partial_json='s": ["c", "f"]}'),
        a({"type": "content_block_stop", "index": 2}),
        a(
            {
                "type": "content_block_start",
                "index": 3,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_01B",
                    "name": "clock",
                    "input": {},
                },
            }
        ),
        delta(3, type="input_json_delta", partial_json=""),
        a({"type": "content_block_stop", "index": 3}),
        a({"type": "ping"}),
        *message_end("tool_use", output=42),
    ]


def completion_view(completion: dict[str, Any]) -> dict[str, Any]:
    """What a chat.completion says, whoever built it."""
    choice = completion["choices"][0]
    message = choice["message"]
    calls = message.get("tool_calls") or []
    return {
        "id": completion["id"],
        "model": completion["model"],
        "content": message.get("content") or "",
        "reasoning": message.get("reasoning_content") or "",
        "tool_calls": [
            (call["id"], call["function"]["name"], orjson.loads(call["function"]["arguments"]))
            for call in calls
        ],
        "finish_reason": choice["finish_reason"],
        "usage": completion.get("usage"),
    }


def message_view(message: dict[str, Any]) -> dict[str, Any]:
    """What an Anthropic Message says, whoever built it."""
    return {
        "id": message["id"],
        "model": message["model"],
        "content": [
            {k: v for k, v in block.items() if k not in ("signature", "citations")}
            for block in message["content"]
        ],
        "stop_reason": message["stop_reason"],
        "stop_sequence": message.get("stop_sequence"),
        "usage": {k: v for k, v in message["usage"].items() if v is not None},
    }


def translate_a2o(chunks: list[bytes], **kw: Any) -> tuple[bytes, AnthropicToOpenAIStream]:
    stream = AnthropicToOpenAIStream(**{"include_usage": True, **kw})
    out = b"".join(stream.feed(chunk) for chunk in chunks) + stream.flush()
    return out, stream


# ---------------------------------------------------------------- Anthropic -> OpenAI


def test_anthropic_stream_assembles_to_the_whole_translation() -> None:
    chunks = anthropic_stream()
    out, stream = translate_a2o(chunks, created=1700000000)
    assert stream.ended
    streamed = assemble_openai(out)
    whole = anthropic_message_to_openai_chat(
        assemble_anthropic(b"".join(chunks)), created=1700000000
    )
    assert completion_view(streamed) == completion_view(whole)
    assert completion_view(streamed)["tool_calls"] == [
        ("toolu_01A", "weather", {"city": "Paris", "units": ["c", "f"]}),
        ("toolu_01B", "clock", {}),
    ]
    assert streamed["usage"] == {
        "prompt_tokens": 128,
        "completion_tokens": 42,
        "total_tokens": 170,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_creation_input_tokens": 3},
    }
    assert stream.usage == streamed["usage"]


def test_the_openai_chunk_sequence() -> None:
    out, _ = translate_a2o(anthropic_stream())
    parsed = [payload for _, payload in events(out)]
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert parsed[-1] == "[DONE]"
    assert parsed[-2]["choices"] == [] and parsed[-2]["usage"]["completion_tokens"] == 42
    assert parsed[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(p["choices"][0]["finish_reason"] is None for p in parsed[:-3])
    assert all(
        p["id"] == "msg_01ABC" and p["object"] == "chat.completion.chunk" for p in parsed[:-1]
    )
    tool_deltas = [
        p["choices"][0]["delta"]["tool_calls"][0]
        for p in parsed[:-3]
        if "tool_calls" in p["choices"][0]["delta"]
    ]
    assert tool_deltas[0] == {
        "index": 0,
        "id": "toolu_01A",
        "type": "function",
        "function": {"name": "weather", "arguments": ""},
    }
    assert [d["function"]["arguments"] for d in tool_deltas[1:5]] == [
        '{"ci',
        'ty": "Pa',
        'ris", "unit',
        's": ["c", "f"]}',
    ]
    assert tool_deltas[5]["index"] == 1 and tool_deltas[5]["id"] == "toolu_01B"
    assert tool_deltas[6] == {"index": 1, "function": {"arguments": "{}"}}


def test_fed_byte_by_byte_or_whole_the_output_is_the_same() -> None:
    whole, _ = translate_a2o([b"".join(anthropic_stream())])
    pieces = b"".join(anthropic_stream())
    by_byte, stream = translate_a2o([pieces[i : i + 1] for i in range(len(pieces))])
    assert by_byte == whole and stream.ended
    crlf = pieces.replace(b"\n", b"\r\n")
    by_byte_crlf, _ = translate_a2o([crlf[i : i + 1] for i in range(len(crlf))])
    assert by_byte_crlf == whole


def test_model_override_and_no_usage_chunk_unless_asked() -> None:
    out, stream = translate_a2o(anthropic_stream(), include_usage=False, model="route-x")
    parsed = [payload for _, payload in events(out)]
    assert all(p == "[DONE]" or (p["choices"] and p["model"] == "route-x") for p in parsed)
    assert stream.usage is not None and stream.usage["completion_tokens"] == 42


def test_stop_sequence_refusal_pause_turn_and_max_tokens() -> None:
    text = [
        message_start(),
        a(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        delta(0, type="text_delta", text="1 2"),
        a({"type": "content_block_stop", "index": 0}),
    ]
    out, _ = translate_a2o([*text, *message_end("stop_sequence", "3")])
    finish = [
        p
        for _, p in events(out)
        if p != "[DONE]" and p["choices"] and p["choices"][0]["finish_reason"]
    ]
    assert finish[0]["choices"][0]["finish_reason"] == "stop"
    assert finish[0]["choices"][0]["stop_reason"] == "3"
    for stop, expected in [
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("end_turn", "stop"),
    ]:
        out, _ = translate_a2o([*text, *message_end(stop)])
        finishes = [
            p["choices"][0]["finish_reason"]
            for _, p in events(out)
            if p != "[DONE]" and p["choices"] and p["choices"][0]["finish_reason"]
        ]
        assert finishes == [expected]


def test_an_error_event_becomes_an_openai_error_and_the_stream_is_not_ended() -> None:
    chunks = [
        message_start(),
        a(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        delta(0, type="text_delta", text="Hel"),
        anthropic_event(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
    ]
    out, stream = translate_a2o(chunks)
    assert not stream.ended
    last = events(out)[-1][1]
    assert last == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded_error",
        }
    }


def test_a_cut_stream_is_not_ended_but_a_finished_one_is_completed() -> None:
    start = [
        message_start(),
        a(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        delta(0, type="text_delta", text="Hel"),
    ]
    out, stream = translate_a2o(start)
    assert not stream.ended and b"[DONE]" not in out and b'finish_reason":"' not in out
    # the last event without its blank line is still read at the end
    partial = delta(0, type="text_delta", text="lo")[:-2]
    out, stream = translate_a2o([*start, partial])
    assert b'"content":"lo"' in out and not stream.ended
    # message_delta came, message_stop did not: the answer is whole
    out, stream = translate_a2o([*start, message_end()[0]])
    assert stream.ended and out.endswith(b"data: [DONE]\n\n")
    assert assemble_openai(out)["choices"][0]["message"]["content"] == "Hel"


def test_message_delta_usage_may_carry_input_counts() -> None:
    chunks = [
        message_start(input_tokens=0, output_tokens=0),
        a(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"input_tokens": 7, "cache_read_input_tokens": 2, "output_tokens": 3},
            }
        ),
        a({"type": "message_stop"}),
    ]
    _, stream = translate_a2o(chunks)
    assert stream.usage == {
        "prompt_tokens": 9,
        "completion_tokens": 3,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 2, "cache_creation_input_tokens": 0},
    }


def test_garbage_and_unknown_events() -> None:
    out, stream = translate_a2o(
        [b": comment\n\n", b'event: weird\ndata: {"type":"weird"}\n\n', b"data: {not json\n\n"]
    )
    assert not stream.ended
    assert [p for _, p in events(out)] == [
        {
            "error": {
                "message": "The upstream sent a stream event that is not JSON.",
                "type": "server_error",
                "param": None,
                "code": "api_error",
            }
        }
    ]


# ---------------------------------------------------------------- OpenAI -> Anthropic


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    payload: dict[str, Any] = {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}],
        **extra,
    }
    return openai_chunk(payload)


def usage_chunk(prompt: int = 50, completion: int = 20, cached: int = 10) -> bytes:
    return openai_chunk(
        {
            "id": "chatcmpl-9",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o",
            "choices": [],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        }
    )


def tool(
    index: int, arguments: str, id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id is not None:
        call.update(id=id, type="function")
        call["function"]["name"] = name
    return call


def openai_stream() -> list[bytes]:
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Think"}),
        chunk({"reasoning_content": "ing."}),
        chunk({"content": "Checking "}),
        chunk({"content": "now."}),
        chunk({"tool_calls": [tool(0, "", "toolu_01A", "weather")]}),
        chunk({"tool_calls": [tool(0, '{"ci')]}),
        chunk({"tool_calls": [tool(0, 'ty": "Paris"}')]}),
        chunk({"tool_calls": [tool(1, '{"tz": "UTC"}', "call_B", "clock")]}),
        chunk({"tool_calls": [tool(2, "", "call_C", "noargs")]}),
        chunk({}, "tool_calls"),
        usage_chunk(),
        openai_chunk("[DONE]"),
    ]


def translate_o2a(chunks: list[bytes], **kw: Any) -> tuple[bytes, OpenAIToAnthropicStream]:
    stream = OpenAIToAnthropicStream(**kw)
    out = b"".join(stream.feed(chunk) for chunk in chunks) + stream.flush()
    return out, stream


def test_openai_stream_assembles_to_the_whole_translation() -> None:
    chunks = openai_stream()
    out, stream = translate_o2a(chunks)
    assert stream.ended
    streamed = assemble_anthropic(out)
    whole = openai_chat_to_anthropic_message(assemble_openai(b"".join(chunks)))
    assert message_view(streamed) == message_view(whole)
    assert message_view(streamed)["content"] == [
        {"type": "thinking", "thinking": "Thinking."},
        {"type": "text", "text": "Checking now."},
        {"type": "tool_use", "id": "toolu_01A", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_B", "name": "clock", "input": {"tz": "UTC"}},
        {"type": "tool_use", "id": "call_C", "name": "noargs", "input": {}},
    ]
    assert streamed["usage"] == {
        "input_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 10,
        "output_tokens": 20,
    }
    assert stream.usage == streamed["usage"]


def test_the_anthropic_event_sequence() -> None:
    out, _ = translate_o2a(openai_stream(), model="claude-route", message_id="msg_gw")
    names = [name for name, _ in events(out)]
    assert names == [
        "message_start",
        *["content_block_start", "content_block_delta", "content_block_delta", "content_block_stop"]
        * 2,
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",  # the {} of a call whose arguments never came
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events(out)[0][1]["message"]
    assert start["id"] == "msg_gw" and start["model"] == "claude-route"
    indexes = [p["index"] for n, p in events(out) if n == "content_block_start"]
    assert indexes == [0, 1, 2, 3, 4]


def test_message_delta_waits_for_the_usage_chunk() -> None:
    stream = OpenAIToAnthropicStream()
    chunks = openai_stream()
    before = b"".join(stream.feed(c) for c in chunks[:-2])
    assert b"message_delta" not in before and b"content_block_stop" in before
    after_usage = stream.feed(chunks[-2])
    assert events(after_usage)[0][1]["usage"]["input_tokens"] == 40
    assert not stream.ended
    assert stream.feed(chunks[-1]) == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert stream.ended


def test_without_a_usage_chunk_message_delta_comes_with_done() -> None:
    out, stream = translate_o2a(
        [chunk({"content": "hi"}), chunk({}, "stop"), openai_chunk("[DONE]")]
    )
    name, payload = events(out)[-2]
    assert name == "message_delta"
    assert payload["usage"] == {"output_tokens": 0}
    assert payload["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert stream.ended and stream.usage is None


def test_fed_byte_by_byte_or_whole_the_events_are_the_same() -> None:
    whole, _ = translate_o2a([b"".join(openai_stream())])
    data = b"".join(openai_stream())
    by_byte, stream = translate_o2a([data[i : i + 1] for i in range(len(data))])
    assert by_byte == whole and stream.ended


def test_an_error_chunk_becomes_an_anthropic_error_event() -> None:
    error = openai_chunk(
        {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}
    )
    out, stream = translate_o2a([chunk({"content": "hi"}), error])
    assert not stream.ended
    assert events(out)[-1] == (
        "error",
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
    )


def test_interleaved_tool_arguments_end_with_an_error_not_a_loss() -> None:
    stream = OpenAIToAnthropicStream()
    out = stream.feed(
        b"".join(
            [
                chunk({"tool_calls": [tool(0, '{"a":', "c0", "f")]}),
                chunk({"tool_calls": [tool(1, "{}", "c1", "g")]}),
                chunk({"tool_calls": [tool(0, "1}")]}),
                chunk({"content": "after"}),
            ]
        )
    )
    name, payload = events(out)[-1]
    assert name == "error" and payload["error"]["type"] == "api_error"
    assert b"after" not in out
    assert stream.feed(chunk({}, "stop") + openai_chunk("[DONE]")) == b""
    assert stream.flush() == b"" and not stream.ended


def test_tool_calls_without_index_are_told_apart_by_id() -> None:
    chunks = [
        chunk(
            {
                "tool_calls": [
                    {
                        "id": "a1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"x":'},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"function": {"arguments": "1}"}}]}),
        chunk(
            {
                "tool_calls": [
                    {"id": "b2", "type": "function", "function": {"name": "g", "arguments": "{}"}}
                ]
            }
        ),
        chunk({}, "tool_calls"),
        openai_chunk("[DONE]"),
    ]
    out, _ = translate_o2a(chunks)
    content = assemble_anthropic(out)["content"]
    assert [(b["id"], b["name"], b["input"]) for b in content] == [
        ("a1", "f", {"x": 1}),
        ("b2", "g", {}),
    ]
    assert assemble_anthropic(out)["stop_reason"] == "tool_use"


def test_vllm_reasoning_fields_and_stop_reason() -> None:
    chunks = [
        chunk({"role": "assistant", "reasoning_content": "hm", "reasoning": "hm"}),
        chunk({"reasoning": "m"}),
        chunk({"content": "1 2"}),
        openai_chunk(
            {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "3"}],
            }
        ),
        openai_chunk("[DONE]"),
    ]
    out, _ = translate_o2a(chunks)
    message = assemble_anthropic(out)
    assert message["content"][0]["thinking"] == "hmm"
    assert message["stop_reason"] == "stop_sequence" and message["stop_sequence"] == "3"


def test_azure_filter_chunk_refusal_and_finish_without_done() -> None:
    azure_first = openai_chunk(
        {
            "id": "",
            "object": "",
            "created": 0,
            "model": "",
            "choices": [],
            "prompt_filter_results": [],
        }
    )
    out, stream = translate_o2a(
        [azure_first, chunk({"refusal": "I can't help."}), chunk({}, "stop")]
    )
    assert stream.ended  # the finish came; the upstream closed without [DONE]
    message = assemble_anthropic(out)
    assert [{k: v for k, v in b.items() if v is not None} for b in message["content"]] == [
        {"type": "text", "text": "I can't help."}
    ]
    assert message["stop_reason"] == "refusal"
    cut, stream = translate_o2a([chunk({"content": "hal"})])
    assert not stream.ended and b"message_stop" not in cut and b"message_delta" not in cut


def test_not_json_and_comments() -> None:
    out, stream = translate_o2a([b": keep-alive\n\n", b"data: {oops\n\n"])
    assert events(out) == [
        (
            "error",
            {
                "type": "error",
                "error": {
                    "type": "api_error",
                    "message": "The upstream sent a stream event that is not JSON.",
                },
            },
        )
    ]
    assert not stream.ended


def test_a_tool_call_index_that_is_not_a_number_counts_as_missing() -> None:
    chunks = [
        chunk(
            {
                "tool_calls": [
                    {
                        "index": [0],
                        "id": "a1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
        openai_chunk("[DONE]"),
    ]
    out, stream = translate_o2a(chunks)
    assert stream.ended
    assert [(b["id"], b["input"]) for b in assemble_anthropic(out)["content"]] == [("a1", {})]
