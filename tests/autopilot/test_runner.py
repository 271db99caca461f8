"""Two replicas, one store and one lease: only the holder decides, and a replica that takes the
lease over carries on from the saved state."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from autopilot.controller import ArmEvidence, Evidence, RolloutConfig, SliceEvidence
from autopilot.gates import StageGates
from autopilot.runner import Controller
from capture.engine import create_engine
from capture.lease import DatabaseLease
from capture.migrate import upgrade_async
from capture.rollouts import RolloutTable


class Routing:
    def __init__(self) -> None:
        self.weights: list[dict[str, float]] = []

    def set_weights(
        self, route: str, weights: Mapping[str, float], slice: Mapping[str, str] | None
    ) -> None:
        self.weights.append(dict(weights))

    def pin_slice(self, route: str, slice: Mapping[str, str], variant: str) -> None:
        raise AssertionError("nothing is pinned here")

    def set_shadow_sample(self, route: str, variant: str, rate: float) -> None:
        pass


def _evidence(rng: np.random.Generator) -> Evidence:
    wins = int(rng.binomial(10, 0.35))
    ties = int(rng.binomial(10 - wins, 0.3 / 0.65))
    return Evidence(
        [
            SliceEvidence(
                wins=wins,
                ties=ties,
                losses=10 - wins - ties,
                candidate=ArmEvidence(calls=10, cost_usd=1.0),
                incumbent=ArmEvidence(calls=30, cost_usd=30.0),
            )
        ]
    )


def test_only_the_holder_decides_and_a_successor_carries_on(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    config = RolloutConfig(
        route="chat",
        incumbent="teacher",
        candidate="student",
        gates=StageGates(min_samples=100, min_dwell_s=20.0),
    )

    async def run() -> None:
        await upgrade_async(url)
        engine = create_engine(url)
        try:
            store = RolloutTable(engine)
            a = Controller(store, DatabaseLease(engine), "replica-a", ttl_s=5.0)
            b = Controller(store, DatabaseLease(engine), "replica-b", ttl_s=5.0)
            assert await a.look("chat", 0.0, Evidence(), Routing()) is None  # no rollout yet
            await a.start(config, 0.0)
            rng = np.random.default_rng(11)
            routed_a, routed_b = Routing(), Routing()
            decided = []
            for t in range(120):
                got_a = await a.look("chat", float(t), _evidence(rng), routed_a)
                got_b = await b.look("chat", float(t), _evidence(rng), routed_b)
                assert got_a is not None and got_b is None  # a holds it, renewing every look
                decided += got_a
            assert [d.action for d in decided][:2] == ["start", "advance"]
            assert routed_b.weights == []
            stage = (await store.load("chat") or {})["slices"][0]["stage"]
            assert stage >= 1
            # a stops looking (crashed); b takes over once the lease expires, from the state
            assert await b.look("chat", 122.0, _evidence(rng), routed_b) is None
            taken = await b.look("chat", 126.0, _evidence(rng), routed_b)
            assert taken == []  # carried on: no new "start", same stage
            assert (await store.load("chat") or {})["slices"][0]["stage"] == stage
            assert await a.look("chat", 127.0, _evidence(rng), routed_a) is None
            for t in range(127, 2000):
                got = await b.look("chat", float(t), _evidence(rng), routed_b)
                assert got is not None
                decided += got
            assert decided[-1].action == "promote"
            assert routed_b.weights[-1] == {"teacher": 0.1, "student": 0.9}
            # an abort ends it; a finished rollout is left alone
            await b.look("chat", 2000.0, Evidence(abort="done"), routed_b)
            assert await b.look("chat", 2001.0, _evidence(rng), routed_b) == []
            rows = await store.decisions("chat")
            assert [r["action"] for r in rows] == [d.action for d in decided] + ["abort"]
            await b.stop(2002.0)
            assert await a.look("chat", 2002.0, Evidence(), routed_a) == []  # a holds it again
        finally:
            await engine.dispose()

    asyncio.run(run())
