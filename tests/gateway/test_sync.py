"""Admin changes to routes reach every replica sharing a Redis, and later ones too."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.gateway.test_limits import needs_redis
from tests.processes import Running, start_gateway

ADMIN = "sk-sync-admin"


def config(sim_url: str, prefix: str) -> dict[str, Any]:
    return {
        "auth": "none",
        "admin": {"keys": [{"name": "ops", "key": ADMIN}]},
        "redis": {"url": "redis://127.0.0.1:6379/0", "prefix": prefix},
        "providers": {"sim": {"base_url": f"{sim_url}/v1"}},
        "routes": {
            "support": {
                "variants": {
                    "teacher": {"provider": "sim", "model": "gpt-4o", "weight": 95},
                    "student": {"provider": "sim", "model": "gpt-4o-mini", "weight": 5},
                },
                "sticky": "user",
            }
        },
        "capture": {"enabled": False},
    }


def routes(gateway: Running) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway.url}/admin/routes", headers={"authorization": f"Bearer {ADMIN}"}
    )
    result: dict[str, Any] = response.json()["routes"]
    return result


def weight_on(gateway: Running, variant: str = "student") -> int:
    return int(routes(gateway)["support"]["variants"][variant]["weight"])


def eventually(check: Any, within: float = 1.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the change did not arrive in time"
        time.sleep(0.02)


@needs_redis
def test_a_ramp_on_one_replica_reaches_the_others(tmp_path: Path, simulator: Running) -> None:
    shared = config(simulator.url, f"test-{uuid.uuid4().hex}")
    first = start_gateway(tmp_path, shared)
    second = start_gateway(tmp_path, shared)
    late: Running | None = None
    try:
        changed = httpx.put(
            f"{first.url}/admin/routes/support",
            json={"weights": {"teacher": 50, "student": 50}},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
        assert changed.status_code == 200
        eventually(lambda: weight_on(second) == 50)
        added = httpx.post(
            f"{second.url}/admin/routes/support/variants",
            json={"name": "next", "provider": "sim", "model": "ft:gpt-4o-mini:acme::n"},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
        assert added.status_code == 201
        eventually(lambda: "next" in routes(first)["support"]["variants"])

        late = start_gateway(tmp_path, shared)  # started after the changes
        assert weight_on(late) == 50 and "next" in routes(late)["support"]["variants"]

        reloaded = httpx.post(
            f"{first.url}/admin/reload", headers={"authorization": f"Bearer {ADMIN}"}
        )
        assert reloaded.status_code == 200
        for replica in (first, second, late):
            eventually(lambda r=replica: weight_on(r) == 5)
            assert "next" not in routes(replica)["support"]["variants"]
    finally:
        for running in (first, second, late):
            if running is not None:
                running.stop()
