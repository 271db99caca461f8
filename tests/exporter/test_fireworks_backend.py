"""``--backend fireworks`` end to end through real processes: the export and ``gateway
finetune`` run as the CLI does, Fireworks' SDK talks to the simulator, and the student then
answers at Fireworks' inference path, directly and routed by a gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from exporter.finetune.fireworks_api import FireworksBackend
from exporter.finetune.fireworks_reports import metrics_from_jsonl
from tests.exporter.factory import chat_call, questions, store_calls
from tests.processes import Running, start_gateway, start_simulator

BASE = "accounts/fireworks/models/llama-v3p1-8b-instruct"
ENV = {"FIREWORKS_API_KEY": "fw-test", "FIREWORKS_ACCOUNT_ID": "acme"}
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Setup:
    simulator: Running
    chat: Path
    """A chat export (train.jsonl, valid.jsonl, report.json)."""
    pairs: Path
    """A preference (DPO) export."""
    workdir: Path


def gateway(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    """``gateway ARGS`` as its own process, with the Fireworks variables of ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FIREWORKS_", "OPENAI_"))}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**clean, **(ENV if env is None else env)},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("fireworks")
    simulator = start_simulator(workdir)
    rows, feedback = [], []
    for i, text in enumerate(questions(40, seed=13)):
        rows.append(chat_call(text, f"Answer {i}: open Settings, then {text.split()[-1]}."))
    for i, text in enumerate(questions(24, seed=14)):
        good, bad = chat_call(text, f"Good {i}: step by step."), chat_call(text, f"Bad {i}.")
        rows += [good, bad]
        feedback += [(good["id"], 1.0), (bad["id"], -1.0)]
    url = store_calls(workdir / "capture.db", rows, feedback)
    chat, pairs = workdir / "chat", workdir / "pairs"
    selection = ["--database-url", url, "--route", "support", "--variant", "teacher"]
    exported = gateway("export", *selection, "--out", str(chat))
    assert exported.returncode == 0, exported.stderr
    exported = gateway("export", *selection, "--format", "dpo", "--out", str(pairs))
    assert exported.returncode == 0, exported.stderr
    try:
        yield Setup(simulator, chat, pairs, workdir)
    finally:
        simulator.stop()


def service(setup: Setup, seconds: float = 0.5) -> list[str]:
    return [
        "--backend",
        "fireworks",
        "--api-base",
        setup.simulator.url,
        "--header",
        f"x-sim-ft-seconds:{seconds}",
    ]


def recorded(setup: Setup, path_end: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = httpx.get(f"{setup.simulator.url}/_sim/requests").json()
    return [e for e in entries if str(e["path"]).endswith(path_end) and e["method"] == "POST"]


def job_record(directory: Path) -> dict[str, Any]:
    job: dict[str, Any] = orjson.loads((directory / "job.json").read_bytes())["job"]
    return job


def test_export_finetune_status_and_the_student_answers(setup: Setup) -> None:
    command = ["finetune", str(setup.chat), "--base", BASE, "--lora-r", "16", "--suffix", "Support"]
    done = gateway(*command, *service(setup), "--poll", "0.1")
    assert done.returncode == 0, done.stderr
    assert "Step " in done.stdout and "training loss=" in done.stdout

    sent = recorded(setup, "/supervisedFineTuningJobs")[-1]["body"]
    report = orjson.loads((setup.chat / "report.json").read_bytes())["hyperparameters"]
    assert sent["baseModel"] == BASE and sent["loraRank"] == 16
    assert sent["epochs"] == report["n_epochs"]
    assert sent["batchSizeSamples"] == report["batch_size"]
    assert sent["dataset"].startswith("accounts/acme/datasets/gateway-train-")
    assert sent["evaluationDataset"].startswith("accounts/acme/datasets/gateway-valid-")
    assert sent["outputModel"].startswith("support-")

    (directory,) = (setup.chat / "jobs").iterdir()
    for name in ("job.json", "events.jsonl", "metrics.csv", "summary.json", "READING.txt"):
        assert (directory / name).is_file(), name
    assert (directory / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    job = job_record(directory)
    model = job["fine_tuned_model"]
    assert model == f"accounts/acme/models/{sent['outputModel']}"
    assert job["state"] == "JOB_STATE_COMPLETED" and job["name"].endswith(directory.name)
    summary = orjson.loads((directory / "summary.json").read_bytes())
    assert summary["status"] == "succeeded" and summary["fine_tuned_model"] == model
    assert summary["train_loss_final"] < summary["train_loss_first"]
    assert "valid_loss_final" in summary
    events = [orjson.loads(line) for line in (directory / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["type"] == "metrics"]
    assert steps and steps[-1]["data"]["step"] == steps[-1]["data"]["total_steps"]
    assert events[-1]["message"] == f"New fine-tuned model: {model}"
    assert len((directory / "metrics.csv").read_text().splitlines()) == len(steps) + 1

    status = gateway(
        "finetune", "status", directory.name, "--dir", str(setup.chat), "--json", *service(setup)
    )
    assert status.returncode == 0, status.stderr
    shown = orjson.loads(status.stdout)
    assert shown["job"]["fine_tuned_model"] == model and shown["summary"]["status"] == "succeeded"
    listed = gateway("finetune", "list", *service(setup))
    assert listed.returncode == 0 and f"{directory.name}  succeeded" in listed.stdout

    # Fireworks' OpenAI-compatible path answers to the model's name...
    inference = openai.OpenAI(
        base_url=f"{setup.simulator.url}/inference/v1", api_key="fw-test", max_retries=0
    )
    reply = inference.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Where is my invoice?"}]
    )
    assert reply.model == model and reply.choices[0].message.content
    # ... and a gateway routes the student there like any OpenAI-format provider.
    config = {
        "auth": {"keys": [{"name": "app", "key": "sk-app"}]},
        "providers": {
            "fireworks": {
                "base_url": f"{setup.simulator.url}/inference/v1",
                "api_key": "fw-test",
            }
        },
        "routes": {"support": {"variants": {"student": {"provider": "fireworks", "model": model}}}},
    }
    running = start_gateway(setup.workdir, config)
    try:
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="sk-app", max_retries=0)
        routed = client.chat.completions.with_raw_response.create(
            model="support", messages=[{"role": "user", "content": "Where is my invoice?"}]
        )
        assert routed.parse().choices[0].message.content
    finally:
        running.stop()
    last = httpx.get(f"{setup.simulator.url}/_sim/requests").json()[-1]
    assert last["path"] == "/inference/v1/chat/completions" and last["body"]["model"] == model


def test_a_job_continues_from_the_previous_student(setup: Setup) -> None:
    first = gateway(
        "finetune", str(setup.chat), "--base", BASE, *service(setup, 0), "--poll", "0.05"
    )
    assert first.returncode == 0, first.stderr
    previous = max((setup.chat / "jobs").iterdir(), key=lambda p: p.stat().st_mtime)
    model = job_record(previous)["fine_tuned_model"]
    command = ["finetune", str(setup.chat), "--base", BASE, "--from", previous.name]
    second = gateway(*command, *service(setup, 0), "--poll", "0.05")
    assert second.returncode == 0, second.stderr
    sent = recorded(setup, "/supervisedFineTuningJobs")[-1]["body"]
    assert sent["warmStartFrom"] == model and "baseModel" not in sent
    assert f"continuing from {model}" in second.stdout
    assert f"succeeded        {BASE} -> accounts/acme/models/" in second.stdout  # its base


def test_a_preference_export_trains_with_dpo(setup: Setup) -> None:
    command = ["finetune", str(setup.pairs), "--base", BASE, "--dpo-beta", "0.2"]
    done = gateway(*command, *service(setup), "--poll", "0.1")
    assert done.returncode == 0, done.stderr
    sent = recorded(setup, "/dpoJobs")[-1]["body"]
    assert sent["lossConfig"] == {"method": "DPO", "dpo": {"beta": 0.2}}
    assert sent["trainingConfig"]["baseModel"] == BASE
    (directory,) = (setup.pairs / "jobs").iterdir()
    job = job_record(directory)
    assert "/dpoJobs/" in job["name"] and job["fine_tuned_model"].startswith("accounts/acme/")
    assert (directory / "loss.png").is_file()
    summary = orjson.loads((directory / "summary.json").read_bytes())
    assert summary["train_loss_final"] < summary["train_loss_first"] < 1.0


def test_cancel(setup: Setup) -> None:
    started = gateway(
        "finetune", str(setup.chat), "--base", BASE, "--no-follow", *service(setup, 120)
    )
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.split("started ", 1)[1].split(":", 1)[0]
    cancelled = gateway("finetune", "cancel", job_id, *service(setup))
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"{job_id}  cancelled" in cancelled.stdout
    status = gateway("finetune", "status", job_id, "--dir", str(setup.chat), *service(setup))
    assert status.returncode == 0 and "cancelled" in status.stdout
    events = (setup.chat / "jobs" / job_id / "events.jsonl").read_text()
    assert "JOB_STATE_CANCELLED: cancelled by the user" in events
    again = gateway("finetune", "cancel", job_id, *service(setup))
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert "already JOB_STATE_CANCELLED" in again.stderr


def one_line(result: Any) -> str:
    assert result.stdout.count("Traceback") == 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line: str = lines[0]
    return line


def test_an_unknown_base_model_is_one_line_naming_the_fix(setup: Setup) -> None:
    jobs, datasets = (len(recorded(setup, p)) for p in ("/supervisedFineTuningJobs", "/datasets"))
    result = gateway("finetune", str(setup.chat), "--base", "gpt-4o-mini", *service(setup))
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith("gateway: --base gpt-4o-mini: Fireworks has no model ")
    assert "give a base model it can fine-tune, such as " + BASE in line
    untunable = gateway("finetune", str(setup.chat), "--base", "deepseek-v3", *service(setup))
    assert "Fireworks cannot fine-tune accounts/fireworks/models/deepseek-v3" in one_line(untunable)
    # Refused before anything was sent: no dataset left behind in the account, no job.
    assert len(recorded(setup, "/supervisedFineTuningJobs")) == jobs
    assert len(recorded(setup, "/datasets")) == datasets


def test_missing_key_or_account_is_one_line_naming_the_variable(setup: Setup) -> None:
    before = len(recorded(setup, "/datasets"))
    no_key = gateway(
        "finetune",
        str(setup.chat),
        "--base",
        BASE,
        *service(setup),
        env={"FIREWORKS_ACCOUNT_ID": "acme"},
    )
    assert no_key.returncode == 1
    assert (
        one_line(no_key)
        == "gateway: no Fireworks API key: set FIREWORKS_API_KEY (or give --api-key)"
    )
    no_account = gateway("finetune", "list", *service(setup), env={"FIREWORKS_API_KEY": "k"})
    assert no_account.returncode == 1 and "FIREWORKS_ACCOUNT_ID" in one_line(no_account)
    assert len(recorded(setup, "/datasets")) == before  # nothing was sent
    flags = gateway(
        "finetune", "list", *service(setup), "--api-key", "k", "--account", "acme", env={}
    )
    assert flags.returncode == 0, flags.stderr


def test_options_fireworks_does_not_take_are_refused(setup: Setup) -> None:
    full = gateway(
        "finetune", str(setup.chat), "--base", BASE, "--training", "full", *service(setup)
    )
    assert full.returncode == 2 and "LoRA" in one_line(full)
    alpha = gateway(
        "finetune", str(setup.chat), "--base", BASE, "--lora-alpha", "32", *service(setup)
    )
    assert alpha.returncode == 2
    assert one_line(alpha) == "gateway: --lora-alpha: the fireworks backend does not take it"
    rank = gateway("finetune", str(setup.chat), "--base", BASE, "--lora-r", "5", *service(setup))
    assert rank.returncode == 1 and "invalid lora_rank 5" in one_line(rank)
    beta = gateway(
        "finetune", str(setup.chat), "--base", BASE, "--dpo-beta", "0.1", *service(setup)
    )
    assert beta.returncode == 2 and "--dpo-beta" in one_line(beta)


def test_a_large_file_is_uploaded_through_a_signed_url(setup: Setup) -> None:
    backend = FireworksBackend(
        setup.simulator.url, "fw-test", account="acme", single_upload_bytes=1024
    )
    train = setup.chat / "train.jsonl"
    assert train.stat().st_size > 1024
    name = backend.upload(train)
    assert name.startswith("accounts/acme/datasets/gateway-train-")
    assert recorded(setup, ":getUploadEndpoint") and recorded(setup, ":validateUpload")
    dataset = httpx.get(
        f"{setup.simulator.url}/v1/{name}", headers={"authorization": "Bearer fw-test"}
    ).json()
    examples = sum(1 for line in train.read_text().splitlines() if line.strip())
    assert dataset["state"] == "READY" and dataset["exampleCount"] == str(examples)


def test_metrics_files_under_other_names() -> None:
    text = "\n".join(
        [
            '{"step": 1, "loss": 1.5}',
            '{"step": 2, "train/loss": 1.1}',
            '{"step": 2, "eval/loss": 1.2}',
            "not json",
            '{"epoch": 1}',
            '{"global_step": 3, "training_loss": 0.9, "valid_loss": 1.0}',
        ]
    )
    points = metrics_from_jsonl(text)
    assert [(p.step, p.train_loss, p.valid_loss) for p in points] == [
        (1, 1.5, None),
        (2, 1.1, 1.2),
        (3, 0.9, 1.0),
    ]
