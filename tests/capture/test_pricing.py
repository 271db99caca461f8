from __future__ import annotations

import pytest

from capture.config import ModelPrice
from capture.pricing import BASE_PRICES, FINE_TUNED_PRICES, Price, PriceTable, cost_of, cost_usd


def test_known_model_cost_per_million_tokens() -> None:
    # gpt-4o: $2.50 in, $10 out per 1M tokens
    assert cost_usd("gpt-4o", 1_000_000, 0) == pytest.approx(2.50)
    assert cost_usd("gpt-4o", 1000, 500) == pytest.approx((1000 * 2.50 + 500 * 10.00) / 1e6)
    assert cost_usd("gpt-4", 1000, 1000) == pytest.approx(0.09)


def test_cached_input_tokens_are_billed_at_the_cached_rate() -> None:
    # gpt-4o-mini: $0.15 in, $0.075 cached, $0.60 out
    expected = (600 * 0.15 + 400 * 0.075 + 200 * 0.60) / 1e6
    assert cost_usd("gpt-4o-mini", 1000, 200, cached_tokens=400) == pytest.approx(expected)
    # gpt-4 has no cache discount: cached tokens cost the input price
    assert cost_usd("gpt-4", 1000, 0, cached_tokens=400) == cost_usd("gpt-4", 1000, 0)


@pytest.mark.parametrize(
    ("dated", "family"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-4-32k-0613", "gpt-4-32k"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o1-2024-12-17", "o1"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
    ],
)
def test_dated_models_resolve_to_their_family(dated: str, family: str) -> None:
    table = PriceTable()
    assert table.price(dated) == BASE_PRICES[family]


def test_snapshots_priced_differently_from_their_family_have_their_own_row() -> None:
    table = PriceTable()
    assert table.price("gpt-4o-2024-05-13") == Price(5.00, None, 15.00)
    assert table.price("gpt-3.5-turbo-1106") == Price(1.00, None, 2.00)
    assert table.price("gpt-4-1106-preview") == BASE_PRICES["gpt-4-turbo"]


def test_longest_prefix_wins_and_stops_at_a_name_boundary() -> None:
    table = PriceTable()
    assert table.price("o1-mini-2024-09-12") == BASE_PRICES["o1-mini"]
    assert table.price("gpt-4.1") != BASE_PRICES["gpt-4"]
    assert table.price("gpt-4x-experimental") is None
    assert table.price("gpt-4.7") is None


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("ft:gpt-3.5-turbo:acme::abc123", "gpt-3.5-turbo"),
        ("ft:gpt-3.5-turbo-0125:acme:support:9xYz", "gpt-3.5-turbo"),
        ("ft:gpt-4o-mini-2024-07-18:acme:s1:AbCd", "gpt-4o-mini"),
        ("ft:gpt-4o-2024-08-06:acme::x1", "gpt-4o"),
        ("ft:gpt-4.1-mini-2025-04-14:acme:bot:q2", "gpt-4.1-mini"),
        ("ft:gpt-4.1-nano-2025-04-14:acme::q3", "gpt-4.1-nano"),
    ],
)
def test_fine_tuned_models_cost_the_fine_tuned_rate_of_their_base(model: str, base: str) -> None:
    assert PriceTable().price(model) == FINE_TUNED_PRICES[base]


def test_fine_tuned_rates() -> None:
    assert cost_usd("ft:gpt-3.5-turbo:acme::abc123", 1_000_000, 1_000_000) == pytest.approx(9.0)
    assert cost_usd("ft:gpt-4o-mini-2024-07-18:acme::s1", 1_000_000, 1_000_000) == pytest.approx(
        1.50
    )
    assert cost_usd("ft:gpt-4o-2024-08-06:acme::s1", 1_000_000, 1_000_000) == pytest.approx(18.75)


def test_embeddings_cost_input_only() -> None:
    assert cost_usd("text-embedding-3-small", 1_000_000, 0) == pytest.approx(0.02)
    assert cost_usd("text-embedding-3-large", 1_000_000, 0) == pytest.approx(0.13)
    assert cost_usd("text-embedding-ada-002", 1_000_000, 0) == pytest.approx(0.10)


def test_overrides_win_for_the_model_and_its_dated_names() -> None:
    table = PriceTable(
        {
            "gpt-4o": ModelPrice(input=1.0, output=2.0),
            "ft:gpt-4o-mini:acme": ModelPrice(input=0.5, cached_input=0.1, output=1.0),
            "my-llama": ModelPrice(input=0.2, output=0.2),
        }
    )
    assert table.price("gpt-4o-2024-08-06") == Price(1.0, None, 2.0)
    assert table.price("ft:gpt-4o-mini:acme::s1") == Price(0.5, 0.1, 1.0)
    assert table.price("ft:gpt-4o-mini:other::s1") == FINE_TUNED_PRICES["gpt-4o-mini"]
    assert table.cost_usd("my-llama", 1_000_000, 1_000_000) == pytest.approx(0.4)
    assert table.price("gpt-4o-mini") == BASE_PRICES["gpt-4o-mini"]


def test_unknown_model_or_usage_costs_none_never_zero() -> None:
    assert cost_usd("mistral-large", 100, 100) is None
    assert cost_usd("claude-opus-5-5", 100, 100) is None  # not in the table: not Opus 5
    assert cost_usd("ft:mystery-model:acme::x", 100, 100) is None
    assert cost_usd(None, 100, 100) is None
    assert cost_usd("gpt-4o", None, None) is None
    assert cost_usd("gpt-4o", 0, 0) == 0.0


# --- Anthropic ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "prices"),
    [
        # (input, cache hits, output, 5-minute cache writes), USD per 1M tokens
        ("claude-opus-4-5", (5.00, 0.50, 25.00, 6.25)),
        ("claude-opus-4-5-20251101", (5.00, 0.50, 25.00, 6.25)),
        ("claude-opus-4-1-20250805", (15.00, 1.50, 75.00, 18.75)),
        ("claude-opus-4-20250514", (15.00, 1.50, 75.00, 18.75)),
        ("claude-opus-4-0", (15.00, 1.50, 75.00, 18.75)),
        ("claude-sonnet-4-5-20250929", (3.00, 0.30, 15.00, 3.75)),
        ("claude-sonnet-4-20250514", (3.00, 0.30, 15.00, 3.75)),
        ("claude-3-7-sonnet-20250219", (3.00, 0.30, 15.00, 3.75)),
        ("claude-3-7-sonnet-latest", (3.00, 0.30, 15.00, 3.75)),
        ("claude-3-5-sonnet-20241022", (3.00, 0.30, 15.00, 3.75)),
        ("claude-haiku-4-5-20251001", (1.00, 0.10, 5.00, 1.25)),
        ("claude-3-5-haiku-20241022", (0.80, 0.08, 4.00, 1.00)),
        ("claude-3-haiku-20240307", (0.25, 0.03, 1.25, 0.30)),
        ("claude-3-opus-20240229", (15.00, 1.50, 75.00, 18.75)),
    ],
)
def test_claude_models_and_their_dated_snapshots(
    model: str, prices: tuple[float, float, float, float]
) -> None:
    assert PriceTable().price(model) == Price(*prices)


@pytest.mark.parametrize(
    "model",
    [
        "claude-opus-4-9",  # a minor version the table does not know is not Opus 4 ($15)
        "claude-opus-4-9-20270101",
        "claude-sonnet-4-5-experimental",
        "claude-opus-5-5",  # not Opus 5
        "claude-2.1",
        "claude",
    ],
)
def test_unknown_claude_models_have_no_price_rather_than_a_neighbours(model: str) -> None:
    assert PriceTable().price(model) is None
    assert cost_usd(model, 1000, 100, 0, 500) is None


def test_cache_reads_and_writes_are_billed_at_their_own_rates() -> None:
    # claude-sonnet-4-5: $3 in, $0.30 cache hits, $3.75 cache writes, $15 out;
    # 4,010 prompt tokens = 10 uncached + 1,000 written + 3,000 read
    expected = (10 * 3.00 + 1000 * 3.75 + 3000 * 0.30 + 42 * 15.00) / 1e6
    cost = cost_usd("claude-sonnet-4-5-20250929", 4010, 42, 3000, 1000)
    assert cost == pytest.approx(expected) == pytest.approx(0.00531)
    # the same tokens without the split would be billed all at the input price
    assert cost_usd("claude-sonnet-4-5", 4010, 42) == pytest.approx((4010 * 3 + 42 * 15) / 1e6)


def test_cache_writes_without_a_write_rate_cost_the_input_price() -> None:
    # OpenAI's models have no cache-write rate: a write is billed as input
    plain = cost_usd("gpt-4o-mini", 1000, 0, 400)
    assert cost_usd("gpt-4o-mini", 1000, 0, 400, 300) == pytest.approx(plain)


def test_cache_counts_larger_than_the_prompt_are_clamped() -> None:
    price = Price(1.0, 0.1, 2.0, 1.25)
    # 100 prompt tokens, of which "150" read and "50" written: all 100 are reads
    assert cost_of(price, 100, 0, 150, 50) == pytest.approx(100 * 0.1 / 1e6)
    assert cost_of(price, 100, 0, 60, 50) == pytest.approx((60 * 0.1 + 40 * 1.25) / 1e6)


def test_overrides_take_a_cache_write_price() -> None:
    table = PriceTable(
        {
            "claude-opus-5-5": ModelPrice(input=4, cached_input=0.2, output=20, cache_write=5),
            "my-model": ModelPrice(input=1, output=2),
        }
    )
    assert table.price("claude-opus-5-5-20260901") == Price(4, 0.2, 20, 5)
    assert table.price("claude-opus-5") == BASE_PRICES["claude-opus-5"]
    expected = (100 * 4 + 1000 * 5 + 2000 * 0.2 + 10 * 20) / 1e6
    assert table.cost_usd("claude-opus-5-5", 3100, 10, 2000, 1000) == pytest.approx(expected)
    assert table.price("my-model") == Price(1, None, 2, None)
    assert table.cost_usd("my-model", 100, 0, 0, 100) == pytest.approx(100 / 1e6)
