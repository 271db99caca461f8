"""A stage's gates: advance, hold, rollback and give up, with the evidence on record."""

from __future__ import annotations

import numpy as np
import pytest

from autopilot.gates import Action, SliceGates, StageGates

CONFIG = StageGates(
    quality_margin=0.05,
    error_margin=0.03,
    feedback_margin=0.1,
    feedback_range=(1.0, 5.0),
    latency_p95_ms=800.0,
    ttft_p95_ms=300.0,
    min_samples=300,
    min_dwell_s=60.0,
    max_duration_s=3600.0,
)


def feed(g: SliceGates, looks: int, wins: int, losses: int, cand_errors: int = 0) -> None:
    for _ in range(looks):
        g.add_judgements(wins, 10 - wins - losses, losses)
        g.add_calls(True, 10, cand_errors, 10 * 0.2, latency_over=0, ttft_count=10, ttft_over=0)
        g.add_calls(False, 30, 0, 30 * 1.0)
        up = g.scale_feedback([5.0] * 10)
        g.add_feedback(True, up.size, up.sum(), (up * up).sum())
        g.add_feedback(False, up.size, up.sum(), (up * up).sum())


def test_a_good_candidate_advances_only_after_the_dwell() -> None:
    g = SliceGates(CONFIG)
    feed(g, 60, wins=7, losses=1)
    assert g.decision(30.0).action == Action.HOLD
    assert "dwell 30/60 s" in g.decision(30.0).reason
    d = g.decision(120.0)
    assert d.action == Action.ADVANCE, d.reason
    rec = d.as_dict()
    assert rec["action"] == "advance"
    names = [x["name"] for x in rec["gates"]]
    assert names == ["quality", "feedback", "errors", "latency_p95", "ttft_p95"]
    assert all(x["verdict"] == "pass" for x in rec["gates"])
    assert rec["cost"]["candidate_per_call"] == pytest.approx(0.2)
    assert rec["cost"]["incumbent_per_call"] == pytest.approx(1.0)


def test_min_samples_holds_even_when_every_test_passes() -> None:
    g = SliceGates(CONFIG)
    feed(g, 25, wins=10, losses=0)
    d = g.decision(600.0)
    assert d.action == Action.HOLD
    assert "250/300 judged pairs" in d.reason


def test_a_worse_candidate_is_rolled_back_naming_the_gate() -> None:
    g = SliceGates(CONFIG)
    feed(g, 60, wins=1, losses=7)
    d = g.decision(10.0)
    assert d.action == Action.ROLLBACK
    assert d.reason == "significantly worse: quality"


def test_errors_alone_roll_back() -> None:
    g = SliceGates(CONFIG)
    feed(g, 100, wins=4, losses=4, cand_errors=2)  # 20% errors against 0%
    d = g.decision(10.0)
    assert d.action == Action.ROLLBACK
    assert "errors" in d.reason


def test_no_decision_gives_up_at_the_maximum() -> None:
    g = SliceGates(CONFIG)
    feed(g, 5, wins=4, losses=4)
    assert g.decision(100.0).action == Action.HOLD
    d = g.decision(3600.0)
    assert d.action == Action.GIVE_UP
    assert d.reason.startswith("no decision after 3600 s")


def test_a_dearer_candidate_holds() -> None:
    g = SliceGates(StageGates(min_samples=10, error_margin=None))
    for _ in range(60):
        g.add_judgements(8, 2, 0)
        g.add_calls(True, 10, 0, 10 * 2.0)
        g.add_calls(False, 10, 0, 10 * 1.0)
    d = g.decision(10.0)
    assert d.action == Action.HOLD and "cost" in d.reason


def test_slices_split_alpha_and_reset_by_mask() -> None:
    cfg = StageGates(slices=4, alpha=0.08, alpha_rollback=0.04, min_samples=10)
    assert cfg.slice_alpha == pytest.approx(0.02)
    assert cfg.slice_alpha_rollback == pytest.approx(0.01)
    g = SliceGates(cfg, (2, 4))
    wins = np.zeros((2, 4))
    wins[0, :] = 10
    for _ in range(40):
        g.add_judgements(wins, 0, 10 - wins)
        g.add_calls(True, 10, 0, 1.0)
        g.add_calls(False, 10, 0, 5.0)
    acts = g.actions(100.0)
    assert (acts[0] == Action.ADVANCE).all() and (acts[1] == Action.ROLLBACK).all()
    mask = np.zeros((2, 4), dtype=bool)
    mask[0, 0] = True
    g.reset(mask)
    acts = g.actions(100.0)
    assert acts[0, 0] == Action.HOLD and acts[0, 1] == Action.ADVANCE
    assert g.decision(100.0, (0, 0)).gates[0].n_candidate == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha_rollback": 1.0}, "alpha_rollback"),
        ({"slices": 0}, "slices"),
        ({"min_samples": 0}, "min_samples"),
        ({"min_dwell_s": 10.0, "max_duration_s": 5.0}, "max_duration_s"),
        ({"feedback_range": (5.0, 1.0)}, "feedback_range"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StageGates(**kwargs)  # type: ignore[arg-type]


def test_feedback_outside_its_range_is_refused() -> None:
    g = SliceGates(CONFIG)
    with pytest.raises(ValueError, match=r"\[1.0, 5.0\]"):
        g.scale_feedback([0.0])
