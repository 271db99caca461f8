"""A stage's gates: one slice's sequential tests combined into advance/hold/rollback/give up.

At each look, for each slice:
- ROLLBACK if any safety test (quality, feedback, errors, latency, TTFT) FAILs: the candidate is
  significantly worse than its margin or bound (each FAIL side at alpha_rollback / slices);
- ADVANCE if every enabled test PASSes (each PASS side at alpha / slices), the cost rule passes,
  the stage has min_samples judged pairs and candidate calls, and min_dwell_s has passed;
- GIVE_UP if the stage has lasted max_duration_s without either;
- HOLD otherwise.
Advancing needs every test to pass, an intersection-union test: a candidate that is truly worse
on one gate advances with probability at most that gate's alpha, so the gates of a slice need no
correction among themselves; slices do (Bonferroni), since each slice advances on its own.

`SliceGates` keeps its state as numpy arrays of any shape: shape () is one slice in the
controller (`decision()` gives the record with every gate's evidence), and the simulation runs
(rollouts, slices) at once through the same `actions()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
else:  # numpy is imported when a rollout first computes (autopilot.numeric)
    from autopilot.numeric import np

from autopilot.sequential import (
    Counts,
    QuantileTest,
    TestEvidence,
    TwoSampleTest,
    Verdict,
    WinRateTest,
    bonferroni,
    cost_verdict,
)


class Action(IntEnum):
    HOLD = 0
    ADVANCE = 1
    ROLLBACK = 2
    GIVE_UP = 3


@dataclass(frozen=True)
class StageGates:
    """What a stage asks of the candidate before it advances (margins on their [0, 1] scales)."""

    quality_margin: float = 0.05
    """Judge win rate (ties as halves) must be >= 0.5 - quality_margin."""
    error_margin: float | None = 0.03
    """Candidate error rate may exceed the incumbent's by at most this; None: no errors gate."""
    feedback_margin: float | None = None
    """Mean feedback (scaled to [0, 1] by feedback_range) >= incumbent's - margin; None: off."""
    feedback_range: tuple[float, float] = (0.0, 1.0)
    latency_p95_ms: float | None = None
    """The candidate's p95 latency must be <= this; None: no latency gate."""
    ttft_p95_ms: float | None = None
    """The candidate's p95 time to first token (streams) must be <= this; None: off."""
    latency_quantile: float = 0.95
    max_cost_ratio: float | None = 1.0
    """Candidate cost per call must be < max_cost_ratio x incumbent's; None: no cost gate."""
    watch_window: int | None = 2000
    """The FAIL sides restart every watch_window observations of an arm (alpha spent over the
    windows as 6 / (pi^2 j^2)), so a candidate that degrades is caught on fresh evidence;
    None: one window for the whole stage."""
    min_samples: int = 200
    min_dwell_s: float = 0.0
    max_duration_s: float = float("inf")
    alpha: float = 0.05
    """False advance rate bound, across all slices together (Bonferroni)."""
    alpha_rollback: float = 0.05
    """False rollback rate bound per stage, across all slices together (Bonferroni)."""
    slices: int = 1

    def __post_init__(self) -> None:
        for name in ("alpha", "alpha_rollback"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        if self.slices < 1:
            raise ValueError(f"slices must be >= 1, got {self.slices}")
        if self.watch_window is not None and self.watch_window < 1:
            raise ValueError(f"watch_window must be >= 1, got {self.watch_window}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if self.min_dwell_s < 0 or not self.max_duration_s > self.min_dwell_s:
            raise ValueError("need 0 <= min_dwell_s < max_duration_s")
        lo, hi = self.feedback_range
        if not hi > lo:
            raise ValueError(f"feedback_range must be (low, high) with high > low, got {lo, hi}")

    @property
    def slice_alpha(self) -> float:
        return bonferroni(self.alpha, self.slices)

    @property
    def slice_alpha_rollback(self) -> float:
        return bonferroni(self.alpha_rollback, self.slices)


@dataclass(frozen=True)
class Decision:
    """One slice's decision at one look, with the evidence that made it."""

    action: Action
    reason: str
    elapsed_s: float
    gates: list[TestEvidence] = field(default_factory=list)
    cost: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.name.lower(),
            "reason": self.reason,
            "elapsed_s": self.elapsed_s,
            "gates": [g.as_dict() for g in self.gates],
            "cost": self.cost,
        }


class SliceGates:
    """The evidence and tests of a stage, for one slice (shape ()) or many at once."""

    def __init__(self, config: StageGates, shape: tuple[int, ...] = ()) -> None:
        self.config = config
        self.shape = shape
        a, ar, w = config.slice_alpha, config.slice_alpha_rollback, config.watch_window
        self.quality = WinRateTest(config.quality_margin, a, ar, shape, window=w)
        self.errors = (
            None
            if config.error_margin is None
            else TwoSampleTest(config.error_margin, a, ar, False, shape, "errors", w)
        )
        self.feedback = (
            None
            if config.feedback_margin is None
            else TwoSampleTest(config.feedback_margin, a, ar, True, shape, "feedback", w)
        )
        self.latency = (
            None
            if config.latency_p95_ms is None
            else QuantileTest(
                config.latency_p95_ms, a, ar, config.latency_quantile, shape, window=w
            )
        )
        self.ttft = (
            None
            if config.ttft_p95_ms is None
            else QuantileTest(
                config.ttft_p95_ms, a, ar, config.latency_quantile, shape, "ttft_p95", w
            )
        )
        self.reset()

    def _tests(self) -> list[WinRateTest | TwoSampleTest | QuantileTest]:
        out: list[WinRateTest | TwoSampleTest | QuantileTest] = [self.quality]
        out += [t for t in (self.feedback, self.errors, self.latency, self.ttft) if t is not None]
        return out

    def reset(self, mask: NDArray[np.bool_] | None = None) -> None:
        """A new stage: forget the evidence (of the slices in `mask`, or all)."""
        for t in self._tests():
            t.reset(mask)
        if mask is None:
            self.cand_calls = np.zeros(self.shape)
            self.inc_calls = np.zeros(self.shape)
            self.cand_cost = np.zeros(self.shape)
            self.inc_cost = np.zeros(self.shape)
        else:
            self.cand_calls = np.where(mask, 0.0, self.cand_calls)
            self.inc_calls = np.where(mask, 0.0, self.inc_calls)
            self.cand_cost = np.where(mask, 0.0, self.cand_cost)
            self.inc_cost = np.where(mask, 0.0, self.inc_cost)

    # --- evidence, as batches of counts and sums (arrays of `shape`) -------------------------

    def add_judgements(self, wins: Counts, ties: Counts, losses: Counts) -> None:
        self.quality.update(wins, ties, losses)

    def add_calls(
        self,
        candidate: bool,
        count: Counts,
        errors: Counts,
        cost: Counts,
        latency_over: Counts = 0,
        ttft_count: Counts = 0,
        ttft_over: Counts = 0,
    ) -> None:
        """Calls answered by one side: how many, how many failed, their total cost; for the
        candidate also how many were slower than the latency bound, and the streams' TTFT."""
        if self.errors is not None:
            upd = self.errors.update_candidate if candidate else self.errors.update_incumbent
            upd(count, errors, errors)
        if candidate:
            self.cand_calls = self.cand_calls + np.asarray(count, np.float64)
            self.cand_cost = self.cand_cost + np.asarray(cost, np.float64)
            if self.latency is not None:
                self.latency.update_exceedances(count, latency_over)
            if self.ttft is not None:
                self.ttft.update_exceedances(ttft_count, ttft_over)
        else:
            self.inc_calls = self.inc_calls + np.asarray(count, np.float64)
            self.inc_cost = self.inc_cost + np.asarray(cost, np.float64)

    def add_feedback(self, candidate: bool, count: Counts, sum_x: Counts, sum_x2: Counts) -> None:
        """Feedback already scaled to [0, 1] (see `scale_feedback`)."""
        if self.feedback is None:
            return
        if candidate:
            self.feedback.update_candidate(count, sum_x, sum_x2)
        else:
            self.feedback.update_incumbent(count, sum_x, sum_x2)

    def scale_feedback(self, values: list[float]) -> NDArray[np.float64]:
        lo, hi = self.config.feedback_range
        v = np.asarray(values, dtype=np.float64)
        if v.size and (np.any(v < lo) or np.any(v > hi) or not np.all(np.isfinite(v))):
            raise ValueError(f"feedback values must lie in [{lo}, {hi}]")
        return (v - lo) / (hi - lo)

    # --- the decision ---------------------------------------------------------------------

    def _cost(self) -> NDArray[np.int8]:
        if self.config.max_cost_ratio is None:
            return np.full(self.shape, Verdict.PASS, dtype=np.int8)
        return cost_verdict(
            self.cand_cost,
            self.inc_cost,
            self.cand_calls,
            self.inc_calls,
            self.config.max_cost_ratio,
        )

    def actions(self, elapsed_s: Counts) -> NDArray[np.int8]:
        """The action for every element, given the time each has spent in its stage."""
        c = self.config
        elapsed = np.asarray(elapsed_s, np.float64)
        verdicts = [t.verdict() for t in self._tests()]
        failed = np.zeros(self.shape, dtype=bool)
        passed = self._cost() == Verdict.PASS
        for v in verdicts:
            failed |= v == Verdict.FAIL
            passed &= v == Verdict.PASS
        enough = (self.quality.n >= c.min_samples) & (self.cand_calls >= c.min_samples)
        advance = passed & enough & (elapsed >= c.min_dwell_s)
        out = np.full(self.shape, Action.HOLD, dtype=np.int8)
        out = np.where(elapsed >= c.max_duration_s, np.int8(Action.GIVE_UP), out)
        out = np.where(advance, np.int8(Action.ADVANCE), out)
        return np.where(failed, np.int8(Action.ROLLBACK), out).astype(np.int8)

    def decision(self, elapsed_s: float, index: tuple[int, ...] = ()) -> Decision:
        """The action for one slice, with every gate's evidence and the reason, for the record."""
        action = Action(int(self.actions(elapsed_s)[index]))
        gates = [t.evidence(index) for t in self._tests()]
        nc, ni = float(self.cand_calls[index]), float(self.inc_calls[index])
        cost = {
            "candidate_per_call": float(self.cand_cost[index]) / nc if nc else float("nan"),
            "incumbent_per_call": float(self.inc_cost[index]) / ni if ni else float("nan"),
            "max_ratio": float("nan")
            if self.config.max_cost_ratio is None
            else self.config.max_cost_ratio,
            "verdict_pass": float(self._cost()[index] == Verdict.PASS),
        }
        failed = [g.name for g in gates if g.verdict == Verdict.FAIL]
        waiting = [g.name for g in gates if g.verdict == Verdict.CONTINUE]
        if cost["verdict_pass"] == 0.0:
            waiting.append("cost")
        if action == Action.ROLLBACK:
            reason = "significantly worse: " + ", ".join(failed)
        elif action == Action.ADVANCE:
            reason = "every gate passed"
        else:
            parts = []
            if waiting:
                parts.append("waiting on " + ", ".join(waiting))
            if self.quality.n[index] < self.config.min_samples:
                parts.append(f"{int(self.quality.n[index])}/{self.config.min_samples} judged pairs")
            if self.cand_calls[index] < self.config.min_samples:
                parts.append(f"{int(nc)}/{self.config.min_samples} candidate calls")
            if elapsed_s < self.config.min_dwell_s:
                parts.append(f"dwell {elapsed_s:g}/{self.config.min_dwell_s:g} s")
            if action == Action.GIVE_UP:
                parts.insert(0, f"no decision after {self.config.max_duration_s:g} s")
            reason = "; ".join(parts) or "waiting"
        return Decision(action, reason, elapsed_s, gates, cost)
