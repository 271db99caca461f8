"""The training process of a local job: ``python -m exporter.finetune.local.train RUN_DIR``.

Started in the background by ``LocalBackend.create`` (and ``resume``) with the job's directory;
reads ``config.json`` there, trains a LoRA adapter with TRL (``SFTTrainer`` for chat rows,
``DPOTrainer`` for preference rows), and writes what ``state`` describes: the job's status,
events, per-step metrics, checkpoints, the adapter, the merged model (``merge``) and the
manifest. It holds the job's lock while it lives. A job directory with checkpoints is resumed
from the last one: the step count goes on and the metrics logged after that checkpoint are
dropped (they are trained again), so the loss curve stays one curve.

What it trains is read in ``plan`` (the config with its defaults, the device), and the trainer
that trains it is built in ``trainer``; this module runs it as the job's process and records it.

Fault injection for tests: ``GATEWAY_FINETUNE_PAUSE_AT_STEP=N`` stops the process (SIGSTOP)
once step N's loss is logged, so a test can kill it at a known point and resume the job.
"""

from __future__ import annotations

import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from exporter.finetune.local import state as jobfiles
from exporter.finetune.local.plan import plan_from
from exporter.finetune.local.trainer import build_trainer, prepare, total_steps

if TYPE_CHECKING:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

PAUSE_ENV = "GATEWAY_FINETUNE_PAUSE_AT_STEP"


class Cancelled(Exception):
    """SIGTERM: ``cancel`` asked the job to stop."""


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
