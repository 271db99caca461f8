"""What a call cost, in USD, from its token counts.

The built-in table holds OpenAI's list prices in USD per 1M tokens (input, cached input,
output) as published on https://openai.com/api/pricing, as of August 2025 (standard tier, text
tokens; batch, flex and priority tiers, audio and image tokens are not modelled). Prices change:
correct or extend them per model with ``capture.prices`` in the configuration, which wins over
this table. Check them against the pricing page before you trust a dashboard's dollars.

Model names resolve by the longest known prefix that ends at a ``-`` or the end of the name, so
dated snapshots (``gpt-4o-2024-08-06``, ``gpt-3.5-turbo-0125``) get their family's price, while
``gpt-4.5-preview`` does not silently become ``gpt-4``. Where a snapshot was priced differently
from its family (``gpt-4o-2024-05-13``, ``gpt-3.5-turbo-1106``) it has its own row.

Fine-tuned models, ``ft:BASE:org:suffix:id`` (or the legacy ``ft:BASE:org::id``), are priced at
OpenAI's fine-tuned inference rate for BASE, which is higher than the base model's. A model that
nothing matches has no price: ``cost_usd`` returns None, never 0, and the writer counts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol


class PriceLike(Protocol):
    @property
    def input(self) -> float: ...
    @property
    def cached_input(self) -> float | None: ...
    @property
    def output(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens."""

    input: float
    cached_input: float | None
    """Prompt tokens read from the provider's cache; ``input`` when None (no cache discount)."""
    output: float


PRICES_AS_OF: Final = "2025-08"

BASE_PRICES: Final[dict[str, Price]] = {
    # GPT-5 family
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "gpt-5-chat-latest": Price(1.25, 0.125, 10.00),
    # GPT-4.1 family
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-4.5-preview": Price(75.00, 37.50, 150.00),
    # GPT-4o family
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4o-2024-05-13": Price(5.00, None, 15.00),
    "chatgpt-4o-latest": Price(5.00, None, 15.00),
    "gpt-4o-audio-preview": Price(2.50, None, 10.00),
    "gpt-4o-realtime-preview": Price(5.00, 2.50, 20.00),
    "gpt-4o-search-preview": Price(2.50, None, 10.00),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "gpt-4o-mini-audio-preview": Price(0.15, None, 0.60),
    "gpt-4o-mini-realtime-preview": Price(0.60, 0.30, 2.40),
    "gpt-4o-mini-search-preview": Price(0.15, None, 0.60),
    # reasoning models
    "o1": Price(15.00, 7.50, 60.00),
    "o1-preview": Price(15.00, 7.50, 60.00),
    "o1-mini": Price(1.10, 0.55, 4.40),
    "o1-pro": Price(150.00, None, 600.00),
    "o3": Price(2.00, 0.50, 8.00),
    "o3-pro": Price(20.00, None, 80.00),
    "o3-mini": Price(1.10, 0.55, 4.40),
    "o4-mini": Price(1.10, 0.275, 4.40),
    # GPT-4 and GPT-4 Turbo
    "gpt-4": Price(30.00, None, 60.00),
    "gpt-4-32k": Price(60.00, None, 120.00),
    "gpt-4-turbo": Price(10.00, None, 30.00),
    "gpt-4-turbo-preview": Price(10.00, None, 30.00),
    "gpt-4-1106-preview": Price(10.00, None, 30.00),
    "gpt-4-0125-preview": Price(10.00, None, 30.00),
    "gpt-4-vision-preview": Price(10.00, None, 30.00),
    "gpt-4-1106-vision-preview": Price(10.00, None, 30.00),
    # GPT-3.5
    "gpt-3.5-turbo": Price(0.50, None, 1.50),
    "gpt-3.5-turbo-1106": Price(1.00, None, 2.00),
    "gpt-3.5-turbo-0613": Price(1.50, None, 2.00),
    "gpt-3.5-turbo-0301": Price(1.50, None, 2.00),
    "gpt-3.5-turbo-16k": Price(3.00, None, 4.00),
    "gpt-3.5-turbo-instruct": Price(1.50, None, 2.00),
    "davinci-002": Price(2.00, None, 2.00),
    "babbage-002": Price(0.40, None, 0.40),
    # embeddings (input only)
    "text-embedding-3-small": Price(0.02, None, 0.0),
    "text-embedding-3-large": Price(0.13, None, 0.0),
    "text-embedding-ada-002": Price(0.10, None, 0.0),
}
"""Standard-tier list prices, USD per 1M tokens."""

FINE_TUNED_PRICES: Final[dict[str, Price]] = {
    "gpt-4.1": Price(3.00, 0.75, 12.00),
    "gpt-4.1-mini": Price(0.80, 0.20, 3.20),
    "gpt-4.1-nano": Price(0.20, 0.05, 0.80),
    "gpt-4o": Price(3.75, 1.875, 15.00),
    "gpt-4o-mini": Price(0.30, 0.15, 1.20),
    "o4-mini": Price(4.00, 1.00, 16.00),
    "gpt-4": Price(45.00, None, 90.00),
    "gpt-3.5-turbo": Price(3.00, None, 6.00),
    "davinci-002": Price(12.00, None, 12.00),
    "babbage-002": Price(1.60, None, 1.60),
}
"""Inference on fine-tuned models, by base model, USD per 1M tokens."""


def _longest_prefix(table: Mapping[str, Price], model: str) -> Price | None:
    price = table.get(model)
    if price is not None:
        return price
    best: str | None = None
    for name in table:
        if (
            model.startswith(name)
            and model[len(name)] in "-:"
            and (best is None or len(name) > len(best))
        ):
            best = name
    return table[best] if best is not None else None


def _fine_tuned_base(model: str) -> str | None:
    """BASE of ``ft:BASE:org:suffix:id``; None for other names."""
    if not model.startswith("ft:"):
        return None
    base = model[3:].split(":", 1)[0]
    return base or None


class PriceTable:
    """The built-in prices with the configuration's overrides on top; lookups are cached."""

    def __init__(self, overrides: Mapping[str, PriceLike] | None = None) -> None:
        prices = {
            name: Price(p.input, p.cached_input, p.output) for name, p in (overrides or {}).items()
        }
        # One namespace for the built-in names and the overrides, so that the longest name
        # still wins: an override for gpt-4o reprices gpt-4o-2024-08-06, not gpt-4o-mini.
        self._base = {**BASE_PRICES, **{k: v for k, v in prices.items() if not k.startswith("ft:")}}
        self._fine_tuned_overrides = {k: v for k, v in prices.items() if k.startswith("ft:")}
        self._cache: dict[str, Price | None] = {}

    def price(self, model: str) -> Price | None:
        """The price of ``model``, or None when neither the overrides nor the table know it."""
        try:
            return self._cache[model]
        except KeyError:
            pass
        base = _fine_tuned_base(model)
        if base is None:
            price = _longest_prefix(self._base, model)
        else:
            price = _longest_prefix(self._fine_tuned_overrides, model)
            if price is None:
                price = _longest_prefix(FINE_TUNED_PRICES, base)
        if len(self._cache) < 10_000:
            self._cache[model] = price
        return price

    def cost_usd(
        self,
        model: str | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cached_tokens: int | None = 0,
    ) -> float | None:
        """USD for one call; None when the model has no price or the usage is unknown.

        ``prompt_tokens`` includes ``cached_tokens`` (as OpenAI reports them), and those are
        billed at the cached-input price.
        """
        if model is None or prompt_tokens is None:
            return None
        price = self.price(model)
        if price is None:
            return None
        return cost_of(price, prompt_tokens, completion_tokens or 0, cached_tokens or 0)


def cost_of(price: Price, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> float:
    cached = min(cached_tokens, prompt_tokens)
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    total = (
        (prompt_tokens - cached) * price.input
        + cached * cached_rate
        + completion_tokens * price.output
    )
    return total / 1_000_000


def cost_usd(
    model: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    cached_tokens: int | None = 0,
) -> float | None:
    """``PriceTable().cost_usd``: the built-in prices only (the writer uses a ``PriceTable``)."""
    return PriceTable().cost_usd(model, prompt_tokens, completion_tokens, cached_tokens)
