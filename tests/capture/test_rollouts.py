"""Rollout states and decisions through the store, on both backends."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping

import numpy as np

from autopilot.controller import (
    ArmEvidence,
    Evidence,
    Rollout,
    RolloutConfig,
    SliceEvidence,
    step,
)
from autopilot.gates import StageGates
from capture.engine import create_engine
from capture.rollouts import RolloutTable


class Routing:
    def __init__(self) -> None:
        self.done: list[str] = []

    def set_weights(
        self, route: str, weights: Mapping[str, float], slice: Mapping[str, str] | None
    ) -> None:
        self.done.append(f"weights {route} {dict(weights)} {slice}")

    def pin_slice(self, route: str, slice: Mapping[str, str], variant: str) -> None:
        self.done.append(f"pin {route} {dict(slice)} {variant}")

    def set_shadow_sample(self, route: str, variant: str, rate: float) -> None:
        self.done.append(f"shadow {route} {variant} {rate}")


def _evidence(rng: np.random.Generator, task: str) -> SliceEvidence:
    wins = int(rng.binomial(10, 0.4))
    ties = int(rng.binomial(10 - wins, 0.5))
    return SliceEvidence(
        tags={"task": task},
        wins=wins,
        ties=ties,
        losses=10 - wins - ties,
        candidate=ArmEvidence(calls=10, cost_usd=1.0, latencies_ms=(100.0,) * 10),
        incumbent=ArmEvidence(calls=30, cost_usd=30.0),
    )


def test_state_and_decisions_survive_a_restart(database_url: str) -> None:
    gates = StageGates(min_samples=100, min_dwell_s=10.0, latency_p95_ms=500.0)
    config = RolloutConfig(
        route="support", incumbent="teacher", candidate="student", slice_keys=("task",),
        max_slices=2, gates=gates,
    )  # fmt: skip

    async def run() -> None:
        engine = create_engine(database_url)
        store = RolloutTable(engine)
        try:
            assert await store.load("support") is None
            rollout = Rollout(config, started=0.0)
            rng = np.random.default_rng(3)
            made = []
            for i in range(400):
                ev = Evidence([_evidence(rng, "faq"), _evidence(rng, "billing")])
                made += await step(rollout, float(i), ev, Routing(), store)
            assert any(r.action == "advance" for r in made)
            # a restart: the state comes back as saved, and decides as the original would
            saved = await store.load("support")
            assert saved is not None
            assert saved == json.loads(json.dumps(rollout.state()))
            restored = Rollout.from_state(saved)
            assert restored.state() == rollout.state()
            rows = await store.decisions("support")
            assert [r["action"] for r in rows] == [r.action for r in made]
            assert [r["slice"] for r in rows] == [r.slice for r in made]
            advance = next(r for r in rows if r["action"] == "advance")
            gates_ev = {g["name"]: g for g in advance["evidence"]["gates"]}
            assert gates_ev["quality"]["verdict"] == "pass"
            assert gates_ev["quality"]["n_candidate"] >= 100
            assert advance["at"].tzinfo is not None
            assert advance["at"] == dt.datetime.fromtimestamp(
                next(r for r in made if r.action == "advance").at.timestamp(), dt.UTC
            )
            assert (await store.list_rollouts())[0]["status"] == rollout.status
            # abort: recorded, and the status column follows
            rec = await step(restored, 401.0, Evidence(abort="by hand"), Routing(), store)
            assert {r.action for r in rec} == {"abort"}
            listed = await store.list_rollouts()
            assert [(r["route"], r["status"]) for r in listed] == [("support", "aborted")]
            assert (await store.decisions("support", limit=2))[-1]["reason"] == "aborted: by hand"
            assert await store.delete("support")
            assert await store.load("support") is None
            assert len(await store.decisions("support")) == len(rows) + len(rec)
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_an_abort_is_asked_for_a_running_rollout_and_kept_until_cleared(
    database_url: str,
) -> None:
    async def run() -> None:
        engine = create_engine(database_url)
        try:
            table = RolloutTable(engine)
            assert not await table.request_abort("support", "no rollout")  # nothing to abort
            await table.save("support", {"n": 1}, "running", [])
            assert await table.pending_abort("support") is None
            assert await table.request_abort("support", "bad answers")
            assert await table.pending_abort("support") == "bad answers"
            await table.save("support", {"n": 2}, "running", [])  # a look keeps the ask
            assert await table.pending_abort("support") == "bad answers"
            assert await table.request_abort("support", "worse answers")
            await table.clear_abort("support", "bad answers")  # a newer ask stays
            assert await table.pending_abort("support") == "worse answers"
            await table.clear_abort("support")
            assert await table.pending_abort("support") is None
            await table.clear_abort("support")
            await table.save("support", {"n": 3}, "promoted", [])  # still watched
            assert await table.request_abort("support", "after all")
            await table.save("support", {"n": 3}, "aborted", [])
            assert not await table.request_abort("support", "again")  # finished: nothing
            assert await table.load_all() == {"support": {"n": 3}}
        finally:
            await engine.dispose()

    asyncio.run(run())
