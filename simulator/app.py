"""The simulator's aiohttp application: routes, models, passthrough and introspection.

POST /v1/chat/completions     chat.py
POST /v1/completions          completions.py
POST /v1/embeddings           embeddings.py
POST /v1/responses            responses.py
POST /v1/messages             anthropic.py (Anthropic's Messages API)
POST /v1/messages/count_tokens anthropic.py
POST /openai/deployments/{deployment}/chat/completions|completions|embeddings   azure.py
POST /openai/v1/chat/completions|completions|embeddings|responses            azure.py
GET  /v1/models[/{id}]        a fixed list plus succeeded fine-tunes; any id is answered
*    /v1/files[/...]           files.py (upload, list, get, content, delete)
*    /v1/fine_tuning/jobs[/...] finetune.py (create, list, get, events, cancel)
*    /v1/accounts/{account}/... fireworks.py (Fireworks' datasets, SFT and DPO jobs, models)
POST /inference/v1/chat/completions|completions   fireworks.py (Fireworks' inference path)
*    /together/v1/...           together.py (Together's files, fine-tunes and serving API)
*    /v1/{anything else}      200 {"object": "list", "data": [], "path", "method"}
GET  /_sim/health             {"ok": true}
GET  /_sim/requests           the last 200 /v1 requests, oldest first
DELETE /_sim/requests         forget them
POST /_sim/quality            {"model", "quality", "match"}: a model's quality on a slice, from now
GET  /_sim/quality            the quality rules in force; DELETE /_sim/quality forgets them
                              (slices.py; a profile's ``quality_rules`` are the first ones)
"""

from __future__ import annotations

from aiohttp import web

from simulator.anthropic import add_anthropic_routes
from simulator.azure import add_azure_routes
from simulator.chat import chat_completions
from simulator.completions import completions
from simulator.embeddings import embeddings
from simulator.exchange import STATE, Simulator, begin, respond, shaped_errors
from simulator.files import add_file_routes
from simulator.finetune import add_finetune_routes, fine_tuned_models
from simulator.fireworks import add_fireworks_routes
from simulator.profile import BUILTIN_PROFILE, Profile
from simulator.responses import responses
from simulator.slices import add_quality_routes
from simulator.together import add_together_routes
from simulator.vllm import add_vllm_routes, loaded_adapters
from simulator.wire import json_response

MODEL_CREATED = 1_700_000_000
MODELS: tuple[str, ...] = (
    "gpt-4",
    "gpt-4-turbo",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-instruct",
    "o1-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
)


def model_object(model_id: str) -> dict[str, object]:
    owner = "system" if model_id.startswith(("ft:", "text-embedding")) else "openai"
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": owner}


async def list_models(request: web.Request) -> web.StreamResponse:
    call = await begin(request, require_json=False)
    models = [*MODELS, *fine_tuned_models(request.app), *loaded_adapters(request.app)]
    payload = {"object": "list", "data": [model_object(model) for model in models]}
    return await respond(request, call, payload, 0.0)


async def get_model(request: web.Request) -> web.StreamResponse:
    call = await begin(request, require_json=False)
    return await respond(request, call, model_object(request.match_info["model_id"]), 0.0)


async def passthrough(request: web.Request) -> web.StreamResponse:
    """Any other /v1 path, so a proxy's passthrough can be seen to arrive."""
    call = await begin(request, require_json=False)
    payload = {"object": "list", "data": [], "path": request.path, "method": request.method}
    ttft_s, _ = call.delays(0)
    return await respond(request, call, payload, ttft_s)


async def health(request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def recorded_requests(request: web.Request) -> web.Response:
    return web.Response(body=request.app[STATE].log.dump(), content_type="application/json")


async def clear_requests(request: web.Request) -> web.Response:
    request.app[STATE].log.clear()
    return json_response({"ok": True})


def create_app(profile: Profile | None = None) -> web.Application:
    """The simulator as an aiohttp application; the built-in profile when none is given."""
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[shaped_errors])
    profile = profile if profile is not None else BUILTIN_PROFILE
    app[STATE] = Simulator(profile)
    router = app.router
    router.add_post("/v1/chat/completions", chat_completions)
    router.add_post("/v1/completions", completions)
    router.add_post("/v1/embeddings", embeddings)
    router.add_post("/v1/responses", responses)
    add_anthropic_routes(app)
    router.add_get("/v1/models", list_models, allow_head=False)
    router.add_get("/v1/models/{model_id:.+}", get_model, allow_head=False)
    add_file_routes(app)
    add_finetune_routes(app)
    add_fireworks_routes(app)
    add_vllm_routes(app)
    router.add_route("*", "/v1/{tail:.*}", passthrough)
    add_azure_routes(app)
    add_together_routes(app)
    router.add_get("/_sim/health", health, allow_head=False)
    router.add_get("/_sim/requests", recorded_requests, allow_head=False)
    router.add_delete("/_sim/requests", clear_requests)
    add_quality_routes(app, profile.quality_rules)
    return app
