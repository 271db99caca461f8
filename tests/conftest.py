from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.processes import Running, start_gateway, start_simulator

GATEWAY_KEY = "sk-gw-test-6f1d2c"
PROVIDER_KEY = "sk-provider-secret-93ab"
PROVIDER_KEY_ENV = {"TEST_PROVIDER_KEY": PROVIDER_KEY}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("processes")


@pytest.fixture(scope="session")
def simulator(workdir: Path) -> Iterator[Running]:
    running = start_simulator(workdir)
    yield running
    running.stop()


def gateway_config(simulator_url: str, **overrides: Any) -> dict[str, Any]:
    """A gateway with every feature of the core on: keys, a rewritten model, limits."""
    config: dict[str, Any] = {
        "server": {"max_body_bytes": 256 * 1024, "log_level": "debug"},
        "auth": {"keys": [{"name": "tests", "key": "${TEST_GATEWAY_KEY}"}]},
        "providers": {
            "sim": {"base_url": f"{simulator_url}/v1", "api_key": "${TEST_PROVIDER_KEY}"},
            "slow": {
                "base_url": f"{simulator_url}/v1",
                "api_key": "${TEST_PROVIDER_KEY}",
                "read_timeout": 0.5,
            },
            "nowhere": {"base_url": "http://127.0.0.1:9/v1", "connect_timeout": 1},
        },
        "routes": {
            "gpt-4o": {"variants": {"teacher": {"provider": "sim", "model": "gpt-4o"}}},
            "support-bot": {
                "variants": {"student": {"provider": "sim", "model": "ft:gpt-4o-mini:acme::s1"}}
            },
            "text-embedding-3-small": {
                "variants": {"default": {"provider": "sim", "model": "text-embedding-3-small"}}
            },
            "slow-model": {"variants": {"only": {"provider": "slow", "model": "gpt-4o"}}},
            "unreachable-model": {"variants": {"only": {"provider": "nowhere", "model": "gpt-4o"}}},
        },
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def gateway(workdir: Path, simulator: Running) -> Iterator[Running]:
    running = start_gateway(
        workdir,
        gateway_config(simulator.url),
        env={"TEST_GATEWAY_KEY": GATEWAY_KEY, **PROVIDER_KEY_ENV},
    )
    yield running
    running.stop()


@pytest.fixture
def client(gateway: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


@pytest.fixture
def direct(simulator: Running) -> openai.OpenAI:
    """The simulator without the gateway, for comparing answers."""
    return openai.OpenAI(base_url=f"{simulator.url}/v1", api_key="direct", max_retries=0)


@pytest.fixture
def http(gateway: Running) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=gateway.url, headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=10
    ) as client:
        yield client


def last_upstream_request(simulator: Running) -> dict[str, Any]:
    recorded: list[dict[str, Any]] = httpx.get(f"{simulator.url}/_sim/requests").json()
    assert recorded, "the simulator recorded no request"
    return recorded[-1]
