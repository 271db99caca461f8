"""Graceful shutdown through real processes: SIGTERM while long streams are open.

The gateway gets a short drain (``server.shutdown_delay_s`` then ``shutdown_timeout_s``) and
streams that the simulator makes slow (``x-sim-token-ms``), so that they are still open at the
deadline. From SIGTERM on /readyz answers 503 while calls are still served; at the deadline
every open stream gets an error event in OpenAI's stream shape and is completed, never cut; the
calls are captured with their error, and the process exits cleanly. With one worker and two.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.relay import SHUTTING_DOWN
from tests.capture_support import poll, rows_of
from tests.conftest import GATEWAY_KEY, PROVIDER_KEY_ENV, gateway_config
from tests.processes import Running, start_gateway

# Long enough to see /readyz answer 503 on a loaded machine, short enough for a quick test.
DELAY_S = 4.0
TIMEOUT_S = 3.0
# Every reply has 12 tokens or more: at 2 s a token no stream can finish before the deadline.
SLOW = {"x-sim-ttft-ms": "0", "x-sim-token-ms": "2000"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a long story"}]}


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def draining_gateway(
    request: pytest.FixtureRequest, workdir: Path, simulator: Running
) -> Iterator[tuple[Running, str]]:
    config = gateway_config(simulator.url)
    config["server"] = {
        **config["server"],
        "shutdown_delay_s": DELAY_S,
        "shutdown_timeout_s": TIMEOUT_S,
    }
    database = workdir / f"shutdown-{request.param}-{time.monotonic_ns()}.db"
    config["capture"] = {"database_url": f"sqlite+aiosqlite:///{database}"}
    running = start_gateway(
        workdir,
        config,
        env={"TEST_GATEWAY_KEY": GATEWAY_KEY, **PROVIDER_KEY_ENV},
        extra_args=["--workers", str(request.param)],
    )
    try:
        yield running, f"sqlite+aiosqlite:///{database}"
    finally:
        running.stop()


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any] | str]:
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: ") :]
            yield data if data == "[DONE]" else json.loads(data)


def _readyz(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code
    except httpx.TransportError:
        return None  # the listener is closed


def test_sigterm_ends_open_streams_with_an_error_event(
    draining_gateway: tuple[Running, str],
) -> None:
    gateway, database_url = draining_gateway
    assert _readyz(gateway.url) == 200
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", **SLOW}
    sdk = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=60
    )
    with (
        httpx.Client(base_url=gateway.url, timeout=60) as http,
        http.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
        ) as raw,
    ):
        assert raw.status_code == 200
        raw_request_id = raw.headers["x-request-id"]
        raw_events = _events(raw.iter_lines())
        first = next(raw_events)
        assert isinstance(first, dict) and "choices" in first
        sdk_stream = iter(
            sdk.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "a long story"}],
                stream=True,
                extra_headers=SLOW,
            )
        )
        assert next(sdk_stream).choices is not None

        gateway.process.send_signal(signal.SIGTERM)
        # Not ready at once, while calls are still taken: the load balancer stops sending.
        poll(lambda: _readyz(gateway.url) == 503, "/readyz to answer 503 after SIGTERM")
        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {GATEWAY_KEY}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text

        # At the deadline the stream gets the error event, then ends cleanly (no cut).
        rest = list(raw_events)
    assert rest, "the stream ended without an event after SIGTERM"
    last = rest[-1]
    assert isinstance(last, dict) and "error" in last, rest[-3:]
    error = last["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == SHUTTING_DOWN
    assert "[DONE]" not in rest
    assert all("choices" in event for event in rest[:-1] if isinstance(event, dict))

    # The SDK raises the gateway's error, not a connection error.
    with pytest.raises(openai.APIError) as raised:
        for _ in sdk_stream:
            pass
    assert not isinstance(raised.value, openai.APIConnectionError), raised.value
    assert raised.value.code == SHUTTING_DOWN

    try:
        returncode = gateway.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the gateway did not exit after SIGTERM:\n{gateway.log.read_text()}")
    log = gateway.log.read_text()
    # uvicorn re-raises the signal once it has shut down cleanly: exit by SIGTERM is normal.
    assert returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log
    assert "timeout graceful shutdown exceeded" not in log, log  # nothing left for uvicorn
    with rows_of(database_url) as rows:
        row = poll(lambda: rows.call(raw_request_id), "the stream's capture row")
    assert row["error"].startswith("stream ended: the gateway is shutting down"), row["error"]
    assert row["stream"]
