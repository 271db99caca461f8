"""Judging shadow pairs with an LLM: which of a call's answer and its shadow copy's is better.

Shadow answers never reach a user, so they seldom get feedback. With a judge, each pair (the
call and its shadow copy, the same input) is shown to a judge model through the gateway, in a
random order, ties allowed (``exporter.evaluate.judge``); the preferred answer becomes the
preference row's ``preferred_output``. Pairs judged a tie, or without a verdict, are dropped.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from exporter.evaluate.judge import judge
from exporter.examples import Dropped, example_from_call

Row = dict[str, Any]


@dataclass(frozen=True)
class JudgeSettings:
    gateway_url: str
    gateway_key: str
    model: str
    """The route that judges."""
    concurrency: int = 8
    seed: int = 0


class PairJudge:
    def __init__(self, settings: JudgeSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.seed)

    async def judge_all(self, pairs: Sequence[tuple[Row, Row]]) -> list[tuple[str, str] | str]:
        """For each (primary, shadow) pair: (better id, worse id), or why there is none."""
        settings = self.settings
        gate = asyncio.Semaphore(settings.concurrency)
        draws = [self._rng.random() for _ in pairs]
        headers = {"authorization": f"Bearer {settings.gateway_key}"}
        async with httpx.AsyncClient(
            base_url=settings.gateway_url, headers=headers, timeout=120.0
        ) as client:

            async def one(primary: Row, shadow: Row, draw: float) -> tuple[str, str] | str:
                try:
                    first, second = example_from_call(primary), example_from_call(shadow)
                except Dropped as dropped:
                    return dropped.reason
                async with gate:
                    verdict = await judge(
                        client,
                        settings.model,
                        first.prompt,
                        second.answer,
                        first.answer,
                        random.Random(draw),
                        {"x-gateway-capture": "off"},
                    )
                if verdict is None:
                    return "no verdict from the judge"
                if verdict == "tie":
                    return "judged a tie"
                if verdict == "candidate":
                    return shadow["id"], primary["id"]
                return primary["id"], shadow["id"]

            return list(
                await asyncio.gather(
                    *(one(p, s, d) for (p, s), d in zip(pairs, draws, strict=True))
                )
            )
