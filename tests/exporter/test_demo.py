"""``make demo`` (``exporter.demo``) end to end, against the real simulator and gateway: its
steps are numbered 1 to 7 in order, and it says what each trained-token figure counts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter import demo


def test_the_demo_numbers_its_steps_and_explains_trained_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo.demo(tmp_path / "demo", calls=120)
    out = capsys.readouterr().out
    steps = [int(n) for n in re.findall(r"^(\d+)\. ", out, re.MULTILINE)]
    assert steps == [1, 2, 3, 4, 5, 6, 7], out
    note = next(line for line in out.splitlines() if line.startswith("trained tokens:"))
    assert "train.jsonl only" in note and "the job reports" in note and "epochs" in note
    assert "validation file is not billed" in out  # the export's own line says it too
    assert "mean of the last 10% of steps" in out  # which loss figure is an average
    assert "once the dashboard issue lands" not in out
