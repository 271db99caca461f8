"""What reaches the provider, as bytes on the wire: passed-through paths exactly as the client
encoded them and never outside /v1, no client credential in any header, and bodies byte for
byte but for the fields the gateway changes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import GATEWAY_KEY, PROVIDER_KEY, PROVIDER_KEY_ENV
from tests.gateway.recording_upstream import RecordingUpstream, WireRequest
from tests.processes import Running, start_gateway


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    recording = RecordingUpstream().start()
    yield recording
    recording.stop()


@pytest.fixture(scope="module")
def wire_gateway(workdir: Path, upstream: RecordingUpstream) -> Iterator[Running]:
    config: dict[str, Any] = {
        "auth": {"keys": [{"name": "tests", "key": "${TEST_GATEWAY_KEY}"}]},
        "providers": {
            "raw": {
                "base_url": f"{upstream.url}/v1",
                "api_key": "${TEST_PROVIDER_KEY}",
                "headers": {"X-Provider-Token": "provider-own-token"},
            }
        },
        "routes": {
            "gpt-4o": {"variants": {"only": {"provider": "raw", "model": "gpt-4o-2024-08-06"}}},
            "same-name": {"variants": {"only": {"provider": "raw", "model": "same-name"}}},
        },
        "capture": {"enabled": False},
    }
    running = start_gateway(
        workdir, config, env={"TEST_GATEWAY_KEY": GATEWAY_KEY, **PROVIDER_KEY_ENV}
    )
    yield running
    running.stop()


def raw_request(gateway: Running, target: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    """Send a request line exactly as given (httpx would normalise the path)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            method + b" " + target + b" HTTP/1.1\r\nhost: gw\r\n"
            b"authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\n"
            b"content-length: 0\r\nconnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def forwarded(upstream: RecordingUpstream, before: int) -> list[WireRequest]:
    return upstream.requests[before:]


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/files/a%01b",
        b"/v1/batches/%00",
        b"/v1/files/a%20b",
        b"/v1/files/abc%3Fpurpose=x",
        b"/v1/files/a%2Fb",
        b"/v1/files/file-abc/content?purpose=fine-tune&x=%2F%3F",
        b"/v1/vector_stores/vs_1/files?limit=2",
    ],
)
def test_the_path_goes_upstream_as_the_client_encoded_it(
    wire_gateway: Running, upstream: RecordingUpstream, target: bytes
) -> None:
    before = len(upstream.requests)
    status, body = raw_request(wire_gateway, target)
    assert status == 200, body
    (sent,) = forwarded(upstream, before)
    assert sent.target == target
    assert b"Traceback" not in body


def test_an_unknown_model_with_a_control_character_is_404(wire_gateway: Running) -> None:
    status, body = raw_request(wire_gateway, b"/v1/models/%00")
    assert status == 404, body
    assert orjson.loads(body)["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/../x",
        b"/v1/./files",
        b"/v1/..%2fx",
        b"/v1/%2e%2e/x",
        b"/v1/%2E%2e%2Fadmin",
        b"/v1/files/..",
        b"/v1/files/x%2f..%2f..%2fadmin",
        b"/v1/files/a%5c..%5cb",
        b"/v1/files/a\\b",
        b"/v1/files/%zz",
        b"/v1/files/x?q=a%zz",
    ],
)
def test_paths_that_could_leave_v1_or_turn_into_syntax_are_400(
    wire_gateway: Running, upstream: RecordingUpstream, target: bytes
) -> None:
    before = len(upstream.requests)
    status, body = raw_request(wire_gateway, target)
    assert status == 400, body
    error = orjson.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_path"
    assert forwarded(upstream, before) == []


def test_raw_non_ascii_in_the_path_is_refused(
    wire_gateway: Running, upstream: RecordingUpstream
) -> None:
    """uvicorn's parser refuses it before the gateway sees it; either way nothing is sent."""
    before = len(upstream.requests)
    status, _ = raw_request(wire_gateway, b"/v1/files/caf\xc3\xa9")
    assert status == 400
    assert forwarded(upstream, before) == []


def test_client_credentials_in_any_header_stay_behind(
    wire_gateway: Running, upstream: RecordingUpstream
) -> None:
    secrets = {
        "x-api-key": "sk-ant-client-secret",
        "api-key": "azure-client-secret",
        "x-goog-api-key": "goog-client-secret",
        "cookie": "session=client-secret",
        "proxy-authorization": "Basic client-secret",
        "x-provider-token": "client-forged-token",
    }
    before = len(upstream.requests)
    for path in ("/v1/files", "/v1/chat/completions"):
        response = httpx.post(
            f"{wire_gateway.url}{path}",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {GATEWAY_KEY}", "x-kept": "yes", **secrets},
        )
        assert response.status_code == 200, response.text
    sent = forwarded(upstream, before)
    assert len(sent) == 2
    for request in sent:
        wire = repr(request.headers)
        for value in secrets.values():
            assert value not in wire
        assert GATEWAY_KEY not in wire
        headers = [(name.lower(), value) for name, value in request.headers]
        assert ("authorization", f"Bearer {PROVIDER_KEY}") in headers
        assert [v for n, v in headers if n == "x-provider-token"] == ["provider-own-token"]
        assert ("x-kept", "yes") in headers


BODY = (
    b'{ "model" : "gpt-4o",\n  "messages": [{"role": "user", "content": "caf\\u00e9 \\/ 1.50"}],'
    b' "seed": 123456789012345678901234567890, "temperature": 1.50, "top_p": 1e0,'
    b' "metadata": {"model": "not this one"}, "x_big": -98765432109876543210 }'
)


def test_the_body_goes_upstream_byte_for_byte_but_model(
    wire_gateway: Running, upstream: RecordingUpstream
) -> None:
    before = len(upstream.requests)
    response = httpx.post(
        f"{wire_gateway.url}/v1/chat/completions",
        content=BODY,
        headers={"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    (sent,) = forwarded(upstream, before)
    assert sent.body == BODY.replace(b'"gpt-4o"', b'"gpt-4o-2024-08-06"', 1)


def test_a_body_whose_model_is_unchanged_goes_as_it_came(
    wire_gateway: Running, upstream: RecordingUpstream
) -> None:
    body = BODY.replace(b'"gpt-4o"', b'"same-name"', 1)
    before = len(upstream.requests)
    response = httpx.post(
        f"{wire_gateway.url}/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    (sent,) = forwarded(upstream, before)
    assert sent.body == body


def test_a_stream_gets_the_usage_option_and_keeps_every_other_byte(
    wire_gateway: Running, upstream: RecordingUpstream
) -> None:
    body = BODY.replace(b'"seed"', b'"stream": true, "seed"')
    before = len(upstream.requests)
    with httpx.stream(
        "POST",
        f"{wire_gateway.url}/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"},
    ) as response:
        streamed = response.read()
    assert response.status_code == 200, streamed
    assert b"[DONE]" in streamed and b'"usage"' not in streamed
    (sent,) = forwarded(upstream, before)
    expected = b'{"stream_options":{"include_usage":true}, ' + body[2:].replace(
        b'"gpt-4o"', b'"gpt-4o-2024-08-06"', 1
    )
    assert sent.body == expected


def test_a_repeated_model_key_is_replaced_everywhere_it_counts(
    wire_gateway: Running, upstream: RecordingUpstream
) -> None:
    """A provider that reads the first of two keys must not get the client's own model."""
    body = b'{"model": "gpt-4-32k", "messages": [], "mod\\u0065l": "gpt-4o"}'
    before = len(upstream.requests)
    response = httpx.post(
        f"{wire_gateway.url}/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    (sent,) = forwarded(upstream, before)
    assert sent.body == (
        b'{"model": "gpt-4o-2024-08-06", "messages": [], "mod\\u0065l": "gpt-4o-2024-08-06"}'
    )
