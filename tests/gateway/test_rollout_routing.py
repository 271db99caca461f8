"""What a rollout needs from the gateway, through real processes: per-slice routing on the
call's tags, counterfactual copies captured with their marks, clients' marks dropped, the
rollout's actions reaching another replica through Redis, and the in-process internal client
(whose key is refused from outside)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from capture.ledger import FORCED_TAG, PURPOSE_TAG, ROLLOUT_TAG
from gateway.app import GatewayApp
from gateway.internal import InternalClient, tags_header
from gateway.rollout_actions import GatewayActions, integer_weights
from gateway.routechange import InvalidRouteChange
from gateway.settings import load_settings
from tests.capture_support import poll, rows_of
from tests.gateway.test_limits import needs_redis
from tests.processes import Running, free_port, start_gateway

KEY = "sk-rollout-routing-5521"
ADMIN = "sk-rollout-routing-admin"
AUTH = {"authorization": f"Bearer {KEY}"}
FORCING_KEY = "sk-rollout-routing-qa"
CHAT = {"model": "support", "messages": [{"role": "user", "content": "hello there"}]}


def route_config(**extra: Any) -> dict[str, Any]:
    return {
        "variants": {
            "teacher": {"provider": "sim", "model": "gpt-4o", "weight": 1},
            "student": {"provider": "sim", "model": "gpt-4o-mini", "weight": 0},
        },
        **extra,
    }


def config(sim_url: str, db: Path, route: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "auth": {
            "keys": [
                {"name": "app", "key": KEY},
                {"name": "qa", "key": FORCING_KEY, "allow_variant_override": True},
            ]
        },
        "admin": {"keys": [{"name": "ops", "key": ADMIN}]},
        "providers": {"sim": {"base_url": f"{sim_url}/v1"}},
        "routes": {"support": route},
        "capture": {"database_url": f"sqlite+aiosqlite:///{db}"},
        **extra,
    }


@pytest.fixture(scope="module")
def sliced(workdir: Path, simulator: Running) -> Iterator[tuple[Running, str]]:
    db = workdir / f"rollout-routing-{uuid.uuid4().hex}.db"
    route = route_config(
        slices=[{"match": {"task": "a"}, "weights": {"student": 1}}],
        counterfactual={"of": "student", "variant": "teacher", "sample": 1.0},
    )
    running = start_gateway(workdir, config(simulator.url, db, route))
    yield running, f"sqlite+aiosqlite:///{db}"
    running.stop()


def chat(url: str, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    response = httpx.post(
        f"{url}/v1/chat/completions", json={**CHAT, **body}, headers={**AUTH, **(headers or {})}
    )
    assert response.status_code == 200, response.text
    return response


def test_a_slice_goes_by_its_weights_and_the_rest_by_the_routes(
    sliced: tuple[Running, str],
) -> None:
    gateway, _ = sliced
    by_header = [chat(gateway.url, {"x-gateway-tags": "task=a,tenant=t1"}) for _ in range(8)]
    by_metadata = [chat(gateway.url, metadata={"task": "a"}) for _ in range(4)]
    others = [chat(gateway.url, {"x-gateway-tags": "task=b"}) for _ in range(8)]
    others += [chat(gateway.url) for _ in range(4)]
    # the header wins over the body's metadata
    others += [chat(gateway.url, {"x-gateway-tags": "task=b"}, metadata={"task": "a"})]
    assert {r.headers["x-gateway-variant"] for r in by_header + by_metadata} == {"student"}
    assert {r.headers["x-gateway-variant"] for r in others} == {"teacher"}
    assert {r.headers["x-gateway-upstream-model"] for r in by_header} == {"gpt-4o-mini"}


def test_counterfactual_copies_are_captured_with_their_marks(sliced: tuple[Running, str]) -> None:
    gateway, url = sliced
    answered = chat(gateway.url, {"x-gateway-tags": "task=a,tenant=t9"})
    assert answered.headers["x-gateway-variant"] == "student"
    request_id = answered.headers["x-request-id"]
    by_teacher = chat(gateway.url, {"x-gateway-tags": "task=b"}).headers["x-request-id"]
    with rows_of(url) as rows:
        live = rows.wait_for_call(request_id)
        assert live["variant"] == "student"
        assert live["tags"] == {"task": "a", "tenant": "t9"}
        copies = poll(lambda: rows.shadows_of(request_id), "the counterfactual copy", 15.0)
        assert len(copies) == 1
        copy = copies[0]
        assert (copy["variant"], copy["status"]) == ("teacher", 200)
        assert copy["tags"] == {
            "task": "a",
            "tenant": "t9",
            PURPOSE_TAG: "counterfactual",
            ROLLOUT_TAG: "support",
        }
        rows.wait_for_call(by_teacher)
        time.sleep(0.3)
        assert rows.shadows_of(by_teacher) == []  # the incumbent's own calls are not copied


def test_a_clients_gateway_marks_are_dropped(sliced: tuple[Running, str]) -> None:
    gateway, url = sliced
    answered = chat(
        gateway.url,
        {"x-gateway-tags": f"task=b,{PURPOSE_TAG}=judge, {ROLLOUT_TAG}=support"},
        metadata={
            "team": "web",
            PURPOSE_TAG: "counterfactual",
            "gateway.other": "x",
            # the key as stored is what counts: NULs are removed before storing
            f"\x00{PURPOSE_TAG}": "judge",
            " Gateway.Rollout": "other-route",
        },
    )
    only_marks = chat(gateway.url, {"x-gateway-tags": f"{PURPOSE_TAG}=judge"})
    with rows_of(url) as rows:
        row = rows.wait_for_call(answered.headers["x-request-id"])
        assert row["tags"] == {"task": "b", "team": "web"}
        assert rows.wait_for_call(only_marks.headers["x-request-id"])["tags"] == {}


def test_a_forced_call_is_marked_so_that_no_rollout_counts_it(
    sliced: tuple[Running, str],
) -> None:
    gateway, url = sliced
    forced = chat(
        gateway.url,
        {"authorization": f"Bearer {FORCING_KEY}", "x-gateway-variant": "student",
         "x-gateway-tags": "task=b"},
    )  # fmt: skip
    drawn = chat(gateway.url, {"x-gateway-tags": f"task=b,{FORCED_TAG}=1"})  # a client's: dropped
    with rows_of(url) as rows:
        row = rows.wait_for_call(forced.headers["x-request-id"])
        assert row["variant"] == "student" and row["tags"] == {"task": "b", FORCED_TAG: "1"}
        assert rows.wait_for_call(drawn.headers["x-request-id"])["tags"] == {"task": "b"}


# --- in-process: the internal client and the rollout's actions ------------------------------------


class Served:
    """A GatewayApp under uvicorn on a loopback port, in this test's event loop."""

    def __init__(self, app: GatewayApp) -> None:
        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="on", log_level="error")
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Served:
        self._task = asyncio.get_running_loop().create_task(self.server.serve())
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the gateway did not start"
            assert not self._task.done(), "the gateway exited"
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


def app_from(tmp_path: Path, settings: dict[str, Any]) -> GatewayApp:
    path = tmp_path / f"inproc-{uuid.uuid4().hex}.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return GatewayApp(load_settings(path), config_path=path)


@pytest.mark.parametrize("auth", ["keys", "none"])
def test_the_internal_client_is_answered_and_its_key_is_refused_from_outside(
    tmp_path: Path, simulator: Running, auth: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "internal.db"
    settings = config(simulator.url, db, route_config())
    if auth == "none":
        settings["auth"] = "none"
    else:  # the internal principal needs no route of the key's, nor its limits
        settings["auth"]["keys"][0].update(routes=["nothing-else"], rpm=1)
    app = app_from(tmp_path, settings)

    async def scenario() -> tuple[dict[str, Any] | None, str | None, httpx.Response, str]:
        async with Served(app) as served:
            client = InternalClient(app, concurrency=2, timeout_s=30)
            try:
                marks = {PURPOSE_TAG: "judge", ROLLOUT_TAG: "support", "task": "a"}
                results = await asyncio.gather(*(client.chat(CHAT, marks) for _ in range(3)))
                answer, request_id = results[0]
                assert all(a is not None for a, _ in results)
                header = client._key.authorization()  # the test peeks: nothing else may
                async with httpx.AsyncClient() as outside:
                    refused = await outside.post(
                        f"{served.url}/v1/chat/completions",
                        json=CHAT,
                        headers={"authorization": header, "x-gateway-tags": f"{PURPOSE_TAG}=x"},
                    )
            finally:
                await client.aclose()
        return answer, request_id, refused, header

    answer, request_id, refused, header = asyncio.run(scenario())
    assert answer is not None and answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"]
    assert request_id is not None
    if auth == "keys":
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
    else:  # nobody in particular: its marks are dropped like any client's
        assert refused.status_code == 200
    with rows_of(f"sqlite+aiosqlite:///{db}") as rows:
        row = rows.wait_for_call(request_id)
        assert row["tags"] == {PURPOSE_TAG: "judge", ROLLOUT_TAG: "support", "task": "a"}
        if auth == "none":
            outside_row = rows.wait_for_call(refused.headers["x-request-id"])
            assert outside_row["tags"] == {}
    assert header.split()[1] not in caplog.text


def test_the_internal_client_reports_failures_as_none(tmp_path: Path, simulator: Running) -> None:
    app = app_from(tmp_path, config(simulator.url, tmp_path / "f.db", route_config()))

    async def scenario() -> tuple[Any, Any]:
        async with Served(app):
            client = InternalClient(app)
            try:
                unknown = await client.chat({**CHAT, "model": "no-such-route"}, {})
                with pytest.raises(ValueError, match="cannot be sent"):
                    await client.chat(CHAT, {"a,b": "c"})
                return unknown, client.failed
            finally:
                await client.aclose()

    (answer, request_id), failed = asyncio.run(scenario())
    assert answer is None and request_id is not None and failed == 1
    assert tags_header({"a": "1", "gateway.purpose": "judge"}) == "a=1,gateway.purpose=judge"


def test_float_shares_become_weights_out_of_10000() -> None:
    assert integer_weights({"t": 0.95, "s": 0.05}) == {"t": 9500, "s": 500}
    assert integer_weights({"t": 1.0, "s": 0.0}) == {"t": 10_000, "s": 0}
    thirds = integer_weights({"a": 1, "b": 1, "c": 1})
    assert sum(thirds.values()) == 10_000 and sorted(thirds.values()) == [3333, 3333, 3334]
    assert integer_weights({"t": 0.9, "s": 0.1 + 1e-12}) == {"t": 9000, "s": 1000}
    for bad in ({"t": -0.1, "s": 1.0}, {"t": 0.0}, {}, {"t": float("nan")}):
        with pytest.raises(InvalidRouteChange):
            integer_weights(bad)


def admin_routes(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/admin/routes", headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200, response.text
    routes: dict[str, Any] = response.json()["routes"]
    return routes


async def admin_routes_async(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{url}/admin/routes", headers={"authorization": f"Bearer {ADMIN}"}
        )
    assert response.status_code == 200, response.text
    routes: dict[str, Any] = response.json()["routes"]
    return routes


@needs_redis
def test_the_rollouts_actions_apply_here_and_reach_another_replica(
    tmp_path: Path, simulator: Running
) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    redis = {"url": "redis://127.0.0.1:6379/0", "prefix": prefix}
    shared = config(simulator.url, tmp_path / "a.db", route_config(), redis=redis)
    other = start_gateway(tmp_path, {**shared, "capture": {"enabled": False}})
    app = app_from(tmp_path, shared)
    try:

        async def scenario() -> dict[str, Any]:
            async with Served(app) as served:
                actions = GatewayActions(app.manager, lambda: app.sync)
                actions.set_shadow_sample("support", "student", 0.2)
                actions.set_weights("support", {"teacher": 0.95, "student": 0.05}, None)
                actions.set_weights("support", {"teacher": 0.5, "student": 0.5}, {"task": "a"})
                actions.set_weights("support", {"teacher": 0.75, "student": 0.25}, {"task": "a"})
                actions.pin_slice("support", {"task": "b"}, "teacher")
                actions.set_counterfactual("support", "student", "teacher", 0.1)
                wrong_calls: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
                    (actions.set_weights, ("support", {"ghost": 1.0}, None)),
                    (actions.set_weights, ("nowhere", {"teacher": 1.0}, None)),
                    (actions.set_shadow_sample, ("support", "student", 1.5)),
                    (actions.pin_slice, ("support", {}, "teacher")),
                ]
                for method, args in wrong_calls:
                    with pytest.raises(InvalidRouteChange):
                        method(*args)
                here: dict[str, Any] = (await admin_routes_async(served.url))["support"]
                assert here["variants"]["student"]["weight"] == 500
                await actions.flush()
                # the pinned slice answers from the teacher here
                async with httpx.AsyncClient() as http:
                    response = await http.post(
                        f"{served.url}/v1/chat/completions",
                        json=CHAT,
                        headers={**AUTH, "x-gateway-tags": "task=b"},
                    )
                assert response.headers["x-gateway-variant"] == "teacher"

                deadline = time.monotonic() + 1.0
                while (await admin_routes_async(other.url))["support"]["counterfactual"] is None:
                    assert time.monotonic() < deadline, "the change did not reach the replica"
                    await asyncio.sleep(0.02)
                actions.set_shadow_sample("support", "student", 0.0)
                await actions.flush()
                await actions.flush()  # nothing changed since: nothing to share
                return here

        here = asyncio.run(scenario())
        there = admin_routes(other.url)["support"]
        assert {n: v["weight"] for n, v in there["variants"].items()} == {
            "teacher": 9500,
            "student": 500,
        }
        assert (
            there["slices"]
            == here["slices"]
            == [
                {"match": {"task": "a"}, "weights": {"teacher": 7500, "student": 2500}},
                {"match": {"task": "b"}, "weights": {"teacher": 10_000}},
            ]
        )
        assert there["counterfactual"] == {"of": "student", "variant": "teacher", "sample": 0.1}
        assert here["shadow"] == {"variant": "student", "sample": 0.2, "live": True}
        deadline = time.monotonic() + 1.0
        while admin_routes(other.url)["support"]["shadow"] is not None:
            assert time.monotonic() < deadline, "the shadow's removal did not arrive"
            time.sleep(0.02)
        for _ in range(6):  # the other replica routes by what it was sent
            answered = chat(other.url, {"x-gateway-tags": "task=b"})
            assert answered.headers["x-gateway-variant"] == "teacher"
    finally:
        other.stop()
