"""The simulator's Fireworks AI fine-tuning API and inference path, through Fireworks' own SDK
(``fireworks-ai``) and the openai SDK at ``/inference/v1``."""

from __future__ import annotations

import io
import math
import random
import time
from typing import TYPE_CHECKING, Any

import fireworks
import httpx
import openai
import orjson
import pytest
from fireworks import Fireworks

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator

FIREWORKS = "accounts/fireworks/models/"
BASE = FIREWORKS + "llama-v3p1-8b-instruct"
FAST = {"x-sim-ft-seconds": "0.3"}


def chat_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Where is order {i}?"},
                {"role": "assistant", "content": f"Order {i} ships tomorrow."},
            ]
        }
        for i in range(count)
    ]


def preference_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "input": {"messages": [{"role": "user", "content": f"Refund {i}?"}]},
            "preferred_output": [{"role": "assistant", "content": "Yes, within 30 days."}],
            "non_preferred_output": [{"role": "assistant", "content": "No."}],
        }
        for i in range(count)
    ]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(row) for row in rows) + b"\n"


@pytest.fixture
def fw(simulator: RunningSimulator) -> Fireworks:
    return Fireworks(
        api_key="fw-test", account_id="acme", base_url=simulator.base_url, max_retries=0
    )


def dataset(fw: Fireworks, rows: list[dict[str, Any]]) -> str:
    dataset_id = f"d{time.monotonic_ns()}"
    created = fw.datasets.create(dataset_id=dataset_id, dataset={"user_uploaded": {}})
    assert created.state == "UPLOADING"
    fw.datasets.upload(dataset_id, file=("train.jsonl", io.BytesIO(jsonl(rows))))
    ready = fw.datasets.get(dataset_id)
    assert ready.state == "READY" and ready.example_count == str(len(rows))
    assert ready.name is not None
    return ready.name


def wait(fw: Fireworks, job_id: str, dpo: bool = False, seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        job: Any = fw.dpo_jobs.get(job_id) if dpo else fw.supervised_fine_tuning_jobs.get(job_id)
        if job.state in ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            return job
        assert time.monotonic() < deadline, f"{job_id} still {job.state}"
        time.sleep(0.05)


def short(name: str | None) -> str:
    assert name is not None
    return name.rsplit("/", 1)[-1]


def metric_rows(url: str | None) -> list[dict[str, Any]]:
    assert url
    response = httpx.get(url)  # a signed URL: no key
    assert response.status_code == 200
    return [orjson.loads(line) for line in response.text.splitlines()]


def test_datasets_create_upload_list_delete(fw: Fireworks) -> None:
    name = dataset(fw, chat_rows(12))
    listed = [d.name for d in fw.datasets.list()]
    assert name in listed
    with pytest.raises(fireworks.ConflictError) as conflict:
        fw.datasets.create(dataset_id=short(name), dataset={"user_uploaded": {}})
    assert conflict.value.body == {
        "code": 6,
        "message": f'dataset "{name}" already exists',
        "details": [],
    }
    with pytest.raises(fireworks.BadRequestError) as bad_id:
        fw.datasets.create(dataset_id="9-starts-with-a-digit", dataset={"user_uploaded": {}})
    assert "start with a letter" in str(bad_id.value.body)
    fw.datasets.delete(short(name))
    with pytest.raises(fireworks.NotFoundError) as gone:
        fw.datasets.get(short(name))
    assert isinstance(gone.value.body, dict) and gone.value.body["code"] == 5


def test_a_large_file_goes_through_a_signed_url(fw: Fireworks) -> None:
    data = jsonl(chat_rows(20))
    fw.datasets.create(dataset_id="big-file", dataset={"user_uploaded": {}})
    with pytest.raises(fireworks.BadRequestError, match="upload one first"):
        fw.datasets.validate_upload("big-file", body={})
    answer = fw.datasets.get_upload_endpoint(
        "big-file", filename_to_size={"train.jsonl": str(len(data))}
    )
    url = (answer.filename_to_signed_urls or {})["train.jsonl"]
    with pytest.raises(fireworks.BadRequestError, match="has not been uploaded"):
        fw.datasets.validate_upload("big-file", body={})
    assert httpx.put(url, content=data[:-5]).status_code == 400  # not the size it was signed for
    assert httpx.put(url, content=data).status_code == 200
    fw.datasets.validate_upload("big-file", body={})
    assert fw.datasets.get("big-file").state == "READY"


def test_a_supervised_job_runs_and_its_model_answers_at_the_inference_path(
    fw: Fireworks, simulator: RunningSimulator
) -> None:
    train = dataset(fw, chat_rows(24))
    valid = dataset(fw, chat_rows(6))
    job = fw.supervised_fine_tuning_jobs.create(
        dataset=train,
        evaluation_dataset=valid,
        base_model=BASE,
        epochs=3,
        batch_size_samples=4,
        learning_rate=2e-4,
        lora_rank=16,
        output_model="support-bot",
        extra_headers=FAST,
    )
    assert job.state == "JOB_STATE_CREATING"
    assert job.output_model == "accounts/acme/models/support-bot"
    assert (job.epochs, job.lora_rank, job.learning_rate) == (3, 16, 2e-4)
    sent = [r for r in simulator.recorded() if str(r["path"]).endswith("supervisedFineTuningJobs")]
    assert isinstance(sent[-1]["body"], dict) and sent[-1]["body"]["loraRank"] == 16

    done = wait(fw, short(job.name))
    assert done.state == "JOB_STATE_COMPLETED" and done.completed_time is not None
    assert done.job_progress is not None and done.job_progress.percent == 100
    rows = metric_rows(done.metrics_file_signed_url)
    assert [row["step"] for row in rows] == list(range(1, 19))  # 24 / 4 = 6 steps x 3 epochs
    losses = [row["train_loss"] for row in rows]
    assert sum(losses[-3:]) < sum(losses[:3])
    assert any("eval_loss" in row for row in rows) and rows[-1]["epoch"] == 3.0

    model = fw.models.get("support-bot")
    assert model.kind == "HF_PEFT_ADDON" and model.state == "READY"
    assert model.peft_details is not None
    assert (model.peft_details.base_model, model.peft_details.r) == (BASE, 16)

    inference = openai.OpenAI(
        base_url=f"{simulator.base_url}/inference/v1",
        api_key="fw-test",
        max_retries=0,
        default_headers=simulator.fast,
    )
    reply = inference.chat.completions.create(
        model="accounts/acme/models/support-bot",
        messages=[{"role": "user", "content": "Where is my order?"}],
    )
    assert reply.model == "accounts/acme/models/support-bot" and reply.choices[0].message.content
    streamed = inference.chat.completions.create(
        model="accounts/acme/models/support-bot",
        messages=[{"role": "user", "content": "Where is my order?"}],
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    served = [m.id for m in inference.models.list()]
    assert "accounts/acme/models/support-bot" in served and BASE in served
    with pytest.raises(openai.NotFoundError) as unknown:
        inference.chat.completions.create(
            model="accounts/acme/models/not-trained",
            messages=[{"role": "user", "content": "hi"}],
        )
    assert unknown.value.body == {
        "object": "error",
        "type": "invalid_request_error",
        "message": "Model not found, inaccessible, and/or not deployed",
        "code": "NOT_FOUND",
    }
    keyless = httpx.post(
        f"{simulator.base_url}/inference/v1/chat/completions",
        json={"model": BASE, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert keyless.status_code == 401


def test_a_job_continues_from_a_finished_model(fw: Fireworks) -> None:
    train = dataset(fw, chat_rows(12))
    first = fw.supervised_fine_tuning_jobs.create(
        dataset=train, base_model=BASE, extra_headers={"x-sim-ft-seconds": "0"}
    )
    first_done = wait(fw, short(first.name))
    assert first_done.state == "JOB_STATE_COMPLETED"
    assert first_done.output_model == f"accounts/acme/models/{short(first.name)}"
    second = fw.supervised_fine_tuning_jobs.create(
        dataset=train,
        warm_start_from=first_done.output_model,
        extra_headers={"x-sim-ft-seconds": "0"},
    )
    assert second.warm_start_from == first_done.output_model and second.base_model is None
    assert wait(fw, short(second.name)).state == "JOB_STATE_COMPLETED"
    model = fw.models.get(short(second.name))
    assert model.peft_details is not None and model.peft_details.base_model == BASE
    with pytest.raises(fireworks.BadRequestError, match="only one of"):
        fw.supervised_fine_tuning_jobs.create(
            dataset=train, base_model=BASE, warm_start_from=first_done.output_model
        )


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"base_model": FIREWORKS + "gpt-4o-mini"}, fireworks.NotFoundError, "not found"),
        ({"base_model": FIREWORKS + "deepseek-v3"}, fireworks.BadRequestError, "not support"),
        ({"base_model": "llama"}, fireworks.BadRequestError, "expected accounts/"),
        ({"lora_rank": 12}, fireworks.BadRequestError, "invalid lora_rank 12"),
        ({"epochs": 0}, fireworks.BadRequestError, "invalid epochs"),
        ({"learning_rate": 2.0}, fireworks.BadRequestError, "invalid learningRate"),
        ({"max_context_length": 10**6}, fireworks.BadRequestError, "invalid maxContextLength"),
        ({"extra_body": {"n_epochs": 3}}, fireworks.BadRequestError, 'unknown field "n_epochs"'),
        ({"dataset": "accounts/acme/datasets/missing"}, fireworks.NotFoundError, "not found"),
        ({"dataset": "train.jsonl"}, fireworks.BadRequestError, "expected accounts/"),
    ],
)  # fmt: skip
def test_what_a_job_refuses(
    fw: Fireworks, change: dict[str, Any], error: type[Exception], words: str
) -> None:
    arguments: dict[str, Any] = {"dataset": dataset(fw, chat_rows(10)), "base_model": BASE}
    arguments.update(change)
    with pytest.raises(error) as refused:
        fw.supervised_fine_tuning_jobs.create(**arguments)
    assert isinstance(refused.value, fireworks.APIStatusError)
    body = refused.value.body
    assert isinstance(body, dict) and set(body) == {"code", "message", "details"}
    assert words in body["message"]


def test_a_dataset_still_uploading_is_refused(fw: Fireworks) -> None:
    fw.datasets.create(dataset_id="not-yet", dataset={"user_uploaded": {}})
    with pytest.raises(fireworks.BadRequestError, match="is not READY"):
        fw.supervised_fine_tuning_jobs.create(
            dataset="accounts/acme/datasets/not-yet", base_model=BASE
        )


def test_bad_data_fails_the_job_after_validation(fw: Fireworks) -> None:
    few = fw.supervised_fine_tuning_jobs.create(
        dataset=dataset(fw, chat_rows(3)), base_model=BASE, extra_headers=FAST
    )
    failed = wait(fw, short(few.name))
    assert failed.state == "JOB_STATE_FAILED" and failed.status is not None
    assert failed.status.code == "INVALID_ARGUMENT"
    assert "at least 10 examples" in (failed.status.message or "")
    chat_as_dpo = fw.dpo_jobs.create(
        dataset=dataset(fw, chat_rows(12)), training_config={"base_model": BASE}
    )
    assert wait(fw, short(chat_as_dpo.name), dpo=True).state == "JOB_STATE_FAILED"


def test_cancel_delete_and_unknown_jobs(fw: Fireworks) -> None:
    job = fw.supervised_fine_tuning_jobs.create(
        dataset=dataset(fw, chat_rows(10)),
        base_model=BASE,
        extra_headers={"x-sim-ft-seconds": "60"},
    )
    job_id = short(job.name)
    assert fw.supervised_fine_tuning_jobs.cancel(job_id, body={}) == {}
    cancelled = fw.supervised_fine_tuning_jobs.get(job_id)
    assert cancelled.state == "JOB_STATE_CANCELLED" and cancelled.status is not None
    assert cancelled.status.code == "CANCELLED"
    with pytest.raises(fireworks.BadRequestError, match="already JOB_STATE_CANCELLED"):
        fw.supervised_fine_tuning_jobs.cancel(job_id, body={})
    assert job_id in [short(j.name) for j in fw.supervised_fine_tuning_jobs.list()]
    fw.supervised_fine_tuning_jobs.delete(job_id)
    with pytest.raises(fireworks.NotFoundError):
        fw.supervised_fine_tuning_jobs.get(job_id)
    with pytest.raises(fireworks.NotFoundError):
        fw.dpo_jobs.get(job_id)
    other = Fireworks(api_key="k", account_id="other", base_url=fw.base_url, max_retries=0)
    assert other.supervised_fine_tuning_jobs.list().supervised_fine_tuning_jobs == []


def test_a_dpo_job_reports_a_preference_loss(fw: Fireworks) -> None:
    job = fw.dpo_jobs.create(
        dataset=dataset(fw, preference_rows(16)),
        training_config={"base_model": BASE, "epochs": 2, "batch_size_samples": 2},
        loss_config={"method": "DPO", "dpo": {"beta": 0.1}},
        extra_headers=FAST,
    )
    assert job.training_config is not None and job.training_config.epochs == 2
    done = wait(fw, short(job.name), dpo=True)
    assert done.state == "JOB_STATE_COMPLETED"
    rows = metric_rows(fw.dpo_jobs.get_metrics_file_endpoint(short(job.name)).signed_url)
    assert len(rows) == 16  # 16 pairs, 2 a batch, 2 epochs
    losses = [row["train_loss"] for row in rows]
    assert max(losses) < 2 * math.log(2)  # a preference loss: about ln 2 at the start, then less
    assert sum(losses[-4:]) < sum(losses[:4])
    newest = fw.dpo_jobs.list().dpo_jobs[0]
    assert short(newest.name) == short(job.name)
    with pytest.raises(fireworks.BadRequestError, match="beta"):
        fw.dpo_jobs.create(
            dataset=done.dataset,
            training_config={"base_model": BASE},
            loss_config={"method": "DPO", "dpo": {"beta": 0.7}},
        )


def test_keys_paths_and_bodies_are_refused_in_fireworks_shape(simulator: RunningSimulator) -> None:
    url = f"{simulator.base_url}/v1/accounts/acme"
    keyless = httpx.get(f"{url}/supervisedFineTuningJobs")
    assert keyless.status_code == 401 and keyless.json()["code"] == 16
    headers = {"authorization": "Bearer fw-test"}
    for method, path, body in [
        ("POST", "/datasets", b"{not json"),
        ("POST", "/datasets", b"[1, 2]"),
        ("POST", "/supervisedFineTuningJobs", b'{"dataset": 5}'),
        ("POST", "/dpoJobs", b'{"trainingConfig": {"loraRank": "many"}}'),
        ("GET", "/somethingElse", b""),
        ("POST", "/datasets/nope:explode", b"{}"),
        ("PATCH", "/supervisedFineTuningJobs/x:cancel", b"{}"),
    ]:
        answer = httpx.request(method, url + path, content=body, headers=headers)
        assert 400 <= answer.status_code < 500, (path, answer.status_code)
        shape = answer.json()
        assert set(shape) == {"code", "message", "details"}, (path, shape)


ODD: list[Any] = [None, -1, 0, 2**63, 1e308, "x", "", "12", [], {}, True, [1], {"a": 1}, 0.5]
FUZZ_FIELDS = {
    "/supervisedFineTuningJobs": [
        "dataset",
        "baseModel",
        "epochs",
        "learningRate",
        "loraRank",
        "batchSize",
        "batchSizeSamples",
        "maxContextLength",
        "outputModel",
        "evaluationDataset",
        "warmStartFrom",
        "displayName",
    ],
    "/dpoJobs": ["dataset", "trainingConfig", "lossConfig", "displayName"],
    "/datasets": ["datasetId", "dataset"],
    "/datasets/fuzz:getUploadEndpoint": ["filenameToSize"],
}
TRAINING_FIELDS = ["baseModel", "epochs", "loraRank", "learningRate", "outputModel"]


def test_odd_bodies_are_refused_in_fireworks_shape_never_a_5xx(
    fw: Fireworks, simulator: RunningSimulator
) -> None:
    """A seeded fuzz: ~300 job, dataset and upload bodies with odd values, broken JSON, and
    odd chat calls at the inference path; no answer of 500 or more, every refusal in shape."""
    name = dataset(fw, chat_rows(12))
    fw.datasets.create(dataset_id="fuzz", dataset={"user_uploaded": {}})
    valid: dict[str, dict[str, Any]] = {
        "/supervisedFineTuningJobs": {"dataset": name, "baseModel": BASE},
        "/dpoJobs": {"dataset": name, "trainingConfig": {"baseModel": BASE}},
        "/datasets": {"datasetId": "fz", "dataset": {"userUploaded": {}}},
        "/datasets/fuzz:getUploadEndpoint": {"filenameToSize": {"a.jsonl": 10}},
    }
    rng = random.Random(20_261_205)
    headers = {"authorization": "Bearer fw-test", "x-sim-ft-seconds": "0", **simulator.fast}
    url = f"{simulator.base_url}/v1/accounts/acme"
    with httpx.Client(headers=headers) as http:
        for case in range(300):
            path = rng.choice(list(valid))
            body: Any = orjson.loads(orjson.dumps(valid[path]))
            for _ in range(rng.randint(1, 3)):
                key, value = rng.choice(FUZZ_FIELDS[path]), rng.choice(ODD)
                if key == "trainingConfig" and isinstance(body.get(key), dict):
                    body[key][rng.choice(TRAINING_FIELDS)] = value
                elif key == "lossConfig":
                    body[key] = {"method": rng.choice(["DPO", "X", 3]), "dpo": {"beta": value}}
                else:
                    body[key] = value
            if path == "/datasets" and body.get("datasetId") == "fz":
                body["datasetId"] = f"fz{case}"
            raw = orjson.dumps(body) if case % 10 else rng.choice([b"{", b"\xff", b"[]", b"null"])
            answer = http.post(url + path, content=raw)
            assert answer.status_code < 500, (path, body, answer.text)
            if answer.status_code >= 400:
                assert set(answer.json()) == {"code", "message", "details"}, answer.text
        for _ in range(40):
            chat = {
                "model": rng.choice([*ODD, BASE]),
                "messages": rng.choice([[{"role": "user", "content": "hi"}], None, "x", [{}]]),
            }
            answer = http.post(f"{simulator.base_url}/inference/v1/chat/completions", json=chat)
            assert answer.status_code < 500, (chat, answer.text)
        broken = http.post(f"{url}/datasets/fuzz:upload", content=b"--x\r\nnot multipart")
        assert broken.status_code == 400 and broken.json()["code"] == 3
    assert fw.datasets.get(short(name)).state == "READY"  # and the service still answers
