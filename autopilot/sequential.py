"""Always-valid sequential tests: verdicts that stay valid however often the evidence is looked at.

The building block is a time-uniform confidence sequence (CS) for the mean of observations in
[0, 1]: the predictable-plug-in empirical-Bernstein CS (Waudby-Smith & Ramdas 2023, "Estimating
means of bounded random variables by betting", built on Howard et al. 2021, "Time-uniform,
nonparametric, nonasymptotic confidence sequences"). For a predictable lambda_i in [0, 1) and a
predictable estimate m_i, the process

    M_t = prod_i exp(lambda_i (X_i - mu) - (X_i - m_i)^2 (-log(1 - lambda_i) - lambda_i))

is a nonnegative supermartingale (Fan's inequality, X_i - m_i >= -1), so by Ville's inequality
P(exists t: M_t >= 1/alpha) <= alpha: the lower bound

    L_t = (sum lambda_i X_i - log(1/alpha) - sum (X_i - m_i)^2 psi(lambda_i)) / sum lambda_i,
    psi(lambda) = -log(1 - lambda) - lambda

is below mu at every t at once with probability >= 1 - alpha (the upper bound by symmetry, on
1 - X). If the mean drifts, the bound covers the lambda-weighted mean of the conditional means.
Both lambda_i and m_i only need to be known before X_i arrives, so a batch of observations that
arrives between two looks shares the lambda and m computed at the start of the batch: `update`
takes a batch as (count, sum, sum of squares) per element, and every state is a numpy array of
any shape (shape () for one slice in the controller; (rollouts, slices) in the simulation).

Tests built on it give at every look a verdict CONTINUE / PASS (non-inferior) / FAIL (inferior by
more than the margin), each side at its own alpha:
- `WinRateTest`: judge win rate with ties as halves >= 0.5 - margin (one sample);
- `TwoSampleTest`: candidate mean >= incumbent mean - margin (feedback), or candidate rate <=
  incumbent rate + margin (errors); the union of two one-sided CSs, each at alpha / 2;
- `QuantileTest`: the q-quantile (p95) <= a bound, as a CS on P(X > bound): q95 <= bound iff
  P(X > bound) <= 0.05 (the reduction of Howard & Ramdas 2022, "Sequential estimation of
  quantiles"), so PASS when the exceedance's upper bound is below 1 - q, FAIL when its lower bound
  is above it;
- `cost_verdict`: a rule, not a test: costs are priced from known per-token prices, not judged.
Across slices, `bonferroni` splits alpha; the intersection of PASS verdicts needed to advance is
an intersection-union test, so no correction is needed across the gates of one slice.

The FAIL sides watch through `RestartedConfidenceSequence`: a CS restarted every `window`
observations with alpha spent over the windows (6 / (pi^2 j^2)), so a candidate that degrades
half way is judged on the evidence after the change, not on its average with the good start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
else:  # numpy is imported when a rollout first computes (autopilot.numeric)
    from autopilot.numeric import np

Array: TypeAlias = "NDArray[np.float64]"
Counts: TypeAlias = "NDArray[np.float64] | float | int"


class Verdict(IntEnum):
    CONTINUE = 0
    PASS = 1
    FAIL = 2


def bonferroni(alpha: float, tests: int) -> float:
    """The per-test alpha that keeps the family-wise error rate of `tests` tests at `alpha`."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if tests < 1:
        raise ValueError(f"the number of tests must be >= 1, got {tests}")
    return alpha / tests


def _arr(value: Counts, shape: tuple[int, ...]) -> Array:
    return np.broadcast_to(np.asarray(value, dtype=np.float64), shape)


class ConfidenceSequence:
    """A time-uniform CS for the mean of [0, 1] observations; each side holds at `alpha`.

    Reading `lower`/`upper` at every look keeps P(the mean ever leaves a side) <= alpha. The
    bounds are the running intersection (the max of the lower bounds, the min of the upper),
    which is valid because the guarantee is uniform in time.
    """

    def __init__(self, alpha: float, shape: tuple[int, ...] = (), cap: float = 0.5) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if not 0.0 < cap < 1.0:
            raise ValueError(f"the cap on lambda must be in (0, 1), got {cap}")
        self.alpha = alpha
        self.shape = shape
        self.cap = cap
        self._log = np.full(shape, math.log(1.0 / alpha))
        self.reset()

    def reset(self, mask: NDArray[np.bool_] | None = None) -> None:
        """Forget the evidence (of the elements in `mask`, or all)."""
        if mask is None:
            z = np.zeros(self.shape)
            self.n = z.copy()
            self.sum_x = z.copy()
            self._sum_lam = z.copy()
            self._sum_lam_x = z.copy()
            self._sum_pen = z.copy()
            self._sum_sq_dev = z.copy()
            self._lower = z.copy()
            self._upper = np.ones(self.shape)
            return
        # np.where, not item assignment: arithmetic on shape () arrays gives numpy scalars
        self.n = np.where(mask, 0.0, self.n)
        self.sum_x = np.where(mask, 0.0, self.sum_x)
        self._sum_lam = np.where(mask, 0.0, self._sum_lam)
        self._sum_lam_x = np.where(mask, 0.0, self._sum_lam_x)
        self._sum_pen = np.where(mask, 0.0, self._sum_pen)
        self._sum_sq_dev = np.where(mask, 0.0, self._sum_sq_dev)
        self._lower = np.where(mask, 0.0, self._lower)
        self._upper = np.where(mask, 1.0, self._upper)

    def set_alpha(self, alpha: Array, mask: NDArray[np.bool_]) -> None:
        """Give the (just reset) elements in `mask` a new alpha."""
        self._log = np.where(mask, np.log(1.0 / alpha), self._log)

    def update(self, count: Counts, sum_x: Counts, sum_x2: Counts) -> None:
        """Add a batch: per element, how many observations, their sum and their sum of squares."""
        c = _arr(count, self.shape)
        s = _arr(sum_x, self.shape)
        s2 = _arr(sum_x2, self.shape)
        finite = np.all(np.isfinite(c)) and np.all(np.isfinite(s)) and np.all(np.isfinite(s2))
        if not finite or np.any(c < 0) or np.any(s < -1e-9) or np.any(s > c + 1e-9):
            raise ValueError("observations must lie in [0, 1] and counts be >= 0")
        # Predictable plug-ins: computed from the evidence before this batch.
        mean = (0.5 + self.sum_x) / (self.n + 1.0)
        var = (0.25 + self._sum_sq_dev) / (self.n + 1.0)
        t = self.n + 1.0
        lam = np.minimum(np.sqrt(2.0 * self._log / (var * t * np.log1p(t))), self.cap)
        psi = -np.log1p(-lam) - lam
        sq_dev = np.maximum(s2 - 2.0 * mean * s + c * mean * mean, 0.0)
        self._sum_lam = self._sum_lam + lam * c
        self._sum_lam_x = self._sum_lam_x + lam * s
        self._sum_pen = self._sum_pen + psi * sq_dev
        self._sum_sq_dev = self._sum_sq_dev + sq_dev
        self.n = self.n + c
        self.sum_x = self.sum_x + s
        with np.errstate(divide="ignore", invalid="ignore"):
            centre = self._sum_lam_x / self._sum_lam
            width = (self._log + self._sum_pen) / self._sum_lam
            lo = np.where(self._sum_lam > 0, centre - width, 0.0)
            hi = np.where(self._sum_lam > 0, centre + width, 1.0)
        self._lower = np.maximum(self._lower, np.clip(lo, 0.0, 1.0))
        self._upper = np.minimum(self._upper, np.clip(hi, 0.0, 1.0))

    def observe(self, values: list[float] | NDArray[np.float64]) -> None:
        """Add a batch of observations (shape () only): the controller's convenience."""
        v = np.asarray(values, dtype=np.float64)
        if self.shape != ():
            raise ValueError("observe() is for a single sequence; use update() for arrays")
        if v.size and (np.any(v < 0.0) or np.any(v > 1.0) or not np.all(np.isfinite(v))):
            raise ValueError("observations must lie in [0, 1]")
        self.update(float(v.size), float(v.sum()), float((v * v).sum()))

    @property
    def lower(self) -> Array:
        return self._lower

    @property
    def upper(self) -> Array:
        return self._upper

    @property
    def mean(self) -> Array:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.n > 0, self.sum_x / self.n, np.nan)


class RestartedConfidenceSequence:
    """The watch on a FAIL side: a CS restarted every `window` observations, so that evidence
    from before a change (a candidate that degrades) does not dilute the evidence after it.

    The j-th window's CS holds at alpha * 6 / (pi^2 j^2); these sum to alpha, so by the union
    bound the current window's bound is valid at every look of every window at once with
    probability >= 1 - alpha. The restart depends only on counts, never on the values.
    window None: never restarts, the whole stage at alpha.
    """

    def __init__(self, alpha: float, window: int | None, shape: tuple[int, ...] = ()) -> None:
        if window is not None and window < 1:
            raise ValueError(f"the watch window must be >= 1 observation, got {window}")
        self.alpha = alpha
        self.window = window
        self.shape = shape
        self._cs = ConfidenceSequence(alpha, shape)
        self.reset()

    def _alpha(self) -> Array:
        if self.window is None:
            return np.full(self.shape, self.alpha)
        return self.alpha * 6.0 / (math.pi**2 * self.windows * self.windows)

    def reset(self, mask: NDArray[np.bool_] | None = None) -> None:
        self._cs.reset(mask)
        if mask is None:
            self.windows = np.ones(self.shape)
            mask = np.ones(self.shape, dtype=bool)
        else:
            self.windows = np.where(mask, 1.0, self.windows)
        self._cs.set_alpha(self._alpha(), mask)

    def update(self, count: Counts, sum_x: Counts, sum_x2: Counts) -> None:
        if self.window is not None:
            full = self._cs.n >= self.window
            if full.any():
                self.windows = np.where(full, self.windows + 1.0, self.windows)
                self._cs.reset(full)
                self._cs.set_alpha(self._alpha(), full)
        self._cs.update(count, sum_x, sum_x2)

    @property
    def lower(self) -> Array:
        return self._cs.lower

    @property
    def upper(self) -> Array:
        return self._cs.upper

    @property
    def n(self) -> Array:
        return self._cs.n


def _verdicts(passed: NDArray[np.bool_], failed: NDArray[np.bool_]) -> NDArray[np.int8]:
    # PASS and FAIL at once is possible only if a side's guarantee failed; FAIL wins (safety).
    out = np.where(passed, Verdict.PASS, Verdict.CONTINUE).astype(np.int8)
    return np.where(failed, np.int8(Verdict.FAIL), out).astype(np.int8)


@dataclass(frozen=True)
class TestEvidence:
    """One test's state at one look, for the record: what was compared, bounds, alphas, sizes."""

    name: str
    verdict: Verdict
    statistic: str
    threshold: float
    estimate: float
    pass_bound: float
    fail_bound: float
    alpha_pass: float
    alpha_fail: float
    n_candidate: int
    n_incumbent: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict.name.lower(),
            "statistic": self.statistic,
            "threshold": self.threshold,
            "estimate": self.estimate,
            "pass_bound": self.pass_bound,
            "fail_bound": self.fail_bound,
            "alpha_pass": self.alpha_pass,
            "alpha_fail": self.alpha_fail,
            "n_candidate": self.n_candidate,
            "n_incumbent": self.n_incumbent,
        }


def _at(a: Array, index: tuple[int, ...]) -> float:
    return float(np.asarray(a)[index])


class WinRateTest:
    """Judge win rate (win 1, tie 0.5, loss 0) >= 0.5 - margin: PASS when the lower bound at
    alpha_pass is above 0.5 - margin, FAIL when the upper bound at alpha_fail is below it."""

    statistic = "win rate (ties as halves)"

    def __init__(
        self,
        margin: float,
        alpha_pass: float,
        alpha_fail: float,
        shape: tuple[int, ...] = (),
        name: str = "quality",
        window: int | None = None,
    ) -> None:
        if not 0.0 <= margin < 0.5:
            raise ValueError(f"the win-rate margin must be in [0, 0.5), got {margin}")
        self.name = name
        self.threshold = 0.5 - margin
        self.alpha_pass = alpha_pass
        self.alpha_fail = alpha_fail
        self._pass = ConfidenceSequence(alpha_pass, shape)
        self._fail = RestartedConfidenceSequence(alpha_fail, window, shape)

    def reset(self, mask: NDArray[np.bool_] | None = None) -> None:
        self._pass.reset(mask)
        self._fail.reset(mask)

    def update(self, wins: Counts, ties: Counts, losses: Counts) -> None:
        w, t = np.asarray(wins, np.float64), np.asarray(ties, np.float64)
        n = w + t + np.asarray(losses, np.float64)
        for cs in (self._pass, self._fail):
            cs.update(n, w + 0.5 * t, w + 0.25 * t)

    @property
    def n(self) -> Array:
        return self._pass.n

    def verdict(self) -> NDArray[np.int8]:
        return _verdicts(self._pass.lower > self.threshold, self._fail.upper < self.threshold)

    def evidence(self, index: tuple[int, ...] = ()) -> TestEvidence:
        return TestEvidence(
            self.name,
            Verdict(int(self.verdict()[index])),
            self.statistic,
            self.threshold,
            _at(self._pass.mean, index),
            _at(self._pass.lower, index),
            _at(self._fail.upper, index),
            self.alpha_pass,
            self.alpha_fail,
            int(_at(self.n, index)),
            0,
        )


class TwoSampleTest:
    """Candidate mean vs incumbent mean, two independent samples in [0, 1].

    higher_is_better (feedback): PASS when L_c - U_i > -margin, FAIL when U_c - L_i < -margin.
    Otherwise (error rates): PASS when U_c - L_i < margin, FAIL when L_c - U_i > margin.
    Each arm's CS holds at alpha / 2, so each side of the difference holds at alpha.
    """

    def __init__(
        self,
        margin: float,
        alpha_pass: float,
        alpha_fail: float,
        higher_is_better: bool,
        shape: tuple[int, ...] = (),
        name: str = "errors",
        window: int | None = None,
    ) -> None:
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"the margin must be in [0, 1), got {margin}")
        self.name = name
        self.margin = margin
        self.higher_is_better = higher_is_better
        self.alpha_pass = alpha_pass
        self.alpha_fail = alpha_fail
        self.statistic = (
            "candidate mean - incumbent mean"
            if higher_is_better
            else "candidate rate - incumbent rate"
        )
        self.cand_pass = ConfidenceSequence(alpha_pass / 2, shape)
        self.inc_pass = ConfidenceSequence(alpha_pass / 2, shape)
        self.cand_fail = RestartedConfidenceSequence(alpha_fail / 2, window, shape)
        self.inc_fail = RestartedConfidenceSequence(alpha_fail / 2, window, shape)

    def reset(self, mask: NDArray[np.bool_] | None = None) -> None:
        for cs in (self.cand_pass, self.inc_pass, self.cand_fail, self.inc_fail):
            cs.reset(mask)

    def update_candidate(self, count: Counts, sum_x: Counts, sum_x2: Counts) -> None:
        self.cand_pass.update(count, sum_x, sum_x2)
        self.cand_fail.update(count, sum_x, sum_x2)

    def update_incumbent(self, count: Counts, sum_x: Counts, sum_x2: Counts) -> None:
        self.inc_pass.update(count, sum_x, sum_x2)
        self.inc_fail.update(count, sum_x, sum_x2)

    def _bounds(self) -> tuple[Array, Array]:
        """(the bound compared for PASS, the bound compared for FAIL) on the difference."""
        if self.higher_is_better:
            return (
                self.cand_pass.lower - self.inc_pass.upper,
                self.cand_fail.upper - self.inc_fail.lower,
            )
        return (
            self.cand_pass.upper - self.inc_pass.lower,
            self.cand_fail.lower - self.inc_fail.upper,
        )

    def verdict(self) -> NDArray[np.int8]:
        p, f = self._bounds()
        if self.higher_is_better:
            return _verdicts(p > -self.margin, f < -self.margin)
        return _verdicts(p < self.margin, f > self.margin)

    def evidence(self, index: tuple[int, ...] = ()) -> TestEvidence:
        p, f = self._bounds()
        return TestEvidence(
            self.name,
            Verdict(int(self.verdict()[index])),
            self.statistic,
            -self.margin if self.higher_is_better else self.margin,
            _at(self.cand_pass.mean - self.inc_pass.mean, index),
            _at(p, index),
            _at(f, index),
            self.alpha_pass,
            self.alpha_fail,
            int(_at(self.cand_pass.n, index)),
            int(_at(self.inc_pass.n, index)),
        )


class QuantileTest:
    """The q-quantile of a latency <= bound, sequentially: a CS on the exceedance P(X > bound).

    PASS when the exceedance's upper bound (alpha_pass) is below 1 - q (so the q-quantile is
    at most the bound); FAIL when its lower bound (alpha_fail) is above 1 - q.
    """

    def __init__(
        self,
        bound: float,
        alpha_pass: float,
        alpha_fail: float,
        quantile: float = 0.95,
        shape: tuple[int, ...] = (),
        name: str = "latency_p95",
        window: int | None = None,
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"the quantile must be in (0, 1), got {quantile}")
        if not bound > 0:
            raise ValueError(f"the latency bound must be > 0, got {bound}")
        self.name = name
        self.bound = bound
        self.quantile = quantile
        self.threshold = 1.0 - quantile
        self.alpha_pass = alpha_pass
        self.alpha_fail = alpha_fail
        self.statistic = f"P(value > {bound:g})"
        self._pass = ConfidenceSequence(alpha_pass, shape)
        self._fail = RestartedConfidenceSequence(alpha_fail, window, shape)

    def reset(self, mask: NDArray[np.bool_] | None = None) -> None:
        self._pass.reset(mask)
        self._fail.reset(mask)

    def update_exceedances(self, count: Counts, exceeding: Counts) -> None:
        """Add `count` observations of which `exceeding` were above the bound."""
        for cs in (self._pass, self._fail):
            cs.update(count, exceeding, exceeding)

    def observe(self, values: list[float] | NDArray[np.float64]) -> None:
        v = np.asarray(values, dtype=np.float64)
        if v.size and not np.all(np.isfinite(v)):
            raise ValueError("latencies must be finite")
        self.update_exceedances(float(v.size), float(np.count_nonzero(v > self.bound)))

    @property
    def n(self) -> Array:
        return self._pass.n

    def verdict(self) -> NDArray[np.int8]:
        return _verdicts(self._pass.upper < self.threshold, self._fail.lower > self.threshold)

    def evidence(self, index: tuple[int, ...] = ()) -> TestEvidence:
        return TestEvidence(
            self.name,
            Verdict(int(self.verdict()[index])),
            self.statistic,
            self.threshold,
            _at(self._pass.mean, index),
            _at(self._pass.upper, index),
            _at(self._fail.lower, index),
            self.alpha_pass,
            self.alpha_fail,
            int(_at(self.n, index)),
            0,
        )


def cost_verdict(
    candidate_cost: Counts,
    incumbent_cost: Counts,
    n_candidate: Counts,
    n_incumbent: Counts,
    max_ratio: float = 1.0,
) -> NDArray[np.int8]:
    """Cost per call: PASS when the candidate's mean cost per call < max_ratio x the incumbent's.

    A rule, not a test: costs come from known prices times counted tokens, so there is no judged
    noise to guard against beyond the calls' own mix, and the comparison waits for both sides to
    have calls (the gates also ask for min_samples). It never FAILs: a dearer candidate holds
    until the stage's maximum duration gives up.
    """
    nc = np.asarray(n_candidate, np.float64)
    ni = np.asarray(n_incumbent, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cand = np.asarray(candidate_cost, np.float64) / nc
        inc = np.asarray(incumbent_cost, np.float64) / ni
        ok = (nc > 0) & (ni > 0) & (cand < max_ratio * inc)
    return np.where(ok, np.int8(Verdict.PASS), np.int8(Verdict.CONTINUE)).astype(np.int8)
