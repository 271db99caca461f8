"""A bounded, seeded fuzz of the simulator's endpoints: ~300 malformed bodies (wrong types, huge
and negative numbers, odd tool and output schemas, deep nesting, broken JSON and bytes), and
not one answer of 500 or more; every refusal in OpenAI's error shape; the introspection and
listing endpoints still answering afterwards."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator

SEED = 20_251_205
CASES = 300
HEADERS = {
    "content-type": "application/json",
    "x-sim-ttft-ms": "0",
    "x-sim-token-ms": "0",
    "x-sim-ft-seconds": "0",
}

VALID: dict[str, dict[str, Any]] = {
    "/chat/completions": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    "/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"},
    "/embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    "/responses": {"model": "gpt-4o-mini", "input": "hi"},
    "/fine_tuning/jobs": {"model": "gpt-4o-mini", "training_file": "file-missing"},
    "/some/other/path": {"x": 1},
}
FIELDS: dict[str, list[str]] = {
    "/chat/completions": [
        "model", "messages", "n", "max_tokens", "max_completion_tokens", "tools", "tool_choice",
        "response_format", "seed", "stream", "stream_options", "user",
    ],
    "/completions": ["model", "prompt", "n", "max_tokens", "seed", "stream", "suffix"],
    "/embeddings": ["model", "input", "dimensions", "encoding_format"],
    "/responses": [
        "model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "text",
        "stream", "metadata",
    ],
    "/fine_tuning/jobs": [
        "model", "training_file", "validation_file", "hyperparameters", "method", "suffix", "seed",
    ],
    "/some/other/path": ["x"],
}  # fmt: skip
KEYS = (
    "type", "role", "content", "name", "function", "text", "properties", "items", "minItems",
    "minimum", "maximum", "enum", "required", "anyOf", "format", "parameters", "schema",
)  # fmt: skip


def deep(rng: random.Random, levels: int) -> Any:
    value: Any = rng.choice([1, "x", None, {}, []])
    for _ in range(levels):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A JSON schema with odd bounds, types and shapes."""
    kinds: list[Any] = ["object", "array", "integer", "number", "string", "boolean", "null"]
    out: dict[str, Any] = {"type": rng.choice([*kinds, ["string", "null"], 5, None, "weird"])}
    oddities: list[tuple[str, list[Any]]] = [
        ("minItems", [1, 0, -3, 10**9, 2**63 - 1, 1.5, "x"]),
        ("minimum", [0, -(10**18), 10**18, 1.5, "a", None, [1], 1e308]),
        ("maximum", [0, -(10**18), 10**18, 2.5, "b", {}, -1e308]),
        ("enum", [[], [1, "a"], "x", [[]]]),
        ("required", [["a"], [{}], "a", [[1]], [None]]),
        ("format", ["date", "email", 5, ["uri"]]),
        ("const", [1, {"a": [1]}, None]),
    ]
    for key, options in oddities:
        if rng.random() < 0.3:
            out[key] = rng.choice(options)
    if depth < 5 and rng.random() < 0.6:
        out["properties"] = {
            "a": schema(rng, depth + 1),
            "b": rng.choice([5, "x", schema(rng, depth + 1)]),
        }
    if depth < 5 and rng.random() < 0.5:
        out["items"] = rng.choice([schema(rng, depth + 1), 5, [1]])
    if depth < 5 and rng.random() < 0.2:
        combinator = rng.choice(["anyOf", "oneOf", "allOf"])
        out[combinator] = rng.choice([[schema(rng, depth + 1)], [5], "x", []])
    return out


def weird(rng: random.Random, depth: int = 0) -> Any:
    """A value of a random wrong (or right) type for any field."""
    makers: list[Callable[[], Any]] = [
        lambda: rng.choice([0, -1, 1, 2**63 - 1, -(2**63), 2**64 - 1, 10**30]),
        lambda: rng.choice([0.5, -1e308, 1e308, -0.0, 3.7]),
        lambda: rng.choice(["", "x", "auto", "none", "\u0000", "\ue000", "é" * 50, "x" * 5000]),
        lambda: rng.choice([True, False, None]),
        lambda: deep(rng, rng.choice([3, 130, 200])),
        lambda: [weird(rng, depth + 1) for _ in range(rng.randrange(4))] if depth < 3 else [],
        lambda: (
            {rng.choice(KEYS): weird(rng, depth + 1) for _ in range(rng.randrange(4))}
            if depth < 3
            else {}
        ),
        lambda: [{"role": rng.choice(["user", "tool", "assistant", 5]), "content": weird(rng, 3)}],
        lambda: {"type": rng.choice(["json_schema", "json_object"]), "schema": schema(rng)},
        lambda: rng.choice([-5, 0, 1, 129, 10**9, 10**18]),
        lambda: [rng.choice([1, -1, 2**40, 0]) for _ in range(rng.randrange(1, 5))],
        lambda: [[rng.choice([1, -1, 2**40]), 2], [], "x"],
        lambda: rng.choice(["hi", 1, [], {}, [1], ["a", 5]]),
    ]
    return rng.choice(makers)()


def hyperparameters(rng: random.Random) -> dict[str, Any]:
    values: list[Any] = ["auto", -1, 0, 1, 10**9, 2**63 - 1, 1.5, "x", True, None, 1e308]
    names = ("n_epochs", "batch_size", "learning_rate_multiplier")
    return {name: rng.choice(values) for name in names if rng.random() < 0.7}


def malformed(rng: random.Random, training_file: str) -> tuple[str, bytes]:
    """An endpoint and a body for it: mostly valid-looking JSON with some fields made wrong."""
    path = rng.choice(list(VALID))
    roll = rng.random()
    if roll < 0.08:
        return path, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if roll < 0.14:
        return path, orjson.dumps(VALID[path])[: rng.randrange(1, 30)]
    if roll < 0.17:  # deeper than orjson writes (and than JSON parsers take, at 2000)
        levels = rng.choice([255, 300, 2000])
        return path, orjson.dumps(VALID[path])[
            :-1
        ] + b',"x":' + b"[" * levels + b"]" * levels + b"}"
    body = dict(VALID[path])
    if path == "/fine_tuning/jobs" and rng.random() < 0.7:
        body["training_file"] = training_file
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(FIELDS[path])
        if key == "hyperparameters":
            body[key] = hyperparameters(rng)
        elif key == "method":
            kind = rng.choice(["supervised", "dpo", 5])
            body[key] = {"type": kind, "supervised": {"hyperparameters": hyperparameters(rng)}}
        elif key == "tools" and rng.random() < 0.6:
            function = {"name": "f", "parameters": schema(rng)}
            body[key] = [{"type": "function", "function": function, **function}]
            body["tool_choice"] = rng.choice(["auto", "required", {"name": 5}])
        elif key == "response_format" and rng.random() < 0.6:
            body[key] = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema(rng)}}
        elif key == "text" and rng.random() < 0.6:
            body[key] = {"format": {"type": "json_schema", "schema": schema(rng)}}
        else:
            body[key] = weird(rng)
    if rng.random() < 0.15:
        body["stream"] = True
    return path, json.dumps(body, ensure_ascii=False).encode()  # integers beyond 64 bits too


@pytest.fixture
def own_simulator(
    simulator_with_profile: Callable[[str], RunningSimulator],
) -> RunningSimulator:
    """A simulator of this test's own: the fuzz leaves files and fine-tuning jobs behind."""
    return simulator_with_profile("default:\n  ttft_ms: 0\n  token_ms: 0\n")


def test_no_malformed_body_gets_a_5xx(own_simulator: RunningSimulator) -> None:
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    training = io.BytesIO(b"\n".join(orjson.dumps(row) for _ in range(12)))
    rng = random.Random(SEED)
    failures: list[str] = []
    statuses: set[int] = set()
    with httpx.Client(base_url=own_simulator.v1, timeout=60) as http:
        uploaded = http.post(
            "/files", data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", training)}
        )
        training_file = uploaded.json()["id"]
        for _ in range(CASES):
            path, body = malformed(rng, training_file)
            response = http.post(path, content=body, headers=HEADERS)
            statuses.add(response.status_code)
            problem = _problem(response)
            if problem:
                failures.append(f"{path} {body[:200]!r}: {problem}")

        assert not failures, "\n".join(failures[:20])
        assert {200, 400} <= statuses  # the fuzz reaches both the answers and the refusals
        log = http.get(own_simulator.base_url + "/_sim/requests")
        assert log.status_code == 200 and len(log.json()) == 200
        for path in ("/models", "/fine_tuning/jobs", "/files"):
            assert http.get(path).status_code == 200, path
    assert own_simulator.process.poll() is None


def _problem(response: httpx.Response) -> str | None:
    """What is wrong with an answer to a malformed body, if anything."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        if not response.headers.get("content-type", "").startswith("application/json"):
            return f"{response.status_code} not JSON: {response.text[:300]}"
        error = response.json().get("error")
        if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
            return f"{response.status_code} not OpenAI-shaped: {response.text[:300]}"
    return None
