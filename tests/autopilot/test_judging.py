"""autopilot.judging: pairs judged through a real gateway and simulator, stored once; a judge
that always prefers the first answer cancels out with both orders."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from autopilot.controller import RolloutConfig
from autopilot.judging import JudgeClient, PairJudge, sampled
from capture.engine import create_engine
from capture.schema import calls, judgements
from tests.autopilot.stores import (  # noqa: F401  (fixtures)
    T0,
    backend,
    call_row,
    database_url,
    insert_calls,
)
from tests.capture_support import ENV, GATEWAY_KEY, capture_config, poll, rows_of, variant
from tests.processes import Running, start_gateway, start_simulator

STUDENT_MODEL = "ft:gpt-4o-mini:acme::weak"
PROFILE = {
    "default": {"ttft_ms": 0, "token_ms": 0},
    "models": {"ft:*": {"ttft_ms": 0, "token_ms": 0, "quality": 0.3}},
}
CONFIG = RolloutConfig(
    route="support", incumbent="teacher", candidate="student", slice_keys=("task",), max_slices=3
)
QUESTIONS = [
    "How do I reset my password?",
    "Where is my parcel?",
    "Can I change my delivery address?",
    "What does the premium plan include?",
    "How do I cancel my subscription?",
    "Why was I charged twice?",
    "How do I export my invoices?",
    "Is there a student discount?",
    "How do I add a second user?",
    "Can I pay by bank transfer?",
    "How long does a refund take?",
    "Do you ship to Norway?",
]


def http_judge(gateway_url: str) -> tuple[JudgeClient, httpx.AsyncClient]:
    """A JudgeClient over HTTP: the gateway's /v1/chat/completions with the tags as
    ``x-gateway-tags`` (over the socket the gateway drops ``gateway.*`` marks: only its
    in-process client may set them)."""
    http = httpx.AsyncClient(
        base_url=gateway_url, headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=30
    )

    async def client(
        body: dict[str, Any], tags: Mapping[str, str]
    ) -> tuple[dict[str, Any] | None, str | None]:
        header = ",".join(f"{k}={v}" for k, v in tags.items())
        response = await http.post(
            "/v1/chat/completions", json=body, headers={"x-gateway-tags": header}
        )
        payload = response.json() if response.status_code == 200 else None
        return payload, response.headers.get("x-request-id")

    return client, http


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_simulator(tmp_path_factory.mktemp("judging-sim"), PROFILE)
    yield running
    running.stop()


def test_a_defective_candidate_loses_through_the_gateway(
    database_url: str,  # noqa: F811
    simulator: Running,
    tmp_path: Path,
) -> None:
    routes = {
        "support": {
            "variants": {"teacher": variant("gpt-4o"), "student": variant(STUDENT_MODEL, 0)},
            "shadow": {"variant": "student", "sample": 1.0},
        },
        "judge": {"variants": {"teacher": variant("gpt-4o")}},
    }
    gateway = start_gateway(tmp_path, capture_config(simulator.url, database_url, routes), env=ENV)
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    try:
        ids = []
        with httpx.Client(
            base_url=gateway.url, headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=30
        ) as http:
            for i, question in enumerate(QUESTIONS):
                body: dict[str, Any] = {
                    "model": "support",
                    "messages": [{"role": "user", "content": question}],
                }
                if i % 3 == 2:  # some ask for JSON: a cut-off answer fails the checks
                    body["response_format"] = {"type": "json_object"}
                task = "billing" if i % 2 else "account"
                response = http.post(
                    "/v1/chat/completions", json=body, headers={"x-gateway-tags": f"task={task}"}
                )
                assert response.status_code == 200, response.text
                ids.append(response.headers["x-request-id"])
        with rows_of(database_url) as rows:
            rows.wait_for_ids(ids)
            for request_id in ids:

                def copied(r: str = request_id) -> list[dict[str, Any]]:
                    return rows.shadows_of(r)

                poll(copied, f"the shadow copy of {request_id}")

        async def judge_all() -> tuple[int, int, list[dict[str, Any]], set[str]]:
            engine = create_engine(database_url)
            client, http = http_judge(gateway.url)
            try:
                judge = PairJudge(engine, client, judge_route="judge", seed=3, concurrency=3)
                judged = await judge.judge_pending(CONFIG, started)
                again = await PairJudge(engine, client, judge_route="judge").judge_pending(
                    CONFIG, started
                )
                async with engine.connect() as connection:
                    stored = [
                        dict(r)
                        for r in (await connection.execute(sa.select(judgements))).mappings()
                    ]
                judge_ids = {i for r in stored for i in r["judge_calls"] or ()}

                async def captured() -> set[str]:
                    async with engine.connect() as connection:
                        query = sa.select(calls.c.id).where(
                            calls.c.id.in_(judge_ids), calls.c.route == "judge"
                        )
                        return set((await connection.execute(query)).scalars())

                for _ in range(200):  # the writer flushes every 50 ms
                    if await captured() == judge_ids:
                        break
                    await asyncio.sleep(0.05)
                return judged, again, stored, await captured()
            finally:
                await http.aclose()
                await engine.dispose()

        judged, again, stored, captured = asyncio.run(judge_all())
    finally:
        gateway.stop()

    assert judged == len(QUESTIONS) == len(stored)
    assert again == 0  # the pairs are judged once
    verdicts = [r["verdict"] for r in stored]
    wins, losses = verdicts.count("win"), verdicts.count("loss")
    assert losses > wins, verdicts
    assert {r["slice"] for r in stored} == {"task=billing", "task=account"}
    assert all(r["incumbent"] == "teacher" and r["candidate"] == "student" for r in stored)
    assert set(ids) == {r["incumbent_call"] for r in stored}
    by_checks = [r for r in stored if r["checks"]["candidate"] and not r["checks"]["incumbent"]]
    assert by_checks, "some candidate JSON answers should have failed the checks"
    for r in by_checks:
        assert r["verdict"] == "loss" and r["judge_calls"] == [] and "failed checks" in r["reason"]
    asked = [r for r in stored if r["judge_calls"]]
    assert asked and all(len(r["judge_calls"]) == 2 for r in asked)  # both orders
    assert captured == {i for r in asked for i in r["judge_calls"]}  # judge calls are captured


def first_answer_judge(asked: list[dict[str, Any]]) -> JudgeClient:
    """A judge with a pure position bias: always "A"."""

    async def client(
        body: dict[str, Any], tags: Mapping[str, str]
    ) -> tuple[dict[str, Any] | None, str | None]:
        asked.append({"body": body, "tags": dict(tags)})
        content = '{"winner": "A", "reason": "the first one"}'
        return {"choices": [{"message": {"role": "assistant", "content": content}}]}, None

    return client


def test_both_orders_cancel_a_position_bias(database_url: str) -> None:  # noqa: F811
    async def scenario() -> None:
        engine = create_engine(database_url)
        try:
            rows = []
            for i in range(40):
                at = T0 + dt.timedelta(seconds=i)
                live = call_row(at=at, variant="teacher", text=f"Answer number {i}.")
                copy = call_row(at=at, variant="student", text=f"Other answer {i}.",
                                shadow_of=live["id"])  # fmt: skip
                rows += [live, copy]
            await insert_calls(engine, rows)
            asked: list[dict[str, Any]] = []
            judge = PairJudge(engine, first_answer_judge(asked), judge_route="judge",
                              rubric="Prefer short answers.", sample=0.5, seed=1)  # fmt: skip
            judged = await judge.judge_pending(CONFIG, T0, limit=7)
            judged += await judge.judge_pending(CONFIG, T0, limit=100)
            assert judged == sum(sampled(r["id"], 0.5, 1) for r in rows[::2])
            assert 10 < judged < 30
            assert await judge.judge_pending(CONFIG, T0) == 0
            assert len(asked) == 2 * judged
            assert all(a["tags"] == {"gateway.purpose": "judge", "gateway.rollout": "support"}
                       for a in asked)  # fmt: skip
            assert all(
                "Prefer short answers." in a["body"]["messages"][0]["content"] for a in asked
            )
            assert all(a["body"]["model"] == "judge" for a in asked)
            one_order = PairJudge(
                engine, first_answer_judge([]), judge_route="judge", both_orders=False, seed=2
            )
            judged_once = await one_order.judge_pending(CONFIG, T0)
            assert judged_once == 40 - judged
            async with engine.connect() as connection:
                stored = (await connection.execute(sa.select(judgements))).mappings().all()
            two = [
                r["verdict"]
                for r in stored
                if len(r["judge_calls"] or ()) == 0 and "both orders" in r["reason"]
            ]
            one = [r["verdict"] for r in stored if "one order" in r["reason"]]
            assert two and set(two) == {"tie"}
            assert "win" in one and "loss" in one
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_sample_is_stable() -> None:
    ids = [f"{i:032x}" for i in range(4000)]
    share = sum(sampled(i, 0.25, 7) for i in ids) / len(ids)
    assert 0.22 < share < 0.28
    assert [sampled(i, 0.25, 7) for i in ids] == [sampled(i, 0.25, 7) for i in ids]
    assert all(sampled(i, 1.0, None) for i in ids[:10]) and not any(
        sampled(i, 0.0, 1) for i in ids[:10]
    )
