"""POST /v1/feedback through real processes, on SQLite and PostgreSQL.

The gateway's writer here waits 5 s for a batch to fill, so a call's row is still in the queue
when the app sends feedback right after the answer: the feedback must still be stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.capture_support import (
    BACKENDS,
    ENV,
    GATEWAY_KEY,
    Backend,
    BackendKind,
    Rows,
    capture_config,
    feedback_post,
    open_backend,
    rows_of,
)
from tests.processes import Running, start_gateway

SLOW_FLUSH_MS = 5000


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    kind: BackendKind = request.param
    with open_backend(kind, tmp_path_factory.mktemp(f"capture-feedback-{kind}"), __name__) as b:
        yield b


@pytest.fixture(scope="module")
def database_url(backend: Backend) -> str:
    return backend.new_url()


@pytest.fixture(scope="module")
def gw(backend: Backend, database_url: str, simulator: Running) -> Iterator[Running]:
    config = capture_config(simulator.url, database_url, flush_interval_ms=SLOW_FLUSH_MS)
    running = start_gateway(backend.workdir, config, env=ENV)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rows(database_url: str, gw: Running) -> Iterator[Rows]:
    with rows_of(database_url) as reader:
        yield reader


@pytest.fixture
def sdk(gw: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=20)


def call(sdk: openai.OpenAI, **headers: str) -> str:
    raw = sdk.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[{"role": "user", "content": "Is this answer any good?"}],
        max_tokens=6,
        extra_headers=headers,
    )
    raw.parse()
    request_id: str = raw.headers["x-request-id"]
    return request_id


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_feedback_right_after_the_call_is_stored_several_times(
    gw: Running, sdk: openai.OpenAI, rows: Rows
) -> None:
    request_id = call(sdk)
    # With a 5 s flush interval the row cannot have been written yet: it is in the queue.
    assert rows.call(request_id) is None

    first = feedback_post(
        gw.url, {"request_id": request_id, "score": 1, "label": "accepted", "comment": "great"}
    )
    assert first.status_code == 200, first.text
    assert first.json()["request_id"] == request_id
    assert first.json()["object"] == "feedback"
    assert isinstance(first.json()["id"], int)
    as_uuid = str(uuid.UUID(hex=request_id))  # the same id with dashes is accepted too
    second = feedback_post(gw.url, {"request_id": as_uuid, "score": -0.5, "label": "rejected"})
    assert second.status_code == 200, second.text
    third = feedback_post(gw.url, {"request_id": request_id, "score": 0.25})
    assert third.status_code == 200, third.text
    assert len({first.json()["id"], second.json()["id"], third.json()["id"]}) == 3

    assert rows.call(request_id) is not None
    stored = rows.feedback(request_id)
    assert [(f["score"], f["label"], f["comment"]) for f in stored] == [
        (1.0, "accepted", "great"),
        (-0.5, "rejected", None),
        (0.25, None, None),
    ]
    assert [f["id"] for f in stored] == [r.json()["id"] for r in (first, second, third)]
    assert all(f["request_id"] == request_id for f in stored)


def test_feedback_right_after_a_streamed_call_is_stored(
    gw: Running, sdk: openai.OpenAI, rows: Rows
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[{"role": "user", "content": "Stream me an answer."}],
        max_tokens=6,
        stream=True,
    )
    for _ in raw.parse():
        pass
    request_id = raw.headers["x-request-id"]

    response = feedback_post(gw.url, {"request_id": request_id, "score": 0.9, "label": "ok"})

    assert response.status_code == 200, response.text
    assert [(f["score"], f["label"]) for f in rows.feedback(request_id)] == [(0.9, "ok")]
    assert rows.call(request_id) is not None


def test_feedback_for_an_unknown_call_is_404(gw: Running) -> None:
    response = feedback_post(gw.url, {"request_id": uuid.uuid4().hex, "score": 1})
    error = assert_openai_error(response, 404)
    assert error["param"] == "request_id"
    assert error["code"] == "request_not_found"


def test_feedback_for_a_call_that_was_not_recorded_is_404(gw: Running, sdk: openai.OpenAI) -> None:
    request_id = call(sdk, **{"x-gateway-capture": "off"})
    response = feedback_post(gw.url, {"request_id": request_id, "score": 1})
    assert_openai_error(response, 404)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"score": 1.5}, "score", "less than or equal to 1"),
        ({"score": -2}, "score", "greater than or equal to -1"),
        ({"score": "great"}, "score", "number"),
        ({"score": 1, "rating": 5}, "rating", "unknown field"),
        ({}, "score", "missing"),
        ({"score": 1, "request_id": "not-an-id"}, "request_id", "32 hex digits"),
        ({"score": 1, "label": "x" * 101}, "label", "100 characters"),
    ],
    ids=[
        "score-above-1",
        "score-below-minus-1",
        "score-text",
        "extra-field",
        "no-score",
        "bad-id",
        "long-label",
    ],
)
def test_a_bad_feedback_body_is_400_with_a_clear_message(
    gw: Running, body: dict[str, Any], param: str, words: str
) -> None:
    sent = {"request_id": uuid.uuid4().hex, **body}  # the body is checked before the id
    error = assert_openai_error(feedback_post(gw.url, sent), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words.lower() in error["message"].lower()


@pytest.mark.parametrize(
    "raw", [b'{"request_id": "abc", "score": ', b""], ids=["truncated", "empty"]
)
def test_malformed_json_is_400_with_a_clear_message(gw: Running, raw: bytes) -> None:
    error = assert_openai_error(feedback_post(gw.url, None, raw=raw), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None  # not a field of the body
    assert "json" in error["message"].lower()


@pytest.mark.parametrize("raw", [b"[1, 2]", b"null", b'"score"'], ids=["array", "null", "string"])
def test_a_body_that_is_not_an_object_is_400(gw: Running, raw: bytes) -> None:
    error = assert_openai_error(feedback_post(gw.url, None, raw=raw), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None


def test_feedback_needs_a_gateway_key(gw: Running) -> None:
    body = {"request_id": uuid.uuid4().hex, "score": 1}
    missing = assert_openai_error(feedback_post(gw.url, body, key=None), 401)
    assert missing["code"] == "missing_api_key"
    wrong = assert_openai_error(feedback_post(gw.url, body, key="not-the-key"), 401)
    assert wrong["code"] == "invalid_api_key"


def test_a_feedback_comment_is_redacted_like_the_calls(
    gw: Running, sdk: openai.OpenAI, rows: Rows
) -> None:
    request_id = call(sdk)
    comment = "wrong again, write to jane.doe@example.com or call +1 415 555 0199"
    answer = feedback_post(
        gw.url,
        {
            "request_id": request_id,
            "score": -1,
            "label": "mail bob@example.org",
            "comment": comment,
        },
    )
    assert answer.status_code == 200, answer.text
    (stored,) = rows.feedback(request_id)
    assert "jane.doe@example.com" not in stored["comment"] and "[EMAIL]" in stored["comment"]
    assert "555 0199" not in stored["comment"] and "[PHONE]" in stored["comment"]
    assert stored["label"] == "mail [EMAIL]"
