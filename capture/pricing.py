"""What a call cost, in USD, from its token counts.

The built-in table holds OpenAI's list prices in USD per 1M tokens (input, cached input,
output) as published on https://openai.com/api/pricing, as of August 2025 (standard tier, text
tokens; batch, flex and priority tiers, audio and image tokens are not modelled), and
Anthropic's (input, cache hits, 5-minute cache writes, output) from the table of
https://platform.claude.com/docs/en/about-claude/pricing as it stood in mid-2026
(``ANTHROPIC_PRICES_AS_OF``: Claude Opus 5 down to Claude Haiku 3; later models, such as Claude
Opus 5.5, and the Fable and Mythos models are not in it: give them with ``capture.prices``).
Anthropic's 1-hour cache writes (2x input, not 1.25x) are priced as 5-minute ones, and the
batch discount and long-context rates are not modelled either. Prices change: correct or
extend them per model with ``capture.prices`` in the configuration, which wins over this table.
Check them against the pricing pages before you trust a dashboard's dollars.

A call's cost: uncached input tokens at ``input``, cache reads at ``cached_input``, cache
writes at ``cache_write``, output at ``output`` (a price without a cache rate bills those
tokens at ``input``).

Model names resolve by the longest known prefix that ends at a ``-`` or the end of the name, so
dated snapshots (``gpt-4o-2024-08-06``, ``gpt-3.5-turbo-0125``) get their family's price, while
``gpt-4.5-preview`` does not silently become ``gpt-4``. Where a snapshot was priced differently
from its family (``gpt-4o-2024-05-13``, ``gpt-3.5-turbo-1106``) it has its own row. Claude names
are stricter: a ``claude-`` row matches the name itself, or the name followed by a dated
snapshot (``claude-sonnet-4-5-20250929``) or ``-latest``, and nothing else, because Anthropic's
minor versions extend the family name (``claude-opus-4-7`` is not ``claude-opus-4``, and costs a
third of it): a Claude model this table does not know has no price rather than a wrong one.

Fine-tuned models, ``ft:BASE:org:suffix:id`` (or the legacy ``ft:BASE:org::id``), are priced at
OpenAI's fine-tuned inference rate for BASE, which is higher than the base model's. A model that
nothing matches has no price: ``cost_usd`` returns None, never 0, and the writer counts it.
"""

from __future__ import annotations

import re
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
    @property
    def cache_write(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens."""

    input: float
    cached_input: float | None
    """Prompt tokens read from the provider's cache; ``input`` when None (no cache discount)."""
    output: float
    cache_write: float | None = None
    """Prompt tokens written to the provider's cache (Anthropic's 5-minute rate); ``input`` when
    None."""


PRICES_AS_OF: Final = "2025-08"
"""When the OpenAI prices were read."""
ANTHROPIC_PRICES_AS_OF: Final = "2026-08"
"""The pricing page the Anthropic prices were read from (its newest Opus: Claude Opus 5)."""


def _claude(input_: float, output: float, cache_read: float, cache_write: float) -> Price:
    return Price(input_, cache_read, output, cache_write)


ANTHROPIC_PRICES: Final[dict[str, Price]] = {
    # (input, output, cache hits, 5-minute cache writes)
    "claude-opus-5": _claude(5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-8": _claude(5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-7": _claude(5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-6": _claude(5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-5": _claude(5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-1": _claude(15.00, 75.00, 1.50, 18.75),
    "claude-opus-4": _claude(15.00, 75.00, 1.50, 18.75),
    "claude-opus-4-0": _claude(15.00, 75.00, 1.50, 18.75),
    "claude-sonnet-4-6": _claude(3.00, 15.00, 0.30, 3.75),
    "claude-sonnet-4-5": _claude(3.00, 15.00, 0.30, 3.75),
    "claude-sonnet-4": _claude(3.00, 15.00, 0.30, 3.75),
    "claude-sonnet-4-0": _claude(3.00, 15.00, 0.30, 3.75),
    "claude-3-7-sonnet": _claude(3.00, 15.00, 0.30, 3.75),
    "claude-3-5-sonnet": _claude(3.00, 15.00, 0.30, 3.75),
    "claude-haiku-4-5": _claude(1.00, 5.00, 0.10, 1.25),
    "claude-3-5-haiku": _claude(0.80, 4.00, 0.08, 1.00),
    "claude-3-opus": _claude(15.00, 75.00, 1.50, 18.75),
    "claude-3-haiku": _claude(0.25, 1.25, 0.03, 0.30),
}
"""Anthropic's list prices by model alias, USD per 1M tokens."""

_CLAUDE_SNAPSHOT = re.compile(r"-(?:\d{8}|latest)")
"""What may follow a ``claude-`` row's name: a dated snapshot or ``-latest``."""

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
    **ANTHROPIC_PRICES,
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
            and (
                not name.startswith("claude-")
                or _CLAUDE_SNAPSHOT.fullmatch(model, len(name)) is not None
            )
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
            name: Price(p.input, p.cached_input, p.output, p.cache_write)
            for name, p in (overrides or {}).items()
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
        cache_write_tokens: int | None = 0,
    ) -> float | None:
        """USD for one call; None when the model has no price or the usage is unknown.

        ``prompt_tokens`` includes ``cached_tokens`` and ``cache_write_tokens`` (as OpenAI
        reports cached tokens, and as ``capture.assemble`` counts Anthropic's): those are billed
        at the cached-input and cache-write prices, the rest at the input price.
        """
        if model is None or prompt_tokens is None:
            return None
        price = self.price(model)
        if price is None:
            return None
        return cost_of(
            price,
            prompt_tokens,
            completion_tokens or 0,
            cached_tokens or 0,
            cache_write_tokens or 0,
        )


def cost_of(
    price: Price,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    cache_write_tokens: int = 0,
) -> float:
    cached = min(cached_tokens, prompt_tokens)
    written = min(cache_write_tokens, prompt_tokens - cached)
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    write_rate = price.cache_write if price.cache_write is not None else price.input
    total = (
        (prompt_tokens - cached - written) * price.input
        + cached * cached_rate
        + written * write_rate
        + completion_tokens * price.output
    )
    return total / 1_000_000


def cost_usd(
    model: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    cached_tokens: int | None = 0,
    cache_write_tokens: int | None = 0,
) -> float | None:
    """``PriceTable().cost_usd``: the built-in prices only (the writer uses a ``PriceTable``)."""
    return PriceTable().cost_usd(
        model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens
    )
