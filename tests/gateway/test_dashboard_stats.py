"""The dashboard's statistics against known values.

Reference values: a Welch's t-test worked by hand below, Student's t tables, and values from
scipy 1.17.1 (``scipy.stats.ttest_ind(..., equal_var=False)``, ``t.ppf``, ``t.sf``,
``mannwhitneyu(..., method="asymptotic")``), computed once and written down here: scipy is
not a dependency.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import statistics
from collections.abc import Callable

import pytest

from gateway.dashboard import stats
from gateway.dashboard.window import Window, WindowError, parse_window

A = [19.8, 20.4, 19.6, 17.8, 18.5, 18.9, 18.3, 18.9, 19.5, 22.0]
B = [28.2, 26.6, 20.1, 23.3, 25.2, 22.1, 17.7, 27.6, 20.6, 13.7,
     23.2, 17.5, 20.6, 18.0, 23.9, 21.6, 24.3, 20.4, 23.9, 13.3]  # fmt: skip


def test_welch_by_hand_on_a_small_sample() -> None:
    # x = 1, 2, 3, 4 (mean 2.5, s² = 5/3); y = 2, 4, 6 (mean 4, s² = 4).
    # se² = (5/3)/4 + 4/3 = 5/12 + 16/12 = 7/4; t = (2.5 - 4) / sqrt(7/4) = -1.5 / 1.3229 = -1.1339
    # df = (7/4)² / ((5/12)²/3 + (4/3)²/2) = 3.0625 / (0.0578704 + 0.8888889) = 3.2348
    result = stats.welch(4, 2.5, 5 / 3, 3, 4.0, 4.0)
    assert result is not None
    assert result.difference == -1.5
    assert result.t == pytest.approx(-1.5 / math.sqrt(7 / 4), rel=1e-12)
    assert result.df == pytest.approx((7 / 4) ** 2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2))
    assert result.t == pytest.approx(-1.1339, abs=1e-4)
    assert result.df == pytest.approx(3.2348, abs=1e-4)
    # Tables: t(0.975, df 3) = 3.182 and t(0.975, df 4) = 2.776; |t| = 1.13 is far from both.
    assert 0.3 < result.p < 0.4
    assert result.p == pytest.approx(0.33382370007750106, rel=1e-9)  # scipy
    assert not result.significant


def test_welch_against_scipy() -> None:
    result = stats.welch(
        len(A),
        statistics.fmean(A),
        statistics.variance(A),
        len(B),
        statistics.fmean(B),
        statistics.variance(B),
    )
    assert result is not None
    assert result.t == pytest.approx(-2.225512039969852, rel=1e-10)
    assert result.df == pytest.approx(24.524634944257343, rel=1e-10)
    assert result.p == pytest.approx(0.035484530830010394, rel=1e-9)
    assert (result.low, result.high) == pytest.approx(
        (-4.276458650120555, -0.16354134987944358), rel=1e-9
    )
    assert result.significant


def test_welch_degenerate_samples() -> None:
    assert stats.welch(1, 1.0, 0.0, 10, 0.5, 0.1) is None
    same = stats.welch(5, 1.0, 0.0, 5, 1.0, 0.0)
    assert same is not None and same.p == 1.0 and same.t is None
    apart = stats.welch(5, 1.0, 0.0, 5, -1.0, 0.0)
    assert apart is not None and apart.p == 0.0 and apart.significant


@pytest.mark.parametrize(
    ("q", "df", "value"),
    [
        (0.975, 10, 2.228138851986274),
        (0.975, 1, 12.706204736174694),
        (0.975, 25.3, 2.058300956779713),
        (0.975, 1000, 1.9623390808264083),
        (0.95, 5, 2.0150483733330233),  # the one-sided 5% table value, 2.015
    ],
)
def test_t_quantiles(q: float, df: float, value: float) -> None:
    assert stats.t_quantile(q, df) == pytest.approx(value, rel=1e-10)


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (2.5, 7, 0.04099221858575289),
        (0.3, 3.5, 0.7811334098398895),
        (40.0, 50, 1.2412423784372691e-39),
        (0.0, 9, 1.0),
    ],
)
def test_t_two_sided_p(t: float, df: float, p: float) -> None:
    assert stats.t_two_sided_p(t, df) == pytest.approx(p, rel=1e-9)
    assert stats.t_two_sided_p(-t, df) == pytest.approx(p, rel=1e-9)


def test_mean_interval() -> None:
    interval = stats.mean_interval(len(A), statistics.fmean(A), statistics.variance(A))
    assert interval is not None
    assert interval.mean == pytest.approx(19.37)
    assert (interval.low, interval.high) == pytest.approx(
        (18.50889330293455, 20.231106697065446), rel=1e-10
    )
    assert stats.mean_interval(1, 0.5, 0.0) is None


def test_mann_whitney_with_ties_against_scipy() -> None:
    x = [1.1, 2.2, 2.2, 3.5, 4.0, 4.0, 4.0, 5.1, 6.3, 7.7, 8.0, 9.9]
    y = [0.5, 1.1, 2.0, 2.2, 3.0, 3.3, 4.0, 4.4, 5.0, 5.5, 6.1]
    u, ties = stats.u_statistic(x, y)
    assert u == 87.0
    # Tied groups in the pooled sample: 1.1 (2), 2.2 (3), 4.0 (4): 6 + 24 + 60.
    assert ties == 90.0
    result = stats.mann_whitney(len(x), len(y), u, ties)
    assert result is not None
    assert result.p == pytest.approx(0.20537379104348208, rel=1e-9)
    assert result.prob_greater == pytest.approx(87 / (12 * 11))
    assert not result.significant
    # The other way round: same p, the complementary U.
    u2, _ = stats.u_statistic(y, x)
    assert u2 == 12 * 11 - 87
    other = stats.mann_whitney(len(y), len(x), u2, ties)
    assert other is not None and other.p == pytest.approx(result.p) and other.z == -result.z


def test_mann_whitney_significant_difference() -> None:
    fast = [100.0 + i for i in range(30)]
    slow = [125.0 + i for i in range(30)]
    u, ties = stats.u_statistic(slow, fast)
    result = stats.mann_whitney(30, 30, u, ties)
    assert result is not None and result.significant and result.prob_greater > 0.8


def test_mann_whitney_needs_enough_calls() -> None:
    assert stats.mann_whitney(9, 100, 400.0, 0.0) is None
    all_tied = stats.mann_whitney(10, 10, 50.0, 20.0**3 - 20.0)
    assert all_tied is not None and all_tied.p == 1.0


def test_betainc_edges() -> None:
    assert stats.betainc(2, 3, 0.0) == 0.0
    assert stats.betainc(2, 3, 1.0) == 1.0
    # I_x(1, 1) = x; I_x(a, 1) = x^a
    assert stats.betainc(1, 1, 0.37) == pytest.approx(0.37, rel=1e-12)
    assert stats.betainc(3.5, 1, 0.6) == pytest.approx(0.6**3.5, rel=1e-12)


# --- windows ------------------------------------------------------------------------------------

NOW = dt.datetime(2026, 3, 14, 12, 0, 7, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("preset", "span", "bucket"),
    [
        ("15m", dt.timedelta(minutes=15), 10),
        ("1h", dt.timedelta(hours=1), 30),
        ("24h", dt.timedelta(hours=24), 600),
        ("7d", dt.timedelta(days=7), 3600),
    ],
)
def test_presets(preset: str, span: dt.timedelta, bucket: int) -> None:
    window = parse_window(preset, now=NOW)
    assert (window.start, window.end, window.label) == (NOW - span, NOW, preset)
    assert window.bucket_s == bucket
    buckets = window.bucket_starts()
    assert len(buckets) <= 181
    assert buckets[0] <= window.start.timestamp() < buckets[0] + bucket
    assert all(b % bucket == 0 for b in buckets)


def test_custom_window() -> None:
    window = parse_window(None, "2026-03-01T00:00:00Z", "2026-03-03T00:00", now=NOW)
    assert window == Window(
        dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 3, tzinfo=dt.UTC), "custom"
    )
    assert window.bucket_s == 1800
    open_ended = parse_window("custom", "2026-03-14T11:00:00+01:00", now=NOW)
    assert open_ended.start == dt.datetime(2026, 3, 14, 10, tzinfo=dt.UTC)
    assert open_ended.end == NOW


@pytest.mark.parametrize(
    ("preset", "start", "end"),
    [
        ("3y", None, None),
        ("custom", None, None),
        (None, "yesterday", None),
        (None, "2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z"),
        (None, "2020-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    ],
)
def test_bad_windows(preset: str | None, start: str | None, end: str | None) -> None:
    with pytest.raises(WindowError):
        parse_window(preset, start, end, now=NOW)


def test_score_intervals_stay_in_the_score_range() -> None:
    rng = random.Random(7)
    for _ in range(5_000):
        n = rng.randrange(1, 60)
        scores = [rng.choice((-1.0, 1.0, rng.uniform(-1, 1))) for _ in range(n)]
        mean = statistics.fmean(scores)
        variance = statistics.variance(scores) if n > 1 else 0.0
        interval = stats.score_interval(n, mean, variance)
        if n < 2:
            assert interval is None
            continue
        assert interval is not None
        assert -1.0 <= interval.low <= interval.mean <= interval.high <= 1.0
    # whatever the inputs, even inconsistent ones (a mean off the scale, a huge variance)
    for n, mean, variance in [(2, -1.0, 0.0), (4, 1.0, 0.0), (3, 0.2, 0.0), (4, 0.05, 3.2),
                              (5, 1.3, 9.0), (10**6, -1.0, 0.0), (2, 0.0, 2.0)]:  # fmt: skip
        interval = stats.score_interval(n, mean, variance)
        assert interval is not None and -1.0 <= interval.low <= interval.high <= 1.0
        assert interval.low <= interval.mean <= interval.high


def _thumbs(rng: random.Random, up: float) -> Callable[[], float]:
    return lambda: 1.0 if rng.random() < up else -1.0


def _likert(rng: random.Random) -> Callable[[], float]:
    return lambda: rng.choices((-1.0, -0.5, 0.0, 0.5, 1.0), (0.05, 0.05, 0.1, 0.3, 0.5))[0]


def _beta(rng: random.Random, a: float, b: float) -> Callable[[], float]:
    return lambda: 2.0 * rng.betavariate(a, b) - 1.0


@pytest.mark.parametrize(
    ("name", "n", "true_mean"),
    [
        ("thumbs 0.8", 30, 0.6),
        ("thumbs 0.95", 100, 0.9),
        ("likert", 10, 0.55),
        ("beta 5,1", 5, 2 * 5 / 6 - 1),
        ("beta 2,2", 3, 0.0),
        ("beta 8,2", 20, 0.6),
    ],
)
def test_score_intervals_cover_the_true_mean_about_95_percent(
    name: str, n: int, true_mean: float
) -> None:
    rng = random.Random(f"{name} {n}")
    draw = {
        "thumbs 0.8": _thumbs(rng, 0.8),
        "thumbs 0.95": _thumbs(rng, 0.95),
        "likert": _likert(rng),
        "beta 5,1": _beta(rng, 5, 1),
        "beta 2,2": _beta(rng, 2, 2),
        "beta 8,2": _beta(rng, 8, 2),
    }[name]
    runs = 1000
    covered = 0
    for _ in range(runs):
        scores = [draw() for _ in range(n)]
        interval = stats.score_interval(n, statistics.fmean(scores), statistics.variance(scores))
        assert interval is not None
        covered += interval.low <= true_mean <= interval.high
    assert 0.92 <= covered / runs <= 0.985
