from __future__ import annotations

import datetime as dt

import orjson
import pytest

from capture.config import CaptureSettings, ModelPrice
from capture.prepare import Preparer
from tests.capture.factories import chat_request, make_record, make_stream_record, sse

PREPARER = Preparer(CaptureSettings())


def test_a_non_streamed_call() -> None:
    record = make_record(started_at=1_760_000_000.25, tags={"team": "search"})
    prepared = PREPARER.prepare(record)
    row = prepared.row
    assert prepared.unpriced_model is None
    assert row["id"] == record.id
    assert row["created_at"] == dt.datetime(2025, 10, 9, 8, 53, 20, 250000, tzinfo=dt.UTC)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        1000,
        200,
        400,
    )
    # gpt-4o-mini: 600 x $0.15 + 400 x $0.075 + 200 x $0.60 per 1M
    assert row["cost_usd"] == pytest.approx((600 * 0.15 + 400 * 0.075 + 200 * 0.60) / 1e6)
    assert row["finish_reason"] == "stop"
    assert (row["total_ms"], row["upstream_ms"], row["overhead_ms"], row["ttft_ms"]) == (
        250.0,
        249.2,
        0.8,
        None,
    )
    assert row["request"]["messages"] == [{"role": "user", "content": "Say hello"}]
    assert row["response"]["choices"][0]["message"]["content"] == "Hello there"
    assert row["tags"] == {"team": "search"}
    assert row["stream"] is False and row["cache_hit"] is False and row["error"] is None


def test_a_streamed_call_is_stored_assembled() -> None:
    row = PREPARER.prepare(make_stream_record(["Hel", "lo", "!"])).row
    assert row["response"]["object"] == "chat.completion"
    assert row["response"]["choices"][0]["message"]["content"] == "Hello!"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (30, 3)
    assert row["cost_usd"] == pytest.approx((30 * 0.15 + 3 * 0.60) / 1e6)
    assert row["ttft_ms"] == 80.0 and row["stream"] is True


def test_a_cut_stream_is_stored_with_a_note() -> None:
    raw = sse({"choices": [{"index": 0, "delta": {"content": "Half an ans"}}]}, done=False)
    row = PREPARER.prepare(make_stream_record([], stream_chunks=[raw], status=200)).row
    assert row["response"]["choices"][0]["message"]["content"] == "Half an ans"
    assert row["error"] is not None and row["error"].startswith("stream cut")
    assert row["cost_usd"] is None and row["prompt_tokens"] is None


def test_body_metadata_is_merged_into_tags_header_first() -> None:
    body = chat_request(metadata={"team": "ads", "experiment": "e7"})
    row = PREPARER.prepare(make_record(request_body=body, tags={"team": "search"})).row
    assert row["tags"] == {"team": "search", "experiment": "e7"}


def test_redaction_follows_the_settings_and_the_per_call_override() -> None:
    body = chat_request("I am jane@example.com, +44 20 7946 0958")
    response = orjson.dumps(
        {
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hi jane@example.com"}}
            ]
        }
    )
    default = PREPARER.prepare(make_record(request_body=body, response_body=response)).row
    assert default["request"]["messages"][0]["content"] == "I am [EMAIL], [PHONE]"
    assert default["response"]["choices"][0]["message"]["content"] == "Hi [EMAIL]"

    none = PREPARER.prepare(make_record(request_body=body, redact=())).row
    assert none["request"]["messages"][0]["content"] == "I am jane@example.com, +44 20 7946 0958"

    phone_only = PREPARER.prepare(make_record(request_body=body, redact=("phone",))).row
    assert phone_only["request"]["messages"][0]["content"] == "I am jane@example.com, [PHONE]"

    off = Preparer(CaptureSettings(redact=[])).prepare(make_record(request_body=body)).row
    assert off["request"]["messages"][0]["content"] == "I am jane@example.com, +44 20 7946 0958"


def test_redaction_covers_tags_and_errors() -> None:
    row = PREPARER.prepare(
        make_record(
            tags={"user": "jane@example.com"},
            error="upstream said: bad key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t",
        )
    ).row
    assert row["tags"] == {"user": "[EMAIL]"}
    assert row["error"] == "upstream said: bad key [SECRET]"


def test_unknown_model_is_unpriced_and_counted_by_model() -> None:
    record = make_record(
        upstream_model="llama-3-70b",
        requested_model="llama",
        response_body=orjson.dumps(
            {"model": "llama-3-70b", "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
        ),
    )
    prepared = PREPARER.prepare(record)
    assert prepared.row["cost_usd"] is None
    assert prepared.unpriced_model == "llama-3-70b"
    priced = Preparer(CaptureSettings(prices={"llama-3-70b": ModelPrice(input=1, output=1)}))
    assert priced.prepare(record).row["cost_usd"] == pytest.approx(6 / 1e6)


def test_an_error_without_usage_is_not_counted_as_unpriced() -> None:
    body = orjson.dumps({"error": {"message": "Rate limit", "type": "rate_limit", "code": "429"}})
    prepared = PREPARER.prepare(make_record(status=429, response_body=body, error="rate limited"))
    assert prepared.unpriced_model is None and prepared.row["cost_usd"] is None
    assert prepared.row["response"]["error"]["message"] == "Rate limit"
    assert prepared.row["status"] == 429 and prepared.row["error"] == "rate limited"


def test_a_cache_hit_costs_nothing() -> None:
    assert PREPARER.prepare(make_record(cache_hit=True)).row["cost_usd"] == 0.0


def test_bodies_that_are_not_json_are_kept_as_text() -> None:
    row = PREPARER.prepare(
        make_record(endpoint="passthrough", request_body=b"\xffnot json", response_body=b"<html>")
    ).row
    assert row["request"] == {"_raw": "\ufffdnot json", "_bytes": 9}
    assert row["response"] == {"_raw": "<html>", "_bytes": 6}


def test_nul_characters_are_removed_for_postgresql() -> None:
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a\\u0000b"}]}'
    row = PREPARER.prepare(make_record(request_body=body, tags={"k": "x\x00y"})).row
    assert row["request"]["messages"][0]["content"] == "ab"
    assert row["tags"] == {"k": "xy"}


def test_embedding_vectors_are_not_stored() -> None:
    response = orjson.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1] * 1536}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )
    row = PREPARER.prepare(
        make_record(
            endpoint="embeddings",
            upstream_model="text-embedding-3-small",
            request_body=b'{"model":"text-embedding-3-small","input":"hello"}',
            response_body=response,
        )
    ).row
    assert row["response"]["data"] == [{"object": "embedding", "index": 0, "dimensions": 1536}]
    assert row["cost_usd"] == pytest.approx(8 * 0.02 / 1e6)


def test_a_record_that_cannot_be_prepared_is_stored_with_a_note() -> None:
    broken = make_record(stream_chunks=["not bytes"], stream=True, error="x@y.org failed")
    row = PREPARER.prepare(broken).row
    assert row["id"] == broken.id and row["status"] == 200
    assert row["request"] is None and row["response"] is None
    assert row["error"].startswith(
        "[EMAIL] failed; capture could not prepare this record: TypeError"
    )


KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t"


def test_the_user_is_redacted_like_the_request_that_carries_it() -> None:
    body = chat_request(user=KEY)
    row = PREPARER.prepare(make_record(request_body=body, user_key=KEY)).row
    assert row["request"]["user"] == "[SECRET]"
    assert row["user_key"] == "[SECRET]"
    email = PREPARER.prepare(make_record(user_key="jane@example.com")).row
    assert email["user_key"] == "[EMAIL]"
    # a call whose route turns redaction off keeps both as they came
    off = PREPARER.prepare(make_record(request_body=body, user_key=KEY, redact=())).row
    assert off["request"]["user"] == KEY and off["user_key"] == KEY


def test_every_stored_string_is_redacted() -> None:
    body = chat_request(metadata={f"token: {KEY}": "jane@example.com"})
    row = PREPARER.prepare(
        make_record(
            request_body=body,
            requested_model=f"model {KEY}",
            tags={KEY: "x", "owner": "call +44 20 7946 0958"},
        )
    ).row
    assert row["requested_model"] == "model [SECRET]"
    assert row["tags"] == {
        "[SECRET]": "x",
        "owner": "call [PHONE]",
        "token: [SECRET]": "[EMAIL]",
    }
    assert KEY not in orjson.dumps(row, default=str).decode()


def test_a_secret_at_the_end_of_a_column_leaves_no_piece_behind() -> None:
    """Redacted whole before the cut: a key across the column's end is not half kept."""
    user = "u" * 190 + " " + KEY  # the key starts before the 200th character and ends after
    tag = "v" * 500 + " " + KEY
    row = PREPARER.prepare(make_record(user_key=user, tags={"t": tag})).row
    assert row["user_key"] == "u" * 190 + " [SECRET]"
    assert row["tags"]["t"] == ("v" * 500 + " [SECRET]")[:512]
    assert "sk-proj" not in row["user_key"] and "sk-" not in row["tags"]["t"]


def test_a_record_that_cannot_be_prepared_is_redacted_too() -> None:
    broken = make_record(
        stream_chunks=["not bytes"], stream=True, user_key=KEY, requested_model=KEY
    )
    row = PREPARER.prepare(broken).row
    assert row["error"].startswith("capture could not prepare this record")
    assert row["user_key"] == "[SECRET]" and row["requested_model"] == "[SECRET]"
    # redaction kinds that cannot be built: everything is redacted, nothing stored as it came
    odd = make_record(user_key=f"jane@example.com {KEY}", redact=("no-such-kind",))
    odd_row = PREPARER.prepare(odd).row
    assert odd_row["user_key"] == "[EMAIL] [SECRET]"
    assert odd_row["request"] is None
