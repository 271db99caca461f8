"""The simulator's files and fine-tuning API, through the openai SDK."""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator

FAST = {"x-sim-ft-seconds": "0.3"}


def jsonl(rows: list[dict[str, Any]]) -> io.BytesIO:
    data = io.BytesIO(b"\n".join(orjson.dumps(row) for row in rows) + b"\n")
    data.name = "train.jsonl"
    return data


def chat_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": f"Answer {i}."},
            ]
        }
        for i in range(count)
    ]


def wait(client: OpenAI, job_id: str, seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_files_upload_list_content_delete(client: OpenAI, simulator: RunningSimulator) -> None:
    uploaded = client.files.create(file=jsonl(chat_rows(3)), purpose="fine-tune")
    last: Any = simulator.recorded()[-1]
    assert last["path"] == "/v1/files" and last["body"]["purpose"] == "fine-tune"
    assert uploaded.id.startswith("file-") and uploaded.purpose == "fine-tune"
    assert uploaded.bytes > 0 and uploaded.filename == "train.jsonl"
    assert uploaded.id in [f.id for f in client.files.list()]
    assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes
    assert client.files.content(uploaded.id).content.startswith(b'{"messages"')
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_a_job_runs_through_its_states_and_serves_its_model(
    simulator: RunningSimulator, client: OpenAI
) -> None:
    training = client.files.create(file=jsonl(chat_rows(30)), purpose="fine-tune")
    validation = client.files.create(file=jsonl(chat_rows(5)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini",
        training_file=training.id,
        validation_file=validation.id,
        suffix="support",
        hyperparameters={"n_epochs": 2},
        extra_headers=FAST,
    )
    assert job.status == "validating_files" and job.fine_tuned_model is None
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 1
    seen: set[str] = {job.status}
    deadline = time.monotonic() + 10
    while job.status not in ("succeeded", "failed") and time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job.id)
        seen.add(job.status)
        time.sleep(0.02)
    assert job.status == "succeeded", job.error
    assert {"queued", "running"} <= seen or len(seen) >= 2
    assert job.fine_tuned_model == f"ft:gpt-4o-mini:sim-org:support:{job.id[-8:]}"
    assert job.trained_tokens and job.trained_tokens > 0 and job.result_files

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=1000))
    assert events[0].message == "The job has successfully completed"  # newest first
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 60  # 30 examples, batch 1, 2 epochs
    first: Any = metrics[-1].data
    last: Any = metrics[0].data
    assert last["train_loss"] < first["train_loss"]
    assert any(isinstance(e.data, dict) and "valid_loss" in e.data for e in metrics)
    csv = client.files.content(job.result_files[0]).content.decode()
    assert csv.startswith("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy")

    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    reply = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model == job.fine_tuned_model and reply.choices[0].message.content
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=50)]


def test_too_few_examples_fail_the_job_after_validation(client: OpenAI) -> None:
    training = client.files.create(file=jsonl(chat_rows(4)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=training.id, extra_headers=FAST
    )
    job = wait(client, job.id)
    assert job.status == "failed" and job.error is not None
    assert "at least 10 examples" in (job.error.message or "")


def test_invalid_json_fails_the_job(client: OpenAI) -> None:
    bad = io.BytesIO(b'{"messages": [}\n' * 12)
    bad.name = "bad.jsonl"
    training = client.files.create(file=bad, purpose="fine-tune")
    job = wait(
        client, client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training.id).id
    )
    assert job.status == "failed" and "Line 1" in (job.error.message if job.error else "")


def test_cancel_and_unknown_ids(client: OpenAI, simulator: RunningSimulator) -> None:
    training = client.files.create(file=jsonl(chat_rows(12)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=training.id, extra_headers={"x-sim-ft-seconds": "30"}
    )
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-missing")
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-missing")
    response = httpx.post(f"{simulator.v1}/files", data={"purpose": "fine-tune"})
    assert response.status_code == 400
