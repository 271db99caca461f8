from __future__ import annotations

import orjson
import pytest

from capture.assemble import (
    assemble_chat,
    assemble_completions,
    assemble_responses,
    assemble_stream,
    parse_usage,
    summarize,
)
from capture.events import parse_events
from tests.capture.factories import (
    chat_chunk,
    chat_text_stream,
    split_at,
    split_every,
    sse,
    usage_chunk,
)

PIECES = ["Bonjour", ", ", "ça va", " ? ", "Très bien 👍", "."]


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
def test_chat_stream_content_is_concatenated_whatever_the_splits(size: int) -> None:
    raw = chat_text_stream(PIECES, prompt=21, cached=5)
    assembled = assemble_chat(split_every(raw, size))
    assert assembled.complete and assembled.note is None
    choice = assembled.response["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "".join(PIECES), "refusal": None}
    assert choice["finish_reason"] == assembled.finish_reason == "stop"
    assert assembled.response["object"] == "chat.completion"
    assert assembled.response["id"] == "chatcmpl-9x"
    assert assembled.model == "gpt-4o-mini-2024-07-18"
    assert (assembled.usage.prompt_tokens, assembled.usage.completion_tokens) == (21, 6)
    assert assembled.usage.cached_tokens == 5
    assert assembled.response["usage"]["total_tokens"] == 27


def test_chat_stream_split_inside_a_multibyte_character() -> None:
    raw = chat_text_stream(["👍"])
    cut = raw.index("👍".encode()) + 2
    assembled = assemble_chat(split_at(raw, [cut]))
    assert assembled.response["choices"][0]["message"]["content"] == "👍"


def test_tool_calls_are_merged_from_their_deltas_by_index() -> None:
    def call_delta(index: int, **fields: object) -> dict[str, object]:
        return {"tool_calls": [{"index": index, **fields}]}

    raw = sse(
        chat_chunk({"role": "assistant", "content": None}),
        chat_chunk(
            call_delta(
                0, id="call_a", type="function", function={"name": "get_weather", "arguments": ""}
            )
        ),
        chat_chunk(call_delta(0, function={"arguments": '{"ci'})),
        chat_chunk(
            call_delta(1, id="call_b", type="function", function={"name": "get_", "arguments": ""})
        ),
        chat_chunk(call_delta(1, function={"name": "time", "arguments": '{"tz":'})),
        chat_chunk(call_delta(0, function={"arguments": 'ty": "Paris"}'})),
        chat_chunk(call_delta(1, function={"arguments": ' "CET"}'})),
        chat_chunk({}, "tool_calls"),
        usage_chunk(80, 31),
    )
    assembled = assemble_chat(split_every(raw, 11))
    message = assembled.response["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
        },
    ]
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert assembled.finish_reason == "tool_calls"
    assert assembled.usage.completion_tokens == 31


def test_refusal_and_several_choices() -> None:
    raw = sse(
        chat_chunk({"role": "assistant", "content": ""}, index=0),
        chat_chunk({"role": "assistant", "refusal": ""}, index=1),
        chat_chunk({"content": "Sure"}, index=0),
        chat_chunk({"refusal": "I can't "}, index=1),
        chat_chunk({"content": "!"}, "stop", index=0),
        chat_chunk({"refusal": "help with that."}, "stop", index=1),
    )
    choices = assemble_chat([raw]).response["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    assert choices[0]["message"]["content"] == "Sure!"
    assert choices[1]["message"]["refusal"] == "I can't help with that."
    assert choices[1]["message"]["content"] is None


def test_completions_stream_text() -> None:
    def chunk(text: str, finish: str | None = None) -> dict[str, object]:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "model": "gpt-3.5-turbo-instruct",
            "created": 1,
            "choices": [choice],
        }

    raw = sse(
        chunk("Once"),
        chunk(" upon"),
        chunk(" a time", "length"),
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "model": "gpt-3.5-turbo-instruct",
            "choices": [],
            "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
        },
    )
    assembled = assemble_completions(split_every(raw, 5))
    assert assembled.response["object"] == "text_completion"
    assert assembled.response["choices"][0]["text"] == "Once upon a time"
    assert assembled.finish_reason == "length"
    assert (assembled.usage.prompt_tokens, assembled.usage.completion_tokens) == (4, 3)


def test_a_cut_stream_keeps_what_arrived_and_says_so() -> None:
    raw = chat_text_stream(["The answer", " is", " forty", "-two"])
    cut = raw.index(b"forty") + 2  # inside the third content event
    assembled = assemble_chat([raw[:cut]])
    assert not assembled.complete
    assert assembled.note is not None and assembled.note.startswith("stream cut")
    assert assembled.response["choices"][0]["message"]["content"] == "The answer is"
    assert assembled.finish_reason is None
    assert assembled.usage.prompt_tokens is None


def test_an_error_event_is_recorded_with_the_content_before_it() -> None:
    raw = sse(
        chat_chunk({"role": "assistant", "content": ""}),
        chat_chunk({"content": "Partial"}),
        {"error": {"message": "upstream went away", "type": "upstream_error", "code": "cut"}},
        done=False,
    )
    assembled = assemble_chat(split_every(raw, 9))
    assert not assembled.complete
    assert assembled.note == "upstream error event in stream: upstream went away"
    assert assembled.response["error"]["code"] == "cut"
    assert assembled.response["choices"][0]["message"]["content"] == "Partial"


def test_sse_framing_with_crlf_comments_and_multiline_data() -> None:
    raw = (
        b": keep-alive\r\n\r\n"
        b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"a"}}]}\r\n\r\n'
        b'data: {"id":"c","choices":[{"index":0,\r\ndata: "delta":{"content":"b"},'
        b'"finish_reason":"stop"}]}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    assembled = assemble_chat(split_every(raw, 4))
    assert assembled.response["choices"][0]["message"]["content"] == "ab"
    assert assembled.complete
    assert [e.data for e in parse_events([b"event: x\ndata: 1\n\n"])] == [b"1"]


def test_unparsable_events_are_counted_not_fatal() -> None:
    raw = chat_text_stream(["ok"]).replace(b"data: [DONE]", b"data: {not json\n\ndata: [DONE]")
    assembled = assemble_chat([raw])
    assert assembled.response["choices"][0]["message"]["content"] == "ok"
    assert assembled.note == "1 stream events were not JSON objects"


def _responses_stream(cut_before_end: bool = False) -> bytes:
    def event(kind: str, **data: object) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data})

    response: dict[str, object] = {
        "id": "resp_1",
        "object": "response",
        "status": "in_progress",
        "model": "gpt-4.1",
        "output": [],
        "usage": None,
    }
    item = {
        "id": "msg_1",
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    done_item = {
        **item,
        "status": "completed",
        "content": [{"type": "output_text", "text": "Hi there", "annotations": []}],
    }
    final = {
        **response,
        "status": "completed",
        "output": [done_item],
        "usage": {
            "input_tokens": 9,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 2,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 11,
        },
    }
    events = [
        event("response.created", response=response),
        event("response.output_item.added", output_index=0, item=item),
        event("response.output_text.delta", output_index=0, content_index=0, delta="Hi"),
        event("response.output_text.delta", output_index=0, content_index=0, delta=" there"),
    ]
    if not cut_before_end:
        events += [
            event("response.output_item.done", output_index=0, item=done_item),
            event("response.completed", response=final),
        ]
    return b"\n\n".join(events) + b"\n\n"


def test_responses_stream_uses_the_final_response() -> None:
    assembled = assemble_stream("responses", split_every(_responses_stream(), 13))
    assert assembled.complete
    assert assembled.response["output"][0]["content"][0]["text"] == "Hi there"
    assert (assembled.usage.prompt_tokens, assembled.usage.completion_tokens) == (9, 2)
    assert assembled.finish_reason == "stop"


def test_a_cut_responses_stream_is_rebuilt_from_its_deltas() -> None:
    assembled = assemble_responses([_responses_stream(cut_before_end=True)])
    assert not assembled.complete
    assert assembled.response["status"] == "incomplete"
    assert assembled.response["output"][0]["content"] == [
        {"type": "output_text", "text": "Hi there"}
    ]


def test_non_stream_bodies_usage_and_finish_reason() -> None:
    chat = {
        "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "length"}],
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 32},
        },
    }
    summary = summarize("chat", chat)
    assert (summary.usage.prompt_tokens, summary.usage.completion_tokens) == (50, 7)
    assert summary.usage.cached_tokens == 32
    assert summary.finish_reason == "length" and summary.model == "gpt-4o"

    responses = {
        "object": "response",
        "status": "incomplete",
        "model": "o4-mini",
        "incomplete_details": {"reason": "max_output_tokens"},
        "usage": {
            "input_tokens": 10,
            "output_tokens": 64,
            "input_tokens_details": {"cached_tokens": 8},
        },
    }
    summary = summarize("responses", responses)
    assert (summary.usage.prompt_tokens, summary.usage.completion_tokens) == (10, 64)
    assert summary.usage.cached_tokens == 8
    assert summary.finish_reason == "length"

    embeddings = {"object": "list", "data": [], "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    summary = summarize("embeddings", embeddings)
    assert (summary.usage.prompt_tokens, summary.usage.completion_tokens) == (8, 0)
    assert summary.finish_reason is None


def test_usage_that_is_missing_or_malformed_is_unknown() -> None:
    assert parse_usage(None).prompt_tokens is None
    assert parse_usage({"prompt_tokens": "12"}).prompt_tokens is None
    assert parse_usage({"prompt_tokens": True}).prompt_tokens is None
    assert summarize("chat", ["not", "an", "object"]).usage.prompt_tokens is None


def test_comments_and_multiline_data_between_plain_events() -> None:
    raw = (
        b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
        b": ping\n\n"
        b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"y"},"finish_reason":"stop"}]}'
        b"\n\ndata: [DONE]\n\n"
    )
    assembled = assemble_chat([raw])
    assert assembled.response["choices"][0]["message"]["content"] == "xy"
    assert assembled.complete and assembled.note is None
