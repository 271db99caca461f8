"""A simulated Together fine-tuning job in time: its phases (pending, queued, running,
uploading, then completed, or an error or a cancel), the events and checkpoints it has shown by
a given moment, and how Together describes it. ``together_jobs`` creates jobs and serves them."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

from simulator.together_data import Run
from simulator.together_models import BaseModel
from simulator.together_store import STORAGE, USER_ID, iso

CANCEL_S = 0.2
PHASES = (0.05, 0.05, 0.85, 0.05)
"""Shares of the run time: pending, queued, running, uploading."""
PHASE_NAMES = ("pending", "queued", "running", "uploading")
TERMINAL = ("completed", "cancelled", "error", "user_error")


@dataclass
class Job:
    id: str
    created_at: float
    base: BaseModel
    output_name: str
    request: dict[str, Any]
    """The job's settings as Together reports them (model, files, hyperparameters, types)."""
    run: Run
    token_count: int
    phases: tuple[float, float, float, float, float]
    """When it becomes queued, running, uploading, completed; and when it fails (or inf)."""
    timeline: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    cancel_at: float | None = None

    @property
    def running_at(self) -> float:
        return self.phases[1]

    def step_at(self, step: int) -> float:
        run_s = self.phases[2] - self.phases[1]
        return self.running_at + run_s * step / max(1, self.run.total_steps)

    def stopped_at(self) -> float:
        """When training stops: the end, a failure or a cancel."""
        return min(self.phases[4], self.cancel_at if self.cancel_at is not None else math.inf)

    def status(self, now: float) -> str:
        if self.cancel_at is not None and now >= self.cancel_at:
            return "cancelled" if now >= self.cancel_at + CANCEL_S else "cancel_requested"
        if now >= self.phases[4]:
            return "error"
        for status, until in zip(PHASE_NAMES, self.phases[:4], strict=True):
            if now < until:
                return status
        return "completed"

    def events(self, now: float) -> list[dict[str, Any]]:
        stop = self.stopped_at()
        shown = [event for at, event in self.timeline if at <= now and at <= stop]
        if self.cancel_at is not None:
            if now >= self.cancel_at:
                shown.append(self._event(self.cancel_at, "cancel_requested", "Cancel requested"))
            if now >= self.cancel_at + CANCEL_S:
                shown.append(
                    self._event(self.cancel_at + CANCEL_S, "job_stopped", "Job cancelled by user")
                )
        return shown

    def revealed_rows(self, now: float) -> list[tuple[int, dict[str, float]]]:
        until = min(now, self.stopped_at())
        return [(step, row) for step, row in self.run.rows if self.step_at(step) <= until]

    def checkpoints(self, now: float) -> list[dict[str, Any]]:
        until = min(now, self.stopped_at())
        found = [
            {
                "step": step,
                "created_at": iso(self.step_at(step)),
                "path": f"{STORAGE}/{self.id}/checkpoint-{step}",
                "checkpoint_type": f"Intermediate (step {step})",
                "checkpoint": "adapter" if self.lora else "model",
                "object_name": f"{self.output_name}:{step}",
            }
            for step in self.run.checkpoint_steps
            if self.step_at(step) <= until
        ]
        if self.status(now) == "completed":
            final = self.run.total_steps
            found.append(
                {
                    "step": final,
                    "created_at": iso(self.phases[3]),
                    "path": f"{STORAGE}/{self.id}/final",
                    "checkpoint_type": "Final",
                    "checkpoint": "adapter" if self.lora else "model",
                    "object_name": self.output_name,
                }
            )
        return found

    @property
    def lora(self) -> bool:
        return bool(self.request["training_type"].get("type") == "Lora")

    def _event(
        self, at: float, kind: str, message: str, level: str = "info", **extra: Any
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "object": "fine-tune-event",
            "created_at": iso(at),
            "level": level,
            "message": message,
            "type": kind,
            "param_count": None,
            "token_count": None,
            "total_steps": None,
            "wandb_url": None,
            "step": None,
            "checkpoint_path": None,
            "model_path": None,
            "training_offset": None,
            "hash": hashlib.sha256(f"{self.id}:{kind}:{at}:{message}".encode()).hexdigest()[:32],
        }
        event.update(extra)
        return event

    def plan(self) -> None:
        """Lay out the job's events in time, from creation to the end (or the failure)."""
        model = self.request["model"]
        total = self.run.total_steps
        at_run, at_upload, at_done, at_fail = self.phases[1:]

        def add(at: float, kind: str, message: str, **extra: Any) -> None:
            self.timeline.append((at, self._event(at, kind, message, **extra)))

        def clock(at: float) -> str:
            return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(at))

        add(self.created_at, "job_pending", "Fine tune request created")
        add(at_run, "job_start", f"Job started at {clock(at_run)}")
        add(at_run, "model_downloading", f"Model data downloading for {model}")
        add(at_run, "model_download_complete", f"Model data downloaded for {model}")
        add(at_run, "training_data_downloading", "Training data downloading")
        add(
            at_run,
            "training_data_download_complete",
            f"Training data downloaded for {model}",
            token_count=self.token_count,
        )
        if self.request.get("validation_file"):
            add(at_run, "validation_data_downloading", "Validation data downloading")
            add(at_run, "validation_data_download_complete", "Validation data downloaded")
        params = int(self.base.size_b * 1e9)
        message = f"Training started for model {model}"
        add(at_run, "training_start", message, total_steps=total, param_count=params)
        saved = set(self.run.checkpoint_steps)
        for step in range(1, total + 1):
            at = self.step_at(step)
            if step in saved:
                path = f"{STORAGE}/{self.id}/checkpoint-{step}"
                message = f"New checkpoint saved at step {step}"
                add(at, "checkpoint_save", message, step=step, checkpoint_path=path)
            if step % self.run.steps_per_epoch == 0:
                add(at, "epoch_complete", f"Epoch completed, at step {step}", step=step)
        if at_fail < math.inf:
            step = int(total * (at_fail - at_run) / max(1e-9, at_upload - at_run))
            message = f"Training failed at step {step}: the loss became NaN (simulated)"
            add(at_fail, "job_error", message, level="error", step=step)
            return
        add(at_upload, "training_complete", f"Training completed for {model} at {clock(at_upload)}")
        add(at_upload, "model_uploading", "Uploading output model")
        add(at_done, "model_upload_complete", "Model upload complete", model_path=self.output_name)
        add(at_done, "job_complete", f"Job finished at {iso(at_done)}", model_path=self.output_name)

    def describe(self, now: float, full: bool) -> dict[str, Any]:
        status = self.status(now)
        rows = self.revealed_rows(now)
        steps = max((step for step, _ in rows), default=0)
        evals = sum(1 for _, row in rows if "eval/loss" in row)
        started = self.running_at if now >= self.running_at else None
        remaining = max(0.0, (self.phases[3] if status != "pending" else self.phases[0]) - now)
        described: dict[str, Any] = {
            "id": self.id,
            "status": status,
            "user_id": USER_ID,
            "owner_address": USER_ID,
            "created_at": iso(self.created_at),
            "updated_at": iso(min(now, self.phases[3])),
            "started_at": iso(started) if started is not None else None,
            **self.request,
            "model_output_name": self.output_name,
            "adapter_output_name": f"{self.output_name}-adapter" if self.lora else None,
            "token_count": self.token_count,
            "param_count": int(self.base.size_b * 1e9),
            "total_steps": self.run.total_steps,
            "steps_completed": steps,
            "epochs_completed": steps // self.run.steps_per_epoch,
            "evals_completed": evals,
            "eval_steps": self.run.eval_steps[0] if self.run.eval_steps else None,
            "queue_depth": 0 if status != "queued" else 1,
            "progress": {
                "estimate_available": status in ("pending", "queued", "running", "uploading"),
                "seconds_remaining": math.ceil(remaining),
            },
        }
        if status == "completed":
            described["model_output_path"] = f"{STORAGE}/{self.id}/final"
        if full:
            described["events"] = self.events(now)
        return described
