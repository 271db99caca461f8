"""What Fireworks reports about a fine-tuning job, read into the backend's types: its state as
a status, its JSON (a supervised or a DPO job) as a ``Job``, its metrics file (JSON lines, the
losses under the usual names, merged by step) as ``MetricPoint``s, and the events derived from
them, since Fireworks has no events API. ``fireworks_api`` fetches what these read."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from exporter.finetune.backend import Job, JobEvent, MetricPoint

STATUSES = {
    "JOB_STATE_COMPLETED": "succeeded",
    "JOB_STATE_EARLY_STOPPED": "succeeded",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_EXPIRED": "failed",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_CREATING": "queued",
    "JOB_STATE_PENDING": "queued",
    "JOB_STATE_CREATING_INPUT_DATASET": "queued",
    "JOB_STATE_VALIDATING": "validating_files",
    "JOB_STATE_CANCELLING": "cancelling",
    "JOB_STATE_PAUSED": "paused",
}
TRAIN_LOSS_KEYS = ("train_loss", "loss", "train/loss", "training_loss")
EVAL_LOSS_KEYS = ("eval_loss", "valid_loss", "eval/loss", "validation_loss", "val_loss")
TRAIN_ACCURACY_KEYS = ("train_accuracy", "train_mean_token_accuracy", "accuracy")
EVAL_ACCURACY_KEYS = ("eval_accuracy", "valid_accuracy", "valid_mean_token_accuracy")


def _seconds(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def _number(row: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = row.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def metrics_from_jsonl(text: str) -> list[MetricPoint]:
    """A Fireworks metrics file: one JSON object per line, merged by ``step``."""
    merged: dict[int, dict[str, float | None]] = {}
    for line in text.splitlines():
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(row, dict):
            continue
        step = _number(row, ("step", "global_step"))
        if step is None:
            continue
        values = {
            "train_loss": _number(row, TRAIN_LOSS_KEYS),
            "train_accuracy": _number(row, TRAIN_ACCURACY_KEYS),
            "valid_loss": _number(row, EVAL_LOSS_KEYS),
            "valid_accuracy": _number(row, EVAL_ACCURACY_KEYS),
        }
        kept = merged.setdefault(int(step), {})
        kept.update({key: value for key, value in values.items() if value is not None})
    return [
        MetricPoint(
            step=step,
            train_loss=values.get("train_loss"),
            train_accuracy=values.get("train_accuracy"),
            valid_loss=values.get("valid_loss"),
            valid_accuracy=values.get("valid_accuracy"),
        )
        for step, values in sorted(merged.items())
    ]


def _total_steps(points: list[MetricPoint], text: str, raw: dict[str, Any]) -> int:
    """A running job's steps in all (0: unknown): from the epoch the metrics file gives its
    last step and the job's epochs, else from its progress percent."""
    if not points:
        return 0
    last = points[-1].step
    config = raw.get("trainingConfig") if isinstance(raw.get("trainingConfig"), dict) else raw
    epochs = config.get("epochs") if isinstance(config, dict) else None
    for line in reversed(text.splitlines()):
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        epoch = _number(row, ("epoch",)) if isinstance(row, dict) else None
        if epoch and isinstance(epochs, int) and _number(row, ("step",)) == last:
            return max(last, round(last / epoch * epochs))
        break
    progress = raw.get("jobProgress")
    percent = progress.get("percent") if isinstance(progress, dict) else None
    if not isinstance(percent, int) or percent <= 0:
        return 0
    return max(last, round(last * 100 / percent))


def job_from(raw: dict[str, Any], base_of: Callable[[str], str]) -> Job:
    """A job as Fireworks describes it (a supervised or a DPO job), as the backend's ``Job``;
    ``base_of`` names the base under the LoRA model a job was warm-started from."""
    config = raw.get("trainingConfig") if isinstance(raw.get("trainingConfig"), dict) else raw
    assert isinstance(config, dict)
    state = str(raw.get("state") or "JOB_STATE_UNSPECIFIED")
    status = STATUSES.get(state, "running")
    output = config.get("outputModel")
    model = output if status == "succeeded" and isinstance(output, str) else None
    detail = raw.get("status") if isinstance(raw.get("status"), dict) else {}
    assert isinstance(detail, dict)
    error = (detail.get("message") or state) if status == "failed" else None
    name = str(raw.get("name") or "")
    hyperparameters = {
        "method": "dpo" if "/dpoJobs/" in name else "supervised",
        "n_epochs": config.get("epochs"),
        "batch_size": config.get("batchSizeSamples"),
        "batch_size_tokens": config.get("batchSize"),
        "learning_rate": config.get("learningRate"),
        "lora_rank": config.get("loraRank"),
    }
    base = config.get("baseModel")
    warm = config.get("warmStartFrom")
    if not base and isinstance(warm, str) and warm:
        base = base_of(warm)
    return Job(
        id=name.rsplit("/", 1)[-1],
        status=status,
        base_model=str(base or ""),
        fine_tuned_model=model,
        created_at=_seconds(raw.get("createTime")),
        finished_at=_seconds(raw.get("completedTime")),
        hyperparameters={k: v for k, v in hyperparameters.items() if v is not None},
        error=str(error) if error else None,
        raw={**raw, "fine_tuned_model": model},
    )


def job_events(raw: dict[str, Any], job: Job, text: str) -> list[JobEvent]:
    """The job's events, derived from what it shows (Fireworks has no events API): its creation,
    its current state or how it ended, and one ``metrics`` event per step of its metrics file
    (``text``)."""
    short, state = job.id, str(raw.get("state"))
    created = job.created_at or int(time.time())
    updated = _seconds(raw.get("updateTime")) or created
    kind = job.hyperparameters.get("method", "supervised")
    events = [
        JobEvent(
            f"{short}-created",
            created,
            "info",
            f"Created {kind} job {raw.get('name')}: {job.base_model} on {raw.get('dataset')}",
        )
    ]
    if not job.done:
        progress = raw.get("jobProgress")
        percent = progress.get("percent") if isinstance(progress, dict) else None
        said = f" ({percent}% done)" if percent else ""
        events.append(JobEvent(f"{short}-{state}", updated, "info", f"{state}{said}"))
    points = metrics_from_jsonl(text)
    total = len(points) if job.done else _total_steps(points, text, raw)
    for point in points:
        data: dict[str, Any] = {"step": point.step, "total_steps": total}
        message = f"Step {point.step}/{total or '?'}"
        if point.train_loss is not None:
            data["train_loss"] = point.train_loss
            message += f": training loss={point.train_loss:.2f}"
        if point.valid_loss is not None:
            data["valid_loss"] = point.valid_loss
            message += f", validation loss={point.valid_loss:.2f}"
        events.append(
            JobEvent(f"{short}-step-{point.step}", updated, "info", message, "metrics", data)
        )
    finished = job.finished_at or updated
    if job.status == "succeeded":
        events.append(
            JobEvent(
                f"{short}-done",
                finished,
                "info",
                f"New fine-tuned model: {job.fine_tuned_model}",
            )
        )
    elif job.done:
        level = "error" if job.status == "failed" else "info"
        detail = raw.get("status")
        reason = detail.get("message") if isinstance(detail, dict) else None
        why = f": {job.error or reason}" if job.error or reason else ""
        events.append(JobEvent(f"{short}-done", finished, level, f"{state}{why}"))
    return events
