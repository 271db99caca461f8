"""A fuzz test of the gateway's edge: thousands of malformed requests on every endpoint, from a
seeded generator (the same inputs on every run; a new seed explores more with
``GATEWAY_FUZZ_SEED=<n> GATEWAY_FUZZ_CALLS=<n>``). No answer may be a 5xx or hold a traceback,
every error is OpenAI-shaped JSON, and the gateway's log holds no traceback afterwards.

The upstream always answers 200, so whatever a 5xx there would be, it is the gateway's own.
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.recording_upstream import RecordingUpstream
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
    upstream = RecordingUpstream().start()
    config: dict[str, Any] = {
        "server": {"log_level": "info", "max_body_bytes": 64 * 1024},
        "auth": {"keys": [{"name": "fuzz", "key": GATEWAY_KEY}]},
        "admin": {"keys": [{"name": "ops", "key": ADMIN_KEY}]},
        "providers": {"up": {"base_url": f"{upstream.url}/v1", "api_key": "provider-fuzz-key"}},
        "routes": {
            "gpt-4o": {
                "variants": {
                    "teacher": {"provider": "up", "model": "gpt-4o-2024-08-06", "weight": 50},
                    "student": {"provider": "up", "model": "ft:gpt-4o-mini:fuzz", "weight": 50},
                },
                "shadow": {"variant": "student", "sample": 0.3},
            },
            "fuzz-model": {"variants": {"only": {"provider": "up", "model": "fuzz-model"}}},
        },
        "capture": {"database_url": f"sqlite+aiosqlite:///{workdir}/fuzz.db"},
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
