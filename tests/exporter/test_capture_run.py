"""Rows from a real capture run (gateway + simulator + openai SDK) go through the export."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from exporter.cli import main
from exporter.validate import check_chat_row
from tests.exporter.conftest import Captured


def export(captured: Captured, out: Path | None, *args: str) -> int:
    argv = ["export", "--database-url", captured.loop.database_url, "--json", *args]
    argv += ["--out", str(out)] if out is not None else ["--dry-run"]
    return main(argv)


def rows(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_teacher_traffic_becomes_valid_training_files(
    captured: Captured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(captured, tmp_path, "--route", "support", "--variant", "teacher") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["selected"] == 59  # 40 plain, 10 streamed, 6 tool calls, 3 repeats
    assert report["dropped"] == {"duplicate (exact)": 3}
    train, valid = rows(tmp_path / "train.jsonl"), rows(tmp_path / "valid.jsonl")
    assert len(train) + len(valid) == 56 == report["kept"]
    assert valid, "a 10% split of 56 prompts has validation rows"
    for row in train + valid:
        assert check_chat_row(row) == set()
    tool_rows = [row for row in train + valid if "tools" in row]
    assert len(tool_rows) == 6
    answer = tool_rows[0]["messages"][-1]  # type: ignore[index]
    assert answer["content"] is None and answer["tool_calls"][0]["function"]["name"] == "get_order"
    texts = [row["messages"][-1]["content"] for row in train + valid if "tools" not in row]  # type: ignore[index]
    assert all(isinstance(text, str) and text for text in texts)  # streams were assembled
    assert report["billed_tokens"] > 0 and report["estimated_cost_usd"] is not None
    assert (tmp_path / "report.json").is_file() and (tmp_path / "manifest.json").is_file()


def test_min_feedback_keeps_the_well_rated_calls(
    captured: Captured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(captured, tmp_path, "--route", "support", "--min-feedback", "0.5") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["selected"] == 20


def test_leak_check_drops_what_redaction_let_through(
    captured: Captured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # route `raw` is captured with `redact: []`: the e-mail address is stored as it came
    export(captured, tmp_path, "--route", "raw")
    report = json.loads(capsys.readouterr().out)
    assert report["dropped"] == {"leak (email)": 1}
    assert report["kept"] == 1
    assert (
        "jane.doe"
        not in (tmp_path / "train.jsonl").read_text() + (tmp_path / "valid.jsonl").read_text()
    )


def test_dry_run_counts_and_writes_nothing(
    captured: Captured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(captured, None, "--route", "support") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["selected"] == 59 and report["files"] == {}
    assert list(tmp_path.iterdir()) == []


def test_exported_files_load_with_the_sdk_upload(captured: Captured, tmp_path: Path) -> None:
    import time

    import openai

    assert export(captured, tmp_path, "--route", "support") == 0
    client = openai.OpenAI(base_url=f"{captured.loop.simulator.url}/v1", api_key="sk-sim")
    with (
        (tmp_path / "train.jsonl").open("rb") as train,
        (tmp_path / "valid.jsonl").open("rb") as valid,
    ):
        training = client.files.create(file=train, purpose="fine-tune")
        validation = client.files.create(file=valid, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini",
        training_file=training.id,
        validation_file=validation.id,
        extra_headers={"x-sim-ft-seconds": "0"},
    )
    deadline = time.monotonic() + 5
    while job.status not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
