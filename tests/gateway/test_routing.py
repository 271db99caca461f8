"""Routing through real processes: splits, stickiness, ramps, fallbacks, breakers, shadows,
live changes and reloads."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import yaml

from tests.processes import Running, start_gateway, start_simulator

KEY = "sk-routing-tests"
APP_KEY = "sk-routing-app"
ADMIN_KEY = "sk-routing-admin"
ENV = {"ROUTING_KEY": KEY, "ROUTING_APP_KEY": APP_KEY, "ROUTING_ADMIN_KEY": ADMIN_KEY}
PROFILE = {
    "default": {"ttft_ms": 0, "token_ms": 0},
    "models": {"slow-shadow*": {"ttft_ms": 300, "token_ms": 0}},
    "faults": [
        {"model": "broken-*", "kind": "500"},
        {"model": "limited-*", "kind": "429"},
        {"model": "hang-*", "kind": "timeout", "delay_ms": 3000},
    ],
}
FAST_RETRY = {"attempts": 2, "backoff_ms": 10, "max_backoff_ms": 200}


def variant(model: str, weight: int = 1, provider: str = "sim", **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, "weight": weight, **extra}


def routing_config(sim_url: str, flaky_url: str) -> dict[str, Any]:
    return {
        "auth": {
            "keys": [
                {"name": "tests", "key": "${ROUTING_KEY}", "allow_variant_override": True},
                {"name": "app", "key": "${ROUTING_APP_KEY}"},
            ]
        },
        "admin": {"keys": [{"name": "ops", "key": "${ROUTING_ADMIN_KEY}"}]},
        "providers": {
            "sim": {"base_url": f"{sim_url}/v1"},
            "flaky": {"base_url": f"{flaky_url}/v1", "connect_timeout": 1},
        },
        "routes": {
            "support": {
                "variants": {
                    "teacher": variant("gpt-4o", 95),
                    "student": variant("ft:gpt-4o-mini:acme::s1", 5),
                },
                "sticky": "user",
            },
            "fallback-500": {
                "variants": {"primary": variant("broken-1"), "backup": variant("gpt-4o", 0)},
                "fallbacks": ["backup"],
                "retry": FAST_RETRY,
            },
            "fallback-429": {
                "variants": {"primary": variant("limited-1"), "backup": variant("gpt-4o", 0)},
                "fallbacks": ["backup"],
                "retry": FAST_RETRY,
            },
            "fallback-timeout": {
                "variants": {
                    "primary": variant("hang-1", timeout=0.3),
                    "backup": variant("gpt-4o", 0),
                },
                "fallbacks": ["backup"],
                "retry": {"attempts": 1},
            },
            "breaker": {
                "variants": {
                    "primary": variant("gpt-4o-mini", provider="flaky"),
                    "backup": variant("gpt-4o", 0),
                },
                "fallbacks": ["backup"],
                "retry": {"attempts": 1},
                "breaker": {"failures": 2, "cooldown_s": 1.0},
            },
            "shadowed": {
                "variants": {"teacher": variant("gpt-4o"), "student": variant("slow-shadow-1")},
                "shadow": {"variant": "student", "sample": 1.0},
            },
            "unshadowed": {"variants": {"teacher": variant("gpt-4o")}},
            "shadow-broken": {
                "variants": {"teacher": variant("gpt-4o"), "student": variant("broken-shadow")},
                "shadow": {"variant": "student", "sample": 1.0},
            },
        },
    }


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_simulator(tmp_path_factory.mktemp("routing-sim"), PROFILE)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_simulator(tmp_path_factory.mktemp("routing-flaky"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("routing-gw")


@pytest.fixture(scope="module")
def gw(workdir: Path, sim: Running, flaky: Running) -> Iterator[Running]:
    running = start_gateway(workdir, routing_config(sim.url, flaky.url), env=ENV)
    yield running
    running.stop()


def chat(
    client: httpx.Client, model: str, user: str | None = None, key: str = KEY, **headers: str
) -> httpx.Response:
    sent = {"authorization": f"Bearer {key}", **headers}
    if user is not None:
        sent["x-gateway-user"] = user
    return client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        headers=sent,
    )


async def variants_of(url: str, users: list[str], model: str = "support") -> dict[str, str]:
    """Each user's variant, asked of the gateway with 32 calls in flight."""
    result: dict[str, str] = {}
    queue = list(users)
    body = b'{"model": "%s", "input": "x"}' % model.encode()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:

        async def worker() -> None:
            while queue:
                user = queue.pop()
                async with client.post(
                    f"{url}/v1/embeddings",
                    data=body,
                    headers={"authorization": f"Bearer {KEY}", "x-gateway-user": user},
                ) as response:
                    await response.read()
                    assert response.status == 200
                    result[user] = response.headers["x-gateway-variant"]

        await asyncio.gather(*(worker() for _ in range(32)))
    return result


def admin(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return client.request(
        method, path, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10, **kwargs
    )


def test_split_over_20000_users_follows_the_weights(gw: Running) -> None:
    users = [f"user-{i}" for i in range(20_000)]
    assigned = asyncio.run(variants_of(gw.url, users))
    counts = Counter(assigned.values())
    assert abs(counts["student"] / len(users) - 0.05) < 0.015
    assert abs(counts["teacher"] / len(users) - 0.95) < 0.015


def test_same_user_same_variant_on_another_replica(
    gw: Running, sim: Running, flaky: Running, tmp_path: Path
) -> None:
    users = [f"replica-user-{i}" for i in range(600)]
    other = start_gateway(tmp_path, routing_config(sim.url, flaky.url), env=ENV)
    try:
        first = asyncio.run(variants_of(gw.url, users))
        second = asyncio.run(variants_of(other.url, users))
    finally:
        other.stop()
    assert first == second
    assert set(first.values()) == {"teacher", "student"}


def test_ramp_moves_no_user_out_of_the_student(gw: Running) -> None:
    users = [f"ramp-user-{i}" for i in range(3_000)]
    before = asyncio.run(variants_of(gw.url, users))
    with httpx.Client(base_url=gw.url) as client:
        changed = admin(
            client, "PUT", "/admin/routes/support", json={"weights": {"teacher": 50, "student": 50}}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["variants"]["student"]["weight"] == 50
        try:
            after = asyncio.run(variants_of(gw.url, users))
        finally:
            admin(
                client,
                "PUT",
                "/admin/routes/support",
                json={"weights": {"teacher": 95, "student": 5}},
            )
    assert all(after[u] == "student" for u in users if before[u] == "student")
    share = Counter(after.values())["student"] / len(users)
    assert 0.45 < share < 0.55


@pytest.mark.parametrize("route", ["fallback-500", "fallback-429", "fallback-timeout"])
def test_failures_fall_back_and_the_client_sees_success(gw: Running, route: str) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        response = chat(client, route)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-variant"] == "backup"
    assert response.json()["choices"][0]["message"]["content"]


def test_the_breaker_opens_and_recovers(gw: Running, flaky: Running, tmp_path: Path) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert chat(client, "breaker").headers["x-gateway-variant"] == "primary"
        port = flaky.port
        flaky.stop()  # connections to it are now refused
        for _ in range(3):
            response = chat(client, "breaker")
            assert response.status_code == 200
            assert response.headers["x-gateway-variant"] == "backup"
        state = admin(client, "GET", "/admin/routes").json()["routes"]["breaker"]
        assert state["variants"]["primary"]["breaker"] == "open"

        revived = start_simulator(tmp_path, port=port)
        try:
            time.sleep(1.1)  # the breaker's cooldown
            response = chat(client, "breaker")
            assert response.headers["x-gateway-variant"] == "primary"
            state = admin(client, "GET", "/admin/routes").json()["routes"]["breaker"]
            assert state["variants"]["primary"]["breaker"] == "closed"
        finally:
            revived.stop()


def test_shadow_adds_no_latency_and_is_recorded_upstream(gw: Running, sim: Running) -> None:
    def median_ms(model: str) -> float:
        times = []
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            for _ in range(15):
                started = time.perf_counter()
                response = chat(client, model)
                times.append(time.perf_counter() - started)
                assert response.status_code == 200
                assert response.headers["x-gateway-variant"] == "teacher"
        return statistics.median(times) * 1000

    httpx.delete(f"{sim.url}/_sim/requests")
    with_shadow = median_ms("shadowed")
    without = median_ms("unshadowed")
    # The shadow answers 300 ms later; a client waiting for it would see that.
    assert with_shadow < without + 100
    time.sleep(0.5)
    models = [r["body"]["model"] for r in httpx.get(f"{sim.url}/_sim/requests").json()]
    assert models.count("slow-shadow-1") == 15


def test_a_failing_shadow_is_invisible(gw: Running) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for _ in range(5):
            response = chat(client, "shadow-broken")
            assert response.status_code == 200
            assert response.headers["x-gateway-variant"] == "teacher"


def test_forcing_a_variant_needs_a_key_allowed_to(gw: Running) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        forced = chat(client, "support", **{"x-gateway-variant": "student"})
        assert forced.headers["x-gateway-variant"] == "student"
        assert forced.headers["x-gateway-upstream-model"] == "ft:gpt-4o-mini:acme::s1"
        denied = chat(client, "support", key=APP_KEY, **{"x-gateway-variant": "student"})
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "permission_denied"
        unknown = chat(client, "support", **{"x-gateway-variant": "nope"})
        assert unknown.status_code == 400
        assert unknown.json()["error"]["param"] == "x-gateway-variant"


def test_admin_needs_an_admin_key(gw: Running) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.get("/admin/routes").status_code == 401
        wrong = client.get("/admin/routes", headers={"authorization": f"Bearer {KEY}"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        assert admin(client, "GET", "/admin/routes").status_code == 200
        bad = admin(client, "PUT", "/admin/routes/support", json={"weights": {"ghost": 1}})
        assert bad.status_code == 400
        missing = admin(client, "PUT", "/admin/routes/nope", json={"weights": {}})
        assert missing.status_code == 404


def test_reload_under_load_fails_no_request(gw: Running, workdir: Path) -> None:
    config_path = workdir / f"gateway-{gw.port}.yaml"
    original = config_path.read_text()
    failures: list[str] = []
    answered = Counter[str]()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            while not stop.is_set():
                response = chat(client, "support", user=f"u{answered.total()}")
                if response.status_code != 200:
                    failures.append(response.text)
                answered[response.headers.get("x-gateway-variant", "?")] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=gw.url) as client:
            config = yaml.safe_load(original)
            for round_ in range(10):
                weights = config["routes"]["support"]["variants"]
                weights["student"]["weight"] = 5 + 10 * round_
                config_path.write_text(yaml.safe_dump(config, sort_keys=False))
                reloaded = admin(client, "POST", "/admin/reload")
                assert reloaded.status_code == 200, reloaded.text
                time.sleep(0.1)
            config_path.write_text("routes: [broken\n")
            rejected = admin(client, "POST", "/admin/reload")
            assert rejected.status_code == 400
            assert "not valid YAML" in rejected.json()["error"]["message"]
            still = admin(client, "GET", "/admin/routes").json()
            assert still["routes"]["support"]["variants"]["student"]["weight"] == 95
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        config_path.write_text(original)
        with httpx.Client(base_url=gw.url) as client:
            admin(client, "POST", "/admin/reload")
    assert failures == []
    assert answered.total() > 50


def test_a_new_variant_is_added_forced_shadowed_and_removed(gw: Running, sim: Running) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        added = admin(
            client,
            "POST",
            "/admin/routes/unshadowed/variants",
            json={"name": "candidate", "provider": "sim", "model": "ft:gpt-4o-mini:acme::new"},
        )
        assert added.status_code == 201, added.text
        assert added.json()["variants"]["candidate"]["weight"] == 0
        again = admin(
            client,
            "POST",
            "/admin/routes/unshadowed/variants",
            json={"name": "candidate", "provider": "sim", "model": "x"},
        )
        assert again.status_code == 409
        nowhere = admin(
            client,
            "POST",
            "/admin/routes/unshadowed/variants",
            json={"name": "other", "provider": "ghost", "model": "x"},
        )
        assert nowhere.status_code == 400
        # Idle: no live traffic, but it can be forced and shadowed.
        assert chat(client, "unshadowed").headers["x-gateway-variant"] == "teacher"
        forced = chat(client, "unshadowed", **{"x-gateway-variant": "candidate"})
        assert forced.headers["x-gateway-upstream-model"] == "ft:gpt-4o-mini:acme::new"
        shadow = admin(
            client,
            "PUT",
            "/admin/routes/unshadowed",
            json={"shadow": {"variant": "candidate", "sample": 1.0}},
        )
        assert shadow.status_code == 200, shadow.text
        removed_while_shadow = admin(
            client, "DELETE", "/admin/routes/unshadowed/variants/candidate"
        )
        assert removed_while_shadow.status_code == 400
        admin(client, "PUT", "/admin/routes/unshadowed", json={"shadow": None})
        removed = admin(client, "DELETE", "/admin/routes/unshadowed/variants/candidate")
        assert removed.status_code == 200
        assert "candidate" not in removed.json()["variants"]
