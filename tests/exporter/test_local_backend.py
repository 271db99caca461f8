"""``--backend local`` for real, on the CPU: a tiny model built here from the test's own export
(a BPE tokenizer trained on its text, a ChatML template with tools and generation markers, a
two-layer Llama with random weights), trained with TRL + PEFT through the CLI, in the
background process the backend starts. Nothing is downloaded (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from exporter.cli import main
from exporter.finetune.local import LocalBackend, state, tiny, train
from exporter.finetune.local.plan import plan_from
from exporter.finetune.local.trainer import build_trainer, prepare
from tests.exporter.factory import chat_call, questions, store_calls

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look an order up by its number.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]
FAST = ["--learning-rate", "0.005", "--poll", "0.2"]


@dataclass
class Tiny:
    model: Path
    chat: Path
    """A chat export: plain answers, tool calls, multi-turn rows with the first answer at
    weight 0 (``--weight last``)."""
    dpo: Path
    """A preference export."""
    root: Path


def _tool_call(order: str) -> list[dict[str, Any]]:
    arguments = json.dumps({"order_id": order})
    call = {"id": f"call_{order}", "type": "function"}
    return [{**call, "function": {"name": "get_order", "arguments": arguments}}]


def _export(root: Path) -> tuple[Path, Path]:
    rows = []
    for text in questions(36, seed=11):
        rows.append(chat_call(text, f"Open Settings, then Billing, and choose {text.split()[5]}."))
    for i in range(8):
        order = f"{i}{i}7"
        rows.append(
            chat_call(f"Where is order {order}?", None, tools=TOOLS, tool_calls=_tool_call(order))
        )
    for i, text in enumerate(questions(6, seed=12)):
        turns = [
            {"role": "user", "content": text},
            {"role": "assistant", "content": "Which account?"},
            {"role": "user", "content": f"account {i}"},
        ]
        rows.append(chat_call(turns, f"Account {i} is now reset."))
    chat_url = store_calls(root / "chat.db", rows)
    chat = root / "chat"
    base = ["export", "--route", "support", "--variant", "teacher", "--weight", "last"]
    assert main([*base, "--database-url", chat_url, "--out", str(chat)]) == 0

    pairs, feedback = [], []
    for i, text in enumerate(questions(24, seed=13)):
        good = chat_call(text, f"Open Settings and choose {text.split()[5]}.")
        bad = chat_call(text, f"No idea {i}.")
        pairs += [good, bad]
        feedback += [(good["id"], 1.0), (bad["id"], -1.0)]
    dpo_url = store_calls(root / "dpo.db", pairs, feedback)
    dpo = root / "dpo"
    command = ["export", "--route", "support", "--format", "dpo", "--pairs", "feedback"]
    assert main([*command, "--database-url", dpo_url, "--out", str(dpo)]) == 0
    return chat, dpo


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))  # an empty cache
        patch.delenv(train.PAUSE_ENV, raising=False)
        yield


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, offline: None) -> Tiny:
    root = tmp_path_factory.mktemp("local-backend")
    chat, dpo = _export(root)
    texts = tiny.texts_of(chat) + tiny.texts_of(dpo)
    model = tiny.build(texts, root / "tiny-model")
    return Tiny(model, chat, dpo, root)


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def _job_dir(data: Path) -> Path:
    found = sorted((data / "jobs").iterdir(), key=lambda p: p.stat().st_mtime)
    return found[-1]


@dataclass
class Sft:
    runs: Path
    out: str
    saved: Path
    """DATA/jobs/JOB: what the CLI saved."""


@pytest.fixture(scope="module")
def sft(tiny_model: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Sft:
    """A supervised job through the CLI, followed to its end."""
    runs = tmp_path_factory.mktemp("sft") / "runs"
    local = ["--backend", "local", "--output-dir", str(runs)]
    command = ["finetune", str(tiny_model.chat), "--base", str(tiny_model.model), *local]
    shape = ["--epochs", "3", "--batch-size", "4", "--suffix", "acme", "--merge"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*command, *shape, *FAST]) == 0
    return Sft(runs, printed.getvalue(), _job_dir(tiny_model.chat))


def test_sft_through_the_cli_loss_falls_and_the_adapter_generates(
    tiny_model: Tiny, sft: Sft, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, saved = sft.runs, sft.saved
    local = ["--backend", "local", "--output-dir", str(runs)]
    assert "Step " in sft.out and "succeeded" in sft.out

    for name in ("job.json", "events.jsonl", "metrics.csv", "summary.json", "READING.txt"):
        assert (saved / name).is_file(), name
    assert (saved / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = orjson.loads((saved / "summary.json").read_bytes())
    assert summary["status"] == "succeeded"
    assert summary["train_loss_final"] < 0.5 * summary["train_loss_first"], summary
    valid = [line.split(",")[3] for line in (saved / "metrics.csv").read_text().splitlines()]
    valid = [value for value in valid[1:] if value]
    assert len(valid) >= 3 and float(valid[-1]) < 0.5 * float(valid[0]), valid
    csv_lines = (saved / "metrics.csv").read_text().splitlines()
    rows = len([line for line in (tiny_model.chat / "train.jsonl").read_bytes().splitlines()])
    steps = math.ceil(rows / 4) * 3
    assert csv_lines[0].startswith("step,train_loss") and len(csv_lines) == 1 + steps

    job = orjson.loads((saved / "job.json").read_bytes())["job"]
    run = runs / job["id"]
    assert job["status"] == "succeeded"
    assert job["fine_tuned_model"].startswith("student-acme-")
    adapter = Path(job["adapter_path"])
    assert adapter == (run / "adapter").resolve()
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (run / "merged" / "config.json").is_file()

    manifest = orjson.loads((run / "manifest.json").read_bytes())
    train_file = tiny_model.chat / "train.jsonl"
    lines = [line for line in train_file.read_bytes().splitlines() if line.strip()]
    assert manifest["base_model"]["path"] == str(tiny_model.model.resolve())
    assert manifest["base_model"]["model_type"] == "llama"
    assert (
        manifest["export"]["train"]["sha256"] == hashlib.sha256(train_file.read_bytes()).hexdigest()
    )
    assert manifest["export"]["train"]["rows"] == len(lines)
    assert manifest["export"]["manifest"]["filters"]["route"] == "support"
    assert manifest["export"]["counts"]["splits"]["train"] == len(lines)
    assert manifest["hyperparameters"]["learning_rate"] == 0.005
    assert manifest["hyperparameters"]["n_epochs"] == 3
    assert {"q_proj", "v_proj", "down_proj"} <= set(manifest["hyperparameters"]["lora_targets"])
    assert manifest["device"] == {**manifest["device"], "type": "cpu", "precision": "fp32"}
    assert manifest["versions"]["torch"].startswith("2.13.0")
    assert manifest["training"]["steps"] == steps
    assert manifest["merged"] == str(run / "merged")
    serve = manifest["serve"]
    assert serve["vllm"] == (
        f"vllm serve {tiny_model.model.resolve()} --enable-lora "
        f"--lora-modules {job['fine_tuned_model']}={adapter} --max-lora-rank 16"
    )
    assert serve["vllm_load_lora_adapter"]["body"] == {
        "lora_name": job["fine_tuned_model"],
        "lora_path": str(adapter),
    }

    # status and list read the job back from its files
    status = ["finetune", "status", job["id"], *local, "--dir", str(tiny_model.chat), "--json"]
    assert main(status) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["job"]["adapter_path"] == str(adapter)
    assert main(["finetune", "list", *local]) == 0
    assert job["id"] in capsys.readouterr().out

    # the adapter loads with peft onto the base model and has learned the answers
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(tiny_model.model)
    prompt = [
        {"role": "system", "content": "You are a helpful support agent."},
        {"role": "user", "content": "How do I cancel my plan today please?"},
    ]
    ids: Any = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model.model)
    student: Any = PeftModel.from_pretrained(base, str(adapter))
    with torch.no_grad():
        generated = student.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
    assert generated.shape[1] > ids.shape[1]
    assert answer.startswith("Open Settings"), answer
    with torch.no_grad(), student.disable_adapter():
        before = student.generate(ids, max_new_tokens=12, do_sample=False)
    assert not tokenizer.decode(before[0, ids.shape[1] :]).startswith("Open Settings")
    merged: Any = AutoModelForCausalLM.from_pretrained(run / "merged")
    with torch.no_grad():
        same = merged.generate(ids, max_new_tokens=12, do_sample=False)
    assert same.tolist() == generated.tolist()


def _decoded(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=False))


def test_labels_are_the_trained_assistant_turns_only(tiny_model: Tiny, tmp_path: Path) -> None:
    system = {"role": "system", "content": "You are a helpful support agent."}
    rows = [
        {
            "messages": [
                system,
                {"role": "user", "content": "Reset my account"},
                {"role": "assistant", "content": "Which account?", "weight": 0},
                {"role": "user", "content": "account 7"},
                {"role": "assistant", "content": "Account 7 is now reset.", "weight": 1},
            ]
        },
        {
            "messages": [
                system,
                {"role": "user", "content": "Where is order 117?"},
                {"role": "assistant", "content": None, "tool_calls": _tool_call("117")},
                {"role": "tool", "tool_call_id": "call_117", "content": "shipped"},
                {"role": "assistant", "content": "Order 117 has shipped."},
            ],
            "tools": TOOLS,
        },
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello."},
            ]
        },
    ]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    config = {
        "base": {"path": str(tiny_model.model)},
        "training_file": {"copy": str(path)},
        "hyperparameters": {"n_epochs": 1, "batch_size": 3},
        "options": {"device": "cpu"},
        "method": "supervised",
    }
    plan = plan_from(tmp_path, config)
    prepared = prepare(plan)
    trainer = build_trainer(plan, prepared)
    batch = next(iter(trainer.get_train_dataloader()))
    tokenizer = prepared.tokenizer
    trained, whole = set(), []
    for ids, labels, mask in zip(
        batch["input_ids"].tolist(),
        batch["labels"].tolist(),
        batch["attention_mask"].tolist(),
        strict=True,
    ):
        kept = [i for i, label in zip(ids, labels, strict=True) if label != -100]
        assert all(label in (-100, i) for i, label in zip(ids, labels, strict=True))
        assert all(label == -100 for label, m in zip(labels, mask, strict=True) if m == 0)
        spans, run = [], []
        for i, label in zip(ids, labels, strict=True):
            if label != -100:
                run.append(i)
            elif run:
                spans.append(_decoded(tokenizer, run))
                run = []
        trained.update(spans)
        whole.append(_decoded(tokenizer, [i for i, m in zip(ids, mask, strict=True) if m]))
        assert kept
    call = '<tool_call>{"name": "get_order", "arguments": {"order_id": "117"}}</tool_call>'
    assert trained == {
        "Account 7 is now reset.<|im_end|>",
        f"{call}<|im_end|>",
        "Order 117 has shipped.<|im_end|>",
        "Hello.<|im_end|>",
    }
    rendered = "\n".join(whole)
    # the weight-0 turn, the prompts, the tool's result and the tools are all in the input
    for text in ("Which account?", "Reset my account", "shipped<|im_end|>", "# Tools"):
        assert text in rendered


def test_dpo_on_preference_rows_continues_from_the_sft_student(
    tiny_model: Tiny, sft: Sft, tmp_path: Path
) -> None:
    parent = Path(orjson.loads((sft.saved / "job.json").read_bytes())["job"]["adapter_path"])
    runs = tmp_path / "runs"
    command = ["finetune", str(tiny_model.dpo), "--base", str(tiny_model.model)]
    local = ["--backend", "local", "--output-dir", str(runs), "--dpo-beta", "0.2"]
    shape = ["--epochs", "1", "--batch-size", "4", "--from", str(parent)]
    assert main([*command, *local, *shape, *FAST]) == 0
    saved = _job_dir(tiny_model.dpo)
    job = orjson.loads((saved / "job.json").read_bytes())["job"]
    assert job["status"] == "succeeded" and job["method"] == {"type": "dpo"}
    manifest = orjson.loads((runs / job["id"] / "manifest.json").read_bytes())
    assert manifest["method"] == "dpo" and manifest["hyperparameters"]["dpo_beta"] == 0.2
    assert manifest["parent"] == str(parent)
    adapter = Path(job["adapter_path"])
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "ref").exists()  # the frozen reference copy is not the student
    points = state.read_jsonl(runs / job["id"] / state.METRICS)
    losses = [p["train_loss"] for p in points if "train_loss" in p]
    assert len(losses) == manifest["training"]["steps"] >= 4
    # the reference is the SFT student itself, so the first step's loss is DPO's log 2
    assert abs(losses[0] - 0.6931) < 0.01, losses
    assert losses[-1] < losses[0]


def _wait(predicate: Any, what: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _stopped(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_STOPPED)
    except psutil.NoSuchProcess:
        return False


def test_killed_job_resumes_from_its_checkpoint_and_cancel_stops_it(
    tiny_model: Tiny,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = tmp_path / "runs"
    local = ["--backend", "local", "--output-dir", str(runs), "--dir", str(tiny_model.chat)]
    shape = ["--epochs", "2", "--batch-size", "8", "--save-steps", "4", *FAST]
    monkeypatch.setenv(train.PAUSE_ENV, "6")
    command = ["finetune", str(tiny_model.chat), "--base", str(tiny_model.model), *local]
    assert main([*command, *shape, "--no-follow"]) == 0
    job_id = capsys.readouterr().out.split("started ", 1)[1].split(":", 1)[0]
    backend = LocalBackend(output_dir=runs)
    pid = backend.get(job_id).raw["pid"]
    _wait(lambda: _stopped(pid), "the training process to pause at step 6")
    run = runs / job_id
    assert [step for step, _ in state.checkpoints(run)] == [4]
    assert [p["step"] for p in state.read_jsonl(run / state.METRICS) if "train_loss" in p] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]

    os.kill(pid, signal.SIGKILL)  # killed mid-way: after step 6, its checkpoint at step 4
    _wait(lambda: not state.pid_alive(pid), "the training process to end")
    job = backend.get(job_id)
    assert job.status == "failed" and "interrupted" in (job.error or "")
    assert "last checkpoint is at step 4" in (job.error or "")
    assert f"gateway finetune resume {job_id}" in (job.error or "")

    # resumed: goes on from checkpoint-4; paused again at step 9 and cancelled there
    monkeypatch.setenv(train.PAUSE_ENV, "9")
    assert main(["finetune", "resume", job_id, *local, "--no-follow"]) == 0
    pid = backend.get(job_id).raw["pid"]
    _wait(lambda: _stopped(pid), "the resumed process to pause at step 9")
    cancelled = backend.cancel(job_id)
    assert cancelled.status == "cancelled"
    assert not state.pid_alive(pid)
    assert any("cancelled" in e.message for e in backend.events(job_id))
    capsys.readouterr()
    assert main(["finetune", "cancel", job_id, *local]) == 1
    assert "already cancelled" in _one_line_error(capsys)

    # resumed again, to the end: one curve, each step once, the step count continued
    monkeypatch.delenv(train.PAUSE_ENV)
    assert main(["finetune", "resume", job_id, *local]) == 0
    job = backend.get(job_id)
    assert job.status == "succeeded"
    total = job.raw["total_steps"]
    rows = len((tiny_model.chat / "train.jsonl").read_bytes().splitlines())
    assert total == math.ceil(rows / 8) * 2 > 9
    steps = [p.step for p in backend.metrics(job) if p.train_loss is not None]
    assert steps == list(range(1, total + 1))
    messages = [e.message for e in backend.events(job_id)]
    resumed = [m for m in messages if m.startswith("resuming from")]
    assert resumed == [
        f"resuming from checkpoint-4 (step 4 of {total})",
        f"resuming from checkpoint-8 (step 8 of {total})",
    ]
    started = [m for m in messages if m.startswith("training process")]
    assert len(started) == 3  # three processes, one of them from step 0:
    assert sum(" rows for " in m for m in messages) == 1
    manifest = orjson.loads((run / "manifest.json").read_bytes())
    assert manifest["training"]["resumed_from_step"] == 8
    assert manifest["training"]["steps"] == total
    saved = tiny_model.chat / "jobs" / job_id
    csv_steps = [line.split(",")[0] for line in (saved / "metrics.csv").read_text().splitlines()]
    assert csv_steps[1:] == [str(step) for step in range(1, total + 1)]
    capsys.readouterr()
    assert main(["finetune", "resume", job_id, *local]) == 1
    assert "already succeeded" in _one_line_error(capsys)


def test_bad_input_gets_one_line_errors(
    tiny_model: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    local = ["--backend", "local", "--output-dir", str(runs)]
    data = str(tiny_model.chat)
    capsys.readouterr()

    assert main(["finetune", data, "--base", "acme/no-such-model", *local]) == 2
    error = _one_line_error(capsys)
    assert "not in the Hugging Face cache" in error and "hf download acme/no-such-model" in error

    assert main(["finetune", data, "--base", "gpt-4o-mini", *local]) == 2
    assert "the local backend trains open-weight models" in _one_line_error(capsys)

    assert main(["finetune", data, "--base", str(tmp_path / "nowhere"), *local]) == 2
    assert "no such model directory" in _one_line_error(capsys)

    assert main(["finetune", str(tmp_path / "missing"), "--base", "x", *local]) == 1
    assert "no export directory" in _one_line_error(capsys)

    assert main(["finetune", data, "--base", str(tmp_path), *local]) == 2
    assert "no config.json" in _one_line_error(capsys)

    templateless = tmp_path / "templateless"
    templateless.mkdir()
    for item in tiny_model.model.iterdir():
        (templateless / item.name).write_bytes(item.read_bytes())
    (templateless / "chat_template.jinja").unlink(missing_ok=True)
    settings = orjson.loads((templateless / "tokenizer_config.json").read_bytes())
    settings.pop("chat_template", None)
    (templateless / "tokenizer_config.json").write_bytes(orjson.dumps(settings))
    assert main(["finetune", data, "--base", str(templateless), *local]) == 1
    assert "has no chat template" in _one_line_error(capsys)

    assert (
        main(["finetune", data, "--base", str(tiny_model.model), *local, "--training", "full"]) == 2
    )
    assert "trains LoRA adapters" in _one_line_error(capsys)

    assert main(["finetune", "status", "ftjob-nope", *local]) == 1
    assert "no local job ftjob-nope" in _one_line_error(capsys)

    assert (
        main(["finetune", data, "--base", str(tiny_model.model), "--lora-dropout", "1.5", *local])
        == 2
    )
    assert "--lora-dropout" in _one_line_error(capsys)
    assert not list(runs.glob("ftjob-*"))  # nothing was started


def test_the_gateway_and_the_cli_do_not_import_the_training_libraries() -> None:
    code = (
        "import sys\n"
        "import gateway.app, exporter.cli, exporter.finetune.local\n"
        "from exporter.commands.finetune import add\n"
        "heavy = {'torch', 'transformers', 'peft', 'trl', 'datasets', 'accelerate'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
