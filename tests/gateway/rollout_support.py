"""What the rollout scenarios share (tests/gateway/test_rollout_*.py): a gateway configured for
an accelerated rollout (looks every 0.2 s, small stages, a generous margin, small samples), a
background load of tagged calls, the admin API, the simulator's quality rules.

The teacher is ``gpt-4o`` and the student ``gpt-4o-mini`` (both priced, the student cheaper);
the judge route answers from the simulator's judge (``simulator.quality``), which sees the
defects the simulator puts in a worse model's answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx
import pytest

from tests.processes import Running

T = TypeVar("T")

GATEWAY_KEY = "sk-rollout-tests-5c1e"
ADMIN_KEY = "sk-rollout-admin-77d0"
TEACHER = "gpt-4o"
STUDENT = "gpt-4o-mini"
JUDGE_MODEL = "rollout-judge"
SLICE_TEXT = {"billing": "A billing question about my invoice", "shipping": "Where is my parcel"}

FAST_GATES: dict[str, Any] = {
    "quality_margin": 0.15,
    "error_margin": 0.2,
    "min_samples": 20,
    "min_dwell_s": 1.0,
    # a false rollback of an equal candidate is bounded by this: 0.1% keeps the scenarios
    # that must not roll back from failing by chance, and a truly worse one still falls fast
    "alpha_rollback": 0.001,
}


def plan(candidate: str = "student", **overrides: Any) -> dict[str, Any]:
    """A rollout in accelerated time: shadow, then half, then the target."""
    body: dict[str, Any] = {
        "candidate": candidate,
        "stages": [0.0, 0.5],
        "target": 0.9,
        "holdout": 0.1,
        "shadow_sample": 1.0,
        "gates": dict(FAST_GATES),
    }
    body.update(overrides)
    return body


def gateway_config(
    simulator_url: str,
    database_url: str,
    *,
    rollout: Mapping[str, Any] | None = None,
    twin: bool = False,
    redis_prefix: str | None = None,
) -> dict[str, Any]:
    variants: dict[str, Any] = {
        "teacher": {"provider": "sim", "model": TEACHER, "weight": 100},
        "student": {"provider": "sim", "model": STUDENT, "weight": 0},
    }
    if twin:  # the A/A candidate: the incumbent's own model, by construction
        variants["twin"] = {"provider": "sim", "model": TEACHER, "weight": 0}
    support: dict[str, Any] = {"variants": variants}
    if rollout is not None:
        support["rollout"] = dict(rollout)
    config: dict[str, Any] = {
        "server": {"log_level": "info"},
        "auth": {"keys": [{"name": "rollout-tests", "key": GATEWAY_KEY}]},
        "admin": {"keys": [{"name": "ops", "key": ADMIN_KEY}]},
        "providers": {"sim": {"base_url": f"{simulator_url}/v1"}},
        "routes": {
            "support": support,
            "judge": {"variants": {"only": {"provider": "sim", "model": JUDGE_MODEL}}},
        },
        "capture": {
            "database_url": database_url,
            "flush_interval_ms": 50,
            "retry_max_backoff_s": 0.5,
        },
        "autopilot": {
            "interval_s": 0.2,
            "lease_ttl_s": 2.0,
            "evidence_lag_s": 0.3,
            "judge_route": "judge",
            "judge_batch": 200,
            "judge_concurrency": 8,
            "counterfactual_sample": 1.0,
        },
    }
    if redis_prefix is not None:
        config["redis"] = {"url": "redis://127.0.0.1:6379/0", "prefix": redis_prefix}
    return config


# --- the admin API and the simulator ---------------------------------------------------------


def admin(gateway: Running, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{gateway.url}{path}",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
        **kwargs,
    )


def rollout(gateway: Running, route: str = "support") -> dict[str, Any] | None:
    response = admin(gateway, "GET", f"/admin/routes/{route}/rollout")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def weights(gateway: Running, route: str = "support") -> dict[str, Any]:
    """The route as the gateway routes it now: variants' weights and slices."""
    response = admin(gateway, "GET", "/admin/routes")
    assert response.status_code == 200, response.text
    described = response.json()["routes"][route]
    return {
        "variants": {name: v["weight"] for name, v in described["variants"].items()},
        "slices": {
            ",".join(f"{k}={v}" for k, v in s["match"].items()): s["weights"]
            for s in described.get("slices", [])
        },
        "shadow": described.get("shadow"),
        "counterfactual": described.get("counterfactual"),
    }


def share_of(route: Mapping[str, Any], variant: str, slice: str | None = None) -> float:
    split = route["slices"][slice] if slice is not None else route["variants"]
    total = sum(split.values())
    return float(split.get(variant, 0)) / total if total else 0.0


def set_quality(simulator: Running, model: str, quality: float, match: str | None = None) -> None:
    response = httpx.post(
        f"{simulator.url}/_sim/quality",
        json={"model": model, "quality": quality, "match": match},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def reset_quality(simulator: Running) -> None:
    httpx.delete(f"{simulator.url}/_sim/quality", timeout=10)


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "rollout", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "GATEWAY_ADMIN_KEY": ADMIN_KEY},
    )


# --- waiting ---------------------------------------------------------------------------------


def wait_until(
    probe: Callable[[], T | None],
    what: str,
    timeout: float = 60.0,
    interval: float = 0.2,
    logs: tuple[Running, ...] = (),
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:  # None, False and empty results mean "not yet"
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(
                f"--- {g.log.name}:\n" + "\n".join(g.log.read_text().splitlines()[-40:])
                for g in logs
            )
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tails}")
        time.sleep(interval)


def actions(described: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(slice, action) of the decisions shown, oldest first."""
    if described is None:
        return []
    return [(d["slice"], d["action"]) for d in described["decisions"]]


# --- the load --------------------------------------------------------------------------------


class Load:
    """Tagged calls to the route from a few threads until stopped, round robin over the slices;
    each call's text carries its slice's words (what the simulator's rules match)."""

    def __init__(
        self,
        gateways: list[Running],
        slices: tuple[str, ...] = ("billing", "shipping"),
        route: str = "support",
        threads: int = 3,
        pause_s: float = 0.01,
    ) -> None:
        self.gateways = gateways
        self.slices = slices
        self.route = route
        self.pause_s = pause_s
        self.sent = 0
        self.failed: list[str] = []
        self.variants: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, index: int) -> None:
        n = index
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                gateway = self.gateways[n % len(self.gateways)]
                task = self.slices[n % len(self.slices)]
                body = {
                    "model": self.route,
                    "messages": [
                        {"role": "user", "content": f"{SLICE_TEXT.get(task, task)} (case {n})."}
                    ],
                }
                try:
                    response = client.post(
                        f"{gateway.url}/v1/chat/completions",
                        json=body,
                        headers={
                            "authorization": f"Bearer {GATEWAY_KEY}",
                            "x-gateway-tags": f"task={task}",
                        },
                    )
                    variant = response.headers.get("x-gateway-variant", "?")
                    with self._lock:
                        self.sent += 1
                        if response.status_code != 200:
                            self.failed.append(f"{response.status_code}: {response.text[:200]}")
                        self.variants[variant] = self.variants.get(variant, 0) + 1
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failed.append(repr(exc))
                n += len(self._threads)
                time.sleep(self.pause_s)
