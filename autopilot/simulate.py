"""The proof by simulation: thousands of rollouts with known truth through the gates' own code.

    python -m autopilot.simulate --rollouts 2000 --seed 1

Each rollout has `--slices` slices, each moving on its own through four gated stages (shadow ->
5% -> 25% -> 50% -> target); a slice that reaches the target is promoted. Every slice gets
`--look-every` judged pairs per look (one pair per simulated second), the candidate as many calls,
the incumbent three times as many, and the controller's `SliceGates.actions` decides at every look
(continuous monitoring). Each stage starts its tests afresh. Truths:

- equal: win/tie/loss 0.35/0.30/0.35 (win rate 0.5), errors 2% on both sides (an A/A rollout);
- better: win rate 0.6, errors equal;
- worse by delta (quality): win rate exactly 0.5 - delta, the boundary of non-inferiority;
- worse by delta (errors): candidate errors exactly incumbent's + the error margin;
- worse on one slice: slice 0 has win rate 0.5 - 2 delta, the others are equal;
- degrading half way: equal until `--degrade-at` judged pairs, then win rate 0.5 - 2 delta and
  errors + 2 margins; promoted slices keep being watched (at the target) until `--horizon`.

Samples are judged pairs per slice; at one pair per simulated second they are also the simulated
seconds to each decision. A false promotion is a slice promoted while truly worse by at least its
margin; the table gives its rate across rollouts (any slice: the family-wise rate the Bonferroni
split bounds by alpha).
The last rows show why: a fixed-sample one-sided z-test at alpha, looked at every few samples,
"promotes" a candidate at the boundary far more often than alpha.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from autopilot.gates import Action, SliceGates, StageGates

STAGES = ("shadow", "5%", "25%", "50%")  # gated stages; passing the last reaches the target
RUNNING, PROMOTED, ROLLED_BACK, GAVE_UP = 0, 1, 2, 3

BASE_ERROR = 0.02
TIE = 0.30
LATENCY_BOUND_MS = 800.0
LATENCY_OVER = 0.01  # P(candidate latency > bound): its p95 is well under the bound
INCUMBENT_CALLS = 3  # incumbent calls per candidate call in the simulated traffic
CANDIDATE_PRICE, INCUMBENT_PRICE = 0.2, 1.0


@dataclass(frozen=True)
class Truth:
    """Per-slice win rates and candidate error rates, before and after `degrade_at`."""

    name: str
    win_rate: tuple[float, ...]
    error: tuple[float, ...]
    bad: tuple[bool, ...]  # slices truly worse by at least a margin (from the start)
    degrade_at: int | None = None
    win_rate_after: float = 0.5
    error_after: float = BASE_ERROR


def default_gates(slices: int, alpha: float) -> StageGates:
    return StageGates(
        quality_margin=0.05,
        error_margin=0.03,
        latency_p95_ms=LATENCY_BOUND_MS,
        max_cost_ratio=1.0,
        min_samples=200,
        min_dwell_s=60.0,
        max_duration_s=6000.0,
        alpha=alpha,
        alpha_rollback=alpha,
        slices=slices,
    )


def scenarios(gates: StageGates, degrade_at: int) -> list[Truth]:
    k = gates.slices
    d = gates.quality_margin
    e = gates.error_margin or 0.0
    eq = (0.5,) * k
    ok = (BASE_ERROR,) * k
    return [
        Truth("equal (A/A)", eq, ok, (False,) * k),
        Truth("better", (0.6,) * k, ok, (False,) * k),
        Truth("worse by delta (quality)", (0.5 - d,) * k, ok, (True,) * k),
        Truth("worse by margin (errors)", eq, (BASE_ERROR + e,) * k, (True,) * k),
        Truth(
            "worse on one slice",
            (0.5 - 2 * d, *eq[1:]),
            ok,
            (True,) + (False,) * (k - 1),
        ),
        Truth(
            "degrading half way",
            eq,
            ok,
            (False,) * k,
            degrade_at=degrade_at,
            win_rate_after=0.5 - 2 * d,
            error_after=BASE_ERROR + 2 * e,
        ),
    ]


def _judgements(
    rng: np.random.Generator, win_rate: NDArray[np.float64], n: int
) -> tuple[NDArray[np.float64], ...]:
    """Win/tie/loss counts of n pairs per element, ties at TIE, mean score = win_rate."""
    p_win = win_rate - TIE / 2
    wins = rng.binomial(n, p_win)
    ties = rng.binomial(n - wins, TIE / (1 - p_win))
    return wins.astype(np.float64), ties.astype(np.float64), (n - wins - ties).astype(np.float64)


def run_scenario(
    truth: Truth,
    gates: StageGates,
    rollouts: int,
    rng: np.random.Generator,
    look_every: int,
    horizon: int,
) -> dict[str, Any]:
    shape = (rollouts, gates.slices)
    sg = SliceGates(gates, shape)
    stage = np.zeros(shape, dtype=np.int64)
    state = np.full(shape, RUNNING, dtype=np.int64)
    stage_samples = np.zeros(shape)
    decided_at = np.full(shape, -1.0)  # judged pairs (per slice) when the slice's fate was sealed
    promoted_at = np.full(shape, -1.0)
    win = np.broadcast_to(np.asarray(truth.win_rate), shape).astype(np.float64)
    err = np.broadcast_to(np.asarray(truth.error), shape).astype(np.float64)
    samples = 0
    watch = truth.degrade_at is not None  # keep watching promoted slices
    k = look_every
    while samples < horizon:
        if truth.degrade_at is not None and samples >= truth.degrade_at:
            win = np.full(shape, truth.win_rate_after)
            err = np.full(shape, truth.error_after)
        w, t, lo = _judgements(rng, win, k)
        sg.add_judgements(w, t, lo)
        cand_err = rng.binomial(k, err).astype(np.float64)
        over = rng.binomial(k, LATENCY_OVER, size=shape).astype(np.float64)
        sg.add_calls(True, k, cand_err, k * CANDIDATE_PRICE, latency_over=over)
        ni = k * INCUMBENT_CALLS
        inc_err = rng.binomial(ni, BASE_ERROR, size=shape).astype(np.float64)
        sg.add_calls(False, ni, inc_err, ni * INCUMBENT_PRICE)
        samples += k
        stage_samples += k
        act = sg.actions(stage_samples)  # one judged pair per simulated second
        live = state == RUNNING
        watching = (state == PROMOTED) & watch
        rb = (live | watching) & (act == Action.ROLLBACK)
        adv = live & (act == Action.ADVANCE)
        give = live & (act == Action.GIVE_UP)
        state[rb] = ROLLED_BACK
        decided_at[rb] = samples
        state[give] = GAVE_UP
        decided_at[give] = samples
        stage[adv] += 1
        done = adv & (stage >= len(STAGES))
        state[done] = PROMOTED
        promoted_at[done] = samples
        decided_at[done] = samples
        moved = adv | (watching & (act == Action.ADVANCE))
        if moved.any():  # a new stage (or a new window at the target): fresh evidence
            sg.reset(moved)
            stage_samples[moved] = 0
        if not (state == RUNNING).any() and not (watch and (state == PROMOTED).any()):
            break
    return summarise(truth, state, decided_at, promoted_at, gates)


def _median(x: NDArray[np.float64]) -> float:
    return float(np.median(x)) if x.size else math.nan


def summarise(
    truth: Truth,
    state: NDArray[np.int64],
    decided_at: NDArray[np.float64],
    promoted_at: NDArray[np.float64],
    gates: StageGates,
) -> dict[str, Any]:
    bad = np.asarray(truth.bad, dtype=bool)
    ever_promoted = promoted_at >= 0
    out: dict[str, Any] = {
        "scenario": truth.name,
        "rollouts": int(state.shape[0]),
        "slices": int(state.shape[1]),
        "alpha": gates.alpha,
    }
    if bad.any():
        out["false_promotion"] = float(ever_promoted[:, bad].any(axis=1).mean())
    if (~bad).any() and truth.degrade_at is None:
        out["power_all_good_slices"] = float(ever_promoted[:, ~bad].all(axis=1).mean())
    out["promoted"] = float((state == PROMOTED).mean())
    out["rolled_back"] = float((state == ROLLED_BACK).mean())
    out["gave_up"] = float((state == GAVE_UP).mean())
    out["running"] = float((state == RUNNING).mean())
    if bad.any() and not bad.all():
        out["bad_slice_rolled_back"] = float((state[:, bad] == ROLLED_BACK).mean())
        out["good_slices_promoted"] = float((state[:, ~bad] == PROMOTED).mean())
    for name, code in (("promoted", PROMOTED), ("rolled_back", ROLLED_BACK), ("gave_up", GAVE_UP)):
        at = promoted_at if code == PROMOTED else decided_at
        sel = (state == code) if code != PROMOTED else ever_promoted
        out[f"median_samples_to_{name}"] = _median(at[sel])
    if truth.degrade_at is not None:
        # Worse by 2 margins once degraded: a slice still promoted at the end is a miss.
        out["false_promotion"] = float((state == PROMOTED).any(axis=1).mean())
        after = (state == ROLLED_BACK) & (decided_at > truth.degrade_at)
        out["rolled_back_after_degrading"] = float(after.mean())
        out["median_samples_degradation_to_rollback"] = _median(
            decided_at[after] - truth.degrade_at
        )
        out["rolled_back_before_degrading"] = float(
            ((state == ROLLED_BACK) & (decided_at <= truth.degrade_at)).mean()
        )
    return out


def naive_peeking(
    rollouts: int,
    rng: np.random.Generator,
    alpha: float,
    margin: float,
    look_every: int,
    max_samples: int,
) -> dict[str, Any]:
    """A fixed-sample one-sided z-test of win rate > 0.5 - margin at the boundary truth, looked
    at every `look_every` samples (peeking) and once at max_samples (as designed)."""
    z = _z(1 - alpha)
    truth = np.full(rollouts, 0.5 - margin)
    n = 0
    s = np.zeros(rollouts)
    s2 = np.zeros(rollouts)
    ever = np.zeros(rollouts, dtype=bool)
    stat = np.zeros(rollouts)
    while n < max_samples:
        w, t, _ = _judgements(rng, truth, look_every)
        s += w + 0.5 * t
        s2 += w + 0.25 * t
        n += look_every
        mean = s / n
        sd = np.sqrt(np.maximum(s2 / n - mean * mean, 1e-12) / n)
        stat = (mean - (0.5 - margin)) / sd
        ever |= stat > z
    return {
        "scenario": "naive z-test, worse by delta (quality)",
        "rollouts": rollouts,
        "alpha": alpha,
        "false_promotion_peeking": float(ever.mean()),
        "false_promotion_fixed_n": float((stat > z).mean()),
        "looks": max_samples // look_every,
    }


def _z(p: float) -> float:
    """The standard normal quantile, by bisection on erf (no scipy)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def simulate(
    rollouts: int,
    seed: int,
    slices: int = 3,
    alpha: float = 0.05,
    look_every: int = 10,
    degrade_at: int = 2000,
    horizon: int = 12000,
) -> dict[str, Any]:
    if rollouts < 1 or slices < 1 or look_every < 1:
        raise ValueError("rollouts, slices and look_every must be >= 1")
    rng = np.random.default_rng(seed)
    gates = default_gates(slices, alpha)
    max_stage = int(gates.max_duration_s)
    results = [
        run_scenario(s, gates, rollouts, rng, look_every, horizon)
        for s in scenarios(gates, degrade_at)
    ]
    naive = naive_peeking(rollouts, rng, alpha, gates.quality_margin, look_every, max_stage)
    return {
        "command": f"python -m autopilot.simulate --rollouts {rollouts} --seed {seed} "
        f"--slices {slices} --alpha {alpha} --look-every {look_every} "
        f"--degrade-at {degrade_at} --horizon {horizon}",
        "gates": {
            "quality_margin": gates.quality_margin,
            "error_margin": gates.error_margin,
            "latency_p95_ms": gates.latency_p95_ms,
            "min_samples": gates.min_samples,
            "watch_window": gates.watch_window,
            "min_dwell_s": gates.min_dwell_s,
            "max_duration_s": gates.max_duration_s,
            "alpha": gates.alpha,
            "alpha_rollback": gates.alpha_rollback,
            "slices": gates.slices,
        },
        "scenarios": results,
        "naive": naive,
    }


def _pct(x: Any) -> str:
    return "" if x is None else f"{100 * float(x):.1f}%"


def _num(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.0f}"


def table(report: dict[str, Any]) -> str:
    rows = [
        "| truth | false promotion | all good slices promoted | promoted | rolled back | gave up "
        "| median pairs (= simulated s) to promotion | to rollback | to give-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["scenarios"]:
        rows.append(
            f"| {r['scenario']} | {_pct(r.get('false_promotion'))} "
            f"| {_pct(r.get('power_all_good_slices'))} | {_pct(r['promoted'])} "
            f"| {_pct(r['rolled_back'])} | {_pct(r['gave_up'])} "
            f"| {_num(r['median_samples_to_promoted'])} "
            f"| {_num(r['median_samples_to_rolled_back'])} "
            f"| {_num(r['median_samples_to_gave_up'])} |"
        )
    lines = ["\n".join(rows), ""]
    for r in report["scenarios"]:
        if "bad_slice_rolled_back" in r:
            lines.append(
                f"- {r['scenario']}: the bad slice rolled back in "
                f"{_pct(r['bad_slice_rolled_back'])}"
                f" of rollouts; the good slices promoted in {_pct(r['good_slices_promoted'])}."
            )
        if "rolled_back_after_degrading" in r:
            lines.append(
                f"- {r['scenario']}: rolled back after degrading in "
                f"{_pct(r['rolled_back_after_degrading'])} of slices (before it: "
                f"{_pct(r['rolled_back_before_degrading'])}), a median "
                f"{_num(r['median_samples_degradation_to_rollback'])} judged pairs after."
            )
    n = report["naive"]
    lines.append(
        f"- {n['scenario']}: promotes in {_pct(n['false_promotion_peeking'])} of rollouts when "
        f"looked at every {report['gates']['max_duration_s'] / n['looks']:.0f} pairs "
        f"({n['looks']} looks), {_pct(n['false_promotion_fixed_n'])} when looked at once "
        f"(alpha {_pct(n['alpha'])})."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m autopilot.simulate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--rollouts", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--slices", type=int, default=3)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--look-every", type=int, default=10, help="judged pairs per slice per look")
    p.add_argument("--degrade-at", type=int, default=2000)
    p.add_argument("--horizon", type=int, default=12000, help="judged pairs per slice at most")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    a = p.parse_args(argv)
    try:
        start = time.perf_counter()
        report = simulate(
            a.rollouts, a.seed, a.slices, a.alpha, a.look_every, a.degrade_at, a.horizon
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["seconds"] = round(time.perf_counter() - start, 1)
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(report["command"])
        print(table(report))
        print(f"({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
