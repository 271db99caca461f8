"""POST /v1/embeddings: deterministic unit vectors from a hash of each input.

Each input (text or token ids) is hashed with shake-256 into ``dimensions`` signed 16-bit
values, which are normalised to length 1. The same input always gives the same vector;
different inputs give nearly orthogonal ones. ``encoding_format: base64`` (what the openai SDK
asks for by default) returns little-endian float32 bytes in base64, "float" a list of numbers.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from simulator.content import request_seed
from simulator.exchange import begin, respond
from simulator.tokens import count_input
from simulator.wire import InvalidRequest, MissingParameter, positive_int

DEFAULT_DIMENSIONS = 1536
MAX_DIMENSIONS = 8192
MAX_INPUTS = 2048
"""OpenAI's limit on the inputs of one call."""


@lru_cache(maxsize=128)  # ~60 kB an entry at 1536 dimensions
def unit_vector(key: bytes, dimensions: int) -> tuple[tuple[float, ...], str]:
    """The vector for ``key`` as floats and as base64 of little-endian float32."""
    raw = array("h", hashlib.shake_256(key).digest(2 * dimensions))
    norm = math.hypot(*raw) or 1.0
    scale = 1.0 / norm
    packed = array("f", [value * scale for value in raw])
    if sys.byteorder == "big":
        packed.byteswap()
    # Round through float32 so the float and base64 answers are the same numbers.
    return tuple(packed.tolist()), base64.b64encode(packed.tobytes()).decode()


def split_inputs(value: Any) -> list[Any]:
    """The input as a list of items: a text, texts, token ids or lists of token ids."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) for item in value):
            return [value]
        if all(isinstance(item, str | list) for item in value):
            return list(value)
    raise InvalidRequest(
        "Invalid 'input': expected a non-empty string, array of strings or of token arrays.",
        "input",
        "invalid_value",
    )


async def embeddings(request: web.Request) -> web.StreamResponse:
    call = await begin(request)
    body = call.body
    if not call.model:
        raise MissingParameter("model")
    if body.get("input") is None:
        raise MissingParameter("input")
    items = split_inputs(body["input"])
    if len(items) > MAX_INPUTS:
        raise InvalidRequest(
            f"Invalid 'input': at most {MAX_INPUTS} inputs per call.", "input", "invalid_value"
        )
    dimensions = positive_int(body, "dimensions") or DEFAULT_DIMENSIONS
    if dimensions > MAX_DIMENSIONS:
        raise InvalidRequest(
            f"Invalid 'dimensions': at most {MAX_DIMENSIONS}.", "dimensions", "invalid_value"
        )
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(items):
        key = orjson.dumps([call.model, item])
        floats, packed = unit_vector(key, dimensions)
        vector = packed if as_base64 else floats
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = count_input(items)
    payload = {
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    ttft_s, _ = call.delays(request_seed("embeddings", call.model, items))
    return await respond(request, call, payload, ttft_s)
