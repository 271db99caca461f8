"""A fuzz test of the gateway's edge: thousands of malformed requests on every endpoint, from a
seeded generator (the same inputs on every run; a new seed explores more with
``GATEWAY_FUZZ_SEED=<n> GATEWAY_FUZZ_CALLS=<n>``). No answer may be a 5xx or hold a traceback,
every error is OpenAI-shaped JSON, and the gateway's log holds no traceback afterwards.

The upstream always answers 200 there, so whatever a 5xx would be, it is the gateway's own.

The dialect edge is fuzzed on its own (``GATEWAY_FUZZ_DIALECT_CALLS=<n>``): Anthropic's
``/v1/messages`` and ``/v1/messages/count_tokens`` routed to an upstream speaking OpenAI's format
(translated) and to one speaking Anthropic's (passed through), and OpenAI chat calls routed to
the Anthropic one, with the upstream scripted by each call to answer well or with hostility:
bodies that are not JSON, answers and stream events with fields of the wrong type, streams of
garbage, error events, cut streams, error statuses with any body. Every answer is then in the
caller's dialect (checked with the official SDKs' own types): a 2xx or 4xx, a 502 for an
upstream answer that cannot be read, or the upstream's own error status translated; a passed
through answer is the upstream's bytes; never the gateway's 500, and the log has no traceback.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from pydantic import TypeAdapter, ValidationError

from tests.gateway.recording_upstream import Answer, RecordingUpstream, WireRequest
from tests.processes import Running, start_gateway

GATEWAY_KEY = "sk-gw-fuzz-5e1a"
ADMIN_KEY = "sk-admin-fuzz-77b0"
SEED = int(os.environ.get("GATEWAY_FUZZ_SEED", "20261205"))
CALLS = int(os.environ.get("GATEWAY_FUZZ_CALLS", "1500"))

ROUTED = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
FIELDS = [
    "model", "messages", "input", "prompt", "stream", "stream_options", "user", "metadata",
    "n", "max_tokens", "temperature", "tools", "tool_choice", "response_format", "seed",
    "request_id", "score", "label", "comment", "tags", "weight", "variants", "provider",
]  # fmt: skip
ODD_STRINGS = [
    "", " ", "\x00", "\ud800", "\U0001f600", "a" * 5000, "gpt-4o", "fuzz-model", "student",
    "../..", "%00", "\r\nx-injected: 1", "<script>", "' OR 1=1 --", "\\", '"', "null",
]  # fmt: skip
ODD_NUMBERS = [0, -1, 1, 2**63, 2**64 + 1, -(2**70), 1e308, -0.0, 0.5, 10**30]


def odd_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 4)
    if kind == 0:
        return rng.choice(ODD_STRINGS)
    if kind == 1:
        return rng.choice(ODD_NUMBERS)
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(12)))
    if kind in (4, 5):
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice([*FIELDS, "role", "content", "type"]): odd_value(rng, depth + 1)}


def odd_body(rng: random.Random) -> bytes:
    kind = rng.randrange(10)
    if kind == 0:
        return rng.randbytes(rng.randrange(64))
    if kind == 1:  # nested far past any limit, or just under it
        depth = rng.choice([127, 128, 129, 254, 255, 600, 1023, 1025, 3000])
        return b'{"model": "gpt-4o", "messages": [], "x": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == 2:  # valid JSON cut short, or with bytes that are not UTF-8 in a string
        text = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        cut = text.encode()[: rng.randrange(len(text))]
        return cut if rng.random() < 0.5 else cut + b'"\xff\xfe"}'
    if kind == 3:  # not an object
        return rng.choice([b"[]", b"null", b"1", b'"s"', b"NaN", b"Infinity", b"{}", b"   "])
    if kind == 4:  # JSON that Python writes and JSON forbids
        return b'{"model": "gpt-4o", "messages": [], "temperature": NaN}'
    body = {rng.choice(FIELDS): odd_value(rng) for _ in range(rng.randrange(1, 7))}
    if rng.random() < 0.6:
        body["model"] = rng.choice(["gpt-4o", "gpt-4o", "fuzz-model", 5, None, ["x"]])
    if rng.random() < 0.5:
        body["messages"] = odd_value(rng)
    if rng.random() < 0.3:
        body["stream"] = rng.choice([True, "yes", 1, None])
    return json.dumps(body, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")


def odd_headers(rng: random.Random) -> dict[str, str]:
    headers = {"content-type": rng.choice(["application/json", "text/plain", "", "a/b; x=\x7f"])}
    auth = rng.random()
    if auth < 0.8:
        headers["authorization"] = f"Bearer {GATEWAY_KEY}"
    elif auth < 0.9:
        headers["authorization"] = rng.choice(["Bearer", "Basic eA==", "Bearer " + "k" * 9000])
    for name in ("x-gateway-user", "x-gateway-variant", "x-gateway-tags", "x-gateway-capture"):
        if rng.random() < 0.25:
            headers[name] = rng.choice(["", "a=b,c", "=,=,", "student", "off", "ä", "x" * 3000])
    if rng.random() < 0.1:
        headers["x-api-key"] = "client-secret"
    return headers


def odd_path(rng: random.Random) -> str:
    segment = rng.choice(
        ["files", "models", "batches", "%00", "%2e%2e", "..", "a%2Fb", "%zz", "x y", "é", "a;b"]
    )
    return rng.choice(
        ["/v1/", "/v1/models/", "/v1/files/", "/admin/routes/", "/dashboard/api/"]
    ) + (segment)


Request = tuple[str, str, dict[str, str], bytes]


def generate(rng: random.Random) -> Request:
    headers = odd_headers(rng)
    kind = rng.randrange(10)
    if kind < 5:
        return "POST", rng.choice(ROUTED), headers, odd_body(rng)
    if kind == 5:
        return "POST", "/v1/feedback", headers, odd_body(rng)
    if kind == 6:
        headers["authorization"] = f"Bearer {ADMIN_KEY}"
        method, path = rng.choice(
            [("PUT", "/admin/routes/gpt-4o"), ("POST", "/admin/keys"), ("POST", "/admin/reload"),
             ("POST", "/admin/routes/gpt-4o/variants"), ("DELETE", "/admin/keys/%00")]
        )  # fmt: skip
        return method, path, headers, odd_body(rng)
    if kind == 7:
        headers["authorization"] = f"Bearer {ADMIN_KEY}"
        query = rng.choice(["hours=-1", "hours=1e309", "route=%00", "limit=99999999", "x=ä&&=&"])
        page = rng.choice(["overview", "timeseries", "calls", "calls/%00", "health"])
        return "GET", f"/dashboard/api/{page}?{query}", headers, b""
    if kind == 8:
        return rng.choice(["GET", "POST", "DELETE", "PATCH"]), odd_path(rng), headers, odd_body(rng)
    return (
        "GET",
        rng.choice(["/healthz", "/readyz", "/metrics", "/v1/models", "/dashboard"]),
        {},
        b"",
    )


@pytest.fixture(scope="module")
def fuzz_gateway(workdir: Path) -> Iterator[tuple[Running, RecordingUpstream]]:
    upstream = RecordingUpstream(respond=scripted_answer).start()
    config: dict[str, Any] = {
        "server": {"log_level": "info", "max_body_bytes": 64 * 1024},
        "auth": {"keys": [{"name": "fuzz", "key": GATEWAY_KEY}]},
        "admin": {"keys": [{"name": "ops", "key": ADMIN_KEY}]},
        "providers": {
            "up": {"base_url": f"{upstream.url}/v1", "api_key": "provider-fuzz-key"},
            "anth": {"base_url": f"{upstream.url}/v1", "api": "anthropic", "api_key": "anth-key"},
        },
        "routes": {
            "gpt-4o": {
                "variants": {
                    "teacher": {"provider": "up", "model": "gpt-4o-2024-08-06", "weight": 50},
                    "student": {"provider": "up", "model": "ft:gpt-4o-mini:fuzz", "weight": 50},
                },
                "shadow": {"variant": "student", "sample": 0.3},
            },
            "fuzz-model": {"variants": {"only": {"provider": "up", "model": "fuzz-model"}}},
            # The dialect edge: Anthropic's upstream (passed through from /v1/messages,
            # translated from chat) and an OpenAI-format one (translated from /v1/messages).
            "claude": {
                "variants": {"t": {"provider": "anth", "model": "claude-up"}},
                "retry": {"attempts": 1},
            },
            "student": {
                "variants": {"s": {"provider": "up", "model": "student-up"}},
                "retry": {"attempts": 1},
            },
        },
        "capture": {
            "database_url": f"sqlite+aiosqlite:///{workdir}/fuzz.db",
            "flush_interval_ms": 20,
        },
    }
    running = start_gateway(workdir, config)
    yield running, upstream
    running.stop()
    upstream.stop()


def check(response: httpx.Response, request: Request) -> None:
    what = f"{request[0]} {request[1]} {request[3][:200]!r} -> {response.status_code}"
    assert response.status_code < 500, f"{what}: {response.text[:500]}"
    assert "Traceback" not in response.text, what
    if response.text == "Invalid HTTP request received.":
        return  # uvicorn's HTTP parser refused the request line or a header: not the app's
    if response.status_code >= 400 and request[1].startswith("/v1/"):
        assert response.headers.get("content-type", "").startswith("application/json"), (
            f"{what}: {response.text[:300]}"
        )
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}, what


def test_malformed_requests_on_every_endpoint_get_clear_errors_never_a_5xx(
    fuzz_gateway: tuple[Running, RecordingUpstream],
) -> None:
    gateway, _ = fuzz_gateway
    rng = random.Random(SEED)
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for _ in range(CALLS):
            request = generate(rng)
            method, path, headers, body = request
            try:
                response = client.request(
                    method,
                    path,
                    headers={k.encode(): v.encode("utf-8") for k, v in headers.items()},
                    content=body,
                )
            except httpx.LocalProtocolError:
                continue  # a header httpx itself will not send
            check(response, request)
    assert "Traceback" not in gateway.log.read_text()


def raw_exchange(gateway: Running, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
        sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return data


RAW_REQUESTS: list[Callable[[], bytes]] = [
    lambda: b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
    lambda: b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n",
    lambda: (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        + GATEWAY_KEY.encode()
        + b'\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"mod\r\nzz\r\n'
    ),
    lambda: (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        + GATEWAY_KEY.encode()
        + b'\r\ncontent-length: 10\r\nconnection: close\r\n\r\n{"a"'
    ),
    lambda: b"GET /v1/files/\xff\xfe HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    lambda: (
        b"GET /v1/models/" + b"a" * 20000 + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    ),
    lambda: (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-gateway-user: \xff\xfe\r\n"
        b"authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\ncontent-length: 2\r\n"
        b"connection: close\r\n\r\n{}"
    ),
]


@pytest.mark.parametrize("make", RAW_REQUESTS)
def test_broken_http_gets_a_4xx_or_a_closed_connection_never_a_5xx(
    fuzz_gateway: tuple[Running, RecordingUpstream], make: Callable[[], bytes]
) -> None:
    gateway, _ = fuzz_gateway
    answer = raw_exchange(gateway, make())
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert status < 500, answer[:500]
        assert b"Traceback" not in answer
    assert "Traceback" not in gateway.log.read_text()


# --- the dialect edge -------------------------------------------------------------------------

DIALECT_CALLS = int(os.environ.get("GATEWAY_FUZZ_DIALECT_CALLS", "700"))
ANSWER_HEADER = "x-fuzz-answer"
"""Travels to the upstream with the call (the client's headers do) and scripts its answer."""
ANSWER_KINDS = [
    "ok", "ok", "mutated", "mutated", "not-json", "garbage-stream", "error-event", "cut",
    "error-status", "wrong-content-type",
]  # fmt: skip
ODD_IDS = ["toolu_01", 'a"b', "x\ny", "\x00", "é/../%2F?#", "</script>", "a" * 300, "\n\ndata: x"]
GOOD_URLS = ["https://x.test/a.png", "data:image/png;base64,iVBORw0KGgo="]
ODD_URLS = [
    "file:///etc/passwd", "http://169.254.169.254/latest/meta-data/", "data:image/png;base64,!!",
    "javascript:alert(1)", "data:,x", "", "//no-scheme", "ftp://x/y", 5,
]  # fmt: skip
GOOD_ARGUMENTS = [
    '{"city":"Paris"}',
    "",
    "{}",
    json.dumps({"deep": json.loads("[" * 60 + "]" * 60)}),
]
DEEP_JSON = '{"a":' + "[" * 300 + "]" * 300 + "}"
ODD_ARGUMENTS = ["{", "not json", "[1,2]", "null", DEEP_JSON, 5, None]


def pick(rng: random.Random, hostile: bool, good: list[Any], odd: list[Any]) -> Any:
    """One of ``good``; in a hostile call, one of ``odd`` a third of the time."""
    return rng.choice(odd if hostile and rng.random() < 0.33 else good)


def tool_input(rng: random.Random, hostile: bool) -> Any:
    good = [
        {"city": "Paris"},
        {},
        {"deep": json.loads("[" * 100 + "]" * 100)},
        {"big": 'x\\"' * 5000},
        {"quote": '"}\n\ndata: [DONE]\n\n'},
    ]
    return pick(rng, hostile, good, [[], "string", None, 5, odd_value(rng)])


def anthropic_block(rng: random.Random, role: str, hostile: bool) -> Any:
    if hostile and rng.random() < 0.1:
        return odd_value(rng)
    kind = rng.randrange(6)
    if kind < 2:
        return {"type": "text", "text": pick(rng, hostile, ["hi", "é", "a" * 3000], ["", 5, None])}
    if role == "assistant":
        if kind == 2:
            return {"type": "thinking", "thinking": "hmm", "signature": "sig"}
        return {
            "type": "tool_use",
            "id": pick(rng, hostile, ODD_IDS, ["", 7, None]),
            "name": pick(rng, hostile, ["get_weather"], ["", 5]),
            "input": tool_input(rng, hostile),
        }
    if kind == 2:
        url = pick(rng, hostile, GOOD_URLS, ODD_URLS)
        source: dict[str, Any] = {"type": "url", "url": url}
        if url == GOOD_URLS[1] and rng.random() < 0.8:
            source = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
        return {"type": "image", "source": source}
    if kind == 3:
        source = pick(
            rng,
            hostile,
            [
                {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                {"type": "text", "media_type": "text/plain", "data": "plain"},
            ],
            [{"type": "url", "url": "https://x.test/a.pdf"}, {"type": "file", "file_id": "f"}],
        )
        return {"type": "document", "source": source, "title": "doc"}
    content = pick(
        rng, hostile, ["21 C", "", [{"type": "text", "text": "ok"}]], [[{"type": "image"}], 5]
    )
    block = {"type": "tool_result", "tool_use_id": pick(rng, hostile, ODD_IDS, ["", 7])}
    block["content"] = content
    if rng.random() < 0.3:
        block["is_error"] = pick(rng, hostile, [True, False], ["yes"])
    return block


def anthropic_request(rng: random.Random, count: bool) -> dict[str, Any]:
    """A Messages (or count_tokens) request: valid, or (a third of them) hostile."""
    hostile = rng.random() < 0.33
    messages: list[Any] = []
    for i in range(rng.randrange(1, 4)):
        role = "user" if i % 2 == 0 else "assistant"
        if rng.random() < 0.3:
            content: Any = pick(rng, hostile, ["hi", "a" * 2000], ["", 5, None, {}])
        else:
            content = [anthropic_block(rng, role, hostile) for _ in range(rng.randrange(1, 4))]
        messages.append({"role": pick(rng, hostile, [role], ["system", 5]), "content": content})
    body: dict[str, Any] = {
        "model": pick(rng, hostile, ["claude", "student"], ["gpt-4o", "nope", 5, None]),
        "messages": pick(rng, hostile, [messages], [[], {}, "hi"]),
    }
    if not count:
        body["max_tokens"] = pick(rng, hostile, [64], [0, -5, "64", 2**40, None])
        if rng.random() < 0.6:
            body["stream"] = pick(rng, hostile, [True, True, False], ["yes", 1])
    good: dict[str, list[Any]] = {
        "system": ["Be terse.", [{"type": "text", "text": "Be terse."}]],
        "stop_sequences": [["\n\n"], []],
        "temperature": [0.5, 0],
        "top_k": [5],
        "metadata": [{"user_id": "u-1"}, {}],
        "tools": [[{"name": "get_weather", "input_schema": {"type": "object"}}]],
        "tool_choice": [{"type": "auto"}, {"type": "tool", "name": "get_weather"}],
        "thinking": [{"type": "enabled", "budget_tokens": 2048}, {"type": "disabled"}],
        "service_tier": ["auto"],
    }
    odd: dict[str, list[Any]] = {
        "system": [[{"type": "image"}], 5],
        "stop_sequences": ["x", [5]],
        "temperature": ["hot"],
        "top_k": [5.5],
        "metadata": ["x", {"user_id": 5}],
        "tools": [[{"type": "web_search_20250305", "name": "web_search"}], {}],
        "tool_choice": [{"type": 5}, "any"],
        "thinking": [{"type": "enabled"}, {"type": "odd"}],
        "container": ["c"],
        "unknown_field": [1],
    }
    fields = sorted(good) + (sorted(set(odd) - set(good)) if hostile else [])
    for key in rng.sample(fields, rng.randrange(4)):
        body[key] = pick(rng, hostile, good.get(key) or odd[key], odd.get(key) or good[key])
    return body


def chat_request(rng: random.Random) -> dict[str, Any]:
    """A chat request for the Anthropic upstream: valid, or (a third of them) hostile."""
    hostile = rng.random() < 0.33
    messages: list[Any] = [{"role": "system", "content": "Be terse."}]
    messages.append({"role": "user", "content": pick(rng, hostile, ["hi"], [5, None, ""])})
    if rng.random() < 0.6:
        call_id = pick(rng, hostile, ODD_IDS, ["", 7])
        function = {"name": "get_weather"}
        function["arguments"] = pick(rng, hostile, GOOD_ARGUMENTS, ODD_ARGUMENTS)
        call = {"id": call_id, "type": "function", "function": function}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": "ok"})
    if rng.random() < 0.3:
        url = pick(rng, hostile, GOOD_URLS, ODD_URLS)
        messages.append(
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
        )
    model = pick(rng, hostile, ["claude", "claude", "claude", "student"], [5])
    body: dict[str, Any] = {"model": model}
    body["messages"] = messages
    if rng.random() < 0.6:
        body["stream"] = True
    good: dict[str, list[Any]] = {
        "stream_options": [{"include_usage": True}],
        "tools": [[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]],
        "temperature": [0.2],
        "max_completion_tokens": [64],
        "reasoning_effort": ["low"],
        "user": ["u"],
        "n": [1],
    }
    odd: dict[str, list[Any]] = {
        "n": [2],
        "temperature": [1.5],
        "max_completion_tokens": [0, "x"],
        "reasoning_effort": ["extreme"],
        "logit_bias": [{"1": 2}],
        "user": [5],
    }
    for key in rng.sample(sorted(good), rng.randrange(4)):
        body[key] = pick(rng, hostile, good[key], odd.get(key) or good[key])
    if hostile:
        key = rng.choice(sorted(odd))
        body[key] = rng.choice(odd[key])
    return body


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) in parsed JSON."""
    if isinstance(node, dict):
        for key, child in node.items():
            out.append((node, key))
            _slots(child, out)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            out.append((node, index))
            _slots(child, out)
    return out


def mutate(rng: random.Random, value: Any) -> Any:
    """``value`` (parsed JSON) with one to three of its members replaced or removed."""
    value = json.loads(json.dumps(value))
    for _ in range(rng.randrange(1, 4)):
        slots = _slots(value, [])
        if not slots:
            return odd_value(rng)
        parent, key = rng.choice(slots)
        if isinstance(parent, dict) and rng.random() < 0.25:
            del parent[key]
        else:
            parent[key] = rng.choice([odd_value(rng), None, 5, "x", [], {}, True, -1.5])
    return value


ANTHROPIC_ANSWER: dict[str, Any] = {
    "id": "msg_fuzz",
    "type": "message",
    "role": "assistant",
    "model": "claude-up",
    "content": [
        {"type": "thinking", "thinking": "Let me see.", "signature": "c2ln"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 3,
        "output_tokens": 7,
    },
}
ANTHROPIC_EVENTS: list[dict[str, Any]] = [
    {"type": "message_start", "message": {**ANTHROPIC_ANSWER, "content": [], "stop_reason": None}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": 'ris"}'},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 7},
    },
    {"type": "message_stop"},
]
OPENAI_ANSWER: dict[str, Any] = {
    "id": "chatcmpl-fuzz",
    "object": "chat.completion",
    "created": 1,
    "model": "student-up",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "reasoning_content": "Let me see.",
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 7,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 3},
    },
}
_CHUNK = {"id": "chatcmpl-fuzz", "object": "chat.completion.chunk", "created": 1, "model": "s"}
OPENAI_EVENTS: list[dict[str, Any]] = [
    {**_CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {**_CHUNK, "choices": [{"index": 0, "delta": {"reasoning_content": "Hmm"}}]},
    {**_CHUNK, "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
    {
        **_CHUNK,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"ci'},
                        }
                    ]
                },
            }
        ],
    },
    {
        **_CHUNK,
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ty"}'}}]}}
        ],
    },
    {**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {**_CHUNK, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 7}},
]


def _sse(dialect: str, event: Any) -> bytes:
    data = b"data: " + json.dumps(event).encode() + b"\n\n"
    if dialect == "anthropic" and isinstance(event, dict) and isinstance(event.get("type"), str):
        name: str = event["type"]
        return b"event: " + name.encode() + b"\n" + data
    return data


def _split(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(1, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def hostile_answer(kind: str, seed: int, request: WireRequest) -> Answer:
    """The upstream's answer to ``request``: in its dialect (by path), good or hostile."""
    rng = random.Random(seed)
    if request.path.endswith(b"/count_tokens"):
        dialect, good, events = "count", {"input_tokens": 12}, []
    elif request.path.endswith(b"/messages"):
        dialect, good, events = "anthropic", ANTHROPIC_ANSWER, ANTHROPIC_EVENTS
    else:
        dialect, good, events = "openai", OPENAI_ANSWER, OPENAI_EVENTS
    stream = request.wants_stream and bool(events)
    end = b"data: [DONE]\n\n" if dialect == "openai" else b""
    if kind == "error-status":
        status = rng.choice([400, 401, 403, 404, 413, 422, 429, 500, 503, 529])
        body = rng.choice(
            [
                b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}',
                b'{"error":{"message":"nope","type":"invalid_request_error","code":null}}',
                b"<html><body>413 Request Entity Too Large</body></html>",
                b"",
                b'{"error": 5}',
                b'{"error": {"message": ["a", 1]}}',
                b'{"object": "error", "message": "vLLM says no", "code": 400}',
                b"\xff\xfe not utf-8",
            ]
        )
        return Answer(status=status, body=body)
    if kind == "not-json":
        body = rng.choice([b"", b"{", b"<html>hi</html>", b"null", b"[]", b"\xff\xfe", b"1e999"])
        return Answer(body=body, chunks=_split(rng, body) if len(body) > 1 else None)
    if kind == "wrong-content-type":  # a stream for a whole answer, or the other way round
        if stream:
            return Answer(body=json.dumps(good).encode())
        data = b"".join(_sse(dialect, event) for event in events) + end
        return Answer(content_type="text/event-stream", body=data or b"data: {}\n\n")
    if not stream:
        answer = mutate(rng, good) if kind == "mutated" else good
        return Answer(body=json.dumps(answer).encode())
    chosen: list[Any] = list(events)
    if kind == "mutated":
        at = rng.randrange(len(chosen))
        chosen[at] = mutate(rng, chosen[at])
        if rng.random() < 0.3:
            chosen.insert(rng.randrange(len(chosen)), rng.choice(events))  # out of order
    elif kind == "error-event":
        chosen = chosen[: rng.randrange(len(chosen))]
        chosen.append(
            rng.choice(
                [
                    {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
                    {"error": {"message": "upstream broke", "type": "server_error", "code": 500}},
                    {"type": "error", "error": 5},
                    {"error": "plain"},
                ]
            )
        )
    data = b"".join(_sse(dialect, event) for event in chosen)
    if kind == "garbage-stream":
        pieces = [
            b"data: {\n\n", b"event: message_start\n\n", b"data: [1]\n\n", b"data: null\n\n",
            b': comment\n\n', b'data: {"type": 5}\n\n', b"\r\n\r\n", b"data: \xff\xfe\n\n",
            b'data: {"choices": [null], "usage": "x"}\n\n', b"data:[DONE]\n\n", b"\n\n\n",
            b'event: error\ndata: {"type": "error"}\n\n', b"no colon at all\n\n",
        ]  # fmt: skip
        garbage = [rng.choice(pieces) for _ in range(rng.randrange(1, 8))]
        data = b"".join(rng.sample([data, *garbage], len(garbage) + 1))
        end = rng.choice([end, b""])
    if kind != "cut":
        data += end
    cut = kind == "cut"
    if cut:
        data = data[: rng.randrange(1, len(data))]
    return Answer(content_type="text/event-stream", body=data, chunks=_split(rng, data), cut=cut)


def scripted_answer(request: WireRequest) -> Answer | None:
    """The recording upstream's answer: scripted by the call's header, else its default."""
    script = request.header(ANSWER_HEADER)
    if script is None:
        return None
    kind, _, seed = script.partition(":")
    return hostile_answer(kind, int(seed), request)


MESSAGE = TypeAdapter(anthropic.types.Message)
STREAM_EVENT = TypeAdapter(anthropic.types.RawMessageStreamEvent)
COMPLETION = TypeAdapter(openai.types.chat.ChatCompletion)
CHUNK = TypeAdapter(openai.types.chat.ChatCompletionChunk)


def sse_data(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each event of an SSE body."""
    out: list[tuple[str | None, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        assert data, f"an event without data: {block!r}"
        out.append((name, "\n".join(data)))
    return out


def check_anthropic_error(body: Any, what: str) -> None:
    assert isinstance(body, dict) and body.get("type") == "error", what
    error = body["error"]
    assert isinstance(error, dict), what
    assert isinstance(error.get("type"), str) and isinstance(error.get("message"), str), what


def check_openai_error(body: Any, what: str) -> None:
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), what
    assert set(body["error"]) >= {"message", "type", "param", "code"}, what
    assert isinstance(body["error"]["message"], str), what


def check_in_dialect(response: httpx.Response, dialect: str, path: str, what: str) -> None:
    """The answer is in the caller's dialect, as the official SDKs' types define it."""
    text = response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), what
        check = check_anthropic_error if dialect == "anthropic" else check_openai_error
        check(response.json(), what)
        return
    if path.endswith("/count_tokens"):
        body = response.json()
        assert isinstance(body.get("input_tokens"), int) and body["input_tokens"] >= 0, what
        return
    try:
        if not response.headers["content-type"].startswith("text/event-stream"):
            (MESSAGE if dialect == "anthropic" else COMPLETION).validate_json(response.content)
            return
        events = sse_data(text)
        assert events, what
        for name, data in events:
            if dialect == "openai":
                if data == "[DONE]":
                    continue
                parsed = json.loads(data)
                if "error" in parsed:
                    check_openai_error(parsed, what)
                else:
                    CHUNK.validate_python(parsed)
                continue
            parsed = json.loads(data)
            assert name == parsed.get("type"), f"{what}: event {name} holds {data[:200]}"
            if name == "error":
                check_anthropic_error(parsed, what)
            else:
                STREAM_EVENT.validate_python(parsed)
    except ValidationError as exc:
        raise AssertionError(f"{what}: not in the {dialect} shape: {exc}") from None
    last_name, last = events[-1]
    if dialect == "openai":
        assert last == "[DONE]" or "error" in json.loads(last), f"{what}: ends with {last[:200]}"
    else:
        assert last_name in ("message_stop", "error"), f"{what}: ends with {last[:200]}"


def test_dialect_edge_fuzzed_against_hostile_upstreams_of_both_dialects(
    fuzz_gateway: tuple[Running, RecordingUpstream],
) -> None:
    gateway, upstream = fuzz_gateway
    rng = random.Random(SEED + 1)
    seen: dict[str, int] = {}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for number in range(DIALECT_CALLS):
            pick = rng.random()
            if pick < 0.55:
                path, dialect, body = "/v1/messages", "anthropic", anthropic_request(rng, False)
            elif pick < 0.75:
                path, dialect = "/v1/messages/count_tokens", "anthropic"
                body = anthropic_request(rng, True)
            else:
                path, dialect, body = "/v1/chat/completions", "openai", chat_request(rng)
            kind = rng.choice(ANSWER_KINDS)
            headers = {ANSWER_HEADER: f"{kind}:{SEED + number}"}
            auth = rng.random()
            if auth < 0.6:
                headers["x-api-key"] = GATEWAY_KEY
            elif auth < 0.95:
                headers["authorization"] = f"Bearer {GATEWAY_KEY}"
            else:
                headers["x-api-key"] = "sk-not-a-gateway-key"
            if dialect == "anthropic" and rng.random() < 0.8:
                headers["anthropic-version"] = "2023-06-01"
            before = len(upstream.requests)
            content = json.dumps(body).encode()
            response = client.post(path, content=content, headers=headers)
            what = f"call {number}: {path} {kind} {content[:300]!r} -> {response.status_code}"
            what += f": {response.text[:400]}"

            assert "Traceback" not in response.text, what
            # This call's own requests (not a shadow copy of an earlier call's), first the one
            # whose answer the client got.
            reached = [
                request
                for request in upstream.requests[before:]
                if request.header(ANSWER_HEADER) == headers[ANSWER_HEADER]
            ]
            upstream_dialect = None
            if reached:
                anthropic_path = reached[0].path.endswith((b"/messages", b"/count_tokens"))
                upstream_dialect = "anthropic" if anthropic_path else "openai"
            passed_through = upstream_dialect == dialect
            outcome = "passed" if passed_through else "translated" if reached else "edge"
            seen[outcome] = seen.get(outcome, 0) + 1
            if passed_through:
                # The upstream speaks the caller's dialect: its answer is passed on untouched,
                # its status and its bytes (a stream that breaks off gets an error event after).
                sent = hostile_answer(kind, SEED + number, reached[0])
                assert response.status_code == sent.status, what
                if not sent.cut and not response.headers["content-type"].startswith(
                    "text/event-stream"
                ):
                    assert response.content == sent.body, what
                continue
            status = response.status_code
            if status >= 500:
                assert b"internal_error" not in response.content, what
                upstream_status = (
                    hostile_answer(kind, SEED + number, reached[0]).status if reached else None
                )
                allowed = {502, 504, upstream_status}
                if upstream_status == 529 and dialect == "openai":
                    allowed.add(503)  # OpenAI's clients know "overloaded" as 503
                assert status in allowed, what
            check_in_dialect(response, dialect, path, what)
    assert seen.get("translated", 0) > DIALECT_CALLS // 5, seen
    assert seen.get("passed", 0) > DIALECT_CALLS // 10, seen
    time.sleep(0.3)  # the capture writer's batch
    log = gateway.log.read_text()
    assert "Traceback" not in log
    assert "stream rewrite failed" not in log  # a translator that raised: a bug, not an answer
