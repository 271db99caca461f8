"""Fireworks AI: its fine-tuning control plane and its OpenAI-compatible inference path, as the
official Python SDK (``fireworks-ai``, ``fireworks.Fireworks``) sends and reads them.

The SDK is generated from Fireworks' OpenAPI description; its resources ``datasets``,
``supervised_fine_tuning_jobs``, ``dpo_jobs`` and ``models`` call these paths (the account in
the path, resource names ``accounts/{account}/{collection}/{id}``, JSON in camelCase)::

    POST   /v1/accounts/{a}/datasets                      create {datasetId, dataset: {userUploaded,
                                                         exampleCount, displayName, format}}
    GET    /v1/accounts/{a}/datasets[/{id}]               list {datasets, nextPageToken, totalSize}
    DELETE /v1/accounts/{a}/datasets/{id}
    POST   /v1/accounts/{a}/datasets/{id}:upload          multipart ``file`` (one call, <= 150 MB)
    POST   /v1/accounts/{a}/datasets/{id}:getUploadEndpoint  {filenameToSize}
                                                         -> {filenameToSignedUrls}
    PUT    {signed URL}                                   the file's bytes (its declared size)
    POST   /v1/accounts/{a}/datasets/{id}:validateUpload  {} once every file is there -> READY
    POST   /v1/accounts/{a}/supervisedFineTuningJobs[?supervisedFineTuningJobId=]  create
    GET    /v1/accounts/{a}/supervisedFineTuningJobs[/{id}]  list {supervisedFineTuningJobs, ...}
    POST   /v1/accounts/{a}/supervisedFineTuningJobs/{id}:cancel   {} -> {}
    DELETE /v1/accounts/{a}/supervisedFineTuningJobs/{id}
    POST   /v1/accounts/{a}/dpoJobs[?dpoJobId=]           create {dataset, trainingConfig,
                                                         lossConfig}
    GET    /v1/accounts/{a}/dpoJobs[/{id}]                list {dpoJobs, ...}
    POST   /v1/accounts/{a}/dpoJobs/{id}:cancel | DELETE /v1/accounts/{a}/dpoJobs/{id}
    GET    /v1/accounts/{a}/dpoJobs/{id}:getMetricsFileEndpoint   {signedUrl}
    GET    /v1/accounts/{a}/models[/{id}]                 the base models (account ``fireworks``)
                                                         and each account's fine-tuned ones
    POST   /inference/v1/chat/completions | /inference/v1/completions   OpenAI's shapes
    GET    /inference/v1/models                           the models that answer

Every control-plane call needs a key (``Authorization: Bearer`` or ``x-api-key``); errors come
in the shape of Fireworks' gateway (grpc-gateway's): ``{"code": 3, "message": "...",
"details": []}`` with the matching HTTP status (3 INVALID_ARGUMENT 400, 5 NOT_FOUND 404,
6 ALREADY_EXISTS 409, 9 FAILED_PRECONDITION 400, 16 UNAUTHENTICATED 401). Fields the API does
not have are refused as protojson refuses them. Inference errors are OpenAI-shaped with
``"object": "error"``, as Fireworks' inference answers them.

A job's states: JOB_STATE_CREATING (0.2 s) -> JOB_STATE_VALIDATING (0.2 s; a dataset that fails
the checks fails the job, ``status: {code: INVALID_ARGUMENT, message}``) -> JOB_STATE_RUNNING
(``x-sim-ft-seconds`` on the create call, default 3 s, 0 for at once) -> JOB_STATE_COMPLETED,
when ``outputModel`` (``accounts/{a}/models/{id}``, the job's id unless given) becomes a READY
LoRA addon (``HF_PEFT_ADDON``) that answers at the inference path. A cancelled job is
JOB_STATE_CANCELLED. While it runs, ``jobProgress`` has the percent and epoch, and its metrics
file (``metricsFileSignedUrl`` on a supervised job, ``:getMetricsFileEndpoint`` for DPO) is
JSON lines, one per step so far: ``{"step", "epoch", "train_loss", "learning_rate"}`` and
``"eval_loss"`` on evaluation steps (the file's format is not documented by Fireworks: this is
the simulator's). Loss falls as in ``training.py`` (for DPO, from about ln 2). Jobs advance
lazily, when looked at.

Base models (``BASE_MODELS``) are a small catalogue of Fireworks' tunable models with their
context lengths; any other base is refused: a well-formed name it does not know is a 404
("model not found"), and a known model that cannot be tuned is a 400. Hyperparameters are
checked: ``epochs`` 1-100, ``learningRate`` above 0 and at most 1, ``loraRank`` a power of two
from 4 to 64 (default 8), ``batchSize`` (tokens per batch, default 32,768) up to 1,048,576,
``batchSizeSamples`` 1-4,096, ``maxContextLength`` within the model's context, a DPO job's
``lossConfig.dpo.beta`` above 0 and below 0.5.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from simulator.chat import chat_completions
from simulator.completions import completions
from simulator.files import record
from simulator.finetune import DEFAULT_RUN_S, H_RUN_SECONDS, MAX_RUN_S
from simulator.fireworks_state import (
    ACCOUNT_ID,
    BASE_MODELS,
    DATASET_FIELDS,
    DEFAULT_BATCH_TOKENS,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_LORA_RANK,
    DPO_FIELDS,
    LORA_RANKS,
    LOSS_METHODS,
    MAX_BATCH_SAMPLES,
    MAX_BATCH_TOKENS,
    MAX_DATASET_BYTES,
    MAX_EPOCHS,
    MAX_METRIC_ROWS,
    MAX_PAGE_SIZE,
    MAX_UPLOAD_BYTES,
    MODEL_NAME,
    MODEL_NOT_FOUND,
    PAGE_SIZE,
    RESOURCE_ID,
    SFT_FIELDS,
    SIM_PREFIX,
    TERMINAL,
    TRAINING_CONFIG_FIELDS,
    Dataset,
    FireworksError,
    InferenceError,
    Job,
    Store,
    base_model_object,
    invalid,
)
from simulator.training import FileProblem, Step, curve, read_dataset
from simulator.wire import json_response, loads_or_none, new_id

FIREWORKS = web.AppKey("simulator_fireworks", Store)
JsonHandler = Callable[[web.Request], Awaitable[web.Response]]


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _authenticate(request: web.Request) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else ""
    if not key and not request.headers.get("x-api-key", "").strip():
        raise FireworksError(
            "UNAUTHENTICATED",
            "unauthenticated: give your Fireworks API key as 'Authorization: Bearer <key>'",
        )


def _account(request: web.Request) -> str:
    account = request.match_info["account"]
    if not ACCOUNT_ID.fullmatch(account):
        raise invalid(f"invalid account id {account!r}")
    return account


def _split(request: web.Request) -> tuple[str, str | None]:
    """The resource id and the custom method of ``{id}`` or ``{id}:verb``."""
    given = request.match_info["rest"]
    resource, sep, verb = given.partition(":")
    return resource, verb if sep else None


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    record(request, raw=raw)
    if not raw.strip():
        return {}
    body = loads_or_none(raw)
    if not isinstance(body, dict):
        raise invalid("the request body is not a JSON object")
    return body


def _unknown(body: dict[str, Any], known: frozenset[str], where: str = "") -> None:
    for name in body:
        if name not in known:
            raise invalid(f'proto: unknown field "{where}{name}"')


def _int(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # protojson takes int64 as strings too
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"invalid {name}: expected an integer from {low} to {high}, got {value!r}")
    return value


def _float(body: dict[str, Any], name: str, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
        raise invalid(f"invalid {name}: expected a number above 0 and at most {high:g}")
    return float(value)


def _string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(f"invalid {name}: expected a string")
    return value or None


def _resource_id(value: str, what: str) -> str:
    if not RESOURCE_ID.fullmatch(value):
        raise invalid(
            f"invalid {what} {value!r}: start with a letter and use only lowercase letters, "
            "digits and hyphens (at most 63 characters)"
        )
    return value


def _page(items: list[dict[str, Any]], request: web.Request, key: str) -> dict[str, Any]:
    try:
        size = int(request.query.get("pageSize") or PAGE_SIZE)
        start = int(request.query.get("pageToken") or 0)
    except ValueError:
        raise invalid("invalid pageSize or pageToken") from None
    size = max(1, min(MAX_PAGE_SIZE, size))
    start = max(0, start)
    page = items[start : start + size]
    more = start + size < len(items)
    return {key: page, "nextPageToken": str(start + size) if more else "", "totalSize": len(items)}


# -- datasets -------------------------------------------------------------------------------


def _dataset(store: Store, account: str, dataset_id: str) -> Dataset:
    dataset = store.datasets.get(f"accounts/{account}/datasets/{dataset_id}")
    if dataset is None:
        raise FireworksError(
            "NOT_FOUND", f'dataset "accounts/{account}/datasets/{dataset_id}" not found'
        )
    return dataset


async def datasets_root(request: web.Request) -> web.Response:
    _authenticate(request)
    account = _account(request)
    store = request.app[FIREWORKS]
    if request.method == "GET":
        record(request)
        mine = [d for d in store.datasets.values() if d.account == account]
        mine.sort(key=lambda d: d.created_at, reverse=True)
        return json_response(_page([d.describe() for d in mine], request, "datasets"))
    body = await _body(request)
    _unknown(body, frozenset({"datasetId", "dataset", "sourceDatasetId"}))
    given_id = body.get("datasetId")
    if not isinstance(given_id, str) or not given_id:
        raise invalid("datasetId is required")
    dataset_id = _resource_id(given_id, "dataset ID")
    spec = body.get("dataset")
    if not isinstance(spec, dict):
        raise invalid("dataset is required")
    _unknown(spec, DATASET_FIELDS, "dataset.")
    if spec.get("externalUrl"):  # gs:// and s3:// buckets are out of the simulator's reach
        raise invalid("dataset.externalUrl: the simulator takes uploaded datasets only")
    name = f"accounts/{account}/datasets/{dataset_id}"
    if name in store.datasets:
        raise FireworksError("ALREADY_EXISTS", f'dataset "{name}" already exists')
    count = spec.get("exampleCount")
    if count is not None and not (isinstance(count, int | str) and str(count).isdigit()):
        raise invalid("invalid dataset.exampleCount: expected a whole number")
    form = spec.get("format") or "CHAT"
    if form not in ("FORMAT_UNSPECIFIED", "CHAT", "COMPLETION", "RL"):
        raise invalid(f"invalid dataset.format {form!r}")
    display = _string(spec, "displayName") or dataset_id
    dataset = Dataset(
        account, dataset_id, time.time(), display, None if count is None else str(count), form
    )
    store.datasets[name] = dataset
    return json_response(dataset.describe())


def _check_jsonl(content: bytes, filename: str) -> None:
    for number, line in enumerate(content.splitlines(), 1):
        if line.strip() and not isinstance(loads_or_none(line), dict):
            raise invalid(f"{filename}: line {number} is not a JSON object")
    if not content.strip():
        raise invalid(f"{filename} is empty")


async def _upload(request: web.Request, dataset: Dataset) -> web.Response:
    if not request.content_type.startswith("multipart/"):
        raise invalid("expected a multipart/form-data body with the field 'file'")
    filename, content = "dataset.jsonl", None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "file":
                filename = part.filename or filename
                content = bytes(await part.read())
                if len(content) > MAX_UPLOAD_BYTES:
                    raise invalid(f"{filename} is over 150 MB: upload it through getUploadEndpoint")
    except (ValueError, LookupError, AssertionError) as exc:
        raise invalid(f"the multipart body could not be read: {exc}") from None
    record(request, {"filename": filename, "bytes": None if content is None else len(content)})
    if content is None:
        raise invalid("the field 'file' is required")
    if dataset.state == "READY":
        raise FireworksError("FAILED_PRECONDITION", f'dataset "{dataset.name}" is already READY')
    _check_jsonl(content, filename)
    dataset.content, dataset.state, dataset.updated_at = content, "READY", time.time()
    answer = {
        "id": dataset.name,
        "object": "file",
        "bytes": len(content),
        "created_at": int(dataset.created_at),
        "filename": filename,
        "purpose": "fine-tune",
    }
    return json_response(answer)


def _size(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


async def _upload_endpoint(request: web.Request, store: Store, dataset: Dataset) -> web.Response:
    body = await _body(request)
    _unknown(body, frozenset({"filenameToSize", "readMask"}))
    sizes = body.get("filenameToSize")
    if not isinstance(sizes, dict) or not sizes:
        raise invalid("filenameToSize is required")
    if dataset.state == "READY":
        raise FireworksError("FAILED_PRECONDITION", f'dataset "{dataset.name}" is already READY')
    expected: dict[str, int] = {}
    for filename, given in sizes.items():
        size = _size(given)
        if size is None or size <= 0 or size > MAX_DATASET_BYTES:
            raise invalid(f"invalid size for {filename!r}: from 1 byte to 1 GiB")
        if "/" in filename or not filename.endswith(".jsonl"):
            raise invalid(f"invalid file name {filename!r}: a .jsonl file name, no folders")
        expected[filename] = size
    dataset.expected, dataset.received = expected, {}
    urls = {}
    for filename in expected:
        token = new_id("")
        store.uploads[token] = (dataset.name, filename)
        urls[filename] = f"{_origin(request)}{SIM_PREFIX}/uploads/{token}"
    return json_response({"filenameToSignedUrls": urls})


async def _validate_upload(request: web.Request, dataset: Dataset) -> web.Response:
    await _body(request)
    if dataset.state == "READY":
        return json_response({})
    if not dataset.expected:
        raise FireworksError(
            "FAILED_PRECONDITION", f'dataset "{dataset.name}" has no file: upload one first'
        )
    missing = [name for name in dataset.expected if name not in dataset.received]
    if missing:
        raise FireworksError(
            "FAILED_PRECONDITION", f"{missing[0]} has not been uploaded to its signed URL"
        )
    content = b"".join(
        dataset.received[name].rstrip(b"\n") + b"\n" for name in sorted(dataset.received)
    )
    for name in sorted(dataset.received):
        _check_jsonl(dataset.received[name], name)
    dataset.content, dataset.state, dataset.updated_at = content, "READY", time.time()
    return json_response({})


async def dataset_item(request: web.Request) -> web.Response:
    _authenticate(request)
    account = _account(request)
    store = request.app[FIREWORKS]
    dataset_id, verb = _split(request)
    dataset = _dataset(store, account, dataset_id)
    if verb is None and request.method == "GET":
        record(request)
        return json_response(dataset.describe())
    if verb is None and request.method == "DELETE":
        record(request)
        del store.datasets[dataset.name]
        return json_response({})
    if verb == "upload" and request.method == "POST":
        return await _upload(request, dataset)
    if verb == "getUploadEndpoint" and request.method == "POST":
        return await _upload_endpoint(request, store, dataset)
    if verb == "validateUpload" and request.method == "POST":
        return await _validate_upload(request, dataset)
    raise FireworksError("NOT_FOUND", f"no method {request.method} {request.path}")


async def signed_upload(request: web.Request) -> web.Response:
    """The signed URL: a PUT of the file's bytes, without Fireworks' key (as a storage bucket's
    URL is used). A size other than the one declared is refused, as the URL's signed
    content-length range refuses it."""
    store = request.app[FIREWORKS]
    target = store.uploads.get(request.match_info["token"])
    if target is None or request.method != "PUT":
        return web.Response(status=403, text="SignatureDoesNotMatch: the signed URL is invalid")
    content = await request.read()
    record(request, {"bytes": len(content)})
    dataset = store.datasets.get(target[0])
    if dataset is None:
        return web.Response(status=404, text="NoSuchKey")
    expected = dataset.expected.get(target[1])
    if expected != len(content):
        return web.Response(
            status=400,
            text=f"EntityTooLarge: {len(content)} bytes, the URL was signed for {expected}",
        )
    dataset.received[target[1]] = content
    return web.Response(status=200)


# -- jobs -----------------------------------------------------------------------------------


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
    base = _string(config, "baseModel")
    warm = _string(config, "warmStartFrom")
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
    _resource_id(model_id, "output model ID")
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
    job_id = _resource_id(given, "job ID") if given else "j" + uuid.uuid4().hex[:15]
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
    rank = _int(config, "loraRank", 0, 1 << 20)
    if rank is not None and rank not in LORA_RANKS:
        raise invalid(f"invalid lora_rank {rank}: one of {', '.join(map(str, LORA_RANKS))}")
    learning_rate = _float(config, "learningRate", 1.0)
    epochs = _int(config, "epochs", 1, MAX_EPOCHS)
    batch = _int(config, "batchSize", 1, MAX_BATCH_TOKENS)
    return {
        "epochs": epochs or DEFAULT_EPOCHS,
        "learning_rate": learning_rate or DEFAULT_LEARNING_RATE,
        "lora_rank": rank or DEFAULT_LORA_RANK,
        "batch_size": batch or DEFAULT_BATCH_TOKENS,
        "batch_size_samples": _int(config, "batchSizeSamples", 1, MAX_BATCH_SAMPLES),
        "max_context_length": _int(config, "maxContextLength", 1, context),
    }


async def create_job(request: web.Request, kind: str) -> web.Response:
    account = _account(request)
    store = request.app[FIREWORKS]
    body = await _body(request)
    if kind == "sft":
        _unknown(body, SFT_FIELDS)
        config = body
        param = "supervisedFineTuningJobId"
    else:
        _unknown(body, DPO_FIELDS)
        given = body.get("trainingConfig")
        config = given if isinstance(given, dict) else {}
        _unknown(config, TRAINING_CONFIG_FIELDS, "trainingConfig.")
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
    output = _output_model(store, account, _string(config, "outputModel"), job_id)
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
        display_name=_string(body, "displayName") or job_id,
        created_at=now,
        run_s=run_s,
        steps=steps,
        per_epoch=per_epoch,
        problem=problem,
        extra={name: body[name] for name in keep if name in body},
    )
    store.jobs[job.name] = job
    return json_response(job.describe(_origin(request)))


def _job(request: web.Request, collection: str, job_id: str) -> Job:
    account = _account(request)
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
        _authenticate(request)
        if request.method == "POST":
            return await create_job(request, kind)
        record(request)
        account = _account(request)
        store = request.app[FIREWORKS]
        store.advance_all()
        mine = [j for j in store.jobs.values() if j.account == account and j.kind == kind]
        mine.sort(key=lambda j: j.created_at, reverse=True)
        origin = _origin(request)
        return json_response(_page([j.describe(origin) for j in mine], request, collection))

    return handler


def jobs_item(kind: str) -> JsonHandler:
    collection = "supervisedFineTuningJobs" if kind == "sft" else "dpoJobs"

    async def handler(request: web.Request) -> web.Response:
        _authenticate(request)
        job_id, verb = _split(request)
        if request.method == "POST":
            await _body(request)
        else:
            record(request)
        job = _job(request, collection, job_id)
        store = request.app[FIREWORKS]
        if verb is None and request.method == "GET":
            return json_response(job.describe(_origin(request)))
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
            url = job.metrics_url(_origin(request)) if job.revealed else ""
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


# -- models and inference -------------------------------------------------------------------


async def models_root(request: web.Request) -> web.Response:
    _authenticate(request)
    record(request)
    account = _account(request)
    store = request.app[FIREWORKS]
    store.advance_all()
    if account == "fireworks":
        items = [base_model_object(name, model) for name, model in BASE_MODELS.items()]
    else:
        items = [m.describe() for m in store.models.values() if m.account == account]
    return json_response(_page(items, request, "models"))


async def models_item(request: web.Request) -> web.Response:
    _authenticate(request)
    record(request)
    account = _account(request)
    model_id, verb = _split(request)
    name = f"accounts/{account}/models/{model_id}"
    store = request.app[FIREWORKS]
    store.advance_all()
    if verb is None and name in BASE_MODELS:
        return json_response(base_model_object(name, BASE_MODELS[name]))
    if verb is None and name in store.models:
        return json_response(store.models[name].describe())
    raise FireworksError("NOT_FOUND", f'model "{name}" not found')


def served_models(store: Store) -> list[str]:
    """What answers at the inference path: serverless base models and finished fine-tunes."""
    store.advance_all()
    bases = [name for name, model in BASE_MODELS.items() if model.serverless]
    return [*bases, *store.models]


async def _inference(request: web.Request) -> None:
    """The key and the model's check before the OpenAI endpoint answers the call."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InferenceError(401, "The API key you provided is invalid.", "UNAUTHORIZED")
    body = loads_or_none(await request.read())
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str) and model not in served_models(request.app[FIREWORKS]):
        raise InferenceError(404, MODEL_NOT_FOUND, "NOT_FOUND")


async def inference_chat(request: web.Request) -> web.StreamResponse:
    await _inference(request)
    return await chat_completions(request)


async def inference_completions(request: web.Request) -> web.StreamResponse:
    await _inference(request)
    return await completions(request)


async def inference_models(request: web.Request) -> web.Response:
    record(request)
    store = request.app[FIREWORKS]
    data = [
        {"id": name, "object": "model", "owned_by": name.split("/")[1], "created": 1_700_000_000}
        for name in served_models(store)
    ]
    return json_response({"object": "list", "data": data})


async def not_found(request: web.Request) -> web.Response:
    record(request)
    raise FireworksError("NOT_FOUND", f"no method {request.method} {request.path}")


def add_fireworks_routes(app: web.Application) -> None:
    """Fireworks' routes; before the simulator's catch-all /v1 passthrough."""
    app[FIREWORKS] = Store()
    r = app.router
    accounts = "/v1/accounts/{account}"
    r.add_route("GET", f"{accounts}/datasets", datasets_root)
    r.add_route("POST", f"{accounts}/datasets", datasets_root)
    r.add_route("*", accounts + "/datasets/{rest}", dataset_item)
    for kind, collection in (("sft", "supervisedFineTuningJobs"), ("dpo", "dpoJobs")):
        r.add_route("GET", f"{accounts}/{collection}", jobs_root(kind))
        r.add_route("POST", f"{accounts}/{collection}", jobs_root(kind))
        r.add_route("*", accounts + f"/{collection}/" + "{rest}", jobs_item(kind))
    r.add_route("GET", f"{accounts}/models", models_root)
    r.add_route("GET", accounts + "/models/{rest}", models_item)
    r.add_route("*", "/v1/accounts/{tail:.*}", not_found)
    r.add_post("/inference/v1/chat/completions", inference_chat)
    r.add_post("/inference/v1/completions", inference_completions)
    r.add_get("/inference/v1/models", inference_models, allow_head=False)
    r.add_route("*", SIM_PREFIX + "/uploads/{token}", signed_upload)
    r.add_get(SIM_PREFIX + "/metrics/{token}.jsonl", metrics_file, allow_head=False)
