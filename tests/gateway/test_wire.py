"""Bodies the gateway must refuse before it acknowledges them: too deeply nested to re-serialise
and store, empty, or sent too slowly; and what a refused body must not cost other calls."""

from __future__ import annotations

import concurrent.futures
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.wire import MAX_NESTING
from tests.capture_support import ENV, GATEWAY_KEY, Rows, capture_config, poll
from tests.processes import Running, start_gateway

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"}


@pytest.fixture(scope="module")
def edge_gateway(workdir: Path, simulator: Running) -> Iterator[tuple[Running, str]]:
    url = f"sqlite+aiosqlite:///{workdir}/edge-{time.monotonic_ns()}.db"
    config: dict[str, Any] = capture_config(simulator.url, url)
    config["server"] = {"log_level": "info", "body_read_timeout_s": 1.0}
    running = start_gateway(workdir, config, env=ENV)
    yield running, url
    running.stop()


def nested(depth: int, stream: bool = False) -> bytes:
    inner = b"[" * (depth - 1) + b"]" * (depth - 1)  # the top-level object is one level
    stream_field = b'"stream": true, ' if stream else b""
    return (
        b'{"model": "assistant", '
        + stream_field
        + b'"messages": [{"role": "user", "content": "hi"}], "x": '
        + inner
        + b"}"
    )


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 300, 1000, 5000])
@pytest.mark.parametrize("stream", [False, True])
def test_bodies_nested_too_deep_are_400_naming_the_limit(
    edge_gateway: tuple[Running, str], depth: int, stream: bool
) -> None:
    gateway, _ = edge_gateway
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=nested(depth, stream),
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] in {"nesting_too_deep", "invalid_json"}  # orjson stops at 1024
    if depth < 1024:
        assert error["code"] == "nesting_too_deep"
        assert str(MAX_NESTING) in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_body_at_the_limit_is_answered(edge_gateway: tuple[Running, str], stream: bool) -> None:
    gateway, _ = edge_gateway
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=nested(MAX_NESTING, stream),
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code == 200, response.text


def test_a_poisonous_body_costs_no_other_call_its_record(
    edge_gateway: tuple[Running, str],
) -> None:
    """30 calls, a body 1,000 levels deep, 30 calls, concurrently: every answered call has its
    row (the deep one was refused, never acknowledged)."""
    gateway, url = edge_gateway

    def call(index: int) -> tuple[int, str | None]:
        body = nested(1000) if index == 30 else None
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            content=body,
            json=None
            if body
            else {"model": "assistant", "messages": [{"role": "user", "content": f"n{index}"}]},
            headers=AUTH,
            timeout=30,
        )
        return response.status_code, response.headers.get("x-request-id")

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(61)))
    assert results[30][0] == 400
    answered = [rid for status, rid in (results[:30] + results[31:]) if status == 200 and rid]
    assert len(answered) == 60
    rows = Rows(url)
    try:
        poll(lambda: len(rows.ids(answered)) == 60, "every answered call stored", timeout=30)
    finally:
        rows.run(rows.store.close())


def test_an_empty_body_is_invalid_json(edge_gateway: tuple[Running, str]) -> None:
    gateway, _ = edge_gateway
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=b"", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("path", [b"/v1/chat/completions", b"/v1/files", b"/v1/feedback"])
def test_a_client_too_slow_to_send_its_body_gets_408(
    edge_gateway: tuple[Running, str], path: bytes
) -> None:
    gateway, _ = edge_gateway
    body = b'{"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}'
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        sock.sendall(
            b"POST " + path + b" HTTP/1.1\r\nhost: gw\r\n"
            b"authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5]
        )
        started = time.monotonic()
        response = b""
        # One byte every 0.3 s would take ~20 s to finish; the gateway gives up after ~1 s.
        for byte in body[5:]:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.3)
            try:
                response += sock.recv(65536)
            except TimeoutError:
                continue
            if b"\r\n\r\n" in response:
                break
        sock.settimeout(10)
        while b"\r\n\r\n" not in response and (chunk := sock.recv(65536)):
            response += chunk
        # The head and the body may come in separate reads: read the body to its length.
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", response)
        while (
            length is not None
            and len(response.partition(b"\r\n\r\n")[2]) < int(length.group(1))
            and (chunk := sock.recv(65536))
        ):
            response += chunk
        elapsed = time.monotonic() - started
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), response
    assert b'"request_timeout"' in rest
    assert elapsed < 10


def test_a_client_that_sends_headers_and_then_nothing_gets_408(
    edge_gateway: tuple[Running, str],
) -> None:
    gateway, _ = edge_gateway
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
            b"authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\n"
            b"content-length: 100\r\n\r\n"
        )
        response = b""
        while b"\r\n\r\n" not in response and (chunk := sock.recv(65536)):
            response += chunk
    assert response.startswith(b"HTTP/1.1 408"), response
