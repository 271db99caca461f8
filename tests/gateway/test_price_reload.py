"""A reload that changes ``capture.prices`` (what ``gateway register --price`` writes) prices
the calls captured after it: in the store, in the metrics' unpriced count, in the savings."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.processes import start_gateway, start_simulator

KEY = "sk-price-reload"
ADMIN = "sk-price-reload-admin"
MODEL = "student-support-0001"  # a model the built-in table does not know


def _config(simulator_url: str, database: Path, prices: dict[str, Any]) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"name": "t", "key": KEY}]},
        "admin": {"keys": [{"name": "ops", "key": ADMIN}]},
        "providers": {"sim": {"base_url": f"{simulator_url}/v1"}},
        "routes": {"support": {"variants": {"student": {"provider": "sim", "model": MODEL}}}},
        "capture": {
            "database_url": f"sqlite+aiosqlite:///{database}",
            "flush_interval_ms": 20,
            "prices": prices,
        },
    }


def _costs(database: Path, expected: int) -> list[float | None]:
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(database) as db:
            rows = [r[0] for r in db.execute("SELECT cost_usd FROM calls ORDER BY created_at")]
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_a_reloaded_price_prices_the_next_calls(tmp_path: Path) -> None:
    simulator = start_simulator(tmp_path)
    database = tmp_path / "capture.db"
    gateway = start_gateway(tmp_path, _config(simulator.url, database, {}))
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            body = {"model": "support", "messages": [{"role": "user", "content": "hello"}]}
            auth = {"authorization": f"Bearer {KEY}"}
            client.post("/v1/chat/completions", json=body, headers=auth).raise_for_status()
            assert _costs(database, 1) == [None]  # unknown, never 0

            config_path = next(tmp_path.glob("gateway-*.yaml"))
            config = yaml.safe_load(config_path.read_text())
            config["capture"]["prices"] = {MODEL: {"input": 1.0, "output": 2.0}}
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            client.post(
                "/admin/reload", headers={"authorization": f"Bearer {ADMIN}"}
            ).raise_for_status()

            client.post("/v1/chat/completions", json=body, headers=auth).raise_for_status()
            costs = _costs(database, 2)
            assert costs[0] is None and costs[1] is not None and costs[1] > 0
    finally:
        gateway.stop()
        simulator.stop()
