"""Two replicas, one store and one lease: only the holder decides, and a replica that takes the
lease over carries on from the saved state."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autopilot.controller import ArmEvidence, Evidence, RolloutConfig, SliceEvidence
from autopilot.gates import StageGates
from autopilot.runner import Controller, Gather, cursor_of
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


def _given(evidence: Evidence) -> Gather:
    async def gather(config: RolloutConfig, cursor: Any) -> tuple[Evidence, Any]:
        return evidence, cursor

    return gather


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
            # no rollout yet
            assert await a.look("chat", 0.0, _given(Evidence()), Routing()) is None
            await a.start(config, 0.0)
            rng = np.random.default_rng(11)
            routed_a, routed_b = Routing(), Routing()
            decided = []
            for t in range(120):
                got_a = await a.look("chat", float(t), _given(_evidence(rng)), routed_a)
                got_b = await b.look("chat", float(t), _given(_evidence(rng)), routed_b)
                assert got_a is not None and got_b is None  # a holds it, renewing every look
                decided += got_a
            assert [d.action for d in decided][:2] == ["start", "advance"]
            assert routed_b.weights == []
            stage = (await store.load("chat") or {})["slices"][0]["stage"]
            assert stage >= 1
            # a stops looking (crashed); b takes over once the lease expires, from the state
            assert await b.look("chat", 122.0, _given(_evidence(rng)), routed_b) is None
            taken = await b.look("chat", 126.0, _given(_evidence(rng)), routed_b)
            assert taken == []  # carried on: no new "start", same stage
            assert (await store.load("chat") or {})["slices"][0]["stage"] == stage
            assert await a.look("chat", 127.0, _given(_evidence(rng)), routed_a) is None
            for t in range(127, 2000):
                got = await b.look("chat", float(t), _given(_evidence(rng)), routed_b)
                assert got is not None
                decided += got
            assert decided[-1].action == "promote"
            assert routed_b.weights[-1] == {"teacher": 0.1, "student": 0.9}
            # an abort ends it; a finished rollout is left alone
            await b.look("chat", 2000.0, _given(Evidence(abort="done")), routed_b)
            assert await b.look("chat", 2001.0, _given(_evidence(rng)), routed_b) == []
            rows = await store.decisions("chat")
            assert [r["action"] for r in rows] == [d.action for d in decided] + ["abort"]
            await b.stop(2002.0)
            # a holds it again
            assert await a.look("chat", 2002.0, _given(Evidence()), routed_a) == []
        finally:
            await engine.dispose()

    asyncio.run(run())


class Reader:
    """Evidence numbered by a cursor: each gather returns the calls after ``cursor`` (an int)
    up to ``self.head``, and who asked."""

    def __init__(self) -> None:
        self.head = 0
        self.asked: list[tuple[str, Any]] = []

    def gather(self, who: str) -> Gather:
        async def gather(config: RolloutConfig, cursor: Any) -> tuple[Evidence, Any]:
            self.asked.append((who, cursor))
            start = 0 if cursor is None else int(cursor)
            calls = self.head - start
            arm = ArmEvidence(calls=calls, cost_usd=float(calls))
            return Evidence([SliceEvidence(candidate=arm, incumbent=arm)]), self.head

        return gather


def test_the_evidence_cursor_is_saved_with_the_state_and_only_the_holder_reads(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    config = RolloutConfig(route="chat", incumbent="teacher", candidate="student")

    async def run() -> None:
        await upgrade_async(url)
        engine = create_engine(url)
        try:
            store = RolloutTable(engine)
            a = Controller(store, DatabaseLease(engine), "replica-a", ttl_s=5.0)
            b = Controller(store, DatabaseLease(engine), "replica-b", ttl_s=5.0)
            reader = Reader()
            await a.start(config, 0.0, cursor=3)
            assert cursor_of(await store.load("chat") or {}) == 3
            reader.head = 10
            assert await a.look("chat", 1.0, reader.gather("a"), Routing()) is not None
            assert a.holding
            assert await b.look("chat", 1.0, reader.gather("b"), Routing()) is None
            assert not b.holding
            assert reader.asked == [("a", 3)]  # the non-holder gathered nothing
            saved = await store.load("chat") or {}
            assert cursor_of(saved) == 10
            assert saved["slices"][0]["gates"]  # and the rollout's numbers beside it
            reader.head = 25
            await a.stop(2.0)
            assert await b.look("chat", 2.0, reader.gather("b"), Routing()) == []
            assert b.holding
            assert reader.asked[-1] == ("b", 10)  # the successor starts where a stopped
            assert cursor_of(await store.load("chat") or {}) == 25
            await b.look("chat", 3.0, _given(Evidence(abort="stop")), Routing())
            before = len(reader.asked)
            assert await b.look("chat", 4.0, reader.gather("b"), Routing()) == []
            assert len(reader.asked) == before  # a finished rollout gathers nothing
        finally:
            await engine.dispose()

    asyncio.run(run())
