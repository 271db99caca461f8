"""vLLM's runtime LoRA API, as a vLLM server started with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` answers it:

    POST /v1/load_lora_adapter     {"lora_name", "lora_path"}  -> 200 text "Success: ..."
    POST /v1/unload_lora_adapter   {"lora_name"}               -> 200 text "Success: ..."

A loaded adapter is listed in /v1/models and answered by name like any model. vLLM refuses a
name already loaded and an unload of a name it does not have (400, in its error shape).
"""

from __future__ import annotations

from aiohttp import web

from simulator.exchange import begin
from simulator.wire import InvalidRequest

ADAPTERS = web.AppKey("lora_adapters", dict[str, str])


def _field(body: dict[str, object], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' must be provided and be a non-empty string.", name)
    return value


async def load_lora_adapter(request: web.Request) -> web.Response:
    call = await begin(request)
    name, path = _field(call.body, "lora_name"), _field(call.body, "lora_path")
    adapters: dict[str, str] = request.app[ADAPTERS]
    if name in adapters:
        raise InvalidRequest(f"The lora adapter '{name}' has already been loaded.", "lora_name")
    adapters[name] = path
    return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")


async def unload_lora_adapter(request: web.Request) -> web.Response:
    call = await begin(request)
    name = _field(call.body, "lora_name")
    adapters: dict[str, str] = request.app[ADAPTERS]
    if adapters.pop(name, None) is None:
        raise InvalidRequest(f"The lora adapter '{name}' cannot be found.", "lora_name")
    return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")


def loaded_adapters(app: web.Application) -> list[str]:
    adapters: dict[str, str] = app[ADAPTERS]
    return list(adapters)


def add_vllm_routes(app: web.Application) -> None:
    app[ADAPTERS] = {}
    app.router.add_post("/v1/load_lora_adapter", load_lora_adapter)
    app.router.add_post("/v1/unload_lora_adapter", unload_lora_adapter)
