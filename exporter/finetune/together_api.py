"""``FineTuneBackend`` over Together AI's fine-tuning API, through Together's official SDK.

    gateway finetune DATA --backend together --base meta-llama/Meta-Llama-3.1-8B-Instruct-Reference

The SDK (``together``) is an optional dependency, ``pip install '.[hosted]'``, imported only
when this backend is built. The key comes from ``--api-key`` or ``$TOGETHER_API_KEY``; the
service from ``--api-base`` or ``$TOGETHER_BASE_URL`` (``https://api.together.ai``; a trailing
``/v1`` is dropped, the SDK adds it). ``--header`` values go on every call.

What is sent:
- upload: the SDK's own file check, then its upload (presigned PUT, or multipart for big
  files); the server's validation report is read back and a refused file is an error at once.
- create: ``model`` (or ``from_checkpoint`` when continuing from a previous student),
  supervised -> ``sft`` (``train_on_inputs: auto``: weights in the rows are honoured),
  dpo -> ``dpo`` (``--dpo-beta``); LoRA by default (``--lora-r``, ``--lora-alpha``,
  ``--lora-dropout``; the model's default rank otherwise) or ``--training full``. The export's
  epochs and batch size are moved into the model's limits (Together's LoRA batches start at
  8); Together takes an absolute ``--learning-rate`` (its default 1e-5), so OpenAI's learning
  rate multiplier is not used. With a validation file the job evaluates ``n_evals`` times
  (default 10), which gives the validation loss.
- status: Together's ``pending/queued/running/uploading/completed/error/cancelled`` (the last
  three read as succeeded/failed/cancelled); the trained model is the job's ``output_name``,
  served by Together's chat endpoint under that name once the job completes.
- metrics: ``GET /v1/fine-tunes/{id}/metrics`` (``train/loss`` per step, ``eval/loss`` per
  evaluation), so the loop draws loss.png as for any backend; events: Together's events.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from exporter.errors import BackendError
from exporter.finetune.backend import Job, JobEvent, JobSpec, MetricPoint

if TYPE_CHECKING:
    import together

DEFAULT_BASE_URL = "https://api.together.ai"
KEY_VARIABLE = "TOGETHER_API_KEY"
STATUS = {
    "completed": "succeeded",
    "error": "failed",
    "user_error": "failed",
    "cancelled": "cancelled",
}
"""Together's terminal statuses as the loop reads them; the others are kept as they are."""
DEFAULT_EVALS = 10
VALIDATING = ("PENDING", "QUEUED", "RUNNING")
VALIDATION_WAIT_S = 300.0
SUGGESTED_MODELS = 4

T = TypeVar("T")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _epoch(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _message(body: Any, fallback: str) -> str:
    """The service's own words from an error body (``{"error": {"message"}}`` or
    ``{"message"}``)."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return _one_line(error["message"])
        if isinstance(body.get("message"), str):
            return _one_line(body["message"])
    return _one_line(fallback)


def job_from(raw: dict[str, Any], base_model: str = "") -> Job:
    """The loop's Job from Together's job object. ``raw`` keeps the object, less its events,
    plus what the loop's readers take from any saved job: ``fine_tuned_model`` (the
    ``output_name`` once completed), ``hyperparameters`` and ``trained_tokens``."""
    events = raw.pop("events", None) or []
    status = str(raw.get("status") or "unknown")
    mapped = STATUS.get(status, status)
    method = raw.get("training_method") or {}
    kind = raw.get("training_type") or {}
    hyperparameters = {
        key: raw[key]
        for key in ("n_epochs", "batch_size", "learning_rate", "n_evals", "n_checkpoints")
        if raw.get(key) is not None
    }
    if isinstance(kind, dict) and kind.get("type"):
        hyperparameters["training_type"] = kind
    if isinstance(method, dict) and method.get("method"):
        hyperparameters["training_method"] = method
    error = None
    if mapped == "failed":
        said = [
            e.get("message") for e in events if isinstance(e, dict) and e.get("level") == "error"
        ]
        error = said[-1] if said and isinstance(said[-1], str) else f"the job ended in {status}"
    tokens = raw.get("token_count")
    epochs = raw.get("n_epochs")
    trained = None
    if mapped == "succeeded" and isinstance(tokens, int) and isinstance(epochs, int):
        trained = tokens * epochs
    model = raw.get("model_output_name") if mapped == "succeeded" else None
    # What `register` and the lineage read from a saved job, whichever service ran it.
    raw.update(fine_tuned_model=model, hyperparameters=hyperparameters, trained_tokens=trained)
    return Job(
        id=str(raw["id"]),
        status=mapped,
        base_model=str(raw.get("model") or base_model),
        fine_tuned_model=model,
        created_at=_epoch(raw.get("created_at")),
        finished_at=_epoch(raw.get("updated_at")) if mapped in STATUS.values() else None,
        trained_tokens=trained,
        hyperparameters=hyperparameters,
        error=error,
        raw=raw,
    )


def metrics_from_rows(rows: list[dict[str, Any]]) -> list[MetricPoint]:
    """Together's metrics rows (``train/loss`` or ``eval/loss``, each with
    ``train/global_step``), one point per step."""
    train: dict[int, float] = {}
    valid: dict[int, float] = {}
    for row in rows:
        step = _float(row.get("train/global_step"))
        if step is None:
            continue
        loss = _float(row.get("train/loss"))
        if loss is not None:
            train[int(step)] = loss
        loss = _float(row.get("eval/loss"))
        if loss is not None:
            valid[int(step)] = loss
    return [
        MetricPoint(step=step, train_loss=train.get(step), valid_loss=valid.get(step))
        for step in sorted(set(train) | set(valid))
    ]


class TogetherBackend:
    name = "together"

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        training: str | None = None,
        lora_r: int | None = None,
        lora_alpha: float | None = None,
        lora_dropout: float | None = None,
        learning_rate: float | None = None,
        dpo_beta: float | None = None,
        n_evals: int | None = None,
        n_checkpoints: int | None = None,
    ) -> None:
        key = api_key or os.environ.get(KEY_VARIABLE, "")
        if not key:
            raise BackendError(
                f"no Together API key: set {KEY_VARIABLE} (or give --api-key) for --backend "
                "together"
            )
        if training not in (None, "lora", "full"):
            raise BackendError(f"--training {training}: give lora or full")
        try:
            import together as sdk
        except ImportError:
            raise BackendError(
                "--backend together needs Together's SDK: pip install 'distillation-gateway"
                "[hosted]' (or pip install together)"
            ) from None
        self._sdk = sdk
        base = (base_url or os.environ.get("TOGETHER_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = base.removesuffix("/v1")
        self.training = training or "lora"
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.learning_rate = learning_rate
        self.dpo_beta = dpo_beta
        self.n_evals = n_evals
        self.n_checkpoints = n_checkpoints
        self._client: together.Together = sdk.Together(
            api_key=key,
            base_url=self.base_url,
            default_headers=headers or None,
            timeout=60.0,
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, with the SDK's errors as one-line BackendErrors in the service's words."""
        sdk = self._sdk
        try:
            return call()
        except sdk.APIStatusError as exc:
            message = _message(exc.body, exc.message)
            hint = f" (check {KEY_VARIABLE} or --api-key)" if exc.status_code == 401 else ""
            raise BackendError(f"{what}: {exc.status_code} {message}{hint}") from None
        except sdk.APIConnectionError as exc:
            raise BackendError(
                f"{what}: cannot reach {self.base_url} ({_one_line(str(exc))})"
            ) from None
        except (ValueError, sdk.FileTypeError) as exc:
            raise BackendError(f"{what}: {_one_line(str(exc))}") from None

    # ------------------------------------------------------------------ files

    def upload(self, path: Path, purpose: str = "fine-tune") -> str:
        from together.lib import check_file

        report = check_file(path, purpose=purpose)
        if not report.get("is_check_passed"):
            raise BackendError(
                f"{path}: {_one_line(report.get('message') or 'refused')} (Together's file check)"
            )
        uploaded = self._call(
            f"uploading {path}",
            lambda: self._client.files.upload(path, purpose=purpose, check=False),
        )
        self._validated(uploaded.id, path)
        return str(uploaded.id)

    def _validated(self, file_id: str, path: Path) -> None:
        """Wait for the server's checks of an upload; a BackendError when they refuse it."""
        deadline = time.monotonic() + VALIDATION_WAIT_S
        while True:
            found = self._call(f"checking {path}", lambda: self._client.files.retrieve(file_id))
            status = found.processing_status or "COMPLETED"
            if status not in VALIDATING:
                break
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{path}: Together is still validating {file_id}; try again later"
                )
            time.sleep(1.0)
        report = found.validation_report
        if status in ("FAILED", "INVALID_FORMAT") or (report is not None and not report.valid):
            reason = report.error if report is not None and report.error else status.lower()
            raise BackendError(f"{path}: Together refused the file: {_one_line(reason)}")

    # ------------------------------------------------------------------ jobs

    def check_base(self, model: str) -> None:
        """A base model Together does not fine-tune is an error before anything is uploaded."""
        self._limits(model)

    def _limits(self, model: str) -> Any:
        try:
            return self._client.fine_tuning.model_limits(model_name=model)
        except self._sdk.NotFoundError:
            raise BackendError(self._unknown_model(model)) from None
        except self._sdk.APIError:
            return self._call(
                f"limits of {model}",
                lambda: self._client.fine_tuning.model_limits(model_name=model),
            )

    def _unknown_model(self, model: str) -> str:
        try:
            listed: Any = self._client.get("/v1/fine-tunes/models/supported", cast_to=object)
            given = listed.get("models") if isinstance(listed, dict) else None
            models = [m for m in given or [] if isinstance(m, str)]
        except self._sdk.APIError:
            models = []
        some = ", ".join(models[:SUGGESTED_MODELS])
        choices = f" (e.g. {some}; {len(models)} in all)" if models else ""
        return (
            f"--base {model}: Together does not fine-tune this model; give --base one of the "
            f"models GET /v1/fine-tunes/models/supported lists{choices}"
        )

    def create(self, spec: JobSpec) -> Job:
        limits = self._limits(spec.base_model)
        dpo = spec.method == "dpo"
        full = self.training == "full"
        if full and not limits.supports_full_training:
            raise BackendError(
                f"--training full: Together trains {spec.base_model} with LoRA only; drop "
                "--training full"
            )
        if self.dpo_beta is not None and not dpo:
            raise BackendError("--dpo-beta: the export holds chat rows, not preference rows")
        given = spec.hyperparameters
        epochs = min(max(1, given.n_epochs or 1), limits.max_num_epochs)
        sizes = limits.full_training if full else limits.lora_training
        batch: int | str = "max"
        if given.batch_size is not None and sizes is not None:
            top = sizes.max_batch_size_dpo if dpo else sizes.max_batch_size
            batch = min(max(given.batch_size, sizes.min_batch_size), top)
        evals = self.n_evals if self.n_evals is not None else DEFAULT_EVALS
        evals = min(evals, limits.max_num_evals) if spec.validation_file else 0
        options: dict[str, Any] = {
            "training_file": spec.training_file,
            "validation_file": spec.validation_file or "",
            "n_epochs": epochs,
            "n_evals": evals,
            "n_checkpoints": min(self.n_checkpoints or 1, limits.max_num_checkpoints),
            "batch_size": batch,
            "lora": not full,
            "suffix": spec.suffix,
            "random_seed": spec.seed,
            "training_method": "dpo" if dpo else "sft",
            "model_limits": limits,
        }
        if spec.parent:
            options["from_checkpoint"] = spec.parent
        else:
            options["model"] = spec.base_model
        if not dpo:
            options["train_on_inputs"] = "auto"
        elif self.dpo_beta is not None:
            options["dpo_beta"] = self.dpo_beta
        if self.learning_rate is not None:
            options["learning_rate"] = self.learning_rate
        if not full:
            options["lora_r"] = self.lora_r
            options["lora_alpha"] = self.lora_alpha
            if self.lora_dropout is not None:
                options["lora_dropout"] = self.lora_dropout
        created = self._call(
            f"creating a job on {spec.base_model}",
            lambda: self._client.fine_tuning.create(**options),
        )
        return job_from(created.to_dict(mode="json"), spec.base_model)

    def get(self, job_id: str) -> Job:
        found = self._call(f"job {job_id}", lambda: self._client.fine_tuning.retrieve(job_id))
        return job_from(found.to_dict(mode="json"))

    def list_jobs(self, limit: int = 20) -> list[Job]:
        listed = self._call("listing jobs", lambda: self._client.fine_tuning.list())
        jobs = [job_from(item.to_dict(mode="json")) for item in listed.data]
        jobs.sort(key=lambda job: job.created_at or 0, reverse=True)
        return jobs[:limit]

    def events(self, job_id: str) -> list[JobEvent]:
        listed = self._call(
            f"events of {job_id}", lambda: self._client.fine_tuning.list_events(job_id)
        )
        events = []
        for number, item in enumerate(listed.data):
            raw = item.to_dict(mode="json")
            data = {
                key: raw[key]
                for key in ("step", "total_steps", "checkpoint_path", "model_path", "token_count")
                if raw.get(key) is not None
            }
            events.append(
                JobEvent(
                    id=str(raw.get("hash") or f"{job_id}-{number}"),
                    created_at=_epoch(raw.get("created_at")) or 0,
                    level=str(raw.get("level") or "info"),
                    message=str(raw.get("message") or ""),
                    type=str(raw.get("type") or "message"),
                    data=data or None,
                )
            )
        return events

    def cancel(self, job_id: str) -> Job:
        cancelled = self._call(
            f"cancelling {job_id}", lambda: self._client.fine_tuning.cancel(job_id)
        )
        return job_from(cancelled.to_dict(mode="json"))

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """The job's saved checkpoints (``from_checkpoint`` takes ``JOB:STEP``)."""
        listed = self._call(
            f"checkpoints of {job_id}", lambda: self._client.fine_tuning.list_checkpoints(job_id)
        )
        return [item.to_dict(mode="json") for item in listed.data]

    def metrics(self, job: Job) -> list[MetricPoint]:
        listed = self._call(
            f"metrics of {job.id}", lambda: self._client.fine_tuning.list_metrics(job.id)
        )
        return metrics_from_rows(list(listed.metrics or []))
