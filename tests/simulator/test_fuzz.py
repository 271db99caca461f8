"""A bounded, seeded fuzz of the simulator's endpoints: ~450 malformed bodies (wrong types, huge
and negative numbers, odd tool and output schemas, odd Anthropic content blocks, deep nesting,
broken JSON and bytes) for the OpenAI, Anthropic and Azure endpoints, and not one answer of 500
or more; every refusal in its dialect's error shape (OpenAI's, Anthropic's with a request-id,
Azure's or OpenAI's under /openai/); the introspection and listing endpoints still answering
afterwards."""

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
CASES = 450
ANTHROPIC_CASES = 300
HEADERS = {
    "content-type": "application/json",
    "x-sim-ttft-ms": "0",
    "x-sim-token-ms": "0",
    "x-sim-ft-seconds": "0",
    "x-api-key": "sk-ant-fuzz",
    "anthropic-version": "2023-06-01",
    "api-key": "azure-fuzz",
}
HI = [{"role": "user", "content": "hi"}]
AZURE_CHAT = "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
AZURE_EMBEDDINGS = "/openai/deployments/embedder/embeddings?api-version=2024-10-21"
ANTHROPIC = ("/v1/messages", "/v1/messages/count_tokens")

VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "messages": HI},
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    "/v1/responses": {"model": "gpt-4o-mini", "input": "hi"},
    "/v1/fine_tuning/jobs": {"model": "gpt-4o-mini", "training_file": "file-missing"},
    "/v1/some/other/path": {"x": 1},
    "/v1/messages": {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": HI},
    "/v1/messages/count_tokens": {"model": "claude-haiku-4-5", "messages": HI},
    AZURE_CHAT: {"messages": HI},
    AZURE_EMBEDDINGS: {"input": "hi"},
    "/openai/v1/chat/completions": {"model": "gpt-4o-mini", "messages": HI},
}
CHAT_FIELDS = [
    "model",
    "messages",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "response_format",
    "seed",
    "stream",
    "stream_options",
    "user",
]
FIELDS: dict[str, list[str]] = {
    "/v1/chat/completions": CHAT_FIELDS,
    "/v1/completions": ["model", "prompt", "n", "max_tokens", "seed", "stream", "suffix"],
    "/v1/embeddings": ["model", "input", "dimensions", "encoding_format"],
    "/v1/responses": [
        "model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "text",
        "stream", "metadata",
    ],
    "/v1/fine_tuning/jobs": [
        "model", "training_file", "validation_file", "hyperparameters", "method", "suffix", "seed",
    ],
    "/v1/some/other/path": ["x"],
    "/v1/messages": [
        "model", "messages", "messages", "messages", "max_tokens", "system", "tools", "tools",
        "tool_choice", "stop_sequences", "temperature", "top_p", "top_k", "metadata", "thinking",
        "thinking", "stream", "cache_control",
    ],
    "/v1/messages/count_tokens": [
        "model", "messages", "messages", "messages", "system", "tools", "tools", "tool_choice",
        "thinking", "cache_control",
    ],
    AZURE_CHAT: CHAT_FIELDS,
    AZURE_EMBEDDINGS: ["input", "dimensions", "encoding_format", "model"],
    "/openai/v1/chat/completions": CHAT_FIELDS,
}  # fmt: skip
BLOCK_TYPES = (
    "text", "image", "document", "search_result", "tool_use", "tool_result", "thinking",
    "redacted_thinking", "video", 5,
)  # fmt: skip
BLOCK_KEYS = (
    "text", "source", "id", "name", "input", "tool_use_id", "content", "is_error", "thinking",
    "signature", "data", "cache_control", "title", "context", "citations",
)  # fmt: skip
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


def source(rng: random.Random) -> Any:
    """An image or document source, right or wrong."""
    return rng.choice(
        [
            {"type": "base64", "media_type": rng.choice(["image/png", "application/pdf", "x"]),
             "data": rng.choice(["iVBORw0KGgo=", "not base64", 5, ""])},
            {"type": "url", "url": rng.choice(["https://example.com/a.png", 5])},
            {"type": "text", "media_type": "text/plain", "data": rng.choice(["doc", None])},
            {"type": "content", "content": rng.choice(["x", [{"type": "text", "text": "y"}], [5]])},
            {"type": "file", "file_id": "file-1"},
            {"type": rng.choice(["weird", None])},
            weird(rng),
        ]
    )  # fmt: skip


GOOD_BLOCKS: list[dict[str, Any]] = [
    {"type": "text", "text": "hello there"},
    {"type": "text", "text": "cached", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}},
    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, {"b": None}]}},
    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "r"}]},
    {"type": "thinking", "thinking": "hmm", "signature": "c2ln"},
    {"type": "redacted_thinking", "data": "cmVk"},
]


def block(rng: random.Random, depth: int = 0) -> Any:
    """An Anthropic content block: a good one, or a tag and some fields of any block."""
    if rng.random() < 0.5:
        return rng.choice(GOOD_BLOCKS)
    out: dict[str, Any] = {"type": rng.choice(BLOCK_TYPES)}
    for _ in range(rng.randrange(4)):
        key = rng.choice(BLOCK_KEYS)
        if key == "source":
            out[key] = source(rng)
        elif key == "content" and depth < 2 and rng.random() < 0.5:
            out[key] = [block(rng, depth + 1) for _ in range(rng.randrange(3))]
        elif key == "cache_control":
            out[key] = rng.choice([{"type": "ephemeral"}, {"type": "ephemeral", "ttl": "2h"}, 5])
        elif key in ("id", "tool_use_id"):
            out[key] = rng.choice(["toolu_1", "toolu_2", "", 5])
        else:
            out[key] = rng.choice(["hi", "", "  ", {}, {"a": 1}, weird(rng)])
    return out if rng.random() < 0.9 else weird(rng)


def anthropic_messages(rng: random.Random) -> list[Any]:
    messages: list[Any] = []
    for _ in range(rng.randrange(1, 5)):
        role = rng.choice(["user", "assistant"] * 4 + ["system", 5])
        content: Any = rng.choice(
            ["hi", "", "tail ", [block(rng) for _ in range(rng.randrange(4))]]
        )
        messages.append({"role": role, "content": content})
    return messages


def anthropic_field(rng: random.Random, key: str, body: dict[str, Any]) -> Any:
    if key == "messages" and rng.random() < 0.7:
        return anthropic_messages(rng)
    if key == "tools" and rng.random() < 0.7:
        tool = {"name": rng.choice(["f", "bad name", 5]), "input_schema": schema(rng)}
        if rng.random() < 0.3:
            tool["cache_control"] = {"type": "ephemeral"}
        body["tool_choice"] = rng.choice(
            [{"type": "auto"}, {"type": "any"}, {"type": "tool", "name": "f"},
             {"type": "tool", "name": 5}, {"type": "none"}, "auto", None]
        )  # fmt: skip
        return rng.choice([[tool], [tool, tool], [{"type": "web_search_20250305", "name": "w"}]])
    if key == "thinking" and rng.random() < 0.7:
        if "max_tokens" in body:
            body["max_tokens"] = rng.choice([4096, 1024, 64])
        budget = rng.choice([1024, 2048, 10, 2**63, "x", None])
        return rng.choice(
            [{"type": "enabled", "budget_tokens": budget}, {"type": "adaptive"},
             {"type": "disabled"}, {"type": "enabled", "budget_tokens": 1024, "display": "x"}]
        )  # fmt: skip
    if key == "system" and rng.random() < 0.6:
        text = {"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}
        return rng.choice(["be brief", "", [text], [text] * 5, [block(rng)]])
    if key == "stop_sequences" and rng.random() < 0.6:
        return rng.choice([["."], [" the"], ["\n"], [""], [5], "."])
    if key == "cache_control" and rng.random() < 0.6:
        return {"type": "ephemeral", "ttl": rng.choice(["5m", "1h", "2h", 5])}
    return weird(rng)


def malformed(
    rng: random.Random, training_file: str, paths: tuple[str, ...] = tuple(VALID)
) -> tuple[str, bytes]:
    """An endpoint and a body for it: mostly valid-looking JSON with some fields made wrong."""
    path = rng.choice(paths)
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
    if path == "/v1/fine_tuning/jobs" and rng.random() < 0.7:
        body["training_file"] = training_file
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(FIELDS[path])
        if path in ANTHROPIC:
            body[key] = anthropic_field(rng, key, body)
        elif key == "hyperparameters":
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
    if rng.random() < 0.15 and path != "/v1/messages/count_tokens":
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
    answered: dict[str, set[int]] = {}
    with httpx.Client(base_url=own_simulator.base_url, timeout=60) as http:
        uploaded = http.post(
            "/v1/files", data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", training)}
        )
        training_file = uploaded.json()["id"]
        for _ in range(CASES):
            path, body = malformed(rng, training_file)
            response = http.post(path, content=body, headers=HEADERS)
            statuses.add(response.status_code)
            answered.setdefault(path, set()).add(response.status_code)
            problem = _problem(path, response)
            if problem:
                failures.append(f"{path} {body[:200]!r}: {problem}")

        assert not failures, "\n".join(failures[:20])
        assert {200, 400} <= statuses  # the fuzz reaches both the answers and the refusals
        for path, kinds in answered.items():  # each endpoint answers some and refuses some
            if path != "/v1/some/other/path":  # (the passthrough takes anything)
                assert {200, 400} <= kinds, f"{path}: only {sorted(kinds)}"
        log = http.get("/_sim/requests")
        assert log.status_code == 200 and len(log.json()) == 200
        for path in ("/v1/models", "/v1/fine_tuning/jobs", "/v1/files"):
            assert http.get(path).status_code == 200, path
    assert own_simulator.process.poll() is None


def test_no_malformed_anthropic_body_gets_a_5xx(simulator: RunningSimulator) -> None:
    """More of the Anthropic endpoints alone: their checks go deepest (blocks, pairs, rules)."""
    rng = random.Random(SEED + 1)
    failures: list[str] = []
    answered: dict[str, set[int]] = {}
    with httpx.Client(base_url=simulator.base_url, timeout=60) as http:
        for _ in range(ANTHROPIC_CASES):
            path, body = malformed(rng, "file-none", ANTHROPIC)
            response = http.post(path, content=body, headers=HEADERS)
            answered.setdefault(path, set()).add(response.status_code)
            problem = _problem(path, response)
            if problem:
                failures.append(f"{path} {body[:300]!r}: {problem}")
    assert not failures, "\n".join(failures[:20])
    for path in ANTHROPIC:
        assert {200, 400} <= answered[path], f"{path}: only {sorted(answered[path])}"
    assert simulator.process.poll() is None


def _problem(path: str, response: httpx.Response) -> str | None:
    """What is wrong with an answer to a malformed body, if anything."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:300]}"
    if response.status_code < 400:
        return None
    if not response.headers.get("content-type", "").startswith("application/json"):
        return f"{response.status_code} not JSON: {response.text[:300]}"
    body = response.json()
    if path in ANTHROPIC:
        error = body.get("error")
        shaped = body.get("type") == "error" and isinstance(error, dict)
        if not shaped or set(error) != {"type", "message"} or not error["message"]:
            return f"{response.status_code} not Anthropic-shaped: {response.text[:300]}"
        if not response.headers.get("request-id", "").startswith("req_"):
            return f"{response.status_code} without a request-id"
        return None
    error = body.get("error")
    shapes = [{"message", "type", "param", "code"}]
    if path.startswith("/openai/"):
        shapes.append({"code", "message"})
    if not isinstance(error, dict) or set(error) not in shapes:
        return f"{response.status_code} not in the dialect's shape: {response.text[:300]}"
    return None
