"""A capture store with a rollout in progress and student traffic, for the dashboard's tests.

The rollout is made by the controller itself: ``autopilot.controller.Rollout`` ticked with
synthetic evidence through a recording `Actions`, each look saved with
``capture.rollouts.RolloutTable`` (``autopilot.controller.step``), so the store holds what a
running controller leaves there. Route ``gpt-4o``, incumbent ``teacher``, candidate ``student``,
sliced by ``task``: ``task=billing`` is as good as the teacher and advances through shadow, 5%
and 25% to 50%, where it is still being watched; ``task=shipping`` is much worse and is pinned
to the incumbent.

The calls: student answers, shadow copies and judge calls of ``gpt-4o``, with round figures so
the savings can be worked out by hand (``EXPECTED``), and student answers of ``local-bot``,
whose incumbent has no price.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import uuid
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from autopilot.controller import (
    ArmEvidence,
    DecisionRecord,
    Evidence,
    Rollout,
    RolloutConfig,
    SliceEvidence,
    step,
)
from autopilot.gates import StageGates
from capture.ledger import JUDGE, PURPOSE_TAG, ROLLOUT_TAG
from capture.rollouts import RolloutTable
from capture.store import Store

T = TypeVar("T")

ROUTE = "gpt-4o"
TEACHER_MODEL = "gpt-4o"  # USD 2.50 in, 10.00 out per 1M tokens (capture.pricing)
STUDENT_MODEL = "ft:gpt-4o-mini:acme::s1"
LOCAL_INCUMBENT_MODEL = "acme-local-llm-70b"  # no price anywhere
LOCAL_STUDENT_MODEL = "ft:gpt-4o-mini:acme::l1"
LOOK_S = 120.0
LOOKS = 10

ROUTES: dict[str, dict[str, tuple[str, int]]] = {
    # weights as after promotion: the rollout says which variant is the incumbent, not these
    ROUTE: {"teacher": (TEACHER_MODEL, 10), "student": (STUDENT_MODEL, 90)},
    "local-bot": {"big": (LOCAL_INCUMBENT_MODEL, 90), "small": (LOCAL_STUDENT_MODEL, 10)},
}

# The calls, and what the ledger must make of them (worked out by hand):
STUDENT_CALLS = 10  # each 1,000 prompt tokens, 500 completion tokens, USD 0.001
SHADOW_CALLS = 3  # each USD 0.0005
JUDGE_CALLS = 2  # each USD 0.002
LOCAL_CALLS = 4  # each USD 0.0003; 2 more without a price (cost unknown)
EXPECTED = {
    "student_calls": 10,
    "student_cost_usd": 0.01,
    # 10 x (1000 x 2.50 + 500 x 10.00) / 1e6
    "incumbent_cost_usd": 0.075,
    "gross_savings_usd": 0.065,
    "judge_cost_usd": 0.004,
    "counterfactual_cost_usd": 0.0,
    "shadow_cost_usd": 0.0015,
    "net_savings_usd": 0.0595,
}


class RecordingActions:
    """The controller's `Actions`, recorded instead of applied."""

    def __init__(self) -> None:
        self.done: list[tuple[Any, ...]] = []

    def set_weights(
        self, route: str, weights: Mapping[str, float], slice: Mapping[str, str] | None
    ) -> None:
        self.done.append(("weights", route, dict(weights), dict(slice or {})))

    def pin_slice(self, route: str, slice: Mapping[str, str], variant: str) -> None:
        self.done.append(("pin", route, dict(slice), variant))

    def set_shadow_sample(self, route: str, variant: str, rate: float) -> None:
        self.done.append(("shadow", route, variant, rate))


def rollout_config() -> RolloutConfig:
    gates = StageGates(
        quality_margin=0.1,
        error_margin=0.1,
        latency_p95_ms=3000.0,
        latency_quantile=0.9,
        min_samples=100,
        min_dwell_s=60.0,
        watch_window=None,
    )
    return RolloutConfig(
        route=ROUTE,
        incumbent="teacher",
        candidate="student",
        stages=(0.0, 0.05, 0.25, 0.5),
        target=0.9,
        holdout=0.1,
        slice_keys=("task",),
        max_slices=3,
        gates=gates,
    )


def _arm(calls: int, cost_per_call: float, latency_ms: float) -> ArmEvidence:
    return ArmEvidence(
        calls=calls,
        errors=1,
        cost_usd=calls * cost_per_call,
        latencies_ms=(latency_ms,) * calls,
    )


def _slice(task: str, wins: int, ties: int, losses: int, calls: int) -> SliceEvidence:
    return SliceEvidence(
        tags={"task": task},
        wins=wins,
        ties=ties,
        losses=losses,
        candidate=_arm(calls, 0.0005, 400.0),
        incumbent=_arm(calls, 0.004, 1400.0),
    )


def _look(index: int) -> Evidence:
    if index >= 7:  # the last looks: a little more for billing, still short of a decision
        return Evidence(slices=[_slice("billing", 40, 15, 40, 60)])
    shipping = (
        _slice("shipping", 95, 10, 95, 200) if index < 2 else _slice("shipping", 10, 10, 180, 200)
    )
    return Evidence(slices=[_slice("billing", 300, 100, 280, 700), shipping])


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on a loop of its own, in a thread (Playwright's sync API holds this thread's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _seed_rollout(url: str, now: float) -> list[DecisionRecord]:
    store = await Store.connect(url)
    try:
        table = RolloutTable(store.engine)
        start = now - LOOK_S * (LOOKS + 1)
        rollout = Rollout(rollout_config(), start)
        actions = RecordingActions()
        records: list[DecisionRecord] = []
        for index in range(LOOKS):
            at = start + LOOK_S * (index + 1)
            records += await step(rollout, at, _look(index), actions, table)
        return records
    finally:
        await store.close()


def seed_rollout(url: str, now: float) -> list[DecisionRecord]:
    """The rollout of ``ROUTE`` saved look by look; its decisions, oldest first."""
    return run(_seed_rollout(url, now))


def _call(
    route: str,
    variant: str,
    model: str,
    at: dt.datetime,
    cost: float | None,
    tags: dict[str, str] | None = None,
    shadow_of: str | None = None,
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "created_at": at,
        "endpoint": "chat",
        "route": route,
        "variant": variant,
        "provider": "sim",
        "requested_model": route,
        "upstream_model": model,
        "request": {"model": route, "messages": [{"role": "user", "content": "[task=billing] q"}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": "ok."}}]},
        "status": 200,
        "error": None,
        "finish_reason": "stop",
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "cached_tokens": 0,
        "cost_usd": cost,
        "total_ms": 400.0,
        "ttft_ms": None,
        "upstream_ms": 399.5,
        "overhead_ms": 0.5,
        "user_key": "u",
        "tags": tags or {"task": "billing"},
        "stream": False,
        "shadow_of": shadow_of,
        "cache_hit": False,
    }


async def _seed_calls(url: str, at: dt.datetime) -> None:
    rows = [_call(ROUTE, "student", STUDENT_MODEL, at, 0.001) for _ in range(STUDENT_CALLS)]
    rows += [
        _call(ROUTE, "student", STUDENT_MODEL, at, 0.0005, shadow_of=uuid.uuid4().hex)
        for _ in range(SHADOW_CALLS)
    ]
    judge_tags = {PURPOSE_TAG: JUDGE, ROLLOUT_TAG: ROUTE}
    rows += [
        _call("judge", "default", TEACHER_MODEL, at, 0.002, tags=judge_tags)
        for _ in range(JUDGE_CALLS)
    ]
    # the teacher's own calls are not savings
    rows += [_call(ROUTE, "teacher", TEACHER_MODEL, at, 0.0075) for _ in range(5)]
    rows += [_call("local-bot", "small", LOCAL_STUDENT_MODEL, at, 0.0003) for _ in range(4)]
    rows += [_call("local-bot", "small", LOCAL_STUDENT_MODEL, at, None) for _ in range(2)]
    store = await Store.connect(url)
    try:
        await store.insert_calls(rows)
    finally:
        await store.close()


def seed_calls(url: str, at: dt.datetime) -> None:
    """The calls behind ``EXPECTED`` (and local-bot's), all at ``at``."""
    run(_seed_calls(url, at))
