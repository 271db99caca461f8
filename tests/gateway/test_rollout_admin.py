"""The rollout admin API through a real gateway: start, describe, abort, its refusals in the
admin API's shape, and each decision posted to the webhook (a failure counted, never raised)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from capture.rollouts import RolloutTable
from capture.students import record_student
from exporter.hyperparams import training_price
from tests.gateway.rollout_support import (
    ADMIN_KEY,
    GATEWAY_KEY,
    admin,
    gateway_config,
    plan,
    rollout,
    wait_until,
)
from tests.processes import Running, start_gateway, start_simulator


class Receiver:
    """A webhook on loopback: answers 500 to the first post, 200 after; keeps the bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(500 if len(received) == 1 else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def gateway(tmp_path: Path, receiver: Receiver) -> Iterator[Running]:
    simulator = start_simulator(tmp_path)
    config = gateway_config(simulator.url, f"sqlite+aiosqlite:///{tmp_path / 'capture.db'}")
    config["autopilot"]["webhook_url"] = receiver.url
    running = start_gateway(tmp_path, config)
    yield running
    running.stop()
    simulator.stop()


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    message: str = error["message"]
    return message


def _metric(gateway: Running, name: str, labels: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}}\s+(\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_start_describe_abort_and_the_refusals(gateway: Running, receiver: Receiver) -> None:
    path = "/admin/routes/support/rollout"
    unauthorised = httpx.get(f"{gateway.url}/admin/rollouts", timeout=10)
    _error(unauthorised, 401, "missing_api_key")
    assert admin(gateway, "GET", "/admin/rollouts").json() == {"rollouts": []}
    _error(admin(gateway, "GET", path), 404, "rollout_not_found")
    _error(
        admin(gateway, "POST", "/admin/routes/nope/rollout", json=plan()), 404, "route_not_found"
    )
    bad = admin(gateway, "POST", path, json={"candidate": "student", "stagez": [0]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "stagez"
    message = _error(admin(gateway, "POST", path, json=plan("pupil")), 400, "invalid_rollout")
    assert "candidate: unknown variant 'pupil'" in message
    message = _error(
        admin(gateway, "POST", path, json=plan(stages=[0.5, 0.1])), 400, "invalid_rollout"
    )
    assert "stage shares" in message
    _error(admin(gateway, "DELETE", path), 404, "rollout_not_found")

    started = admin(gateway, "POST", path, json=plan())
    assert started.status_code == 201, started.text
    assert started.json()["status"] == "running" and started.json()["incumbent"] == "teacher"
    _error(admin(gateway, "POST", path, json=plan()), 409, "rollout_running")

    # a few calls: the slice appears, its fresh gates are described (infinite bounds as null)
    with httpx.Client(timeout=10) as client:
        for i in range(3):
            client.post(
                f"{gateway.url}/v1/chat/completions",
                json={"model": "support", "messages": [{"role": "user", "content": f"hi {i}"}]},
                headers={"authorization": f"Bearer {GATEWAY_KEY}"},
            ).raise_for_status()
    described = wait_until(
        lambda: (r := rollout(gateway)) is not None and r["slices"] and r, "the first slice"
    )
    gates = described["slices"][0]["gates"]
    assert {g["name"] for g in gates["gates"]} >= {"quality", "errors"}
    assert gates["action"] == "hold"
    assert described["holder"]
    assert _metric(gateway, "gateway_rollout_share", 'route="support",slice="*"') == 0.0

    long_reason = admin(gateway, "DELETE", path, params={"reason": "x" * 501})
    _error(long_reason, 400, "invalid_reason")
    for control in ("a\x00b", "forged\nINFO log line"):
        _error(admin(gateway, "DELETE", path, params={"reason": control}), 400, "invalid_reason")
    aborted = admin(gateway, "DELETE", path, params={"reason": "a test"})
    assert aborted.status_code == 202, aborted.text
    assert aborted.json()["abort_requested"] == "a test"
    done = wait_until(
        lambda: (r := rollout(gateway)) is not None and r["status"] == "aborted" and r,
        "the abort applied",
        timeout=10,
    )
    assert done["abort_requested"] is None and done["reason"] == "aborted: a test"
    assert done["decisions"][-1]["action"] == "abort"
    _error(admin(gateway, "DELETE", path), 409, "rollout_not_running")
    listed = admin(gateway, "GET", "/admin/rollouts").json()["rollouts"]
    assert [(r["route"], r["status"]) for r in listed] == [("support", "aborted")]

    # a new rollout may start once the last one finished; its abort reaches the webhook too
    assert admin(gateway, "POST", path, json=plan()).status_code == 201
    assert admin(gateway, "DELETE", path, params={"reason": "again"}).status_code == 202
    wait_until(lambda: len(receiver.bodies) >= 3, "the decisions posted", timeout=15)
    posted = [(b["route"], b["slice"], b["action"]) for b in receiver.bodies]
    assert posted[0] == ("support", "*", "start")
    assert posted.count(("support", "*", "abort")) == 2
    assert receiver.bodies[-1]["reason"] == "aborted: again"
    assert _metric(gateway, "gateway_rollout_webhook_posts_total", 'outcome="failed"') == 1.0
    assert _metric(gateway, "gateway_rollout_webhook_posts_total", 'outcome="ok"') >= 2.0
    assert (
        _metric(
            gateway, "gateway_rollout_decisions_total", 'route="support",slice="*",action="abort"'
        )
        == 2.0
    )


def test_the_projected_savings_come_from_the_candidates_shadow_copies(gateway: Running) -> None:
    path = "/admin/routes/support/rollout"
    assert admin(gateway, "POST", path, json=plan()).status_code == 201
    # the shadow stage begins at the controller's first look with evidence: call until the
    # student's copies (shadow_sample 1.0) are captured
    with httpx.Client(timeout=10) as client:

        def call_and_look() -> dict[str, Any] | None:
            client.post(
                f"{gateway.url}/v1/chat/completions",
                json={"model": "support", "messages": [{"role": "user", "content": "a question"}]},
                headers={"authorization": f"Bearer {GATEWAY_KEY}"},
            ).raise_for_status()
            r = rollout(gateway)
            found = r is not None and (r.get("projection") or {}).get("sample_calls", 0) >= 3
            return r if found else None

        described = wait_until(call_and_look, "the shadow copies captured", timeout=30)
    # no student registered with a lineage: its training cost is unknown, never 0
    assert described["savings"]["training_cost_usd"] is None
    assert described["savings"]["net_after_training_usd"] is None
    p = described["projection"]
    assert p["share"] == 0.9 and p["calls_per_day"] >= p["sample_calls"]
    # gpt-4o-mini is cheaper than gpt-4o for the same tokens
    assert 0 < p["candidate_cost_per_call_usd"] < p["incumbent_cost_per_call_usd"]
    expected = (
        (p["incumbent_cost_per_call_usd"] - p["candidate_cost_per_call_usd"])
        * p["calls_per_day"]
        * 0.9
    )
    assert p["savings_per_day_usd"] == pytest.approx(expected)
    shown = subprocess.run(
        [sys.executable, "-m", "gateway", "rollout", "status", "support"],
        env={**os.environ, "GATEWAY_ADMIN_URL": gateway.url, "GATEWAY_ADMIN_KEY": ADMIN_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "projected at 90% of" in shown.stdout and "/day saved" in shown.stdout


def test_the_savings_are_net_of_the_reported_training_cost(
    gateway: Running, tmp_path: Path
) -> None:
    """A student registered with the tokens its backend reported it trained on (what `gateway
    register` stores in the lineage) is charged that training at its base model's price."""

    async def register() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'capture.db'}")
        try:
            await record_student(
                engine,
                route="support",
                variant="student",
                model="gpt-4o-mini",
                backend="openai",
                base_model="gpt-4o-mini-2024-07-18",
                lineage={"trained_tokens": 1_000_000, "base_model": "gpt-4o-mini-2024-07-18"},
            )
        finally:
            await engine.dispose()

    asyncio.run(register())
    assert admin(gateway, "POST", "/admin/routes/support/rollout", json=plan()).status_code == 201
    described = rollout(gateway)
    assert described is not None
    savings = described["savings"]
    price = training_price("gpt-4o-mini-2024-07-18")
    assert price is not None and savings["training_cost_usd"] == pytest.approx(price)
    assert savings["net_after_training_usd"] == pytest.approx(
        savings["net_savings_usd"] - savings["training_cost_usd"]
    )


def test_non_finite_numbers_are_refused_and_a_damaged_state_is_listed(
    gateway: Running, tmp_path: Path
) -> None:
    """`Infinity` parses as JSON here; a rollout saved with it could not be read back, so it is
    refused with the field named; a stored state that cannot be read is listed with why."""
    path = "/admin/routes/support/rollout"
    for gates in ({"feedback_range": [0, "Infinity"]}, {"latency_p95_ms": 1e999}):
        body = json.dumps(plan(gates={**plan()["gates"], **gates})).replace('"Infinity"', "1e999")
        refused = httpx.post(
            f"{gateway.url}{path}",
            content=body,
            headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"},
            timeout=30,
        )
        assert refused.status_code == 400, refused.text
        assert "finite" in refused.json()["error"]["message"]
    assert admin(gateway, "GET", "/admin/rollouts").json() == {"rollouts": []}

    async def damage() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'capture.db'}")
        try:
            await RolloutTable(engine).save(
                "support", {"version": 1, "status": "running", "config": {}}, "running", []
            )
        finally:
            await engine.dispose()

    asyncio.run(damage())
    listed = admin(gateway, "GET", "/admin/rollouts")
    assert listed.status_code == 200, listed.text
    (only,) = listed.json()["rollouts"]
    assert only["route"] == "support" and only["status"] == "running"
    described = admin(gateway, "GET", path)
    assert described.status_code == 200 and "cannot be read" in described.json()["unreadable"]
