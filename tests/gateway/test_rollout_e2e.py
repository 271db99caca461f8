"""The autopilot end to end, in accelerated time: real gateway processes, the real simulator
(its judge sees the defects of a worse model's answers), the store on SQLite and PostgreSQL.

(a) an equal student is promoted to the target; (b) a student worse on one slice is kept off
that slice (pinned) while promoted on the other; (c) a student that degrades mid-rollout is
rolled back to the incumbent; (d) an A/A candidate (the incumbent's own model) is promoted
without a rollback."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from capture.schema import calls, judgements
from tests.capture_support import BACKENDS, Backend, BackendKind, open_backend
from tests.gateway.rollout_support import (
    FAST_GATES,
    SLICE_TEXT,
    STUDENT,
    Load,
    actions,
    admin,
    gateway_config,
    plan,
    reset_quality,
    rollout,
    set_quality,
    share_of,
    wait_until,
    weights,
)
from tests.processes import Running, start_gateway, start_simulator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_simulator(tmp_path_factory.mktemp("rollout-simulator"))
    yield running
    running.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind: BackendKind = request.param
    with open_backend(kind, tmp_path, "rollout_e2e") as opened:
        yield opened


@pytest.fixture
def quality(simulator: Running) -> Iterator[Running]:
    reset_quality(simulator)
    yield simulator
    reset_quality(simulator)


VERDICTS = ('verdict="win"', 'verdict="tie"', 'verdict="loss"')


def _metric(gateway: Running, name: str, verdict: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    labels = re.escape(f'route="support",{verdict}')
    found = re.search(rf"^{name}\{{{labels}\}}\s+(\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _marks_and_pairs(url: str) -> tuple[Counter[tuple[str, str]], list[Any], set[str]]:
    """The store's calls counted by (route, gateway.purpose), its judged pairs, the call ids."""

    async def read() -> tuple[Counter[tuple[str, str]], list[Any], set[str]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                rows = (
                    await connection.execute(sa.select(calls.c.id, calls.c.route, calls.c.tags))
                ).all()
                pairs = (await connection.execute(sa.select(judgements))).all()
        finally:
            await engine.dispose()
        marks = Counter((str(r.route), str((r.tags or {}).get("gateway.purpose"))) for r in rows)
        return marks, list(pairs), {str(r.id) for r in rows}

    return asyncio.run(read())


def _gateway(tmp_path: Path, backend: Backend, simulator: Running, **kw: Any) -> Running:
    return start_gateway(tmp_path, gateway_config(simulator.url, backend.new_url(), **kw))


def test_an_equal_student_is_promoted_to_the_target(
    tmp_path: Path, backend: Backend, quality: Running
) -> None:
    config = gateway_config(quality.url, backend.new_url(), rollout=plan())
    gateway = start_gateway(tmp_path, config)
    try:
        with Load([gateway]) as load:
            done = wait_until(
                lambda: (r := rollout(gateway)) is not None and r["status"] == "promoted" and r,
                "the student promoted",
                logs=(gateway,),
            )
        assert [a for _, a in actions(done)] == ["start", "advance", "promote"]
        routed = weights(gateway)
        assert share_of(routed, "student") == pytest.approx(0.9)
        assert routed["counterfactual"] == {"of": "student", "variant": "teacher", "sample": 1.0}
        assert not load.failed
        assert load.variants.get("student", 0) > 0  # it answered live calls
        evidence = done["decisions"][-1]["evidence"]
        quality_gate = next(g for g in evidence["gates"] if g["name"] == "quality")
        assert quality_gate["verdict"] == "pass"
        savings = done["savings"]  # the candidate is cheaper for the same tokens
        assert savings["student_calls"] > 0 and savings["gross_savings_usd"] > 0
        assert savings["counterfactual_cost_usd"] > 0  # its pairs' teacher copies cost
        judged = sum(_metric(gateway, "gateway_judge_verdicts_total", v) for v in VERDICTS)
        assert judged >= FAST_GATES["min_samples"]
        # in the store: the judge's calls and the teacher's counterfactual copies are marked,
        # and each judged pair names two captured calls
        marks, pairs, ids = _marks_and_pairs(config["capture"]["database_url"])
        assert marks[("judge", "judge")] >= judged and marks[("judge", "None")] == 0
        assert marks[("support", "counterfactual")] > 0
        assert len(pairs) >= judged
        assert all(p.incumbent_call in ids and p.candidate_call in ids for p in pairs)
        assert {p.verdict for p in pairs} <= {"win", "tie", "loss", None}
    finally:
        gateway.stop()
    # Restarted without Redis, it reads the file's weights (the student at 0); on taking the
    # lease it re-applies the saved shares, and the configured rollout is not started again.
    restarted = start_gateway(tmp_path, config)
    try:
        wait_until(
            lambda: share_of(weights(restarted), "student") == pytest.approx(0.9),
            "the saved shares re-applied",
            timeout=10,
            logs=(restarted,),
        )
        assert weights(restarted)["counterfactual"] is not None
        again = rollout(restarted)
        assert again is not None and again["status"] == "promoted"
        assert actions(again) == actions(done)
        # a promoted rollout is still watched, and can still be aborted
        path = "/admin/routes/support/rollout"
        assert admin(restarted, "DELETE", path, params={"reason": "rethink"}).status_code == 202
        wait_until(lambda: share_of(weights(restarted), "student") == 0.0, "the abort", timeout=10)
        aborted = rollout(restarted)
        assert aborted is not None and aborted["status"] == "aborted"
    finally:
        restarted.stop()


def test_a_candidate_whose_breaker_opens_is_rolled_back(
    tmp_path: Path, backend: Backend, quality: Running
) -> None:
    config = gateway_config(quality.url, backend.new_url(), rollout=plan(stages=[0.5]))
    config["providers"]["nowhere"] = {"base_url": "http://127.0.0.1:9/v1", "connect_timeout": 1}
    support = config["routes"]["support"]
    support["variants"]["student"]["provider"] = "nowhere"
    support["fallbacks"] = ["teacher"]
    support["retry"] = {"attempts": 1}
    support["breaker"] = {"failures": 3, "cooldown_s": 60}
    gateway = start_gateway(tmp_path, config)
    try:
        with Load([gateway]) as load:
            done = wait_until(
                lambda: (r := rollout(gateway)) is not None and r["status"] == "rolled_back" and r,
                "the rollback on the open breaker",
                logs=(gateway,),
            )
        assert done["decisions"][-1]["action"] == "rollback"
        assert done["reason"] == "the candidate's breaker opened"
        assert share_of(weights(gateway), "student") == 0.0
        assert not load.failed  # the fallback answered meanwhile
    finally:
        gateway.stop()


def test_a_student_worse_on_one_slice_is_kept_off_it_and_promoted_on_the_other(
    tmp_path: Path, backend: Backend, quality: Running
) -> None:
    set_quality(quality, STUDENT, 0.0, match=SLICE_TEXT["billing"])
    gateway = _gateway(tmp_path, backend, quality, rollout=plan(slice_keys=["task"], max_slices=3))
    try:
        with Load([gateway]) as load:

            def settled() -> dict[str, Any] | None:
                r = rollout(gateway)
                if r is None or r["status"] == "running":
                    return None
                return r

            done = wait_until(settled, "both slices decided", logs=(gateway,))
        slices = {s["name"]: s for s in done["slices"]}
        assert slices["task=billing"]["status"] == "pinned"
        assert slices["task=shipping"]["status"] == "promoted"
        assert done["status"] == "promoted"
        decided = actions(done)
        assert ("task=billing", "pin") in decided
        assert ("task=shipping", "promote") in decided
        assert not [a for s, a in decided if s == "task=shipping" and a in ("pin", "rollback")]
        routed = weights(gateway)
        assert share_of(routed, "student", "task=billing") == 0.0
        assert share_of(routed, "student", "task=shipping") == pytest.approx(0.9)
        assert share_of(routed, "student") == 0.0  # slices not seen stay on the incumbent
        assert not load.failed
    finally:
        gateway.stop()


def test_a_student_that_degrades_mid_rollout_is_rolled_back(
    tmp_path: Path, backend: Backend, quality: Running
) -> None:
    gates = {**FAST_GATES, "min_dwell_s": 3.0}
    gateway = _gateway(tmp_path, backend, quality, rollout=plan(gates=gates))
    try:
        with Load([gateway]) as load:

            def live() -> bool:
                r = rollout(gateway)
                return r is not None and any(s["share"] == 0.5 for s in r["slices"])

            wait_until(live, "the student live at half the traffic", logs=(gateway,))
            set_quality(quality, STUDENT, 0.0)  # from now on, every answer has a defect
            done = wait_until(
                lambda: (r := rollout(gateway)) is not None and r["status"] == "rolled_back" and r,
                "the rollback",
                logs=(gateway,),
            )
            routed = weights(gateway)
        assert actions(done)[-1] == ("*", "pin")
        assert [a for _, a in actions(done)][:2] == ["start", "advance"]
        assert "quality" in done["decisions"][-1]["reason"]
        assert share_of(routed, "student") == 0.0
        assert routed["counterfactual"] is None and routed["shadow"] is None
        assert not load.failed
    finally:
        gateway.stop()


def test_an_a_a_rollout_is_promoted_without_a_rollback(
    tmp_path: Path, backend: Backend, quality: Running
) -> None:
    gates = {**FAST_GATES, "max_cost_ratio": None}  # the same model costs the same
    gateway = _gateway(
        tmp_path, backend, quality, twin=True, rollout=plan(candidate="twin", gates=gates)
    )
    try:
        with Load([gateway]) as load:
            done = wait_until(
                lambda: (r := rollout(gateway)) is not None and r["status"] == "promoted" and r,
                "the twin promoted",
                logs=(gateway,),
            )
        assert [a for _, a in actions(done)] == ["start", "advance", "promote"]
        assert share_of(weights(gateway), "twin") == pytest.approx(0.9)
        assert not load.failed
    finally:
        gateway.stop()
