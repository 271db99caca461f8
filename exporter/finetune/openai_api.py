"""``FineTuneBackend`` over the OpenAI files + fine_tuning HTTP API (httpx).

Works against OpenAI, the simulator, and any service with the same API: give its base URL
(``https://api.openai.com/v1`` by default, or ``$OPENAI_BASE_URL``) and key. Every failure
becomes a ``BackendError`` carrying the service's own message. ``transport`` is the test seam.
"""

from __future__ import annotations

import base64
import csv
import io
import os
from pathlib import Path
from typing import Any

import httpx

from exporter.errors import BackendError
from exporter.finetune.backend import Job, JobEvent, JobSpec, MetricPoint

DEFAULT_BASE_URL = "https://api.openai.com/v1"
TIMEOUT = httpx.Timeout(30.0, connect=5.0, write=300.0)


def _float(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def job_from(raw: dict[str, Any]) -> Job:
    error = raw.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return Job(
        id=raw["id"],
        status=raw.get("status", "unknown"),
        base_model=raw.get("model", ""),
        fine_tuned_model=raw.get("fine_tuned_model"),
        created_at=raw.get("created_at"),
        finished_at=raw.get("finished_at"),
        trained_tokens=raw.get("trained_tokens"),
        hyperparameters=raw.get("hyperparameters") or {},
        error=message,
        result_files=list(raw.get("result_files") or []),
        raw=raw,
    )


def metrics_from_csv(text: str) -> list[MetricPoint]:
    """OpenAI's result file: step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy."""
    points = []
    for row in csv.DictReader(io.StringIO(text)):
        step = _float(row.get("step"))
        if step is None:
            continue
        points.append(
            MetricPoint(
                step=int(step),
                train_loss=_float(row.get("train_loss")),
                train_accuracy=_float(row.get("train_accuracy")),
                valid_loss=_float(row.get("valid_loss")),
                valid_accuracy=_float(row.get("valid_mean_token_accuracy")),
            )
        )
    return points


def metrics_from_events(events: list[JobEvent]) -> list[MetricPoint]:
    points = []
    for event in events:
        data = event.data or {}
        if event.type != "metrics" or "step" not in data:
            continue
        points.append(
            MetricPoint(
                step=int(data["step"]),
                train_loss=_float(data.get("train_loss")),
                train_accuracy=_float(data.get("train_mean_token_accuracy")),
                valid_loss=_float(data.get("valid_loss") or data.get("full_valid_loss")),
                valid_accuracy=_float(
                    data.get("valid_mean_token_accuracy")
                    or data.get("full_valid_mean_token_accuracy")
                ),
            )
        )
    return sorted(points, key=lambda p: p.step)


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={**({"authorization": f"Bearer {key}"} if key else {}), **(headers or {})},
            timeout=TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendError(f"{self.base_url}{path}: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300] or response.reason_phrase
            raise BackendError(f"{method} {path}: {response.status_code} {message}")
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            value = self._call(method, path, **kwargs).json()
        except ValueError:
            raise BackendError(f"{method} {path}: the answer is not JSON") from None
        if not isinstance(value, dict):
            raise BackendError(f"{method} {path}: unexpected answer")
        return value

    def upload(self, path: Path, purpose: str = "fine-tune") -> str:
        try:
            with path.open("rb") as file:
                answer = self._json(
                    "POST", "/files", files={"file": (path.name, file)}, data={"purpose": purpose}
                )
        except OSError as exc:
            raise BackendError(f"cannot read {path}: {exc.strerror}") from None
        return str(answer["id"])

    def create(self, spec: JobSpec) -> Job:
        body: dict[str, Any] = {
            # OpenAI continues training a fine-tuned model given as the model itself.
            "model": spec.parent or spec.base_model,
            "training_file": spec.training_file,
            "method": {
                "type": spec.method,
                spec.method: {"hyperparameters": spec.hyperparameters.as_dict()},
            },
        }
        if spec.validation_file:
            body["validation_file"] = spec.validation_file
        if spec.suffix:
            body["suffix"] = spec.suffix
        if spec.seed is not None:
            body["seed"] = spec.seed
        return job_from(self._json("POST", "/fine_tuning/jobs", json=body))

    def get(self, job_id: str) -> Job:
        return job_from(self._json("GET", f"/fine_tuning/jobs/{job_id}"))

    def list_jobs(self, limit: int = 20) -> list[Job]:
        answer = self._json("GET", "/fine_tuning/jobs", params={"limit": limit})
        return [job_from(raw) for raw in answer.get("data", [])]

    def events(self, job_id: str) -> list[JobEvent]:
        events: list[JobEvent] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["after"] = after
            answer = self._json("GET", f"/fine_tuning/jobs/{job_id}/events", params=params)
            page = answer.get("data", [])
            events += [
                JobEvent(
                    id=raw["id"],
                    created_at=int(raw.get("created_at", 0)),
                    level=raw.get("level", "info"),
                    message=raw.get("message", ""),
                    type=raw.get("type") or "message",
                    data=raw.get("data") if isinstance(raw.get("data"), dict) else None,
                )
                for raw in page
            ]
            if not answer.get("has_more") or not page:
                break
            after = page[-1]["id"]
        events.reverse()  # the API lists newest first
        return events

    def cancel(self, job_id: str) -> Job:
        return job_from(self._json("POST", f"/fine_tuning/jobs/{job_id}/cancel"))

    def metrics(self, job: Job) -> list[MetricPoint]:
        for file_id in job.result_files:
            content = self._call("GET", f"/files/{file_id}/content").content
            text = content.decode("utf-8", "replace")
            if not text.startswith("step"):
                try:  # OpenAI serves result files base64-encoded
                    text = base64.b64decode(content, validate=False).decode("utf-8", "replace")
                except ValueError:
                    continue
            points = metrics_from_csv(text)
            if points:
                return points
        return metrics_from_events(self.events(job.id))
