"""The dashboard's rollouts and savings API, against a real gateway over a seeded store.

The store (SQLite, and PostgreSQL when reachable) holds a rollout saved by the controller's own
code (``tests.gateway.dashboard_rollout_seed``: one slice advancing, one pinned) and calls whose
savings are worked out by hand. ``GET /dashboard/api/rollouts[/{route}]`` must give each slice's
stage, share, status and gates and the decisions as the controller made them;
``GET /dashboard/api/savings`` the ledger's figures, unknown prices as null, never 0.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopilot.controller import DecisionRecord
from capture.ledger import UsageSums
from capture.pricing import Price
from capture.rollouts import RolloutTable
from capture.store import Store
from gateway.dashboard.savings import day_line
from tests.capture_support import (
    BACKENDS,
    Backend,
    BackendKind,
    open_backend,
)
from tests.gateway import dashboard_rollout_seed as seed
from tests.processes import Running, start_gateway, start_simulator

ADMIN_KEY = "dash-rollouts-admin-5a1c"
GATEWAY_KEY = "sk-gw-dash-rollouts"
PROVIDER_KEY = "sk-provider-dash-rollouts"
ENV = {"DR_GATEWAY_KEY": GATEWAY_KEY, "DR_ADMIN_KEY": ADMIN_KEY, "DR_PROVIDER_KEY": PROVIDER_KEY}


def gateway_config(simulator_url: str, database_url: str) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"name": "tests", "key": "${DR_GATEWAY_KEY}"}]},
        "admin": {"keys": [{"name": "ops", "key": "${DR_ADMIN_KEY}"}]},
        "providers": {"sim": {"base_url": f"{simulator_url}/v1", "api_key": "${DR_PROVIDER_KEY}"}},
        "routes": {
            route: {
                "variants": {
                    name: {"provider": "sim", "model": model, "weight": weight}
                    for name, (model, weight) in variants.items()
                }
            }
            for route, variants in seed.ROUTES.items()
        },
        "capture": {"database_url": database_url, "flush_interval_ms": 50},
        # The page is tested on the store as the seeded controller left it: the gateway's own
        # controller would take the rollout over (its looks, its weights).
        "autopilot": {"enabled": False},
    }


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    kind: BackendKind = request.param
    with open_backend(kind, tmp_path_factory.mktemp(f"dash-rollouts-{kind}"), __name__) as b:
        yield b


@pytest.fixture(scope="module")
def database_url(backend: Backend) -> str:
    return backend.new_url()


@pytest.fixture(scope="module")
def seeded(backend: Backend, database_url: str) -> Iterator[tuple[Running, list[DecisionRecord]]]:
    workdir = Path(backend.workdir)
    url = database_url
    simulator = start_simulator(workdir)
    try:
        gateway = start_gateway(workdir, gateway_config(simulator.url, url), env=ENV)
        try:  # the gateway has made the schema; the controller's looks and the calls go in
            records = seed.seed_rollout(url, time.time())
            seed.seed_calls(url, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30))
            yield gateway, records
        finally:
            gateway.stop()
    finally:
        simulator.stop()


@pytest.fixture(scope="module")
def http(seeded: tuple[Running, list[DecisionRecord]]) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=seeded[0].url, headers=headers, timeout=10) as client:
        yield client


def test_the_seeded_rollout_made_the_decisions_the_page_shows(
    seeded: tuple[Running, list[DecisionRecord]],
) -> None:
    actions = [(r.slice, r.action, r.from_stage, r.to_stage) for r in seeded[1]]
    assert actions == [
        ("task=billing", "start", 0, 0),
        ("task=shipping", "start", 0, 0),
        ("task=billing", "advance", 0, 1),
        ("task=billing", "advance", 1, 2),
        ("task=billing", "advance", 2, 3),
        ("task=shipping", "pin", 0, -1),
    ]


def test_the_list_of_rollouts(http: httpx.Client) -> None:
    response = http.get("/dashboard/api/rollouts")
    assert response.status_code == 200, response.text
    (rollout,) = [r for r in response.json()["rollouts"] if r["route"] == seed.ROUTE]
    assert rollout["route"] == seed.ROUTE and rollout["status"] == "running"
    assert rollout["incumbent"] == "teacher" and rollout["candidate"] == "student"
    assert rollout["slices"] == {
        "task=billing": {"stage": 3, "share": 0.5, "status": "running"},
        "task=shipping": {"stage": 0, "share": 0.0, "status": "pinned"},
    }
    assert dt.datetime.fromisoformat(rollout["updated_at"]).tzinfo is not None


def test_one_rollout_with_its_gates_and_timeline(
    http: httpx.Client, seeded: tuple[Running, list[DecisionRecord]]
) -> None:
    response = http.get(f"/dashboard/api/rollouts/{seed.ROUTE}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "running"
    assert body["config"]["stages"] == [0.0, 0.05, 0.25, 0.5] and body["config"]["target"] == 0.9
    assert body["config"]["gates"]["min_samples"] == 100

    timeline = [
        (d["slice"], d["action"], d["from_stage"], d["to_stage"], d["share"])
        for d in body["decisions"]
    ]
    assert timeline == [(r.slice, r.action, r.from_stage, r.to_stage, r.share) for r in seeded[1]]
    assert [d["at"] for d in body["decisions"]] == [r.at.isoformat() for r in seeded[1]]
    pin = body["decisions"][-1]
    assert pin["reason"] == "significantly worse: quality"
    assert {g["name"]: g["verdict"] for g in pin["evidence"]["gates"]}["quality"] == "fail"

    slices = {s["name"]: s for s in body["slices"]}
    billing, shipping = slices["task=billing"], slices["task=shipping"]
    # billing moves on: its gates now, from the stored tests (one full look and three short ones
    # since it reached 50%: quality passed, errors and latency still waiting), bounds, sizes
    assert billing["gates_source"] == "live" and billing["share"] == 0.5
    assert billing["gates"]["action"] == "hold"
    gates = {g["name"]: g for g in billing["gates"]["gates"]}
    assert set(gates) == {"quality", "errors", "latency_p95"}
    assert gates["quality"]["verdict"] == "pass"
    assert gates["quality"]["n_candidate"] == 3 * (40 + 15 + 40) + (300 + 100 + 280)
    assert gates["quality"]["pass_bound"] > gates["quality"]["threshold"] == pytest.approx(0.4)
    assert gates["errors"]["verdict"] == "continue"
    assert gates["errors"]["n_candidate"] == gates["errors"]["n_incumbent"] == 700 + 3 * 60
    assert billing["gates"]["cost"]["candidate_per_call"] == pytest.approx(0.0005)
    assert billing["latest_decision"]["action"] == "advance"
    # shipping is pinned: the evidence of its pin
    assert shipping["status"] == "pinned" and shipping["share"] == 0.0
    assert shipping["gates_source"] == "decision"
    assert {g["name"]: g["verdict"] for g in shipping["gates"]["gates"]}["quality"] == "fail"


def test_errors_in_the_dashboards_shape(http: httpx.Client, seeded: tuple[Running, Any]) -> None:
    missing = http.get("/dashboard/api/rollouts/no-such-route")
    assert missing.status_code == 404
    assert "no-such-route" in missing.json()["error"]["message"]
    for path in (
        "/dashboard/api/rollouts",
        f"/dashboard/api/rollouts/{seed.ROUTE}",
        "/dashboard/api/savings",
    ):
        anonymous = httpx.get(seeded[0].url + path, timeout=10)
        assert anonymous.status_code == 401, path
        wrong = httpx.get(
            seeded[0].url + path, headers={"authorization": "Bearer nope"}, timeout=10
        )
        assert wrong.status_code == 401, path
    bad = http.get("/dashboard/api/savings", params={"window": "3 weeks"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "window"


def test_savings_per_route_and_day(http: httpx.Client) -> None:
    response = http.get("/dashboard/api/savings", params={"window": "24h"})
    assert response.status_code == 200, response.text
    routes = {r["route"]: r for r in response.json()["routes"]}
    assert set(routes) == {seed.ROUTE, "local-bot"}

    main = routes[seed.ROUTE]
    # the rollout's incumbent, though the student has the larger weight now
    assert (main["incumbent"], main["incumbent_chosen_by"]) == ("teacher", "rollout")
    assert main["students"] == ["student"]
    assert main["training_cost_usd"] == {"student": None}  # no lineage: unknown, never 0
    assert main["incumbent_price"]["input"] == 2.5 and main["incumbent_price"]["output"] == 10.0
    (line,) = main["days"]
    assert line["day"] == (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)).strftime("%Y-%m-%d")
    for name, value in seed.EXPECTED.items():
        assert line[name] == pytest.approx(value), name
        assert main["totals"][name] == pytest.approx(value), name
    assert line["judge_calls"] == seed.JUDGE_CALLS and line["shadow_calls"] == seed.SHADOW_CALLS
    assert line["unpriced_calls"] == 0

    local = routes["local-bot"]
    assert (local["incumbent"], local["incumbent_chosen_by"]) == ("big", "largest weight")
    assert local["incumbent_price"] is None  # unknown, and so is everything it enters
    (local_line,) = local["days"]
    assert local_line["student_calls"] == 6 and local_line["unpriced_calls"] == 2
    assert local_line["student_cost_usd"] == pytest.approx(4 * 0.0003)
    for name in ("incumbent_cost_usd", "gross_savings_usd", "net_savings_usd"):
        assert local_line[name] is None and local["totals"][name] is None, name

    # an empty window: routes with students listed, no days, nothing saved
    earlier = http.get(
        "/dashboard/api/savings",
        params={"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"},
    )
    assert earlier.status_code == 200
    assert all(
        r["days"] == [] and r["totals"]["net_savings_usd"] == 0 for r in earlier.json()["routes"]
    )


def test_a_state_this_gateway_cannot_read_is_shown_as_stored(
    http: httpx.Client, database_url: str
) -> None:
    async def save() -> None:
        store = await Store.connect(database_url)
        try:
            await RolloutTable(store.engine).save("future", {"version": 99}, "running", [])
        finally:
            await store.close()

    seed.run(save())
    listed = {r["route"]: r for r in http.get("/dashboard/api/rollouts").json()["rollouts"]}
    assert "version 99" in listed["future"]["problem"] and listed["future"]["slices"] == {}
    detail = http.get("/dashboard/api/rollouts/future")
    assert detail.status_code == 200, detail.text
    assert detail.json()["state"] == {"version": 99} and detail.json()["slices"] == []
    assert detail.json()["status"] == "running"  # as listed in the table
    # the other rollout is still read, and savings still made
    assert listed[seed.ROUTE]["status"] == "running"
    assert http.get("/dashboard/api/savings").status_code == 200


def _sums(kind: str, calls: int, unpriced: int, cost: float) -> UsageSums:
    priced = calls - unpriced
    return UsageSums(
        "r", "2026-12-05", kind, calls, unpriced, 1000 * priced, 0, 0, 500 * priced, cost
    )


def test_an_unknown_cost_is_never_a_zero() -> None:
    price = Price(2.5, 1.25, 10.0)
    known = day_line("r", "d", {"student": _sums("student", 2, 0, 0.002)}, price)
    assert known["incumbent_cost_usd"] == pytest.approx(0.015)
    assert known["net_savings_usd"] == pytest.approx(0.013)
    assert known["judge_cost_usd"] == 0.0  # no judge calls: nothing spent, known
    # every student call unpriced: its cost, the incumbent's for the same tokens, gross and net
    unpriced = day_line("r", "d", {"student": _sums("student", 3, 3, 0.0)}, price)
    for name in ("student_cost_usd", "incumbent_cost_usd", "gross_savings_usd", "net_savings_usd"):
        assert unpriced[name] is None, name
    assert unpriced["unpriced_calls"] == 3
    # judge calls without a price: the gross is known, the net is not
    kinds = {"student": _sums("student", 2, 0, 0.002), "judge": _sums("judge", 1, 1, 0.0)}
    judged = day_line("r", "d", kinds, price)
    assert judged["gross_savings_usd"] == pytest.approx(0.013)
    assert judged["judge_cost_usd"] is None and judged["net_savings_usd"] is None
    assert judged["judge_unpriced_calls"] == 1
    # partly priced: the priced calls on both sides, the rest counted
    partly = day_line("r", "d", {"student": _sums("student", 4, 1, 0.003)}, price)
    assert partly["incumbent_cost_usd"] == pytest.approx(0.0225) and partly["unpriced_calls"] == 1
