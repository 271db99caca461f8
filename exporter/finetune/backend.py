"""The interface a fine-tuning service or a local trainer implements.

OpenAI's self-serve fine-tuning is being wound down, so nothing above this interface knows
which service trains: ``openai_api.OpenAIBackend`` speaks the OpenAI files + fine_tuning API
(OpenAI itself, the simulator, and the open-model trainers that copy that API); a local
trainer implements the same seven methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Hyperparameters:
    n_epochs: int | None = None
    batch_size: int | None = None
    learning_rate_multiplier: float | None = None
    """None: the service picks ("auto")."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_epochs": self.n_epochs if self.n_epochs is not None else "auto",
            "batch_size": self.batch_size if self.batch_size is not None else "auto",
            "learning_rate_multiplier": (
                self.learning_rate_multiplier
                if self.learning_rate_multiplier is not None
                else "auto"
            ),
        }


@dataclass(frozen=True, slots=True)
class JobSpec:
    base_model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters = Hyperparameters()
    method: str = "supervised"
    """``supervised`` (chat rows) or ``dpo`` (preference rows)."""
    suffix: str | None = None
    seed: int | None = None
    parent: str | None = None
    """Continue from this model instead of ``base_model``'s own weights: the previous student
    (a fine-tuned model name, a hosted checkpoint, or a local adapter directory), recorded in
    the new student's lineage. ``base_model`` stays the model both were trained from."""


@dataclass(slots=True)
class Job:
    id: str
    status: str
    base_model: str
    fine_tuned_model: str | None = None
    created_at: int | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    result_files: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: str
    created_at: int
    level: str
    message: str
    type: str = "message"
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class MetricPoint:
    step: int
    train_loss: float | None = None
    train_accuracy: float | None = None
    valid_loss: float | None = None
    valid_accuracy: float | None = None


class FineTuneBackend(Protocol):
    name: str

    def upload(self, path: Path, purpose: str = "fine-tune") -> str:
        """Upload a file; its id."""
        ...

    def create(self, spec: JobSpec) -> Job: ...

    def get(self, job_id: str) -> Job: ...

    def list_jobs(self, limit: int = 20) -> list[Job]:
        """The newest jobs first."""
        ...

    def events(self, job_id: str) -> list[JobEvent]:
        """Every event of the job, oldest first."""
        ...

    def cancel(self, job_id: str) -> Job: ...

    def metrics(self, job: Job) -> list[MetricPoint]:
        """Per-step metrics, from the result file when the job has one, else its events."""
        ...
