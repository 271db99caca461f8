"""Preparing calls in every dialect: Anthropic answers priced with their cache tokens, the
client's and the upstream's dialects stored, and the normalised chat view made by the
normaliser the gateway hands over (guarded: it never costs a record)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from capture.config import CaptureSettings
from capture.prepare import Preparer, fallback_row
from tests.capture.chat_view import simple_chat_view
from tests.capture.factories import (
    TOOL_ANSWER,
    anthropic_message,
    anthropic_request,
    anthropic_stream,
    anthropic_usage,
    chat_body,
    chat_request,
    chat_text_stream,
    make_anthropic_record,
    make_record,
    split_every,
)

Call = tuple[Any, str, Any, str]


class Recording:
    """A normaliser that remembers its calls and answers with ``simple_chat_view``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __call__(
        self, request: Any, request_dialect: str, response: Any, response_dialect: str
    ) -> dict[str, Any] | None:
        self.calls.append((request, request_dialect, response, response_dialect))
        return simple_chat_view(request, request_dialect, response, response_dialect)


def preparer(normalize: Any = simple_chat_view, **settings: Any) -> Preparer:
    return Preparer(CaptureSettings(**settings), normalize=normalize)


def test_an_anthropic_messages_call_answered_by_claude() -> None:
    usage = anthropic_usage(uncached=10, output=42, cache_write=1000, cache_read=3000)
    record = make_anthropic_record(
        response_body=orjson.dumps(anthropic_message("Hello!", usage=usage)),
        upstream_model="claude-sonnet-4-5",
    )
    row = preparer().prepare(record).row
    assert (row["endpoint"], row["dialect"], row["upstream_api"]) == (
        "messages",
        "anthropic",
        "anthropic",
    )
    assert row["request"]["system"] == "You are terse."  # stored as the client sent it
    assert row["response"]["type"] == "message"  # and as the upstream answered
    assert row["finish_reason"] == "stop"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (4010, 42)
    assert (row["cached_tokens"], row["cache_write_tokens"]) == (3000, 1000)
    # claude-sonnet-4-5: $3 in, $0.30 cache hits, $3.75 cache writes, $15 out
    expected = (10 * 3.00 + 1000 * 3.75 + 3000 * 0.30 + 42 * 15.00) / 1e6
    assert row["cost_usd"] == pytest.approx(expected)
    view = row["normalized"]
    assert view["request"]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello"},
    ]
    assert view["response"]["choices"][0]["message"] == {"role": "assistant", "content": "Hello!"}
    assert "error" not in view


def test_a_chat_call_answered_by_a_streaming_claude() -> None:
    normalize = Recording()
    record = make_record(
        request_body=chat_request("What is the weather in Paris?", stream=True),
        response_body=None,
        stream_chunks=split_every(anthropic_stream(TOOL_ANSWER), 23),
        stream=True,
        upstream_api="anthropic",
        upstream_model="claude-sonnet-4-5",
    )
    row = preparer(normalize).prepare(record).row
    assert (row["dialect"], row["upstream_api"]) == ("openai", "anthropic")
    assert row["response"] == TOOL_ANSWER  # the upstream's Message, assembled
    assert row["finish_reason"] == "tool_calls" and row["error"] is None
    assert (row["prompt_tokens"], row["cached_tokens"], row["cache_write_tokens"]) == (
        4012,
        3000,
        1000,
    )
    [(request, request_dialect, response, response_dialect)] = normalize.calls
    assert (request_dialect, response_dialect) == ("openai", "anthropic")
    assert request == row["request"] and response == TOOL_ANSWER
    assert row["normalized"]["request"] is None  # OpenAI's already: not stored twice
    [call] = row["normalized"]["response"]["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris","unit":"celsius","days":[1,2]}',
    }


def test_an_anthropic_client_answered_by_an_openai_format_upstream() -> None:
    normalize = Recording()
    for api in ("openai", "azure"):
        record = make_anthropic_record(
            upstream_api=api,
            request_body=anthropic_request(stream=True),
            response_body=None,
            stream_chunks=split_every(chat_text_stream(["Hi", " there"]), 9),
            stream=True,
            upstream_model="gpt-4o-mini",
        )
        row = preparer(normalize).prepare(record).row
        assert row["upstream_api"] == api
        assert row["response"]["object"] == "chat.completion"  # assembled as OpenAI chat
        assert row["response"]["choices"][0]["message"]["content"] == "Hi there"
        assert row["cost_usd"] is not None and row["cache_write_tokens"] == 0
    # Azure speaks OpenAI's format: the normaliser is told "openai"
    assert [(c[1], c[3]) for c in normalize.calls] == [("anthropic", "openai")] * 2
    assert row["normalized"]["request"]["messages"][-1] == {"role": "user", "content": "Say hello"}
    assert row["normalized"]["response"] is None  # the stored chat.completion is the answer


def test_openai_calls_are_not_normalised() -> None:
    normalize = Recording()
    for api in ("openai", "azure"):
        row = preparer(normalize).prepare(make_record(upstream_api=api)).row
        assert (row["dialect"], row["upstream_api"], row["normalized"]) == ("openai", api, None)
        assert row["cache_write_tokens"] == 0
    assert normalize.calls == []


def test_only_chat_like_endpoints_are_normalised() -> None:
    normalize = Recording()
    record = make_anthropic_record(endpoint="passthrough", response_body=b'{"input_tokens": 12}')
    row = preparer(normalize).prepare(record).row
    assert row["normalized"] is None and normalize.calls == []


def test_the_normaliser_sees_the_redacted_bodies() -> None:
    normalize = Recording()
    body = anthropic_request("Mail jane@example.com please")
    answer = orjson.dumps(anthropic_message("Done, jane@example.com"))
    row = (
        preparer(normalize)
        .prepare(make_anthropic_record(request_body=body, response_body=answer))
        .row
    )
    [(request, _, response, _)] = normalize.calls
    assert request["messages"][0]["content"] == "Mail [EMAIL] please"
    assert response["content"][0]["text"] == "Done, [EMAIL]"
    assert "jane@example.com" not in orjson.dumps(row).decode()


def test_a_failing_normaliser_costs_the_view_only_and_is_counted() -> None:
    def raises(*_: Any) -> dict[str, Any] | None:
        raise RuntimeError("boom")

    def not_a_dict(*_: Any) -> Any:
        return ["request", "response"]

    def not_json(*_: Any) -> dict[str, Any] | None:
        return {"request": {"messages": {1, 2}}}

    for normalize in (raises, not_a_dict, not_json):
        prep = preparer(normalize)
        row = prep.prepare(make_anthropic_record()).row
        assert row["normalized"] is None and prep.normalize_failed == 1
        assert row["error"] is None and row["response"]["type"] == "message"
        assert row["prompt_tokens"] == 25 and row["cost_usd"] is not None


def test_a_view_that_says_it_failed_is_stored_as_it_is() -> None:
    request = anthropic_request(
        messages=[
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]}
        ]
    )
    prep = preparer()
    row = prep.prepare(make_anthropic_record(request_body=request)).row
    assert row["normalized"]["request"] is None
    assert row["normalized"]["error"] == "request: image block"
    assert row["normalized"]["response"]["choices"][0]["message"]["content"] == "Hello there"
    assert prep.normalize_failed == 0  # the normaliser did its job: it said what failed


def test_without_a_normaliser_anthropic_calls_have_no_view() -> None:
    row = Preparer(CaptureSettings()).prepare(make_anthropic_record()).row
    assert row["normalized"] is None and row["dialect"] == "anthropic"


def test_anthropic_metadata_is_not_merged_into_tags() -> None:
    body = anthropic_request(metadata={"user_id": "u-42"})
    row = preparer().prepare(make_anthropic_record(request_body=body, tags={"team": "a"})).row
    assert row["tags"] == {"team": "a"}
    openai = chat_request(metadata={"user_id": "u-42"})
    assert preparer().prepare(make_record(request_body=openai)).row["tags"] == {"user_id": "u-42"}


def test_a_claude_model_without_a_price_is_unpriced_never_free() -> None:
    prepared = preparer().prepare(make_anthropic_record(upstream_model="claude-opus-5-5"))
    # the response's own model (claude-sonnet-4-5-20250929) is the fallback
    assert prepared.row["cost_usd"] is not None and prepared.unpriced_model is None
    answer = orjson.dumps(anthropic_message(model="claude-opus-5-5-20260901"))
    prepared = preparer().prepare(
        make_anthropic_record(upstream_model="claude-opus-5-5", response_body=answer)
    )
    assert prepared.row["cost_usd"] is None and prepared.unpriced_model == "claude-opus-5-5"
    overridden = preparer(
        prices={"claude-opus-5-5": {"input": 4, "output": 20, "cache_write": 5}}
    ).prepare(make_anthropic_record(upstream_model="claude-opus-5-5", response_body=answer))
    assert overridden.row["cost_usd"] == pytest.approx((25 * 4 + 15 * 20) / 1e6)


def test_a_record_that_cannot_be_prepared_keeps_its_dialects() -> None:
    broken = make_anthropic_record(
        stream_chunks=["not bytes"], stream=True, upstream_api="anthropic"
    )
    # Stored whole: with capture.content_store a row also says whether it holds references
    # (content_refs), which Store.insert_calls fills in for a fallback row.
    row = preparer(content_store=False).prepare(broken).row
    assert row["request"] is None and row["error"].startswith("capture could not prepare")
    assert (row["dialect"], row["upstream_api"]) == ("anthropic", "anthropic")
    assert row["normalized"] is None and row["cache_write_tokens"] is None
    assert set(row) == set(preparer(content_store=False).prepare(make_record()).row)
    assert set(fallback_row(make_record(), ValueError("x"))) == set(row)


def test_openai_usage_from_a_gateway_translating_claude_reads_cache_writes() -> None:
    body = orjson.loads(chat_body(model="claude-sonnet-4-5-20250929"))
    body["usage"]["prompt_tokens_details"]["cache_creation_input_tokens"] = 500
    row = (
        preparer()
        .prepare(make_record(response_body=orjson.dumps(body), upstream_model="claude-sonnet-4-5"))
        .row
    )
    assert (row["prompt_tokens"], row["cached_tokens"], row["cache_write_tokens"]) == (
        1000,
        400,
        500,
    )
    expected = (100 * 3.00 + 400 * 0.30 + 500 * 3.75 + 200 * 15.00) / 1e6
    assert row["cost_usd"] == pytest.approx(expected)


def test_a_half_the_normaliser_translated_is_kept_even_if_openai_was_asked() -> None:
    def rewrites(request: Any, rd: str, response: Any, sd: str) -> dict[str, Any] | None:
        view = simple_chat_view(request, rd, response, sd)
        assert view is not None
        view["request"] = {**request, "messages": [{"role": "user", "content": "rewritten"}]}
        return view

    row = preparer(rewrites).prepare(make_record(upstream_api="anthropic")).row
    assert row["normalized"]["request"]["messages"] == [{"role": "user", "content": "rewritten"}]
