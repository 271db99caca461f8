"""The evaluation: held-out prompts -> replay to the candidate -> checks and judge -> report."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.pricing import PriceLike, PriceTable
from exporter.errors import EvalError
from exporter.evaluate import report
from exporter.evaluate.checks import check
from exporter.evaluate.held_out import baseline_filters, baseline_held_out
from exporter.evaluate.judge import Verdict, judge
from exporter.evaluate.replay import Replayed, replay
from exporter.filters import Filters
from exporter.split import DEFAULT_SALT, DEFAULT_VALID_SHARE

if TYPE_CHECKING:
    from exporter.archive_source import ArchiveSource


@dataclass(frozen=True)
class EvalOptions:
    route: str
    candidate: str
    gateway_url: str
    gateway_key: str
    baseline: str = "teacher"
    """The variant whose recorded answers the candidate's are compared with."""
    judge_model: str | None = None
    """The route to judge with; None: the evaluated route itself (forced to the baseline)."""
    sample: int = 200
    valid_share: float = DEFAULT_VALID_SHARE
    split_salt: str = DEFAULT_SALT
    trained: frozenset[bytes] = frozenset()
    """Prompt keys on the validation side of the hash that the export trained on."""
    filters: Filters = field(default_factory=Filters)
    concurrency: int = 8
    seed: int = 0
    timeout_s: float = 120.0
    prices: Mapping[str, PriceLike] = field(default_factory=dict)
    """The config's ``capture.prices``, over the built-in table, for the candidate's cost."""
    archive: ArchiveSource | None = None
    """Archived calls to choose held-out prompts from too."""


async def run_eval(engine: AsyncEngine, options: EvalOptions) -> dict[str, Any]:
    # Replayed to /v1/chat/completions as the app sent them.
    filters = baseline_filters(options.route, options.baseline, options.filters)
    items, eligible = await baseline_held_out(
        engine,
        filters,
        options.sample,
        options.valid_share,
        options.split_salt,
        trained=options.trained,
        archive=options.archive,
    )
    headers = {"authorization": f"Bearer {options.gateway_key}"}
    timeout = httpx.Timeout(options.timeout_s, connect=5.0)
    async with httpx.AsyncClient(
        base_url=options.gateway_url, headers=headers, timeout=timeout
    ) as client:
        try:
            await client.get("/readyz")
        except httpx.HTTPError as exc:
            raise EvalError(f"cannot reach the gateway at {options.gateway_url}: {exc}") from None
        replayed = await replay(
            client,
            items,
            options.route,
            options.candidate,
            options.concurrency,
            PriceTable(options.prices),
        )
        failures = [r for r in replayed if r.error is not None]
        if len(failures) == len(replayed):
            raise EvalError(
                f"every call to {options.candidate!r} failed, e.g.: {failures[0].error}"
            )
        verdicts = await _judge_all(client, replayed, options)
    checks: dict[str, Counter[bool]] = {}
    for result in replayed:
        if result.answer is None:
            continue
        for name, passed in check(
            result.item.request, result.answer, result.item.example.answer
        ).items():
            checks.setdefault(name, Counter())[passed] += 1
    return report.build(options, replayed, verdicts, checks, eligible)


async def _judge_all(
    client: httpx.AsyncClient, replayed: list[Replayed], options: EvalOptions
) -> list[Verdict | None]:
    rng = random.Random(options.seed)
    judge_route = options.judge_model or options.route
    headers = {"x-gateway-capture": "off"}
    if options.judge_model is None:
        headers["x-gateway-variant"] = options.baseline  # the teacher judges its own route
    gate = asyncio.Semaphore(options.concurrency)
    draws = [rng.random() for _ in replayed]  # one draw per pair, fixed before any call

    async def one(result: Replayed, draw: float) -> Verdict | None:
        if result.answer is None:
            return None
        async with gate:
            return await judge(
                client,
                judge_route,
                result.item.example.prompt,
                result.answer,
                result.item.example.answer,
                random.Random(draw),
                headers,
            )

    return list(await asyncio.gather(*(one(r, d) for r, d in zip(replayed, draws, strict=True))))
