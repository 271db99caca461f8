"""The fine-tuning jobs API: a job runs through its states in seconds, with loss curves.

POST /v1/fine_tuning/jobs                   create (model, training_file, validation_file,
                                            hyperparameters or method, suffix, seed)
GET  /v1/fine_tuning/jobs                   list, newest first (limit, after)
GET  /v1/fine_tuning/jobs/{id}              the job
GET  /v1/fine_tuning/jobs/{id}/events       its events, newest first (limit, after)
POST /v1/fine_tuning/jobs/{id}/cancel       cancel a job that has not finished

States: validating_files (0.2 s) -> queued (0.2 s) -> running (``x-sim-ft-seconds`` on the
create call, default 3 s) -> succeeded, with ``fine_tuned_model`` ``ft:BASE:sim-org:SUFFIX:ID``,
which then appears in /v1/models and is answered like any model. A file that fails the checks
fails the job after validation, as OpenAI does. Jobs advance lazily, when looked at: no
background task, and a job is always where the clock says it is.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from simulator.files import FILES, FileStore, record
from simulator.training import (
    FileProblem,
    Step,
    auto_hyperparameters,
    curve,
    read_dataset,
    results_csv,
)
from simulator.wire import (
    InvalidRequest,
    OpenAIError,
    json_object,
    json_response,
    new_id,
)

VALIDATE_S = 0.2
QUEUE_S = 0.2
DEFAULT_RUN_S = 3.0
MAX_RUN_S = 86_400.0
H_RUN_SECONDS = "x-sim-ft-seconds"
MAX_METRIC_EVENTS = 300
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Job:
    id: str
    model: str
    training_file: str
    validation_file: str | None
    created_at: float
    run_s: float
    method: str
    hyperparameters: dict[str, Any]
    seed: int
    suffix: str | None
    steps: list[Step]
    trained_tokens: int
    problem: str | None
    status: str = "validating_files"
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    result_files: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    revealed: int = 0

    def event(
        self, at: float, message: str, kind: str = "message", data: Any = None, level: str = "info"
    ) -> None:
        self.events.append(
            {
                "id": new_id("ftevent-"),
                "object": "fine_tuning.job.event",
                "created_at": int(at),
                "level": level,
                "message": message,
                "data": data,
                "type": kind,
            }
        )

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "fine_tuning.job",
            "created_at": int(self.created_at),
            "error": self.error,
            "fine_tuned_model": self.fine_tuned_model,
            "finished_at": self.finished_at,
            "hyperparameters": self.hyperparameters,
            "model": self.model,
            "organization_id": "org-sim",
            "result_files": self.result_files,
            "seed": self.seed,
            "status": self.status,
            "trained_tokens": self.trained_tokens if self.status == "succeeded" else None,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "integrations": [],
            "estimated_finish": int(self.created_at + VALIDATE_S + QUEUE_S + self.run_s),
            "method": {
                "type": self.method,
                self.method: {"hyperparameters": self.hyperparameters},
            },
            "metadata": None,
            "user_provided_suffix": self.suffix,
        }


class JobStore:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}

    def advance(self, job: Job, files: FileStore, now: float) -> None:
        """Move ``job`` to where it is at ``now``, with the events on the way."""
        validated = job.created_at + VALIDATE_S
        started = validated + QUEUE_S
        if job.status == "validating_files" and now >= validated:
            if job.problem is not None:
                job.status = "failed"
                job.finished_at = int(validated)
                job.error = {
                    "code": "invalid_training_file",
                    "message": job.problem,
                    "param": "training_file",
                }
                job.event(validated, job.problem, level="error")
                return
            job.status = "queued"
            job.event(validated, "Files validated, moving job to queued state")
        if job.status == "queued" and now >= started:
            job.status = "running"
            job.event(started, "Fine-tuning job started")
        if job.status != "running":
            return
        total = len(job.steps)
        every = max(1, total // MAX_METRIC_EVENTS)
        while job.revealed < total:
            step = job.steps[job.revealed]
            at = started + job.run_s * step.step / total
            if at > now:
                break
            job.revealed += 1
            if step.step % every == 0 or step.step == total or step.valid_loss is not None:
                message = f"Step {step.step}/{total}: training loss={step.train_loss:.2f}"
                if step.valid_loss is not None:
                    message += f", validation loss={step.valid_loss:.2f}"
                job.event(at, message, "metrics", step.data(total))
        if job.revealed == total:
            self._succeed(job, files, started + job.run_s)

    def _succeed(self, job: Job, files: FileStore, at: float) -> None:
        # A fine-tuned model trained further keeps its base's name, as OpenAI names it.
        base = job.model.split(":")[1] if job.model.startswith("ft:") else job.model
        name = f"ft:{base}:sim-org:{job.suffix or ''}:{job.id[-8:]}"
        job.fine_tuned_model = name
        job.status = "succeeded"
        job.finished_at = int(at)
        results = files.add("step_metrics.csv", "fine-tune-results", results_csv(job.steps))
        job.result_files = [results.id]
        job.event(at, f"Checkpoint created at step {len(job.steps)}")
        job.event(at, f"New fine-tuned model created: {name}")
        job.event(at, "The job has successfully completed")

    def fine_tuned_models(self, files: FileStore) -> list[str]:
        now = time.time()
        for job in self.jobs.values():
            self.advance(job, files, now)
        return [j.fine_tuned_model for j in self.jobs.values() if j.fine_tuned_model]


JOBS = web.AppKey("simulator_jobs", JobStore)


class JobNotFound(OpenAIError):
    def __init__(self, job_id: str) -> None:
        super().__init__(
            404,
            f"Could not find fine-tune: {job_id}",
            "invalid_request_error",
            "fine_tune_id",
            "fine_tune_not_found",
        )


HYPERPARAMETER_RANGES: dict[str, tuple[float, float]] = {
    "n_epochs": (1, 50),
    "batch_size": (1, 256),
    "learning_rate_multiplier": (0.0, 10.0),
}
"""What OpenAI takes besides "auto": whole numbers of epochs and examples per batch, and a
multiplier above 0."""


def _checked(given: dict[str, Any], where: str) -> dict[str, Any]:
    """The hyperparameters given, each "auto" or in its range; InvalidRequest otherwise (a
    huge number of epochs would have the simulator compute a curve for ever)."""
    for name, (low, high) in HYPERPARAMETER_RANGES.items():
        value = given.get(name, "auto")
        if isinstance(value, str) and value == "auto":
            continue
        if name == "learning_rate_multiplier":
            fits = isinstance(value, int | float) and low < value <= high
            expected = f"a number above {low:g} and at most {high:g}"
        else:
            fits = isinstance(value, int) and low <= value <= high
            expected = f"an integer from {low:g} to {high:g}"
        if isinstance(value, bool) or not fits:
            raise InvalidRequest(
                f"Invalid '{name}': expected \"auto\" or {expected}.",
                f"{where}.{name}",
                "invalid_value",
            )
    return given


def _method(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    method = body.get("method")
    if isinstance(method, dict):
        kind = method.get("type", "supervised")
        if kind not in ("supervised", "dpo"):
            raise InvalidRequest(
                f"Unsupported method type: {str(kind)[:100]!r}.", "method.type", "invalid_value"
            )
        settings = method.get(kind)
        given = settings.get("hyperparameters") if isinstance(settings, dict) else None
        where = f"method.{kind}.hyperparameters"
        return kind, _checked(given, where) if isinstance(given, dict) else {}
    given = body.get("hyperparameters")
    return "supervised", _checked(given, "hyperparameters") if isinstance(given, dict) else {}


def _file(files: FileStore, body: dict[str, Any], key: str) -> tuple[str | None, bytes]:
    file_id = body.get(key)
    if file_id is None:
        return None, b""
    stored = files.get(file_id) if isinstance(file_id, str) else None
    if stored is None:
        raise InvalidRequest(f"invalid {key}: {file_id}", key, "invalid_file")
    return stored.id, stored.content


async def create_job(request: web.Request) -> web.Response:
    raw = await request.read()
    record(request, raw=raw)
    body = json_object(raw)
    if not isinstance(body.get("model"), str):
        raise InvalidRequest(
            "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    if body.get("training_file") is None:
        raise InvalidRequest(
            "Missing required parameter: 'training_file'.",
            "training_file",
            "missing_required_parameter",
        )
    files = request.app[FILES]
    training_id, training = _file(files, body, "training_file")
    validation_id, validation = _file(files, body, "validation_file")
    assert training_id is not None
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 64):
        raise InvalidRequest("Invalid 'suffix': at most 64 characters.", "suffix", "invalid_value")
    method, given = _method(body)
    given_seed = body.get("seed")
    seed = given_seed if isinstance(given_seed, int) else int(time.time() * 1000) % 2**31
    problem: str | None = None
    examples = valid_examples = tokens = 0
    try:
        train_set = read_dataset(training, method, "training")
        examples, tokens = train_set.examples, train_set.tokens
        if validation_id is not None:
            valid_examples = read_dataset(validation, method, "validation").examples
    except FileProblem as exc:
        problem = str(exc)
    hyperparameters = auto_hyperparameters(given, max(examples, 1))
    try:
        run_s = float(request.headers.get(H_RUN_SECONDS, DEFAULT_RUN_S))
    except ValueError:
        run_s = math.nan
    if not 0.0 <= run_s <= MAX_RUN_S:  # NaN and infinity included
        raise InvalidRequest(
            f"Invalid header '{H_RUN_SECONDS}': expected a number from 0 to {MAX_RUN_S:g}.",
            H_RUN_SECONDS,
            "invalid_header",
        )
    job = Job(
        id=new_id("ftjob-"),
        model=body["model"],
        training_file=training_id,
        validation_file=validation_id,
        created_at=time.time(),
        run_s=run_s,
        method=method,
        hyperparameters=hyperparameters,
        seed=seed,
        suffix=suffix,
        steps=curve(examples, valid_examples, hyperparameters, seed) if problem is None else [],
        trained_tokens=tokens * int(hyperparameters["n_epochs"]),
        problem=problem,
    )
    job.event(job.created_at, f"Created fine-tuning job: {job.id}")
    job.event(job.created_at, f"Validating training file: {training_id}")
    request.app[JOBS].jobs[job.id] = job
    return json_response(job.describe())


def _job(request: web.Request) -> Job:
    record(request)
    job_id = request.match_info["job_id"]
    job = request.app[JOBS].jobs.get(job_id)
    if job is None:
        raise JobNotFound(job_id)
    request.app[JOBS].advance(job, request.app[FILES], time.time())
    return job


def _page(items: list[dict[str, Any]], request: web.Request) -> dict[str, Any]:
    """Newest first, ``limit`` at a time, after the item with id ``after``."""
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "20"))))
    except ValueError:
        raise InvalidRequest(
            "Invalid 'limit': expected an integer.", "limit", "invalid_value"
        ) from None
    after = request.query.get("after")
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    data = items[start : start + limit]
    return {"object": "list", "data": data, "has_more": start + limit < len(items)}


async def list_jobs(request: web.Request) -> web.Response:
    record(request)
    store = request.app[JOBS]
    now = time.time()
    jobs = sorted(store.jobs.values(), key=lambda j: j.created_at, reverse=True)
    for job in jobs:
        store.advance(job, request.app[FILES], now)
    return json_response(_page([job.describe() for job in jobs], request))


async def get_job(request: web.Request) -> web.Response:
    return json_response(_job(request).describe())


async def job_events(request: web.Request) -> web.Response:
    return json_response(_page(list(reversed(_job(request).events)), request))


async def cancel_job(request: web.Request) -> web.Response:
    job = _job(request)
    if job.status in TERMINAL:
        raise InvalidRequest(f"Job {job.id} has already {job.status}.", None, "job_not_cancellable")
    job.status = "cancelled"
    job.finished_at = int(time.time())
    job.event(time.time(), "Fine-tuning job cancelled")
    return json_response(job.describe())


def add_finetune_routes(app: web.Application) -> None:
    app[JOBS] = JobStore()
    app.router.add_post("/v1/fine_tuning/jobs", create_job)
    app.router.add_get("/v1/fine_tuning/jobs", list_jobs, allow_head=False)
    app.router.add_get("/v1/fine_tuning/jobs/{job_id}", get_job, allow_head=False)
    app.router.add_get("/v1/fine_tuning/jobs/{job_id}/events", job_events, allow_head=False)
    app.router.add_post("/v1/fine_tuning/jobs/{job_id}/cancel", cancel_job)


def fine_tuned_models(app: web.Application) -> list[str]:
    """The models of the jobs that succeeded, for /v1/models."""
    return app[JOBS].fine_tuned_models(app[FILES])
