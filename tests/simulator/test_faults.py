"""Injected faults as the SDK sees them: rate limits, server errors, stalls, cut streams."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator

ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def test_429_is_a_rate_limit_with_retry_after(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(
            model="gpt-4", messages=ASK, extra_headers={"x-sim-fault": "429"}
        )
    error = raised.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "1"
    assert error.response.headers["retry-after-ms"] == "1000"
    assert error.code == "rate_limit_exceeded"


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors(client: OpenAI, status: int) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(
            model="gpt-4", messages=ASK, extra_headers={"x-sim-fault": str(status)}
        )
    assert raised.value.status_code == status
    assert raised.value.type == "server_error"


def test_timeout_stalls_then_answers(simulator: RunningSimulator) -> None:
    stalled = {"x-sim-fault": "timeout", "x-sim-fault-delay-ms": "1500"}
    impatient = simulator.client(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="gpt-4", messages=ASK, extra_headers=stalled)
    assert time.monotonic() - started < 1.0

    short = {"x-sim-fault": "timeout", "x-sim-fault-delay-ms": "150"}
    started = time.monotonic()
    reply = simulator.client().chat.completions.create(
        model="gpt-4", messages=ASK, extra_headers=short
    )
    assert time.monotonic() - started >= 0.15
    assert reply.choices[0].message.content


def test_drop_cuts_a_stream_after_n_chunks(client: OpenAI) -> None:
    received: list[ChatCompletionChunk] = []
    stream = client.chat.completions.create(
        model="gpt-4",
        messages=ASK,
        stream=True,
        extra_headers={"x-sim-fault": "drop", "x-sim-fault-after": "3"},
    )
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    assert all(chunk.choices[0].finish_reason is None for chunk in received)


def test_drop_without_stream_closes_with_no_answer(simulator: RunningSimulator) -> None:
    with pytest.raises(openai.APIConnectionError):
        simulator.client().chat.completions.create(
            model="gpt-4", messages=ASK, extra_headers={"x-sim-fault": "drop"}
        )
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            simulator.v1 + "/embeddings",
            json={"model": "text-embedding-3-small", "input": "x"},
            headers={"x-sim-fault": "drop", **simulator.fast},
        )


def test_fault_rate_and_bad_headers(client: OpenAI) -> None:
    never = {"x-sim-fault": "500", "x-sim-fault-rate": "0"}
    for _ in range(5):
        client.chat.completions.create(model="gpt-4", messages=ASK, extra_headers=never)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="gpt-4", messages=ASK, extra_headers={"x-sim-fault": "teapot"}
        )
    assert raised.value.param == "x-sim-fault"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="gpt-4", messages=ASK, extra_headers={"x-sim-ttft-ms": "soon"}
        )


PROFILE_FAULTS = """
faults:
  - {model: "teacher-*", kind: 503}
  - {model: "coin-*", kind: 429, rate: 0.5}
seed: 7
"""


def test_profile_faults_by_model_and_rate(
    simulator_with_profile: Callable[[str], RunningSimulator],
) -> None:
    client = simulator_with_profile(PROFILE_FAULTS).client()
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="teacher-1", messages=ASK)
    assert client.chat.completions.create(model="student-1", messages=ASK).choices

    outcomes = []
    for _ in range(40):
        try:
            client.chat.completions.create(model="coin-1", messages=ASK)
            outcomes.append("ok")
        except openai.RateLimitError:
            outcomes.append("429")
    assert 5 <= outcomes.count("429") <= 35


def test_error_event_ends_a_chat_stream(simulator: RunningSimulator, client: OpenAI) -> None:
    fault = {"x-sim-fault": "error-event", "x-sim-fault-after": "3"}
    received: list[ChatCompletionChunk] = []
    stream = client.chat.completions.create(
        model="gpt-4", messages=ASK, stream=True, extra_headers=fault
    )
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    assert "server had an error" in raised.value.message
    raw = httpx.post(
        simulator.v1 + "/chat/completions",
        json={"model": "gpt-4", "messages": ASK, "stream": True},
        headers={**fault, **simulator.fast},
    )
    lines = [line for line in raw.text.split("\n\n") if line]
    assert raw.status_code == 200 and len(lines) == 4 and "[DONE]" not in raw.text
    error = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and set(error) == {"message", "type", "param", "code"}


def test_error_event_ends_a_responses_stream(simulator: RunningSimulator) -> None:
    raw = httpx.post(
        simulator.v1 + "/responses",
        json={"model": "gpt-4o", "input": "hi", "stream": True},
        headers={"x-sim-fault": "error-event", "x-sim-fault-after": "4", **simulator.fast},
    )
    events = [chunk for chunk in raw.text.split("\n\n") if chunk]
    assert len(events) == 5
    name, data = events[-1].split("\n")
    assert name == "event: error"
    payload = json.loads(data.removeprefix("data: "))
    assert payload["type"] == "error" and payload["sequence_number"] == 4
    assert "response.completed" not in raw.text


def test_error_event_and_529_without_a_stream(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(
            model="gpt-4", messages=ASK, extra_headers={"x-sim-fault": "error-event"}
        )
    assert failed.value.status_code == 500
    with pytest.raises(openai.InternalServerError) as overloaded:
        client.chat.completions.create(
            model="gpt-4", messages=ASK, extra_headers={"x-sim-fault": "529"}
        )
    assert overloaded.value.status_code == 503  # OpenAI's endpoints have no 529
