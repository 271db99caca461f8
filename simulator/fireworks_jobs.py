"""The simulated Fireworks fine-tuning jobs over HTTP. A supervised or DPO job's create call is
checked as Fireworks checks it (its datasets READY, its base model known and tunable, its
hyperparameters in range, its output model free) and its loss curve drawn from its data; then its
list, get, ``:cancel``, delete and metrics file. The jobs' states advance in ``fireworks_state``."""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from simulator.files import record
from simulator.finetune import DEFAULT_RUN_S, H_RUN_SECONDS, MAX_RUN_S
from simulator.fireworks_request import (
    FIREWORKS,
    account_of,
    authenticate,
    float_field,
    int_field,
    origin_of,
    page_of,
    read_body,
    refuse_unknown,
    resource_id,
    split_rest,
    string_field,
)
from simulator.fireworks_state import (
    BASE_MODELS,
    DEFAULT_BATCH_TOKENS,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_LORA_RANK,
    DPO_FIELDS,
    LORA_RANKS,
    LOSS_METHODS,
    MAX_BATCH_SAMPLES,
    MAX_BATCH_TOKENS,
    MAX_EPOCHS,
    MAX_METRIC_ROWS,
    MODEL_NAME,
    SFT_FIELDS,
    TERMINAL,
    TRAINING_CONFIG_FIELDS,
    Dataset,
    FireworksError,
    Job,
    Store,
    invalid,
)
from simulator.training import FileProblem, Step, curve, read_dataset
from simulator.wire import json_response

JsonHandler = Callable[[web.Request], Awaitable[web.Response]]


def _ready_dataset(store: Store, account: str, given: Any, field_name: str) -> Dataset:
    if not isinstance(given, str) or not given:
        raise invalid(f"{field_name} is required")
    match = re.fullmatch(r"accounts/([^/]+)/datasets/([^/]+)", given)
    if match is None:
        raise invalid(f"invalid {field_name} {given!r}: expected accounts/<account>/datasets/<id>")
    dataset = store.datasets.get(given)
    if dataset is None or match.group(1) != account:
        raise FireworksError("NOT_FOUND", f'dataset "{given}" not found')
    if dataset.state != "READY":
        raise FireworksError(
            "FAILED_PRECONDITION",
            f'dataset "{given}" is not READY (state {dataset.state}): upload its file first',
        )
    return dataset


def _base(store: Store, account: str, config: dict[str, Any]) -> tuple[str, str | None, int]:
    """(base model, warm start, the model's context length) from baseModel/warmStartFrom."""
    base = string_field(config, "baseModel")
    warm = string_field(config, "warmStartFrom")
    if base and warm:
        raise invalid("only one of base_model or warm_start_from may be specified")
    if not base and not warm:
        raise invalid("one of base_model or warm_start_from must be specified")
    if warm:
        addon = store.models.get(warm)
        if addon is None or addon.account != account:
            raise FireworksError("NOT_FOUND", f'model "{warm}" not found')
        return addon.base_model, warm, BASE_MODELS[addon.base_model].context_length
    assert base is not None
    if MODEL_NAME.fullmatch(base) is None:
        raise invalid(f"invalid base_model {base!r}: expected accounts/<account>/models/<model>")
    known = BASE_MODELS.get(base)
    if known is None:
        raise FireworksError("NOT_FOUND", f'model "{base}" not found')
    if not known.tunable:
        raise invalid(f'model "{base}" does not support fine-tuning')
    return base, None, known.context_length


def _output_model(store: Store, account: str, given: str | None, job_id: str) -> str:
    model_id = given or job_id
    if given and given.startswith("accounts/"):
        match = MODEL_NAME.fullmatch(given)
        if match is None or match.group(1) != account:
            raise invalid(f"invalid output_model {given!r}: a model ID, or accounts/{account}/...")
        model_id = match.group(2)
    resource_id(model_id, "output model ID")
    name = f"accounts/{account}/models/{model_id}"
    pending = any(j.output_model == name and j.state not in TERMINAL for j in store.jobs.values())
    if name in store.models or pending:
        raise FireworksError("ALREADY_EXISTS", f'model "{name}" already exists')
    return name


def _run_seconds(request: web.Request) -> float:
    try:
        run_s = float(request.headers.get(H_RUN_SECONDS, DEFAULT_RUN_S))
    except ValueError:
        run_s = math.nan
    if not 0.0 <= run_s <= MAX_RUN_S:
        raise invalid(f"invalid header {H_RUN_SECONDS}: a number of seconds from 0 to 86400")
    return run_s


def _job_id(request: web.Request, store: Store, account: str, param: str, kind: str) -> str:
    given = request.query.get(param)
    job_id = resource_id(given, "job ID") if given else "j" + uuid.uuid4().hex[:15]
    collection = "supervisedFineTuningJobs" if kind == "sft" else "dpoJobs"
    if f"accounts/{account}/{collection}/{job_id}" in store.jobs:
        raise FireworksError("ALREADY_EXISTS", f'job "{job_id}" already exists')
    return job_id


def _steps(
    kind: str, train: Dataset, valid: Dataset | None, settings: dict[str, Any], seed: int
) -> tuple[list[Step], int, str | None]:
    """The job's loss curve, steps per epoch, and why its data fails (if it does)."""
    method = "dpo" if kind == "dpo" else "supervised"
    try:
        data = read_dataset(train.content, method, "training")
        valid_count = read_dataset(valid.content, method, "validation").examples if valid else 0
    except FileProblem as exc:
        return [], 1, f"dataset validation failed: {exc}"
    samples = settings["batch_size_samples"]
    if samples is None:
        per_example = max(1, data.tokens // max(1, data.examples))
        samples = max(1, settings["batch_size"] // per_example)
    samples = min(samples, data.examples)
    per_epoch = max(1, math.ceil(data.examples / samples))
    if per_epoch * settings["epochs"] > MAX_METRIC_ROWS:
        samples = math.ceil(data.examples * settings["epochs"] / MAX_METRIC_ROWS)
        per_epoch = max(1, math.ceil(data.examples / samples))
    hyper = {
        "n_epochs": settings["epochs"],
        "batch_size": samples,
        "learning_rate_multiplier": settings["learning_rate"] * 1000,
    }
    steps = curve(data.examples, valid_count, hyper, seed)
    if kind == "dpo":  # a preference loss starts near ln 2
        scale = math.log(2) / 1.6
        steps = [
            Step(
                s.step,
                round(s.train_loss * scale, 4),
                s.train_accuracy,
                None if s.valid_loss is None else round(s.valid_loss * scale, 4),
                s.valid_accuracy,
            )
            for s in steps
        ]
    return steps, per_epoch, None


def _settings(config: dict[str, Any], context: int) -> dict[str, Any]:
    rank = int_field(config, "loraRank", 0, 1 << 20)
    if rank is not None and rank not in LORA_RANKS:
        raise invalid(f"invalid lora_rank {rank}: one of {', '.join(map(str, LORA_RANKS))}")
    learning_rate = float_field(config, "learningRate", 1.0)
    epochs = int_field(config, "epochs", 1, MAX_EPOCHS)
    batch = int_field(config, "batchSize", 1, MAX_BATCH_TOKENS)
    return {
        "epochs": epochs or DEFAULT_EPOCHS,
        "learning_rate": learning_rate or DEFAULT_LEARNING_RATE,
        "lora_rank": rank or DEFAULT_LORA_RANK,
        "batch_size": batch or DEFAULT_BATCH_TOKENS,
        "batch_size_samples": int_field(config, "batchSizeSamples", 1, MAX_BATCH_SAMPLES),
        "max_context_length": int_field(config, "maxContextLength", 1, context),
    }


async def create_job(request: web.Request, kind: str) -> web.Response:
    account = account_of(request)
    store = request.app[FIREWORKS]
    body = await read_body(request)
    if kind == "sft":
        refuse_unknown(body, SFT_FIELDS)
        config = body
        param = "supervisedFineTuningJobId"
    else:
        refuse_unknown(body, DPO_FIELDS)
        given = body.get("trainingConfig")
        config = given if isinstance(given, dict) else {}
        refuse_unknown(config, TRAINING_CONFIG_FIELDS, "trainingConfig.")
        loss = body.get("lossConfig")
        method = loss.get("method") if isinstance(loss, dict) else None
        if method is not None and method not in LOSS_METHODS:
            raise invalid(f"invalid lossConfig.method {method!r}: DPO or ORPO")
        settings = loss.get("dpo") if isinstance(loss, dict) else None
        beta = settings.get("beta") if isinstance(settings, dict) else None
        if beta is not None and (
            isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta < 0.5
        ):
            raise invalid("invalid lossConfig.dpo.beta: must be > 0 and < 0.5")
        param = "dpoJobId"
    job_id = _job_id(request, store, account, param, kind)
    train = _ready_dataset(store, account, body.get("dataset"), "dataset")
    valid = None
    if kind == "sft" and body.get("evaluationDataset"):
        valid = _ready_dataset(store, account, body["evaluationDataset"], "evaluation_dataset")
    base, warm, context = _base(store, account, config)
    settings = _settings(config, context)
    output = _output_model(store, account, string_field(config, "outputModel"), job_id)
    run_s = _run_seconds(request)
    seed = int.from_bytes(job_id.encode()[-4:], "big")
    steps, per_epoch, problem = _steps(kind, train, valid, settings, seed)
    keep = ("evalAutoCarveout", "earlyStop", "isTurbo") if kind == "sft" else ("lossConfig",)
    now = time.time()
    job = Job(
        kind=kind,
        account=account,
        id=job_id,
        dataset=train.name,
        evaluation_dataset=valid.name if valid else None,
        base_model=base,
        warm_start_from=warm,
        output_model=output,
        epochs=settings["epochs"],
        learning_rate=settings["learning_rate"],
        lora_rank=settings["lora_rank"],
        batch_size=settings["batch_size"],
        batch_size_samples=settings["batch_size_samples"],
        max_context_length=settings["max_context_length"],
        display_name=string_field(body, "displayName") or job_id,
        created_at=now,
        run_s=run_s,
        steps=steps,
        per_epoch=per_epoch,
        problem=problem,
        extra={name: body[name] for name in keep if name in body},
    )
    store.jobs[job.name] = job
    return json_response(job.describe(origin_of(request)))


def _job(request: web.Request, collection: str, job_id: str) -> Job:
    account = account_of(request)
    store = request.app[FIREWORKS]
    name = f"accounts/{account}/{collection}/{job_id}"
    job = store.jobs.get(name)
    if job is None:
        raise FireworksError("NOT_FOUND", f'job "{name}" not found')
    store.advance(job, time.time())
    return job


def jobs_root(kind: str) -> JsonHandler:
    collection = "supervisedFineTuningJobs" if kind == "sft" else "dpoJobs"

    async def handler(request: web.Request) -> web.Response:
        authenticate(request)
        if request.method == "POST":
            return await create_job(request, kind)
        record(request)
        account = account_of(request)
        store = request.app[FIREWORKS]
        store.advance_all()
        mine = [j for j in store.jobs.values() if j.account == account and j.kind == kind]
        mine.sort(key=lambda j: j.created_at, reverse=True)
        origin = origin_of(request)
        return json_response(page_of([j.describe(origin) for j in mine], request, collection))

    return handler


def jobs_item(kind: str) -> JsonHandler:
    collection = "supervisedFineTuningJobs" if kind == "sft" else "dpoJobs"

    async def handler(request: web.Request) -> web.Response:
        authenticate(request)
        job_id, verb = split_rest(request)
        if request.method == "POST":
            await read_body(request)
        else:
            record(request)
        job = _job(request, collection, job_id)
        store = request.app[FIREWORKS]
        if verb is None and request.method == "GET":
            return json_response(job.describe(origin_of(request)))
        if verb is None and request.method == "DELETE":
            del store.jobs[job.name]
            return json_response({})
        if verb == "cancel" and request.method == "POST":
            if job.state in TERMINAL:
                raise FireworksError(
                    "FAILED_PRECONDITION", f'job "{job.name}" is already {job.state}'
                )
            now = time.time()
            job.state, job.updated_at, job.completed_at = "JOB_STATE_CANCELLED", now, now
            job.status = {"code": "CANCELLED", "message": "cancelled by the user"}
            return json_response({})
        if verb == "getMetricsFileEndpoint" and request.method == "GET" and kind == "dpo":
            url = job.metrics_url(origin_of(request)) if job.revealed else ""
            return json_response({"signedUrl": url} if url else {})
        raise FireworksError("NOT_FOUND", f"no method {request.method} {request.path}")

    return handler


async def metrics_file(request: web.Request) -> web.Response:
    """A job's metrics file, behind its signed URL (no key needed)."""
    token = request.match_info["token"]
    store = request.app[FIREWORKS]
    for job in store.jobs.values():
        if job.metrics_token == token:
            store.advance(job, time.time())
            lines = [orjson.dumps(row) for row in job.metric_rows()]
            body = b"\n".join(lines) + (b"\n" if lines else b"")
            return web.Response(body=body, content_type="application/jsonl")
    return web.Response(status=404, text="NoSuchKey")
