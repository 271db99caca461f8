from __future__ import annotations

import orjson
import pytest

from dialects.errors import (
    Untranslatable,
    anthropic_error_body,
    anthropic_error_event,
    anthropic_error_from_openai_payload,
    anthropic_error_status,
    anthropic_error_to_openai,
    anthropic_error_type,
    openai_error_from_anthropic_payload,
    openai_error_to_anthropic,
)


def test_untranslatable_names_the_field_and_is_a_value_error() -> None:
    error = Untranslatable("messages[2].content[0].type", "input_audio has no equivalent")
    assert isinstance(error, ValueError)
    assert error.field == "messages[2].content[0].type"
    assert error.message == "input_audio has no equivalent"
    assert "messages[2].content[0].type" in str(error)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
        (503, "overloaded_error"),
        (502, "api_error"),
        (504, "api_error"),
        (408, "invalid_request_error"),
        (422, "invalid_request_error"),
    ],
)
def test_anthropic_error_type_by_status(status: int, expected: str) -> None:
    assert anthropic_error_type(status) == expected


def test_anthropic_error_status_is_the_inverse_for_documented_types() -> None:
    for status in (400, 401, 403, 404, 413, 429, 500, 529):
        assert anthropic_error_status(anthropic_error_type(status)) == status
    assert anthropic_error_status("something_new") == 500


def test_anthropic_error_body_and_event_shapes() -> None:
    body = anthropic_error_body("overloaded_error", 'Overloaded "now"')
    assert orjson.loads(body) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": 'Overloaded "now"'},
    }
    event = anthropic_error_event("api_error", "boom")
    assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
    assert orjson.loads(event[len(b"event: error\ndata: ") :]) == {
        "type": "error",
        "error": {"type": "api_error", "message": "boom"},
    }


def test_openai_error_to_anthropic_keeps_the_message_and_types_by_status() -> None:
    upstream = orjson.dumps(
        {
            "error": {
                "message": "Rate limit reached for requests",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
    )
    assert orjson.loads(openai_error_to_anthropic(429, upstream)) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached for requests"},
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"object":"error","message":"model not loaded","type":"NotFoundError","code":404}',
            "model not loaded",
        ),
        (b'{"error":"plain string error"}', "plain string error"),
        (b'{"detail":"Not Found"}', "Not Found"),
        (b"<html>bad gateway</html>", "<html>bad gateway</html>"),
    ],
)
def test_openai_error_to_anthropic_reads_other_shapes(body: bytes, message: str) -> None:
    parsed = orjson.loads(openai_error_to_anthropic(404, body))
    assert parsed["error"] == {"type": "not_found_error", "message": message}


@pytest.mark.parametrize("body", [b"", b"   ", b"null", b"{}", b"[]", b'{"error":{}}'])
def test_an_empty_or_meaningless_body_still_gets_a_message(body: bytes) -> None:
    parsed = orjson.loads(openai_error_to_anthropic(502, body))
    assert parsed["type"] == "error"
    assert parsed["error"]["type"] == "api_error"
    assert "502" in parsed["error"]["message"]
    parsed = orjson.loads(anthropic_error_to_openai(503, body))
    assert parsed["error"]["type"] == "server_error"
    assert parsed["error"]["code"] == "overloaded_error"
    assert "503" in parsed["error"]["message"]


def test_a_huge_non_json_body_is_cut() -> None:
    parsed = orjson.loads(openai_error_to_anthropic(500, b"x" * 100_000))
    assert 0 < len(parsed["error"]["message"]) <= 2000


def test_anthropic_error_to_openai_keeps_type_as_code() -> None:
    upstream = anthropic_error_body("overloaded_error", "Overloaded")
    assert orjson.loads(anthropic_error_to_openai(529, upstream)) == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    limited = orjson.loads(
        anthropic_error_to_openai(429, anthropic_error_body("rate_limit_error", "slow"))
    )
    assert limited["error"]["type"] == "rate_limit_exceeded"
    assert limited["error"]["code"] == "rate_limit_error"
    invalid = orjson.loads(
        anthropic_error_to_openai(
            400, anthropic_error_body("invalid_request_error", "max_tokens: required")
        )
    )
    assert invalid["error"] == {
        "message": "max_tokens: required",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_request_error",
    }


def test_stream_error_payloads_both_ways() -> None:
    assert openai_error_from_anthropic_payload(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    ) == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    assert openai_error_from_anthropic_payload("garbage")["error"]["code"] == "api_error"
    assert anthropic_error_from_openai_payload(
        {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}
    ) == ("rate_limit_error", "slow down")
    assert anthropic_error_from_openai_payload(
        {"error": {"message": "bad", "type": "invalid_request_error", "code": None}}
    ) == ("invalid_request_error", "bad")
    assert anthropic_error_from_openai_payload({"error": {"message": "x", "code": 503}}) == (
        "overloaded_error",
        "x",
    )
    assert anthropic_error_from_openai_payload({"error": "down"}) == ("api_error", "down")
