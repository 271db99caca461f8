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
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8], out
    # the demo ends with the student's rollout running and the savings it projects
    assert "support: running  teacher -> student" in out
    projected = re.findall(r"projected at 90% of [\d,]+ calls/day: \$([\d.,]+)/day saved", out)
    assert projected and float(projected[-1].replace(",", "")) > 0, out
    note = next(line for line in out.splitlines() if line.startswith("trained tokens:"))
    assert "train.jsonl only" in note and "the job reports" in note and "epochs" in note
    assert "validation file is not billed" in out  # the export's own line says it too
    assert "mean of the last 10% of steps" in out  # which loss figure is an average
    assert "once the dashboard issue lands" not in out


def test_the_demo_with_the_local_backend_trains_serves_and_prices_the_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make demo BACKEND=local``: a LoRA adapter trained here on a tiny model built from the
    export, loaded by name into the "vllm" provider the simulator plays, priced from a
    GPU-hour, answering shadow copies, evaluated with its cost and lineage."""
    demo.demo(tmp_path / "demo", calls=80, backend="local")
    out = capsys.readouterr().out
    steps = [int(n) for n in re.findall(r"^(\d+)\. ", out, re.MULTILINE)]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8], out
    # the demo ends with the student's rollout running and the savings it projects
    assert "support: running  teacher -> student" in out
    projected = re.findall(r"projected at 90% of [\d,]+ calls/day: \$([\d.,]+)/day saved", out)
    assert projected and float(projected[-1].replace(",", "")) > 0, out
    assert "--backend local" in out and "lineage stored" in out
    assert (tmp_path / "demo" / "finetune-runs").is_dir()
    adapters = list((tmp_path / "demo" / "finetune-runs").glob("*/adapter/adapter_config.json"))
    assert len(adapters) == 1
    cost_line = next(line for line in out.splitlines() if "cost/call" in line)
    assert cost_line.count("$") == 2, cost_line  # the student is priced (from the GPU-hour)
    assert "trained by local job" in out and "(gpu_hour)" in out
