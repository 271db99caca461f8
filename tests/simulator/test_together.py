"""The simulator's Together API (/together/v1), through Together's own SDK where it has a call,
with httpx for what the SDK checks on its side before sending (so the server's checks show)."""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
import together
from together.lib.resources.files import MultipartUploadManager

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator

BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
LORA_ONLY = "google/gemma-3-12b-it"
FAST = {"x-sim-ttft-ms": "0", "x-sim-token-ms": "0"}
KEY = {"Authorization": "Bearer tg-test"}


def sdk(simulator: RunningSimulator, seconds: float = 0.0, **headers: str) -> together.Together:
    return together.Together(
        api_key="tg-test",
        base_url=simulator.base_url + "/together",
        default_headers={**FAST, "x-sim-ft-seconds": str(seconds), **headers},
        max_retries=0,
    )


def api(simulator: RunningSimulator) -> httpx.Client:
    return httpx.Client(base_url=simulator.base_url + "/together/v1", headers=KEY, timeout=10)


def chat_rows(count: int, tag: str = "") -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Question {tag}{i}: how do I reset it?"},
                {"role": "assistant", "content": f"Answer {tag}{i}: open Settings, then Reset."},
            ]
        }
        for i in range(count)
    ]


def preference_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "input": {"messages": [{"role": "user", "content": f"Question {i}?"}]},
            "preferred_output": [{"role": "assistant", "content": f"A helpful answer {i}."}],
            "non_preferred_output": [{"role": "assistant", "content": "No."}],
        }
        for i in range(count)
    ]


def write(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def upload(client: together.Together, path: Path) -> str:
    return str(client.files.upload(path, check=True).id)


def wait(client: together.Together, job_id: str, seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        job = client.fine_tuning.retrieve(job_id)
        if job.status in ("completed", "error", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"{job_id} is still {job.status}"
        time.sleep(0.05)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) >= {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# ------------------------------------------------------------------------------------ files


def test_the_sdk_upload_goes_through_a_presigned_put_and_the_server_checks(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    client = sdk(simulator)
    path = write(tmp_path / "upload-flow.jsonl", chat_rows(12, "flow"))
    httpx.delete(simulator.base_url + "/_sim/requests")
    uploaded = client.files.upload(path)
    assert uploaded.id.startswith("file-") and uploaded.processing_status == "COMPLETED"
    assert uploaded.bytes == path.stat().st_size and uploaded.file_type == "jsonl"
    calls = [(e["method"], e["path"]) for e in simulator.recorded()]
    assert calls == [
        ("POST", "/together/v1/files"),
        ("PUT", f"/together/_storage/{uploaded.id}"),
        ("POST", f"/together/v1/files/{uploaded.id}/preprocess"),
    ]
    announced = simulator.recorded()[0]["body"]
    assert announced == {
        "purpose": "fine-tune",
        "file_name": "upload-flow.jsonl",
        "file_type": "jsonl",
        "checksum": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    found = client.files.retrieve(uploaded.id)
    report = found.validation_report
    assert report is not None and report.valid and report.dataset_format == "CONVERSATION"
    assert report.nlines == 12 and not report.dataset_has_message_weights
    assert client.files.content(uploaded.id).read() == path.read_bytes()
    assert uploaded.id in [f.id for f in client.files.list().data]

    # The same file again: 409 with its id, which the SDK answers by retrieving that file.
    assert client.files.upload(path).id == uploaded.id


def test_the_storage_url_is_the_credential(simulator: RunningSimulator) -> None:
    with api(simulator) as http:
        form = {"purpose": "fine-tune", "file_name": "x.jsonl", "file_type": "jsonl"}
        started = http.post("/files", files={k: (None, v) for k, v in form.items()})
        assert started.status_code == 302
        location = started.headers["location"]
        file_id = started.headers["x-together-file-id"]
        assert location.startswith(simulator.base_url) and file_id in location
        forged = httpx.put(location.split("?")[0] + "?signature=00", content=b"{}\n")
        assert forged.status_code == 403 and error_of(forged)["code"] == "access_denied"
        early = http.post(f"/files/{file_id}/preprocess")
        assert early.status_code == 400 and "PUT it" in error_of(early)["message"]
        assert httpx.put(location, content=b'{"text": "hello"}\n').status_code == 200
        done = http.post(f"/files/{file_id}/preprocess").json()
        assert done["processing_status"] == "COMPLETED"
        assert done["validation_report"]["dataset_format"] == "GENERAL"


def test_a_file_the_server_refuses_is_reported_with_its_line(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    client = sdk(simulator)
    rows: list[Any] = chat_rows(3)
    rows[1]["messages"].insert(2, {"role": "user", "content": "and another thing"})
    bad = client.files.upload(write(tmp_path / "two-users.jsonl", rows))
    report = client.files.retrieve(bad.id).validation_report
    assert bad.processing_status == "INVALID_FORMAT"
    assert report is not None and not report.valid and report.error_type == "INVALID_FORMAT"
    assert "line 2" in str(report.error) and "alternate" in str(report.error)
    cases: list[tuple[list[Any], str]] = [
        ([{"messages": [{"role": "wizard", "content": "x"}]}], "invalid role"),
        ([{"messages": [{"role": "user", "content": "x", "weight": 2}]}], "weight must be 0 or 1"),
        ([{"text": "a", "messages": []}], "two possible formats"),
        ([{"text": "a"}, {"prompt": "p", "completion": "c"}], "one format per file"),
        ([{"messages": [{"role": "user", "content": "only a question"}]}], "no assistant"),
        ([{"unrelated": 1}], "no known format"),
    ]
    for number, (given, expected) in enumerate(cases):
        refused = client.files.upload(write(tmp_path / f"bad-{number}.jsonl", given))
        found = client.files.retrieve(refused.id).validation_report
        assert found is not None and expected in str(found.error), (given, found)
    weighted: list[Any] = chat_rows(2)
    weighted[0]["messages"][1]["weight"] = 0
    fine = client.files.retrieve(upload(client, write(tmp_path / "weighted.jsonl", weighted)))
    assert fine.validation_report is not None
    assert fine.validation_report.dataset_has_message_weights


def test_the_sdk_multipart_upload(simulator: RunningSimulator, tmp_path: Path) -> None:
    client = sdk(simulator)
    path = write(tmp_path / "parts.jsonl", chat_rows(20, "parts"))
    checksum = hashlib.sha256(path.read_bytes()).hexdigest()
    uploaded = MultipartUploadManager(client).upload("/v1/files", path, checksum, "fine-tune")
    assert uploaded.processing_status == "COMPLETED"
    assert client.files.content(uploaded.id).read() == path.read_bytes()
    with api(simulator) as http:
        wrong = http.post(
            "/files/multipart/complete",
            json={"upload_id": "nope", "file_id": uploaded.id, "parts": []},
        )
        assert wrong.status_code == 404 and error_of(wrong)["code"] == "not_found"


def test_the_documented_single_request_upload(simulator: RunningSimulator) -> None:
    with api(simulator) as http:
        content = b"".join(orjson.dumps(r) + b"\n" for r in preference_rows(3))
        answer = http.post(
            "/files/upload",
            data={"purpose": "fine-tune", "file_name": "prefs.jsonl"},
            files={"file": ("prefs.jsonl", content)},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["validation_report"]["dataset_format"] == "PREFERENCE_OPENAI"
        form = {"purpose": (None, "fine-tune"), "file_name": (None, "a.jsonl")}
        missing = http.post("/files/upload", files=form)
        assert missing.status_code == 400 and error_of(missing)["param"] == "file"
        plain = http.post("/files/upload", data={"purpose": "fine-tune"})
        assert plain.status_code == 400 and "multipart" in error_of(plain)["message"]


# ------------------------------------------------------------------------------ models, keys


def test_model_limits_and_supported_models(simulator: RunningSimulator) -> None:
    client = sdk(simulator)
    limits = client.fine_tuning.model_limits(model_name=BASE)
    assert limits.lora_training.min_batch_size == 8 and limits.lora_training.max_rank == 64
    assert limits.full_training is not None and limits.supports_full_training
    assert client.fine_tuning.model_limits(model_name=LORA_ONLY).full_training is None
    with pytest.raises(together.NotFoundError) as refused:
        client.fine_tuning.model_limits(model_name="acme/unknown-model")
    body: Any = refused.value.body
    assert body["error"]["code"] == "model_not_available"
    with api(simulator) as http:
        models = http.get("/fine-tunes/models/supported").json()["models"]
    assert BASE in models and LORA_ONLY in models


def test_every_call_needs_a_key(simulator: RunningSimulator) -> None:
    for path in ("/together/v1/fine-tunes", "/together/v1/files", "/together/v1/models"):
        answer = httpx.get(simulator.base_url + path)
        assert answer.status_code == 401 and error_of(answer)["code"] == "invalid_api_key"
    unknown = httpx.get(simulator.base_url + "/together/v1/nothing-here", headers=KEY)
    assert unknown.status_code == 404 and error_of(unknown)["type"] == "invalid_request_error"


# ------------------------------------------------------------------------------------ jobs


def test_a_lora_job_runs_through_its_states_with_falling_loss(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    client = sdk(simulator, seconds=1.2)
    train = upload(client, write(tmp_path / "run-train.jsonl", chat_rows(40, "run")))
    valid = upload(client, write(tmp_path / "run-valid.jsonl", chat_rows(8, "runv")))
    job = client.fine_tuning.create(
        training_file=train,
        validation_file=valid,
        model=BASE,
        n_epochs=3,
        n_evals=6,
        n_checkpoints=3,
        batch_size=8,
        learning_rate=2e-5,
        warmup_ratio=0.2,
        lora=True,
        lora_r=8,
        lora_alpha=16,
        suffix="support-bot",
        train_on_inputs="auto",
        random_seed=7,
    )
    assert job.status == "pending" and job.output_name is not None
    assert job.output_name.startswith("sim-user/Meta-Llama-3.1-8B-Instruct-Reference-support-bot-")
    seen = set()
    deadline = time.monotonic() + 10
    while (status := client.fine_tuning.retrieve(job.id).status) != "completed":
        seen.add(status)
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert {"pending", "running"} <= seen <= {"pending", "queued", "running", "uploading"}
    done = client.fine_tuning.retrieve(job.id)
    assert done.x_model_output_name == job.output_name and done.to_dict()["total_steps"] == 15
    assert done.training_type is not None and done.training_type.type == "Lora"
    described: Any = done.to_dict()
    assert described["training_type"]["lora_r"] == 8
    assert done.n_epochs == 3 and done.learning_rate == 2e-5 and done.token_count

    metrics = client.fine_tuning.list_metrics(job.id).metrics or []
    train_rows = [m for m in metrics if "train/loss" in m]
    eval_rows = [m for m in metrics if "eval/loss" in m]
    assert [m["train/global_step"] for m in train_rows] == list(range(1, 16))
    assert len(eval_rows) == 6 and eval_rows[-1]["train/global_step"] == 15
    losses = [m["train/loss"] for m in train_rows]
    assert sum(losses[:3]) / 3 > sum(losses[-3:]) / 3 + 0.2
    rates = [m["train/learning_rate"] for m in train_rows]
    assert rates[0] < rates[1] < rates[2] == pytest.approx(2e-5)  # three steps of warmup
    assert rates[3] < rates[2] and rates[-1] < 1e-6  # then the cosine down to 0
    assert len(client.fine_tuning.list_metrics(job.id, resolution=5).metrics or []) == 5 + 6
    window = client.fine_tuning.list_metrics(job.id, global_step_from=5, global_step_to=6)
    assert {m["train/global_step"] for m in window.metrics or []} == {5.0, 6.0}

    events = client.fine_tuning.list_events(job.id).data
    kinds = [e.type for e in events]
    assert kinds[0] == "job_pending" and kinds[-1] == "job_complete"
    assert [e.step for e in events if e.type == "epoch_complete"] == [5, 10, 15]
    assert [e.step for e in events if e.type == "checkpoint_save"] == [5, 10]
    stamps = [e.created_at for e in events]
    assert stamps == sorted(stamps)
    checkpoints = client.fine_tuning.list_checkpoints(job.id).data
    assert [(c.step, c.checkpoint_type) for c in checkpoints] == [
        (5, "Intermediate (step 5)"),
        (10, "Intermediate (step 10)"),
        (15, "Final"),
    ]
    assert job.id in [j.id for j in client.fine_tuning.list().data]


def test_a_dpo_full_job_and_the_price_estimate(simulator: RunningSimulator, tmp_path: Path) -> None:
    client = sdk(simulator)
    train = upload(client, write(tmp_path / "dpo.jsonl", preference_rows(24)))
    estimate: Any = client.fine_tuning.estimate_price(
        training_file=train,
        model=BASE,
        n_epochs=2,
        training_type={"type": "Full"},
        training_method={"method": "dpo"},
    )
    assert estimate.estimation_available and estimate.allowed_to_proceed
    tokens = estimate.estimated_train_token_count
    assert tokens > 0 and estimate.estimated_total_price == pytest.approx(
        tokens * 0.54 * 2.5 / 1e6, rel=1e-3
    )
    job = client.fine_tuning.create(
        training_file=train, model=BASE, n_epochs=2, lora=False, training_method="dpo", dpo_beta=0.3
    )
    done = wait(client, job.id)
    assert done.status == "completed" and done.training_type is not None
    assert done.training_type.type == "Full"
    method: Any = done.training_method
    assert method.method == "dpo" and method.dpo_beta == 0.3
    losses = [m["train/loss"] for m in client.fine_tuning.list_metrics(job.id).metrics or []]
    assert losses and losses[0] < math.log(2) * 1.5 and losses[-1] < losses[0]


def test_the_server_checks_a_job_as_together_does(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    client = sdk(simulator)
    chat = upload(client, write(tmp_path / "checks.jsonl", chat_rows(10, "checks")))
    prefs = upload(client, write(tmp_path / "checks-dpo.jsonl", preference_rows(10)))
    rows: list[Any] = chat_rows(2)
    rows[0]["messages"].append({"role": "assistant", "content": "again"})
    refused = upload(client, write(tmp_path / "checks-bad.jsonl", rows))
    good = {"training_file": chat, "model": BASE}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"training_file": chat, "model": "acme/unknown"}, 404, "not available"),
        ({"training_file": "file-nope", "model": BASE}, 404, "not found"),
        ({"training_file": refused, "model": BASE}, 400, "did not pass validation"),
        ({**good, "n_epochs": 0}, 400, "n_epochs"),
        ({**good, "n_epochs": 21}, 400, "n_epochs"),
        ({**good, "batch_size": 4}, 400, "batch_size"),
        ({**good, "batch_size": 33}, 400, "batch_size"),
        ({**good, "n_evals": 3}, 400, "validation_file"),
        ({**good, "learning_rate": 0}, 400, "learning_rate"),
        ({**good, "suffix": "x" * 41}, 400, "suffix"),
        ({**good, "suffix": "no spaces"}, 400, "suffix"),
        ({**good, "training_type": {"type": "Lora", "lora_r": 65, "lora_alpha": 8}}, 400, "lora_r"),
        ({**good, "training_type": {"type": "Lora", "lora_dropout": 1}}, 400, "lora_dropout"),
        (
            {"training_file": chat, "model": LORA_ONLY, "training_type": {"type": "Full"}},
            400,
            "LoRA",
        ),
        ({**good, "training_method": {"method": "dpo"}}, 400, "preference"),
        ({"training_file": prefs, "model": BASE}, 400, "SFT data"),
        ({**good, "training_method": {"method": "rl"}}, 400, "training_method"),
        ({**good, "from_checkpoint": "ft-none"}, 400, "from_checkpoint"),
        ({**good, "random_seed": "seven"}, 400, "random_seed"),
        ({**good, "lr_scheduler": {"lr_scheduler_type": "step"}}, 400, "lr_scheduler"),
        ({"model": BASE}, 404, "training_file"),
        ({"training_file": chat}, 400, "model"),
    ]
    with api(simulator) as http:
        for body, status, words in cases:
            answer = http.post("/fine-tunes", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert words in error_of(answer)["message"], (body, answer.text)
        for raw in (b"", b"[]", b"{", b'"x"', b"null"):
            answer = http.post("/fine-tunes", content=raw)
            assert answer.status_code == 400 and error_of(answer)["message"]
        for header in ("-1", "nan", "inf", "soon", "1e9"):
            answer = http.post("/fine-tunes", json=good, headers={"x-sim-ft-seconds": header})
            assert answer.status_code == 400, header
        answer = http.post("/fine-tunes", json=good, headers={"x-sim-ft-fail-at": "2"})
        assert answer.status_code == 400
        for path in ("/fine-tunes/ft-nope", "/fine-tunes/ft-nope/events"):
            missing = http.get(path)
            assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
        assert http.get("/fine-tunes/x/metrics?resolution=zero").status_code == 404
    job = client.fine_tuning.create(training_file=chat, model=BASE, train_on_inputs="auto")
    with api(simulator) as http:
        assert http.get(f"/fine-tunes/{job.id}/metrics?resolution=zero").status_code == 400
        assert http.get(f"/fine-tunes/{job.id}/metrics?logged_at_from=later").status_code == 400


def test_cancel_stops_the_run(simulator: RunningSimulator, tmp_path: Path) -> None:
    client = sdk(simulator, seconds=6)
    train = upload(client, write(tmp_path / "cancel.jsonl", chat_rows(40, "cancel")))
    job = client.fine_tuning.create(
        training_file=train, model=BASE, n_epochs=3, batch_size=8, train_on_inputs="auto"
    )
    time.sleep(1.5)  # into the run: a few steps done
    cancelled = client.fine_tuning.cancel(job.id)
    assert cancelled.status == "cancel_requested"
    steps = len(client.fine_tuning.list_metrics(job.id).metrics or [])
    assert 0 < steps < 15
    done = wait(client, job.id, seconds=5)
    assert done.status == "cancelled"
    kinds = [e.type for e in client.fine_tuning.list_events(job.id).data]
    assert kinds[-2:] == ["cancel_requested", "job_stopped"] and "job_complete" not in kinds
    time.sleep(0.3)
    assert len(client.fine_tuning.list_metrics(job.id).metrics or []) == steps
    with pytest.raises(together.BadRequestError, match="already cancelled"):
        client.fine_tuning.cancel(job.id)


def test_a_failing_run_ends_in_error(simulator: RunningSimulator, tmp_path: Path) -> None:
    client = sdk(simulator, seconds=0.5, **{"x-sim-ft-fail-at": "0.5"})
    train = upload(client, write(tmp_path / "fail.jsonl", chat_rows(16, "fail")))
    job = client.fine_tuning.create(
        training_file=train, model=BASE, n_epochs=2, batch_size=8, train_on_inputs="auto"
    )
    done = wait(client, job.id)
    assert done.status == "error"
    last = client.fine_tuning.list_events(job.id).data[-1]
    assert last.type == "job_error" and last.level == "error" and "NaN" in last.message
    assert len(client.fine_tuning.list_metrics(job.id).metrics or []) < 4


def test_continuing_from_a_checkpoint(simulator: RunningSimulator, tmp_path: Path) -> None:
    client = sdk(simulator)
    train = upload(client, write(tmp_path / "parent.jsonl", chat_rows(16, "parent")))
    parent = client.fine_tuning.create(
        training_file=train,
        model=BASE,
        n_epochs=2,
        n_checkpoints=2,
        batch_size=8,
        suffix="v1",
        train_on_inputs="auto",
    )
    wait(client, parent.id)
    limits = client.fine_tuning.model_limits(model_name=BASE)
    for start in (parent.id, f"{parent.output_name}:2", f"{parent.id}:4"):
        child = client.fine_tuning.create(
            training_file=train,
            from_checkpoint=start,
            model_limits=limits,
            suffix="v2",
            train_on_inputs="auto",
        )
        found = wait(client, child.id)
        assert found.status == "completed" and found.from_checkpoint == start
        assert found.model == BASE and "-v2-" in str(found.x_model_output_name)
    with api(simulator) as http:
        answer = http.post(
            "/fine-tunes", json={"training_file": train, "from_checkpoint": f"{parent.id}:3"}
        )
        assert answer.status_code == 400 and "saved: 2, 4" in error_of(answer)["message"]


# -------------------------------------------------------------------------------- serving


def test_the_fine_tune_answers_chat_once_completed(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    client = sdk(simulator, seconds=1.0)
    train = upload(client, write(tmp_path / "serve.jsonl", chat_rows(16, "serve")))
    job = client.fine_tuning.create(
        training_file=train, model=BASE, suffix="served", train_on_inputs="auto"
    )
    assert job.output_name is not None
    messages: Any = [{"role": "user", "content": "Where is my order?"}]
    with pytest.raises(together.NotFoundError, match="Unable to access model"):
        client.chat.completions.create(model=job.output_name, messages=messages)
    wait(client, job.id)
    answer = client.chat.completions.create(model=job.output_name, messages=messages)
    reply = answer.choices[0].message
    assert answer.model == job.output_name and reply is not None and reply.content
    text = client.completions.create(model=job.output_name, prompt="Once upon")
    assert text.choices[0].text
    served = client.chat.completions.create(
        model="meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", messages=messages
    )
    assert served.choices[0].message is not None and served.choices[0].message.content
    with pytest.raises(together.NotFoundError):
        client.chat.completions.create(model="acme/never-trained", messages=messages)
    with api(simulator) as http:
        listed = http.get("/models").json()
    assert isinstance(listed, list) and job.output_name in [m["id"] for m in listed]


ODD_VALUES: list[Any] = [None, [], {}, [1, "a"], {"k": [None]}, "", "x" * 5000, -1, 1e308, True]


def test_odd_values_anywhere_are_refused_never_a_server_error(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    client = sdk(simulator)
    train = upload(client, write(tmp_path / "odd.jsonl", chat_rows(10, "odd")))
    bodies: dict[str, dict[str, Any]] = {
        "/fine-tunes": {
            "training_file": train,
            "model": BASE,
            "n_epochs": 1,
            "batch_size": 8,
            "learning_rate": 1e-5,
            "suffix": "odd",
            "training_type": {"type": "Lora", "lora_r": 8},
            "training_method": {"method": "sft"},
            "lr_scheduler": {"lr_scheduler_type": "linear", "lr_scheduler_args": {}},
            "from_checkpoint": None,
            "random_seed": 1,
        },
        "/fine-tunes/estimate-price": {
            "training_file": train,
            "validation_file": train,
            "model": BASE,
            "n_epochs": 1,
            "training_type": {"type": "Lora"},
        },
        "/files/multipart/initiate": {
            "file_name": "a.jsonl",
            "file_size": 10,
            "num_parts": 1,
            "purpose": "fine-tune",
            "file_type": "jsonl",
            "checksum": "0",
        },
        "/files/multipart/complete": {"upload_id": "u", "file_id": "f", "parts": []},
        "/files/multipart/abort": {"upload_id": "u", "file_id": "f"},
        "/chat/completions": {"model": BASE, "messages": [{"role": "user", "content": "hi"}]},
    }
    with api(simulator) as http:
        for path, body in bodies.items():
            for key in body:
                for value in ODD_VALUES:
                    sent = {**body, key: value}
                    answer = http.post(path, json=sent, headers=FAST)
                    assert answer.status_code < 500, (path, key, value, answer.text)
                    if answer.status_code >= 400:
                        assert error_of(answer)["message"]
            nested = {**body, "parts": [{"part_number": "1", "etag": 1}, {"part_number": 2}]}
            assert http.post(path, json=nested, headers=FAST).status_code < 500
