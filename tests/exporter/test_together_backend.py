"""``gateway finetune --backend together`` end to end: a real export of captured traffic,
Together's SDK against the simulator's Together API, the job's records and loss curves, and the
student answering routed calls through a gateway whose provider is Together's endpoint."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import together

from exporter.cli import main
from exporter.finetune.together_api import TogetherBackend, job_from, metrics_from_rows
from tests.exporter.conftest import Captured
from tests.exporter.factory import chat_call, questions, store_calls
from tests.exporter.helpers import export_pairs
from tests.processes import start_gateway

BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
KEY = "tg-sim-key"
RECORDS = ("job.json", "events.jsonl", "metrics.csv", "summary.json", "loss.png", "READING.txt")


@pytest.fixture(scope="module")
def exported(captured: Captured, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real export of the captured teacher traffic, copied by each test that trains."""
    data = tmp_path_factory.mktemp("together-export") / "data"
    database = ["--database-url", captured.loop.database_url]
    command = ["export", *database, "--route", "support", "--variant", "teacher"]
    assert main([*command, "--out", str(data)]) == 0
    assert (data / "valid.jsonl").stat().st_size > 0
    return data


@pytest.fixture(autouse=True)
def together_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    monkeypatch.delenv("TOGETHER_BASE_URL", raising=False)


def copy_of(exported: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(exported, data)
    return data


def service(captured: Captured, seconds: float = 0.5) -> list[str]:
    return [
        "--backend",
        "together",
        "--api-base",
        f"{captured.loop.simulator.url}/together/v1",
        "--header",
        f"x-sim-ft-seconds:{seconds}",
        "--poll",
        "0.1",
    ]


def recorded(captured: Captured) -> list[tuple[str, str]]:
    entries = httpx.get(f"{captured.loop.simulator.url}/_sim/requests").json()
    return [(e["method"], e["path"]) for e in entries if e["path"].startswith("/together")]


def forget_requests(captured: Captured) -> None:
    httpx.delete(f"{captured.loop.simulator.url}/_sim/requests")


def one_job(data: Path) -> Path:
    jobs = list((data / "jobs").iterdir())
    assert len(jobs) == 1, jobs
    return jobs[0]


def test_export_train_status_and_the_student_answers_routed_calls(
    captured: Captured, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy_of(exported, tmp_path)
    forget_requests(captured)
    options = ["--base", BASE, "--suffix", "support", "--lora-r", "8", "--learning-rate", "2e-5"]
    assert main(["finetune", str(data), *options, *service(captured)]) == 0
    out = capsys.readouterr().out
    job_dir = one_job(data)
    for name in RECORDS:
        assert (job_dir / name).is_file(), name
    assert (job_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Through the SDK's own flow: presigned uploads, the server's checks, limits, price, job.
    calls = recorded(captured)
    assert calls[:6] == [
        ("GET", "/together/v1/fine-tunes/models/limits"),
        ("POST", "/together/v1/files"),
        ("PUT", calls[2][1]),
        ("POST", calls[3][1]),
        ("GET", calls[4][1]),
        ("POST", "/together/v1/files"),
    ]
    assert calls[2][1].startswith("/together/_storage/file-") and calls[3][1].endswith(
        "/preprocess"
    )
    assert ("POST", "/together/v1/fine-tunes/estimate-price") in calls
    assert ("POST", "/together/v1/fine-tunes") in calls

    record = orjson.loads((job_dir / "job.json").read_bytes())
    job = record["job"]
    model = job["model_output_name"]
    assert record["backend"] == "together" and job["status"] == "completed"
    assert model.startswith("sim-user/Meta-Llama-3.1-8B-Instruct-Reference-support-")
    assert job["fine_tuned_model"] == model and job_dir.name == job["id"]
    assert job["training_type"]["type"] == "Lora" and job["training_type"]["lora_r"] == 8
    assert job["training_type"]["lora_alpha"] == 16 and job["learning_rate"] == 2e-5
    assert job["training_method"] == {"method": "sft", "train_on_inputs": "auto"}
    suggested = orjson.loads((data / "report.json").read_bytes())["hyperparameters"]
    assert job["n_epochs"] == min(20, suggested["n_epochs"])
    assert job["batch_size"] == max(8, suggested["batch_size"])  # Together's LoRA minimum
    assert job["n_evals"] == 10 and job["validation_file"]
    assert f"-> {model}" in out and "Epoch completed" in out

    summary = orjson.loads((job_dir / "summary.json").read_bytes())
    assert summary["status"] == "succeeded" and summary["fine_tuned_model"] == model
    assert summary["train_loss_final"] < summary["train_loss_first"]
    assert "valid_loss_final" in summary
    metrics = (job_dir / "metrics.csv").read_text().splitlines()
    assert len(metrics) - 1 == job["total_steps"]
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    assert events[0]["type"] == "job_pending" and events[-1]["type"] == "job_complete"
    assert any(e["type"] == "epoch_complete" and e["data"]["step"] for e in events)

    capsys.readouterr()
    status = ["finetune", "status", job_dir.name, "--dir", str(data), "--json"]
    assert main([*status, *service(captured)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["job"]["fine_tuned_model"] == model
    assert shown["summary"]["train_loss_final"] == summary["train_loss_final"]
    assert main(["finetune", "list", *service(captured)]) == 0
    assert f"{job_dir.name}  succeeded" in capsys.readouterr().out

    # The student, by its output name, through a gateway whose provider is Together's endpoint.
    config = {
        "auth": {"keys": [{"name": "app", "key": "sk-app"}]},
        "providers": {
            "together": {"base_url": f"{captured.loop.simulator.url}/together/v1", "api_key": KEY}
        },
        "routes": {"support": {"variants": {"student": {"provider": "together", "model": model}}}},
    }
    gateway = start_gateway(tmp_path, config)
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-app", max_retries=0)
        messages: Any = [{"role": "user", "content": "Where is my order?"}]
        answer = client.chat.completions.with_raw_response.create(
            model="support", messages=messages
        )
        assert answer.headers["x-gateway-upstream-model"] == model
        assert answer.parse().choices[0].message.content
    finally:
        gateway.stop()
    direct = together.Together(
        api_key=KEY, base_url=f"{captured.loop.simulator.url}/together", max_retries=0
    )
    reply = direct.chat.completions.create(model=model, messages=messages)
    assert reply.model == model


def test_cancel_a_running_job(
    captured: Captured, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy_of(exported, tmp_path)
    assert main(["finetune", str(data), "--base", BASE, "--no-follow", *service(captured, 30)]) == 0
    job_id = one_job(data).name
    capsys.readouterr()
    assert main(["finetune", "cancel", job_id, *service(captured)]) == 0
    assert f"{job_id}  cancel_requested" in capsys.readouterr().out
    backend = TogetherBackend(f"{captured.loop.simulator.url}/together/v1")
    job = backend.get(job_id)
    for _ in range(100):
        if job.done:
            break
        time.sleep(0.05)
        job = backend.get(job_id)
    assert job.status == "cancelled" and job.fine_tuned_model is None
    status = ["finetune", "status", job_id, "--dir", str(data), "--json"]
    assert main([*status, *service(captured)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["job"]["status"] == "cancelled" and shown["summary"]["status"] == "cancelled"
    assert main(["finetune", "cancel", job_id, *service(captured)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "already cancelled" in error


def test_an_unknown_base_model_is_refused_before_any_upload(
    captured: Captured, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy_of(exported, tmp_path)
    forget_requests(captured)
    assert main(["finetune", str(data), "--base", "acme/llama-9000", *service(captured)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert error.startswith("gateway: --base acme/llama-9000: Together does not fine-tune")
    assert "give --base one of" in error and BASE in error
    assert ("POST", "/together/v1/files") not in recorded(captured)
    assert not (data / "jobs").exists()


def test_a_missing_key_names_the_variable(
    captured: Captured,
    exported: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOGETHER_API_KEY")
    data = copy_of(exported, tmp_path)
    assert main(["finetune", str(data), "--base", BASE, *service(captured)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "TOGETHER_API_KEY" in error and "--api-key" in error
    assert main(["finetune", "list", *service(captured), "--api-key", "wrong-but-given"]) == 0


def test_a_file_the_service_refuses_is_one_line_naming_the_row(
    captured: Captured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "A"}]}
        for i in range(12)
    ]
    rows[4]["messages"].insert(1, {"role": "user", "content": "and again?"})
    (data / "train.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    assert main(["finetune", str(data), "--base", BASE, *service(captured)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "Together refused the file" in error
    assert "line 5" in error and "alternate" in error


def test_preference_export_trains_with_dpo_full(
    captured: Captured, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, feedback = [], []
    for i, text in enumerate(questions(30, seed=21)):
        good, bad = chat_call(text, f"Good answer {i}: open Settings."), chat_call(text, "No.")
        rows += [good, bad]
        feedback += [(good["id"], 1.0), (bad["id"], -1.0)]
    url = store_calls(tmp_path / "pairs.db", rows, feedback)
    data = tmp_path / "data"
    assert export_pairs(url, data, "feedback").report["format"] == "preference"
    options = ["--base", BASE, "--training", "full", "--dpo-beta", "0.2", "--epochs", "2"]
    assert main(["finetune", str(data), *options, *service(captured)]) == 0
    job_dir = one_job(data)
    job = orjson.loads((job_dir / "job.json").read_bytes())["job"]
    assert job["status"] == "completed" and job["training_type"] == {"type": "Full"}
    assert job["training_method"]["method"] == "dpo" and job["training_method"]["dpo_beta"] == 0.2
    assert (job_dir / "loss.png").is_file()
    capsys.readouterr()
    chat_only = ["--base", BASE, "--dpo-beta", "0.2", *service(captured)]
    copied = tmp_path / "chat"
    copied.mkdir()
    chat_rows = [
        {"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "A"}]}
        for i in range(12)
    ]
    (copied / "train.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in chat_rows))
    assert main(["finetune", str(copied), *chat_only]) == 1
    assert "--dpo-beta" in capsys.readouterr().err


def test_continue_from_the_last_student_and_options_a_backend_does_not_take(
    captured: Captured, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy_of(exported, tmp_path)
    assert (
        main(["finetune", str(data), "--base", BASE, "--suffix", "v1", *service(captured, 0)]) == 0
    )
    first = one_job(data)
    parent = orjson.loads((first / "job.json").read_bytes())["job"]["model_output_name"]
    again = ["finetune", str(data), "--base", BASE, "--suffix", "v2", "--from", first.name]
    assert main([*again, *service(captured, 0)]) == 0
    second = next(d for d in (data / "jobs").iterdir() if d != first)
    record = orjson.loads((second / "job.json").read_bytes())
    assert record["job"]["from_checkpoint"] == parent and record["spec"]["parent"] == parent
    assert record["job"]["model"] == BASE and "-v2-" in record["job"]["model_output_name"]
    capsys.readouterr()
    assert main(["finetune", str(data), "--base", "gpt-4o-mini", "--lora-r", "8"]) == 2
    assert "--lora-r: the openai backend does not take it" in capsys.readouterr().err
    assert main(["finetune", str(data), "--base", BASE, "--training", "full"]) == 2


def test_metrics_rows_and_job_objects_read_as_the_loop_needs() -> None:
    rows: list[dict[str, Any]] = [
        {"train/loss": 1.5, "train/global_step": 1.0, "train/learning_rate": 1e-5},
        {"train/loss": 1.1, "train/global_step": 2.0},
        {"eval/loss": 1.3, "train/global_step": 2.0},
        {"train/loss": 0.9, "train/global_step": 3.0},
        {"eval/loss": "nan?", "train/global_step": 3.0},
        {"train/loss": 0.8},
    ]
    points = metrics_from_rows(rows)
    assert [(p.step, p.train_loss, p.valid_loss) for p in points] == [
        (1, 1.5, None),
        (2, 1.1, 1.3),
        (3, 0.9, None),
    ]
    raw = {
        "id": "ft-1",
        "status": "error",
        "model": BASE,
        "model_output_name": "sim-user/x",
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:10:00.000Z",
        "events": [{"level": "error", "message": "Training failed at step 3"}],
    }
    job = job_from(raw)
    assert job.status == "failed" and job.done and job.error == "Training failed at step 3"
    assert job.fine_tuned_model is None and "events" not in job.raw
    assert job.finished_at == job.created_at + 600  # type: ignore[operator]
    running = job_from({"id": "ft-2", "status": "uploading", "model_output_name": "sim-user/y"})
    assert running.status == "uploading" and not running.done and running.fine_tuned_model is None


def test_without_the_sdk_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from exporter.errors import BackendError

    monkeypatch.setitem(sys.modules, "together", None)  # as if `pip install .[hosted]` was skipped
    with pytest.raises(BackendError, match=r"pip install 'distillation-gateway\[hosted\]'"):
        TogetherBackend("http://127.0.0.1:9/together")


def test_a_job_that_fails_is_reported_with_the_services_reason(
    captured: Captured, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy_of(exported, tmp_path)
    failing = [*service(captured), "--header", "x-sim-ft-fail-at:0.5"]
    assert main(["finetune", str(data), "--base", BASE, *failing]) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "error: Training failed at step" in out
    summary = orjson.loads((one_job(data) / "summary.json").read_bytes())
    assert summary["status"] == "failed" and summary["fine_tuned_model"] is None
    assert "the loss became NaN" in summary["error"]
