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

This module serves the models and the inference path and lays out the routes; the datasets are
served in ``fireworks_datasets``, the jobs in ``fireworks_jobs``, each reading its calls through
``fireworks_request``, over the state and rules of ``fireworks_state``.
"""

from __future__ import annotations

from aiohttp import web

from simulator.chat import chat_completions
from simulator.completions import completions
from simulator.files import record
from simulator.fireworks_datasets import dataset_item, datasets_root, signed_upload
from simulator.fireworks_jobs import jobs_item, jobs_root, metrics_file
from simulator.fireworks_request import FIREWORKS, account_of, authenticate, page_of, split_rest
from simulator.fireworks_state import (
    BASE_MODELS,
    MODEL_NOT_FOUND,
    SIM_PREFIX,
    FireworksError,
    InferenceError,
    Store,
    base_model_object,
)
from simulator.wire import json_response, loads_or_none


async def models_root(request: web.Request) -> web.Response:
    authenticate(request)
    record(request)
    account = account_of(request)
    store = request.app[FIREWORKS]
    store.advance_all()
    if account == "fireworks":
        items = [base_model_object(name, model) for name, model in BASE_MODELS.items()]
    else:
        items = [m.describe() for m in store.models.values() if m.account == account]
    return json_response(page_of(items, request, "models"))


async def models_item(request: web.Request) -> web.Response:
    authenticate(request)
    record(request)
    account = account_of(request)
    model_id, verb = split_rest(request)
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
