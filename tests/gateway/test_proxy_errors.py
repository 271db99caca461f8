"""Every error the core answers with: OpenAI's shape, the right status, never a traceback."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import GATEWAY_KEY
from tests.processes import Running

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "gpt-4o", "messages": [', None),
        (b"[1, 2, 3]", None),
        (b"", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "gpt-4o"}', "messages"),
        (b'{"model": 5, "messages": []}', "model"),
    ],
)
def test_bad_bodies_are_400(http: httpx.Client, body: bytes, param: str | None) -> None:
    response = http.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert_openai_error(response, 400)
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == param


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-17", messages=HELLO)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"


def test_missing_and_bad_keys_are_401(gateway: Running) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    body = {"model": "gpt-4o", "messages": HELLO}
    assert_openai_error(httpx.post(url, json=body), 401, "missing_api_key")
    wrong = httpx.post(url, json=body, headers={"authorization": "Bearer sk-wrong"})
    assert_openai_error(wrong, 401, "invalid_api_key")
    assert "sk-wrong" not in wrong.text
    not_bearer = httpx.post(url, json=body, headers={"authorization": f"Basic {GATEWAY_KEY}"})
    assert_openai_error(not_bearer, 401)
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="gpt-4o", messages=HELLO)
    # Every /v1 path needs the key, the passthrough and the model list included.
    assert_openai_error(httpx.get(f"{gateway.url}/v1/models"), 401)
    assert_openai_error(httpx.get(f"{gateway.url}/v1/files"), 401)


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    big = "x" * (300 * 1024)  # the test gateway's limit is 256 KiB
    response = http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": big}]},
    )
    assert_openai_error(response, 413)

    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 10_000

    chunked = http.post("/v1/chat/completions", content=chunks())
    assert_openai_error(chunked, 413)


def test_unreachable_upstream_is_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="unreachable-model", messages=HELLO)
    assert caught.value.status_code == 502


def test_slow_upstream_is_504(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="slow-model",
            messages=HELLO,
            extra_headers={"x-sim-fault": "timeout", "x-sim-fault-delay-ms": "3000"},
        )
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("429", openai.RateLimitError),
        ("500", openai.InternalServerError),
        ("503", openai.InternalServerError),
    ],
)
def test_upstream_errors_pass_through(
    http: httpx.Client,
    client: openai.OpenAI,
    direct: openai.OpenAI,
    fault: str,
    error: type[openai.APIStatusError],
) -> None:
    with pytest.raises(error) as through_gateway:
        client.chat.completions.create(
            model="gpt-4o", messages=HELLO, extra_headers={"x-sim-fault": fault}
        )
    with pytest.raises(error) as straight:
        direct.chat.completions.create(
            model="gpt-4o", messages=HELLO, extra_headers={"x-sim-fault": fault}
        )
    assert isinstance(through_gateway.value, openai.APIStatusError)
    assert isinstance(straight.value, openai.APIStatusError)
    assert through_gateway.value.status_code == int(fault)
    assert through_gateway.value.body == straight.value.body
    if fault == "429":
        raw = http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": HELLO},
            headers={"x-sim-fault": "429"},
        )
        assert raw.headers["retry-after"] == "1"


def test_stream_cut_mid_way_ends_with_an_error_event(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        stream=True,
        extra_headers={"x-sim-fault": "drop", "x-sim-fault-after": "3"},
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "interrupted" in caught.value.message
    assert len(received) >= 1
