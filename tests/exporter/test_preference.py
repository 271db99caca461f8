"""Preference (DPO) rows from feedback pairs and from shadow pairs."""

from __future__ import annotations

from pathlib import Path

from exporter.pair_judge import JudgeSettings, PairJudge
from exporter.validate import check_preference_row
from tests.exporter.conftest import GATEWAY_KEY, Captured
from tests.exporter.factory import chat_call, questions, store_calls
from tests.exporter.helpers import export_pairs, read_rows


def test_feedback_pairs_prefer_the_better_rated_answer(tmp_path: Path) -> None:
    asked = questions(12, seed=5)
    rows, feedback = [], []
    for i, text in enumerate(asked):
        good = chat_call(text, f"Helpful answer {i}: open Settings.")
        bad = chat_call(text, f"Unhelpful answer {i}.")
        rows += [good, bad]
        feedback += [(good["id"], 1.0), (bad["id"], -1.0 if i < 10 else 0.8)]
    lonely = chat_call("Only one answer", "ok")
    rows.append(lonely)
    feedback.append((lonely["id"], 1.0))
    url = store_calls(tmp_path / "c.db", rows, feedback)
    result = export_pairs(url, tmp_path / "out", "feedback")
    written = read_rows(tmp_path / "out" / "train.jsonl", tmp_path / "out" / "valid.jsonl")
    assert len(written) == 10  # two pairs are within the 0.5 margin, one call has no pair
    for row in written:
        assert check_preference_row(row) == set()
        assert row["preferred_output"][0]["content"].startswith("Helpful")
        assert row["non_preferred_output"][0]["content"].startswith("Unhelpful")
        assert row["input"]["messages"][-1]["role"] == "user"
    assert result.report["format"] == "preference"


def test_shadow_pairs_use_the_feedback_on_both_calls(tmp_path: Path) -> None:
    rows, feedback = [], []
    for i, text in enumerate(questions(11, seed=6)):
        primary = chat_call(text, f"Teacher answer {i}.")
        shadow = chat_call(text, f"Student answer {i}.", variant="student", shadow_of=primary["id"])
        rows += [primary, shadow]
        feedback += [(primary["id"], 1.0), (shadow["id"], 0.0 if i else 1.0)]
    url = store_calls(tmp_path / "c.db", rows, feedback)
    result = export_pairs(url, tmp_path / "out", "shadow")
    written = read_rows(tmp_path / "out" / "train.jsonl", tmp_path / "out" / "valid.jsonl")
    assert len(written) == 10
    assert all(r["preferred_output"][0]["content"].startswith("Teacher") for r in written)
    assert result.report["dropped"] == {"scores too close": 1}


def test_shadow_pairs_judged_through_the_gateway(captured: Captured, tmp_path: Path) -> None:
    rows = []
    for i, text in enumerate(questions(24, seed=8)):
        primary = chat_call(text, f"Teacher answer {i}: open Settings, then Billing.")
        shadow = chat_call(text, f"Student {i}.", variant="student", shadow_of=primary["id"])
        rows += [primary, shadow]
    url = store_calls(tmp_path / "c.db", rows)  # no feedback at all
    judge = PairJudge(JudgeSettings(captured.loop.gateway.url, GATEWAY_KEY, "judge"))
    result = export_pairs(url, tmp_path / "out", "shadow", judge=judge)
    written = read_rows(tmp_path / "out" / "train.jsonl", tmp_path / "out" / "valid.jsonl")
    ties = result.report["dropped"].get("judged a tie", 0)
    assert len(written) + ties == 24 and written
    assert set(result.report["dropped"]) <= {"judged a tie"}
    for row in written:
        assert check_preference_row(row) == set()
        answers = {
            row["preferred_output"][0]["content"][:7],
            row["non_preferred_output"][0]["content"][:7],
        }
        assert answers == {"Teacher", "Student"}


def test_preference_files_fine_tune_with_the_dpo_method(captured: Captured, tmp_path: Path) -> None:
    from exporter.cli import main

    rows, feedback = [], []
    for i, text in enumerate(questions(30, seed=9)):
        good, bad = chat_call(text, f"Good {i}."), chat_call(text, f"Bad {i}.")
        rows += [good, bad]
        feedback += [(good["id"], 1.0), (bad["id"], -1.0)]
    url = store_calls(tmp_path / "c.db", rows, feedback)
    export_pairs(url, tmp_path / "out", "feedback")
    api = ["--api-base", f"{captured.loop.simulator.url}/v1", "--api-key", "sk"]
    fast = ["--header", "x-sim-ft-seconds:0", "--poll", "0.05"]
    assert main(["finetune", str(tmp_path / "out"), *api, *fast]) == 0
    job_dir = next((tmp_path / "out" / "jobs").iterdir())
    job = (job_dir / "job.json").read_text()
    assert '"type": "dpo"' in job and '"status": "succeeded"' in job
