"""Replaying held-out prompts to the candidate variant through the gateway.

Each captured request goes out as the app sent it (``model`` set to the route, not streamed),
with ``x-gateway-variant: CANDIDATE`` to force the variant (the key needs
``allow_variant_override``) and ``x-gateway-capture: off`` so evaluation traffic never becomes
training data. Latency is measured here, end to end; the cost is priced from the answer's
usage and the upstream model the gateway reports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from capture.assemble import parse_usage
from capture.pricing import PriceTable
from exporter.evaluate.held_out import HeldOut
from exporter.examples import Dropped, Message, answer_of

DROPPED_FIELDS = ("stream", "stream_options", "n", "metadata", "store")


@dataclass(slots=True)
class Replayed:
    item: HeldOut
    answer: Message | None
    error: str | None
    latency_ms: float
    cost_usd: float | None
    upstream_model: str | None


def eval_headers(variant: str) -> dict[str, str]:
    return {"x-gateway-variant": variant, "x-gateway-capture": "off"}


def _error(response: httpx.Response) -> str:
    try:
        return f"{response.status_code} {response.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.text[:200]}"


async def replay_one(
    client: httpx.AsyncClient, item: HeldOut, route: str, candidate: str, prices: PriceTable
) -> Replayed:
    body: dict[str, Any] = {k: v for k, v in item.request.items() if k not in DROPPED_FIELDS}
    body["model"] = route
    started = time.perf_counter()
    try:
        response = await client.post(
            "/v1/chat/completions", json=body, headers=eval_headers(candidate)
        )
    except httpx.HTTPError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return Replayed(item, None, f"transport: {exc or type(exc).__name__}", elapsed, None, None)
    elapsed = (time.perf_counter() - started) * 1000
    model = response.headers.get("x-gateway-upstream-model")
    if response.status_code != 200:
        return Replayed(item, None, _error(response), elapsed, None, model)
    payload = response.json()
    usage = parse_usage(payload.get("usage") if isinstance(payload, dict) else None)
    cost = prices.cost_usd(
        model or (payload.get("model") if isinstance(payload, dict) else None),
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
        usage.cache_write_tokens,  # a Claude candidate's, as the gateway's translation says
    )
    try:
        answer = answer_of(payload)
    except Dropped as dropped:
        return Replayed(item, None, dropped.reason, elapsed, cost, model)
    return Replayed(item, answer, None, elapsed, cost, model)


async def replay(
    client: httpx.AsyncClient,
    items: Sequence[HeldOut],
    route: str,
    candidate: str,
    concurrency: int = 8,
    prices: PriceTable | None = None,
) -> list[Replayed]:
    """``prices``: the built-in table over the config's ``capture.prices`` (an open-weight
    student's price is set there by ``gateway register``)."""
    prices = prices or PriceTable()
    gate = asyncio.Semaphore(concurrency)

    async def one(item: HeldOut) -> Replayed:
        async with gate:
            return await replay_one(client, item, route, candidate, prices)

    return list(await asyncio.gather(*(one(item) for item in items)))
