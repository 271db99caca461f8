"""The controller on simulated evidence: promotion, a pinned slice, rollback, abort, restarts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from autopilot.controller import (
    ABORTED,
    DEFAULT_SLICE,
    PROMOTED,
    ROLLED_BACK,
    SLICE_PINNED,
    SLICE_PROMOTED,
    ArmEvidence,
    DecisionRecord,
    Evidence,
    Rollout,
    RolloutConfig,
    SliceEvidence,
    slice_name,
)
from autopilot.gates import StageGates

GATES = StageGates(
    quality_margin=0.05,
    error_margin=0.03,
    latency_p95_ms=800.0,
    min_samples=200,
    min_dwell_s=30.0,
    max_duration_s=3000.0,
)


@dataclass
class FakeRouting:
    """The gateway's side of `Actions`, as plain state (what the gateway would route)."""

    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    pinned: dict[str, str] = field(default_factory=dict)
    shadow: dict[str, float] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def set_weights(
        self, route: str, weights: Mapping[str, float], slice: Mapping[str, str] | None
    ) -> None:
        key = "default" if slice is None else json.dumps(dict(slice), sort_keys=True)
        self.weights[key] = dict(weights)
        self.pinned.pop(key, None)
        self.calls.append(("weights", (route, key, dict(weights))))

    def pin_slice(self, route: str, slice: Mapping[str, str], variant: str) -> None:
        key = json.dumps(dict(slice), sort_keys=True)
        self.pinned[key] = variant
        self.calls.append(("pin", (route, key, variant)))

    def set_shadow_sample(self, route: str, variant: str, rate: float) -> None:
        self.shadow[variant] = rate
        self.calls.append(("shadow", (route, variant, rate)))


def config(**kw: Any) -> RolloutConfig:
    base: dict[str, Any] = {"route": "chat", "incumbent": "teacher", "candidate": "student"}
    base.update(kw)
    base.setdefault("gates", GATES)
    return RolloutConfig(**base)


def judged(rng: np.random.Generator, win_rate: float, n: int) -> tuple[int, int, int]:
    tie = 0.3
    wins = int(rng.binomial(n, win_rate - tie / 2))
    ties = int(rng.binomial(n - wins, tie / (1 - (win_rate - tie / 2))))
    return wins, ties, n - wins - ties


def evidence(
    rng: np.random.Generator,
    tags: Mapping[str, str],
    win_rate: float = 0.5,
    cand_error: float = 0.02,
    n: int = 10,
    latency_ms: float = 300.0,
) -> SliceEvidence:
    w, t, lo = judged(rng, win_rate, n)
    return SliceEvidence(
        tags=dict(tags),
        wins=w,
        ties=t,
        losses=lo,
        candidate=ArmEvidence(
            calls=n,
            errors=int(rng.binomial(n, cand_error)),
            cost_usd=n * 0.2,
            latencies_ms=(latency_ms,) * n,
        ),
        incumbent=ArmEvidence(
            calls=3 * n, errors=int(rng.binomial(3 * n, 0.02)), cost_usd=3 * n * 1.0
        ),
    )


def run(
    rollout: Rollout,
    routing: FakeRouting,
    make: Any,
    seconds: int,
    start: float = 1_000_000.0,
) -> list[DecisionRecord]:
    out: list[DecisionRecord] = []
    for i in range(seconds):
        out += rollout.tick(start + i, Evidence(slices=make(i)), routing)
    return out


def test_an_equal_candidate_is_promoted_to_the_target_stage_by_stage() -> None:
    rng = np.random.default_rng(1)
    rollout = Rollout(config(target=0.8, holdout=0.2), started=1_000_000.0)
    routing = FakeRouting()
    records = run(rollout, routing, lambda i: [evidence(rng, {})], 2000)
    actions = [r.action for r in records]
    assert actions == ["start", "advance", "advance", "advance", "promote"], actions
    assert rollout.status == PROMOTED
    assert routing.weights["default"] == {"teacher": pytest.approx(0.2), "student": 0.8}
    # shadow copies ran while the slice was in shadow, and stopped after
    assert [c for c in routing.calls if c[0] == "shadow"] == [
        ("shadow", ("chat", "student", 0.2)),
        ("shadow", ("chat", "student", 0.0)),
    ]
    shares = [r.share for r in records]
    assert shares == [0.0, 0.05, 0.25, 0.5, 0.8]
    ev = records[1].evidence
    assert ev["action"] == "advance"
    gates = {g["name"]: g for g in ev["gates"]}
    assert set(gates) == {"quality", "errors", "latency_p95"}
    assert gates["quality"]["verdict"] == "pass"
    assert gates["quality"]["n_candidate"] >= 200
    assert gates["quality"]["pass_bound"] > 0.45
    assert ev["cost"]["candidate_per_call"] == pytest.approx(0.2)
    assert ev["elapsed_s"] >= 30.0
    json.dumps([r.as_dict() for r in records], allow_nan=False)


def test_a_slice_worse_than_the_margin_is_pinned_while_the_others_advance() -> None:
    rng = np.random.default_rng(2)
    rollout = Rollout(config(slice_keys=("task",), max_slices=4), started=1_000_000.0)
    routing = FakeRouting()

    def make(i: int) -> list[SliceEvidence]:
        return [
            evidence(rng, {"task": "sql"}, win_rate=0.3),
            evidence(rng, {"task": "chat"}),
            evidence(rng, {"task": "mail", "other": "x"}),
        ]

    records = run(rollout, routing, make, 3000)
    by_slice: dict[str, list[str]] = {}
    for r in records:
        by_slice.setdefault(r.slice, []).append(r.action)
    # slices not seen yet stay on the incumbent
    assert routing.calls[0] == ("weights", ("chat", "default", {"teacher": 1.0, "student": 0.0}))
    assert by_slice["task=sql"] == ["start", "pin"]
    assert by_slice["task=chat"][-1] == "promote"
    assert by_slice["task=mail"][-1] == "promote"
    assert rollout.slices["task=sql"].status == SLICE_PINNED
    assert rollout.slices["task=chat"].status == SLICE_PROMOTED
    assert routing.pinned['{"task": "sql"}'] == "teacher"
    assert routing.weights['{"task": "chat"}']["student"] == 0.9
    assert rollout.status == PROMOTED
    assert "task=sql" in rollout.reason
    pin = next(r for r in records if r.action == "pin")
    quality = next(g for g in pin.evidence["gates"] if g["name"] == "quality")
    assert quality["verdict"] == "fail"
    assert quality["fail_bound"] < quality["threshold"]
    # Bonferroni over the configured number of slices
    assert quality["alpha_pass"] == pytest.approx(0.05 / 4)


def test_slices_beyond_max_slices_share_the_default_slice() -> None:
    rng = np.random.default_rng(3)
    rollout = Rollout(config(slice_keys=("task",), max_slices=2), started=0.0)
    routing = FakeRouting()
    rollout.tick(1.0, Evidence([evidence(rng, {"task": t}) for t in "abc"]), routing)
    assert sorted(rollout.slices) == [DEFAULT_SLICE, "task=a"]
    assert rollout.slices[DEFAULT_SLICE].gates.quality.n == 20
    assert slice_name({"task": "a"}, ("task", "tenant")) == "task=a,tenant="


def test_a_candidate_that_degrades_after_promotion_is_rolled_back() -> None:
    rng = np.random.default_rng(4)
    rollout = Rollout(config(retries=1), started=0.0)
    routing = FakeRouting()

    def make(i: int) -> list[SliceEvidence]:
        if rollout.status == PROMOTED or i > 5000:
            return [evidence(rng, {}, win_rate=0.3, cand_error=0.15)]
        return [evidence(rng, {})]

    records = run(rollout, routing, make, 5000, start=0.0)
    promote = next(i for i, r in enumerate(records) if r.action == "promote")
    after = [r.action for r in records[promote + 1 :]]
    # back to the last safe stage once (retries=1), then pinned to the incumbent
    assert after[0] == "rollback", after
    assert records[promote + 1].to_stage == 3
    assert records[promote + 1].share == 0.5
    assert "pin" in after
    assert rollout.status == ROLLED_BACK
    assert routing.weights["default"] == {"teacher": 1.0}
    failed = {g["name"] for g in records[promote + 1].evidence["gates"] if g["verdict"] == "fail"}
    assert failed & {"quality", "errors"}


def test_abort_and_breaker_return_every_slice_to_the_incumbent_at_once() -> None:
    rng = np.random.default_rng(5)
    for ev, status in (
        (Evidence(abort="operator says no"), ABORTED),
        (Evidence(breaker_open=True), ROLLED_BACK),
    ):
        rollout = Rollout(config(slice_keys=("task",), max_slices=3), started=0.0)
        routing = FakeRouting()
        run(rollout, routing, lambda i: [evidence(rng, {"task": "a"}), evidence(rng, {})], 300)
        assert rollout.slices["task=a"].stage >= 1
        records = rollout.tick(400.0, ev, routing)
        assert rollout.status == status
        assert {r.slice for r in records} == {"task=a", "task="}
        assert routing.weights["default"] == {"teacher": 1.0}
        assert routing.pinned == {'{"task": "a"}': "teacher", '{"task": ""}': "teacher"}
        assert rollout.tick(401.0, Evidence([evidence(rng, {})]), routing) == []


def test_a_dearer_candidate_never_advances_and_gives_up() -> None:
    rng = np.random.default_rng(6)
    gates = StageGates(min_samples=50, min_dwell_s=0.0, max_duration_s=200.0)
    rollout = Rollout(config(gates=gates), started=0.0)
    routing = FakeRouting()

    def make(i: int) -> list[SliceEvidence]:
        e = evidence(rng, {})
        return [SliceEvidence(e.tags, e.wins, e.ties, e.losses, e.incumbent, e.candidate)]

    records = run(rollout, routing, make, 300, start=0.0)
    assert [r.action for r in records] == ["start", "give_up"]
    assert "waiting on cost" in records[-1].reason
    assert rollout.status == "gave_up"


def test_the_state_is_json_and_a_restored_rollout_decides_the_same() -> None:
    rng = np.random.default_rng(7)
    rollout = Rollout(config(slice_keys=("task",), max_slices=3), started=0.0)
    routing = FakeRouting()
    run(rollout, routing, lambda i: [evidence(rng, {"task": "a"}), evidence(rng, {})], 150, 0.0)
    state = rollout.state()
    text = json.dumps(state, allow_nan=False)
    restored = Rollout.from_state(json.loads(text))
    assert restored.state() == state
    feed = np.random.default_rng(8)
    again = np.random.default_rng(8)
    a = run(rollout, FakeRouting(), lambda i: [evidence(feed, {"task": "a"})], 2000, 150.0)
    b = run(restored, FakeRouting(), lambda i: [evidence(again, {"task": "a"})], 2000, 150.0)
    assert [r.as_dict() for r in a] == [r.as_dict() for r in b]
    assert [r.action for r in a].count("advance") >= 2


def test_bad_configurations_and_evidence_are_refused() -> None:
    with pytest.raises(ValueError, match="target <= 1 - holdout"):
        config(target=0.95, holdout=0.1)
    with pytest.raises(ValueError, match="increase"):
        config(stages=(0.0, 0.5, 0.25))
    with pytest.raises(ValueError, match="differ"):
        config(candidate="teacher")
    with pytest.raises(ValueError, match="unknown rollout settings: colour"):
        RolloutConfig.from_dict({"route": "r", "incumbent": "a", "candidate": "b", "colour": 1})
    rollout = Rollout(config(slice_keys=("task",), max_slices=3), started=0.0)
    good = SliceEvidence(tags={"task": "a"}, wins=3, candidate=ArmEvidence(calls=3))
    before = rollout.state()
    for bad, message in (
        (SliceEvidence(candidate=ArmEvidence(calls=1, latencies_ms=(float("nan"),))), "finite"),
        (SliceEvidence(incumbent=ArmEvidence(calls=1, errors=2)), "more errors than calls"),
        (SliceEvidence(wins=-1), "counts"),
        (SliceEvidence(candidate=ArmEvidence(calls=1, cost_usd=float("inf"))), "costs"),
        (SliceEvidence(candidate=ArmEvidence(feedback=(2.0,))), r"feedback values"),
    ):
        routing = FakeRouting()
        with pytest.raises(ValueError, match=message):
            rollout.tick(1.0, Evidence([good, bad]), routing)
        assert rollout.state() == before  # nothing added, nothing done
        assert routing.calls == []
    with pytest.raises(ValueError, match="state version"):
        Rollout.from_state({"version": 99})
