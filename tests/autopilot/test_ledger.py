"""The savings projection: per call, the incumbent's price for the candidate's tokens minus the
candidate's real cost, times the calls it would answer per day."""

from __future__ import annotations

import pytest

from autopilot.ledger import project, training_cost_usd
from capture.ledger import UsageSums
from capture.pricing import Price

INCUMBENT = Price(input=2.5, cached_input=1.25, output=10.0)


def shadow(calls: int, unpriced: int, cost: float) -> UsageSums:
    # 1,000 input and 200 output tokens per priced call
    priced = calls - unpriced
    return UsageSums(
        "support", "2026-12-05", "shadow", calls, unpriced, 1000 * priced, 0, 0, 200 * priced, cost
    )


def test_projection_is_price_difference_times_calls_answered() -> None:
    p = project("support", shadow(10, 0, 0.01), INCUMBENT, calls_per_day=1000, share=0.9)
    # incumbent: (1000 * 2.5 + 200 * 10) / 1e6 = 0.0045 per call; candidate: 0.001 per call
    assert p.incumbent_cost_per_call_usd == pytest.approx(0.0045)
    assert p.candidate_cost_per_call_usd == pytest.approx(0.001)
    assert p.savings_per_day_usd == pytest.approx((0.0045 - 0.001) * 1000 * 0.9)
    assert p.sample_calls == 10


def test_unpriced_copies_are_left_out_of_the_per_call_figures() -> None:
    p = project("support", shadow(12, 2, 0.01), INCUMBENT, calls_per_day=100, share=0.5)
    assert p.sample_calls == 10
    assert p.candidate_cost_per_call_usd == pytest.approx(0.001)


@pytest.mark.parametrize("sums", [None, shadow(3, 3, 0.0)])
def test_nothing_priced_is_unknown_never_zero(sums: UsageSums | None) -> None:
    p = project("support", sums, INCUMBENT, calls_per_day=100, share=0.5)
    assert p.savings_per_day_usd is None and p.sample_calls == 0


def test_a_dearer_candidate_projects_a_loss() -> None:
    p = project("support", shadow(10, 0, 0.1), INCUMBENT, calls_per_day=10, share=1.0)
    assert p.savings_per_day_usd is not None and p.savings_per_day_usd < 0


@pytest.mark.parametrize(("calls", "share"), [(-1.0, 0.5), (10.0, 1.5), (float("nan"), 0.5)])
def test_bad_inputs_are_refused(calls: float, share: float) -> None:
    with pytest.raises(ValueError):
        project("support", None, INCUMBENT, calls_per_day=calls, share=share)


def test_training_cost_is_the_trained_tokens_at_the_base_models_price() -> None:
    assert training_cost_usd(2_000_000, 3.0) == pytest.approx(6.0)
    assert training_cost_usd(0, 3.0) == 0.0


@pytest.mark.parametrize(
    ("tokens", "price"),
    [(None, 3.0), (1000, None), (-5, 3.0), (True, 3.0), ("1000", 3.0), (1.5, 3.0)],
)
def test_an_unreported_training_cost_is_unknown_never_zero(
    tokens: object, price: float | None
) -> None:
    assert training_cost_usd(tokens, price) is None
