"""Anthropic answers: Messages summarised, Anthropic SSE streams assembled into their Message.

The assembled Message is checked against the official ``anthropic`` SDK's own accumulation of
the same events (``accumulate_event``, what ``client.messages.stream(...)`` builds its final
message with), so the reference is not our reading of the format.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message

from capture.assemble import assemble_stream, parse_usage, summarize
from capture.assemble_anthropic import assemble_anthropic
from capture.events import Usage
from tests.capture.factories import (
    TOOL_ANSWER,
    anthropic_events,
    anthropic_message,
    anthropic_sse,
    anthropic_stream,
    anthropic_usage,
    chat_text_stream,
    split_at,
    split_every,
)


def sdk_message(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The final message the anthropic SDK accumulates from ``events``."""
    snapshot = None
    buffers: dict[int, bytes] = {}
    for event in copy.deepcopy(events):
        if event["type"] in ("ping", "message_stop"):
            continue
        snapshot = accumulate_event(
            event=cast(Any, event), current_snapshot=snapshot, json_bufs=buffers
        )
    assert snapshot is not None
    return snapshot.to_dict(exclude_none=True)


def without_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nones(v) for v in value]
    return value


@pytest.mark.parametrize("size", [1, 2, 7, 64, 1_000_000])
def test_a_stream_split_anywhere_assembles_into_its_message(size: int) -> None:
    events = anthropic_events(TOOL_ANSWER)
    assembled = assemble_anthropic(split_every(anthropic_sse(*events), size))
    assert assembled.complete and assembled.note is None
    assert assembled.response == TOOL_ANSWER
    assert without_nones(assembled.response) == sdk_message(events)
    Message.model_validate(assembled.response)  # the SDK's own type accepts it
    assert assembled.finish_reason == "tool_calls"
    assert assembled.model == "claude-sonnet-4-5-20250929"
    assert assembled.usage == Usage(4012, 48, 3000, 1000)


def test_a_split_inside_a_multibyte_character_and_inside_the_tool_json() -> None:
    raw = anthropic_stream(TOOL_ANSWER)
    cuts = [
        raw.index("🌦".encode()) + 1,
        raw.index(b'"partial_json":"cels') + 17,
        raw.index(b"signature") + 2,
    ]
    assembled = assemble_anthropic(split_at(raw, cuts))
    assert assembled.response == TOOL_ANSWER


def test_crlf_framing_and_events_named_only_by_their_event_line() -> None:
    message = anthropic_message("Bonjour ça va ?")
    raw = anthropic_stream(message).replace(b"\n", b"\r\n")
    assert assemble_anthropic([raw]).response == message
    # a payload without its "type": the event line names it
    events = anthropic_events(message)
    unnamed = b"".join(
        b"event: "
        + event["type"].encode()
        + b"\ndata: "
        + orjson.dumps({k: v for k, v in event.items() if k != "type"})
        + b"\n\n"
        for event in events
    )
    assembled = assemble_anthropic([unnamed])
    assert assembled.complete and assembled.response["content"] == message["content"]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "something_new"),
    ],
)
def test_stop_reasons_are_stored_as_chat_finish_reasons(stop_reason: str, finish: str) -> None:
    message = anthropic_message("Done.", stop_reason=stop_reason)
    assert summarize("messages", message).finish_reason == finish
    streamed = assemble_anthropic([anthropic_stream(message)])
    assert streamed.finish_reason == finish
    assert streamed.response["stop_reason"] == stop_reason  # the stored body keeps Anthropic's


def test_usage_counts_every_input_token_and_splits_out_cache_reads_and_writes() -> None:
    usage = anthropic_usage(uncached=10, output=42, cache_write=1000, cache_read=3000)
    message = anthropic_message("Hi", usage=usage)
    expected = Usage(prompt_tokens=4010, completion_tokens=42, cached_tokens=3000)
    expected.cache_write_tokens = 1000
    assert summarize("messages", message).usage == expected
    assert assemble_anthropic([anthropic_stream(message)]).usage == expected
    assert parse_usage(usage) == expected  # recognised by its cache fields, whatever the caller
    minimal = anthropic_message("Hi", usage={"input_tokens": 7, "output_tokens": 2})
    assert summarize("messages", minimal).usage == Usage(7, 2, 0, 0)


def test_message_delta_usage_is_cumulative_and_overwrites() -> None:
    message = anthropic_message("Hi", usage=anthropic_usage(uncached=5, output=3))
    events = anthropic_events(message)
    delta = next(e for e in events if e["type"] == "message_delta")
    # newer API versions repeat the input counts in message_delta: totals, not increments
    delta["usage"] = {"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 30}
    assembled = assemble_anthropic([anthropic_sse(*events)])
    assert assembled.usage == Usage(105, 30, 100, 0)
    assert assembled.response["usage"]["output_tokens"] == 30
    assert without_nones(assembled.response) == sdk_message(events)


def test_openai_usage_carrying_cache_writes_reads_them() -> None:
    translated = {
        "prompt_tokens": 4010,
        "completion_tokens": 42,
        "total_tokens": 4052,
        "prompt_tokens_details": {"cached_tokens": 3000, "cache_creation_input_tokens": 1000},
    }
    assert parse_usage(translated) == Usage(4010, 42, 3000, 1000)
    plain = {"prompt_tokens": 12, "completion_tokens": 5, "prompt_tokens_details": {}}
    assert parse_usage(plain) == Usage(12, 5, 0, 0)
    responses = {
        "input_tokens": 7,
        "output_tokens": 3,
        "input_tokens_details": {"cached_tokens": 2},
    }
    assert parse_usage(responses) == Usage(7, 3, 2, 0)
    assert parse_usage(None) == Usage() and parse_usage({"foo": 1}) == Usage()


def test_a_cut_stream_keeps_what_arrived_and_says_so() -> None:
    raw = anthropic_stream(TOOL_ANSWER, stop=False)
    raw = raw[: raw.index(b'"partial_json":"cels') + 17]  # inside an input_json_delta event
    assembled = assemble_anthropic(split_every(raw, 5))
    assert not assembled.complete
    assert assembled.note is not None and "stream cut: ended before message_stop" in assembled.note
    thinking, text, tool = assembled.response["content"]
    assert thinking["thinking"] == "The user wants the weather."
    assert text["text"] == "Let me check the weather in Paris 🌦."
    assert tool["name"] == "get_weather"
    assert tool["input"] == '{"city":"Paris","unit":"'  # the fragments that came, as text
    assert "content block 2 (tool_use): its input is not JSON" in assembled.note
    assert assembled.finish_reason is None
    assert assembled.usage.prompt_tokens == 4012 and assembled.usage.completion_tokens == 1


def test_no_message_stop_after_message_delta_is_still_cut() -> None:
    assembled = assemble_anthropic([anthropic_stream(anthropic_message("Hi"), stop=False)])
    assert not assembled.complete and assembled.note is not None
    assert assembled.response["content"] == [{"type": "text", "text": "Hi"}]


def test_an_error_event_is_recorded_with_the_content_before_it() -> None:
    events = anthropic_events(anthropic_message("Partial answer"), stop=False)[:-1]
    error = {"type": "overloaded_error", "message": "Overloaded"}
    raw = anthropic_sse(*events, {"type": "error", "error": error})
    assembled = assemble_anthropic(split_every(raw, 9))
    assert not assembled.complete
    assert assembled.note == "upstream error event in stream: Overloaded"
    assert assembled.response["error"] == error
    assert assembled.response["content"] == [{"type": "text", "text": "Partial answer"}]


def test_unparsable_tool_input_is_kept_as_text_with_a_note() -> None:
    events = anthropic_events(TOOL_ANSWER)
    for event in events:
        if (
            event.get("delta", {}).get("type") == "input_json_delta"
            and event["delta"]["partial_json"]
        ):
            event["delta"]["partial_json"] = event["delta"]["partial_json"].replace('"', "'")
    assembled = assemble_anthropic([anthropic_sse(*events)])
    assert assembled.complete  # the stream ended properly: the model wrote that
    tool = assembled.response["content"][2]
    assert tool["input"] == "{'city':'Paris','unit':'celsius','days':[1,2]}"
    assert assembled.note == "content block 2 (tool_use): its input is not JSON, kept as text"


def test_a_tool_call_without_arguments_keeps_its_empty_input() -> None:
    tool = {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}
    message = anthropic_message([tool], stop_reason="tool_use")
    assembled = assemble_anthropic([anthropic_stream(message)])
    assert assembled.response["content"] == [tool] and assembled.note is None


def test_pings_unknown_events_and_junk_are_not_fatal() -> None:
    message = anthropic_message("Fine.")
    events = anthropic_events(message)
    raw = anthropic_sse(*events[:3], {"type": "future_event", "x": 1}, *events[3:])
    raw = raw.replace(b"event: ping\n", b": a comment\nevent: ping\n")
    raw += b"event: content_block_delta\ndata: {not json\n\n"
    assembled = assemble_anthropic([raw])
    assert assembled.response == message
    assert assembled.note == "1 stream events were not JSON objects"


def test_web_search_and_other_blocks_pass_through_whole() -> None:
    blocks: list[dict[str, Any]] = [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {"type": "text", "text": "Found it."},
    ]
    message = anthropic_message(blocks)
    assert assemble_anthropic([anthropic_stream(message)]).response == message


def test_a_non_stream_message_and_an_error_body() -> None:
    summary = summarize("chat", TOOL_ANSWER)  # a chat call answered by Claude
    assert summary.response is TOOL_ANSWER
    assert (summary.finish_reason, summary.model) == ("tool_calls", "claude-sonnet-4-5-20250929")
    assert summary.usage == Usage(4012, 48, 3000, 1000)
    error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    failed = summarize("messages", error)
    assert failed.usage == Usage() and failed.finish_reason is None


def test_assemble_stream_dispatches_on_the_upstream_api() -> None:
    claude = anthropic_stream(anthropic_message("From Claude"))
    openai = chat_text_stream(["From ", "GPT"])
    # whatever the client's endpoint, an Anthropic upstream streams Anthropic events
    for endpoint in ("chat", "messages"):
        assembled = assemble_stream(endpoint, [claude], "anthropic")
        assert assembled.response["type"] == "message"
        assert assembled.response["content"][0]["text"] == "From Claude"
    # an Anthropic client's call answered by an OpenAI-format upstream (or Azure)
    for api in ("openai", "azure"):
        assembled = assemble_stream("messages", [openai], api)
        assert assembled.response["object"] == "chat.completion"
        assert assembled.response["choices"][0]["message"]["content"] == "From GPT"
    assert assemble_stream("chat", [openai]).response["object"] == "chat.completion"
