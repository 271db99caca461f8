"""Choosing the base model before any training: candidate base models, as a host serves them
(Together, Fireworks, a vLLM or SGLang server: any OpenAI-compatible ``/chat/completions``),
against the teacher on held-out captured prompts.

Each held-out prompt (``held_out``: the validation side of the export's split) goes to each
candidate zero-shot and, with ``shots`` K > 0, again with K captured training-side examples
prepended as prior turns (``shots``). Calls go straight to the host (not through the gateway:
the candidates are not variants of any route yet), ``stream`` and the like left out, ``model``
set to the candidate; latency is measured here, end to end, and the cost is priced from the
answer's usage with capture's price table plus the prices given (``PriceTable`` overrides):
a model without a price has an unknown cost, never 0.

Every answer is judged against the teacher's recorded answer by the same pairwise judge as
``gateway eval`` (through the gateway: the route's teacher, or ``judge_model``) and checked
(``checks``); the report (``bases_report``) puts one row per candidate x {zero-shot, K-shot}
under the teacher's own row (its recorded latency and cost): the baseline a fine-tune of the
chosen base must beat.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.assemble import parse_usage
from capture.pricing import PriceLike, PriceTable
from exporter.errors import EvalError
from exporter.evaluate import bases_report
from exporter.evaluate.checks import check
from exporter.evaluate.held_out import HeldOut, baseline_filters, baseline_held_out
from exporter.evaluate.judge import Verdict, judge
from exporter.evaluate.replay import DROPPED_FIELDS, Replayed
from exporter.evaluate.shots import Shot, training_shots, with_shots
from exporter.examples import Dropped, answer_of
from exporter.filters import Filters
from exporter.split import DEFAULT_SALT, DEFAULT_VALID_SHARE

if TYPE_CHECKING:
    from exporter.archive_source import ArchiveSource


@dataclass(frozen=True)
class BasesOptions:
    route: str
    bases: tuple[str, ...]
    host_url: str
    """The host's OpenAI base URL, e.g. https://api.together.xyz/v1 (``/chat/completions``
    is appended)."""
    gateway_url: str
    gateway_key: str
    host_key: str | None = None
    shots: int = 0
    """K > 0: each candidate is also tried with K captured examples as prior turns."""
    prices: dict[str, PriceLike] = field(default_factory=dict)
    """USD per 1M tokens, over capture's table (its config's ``capture.prices`` included)."""
    baseline: str = "teacher"
    judge_model: str | None = None
    sample: int = 200
    valid_share: float = DEFAULT_VALID_SHARE
    split_salt: str = DEFAULT_SALT
    trained: frozenset[bytes] = frozenset()
    filters: Filters = field(default_factory=Filters)
    concurrency: int = 8
    seed: int = 0
    timeout_s: float = 120.0
    archive: ArchiveSource | None = None
    """Archived calls to choose held-out prompts and shots from too."""


@dataclass
class Trial:
    """One candidate in one prompt setting: its answers, verdicts and checks."""

    base: str
    shots: int
    replayed: list[Replayed]
    verdicts: list[Verdict | None]
    checks: dict[str, Counter[bool]]


def _host_error(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return f"{response.status_code} {message}"


async def ask(
    client: httpx.AsyncClient,
    item: HeldOut,
    base: str,
    shots: Sequence[Shot],
    prices: PriceTable,
) -> Replayed:
    """The held-out prompt (with the shots before it) to ``base`` at the host."""
    body: dict[str, Any] = {k: v for k, v in item.request.items() if k not in DROPPED_FIELDS}
    body["model"] = base
    if shots:
        body["messages"] = with_shots(list(body.get("messages") or []), list(shots))
    started = time.perf_counter()
    try:
        response = await client.post("chat/completions", json=body)
    except httpx.HTTPError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return Replayed(item, None, f"transport: {exc or type(exc).__name__}", elapsed, None, base)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        return Replayed(item, None, _host_error(response), elapsed, None, base)
    try:
        payload = response.json()
    except ValueError:
        return Replayed(item, None, "the host answered no JSON", elapsed, None, base)
    usage = parse_usage(payload.get("usage") if isinstance(payload, dict) else None)
    cost = prices.cost_usd(base, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
    try:
        answer = answer_of(payload)
    except Dropped as dropped:
        return Replayed(item, None, dropped.reason, elapsed, cost, base)
    return Replayed(item, answer, None, elapsed, cost, base)


async def _judge_trial(
    gateway: httpx.AsyncClient,
    replayed: list[Replayed],
    options: BasesOptions,
    rng: random.Random,
    gate: asyncio.Semaphore,
) -> list[Verdict | None]:
    judge_route = options.judge_model or options.route
    headers = {"x-gateway-capture": "off"}
    if options.judge_model is None:
        headers["x-gateway-variant"] = options.baseline  # the teacher judges its own route
    draws = [rng.random() for _ in replayed]  # one draw per pair, fixed before any call

    async def one(result: Replayed, draw: float) -> Verdict | None:
        if result.answer is None:
            return None
        async with gate:
            return await judge(
                gateway,
                judge_route,
                result.item.example.prompt,
                result.answer,
                result.item.example.answer,
                random.Random(draw),
                headers,
            )

    return list(await asyncio.gather(*(one(r, d) for r, d in zip(replayed, draws, strict=True))))


def _checks(replayed: list[Replayed]) -> dict[str, Counter[bool]]:
    checks: dict[str, Counter[bool]] = {}
    for result in replayed:
        if result.answer is None:
            continue
        for name, passed in check(
            result.item.request, result.answer, result.item.example.answer
        ).items():
            checks.setdefault(name, Counter())[passed] += 1
    return checks


async def run_bases(engine: AsyncEngine, options: BasesOptions) -> dict[str, Any]:
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
    shots = await training_shots(
        engine,
        filters,
        options.shots,
        options.valid_share,
        options.split_salt,
        archive=options.archive,
    )
    if options.shots and not shots:
        raise EvalError(
            f"--shots {options.shots}: no plain text {options.baseline} conversation of route "
            f"{options.route!r} on the training side of the split to use as an example"
        )
    settings = [0, options.shots] if options.shots else [0]
    prices = PriceTable(options.prices)
    timeout = httpx.Timeout(options.timeout_s, connect=5.0)
    host_headers = {"authorization": f"Bearer {options.host_key}"} if options.host_key else {}
    gateway_headers = {"authorization": f"Bearer {options.gateway_key}"}
    gate = asyncio.Semaphore(options.concurrency)
    rng = random.Random(options.seed)
    trials: list[Trial] = []
    async with (
        httpx.AsyncClient(
            base_url=options.host_url.rstrip("/") + "/", headers=host_headers, timeout=timeout
        ) as host,
        httpx.AsyncClient(
            base_url=options.gateway_url, headers=gateway_headers, timeout=timeout
        ) as gateway,
    ):
        try:
            await gateway.get("/readyz")
        except httpx.HTTPError as exc:
            raise EvalError(
                f"cannot reach the gateway (the judge) at {options.gateway_url}: {exc}"
            ) from None

        async def one(item: HeldOut, base: str, given: Sequence[Shot]) -> Replayed:
            async with gate:
                return await ask(host, item, base, given, prices)

        for base in options.bases:
            for count in settings:
                given = shots if count else []
                replayed = list(await asyncio.gather(*(one(i, base, given) for i in items)))
                verdicts = await _judge_trial(gateway, replayed, options, rng, gate)
                trials.append(Trial(base, len(given), replayed, verdicts, _checks(replayed)))
    if all(r.error is not None for trial in trials for r in trial.replayed):
        first = trials[0].replayed[0].error
        raise EvalError(f"every call to the host at {options.host_url} failed, e.g.: {first}")
    return bases_report.build(options, items, eligible, shots, trials, prices)
