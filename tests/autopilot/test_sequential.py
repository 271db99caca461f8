"""The sequential tests: coverage under continuous monitoring, verdicts, evidence, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from autopilot.sequential import (
    ConfidenceSequence,
    QuantileTest,
    RestartedConfidenceSequence,
    TwoSampleTest,
    Verdict,
    WinRateTest,
    bonferroni,
    cost_verdict,
)


@pytest.mark.parametrize("p", [0.02, 0.5, 0.9])
def test_confidence_sequence_covers_the_mean_at_every_look(p: float) -> None:
    # 2000 sequences, looked at after every batch of 5 up to 3000 observations: the share of
    # sequences whose mean ever leaves a side must stay within alpha (time-uniform coverage).
    rng = np.random.default_rng(7)
    alpha, runs = 0.1, 2000
    cs = ConfidenceSequence(alpha, (runs,))
    below = np.zeros(runs, dtype=bool)
    above = np.zeros(runs, dtype=bool)
    for _ in range(600):
        k = rng.binomial(5, p, size=runs).astype(np.float64)
        cs.update(5, k, k)
        below |= cs.upper < p
        above |= cs.lower > p
    assert below.mean() <= alpha
    assert above.mean() <= alpha
    # and it learns: the bounds close in on the mean
    assert float(np.median(cs.upper - cs.lower)) < 0.1
    assert (cs.lower > cs.upper).mean() <= alpha  # crossing needs a miss on one side


def test_bounds_are_a_running_intersection_and_start_uninformative() -> None:
    cs = ConfidenceSequence(0.05)
    assert float(cs.lower) == 0.0 and float(cs.upper) == 1.0
    assert np.isnan(cs.mean)
    lows, highs = [], []
    rng = np.random.default_rng(1)
    for _ in range(50):
        cs.observe(list(rng.uniform(0, 1, 20)))
        lows.append(float(cs.lower))
        highs.append(float(cs.upper))
    assert lows == sorted(lows)
    assert highs == sorted(highs, reverse=True)
    assert lows[-1] < 0.5 < highs[-1]


def test_observe_equals_update_with_sums() -> None:
    a, b = ConfidenceSequence(0.05), ConfidenceSequence(0.05)
    xs = [0.0, 0.5, 1.0, 1.0, 0.25]
    a.observe(xs)
    b.update(len(xs), sum(xs), sum(x * x for x in xs))
    assert float(a.lower) == float(b.lower) and float(a.upper) == float(b.upper)


@pytest.mark.parametrize("bad", [[1.5], [-0.1], [float("nan")]])
def test_observations_outside_unit_interval_are_refused(bad: list[float]) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ConfidenceSequence(0.05).observe(bad)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        ConfidenceSequence(0.0)
    with pytest.raises(ValueError, match="alpha"):
        bonferroni(1.0, 3)
    with pytest.raises(ValueError, match="tests"):
        bonferroni(0.05, 0)
    with pytest.raises(ValueError, match="margin"):
        WinRateTest(0.6, 0.05, 0.05)
    with pytest.raises(ValueError, match="quantile"):
        QuantileTest(800, 0.05, 0.05, quantile=1.0)
    with pytest.raises(ValueError, match="counts"):
        ConfidenceSequence(0.05).update(-1, 0, 0)
    with pytest.raises(ValueError, match="counts"):
        ConfidenceSequence(0.05).update(1, float("nan"), 0)


def test_bonferroni_splits_alpha() -> None:
    assert bonferroni(0.05, 5) == pytest.approx(0.01)


def test_win_rate_passes_a_better_candidate_and_fails_a_worse_one() -> None:
    good = WinRateTest(0.05, 0.05, 0.05)
    bad = WinRateTest(0.05, 0.05, 0.05)
    assert good.verdict() == Verdict.CONTINUE
    for _ in range(40):
        good.update(wins=6, ties=2, losses=2)  # win rate 0.7
        bad.update(wins=2, ties=2, losses=6)  # win rate 0.3
    assert good.verdict() == Verdict.PASS
    assert bad.verdict() == Verdict.FAIL
    ev = good.evidence().as_dict()
    assert ev["verdict"] == "pass" and ev["n_candidate"] == 400
    assert ev["threshold"] == pytest.approx(0.45)
    assert ev["pass_bound"] > 0.45 and ev["estimate"] == pytest.approx(0.7)
    assert ev["alpha_pass"] == 0.05


def test_win_rate_at_the_margin_does_not_pass_early() -> None:
    t = WinRateTest(0.05, 0.05, 0.05)
    t.update(wins=3, ties=1, losses=1)  # a lucky start
    assert t.verdict() == Verdict.CONTINUE


def test_error_rates_two_samples() -> None:
    same = TwoSampleTest(0.03, 0.05, 0.05, higher_is_better=False)
    worse = TwoSampleTest(0.03, 0.05, 0.05, higher_is_better=False)
    for _ in range(100):
        same.update_candidate(20, 0, 0)
        same.update_incumbent(60, 0, 0)
        worse.update_candidate(20, 4, 4)  # 20% errors
        worse.update_incumbent(60, 0, 0)
    assert same.verdict() == Verdict.PASS
    assert worse.verdict() == Verdict.FAIL
    ev = worse.evidence().as_dict()
    assert ev["n_candidate"] == 2000 and ev["n_incumbent"] == 6000
    assert ev["fail_bound"] > 0.03 and ev["estimate"] == pytest.approx(0.2)


def test_feedback_two_samples_higher_is_better() -> None:
    t = TwoSampleTest(0.05, 0.05, 0.05, higher_is_better=True, name="feedback")
    for _ in range(100):
        t.update_candidate(10, 2, 2)  # 20% thumbs up
        t.update_incumbent(10, 8, 8)  # 80%
    assert t.verdict() == Verdict.FAIL
    assert t.evidence().threshold == pytest.approx(-0.05)


def test_latency_quantile_bound() -> None:
    fast = QuantileTest(800.0, 0.05, 0.05)
    slow = QuantileTest(800.0, 0.05, 0.05)
    for _ in range(60):
        fast.observe([100.0] * 20)
        slow.observe([100.0] * 16 + [1200.0] * 4)  # 20% over the bound: p95 above it
    assert fast.verdict() == Verdict.PASS
    assert slow.verdict() == Verdict.FAIL
    with pytest.raises(ValueError, match="finite"):
        fast.observe([float("inf")])


def test_cost_rule() -> None:
    v = cost_verdict(
        np.array([20.0, 120.0, 0.0]),
        np.array([100.0, 100.0, 0.0]),
        np.array([100.0, 100.0, 0.0]),
        np.array([100.0, 100.0, 0.0]),
    )
    assert list(v) == [Verdict.PASS, Verdict.CONTINUE, Verdict.CONTINUE]


def test_restarted_sequence_spends_alpha_over_its_windows_and_keeps_coverage() -> None:
    rng = np.random.default_rng(3)
    alpha, runs, p = 0.1, 2000, 0.3
    cs = RestartedConfidenceSequence(alpha, 200, (runs,))
    missed = np.zeros(runs, dtype=bool)
    for _ in range(300):  # 3000 observations: 15 windows, every one looked at after each batch
        k = rng.binomial(10, p, size=runs).astype(np.float64)
        cs.update(10, k, k)
        missed |= (cs.upper < p) | (cs.lower > p)
    assert float(cs.windows[0]) == 15.0
    assert missed.mean() <= alpha  # sum of 6 / (pi^2 j^2) over the windows is below 1
    with pytest.raises(ValueError, match="window"):
        RestartedConfidenceSequence(0.05, 0)


def test_a_watch_window_catches_a_change_that_the_whole_stage_dilutes() -> None:
    # 3000 pairs at win rate 0.5, then 0.35: the windowed FAIL side sees only the new evidence.
    def first_fail(window: int | None) -> int:
        t = WinRateTest(0.05, 0.05, 0.05, window=window)
        for i in range(800):
            t.update(*((3, 4, 3) if i < 300 else (2, 3, 5)))
            if t.verdict() == Verdict.FAIL:
                return i
        return 800

    windowed, whole = first_fail(500), first_fail(None)
    assert 300 < windowed < whole
