"""The training process of a local job: ``python -m exporter.finetune.local.train RUN_DIR``.

Started in the background by ``LocalBackend.create`` (and ``resume``) with the job's directory;
reads ``config.json`` there, trains a LoRA adapter with TRL (``SFTTrainer`` for chat rows,
``DPOTrainer`` for preference rows), and writes what ``state`` describes: the job's status,
events, per-step metrics, checkpoints, the adapter, the merged model (``merge``) and the
manifest. It holds the job's lock while it lives. A job directory with checkpoints is resumed
from the last one: the step count goes on and the metrics logged after that checkpoint are
dropped (they are trained again), so the loss curve stays one curve.

Device: CUDA when present (bf16 where the GPU supports it, else fp16), else Apple's MPS, else
the CPU (fp32); ``device`` in the config forces one.

Fault injection for tests: ``GATEWAY_FINETUNE_PAUSE_AT_STEP=N`` stops the process (SIGSTOP)
once step N's loss is logged, so a test can kill it at a known point and resume the job.
"""

from __future__ import annotations

import math
import os
import platform
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from exporter.errors import InvalidDataset
from exporter.finetune.local import data
from exporter.finetune.local import state as jobfiles

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import (
        PreTrainedTokenizerBase,
        Trainer,
        TrainerCallback,
        TrainerControl,
        TrainerState,
        TrainingArguments,
    )

DEFAULT_LEARNING_RATE = 2e-4
"""LoRA's usual rate, used when neither a learning rate nor a multiplier is given."""
MULTIPLIER_SCALE = 2e-3
"""An export's learning-rate multiplier (OpenAI's 0.05 / 0.1 / 0.2) times this: 1e-4, 2e-4 and
4e-4, the range LoRA is usually trained in."""
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 4
DEFAULT_LORA_R = 16
DEFAULT_MAX_LENGTH = 4096
DEFAULT_DPO_BETA = 0.1
CHECKPOINTS_KEPT = 2
PAUSE_ENV = "GATEWAY_FINETUNE_PAUSE_AT_STEP"


class Cancelled(Exception):
    """SIGTERM: ``cancel`` asked the job to stop."""


@dataclass(frozen=True, slots=True)
class Device:
    type: str
    """cuda, mps or cpu."""
    precision: str
    """bf16, fp16 or fp32."""
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "precision": self.precision, "name": self.name}


def pick_device(requested: str | None = None) -> Device:
    import torch

    wanted = (requested or "auto").lower()
    if wanted not in ("auto", "cuda", "mps", "cpu"):
        raise InvalidDataset(f"device {requested!r}: give auto, cuda, mps or cpu")
    if wanted in ("auto", "cuda") and torch.cuda.is_available():
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Device("cuda", precision, torch.cuda.get_device_name(0))
    if wanted == "cuda":
        raise InvalidDataset("device cuda: no CUDA GPU is visible to torch")
    if wanted in ("auto", "mps") and torch.backends.mps.is_available():
        return Device("mps", "fp32", "Apple MPS")
    if wanted == "mps":
        raise InvalidDataset("device mps: torch sees no MPS device")
    return Device("cpu", "fp32", platform.processor() or platform.machine())


def learning_rate(config: dict[str, Any]) -> float:
    options = config.get("options") or {}
    if options.get("learning_rate") is not None:
        return float(options["learning_rate"])
    multiplier = (config.get("hyperparameters") or {}).get("learning_rate_multiplier")
    if isinstance(multiplier, int | float):
        return float(multiplier) * MULTIPLIER_SCALE
    return DEFAULT_LEARNING_RATE


def _int(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


@dataclass(slots=True)
class Plan:
    """What one run trains: read from config.json, completed with the defaults."""

    run: Path
    method: str
    base_path: str
    parent: str | None
    train_file: Path
    valid_file: Path | None
    epochs: int
    batch_size: int
    learning_rate: float
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    lora_targets: str | list[str]
    max_length: int | None
    save_steps: int | None
    seed: int
    dpo_beta: float
    merge: bool
    device: Device
    extra: dict[str, Any] = field(default_factory=dict)

    def hyperparameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "n_epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "lora_targets": self.lora_targets,
            "max_length": self.max_length,
            "seed": self.seed,
        }
        if self.method == "dpo":
            values["dpo_beta"] = self.dpo_beta
        return values


def plan_from(run: Path, config: dict[str, Any]) -> Plan:
    options = config.get("options") or {}
    hyper = config.get("hyperparameters") or {}
    r = _int(options.get("lora_r"), DEFAULT_LORA_R)
    targets = options.get("lora_targets") or "all-linear"
    if isinstance(targets, str) and targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return Plan(
        run=run,
        method=str(config.get("method") or "supervised"),
        base_path=str(config["base"]["path"]),
        parent=config.get("parent"),
        train_file=Path(config["training_file"]["copy"]),
        valid_file=(
            Path(config["validation_file"]["copy"]) if config.get("validation_file") else None
        ),
        epochs=_int(hyper.get("n_epochs"), DEFAULT_EPOCHS),
        batch_size=_int(hyper.get("batch_size"), DEFAULT_BATCH_SIZE),
        learning_rate=learning_rate(config),
        lora_r=r,
        lora_alpha=float(options.get("lora_alpha") or 2 * r),
        lora_dropout=float(options.get("lora_dropout") or 0.0),
        lora_targets=targets,
        max_length=_int(options.get("max_length"), 0) or None,
        save_steps=_int(options.get("save_steps"), 0) or None,
        seed=_int(config.get("seed"), 42),
        dpo_beta=float(options.get("dpo_beta") or DEFAULT_DPO_BETA),
        merge=bool(options.get("merge")),
        device=pick_device(options.get("device")),
    )


@dataclass(slots=True)
class Prepared:
    plan: Plan
    tokenizer: PreTrainedTokenizerBase
    template_source: str
    train: Dataset
    valid: Dataset | None
    counts: dict[str, int]
    tokens: int


def _rows(path: Path, method: str) -> list[tuple[str, dict[str, Any]]]:
    rows = [(f"{path.name} line {n}", row) for n, row in data.read_rows(path)]
    for where, row in rows:
        if data.is_preference(row) != (method == "dpo"):
            kind = "a preference row" if method != "dpo" else "a chat row"
            raise InvalidDataset(f"{where}: {kind} in a {method} file")
    return rows


def prepare(plan: Plan) -> Prepared:
    """The tokenizer and the tokenized datasets."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(plan.base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    template = data.training_template(tokenizer)
    own = tokenizer.chat_template
    source = "the model's own" if template == own else "TRL's training variant of the model's"
    limit = plan.max_length
    counts = {"train": 0, "valid": 0, "too_long": 0, "nothing_trained": 0}
    tokens = 0

    def build(path: Path, side: str) -> Dataset:
        nonlocal tokens
        columns: dict[str, list[list[int]]] = {}
        for where, row in _rows(path, plan.method):
            if plan.method == "dpo":
                pair = data.preference(tokenizer, template, row, where)
                if limit is not None and len(pair.prompt_ids) >= limit:
                    counts["too_long"] += 1
                    continue
                values = {
                    "prompt_ids": pair.prompt_ids,
                    "chosen_ids": pair.chosen_ids,
                    "rejected_ids": pair.rejected_ids,
                }
                size = len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)
            else:
                example = data.supervised(tokenizer, template, row, where)
                labels = example.labels[:limit] if limit else example.labels
                if all(label == data.IGNORE for label in labels):
                    counts["nothing_trained" if limit is None else "too_long"] += 1
                    continue
                values = {"input_ids": example.input_ids, "labels": example.labels}
                size = len(example.input_ids)
            for key, value in values.items():
                columns.setdefault(key, []).append(value)
            counts[side] += 1
            if side == "train":
                tokens += size
        if not columns:
            raise InvalidDataset(f"{path.name}: no row left to train on")
        return Dataset.from_dict(columns)

    train = build(plan.train_file, "train")
    valid = build(plan.valid_file, "valid") if plan.valid_file else None
    return Prepared(plan, tokenizer, source, train, valid, counts, tokens)


def total_steps(plan: Plan, rows: int) -> int:
    return max(1, math.ceil(rows / plan.batch_size)) * plan.epochs


def load_model(plan: Plan) -> Any:
    """The base model (a PeftModel on the parent adapter when continuing from one)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        plan.device.precision, torch.float32
    )
    model: Any = AutoModelForCausalLM.from_pretrained(plan.base_path, dtype=dtype)
    if plan.parent:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, plan.parent, is_trainable=True)
    return model


def training_arguments(plan: Plan, prepared: Prepared, steps: int) -> Any:
    """SFTConfig or DPOConfig."""
    from trl.trainer.dpo_config import DPOConfig
    from trl.trainer.sft_config import SFTConfig

    every = max(1, math.ceil(steps / 10))
    common: dict[str, Any] = {
        "output_dir": str(plan.run / jobfiles.CHECKPOINTS),
        "num_train_epochs": plan.epochs,
        "per_device_train_batch_size": plan.batch_size,
        "per_device_eval_batch_size": plan.batch_size,
        "learning_rate": plan.learning_rate,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": plan.save_steps or every,
        "save_total_limit": CHECKPOINTS_KEPT,
        "eval_strategy": "steps" if prepared.valid is not None else "no",
        "eval_steps": every,
        "report_to": "none",
        "seed": plan.seed,
        "data_seed": plan.seed,
        "bf16": plan.device.precision == "bf16",
        "fp16": plan.device.precision == "fp16",
        "use_cpu": plan.device.type == "cpu",
        "gradient_checkpointing": plan.device.type == "cuda",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "max_length": plan.max_length,
    }
    if plan.method == "dpo":
        return DPOConfig(**common, beta=plan.dpo_beta)
    return SFTConfig(**common, assistant_only_loss=False, packing=False)


def build_trainer(
    plan: Plan, prepared: Prepared, callbacks: list[TrainerCallback] | None = None
) -> Trainer:
    """The TRL trainer over the prepared datasets (labels already masked: the trainer uses
    them as they are)."""
    from peft import LoraConfig, PeftModel
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.sft_trainer import SFTTrainer

    model = load_model(plan)
    peft_config = None
    if not isinstance(model, PeftModel):
        alpha = plan.lora_alpha
        lora: dict[str, Any] = {
            "r": plan.lora_r,
            "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
            "lora_dropout": plan.lora_dropout,
            "target_modules": plan.lora_targets,
            "task_type": "CAUSAL_LM",
        }
        peft_config = LoraConfig(**lora)
    steps = total_steps(plan, len(prepared.train))
    args = training_arguments(plan, prepared, steps)
    if plan.method == "dpo":

        class PreTokenizedDPO(DPOTrainer):
            """Rows are already cut into prompt/chosen/rejected ids by ``data.preference``."""

            def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
                return dataset

        trainer: Trainer = PreTokenizedDPO(
            model=model,
            args=args,
            train_dataset=prepared.train,
            eval_dataset=prepared.valid,
            processing_class=prepared.tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    else:
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=prepared.train,
            eval_dataset=prepared.valid,
            processing_class=prepared.tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    return trainer


def _recorder(run: Path, has_valid: bool) -> TrainerCallback:
    from transformers import TrainerCallback

    pause_at = os.environ.get(PAUSE_ENV, "")

    class Recorder(TrainerCallback):
        """Per-step metrics and events, as the trainer logs them."""

        def on_train_begin(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            **kwargs: Any,
        ) -> None:
            jobfiles.update_job(run, total_steps=state.max_steps)

        def on_step_end(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            **kwargs: Any,
        ) -> None:
            if has_valid and state.global_step == state.max_steps:
                control.should_evaluate = True  # the last step always has a valid loss

        def on_log(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            logs: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            logs = logs or {}
            step, total = state.global_step, state.max_steps
            point: dict[str, Any] = {}
            if "loss" in logs:
                point["train_loss"] = float(logs["loss"])
                if "mean_token_accuracy" in logs:
                    point["train_accuracy"] = float(logs["mean_token_accuracy"])
            if "eval_loss" in logs:
                point["valid_loss"] = float(logs["eval_loss"])
                if "eval_mean_token_accuracy" in logs:
                    point["valid_accuracy"] = float(logs["eval_mean_token_accuracy"])
            if not point:
                return
            jobfiles.append_jsonl(run / jobfiles.METRICS, {"step": step, **point})
            words = [f"{k.replace('_', ' ')}={v:.4f}" for k, v in point.items()]
            event = {
                "step": step,
                "total_steps": total,
                "train_loss": point.get("train_loss"),
                "train_mean_token_accuracy": point.get("train_accuracy"),
                "valid_loss": point.get("valid_loss"),
                "valid_mean_token_accuracy": point.get("valid_accuracy"),
            }
            jobfiles.add_event(
                run,
                f"Step {step}/{total}: " + ", ".join(words),
                type="metrics",
                data={k: v for k, v in event.items() if v is not None},
            )
            if pause_at == str(step) and "train_loss" in point:
                os.kill(os.getpid(), signal.SIGSTOP)

        def on_save(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            **kwargs: Any,
        ) -> None:
            step = state.global_step
            jobfiles.update_job(run, checkpoint_step=step)
            jobfiles.add_event(run, f"checkpoint saved at step {step}")

    return Recorder()


def _drop_metrics_after(run: Path, step: int) -> None:
    kept = [row for row in jobfiles.read_jsonl(run / jobfiles.METRICS) if int(row["step"]) <= step]
    target = run / jobfiles.METRICS
    temporary = target.with_suffix(".tmp")
    temporary.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in kept))
    os.replace(temporary, target)


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in (
        "torch",
        "transformers",
        "peft",
        "trl",
        "accelerate",
        "datasets",
        "distillation-gateway",
    ):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The ranks vLLM's --max-lora-rank takes."""


def serving(config: dict[str, Any], adapter: Path, rank: int) -> dict[str, Any]:
    """How to serve the adapter with vLLM: at start (``--lora-modules``), or loaded into a
    running server (``/v1/load_lora_adapter``); the adapter's name is the model to ask for."""
    base = config["base"]
    model = base["path"] if base.get("source") == "local" else base["given"]
    name = config["fine_tuned_model"]
    max_rank = next((r for r in VLLM_LORA_RANKS if r >= rank), rank)
    return {
        "model": name,
        "vllm": (
            f"vllm serve {model} --enable-lora --lora-modules {name}={adapter} "
            f"--max-lora-rank {max_rank}"
        ),
        "vllm_load_lora_adapter": {
            "env": "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
            "request": "POST /v1/load_lora_adapter",
            "body": {"lora_name": name, "lora_path": str(adapter)},
        },
    }


def _file_record(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    if not meta:
        return None
    return {k: meta.get(k) for k in ("id", "filename", "source", "sha256", "bytes", "rows")}


def _export_record(config: dict[str, Any]) -> dict[str, Any]:
    """The export trained on: its directory, manifest and counts (as they were at upload),
    and each file's sha256 and row count."""
    export = config["training_file"].get("export") or {}
    return {
        "dir": export.get("dir"),
        "manifest": export.get("manifest"),
        "counts": export.get("counts"),
        "train": _file_record(config["training_file"]),
        "valid": _file_record(config.get("validation_file")),
    }


def _final(points: list[dict[str, Any]], key: str) -> float | None:
    values = [p[key] for p in points if p.get(key) is not None]
    return values[-1] if values else None


def train(run: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Train the job in ``run``; the changes to its job.json."""
    plan = plan_from(run, config)
    jobfiles.add_event(
        run,
        f"preparing {plan.train_file.name}: {plan.method}, base {config['base']['given']}, "
        f"device {plan.device.type} ({plan.device.precision})",
    )
    prepared = prepare(plan)
    if prepared.counts["too_long"]:
        jobfiles.add_event(
            run,
            f"{prepared.counts['too_long']} rows longer than max_length {plan.max_length} "
            "left nothing to train on and were dropped",
            level="warn",
        )
    trainer = build_trainer(plan, prepared, [_recorder(run, prepared.valid is not None)])
    steps = total_steps(plan, len(prepared.train))
    done = jobfiles.checkpoints(run)
    resume_from = None
    if done:
        step, resume_from = done[-1]
        _drop_metrics_after(run, step)
        jobfiles.add_event(run, f"resuming from checkpoint-{step} (step {step} of {steps})")
    else:
        jobfiles.add_event(run, f"training {len(prepared.train)} rows for {steps} steps")
    started = time.time()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    adapter = run / jobfiles.ADAPTER
    model: Any = trainer.model
    if "ref" in getattr(model, "peft_config", {}):
        # DPO from a previous adapter trains against a frozen copy of it, named "ref"
        model.delete_adapter("ref")
    model.save_pretrained(adapter)
    trained_tokens = prepared.tokens * plan.epochs
    merged = None
    if plan.merge:
        merged = run / jobfiles.MERGED
        model.merge_and_unload().save_pretrained(merged)
        prepared.tokenizer.save_pretrained(merged)
        jobfiles.add_event(run, f"merged model written to {merged}")
    points = jobfiles.read_jsonl(run / jobfiles.METRICS)
    targets = getattr(model, "peft_config", {}).get("default")
    resolved: Any = plan.lora_targets
    if targets is not None and not isinstance(targets.target_modules, str):
        resolved = sorted({name.rsplit(".", 1)[-1] for name in targets.target_modules})
    hyperparameters = {**plan.hyperparameters(), "lora_targets": resolved}
    manifest = {
        "job": config["id"],
        "fine_tuned_model": config["fine_tuned_model"],
        "method": plan.method,
        "base_model": config["base"],
        "parent": plan.parent,
        "adapter": str(adapter),
        "merged": str(merged) if merged else None,
        "export": _export_record(config),
        "hyperparameters": hyperparameters,
        "chat_template": prepared.template_source,
        "training": {
            "rows": {k: v for k, v in prepared.counts.items() if v},
            "steps": trainer.state.global_step,
            "trained_tokens": trained_tokens,
            "train_loss_final": _final(points, "train_loss"),
            "valid_loss_final": _final(points, "valid_loss"),
            "seconds_this_run": round(time.time() - started, 1),
            "resumed_from_step": done[-1][0] if done else None,
        },
        "device": plan.device.as_dict(),
        "versions": versions(),
        "serve": serving(config, adapter, plan.lora_r),
    }
    jobfiles.write_json(run / jobfiles.MANIFEST, manifest)
    jobfiles.add_event(run, f"adapter written to {adapter}")
    return {
        "trained_tokens": trained_tokens,
        "adapter_path": str(adapter),
        "merged_path": str(merged) if merged else None,
        "hyperparameters": hyperparameters,
        "device": plan.device.as_dict(),
        "result_files": [str(run / jobfiles.METRICS)],
    }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m exporter.finetune.local.train RUN_DIR", file=sys.stderr)
        return 2
    run = Path(args[0])
    config = jobfiles.read_json(run / jobfiles.CONFIG)
    if not config:
        print(f"{run}: no {jobfiles.CONFIG}", file=sys.stderr)
        return 2
    try:
        lock = jobfiles.hold_lock(run)
    except OSError:
        print(f"{run}: another process is training this job", file=sys.stderr)
        return 1

    def stop(signum: int, frame: Any) -> None:
        raise Cancelled

    signal.signal(signal.SIGTERM, stop)
    jobfiles.update_job(run, status="running", pid=os.getpid(), error=None, finished_at=None)
    jobfiles.add_event(run, f"training process {os.getpid()} started")
    try:
        changes = train(run, config)
    except (Cancelled, KeyboardInterrupt):
        jobfiles.update_job(run, status="cancelled", finished_at=int(time.time()))
        jobfiles.add_event(run, "cancelled: the training process stopped", level="warn")
        return 143
    except Exception as exc:
        traceback.print_exc()
        message = _one_line(exc)
        jobfiles.update_job(
            run, status="failed", finished_at=int(time.time()), error={"message": message}
        )
        jobfiles.add_event(
            run, f"failed: {message} (details in {run / jobfiles.LOG})", level="error"
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    jobfiles.update_job(
        run,
        status="succeeded",
        finished_at=int(time.time()),
        fine_tuned_model=config["fine_tuned_model"],
        **changes,
    )
    jobfiles.add_event(run, f"succeeded: {config['fine_tuned_model']}")
    os.close(lock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
