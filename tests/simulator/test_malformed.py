"""Malformed and hostile input: the simulator answers in OpenAI's error shape, never a 500, and
GET /_sim/requests keeps working whatever it recorded."""

from __future__ import annotations

import io
import socket
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator

FAST = {"x-sim-ttft-ms": "0", "x-sim-token-ms": "0"}
MESSAGES = [{"role": "user", "content": "hi"}]


def nested(levels: int) -> bytes:
    return b"[" * levels + b"1" + b"]" * levels


def post(simulator: RunningSimulator, path: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        simulator.v1 + path,
        content=body,
        headers={"content-type": "application/json", **FAST, **headers},
        timeout=30,
    )


def assert_openai_error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def recorded(simulator: RunningSimulator) -> list[dict[str, Any]]:
    response = httpx.get(simulator.base_url + "/_sim/requests", timeout=30)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


@pytest.mark.parametrize("levels", [300, 1000])
@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/chat/completions", b'{"model":"gpt-4o","messages":%s,"x":%s}'),
        ("/chat/completions", b'{"model":"gpt-4o","messages":[{"role":"user","content":%s}]}'),
        ("/chat/completions", b'{"model":"gpt-4o","messages":%s,"tools":%s}'),
        ("/completions", b'{"model":"gpt-3.5-turbo-instruct","prompt":%s}'),
        ("/embeddings", b'{"model":"text-embedding-3-small","input":%s}'),
        ("/responses", b'{"model":"gpt-4o","input":%s}'),
        ("/fine_tuning/jobs", b'{"model":"gpt-4o-mini","training_file":"f","x":%s}'),
    ],
)
def test_a_deeply_nested_body_is_a_400_and_the_log_still_reads(
    simulator: RunningSimulator, path: str, template: bytes, levels: int
) -> None:
    messages = orjson.dumps(MESSAGES)
    values = (messages, nested(levels)) if template.count(b"%s") == 2 else (nested(levels),)
    body = template % values
    error = assert_openai_error(post(simulator, path, body))
    assert error["type"] == "invalid_request_error"
    assert error["code"] in ("nesting_too_deep", None)  # beyond 1024 levels it is not JSON

    last = recorded(simulator)[-1]
    assert last["path"] == "/v1" + path
    if last["body"] is None:  # what could not be written back as JSON comes as its text
        assert last.get("body_text", body.decode()) == body.decode()


def test_a_deep_body_the_passthrough_accepts_is_recorded_as_text(
    simulator: RunningSimulator,
) -> None:
    body = b'{"x":' + nested(300) + b"}"
    response = post(simulator, "/uploads/deep", body)
    assert response.status_code == 200
    last = recorded(simulator)[-1]
    assert last["path"] == "/v1/uploads/deep"
    assert last["body"] is None and last["body_text"] == body.decode()


def test_bytes_that_are_not_utf8_are_a_400_and_readable_in_the_log(
    simulator: RunningSimulator,
) -> None:
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"\xff\xfe"}]}'
    assert_openai_error(post(simulator, "/chat/completions", body))
    # a header whose bytes are not UTF-8, on a call that is otherwise fine
    with socket.create_connection(("127.0.0.1", int(simulator.base_url.rsplit(":", 1)[1]))) as s:
        ok = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES})
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-sim-ttft-ms: 0\r\n"
            b"x-odd: caf\xe9\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(ok), ok)
        )
        s.settimeout(30)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    last = recorded(simulator)[-1]
    assert last["headers"]["x-odd"].startswith("caf")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-sim-ttft-ms", "inf"),
        ("x-sim-token-ms", "1e300"),
        ("x-sim-fault-delay-ms", "nan"),
        ("x-sim-fault-after", "inf"),
    ],
)
def test_steering_headers_out_of_range_are_a_400(
    simulator: RunningSimulator, header: str, value: str
) -> None:
    fault = {"x-sim-fault": "drop"} if header == "x-sim-fault-after" else {}
    if header == "x-sim-fault-delay-ms":
        fault = {"x-sim-fault": "timeout"}
    body = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES})
    error = assert_openai_error(
        post(simulator, "/chat/completions", body, **fault, **{header: value})
    )
    assert error["param"] == header


SCHEMAS: list[Any] = [
    {"type": "object", "properties": {"a": {"type": "array", "minItems": 10**9, "items": {}}}},
    {"type": "object", "properties": {"a": {"type": "integer", "minimum": "abc"}}},
    {"type": "object", "properties": {"a": {"type": "integer", "minimum": 1e308}}},
    {"type": "object", "properties": {"a": {"type": "number", "maximum": [1]}}},
    {
        "type": "object",
        "properties": {"a": {"type": "number", "minimum": -1e308, "maximum": 1e308}},
    },
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": [{}, ["a"], "a"]},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_odd_tool_schemas_are_answered(simulator: RunningSimulator, schema: Any) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    body = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES, "tools": tools})
    response = post(simulator, "/chat/completions", body)
    assert response.status_code == 200, response.text
    arguments = response.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    orjson.loads(arguments)
    structured = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    body = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES, "response_format": structured})
    response = post(simulator, "/chat/completions", body)
    assert response.status_code == 200, response.text


def test_too_many_prompts_or_inputs_are_a_400(simulator: RunningSimulator) -> None:
    prompts = orjson.dumps({"model": "gpt-3.5-turbo-instruct", "prompt": ["a"] * 1025, "n": 2})
    assert assert_openai_error(post(simulator, "/completions", prompts))["param"] == "prompt"
    inputs = orjson.dumps({"model": "text-embedding-3-small", "input": ["a"] * 2049})
    assert assert_openai_error(post(simulator, "/embeddings", inputs))["param"] == "input"


def test_a_body_that_cannot_be_read_is_a_400(simulator: RunningSimulator) -> None:
    garbled = post(simulator, "/chat/completions", b"not gzip", **{"content-encoding": "gzip"})
    assert_openai_error(garbled)
    no_boundary = httpx.post(
        simulator.v1 + "/files",
        content=b"--zz--\r\n",
        headers={"content-type": "multipart/form-data"},
        timeout=30,
    )
    assert_openai_error(no_boundary)
    no_parts = httpx.post(
        simulator.v1 + "/files",
        content=b"garbage",
        headers={"content-type": "multipart/form-data; boundary=zz"},
        timeout=30,
    )
    assert_openai_error(no_parts)


def upload_training_file(simulator: RunningSimulator) -> str:
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    data = io.BytesIO(b"\n".join(orjson.dumps(row) for _ in range(12)))
    response = httpx.post(
        simulator.v1 + "/files",
        data={"purpose": "fine-tune"},
        files={"file": ("train.jsonl", data)},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    file_id: str = response.json()["id"]
    return file_id


@pytest.mark.parametrize(
    "hyperparameters",
    [
        {"n_epochs": 2**63 - 1},
        {"n_epochs": 0},
        {"batch_size": 0},
        {"batch_size": -4},
        {"learning_rate_multiplier": -1},
        {"n_epochs": True},
        {"n_epochs": "3"},
    ],
)
def test_fine_tuning_hyperparameters_out_of_range_are_a_400(
    simulator: RunningSimulator, hyperparameters: dict[str, Any]
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "training_file": upload_training_file(simulator),
        "hyperparameters": hyperparameters,
    }
    error = assert_openai_error(post(simulator, "/fine_tuning/jobs", orjson.dumps(body)))
    assert error["param"] == "hyperparameters." + next(iter(hyperparameters))
    method = {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}
    body = {"model": "gpt-4o-mini", "training_file": body["training_file"], "method": method}
    error = assert_openai_error(post(simulator, "/fine_tuning/jobs", orjson.dumps(body)))
    assert error["param"] == "method.dpo.hyperparameters." + next(iter(hyperparameters))


@pytest.mark.parametrize("seconds", ["inf", "nan", "-1", "soon"])
def test_fine_tuning_run_seconds_out_of_range_are_a_400(
    simulator: RunningSimulator, seconds: str
) -> None:
    body = {"model": "gpt-4o-mini", "training_file": upload_training_file(simulator)}
    response = post(
        simulator, "/fine_tuning/jobs", orjson.dumps(body), **{"x-sim-ft-seconds": seconds}
    )
    assert assert_openai_error(response)["param"] == "x-sim-ft-seconds"
    # the jobs that were made are still listed
    assert httpx.get(simulator.v1 + "/fine_tuning/jobs", timeout=30).status_code == 200


def test_aiohttps_own_errors_are_openai_shaped(simulator: RunningSimulator) -> None:
    response = httpx.get(simulator.base_url + "/_sim/nothing-here", timeout=30)
    error = assert_openai_error(response, 404)
    assert error["type"] == "invalid_request_error"
