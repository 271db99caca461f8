"""Together's fine-tuning jobs over HTTP: create (checked as Together checks it), list, retrieve,
cancel, events, checkpoints, metrics, price estimates and the model limits. A job's life in time
is in ``together_job_state``. See simulator/together.py."""

from __future__ import annotations

import math
import re
import time
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from simulator.files import record
from simulator.together_data import Schedule, simulate
from simulator.together_job_state import PHASES, TERMINAL, Job
from simulator.together_models import BASE_MODELS, SERVERLESS_MODELS, BaseModel, base_model
from simulator.together_store import (
    ACCOUNT,
    Account,
    StoredFile,
    TogetherError,
    account_of,
    as_object,
    bad,
    integer_in,
    number_in,
)
from simulator.wire import json_object, json_response

H_RUN_SECONDS = "x-sim-ft-seconds"
H_FAIL_AT = "x-sim-ft-fail-at"
DEFAULT_RUN_S = 3.0
MAX_RUN_S = 86_400.0
MAX_SUFFIX = 40
SUFFIX_RE = re.compile(r"^[A-Za-z0-9._-]*$")
DEFAULT_LR = 1e-5
MAX_STEPS = 50_000
"""More steps than a simulated curve is drawn for: such a job is refused."""


def _job(request: web.Request) -> tuple[Account, Job]:
    account = account_of(request)
    record(request)
    job_id = request.match_info["job_id"]
    job = account.jobs.get(job_id)
    if job is None:
        raise TogetherError(404, f"Fine-tune job {job_id[:80]} not found", "id", "not_found")
    return account, job


async def supported_models(request: web.Request) -> web.Response:
    account_of(request)
    record(request)
    return json_response({"models": list(BASE_MODELS)})


def _unsupported(model: str) -> TogetherError:
    return TogetherError(
        404,
        f"Model {model[:120]} is not available for fine-tuning. "
        "GET /v1/fine-tunes/models/supported lists the models that are.",
        "model",
        "model_not_available",
    )


async def model_limits(request: web.Request) -> web.Response:
    account_of(request)
    record(request)
    name = request.query.get("model_name", "")
    model = base_model(name)
    if model is None:
        raise _unsupported(name)
    return json_response(model.limits())


def _parent(account: Account, given: str) -> tuple[Job, int | None]:
    """``from_checkpoint``: a job id or output name, optionally ``:STEP``."""
    ref, _, step_text = given.partition(":")
    for job in account.jobs.values():
        if ref in (job.id, job.output_name):
            break
    else:
        raise bad(f"from_checkpoint {given[:120]}: no such job or model.", "from_checkpoint")
    now = time.time()
    if not step_text:
        if job.status(now) != "completed":
            raise bad(f"from_checkpoint {ref}: the job has not completed.", "from_checkpoint")
        return job, None
    steps = {c["step"] for c in job.checkpoints(now)}
    if not step_text.isdigit() or int(step_text) not in steps:
        listed = ", ".join(str(s) for s in sorted(steps)) or "none"
        raise bad(
            f"from_checkpoint {given[:120]}: no checkpoint at that step (saved: {listed}).",
            "from_checkpoint",
        )
    return job, int(step_text)


def _training_type(body: dict[str, Any], base: BaseModel) -> dict[str, Any]:
    given = body.get("training_type")
    limits = base.limits()
    if given is None:
        rank = limits["lora_training"]["default_rank"]
        return {
            "type": "Lora",
            "lora_r": rank,
            "lora_alpha": rank * 2,
            "lora_dropout": 0.0,
            "lora_trainable_modules": "all-linear",
        }
    if not isinstance(given, dict) or given.get("type") not in ("Lora", "Full"):
        raise bad('training_type.type must be "Lora" or "Full".', "training_type")
    if given["type"] == "Full":
        if not limits["supports_full_training"]:
            raise bad(f"Full training is not supported for {base.name}: use LoRA.", "training_type")
        return {"type": "Full"}
    lora = limits["lora_training"]
    rank = integer_in(given, "lora_r", lora["default_rank"], 1, lora["max_rank"])
    alpha = number_in(given, "lora_alpha", rank * 2, 1e-6, 1e6)
    dropout = given.get("lora_dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise bad("lora_dropout must be in [0, 1).", "training_type.lora_dropout")
    modules = given.get("lora_trainable_modules") or "all-linear"
    if not isinstance(modules, str):
        raise bad("lora_trainable_modules must be a string.", "training_type")
    return {
        "type": "Lora",
        "lora_r": rank,
        "lora_alpha": int(alpha),
        "lora_dropout": float(dropout),
        "lora_trainable_modules": modules,
    }


def _training_method(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("training_method") or {"method": "sft", "train_on_inputs": "auto"}
    if not isinstance(given, dict) or given.get("method") not in ("sft", "dpo"):
        raise bad('training_method.method must be "sft" or "dpo".', "training_method")
    if given["method"] == "sft":
        inputs = given.get("train_on_inputs", "auto")
        if inputs not in (True, False, "auto"):
            raise bad('train_on_inputs must be true, false or "auto".', "train_on_inputs")
        return {"method": "sft", "train_on_inputs": inputs}
    beta = given.get("dpo_beta")
    if beta is not None and (
        isinstance(beta, bool) or not isinstance(beta, int | float) or beta <= 0
    ):
        raise bad("dpo_beta must be a number above 0.", "training_method.dpo_beta")
    return {
        "method": "dpo",
        "dpo_beta": 0.1 if beta is None else float(beta),
        "dpo_normalize_logratios_by_length": bool(given.get("dpo_normalize_logratios_by_length")),
        "dpo_reference_free": bool(given.get("dpo_reference_free")),
        "rpo_alpha": given.get("rpo_alpha"),
        "simpo_gamma": given.get("simpo_gamma"),
    }


def _training_file(account: Account, file_id: Any, key: str) -> StoredFile:
    stored = account.files.get(file_id) if isinstance(file_id, str) else None
    if stored is None or stored.content is None:
        raise TogetherError(404, f"{key} {str(file_id)[:80]}: file not found", key, "not_found")
    if stored.status == "INVALID_FORMAT":
        error = (stored.report or {}).get("error", "invalid format")
        raise bad(f"{key} {stored.id} did not pass validation: {error}", key)
    if stored.dataset is None:
        raise bad(
            f"{key} {stored.id} is not a fine-tuning dataset (purpose fine-tune, JSONL).", key
        )
    return stored


def _run_seconds(request: web.Request) -> tuple[float, float | None]:
    try:
        run_s = float(request.headers.get(H_RUN_SECONDS, DEFAULT_RUN_S))
    except ValueError:
        run_s = math.nan
    if not 0.0 <= run_s <= MAX_RUN_S:  # NaN and infinity included
        raise bad(f"Invalid header {H_RUN_SECONDS}: expected seconds from 0 to {MAX_RUN_S:g}.")
    fail = request.headers.get(H_FAIL_AT)
    if fail is None:
        return run_s, None
    try:
        share = float(fail)
    except ValueError:
        share = math.nan
    if not 0.0 <= share <= 1.0:
        raise bad(f"Invalid header {H_FAIL_AT}: expected a share of the run from 0 to 1.")
    return run_s, share


def _batch(body: dict[str, Any], base: BaseModel, full: bool, dpo: bool) -> int:
    """The batch size: as given, or the model's largest for ``"max"``."""
    limits = base.full_batch if full and base.full_batch else base.lora_batch
    low, high, high_dpo = limits
    top = high_dpo if dpo else high
    given = body.get("batch_size", "max")
    if given in (None, "max"):
        return top
    if isinstance(given, bool) or not isinstance(given, int) or not low <= given <= top:
        raise bad(f'batch_size must be "max" or an integer from {low} to {top}.', "batch_size")
    return given


async def create_job(request: web.Request) -> web.Response:
    account = account_of(request)
    raw = await request.read()
    record(request, raw=raw)
    body = json_object(raw)
    run_s, fail_share = _run_seconds(request)
    model = body.get("model")
    given_parent = body.get("from_checkpoint")
    parent: Job | None = None
    if given_parent is not None:
        if not isinstance(given_parent, str) or not given_parent:
            raise bad("from_checkpoint must be a job id or model name.", "from_checkpoint")
        parent, _ = _parent(account, given_parent)
        if model is not None and model != parent.base.name:
            raise bad("Give either a model or a checkpoint to start from, not both.", "model")
        model = parent.base.name
    if not isinstance(model, str) or not model:
        raise bad("Missing required parameter: model (or from_checkpoint).", "model")
    base = base_model(model)
    if base is None:
        raise _unsupported(model)
    limits = base.limits()
    train = _training_file(account, body.get("training_file"), "training_file")
    valid_id = body.get("validation_file") or None
    valid = _training_file(account, valid_id, "validation_file") if valid_id else None
    method = _training_method(body)
    dpo = method["method"] == "dpo"
    assert train.dataset is not None
    if dpo != (train.dataset.format == "PREFERENCE_OPENAI"):
        wanted = "preference (input, preferred_output, non_preferred_output)" if dpo else "SFT"
        raise bad(
            f"training_method {method['method']} needs {wanted} data; {train.id} is in the "
            f"{train.dataset.format} format.",
            "training_method",
        )
    training_type = _training_type(body, base)
    full = training_type["type"] == "Full"
    epochs = integer_in(body, "n_epochs", 1, 1, limits["max_num_epochs"])
    checkpoints = integer_in(body, "n_checkpoints", 1, 1, limits["max_num_checkpoints"])
    evals = integer_in(body, "n_evals", 0, 0, limits["max_num_evals"])
    if evals and valid is None:
        raise bad("n_evals needs a validation_file.", "n_evals")
    rate = number_in(
        body, "learning_rate", DEFAULT_LR, limits["min_learning_rate"], limits["max_learning_rate"]
    )
    warmup = number_in(body, "warmup_ratio", 0.0, 0.0, 1.0)
    number_in(body, "max_grad_norm", 1.0, 0.0, 1e6)
    number_in(body, "weight_decay", 0.0, 0.0, 1e6)
    batch = _batch(body, base, full, dpo)
    suffix = body.get("suffix")
    if suffix is not None and (
        not isinstance(suffix, str) or len(suffix) > MAX_SUFFIX or not SUFFIX_RE.match(suffix)
    ):
        raise bad(
            f"suffix must be at most {MAX_SUFFIX} letters, digits, '-', '_' or '.'.", "suffix"
        )
    seed = body.get("random_seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad("random_seed must be an integer.", "random_seed")
    scheduler = as_object(body.get("lr_scheduler"))
    kind = scheduler.get("lr_scheduler_type", "cosine")
    args = as_object(scheduler.get("lr_scheduler_args"))
    if kind not in ("cosine", "linear"):
        raise bad('lr_scheduler_type must be "cosine" or "linear".', "lr_scheduler")
    schedule = Schedule(
        rate,
        kind,
        warmup,
        number_in(args, "min_lr_ratio", 0.0, 0.0, 1.0),
        number_in(args, "num_cycles", 0.5, 1e-6, 1e6),
    )
    examples = train.dataset.examples
    if math.ceil(examples / batch) * epochs > MAX_STEPS:
        raise bad(f"The job would run more than {MAX_STEPS} steps.", "n_epochs")
    job_id = f"ft-{uuid.uuid4()}"
    run = simulate(
        examples=examples,
        epochs=epochs,
        batch=batch,
        schedule=schedule,
        n_evals=evals,
        n_checkpoints=checkpoints,
        dpo=dpo,
        seed=seed if isinstance(seed, int) else int(uuid.UUID(job_id[3:]).int % 2**31),
    )
    name = base.name.split("/")[-1]
    output_name = f"{ACCOUNT}/{name}-{suffix + '-' if suffix else ''}{job_id[3:9]}"
    now = time.time()
    shares = [run_s * share for share in PHASES]
    queued = now + shares[0]
    running = queued + shares[1]
    uploading = running + shares[2]
    completed = uploading + shares[3]
    failing = math.inf if fail_share is None else running + shares[2] * fail_share
    settings: dict[str, Any] = {
        "model": base.name,
        "training_file": train.id,
        "validation_file": valid.id if valid is not None else "",
        "n_epochs": epochs,
        "n_checkpoints": checkpoints,
        "n_evals": evals,
        "batch_size": batch,
        "learning_rate": rate,
        "lr_scheduler": {
            "lr_scheduler_type": kind,
            "lr_scheduler_args": {"min_lr_ratio": schedule.min_lr_ratio}
            | ({"num_cycles": schedule.num_cycles} if kind == "cosine" else {}),
        },
        "warmup_ratio": warmup,
        "max_grad_norm": body.get("max_grad_norm", 1.0),
        "weight_decay": body.get("weight_decay", 0.0),
        "packing": body.get("packing", True),
        "max_seq_length": body.get("max_seq_length") or limits["max_seq_length_sft"],
        "suffix": suffix,
        "random_seed": seed,
        "training_type": training_type,
        "training_method": method,
        "train_on_inputs": method.get("train_on_inputs"),
        "from_checkpoint": given_parent,
        "wandb_project_name": body.get("wandb_project_name"),
        "trainingfile_numlines": examples,
        "trainingfile_size": len(train.content or b""),
    }
    job = Job(
        id=job_id,
        created_at=now,
        base=base,
        output_name=output_name,
        request=settings,
        run=run,
        token_count=train.dataset.tokens,
        phases=(queued, running, uploading, completed, failing),
    )
    job.plan()
    account.jobs[job.id] = job
    return json_response(job.describe(now, full=False))


async def list_jobs(request: web.Request) -> web.Response:
    account = account_of(request)
    record(request)
    now = time.time()
    jobs = sorted(account.jobs.values(), key=lambda j: j.created_at)
    return json_response({"data": [job.describe(now, full=False) for job in jobs]})


async def get_job(request: web.Request) -> web.Response:
    _, job = _job(request)
    return json_response(job.describe(time.time(), full=True))


async def cancel_job(request: web.Request) -> web.Response:
    _, job = _job(request)
    now = time.time()
    status = job.status(now)
    if status in TERMINAL:
        raise bad(f"Fine-tune job {job.id} is already {status} and cannot be cancelled.", "id")
    if job.cancel_at is None:
        job.cancel_at = now
    return json_response(job.describe(now, full=False))


async def job_events(request: web.Request) -> web.Response:
    _, job = _job(request)
    return json_response({"data": job.events(time.time())})


async def job_checkpoints(request: web.Request) -> web.Response:
    _, job = _job(request)
    return json_response({"data": job.checkpoints(time.time())})


def _query_int(request: web.Request, key: str) -> int | None:
    value = request.query.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise bad(f"{key} must be an integer.", key) from None


def _query_time(request: web.Request, key: str) -> float | None:
    value = request.query.get(key)
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise bad(f"{key} must be an ISO-8601 time.", key) from None


async def job_metrics(request: web.Request) -> web.Response:
    _, job = _job(request)
    low = _query_int(request, "global_step_from")
    high = _query_int(request, "global_step_to")
    since = _query_time(request, "logged_at_from")
    until = _query_time(request, "logged_at_to")
    resolution = _query_int(request, "resolution")
    if resolution is not None and resolution < 1:
        raise bad("resolution must be at least 1.", "resolution")
    rows = [
        (step, row)
        for step, row in job.revealed_rows(time.time())
        if (low is None or step >= low)
        and (high is None or step <= high)
        and (since is None or job.step_at(step) >= since)
        and (until is None or job.step_at(step) <= until)
    ]
    if resolution is not None:
        train = [i for i, (_, row) in enumerate(rows) if "train/loss" in row]
        if len(train) > resolution:
            keep = {
                train[round(k * (len(train) - 1) / max(1, resolution - 1))]
                for k in range(resolution)
            }
            rows = [item for i, item in enumerate(rows) if i in keep or "eval/loss" in item[1]]
    return json_response({"metrics": [row for _, row in rows]})


async def estimate_price(request: web.Request) -> web.Response:
    account = account_of(request)
    body = json_object(await request.read())
    record(request, body)
    model = body.get("model") or ""
    if body.get("from_checkpoint"):
        model = _parent(account, str(body["from_checkpoint"]))[0].base.name
    base = base_model(model) if isinstance(model, str) else None
    if base is None:
        raise _unsupported(str(model))
    train_id, valid_id = body.get("training_file"), body.get("validation_file")
    train = account.files.get(train_id) if isinstance(train_id, str) else None
    if train is None or train.content is None:
        raise TogetherError(404, "training_file not found", "training_file", "not_found")
    if train.dataset is None:
        return json_response(
            {"estimation_available": False, "unavailable_reason": "train_file_invalid"}
        )
    valid = account.files.get(valid_id) if isinstance(valid_id, str) else None
    if valid is not None and valid.dataset is None:
        return json_response(
            {"estimation_available": False, "unavailable_reason": "eval_file_invalid"}
        )
    epochs = integer_in(body, "n_epochs", 1, 1, base.limits()["max_num_epochs"])
    evals = integer_in(body, "n_evals", 0, 0, base.limits()["max_num_evals"])
    kind = as_object(body.get("training_type"))
    method = as_object(body.get("training_method"))
    train_tokens = train.dataset.tokens * epochs
    eval_tokens = (valid.dataset.tokens if valid and valid.dataset else 0) * evals
    per_million = base.price_per_million(kind.get("type") == "Full", method.get("method") == "dpo")
    return json_response(
        {
            "estimation_available": True,
            "allowed_to_proceed": True,
            "estimated_train_token_count": float(train_tokens),
            "estimated_eval_token_count": float(eval_tokens),
            "estimated_total_price": round((train_tokens + eval_tokens) * per_million / 1e6, 6),
            "user_limit": 1000.0,
        }
    )


def served_models(account: Account) -> list[str]:
    now = time.time()
    done = [j.output_name for j in account.jobs.values() if j.status(now) == "completed"]
    return [*SERVERLESS_MODELS, *BASE_MODELS, *done]
