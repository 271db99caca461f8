"""Graceful shutdown through real processes: SIGTERM while long streams are open.

The gateway gets a short drain (``server.shutdown_delay_s`` then ``shutdown_timeout_s``) and
streams that the simulator makes slow (``x-sim-token-ms``), so that they are still open at the
deadline. From SIGTERM on /readyz answers 503 while calls are still served; at the deadline
every open stream gets an error event in OpenAI's stream shape and is completed, never cut; the
calls are captured with their error, and the process exits cleanly. With one worker and two.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from capture.migrate import upgrade
from gateway.draining import SHUTTING_DOWN
from gateway.relay import Call, relay_stream
from gateway.settings import ConfigError, parse_settings
from router.upstream import BufferedResponse
from tests.capture_support import poll, rows_of
from tests.conftest import GATEWAY_KEY, PROVIDER_KEY_ENV, gateway_config
from tests.processes import Running, start_gateway

# Long enough to see /readyz answer 503 on a loaded machine, short enough for a quick test.
DELAY_S = 4.0
TIMEOUT_S = 2.0
# Every reply has 12 tokens or more: at 2 s a token no stream can finish before the deadline.
SLOW = {"x-sim-ttft-ms": "0", "x-sim-token-ms": "2000"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a long story"}]}
WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])


@contextmanager
def draining_gateway(
    workdir: Path, simulator: Running, workers: int, delay_s: float
) -> Iterator[tuple[Running, str]]:
    """A gateway with a short drain; yields it and its capture database's URL."""
    config = gateway_config(simulator.url)
    config["server"] = {
        **config["server"],
        "shutdown_delay_s": delay_s,
        "shutdown_timeout_s": TIMEOUT_S,
    }
    url = f"sqlite+aiosqlite:///{workdir}/shutdown-{workers}-{time.monotonic_ns()}.db"
    config["capture"] = {"database_url": url}
    # Initialised ahead: workers that find an empty database each try to initialise it.
    upgrade(url)
    running = start_gateway(
        workdir,
        config,
        env={"TEST_GATEWAY_KEY": GATEWAY_KEY, **PROVIDER_KEY_ENV},
        extra_args=["--workers", str(workers)],
    )
    try:
        yield running, url
    finally:
        running.stop()


def _exited_cleanly(gateway: Running) -> str:
    try:
        returncode = gateway.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the gateway did not exit after SIGTERM:\n{gateway.log.read_text()}")
    log = gateway.log.read_text()
    # uvicorn re-raises the signal once it has shut down cleanly: exit by SIGTERM is normal.
    assert returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log
    assert "timeout graceful shutdown exceeded" not in log, log  # nothing left for uvicorn
    return log


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any] | str]:
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: ") :]
            yield data if data == "[DONE]" else json.loads(data)


class _Waiting(threading.Thread):
    """A plain call whose upstream takes a minute to answer, made in the background."""

    def __init__(self, gateway: Running, marker: str) -> None:
        super().__init__(daemon=True)
        self.gateway, self.marker = gateway, marker
        self.answers: list[httpx.Response] = []

    def run(self) -> None:
        self.answers.append(
            httpx.post(
                f"{self.gateway.url}/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": self.marker}]},
                headers={"authorization": f"Bearer {GATEWAY_KEY}", "x-sim-ttft-ms": "60000"},
                timeout=60,
            )
        )


def _call_in_flight(gateway: Running, simulator: Running) -> _Waiting:
    """Start a waiting call; back once the simulator has it (the gateway waits on it)."""
    waiting = _Waiting(gateway, f"waiting-{uuid.uuid4().hex}")
    waiting.start()

    def arrived() -> bool:
        recorded = httpx.get(f"{simulator.url}/_sim/requests", timeout=10).json()
        return any(waiting.marker in json.dumps(entry.get("body")) for entry in recorded)

    poll(arrived, "the waiting call to reach the upstream")
    return waiting


def _readyz(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code
    except httpx.TransportError:
        return None  # the listener is closed


@WORKERS
def test_readyz_answers_503_from_sigterm_while_calls_are_still_served(
    workdir: Path, simulator: Running, workers: int
) -> None:
    with draining_gateway(workdir, simulator, workers, DELAY_S) as (gateway, _):
        assert _readyz(gateway.url) == 200
        gateway.process.send_signal(signal.SIGTERM)
        poll(lambda: _readyz(gateway.url) == 503, "/readyz to answer 503 after SIGTERM")
        body = httpx.get(f"{gateway.url}/readyz", timeout=10).json()
        assert body == {"status": "not ready"}
        # A load balancer that has not noticed yet still gets its calls answered.
        answer = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {GATEWAY_KEY}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
        _exited_cleanly(gateway)


@WORKERS
def test_streams_open_at_the_deadline_end_with_an_error_event(
    workdir: Path, simulator: Running, workers: int
) -> None:
    with draining_gateway(workdir, simulator, workers, 0.0) as (gateway, database_url):
        headers = {"authorization": f"Bearer {GATEWAY_KEY}", **SLOW}
        sdk = openai.OpenAI(
            base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=60
        )
        body = {**CHAT, "stream": True}
        with (
            httpx.Client(base_url=gateway.url, timeout=60) as http,
            http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as raw,
        ):
            assert raw.status_code == 200
            request_id = raw.headers["x-request-id"]
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
            # And a call still waiting for its upstream's first byte.
            waiting = _call_in_flight(gateway, simulator)

            gateway.process.send_signal(signal.SIGTERM)
            # At the deadline the stream gets the error event, then ends cleanly (no cut).
            rest = list(raw_events)
        assert rest, "the stream ended without an event after SIGTERM"
        last = rest[-1]
        assert isinstance(last, dict) and "error" in last, rest[-3:]
        assert set(last["error"]) == {"message", "type", "param", "code"}
        assert last["error"]["code"] == SHUTTING_DOWN
        assert "[DONE]" not in rest
        assert all("choices" in event for event in rest[:-1] if isinstance(event, dict))

        # The SDK raises the gateway's error, not a connection error.
        with pytest.raises(openai.APIError) as raised:
            for _ in sdk_stream:
                pass
        assert not isinstance(raised.value, openai.APIConnectionError), raised.value
        assert raised.value.code == SHUTTING_DOWN

        # The call not answered by the deadline gets a 503 in OpenAI's shape, not a cut.
        waiting.join(timeout=60)
        assert waiting.answers, "the waiting call got no answer"
        answer = waiting.answers[0]
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == SHUTTING_DOWN
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}

        _exited_cleanly(gateway)
        # The calls are recorded, with their errors.
        with rows_of(database_url) as rows:
            row = poll(lambda: rows.call(request_id), "the stream's capture row")
            plain = poll(
                lambda: rows.call(answer.headers["x-request-id"]), "the waiting call's row"
            )
        assert row["error"].startswith("stream ended: the gateway is shutting down"), row
        assert row["stream"]
        assert plain["status"] == 503 and "shutting down" in plain["error"], plain


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ({"shutdown_timeout_s": -1}, "server.shutdown_timeout_s: Input should be greater"),
        ({"shutdown_delay_s": "soon"}, "server.shutdown_delay_s: Input should be a valid number"),
    ],
)
def test_a_bad_drain_setting_is_named(server: dict[str, Any], problem: str) -> None:
    config = gateway_config("http://127.0.0.1:9")
    config["server"] = {**config["server"], **server}
    with pytest.raises(ConfigError, match=re.escape(problem)):
        parse_settings(config, {"TEST_GATEWAY_KEY": GATEWAY_KEY, **PROVIDER_KEY_ENV})


def test_an_event_cut_in_half_is_closed_before_the_error_event() -> None:
    """The error event is an event of its own even when the upstream broke off mid-event."""
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    whole = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    upstream = BufferedResponse(200, {}, whole + b'data: {"choi')
    arrived = asyncio.run(
        relay_stream(upstream, send, Call(), None, sse=True, end_marker=b"[DONE]")
    )
    assert not arrived
    body = b"".join(message.get("body", b"") for message in sent[1:])
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1].startswith(b'data: {"error"')
    assert json.loads(events[-1][6:])["error"]["code"] == "upstream_stream_interrupted"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
