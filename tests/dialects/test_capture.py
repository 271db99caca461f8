from __future__ import annotations

from typing import Any

import orjson
import pytest

from dialects.capture import chat_view
from dialects.errors import anthropic_error_body

ANTHROPIC_REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
}
ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Hello."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "cache_read_input_tokens": 2, "output_tokens": 3},
}
OPENAI_REQUEST: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "hi"}],
}


def test_openai_on_both_sides_needs_no_view() -> None:
    assert chat_view(OPENAI_REQUEST, "openai", {"id": "x"}, "openai") is None


def test_an_anthropic_call_in_the_chat_shape() -> None:
    view = chat_view(ANTHROPIC_REQUEST, "anthropic", ANTHROPIC_MESSAGE, "anthropic")
    assert view is not None and "error" not in view
    assert view["request"] == {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
        "max_tokens": 100,
        "stream": True,
    }
    response = view["response"]
    assert response["object"] == "chat.completion"
    assert response["choices"][0]["message"]["content"] == "Hello."
    assert response["usage"]["prompt_tokens"] == 7
    assert response["usage"]["prompt_tokens_details"]["cached_tokens"] == 2


def test_an_openai_client_answered_by_claude() -> None:
    raw = orjson.dumps(ANTHROPIC_MESSAGE)
    view = chat_view(OPENAI_REQUEST, "openai", raw, "anthropic")
    assert view is not None
    assert view["request"] is OPENAI_REQUEST
    assert view["response"]["choices"][0]["finish_reason"] == "stop"


def test_an_anthropic_client_answered_by_an_openai_student() -> None:
    completion = {"id": "c", "object": "chat.completion", "choices": []}
    view = chat_view(ANTHROPIC_REQUEST, "anthropic", completion, "openai")
    assert view is not None and view["response"] is completion
    assert view["request"]["messages"][1] == {"role": "user", "content": "hi"}


def test_an_untranslatable_request_keeps_the_response_and_says_why() -> None:
    request = {
        **ANTHROPIC_REQUEST,
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }
    view = chat_view(request, "anthropic", ANTHROPIC_MESSAGE, "anthropic")
    assert view is not None
    assert view["request"] is None
    assert "tools[0].type" in view["error"]
    assert view["response"]["choices"][0]["message"]["content"] == "Hello."


def test_error_and_missing_responses() -> None:
    view = chat_view(
        ANTHROPIC_REQUEST,
        "anthropic",
        anthropic_error_body("overloaded_error", "busy"),
        "anthropic",
    )
    assert view is not None and "error" not in view
    assert view["response"] == {
        "error": {
            "message": "busy",
            "type": "server_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    view = chat_view(ANTHROPIC_REQUEST, "anthropic", None, "anthropic")
    assert view is not None and view["response"] is None and "error" not in view


@pytest.mark.parametrize(
    ("request_", "request_dialect", "response", "response_dialect"),
    [
        ("not a dict", "anthropic", None, "anthropic"),
        ({"messages": "x"}, "anthropic", b"not json", "anthropic"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image"}]}]},
            "anthropic",
            [],
            "anthropic",
        ),
        (ANTHROPIC_REQUEST, "gemini", {"type": "message"}, "anthropic"),
        (
            ANTHROPIC_REQUEST,
            "anthropic",
            {"type": "message", "content": "x", "usage": 5},
            "anthropic",
        ),
        (ANTHROPIC_REQUEST, "anthropic", {"type": "completion"}, "anthropic"),
        (ANTHROPIC_REQUEST, "anthropic", {"type": "message"}, "cohere"),
        (
            {"max_tokens": "many", "messages": [{"role": "user", "content": "x"}]},
            "anthropic",
            None,
            "anthropic",
        ),
    ],
)
def test_never_raises(
    request_: Any, request_dialect: str, response: Any, response_dialect: str
) -> None:
    view = chat_view(request_, request_dialect, response, response_dialect)
    assert view is not None
    assert set(view) <= {"request", "response", "error"}
    if view["request"] is None or (response is not None and view["response"] is None):
        assert view["error"]
