"""A real gateway whose Redis is down: calls follow the policy, the x-ratelimit-* headers never
make up figures, and the failures are counted in /metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.processes import Running, free_port, start_gateway

OPEN_KEY = "sk-open-key-while-redis-is-down"
CLOSED_KEY = "sk-closed-key-while-redis-is-down"
BODY = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}'


def config(sim_url: str, redis_port: int, on_failure: str) -> dict[str, Any]:
    return {
        "auth": {
            "keys": [
                {"name": "limited", "key": "${LIMITED_KEY}", "rpm": 1000, "tpm": 1_000_000},
            ]
        },
        # Nothing listens there: every admit fails at once (connection refused).
        "redis": {
            "url": f"redis://127.0.0.1:{redis_port}/0",
            "prefix": f"test-{uuid.uuid4().hex}",
            "on_failure": on_failure,
        },
        "providers": {"sim": {"base_url": f"{sim_url}/v1"}},
        "routes": {"gpt-4o": {"variants": {"t": {"provider": "sim", "model": "gpt-4o"}}}},
    }


def _start(
    tmp_path_factory: pytest.TempPathFactory, simulator: Running, key: str, on_failure: str
) -> Running:
    workdir = tmp_path_factory.mktemp(f"redis-down-{on_failure}")
    return start_gateway(
        workdir, config(simulator.url, free_port(), on_failure), env={"LIMITED_KEY": key}
    )


@pytest.fixture(scope="module")
def fail_open(tmp_path_factory: pytest.TempPathFactory, simulator: Running) -> Iterator[Running]:
    gateway = _start(tmp_path_factory, simulator, OPEN_KEY, "open")
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def fail_closed(tmp_path_factory: pytest.TempPathFactory, simulator: Running) -> Iterator[Running]:
    gateway = _start(tmp_path_factory, simulator, CLOSED_KEY, "closed")
    yield gateway
    gateway.stop()


def limiter_errors(gateway: Running) -> dict[str, float]:
    """gateway_limiter_errors_total by outcome, from /metrics."""
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gateway_limiter_errors_total{"):
            labels, value = line.rsplit(" ", 1)
            assert 'backend="redis"' in labels
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            found[outcome] = float(value)
    return found


def wait_for_errors(gateway: Running, outcome: str, at_least: float) -> dict[str, float]:
    deadline = time.monotonic() + 30
    errors = limiter_errors(gateway)
    while errors.get(outcome, 0.0) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
        errors = limiter_errors(gateway)
    return errors


def test_calls_admitted_fail_open_carry_no_made_up_limits(fail_open: Running) -> None:
    headers = {"authorization": f"Bearer {OPEN_KEY}", "content-type": "application/json"}
    url = f"{fail_open.url}/v1/chat/completions"
    with httpx.Client(timeout=30) as client:
        for _ in range(3):  # the first call finds Redis down, the next ones skip it a while
            response = client.post(url, content=BODY, headers=headers)
            assert response.status_code == 200, response.text
            names = [name for name in response.headers if name.startswith("x-ratelimit-")]
            assert names == [], f"figures that are not known: {names}"
    errors = wait_for_errors(fail_open, "admitted", 3)
    assert errors["admitted"] >= 3
    assert errors.get("refused", 0.0) == 0.0
    # The calls' tokens could not be counted either: that is reported too.
    assert wait_for_errors(fail_open, "unrecorded", 1)["unrecorded"] >= 1


def test_calls_refused_fail_closed_are_counted(fail_closed: Running) -> None:
    headers = {"authorization": f"Bearer {CLOSED_KEY}", "content-type": "application/json"}
    response = httpx.post(
        f"{fail_closed.url}/v1/chat/completions", content=BODY, headers=headers, timeout=30
    )
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "rate_limit_unavailable"
    assert set(error) >= {"message", "type", "param", "code"}
    assert "x-ratelimit-remaining-requests" not in response.headers
    assert "x-ratelimit-remaining-tokens" not in response.headers
    assert int(response.headers["retry-after"]) >= 1
    errors = wait_for_errors(fail_closed, "refused", 1)
    assert errors["refused"] >= 1
    assert errors.get("admitted", 0.0) == 0.0
