"""The proof by simulation, asserted at a fixed seed: the false promotion rate stays within alpha
under continuous monitoring, the power is high, and a peeked fixed-sample test does not hold."""

from __future__ import annotations

import json
from typing import Any

import pytest

from autopilot.simulate import main, simulate

ROLLOUTS = 300  # 900 slices per scenario; 0 false promotions bounds the rate below 1% (95%)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return simulate(rollouts=ROLLOUTS, seed=1, slices=3, alpha=0.05, look_every=10)


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["scenario"]: r for r in report["scenarios"]}


def test_false_promotions_stay_within_alpha(report: dict[str, Any]) -> None:
    r = rows(report)
    for name in (
        "worse by delta (quality)",
        "worse by margin (errors)",
        "worse on one slice",
        "degrading half way",
    ):
        assert r[name]["rollouts"] == ROLLOUTS
        assert r[name]["false_promotion"] <= 0.05, (name, r[name])


def test_equal_and_better_candidates_are_promoted(report: dict[str, Any]) -> None:
    r = rows(report)
    assert r["equal (A/A)"]["power_all_good_slices"] >= 0.9
    assert r["equal (A/A)"]["rolled_back"] <= 0.05  # no false regression in an A/A rollout
    assert r["better"]["power_all_good_slices"] >= 0.95
    # the better candidate is decided sooner than the equal one
    better, equal = r["better"], r["equal (A/A)"]
    assert better["median_samples_to_promoted"] < equal["median_samples_to_promoted"]


def test_a_slice_worse_is_kept_off_while_the_others_advance(report: dict[str, Any]) -> None:
    one = rows(report)["worse on one slice"]
    assert one["bad_slice_rolled_back"] >= 0.9
    assert one["good_slices_promoted"] >= 0.9


def test_a_candidate_that_degrades_is_rolled_back_or_stopped(report: dict[str, Any]) -> None:
    d = rows(report)["degrading half way"]
    assert d["rolled_back_before_degrading"] <= 0.05
    assert d["rolled_back_after_degrading"] >= 0.75
    assert d["promoted"] <= 0.05


def test_a_fixed_sample_test_looked_at_continuously_exceeds_alpha(report: dict[str, Any]) -> None:
    n = report["naive"]
    assert n["false_promotion_peeking"] > 4 * 0.05
    assert n["false_promotion_fixed_n"] <= 0.1  # looked at once it is about alpha


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rollouts", "5", "--seed", "2", "--json", "--horizon", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["command"].startswith("python -m autopilot.simulate --rollouts 5 --seed 2")
    assert len(out["scenarios"]) == 6
    assert main(["--rollouts", "0"]) == 2
    assert "rollouts" in capsys.readouterr().err
