"""Virtual keys across two replicas sharing the machine's PostgreSQL and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.capture_support import open_backend
from tests.gateway.test_limits import needs_redis
from tests.processes import Running, start_gateway

ADMIN = "sk-keys-admin"
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def config(sim_url: str, database_url: str, prefix: str) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"name": "config-key", "key": "sk-config-key"}]},
        "admin": {"keys": [{"name": "ops", "key": ADMIN}]},
        "redis": {"url": "redis://127.0.0.1:6379/0", "prefix": prefix},
        "providers": {"sim": {"base_url": f"{sim_url}/v1"}},
        "routes": {
            "gpt-4o": {"variants": {"t": {"provider": "sim", "model": "gpt-4o"}}},
            "other": {"variants": {"t": {"provider": "sim", "model": "gpt-4o-mini"}}},
        },
        "capture": {"database_url": database_url, "flush_interval_ms": 20},
    }


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, simulator: Running
) -> Iterator[tuple[Running, Running, Path]]:
    workdir = tmp_path_factory.mktemp("keys")
    with open_backend("postgresql", workdir, "keys") as backend:
        url = backend.new_url()
        shared = config(simulator.url, url, f"test-{uuid.uuid4().hex}")
        first = start_gateway(workdir, shared)
        second = start_gateway(workdir, shared)
        config_file = workdir / "cli.yaml"
        config_file.write_text(yaml.safe_dump(shared, sort_keys=False))
        try:
            yield first, second, config_file
        finally:
            first.stop()
            second.stop()


def call(gateway: Running, key: str, model: str = "gpt-4o") -> int:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={**BODY, "model": model},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    return response.status_code


def admin(gateway: Running, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, f"{gateway.url}{path}", headers={"authorization": f"Bearer {ADMIN}"}, **kwargs
    )


def wait_for_status(gateways: tuple[Running, ...], key: str, status: int, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if all(call(g, key) == status for g in gateways):
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"not every replica answered {status} within {within} s")


@needs_redis
def test_a_key_made_on_one_replica_works_on_both_and_revocation_reaches_both(
    replicas: tuple[Running, Running, Path],
) -> None:
    first, second, _ = replicas
    made = admin(first, "POST", "/admin/keys", json={"name": "app-1", "rpm": 1000})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert key.startswith("sk-gw-")
    wait_for_status((first, second), key, 200, within=1.0)
    listed = admin(second, "GET", "/admin/keys").json()["keys"]
    assert [k["name"] for k in listed] == ["app-1"]
    assert key not in json.dumps(listed)

    revoked = admin(second, "DELETE", f"/admin/keys/{made.json()['id']}")
    assert revoked.status_code == 200
    took = wait_for_status((first, second), key, 401, within=1.0)
    assert took < 1.0
    assert call(first, "sk-config-key") == 200  # keys in the config file keep working


@needs_redis
def test_the_cli_manages_keys_and_tells_the_replicas(
    replicas: tuple[Running, Running, Path],
) -> None:
    first, second, config_file = replicas

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "keys", *args, "--config", str(config_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = cli("create", "--name", "batch-job", "--routes", "gpt-4o", "--daily-budget", "5")
    assert made.returncode == 0, made.stderr
    described = json.loads(made.stdout)
    key = described["key"]
    assert described["routes"] == ["gpt-4o"] and described["daily_budget_usd"] == 5
    wait_for_status((first, second), key, 200, within=1.0)
    assert call(first, key, model="other") == 403
    listing = cli("list")
    assert "batch-job" in listing.stdout and key not in listing.stdout
    assert cli("revoke", "batch-job").returncode == 0
    wait_for_status((first, second), key, 401, within=1.0)
    assert cli("revoke", "batch-job").returncode == 2
    assert cli("create", "--name", "x", "--routes", "nope").returncode == 2


def test_admin_key_api_needs_the_admin_key(replicas: tuple[Running, Running, Path]) -> None:
    first, _, _ = replicas
    denied = httpx.post(f"{first.url}/admin/keys", json={"name": "x"})
    assert denied.status_code == 401
    bad = admin(first, "POST", "/admin/keys", json={"name": "x", "routes": ["ghost"]})
    assert bad.status_code == 400
    missing = admin(first, "DELETE", "/admin/keys/no-such-key")
    assert missing.status_code == 404


def test_no_key_is_written_to_the_config_or_logs(
    replicas: tuple[Running, Running, Path], tmp_path: Path
) -> None:
    first, second, _ = replicas
    made = admin(first, "POST", "/admin/keys", json={"name": "log-check"})
    key = made.json()["key"]
    call(first, key)
    admin(first, "DELETE", "/admin/keys/log-check")
    for gateway in (first, second):
        assert key not in gateway.log.read_text()


def test_captures_from_both_replicas_land_in_one_store(
    replicas: tuple[Running, Running, Path],
) -> None:
    from tests.capture_support import rows_of

    first, second, config_file = replicas
    ids = []
    for gateway in (first, second, first, second):
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json=BODY,
            headers={"authorization": "Bearer sk-config-key"},
            timeout=10,
        )
        ids.append(response.headers["x-request-id"])
    url = yaml.safe_load(config_file.read_text())["capture"]["database_url"]
    with rows_of(url) as rows:
        rows.wait_for_ids(ids)
        assert rows.ids(ids) == set(ids)


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_redis_stopped_and_restarted_under_a_gateway(
    policy: str, tmp_path: Path, simulator: Running
) -> None:
    from tests.gateway.test_limits import start_redis
    from tests.processes import free_port

    port = free_port()
    redis = [start_redis(port)]
    settings = {
        "auth": {"keys": [{"name": "limited", "key": "sk-redis-policy", "rpm": 2}]},
        "redis": {"url": f"redis://127.0.0.1:{port}/0", "on_failure": policy},
        "providers": {"sim": {"base_url": f"{simulator.url}/v1"}},
        "routes": {"gpt-4o": {"variants": {"t": {"provider": "sim", "model": "gpt-4o"}}}},
        "capture": {"enabled": False},
    }
    gateway = start_gateway(tmp_path, settings)
    try:
        assert [call(gateway, "sk-redis-policy") for _ in range(3)] == [200, 200, 429]
        redis[0].terminate()
        redis[0].wait(timeout=10)
        down = [call(gateway, "sk-redis-policy") for _ in range(3)]
        assert down == ([200] * 3 if policy == "open" else [429] * 3)
        redis.append(start_redis(port))  # empty: the window starts again
        time.sleep(1.1)
        assert [call(gateway, "sk-redis-policy") for _ in range(3)] == [200, 200, 429]
        assert "Redis is unreachable" in gateway.log.read_text()
    finally:
        gateway.stop()
        for process in redis:
            process.terminate()
            process.wait(timeout=10)
