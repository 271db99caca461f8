"""POST /v1/completions, the legacy text completion: one or more prompts, n choices each.

As OpenAI does, max_tokens defaults to 16 here, so most replies end with finish_reason
"length". Prompt tokens are the tokens of the prompts (token-id prompts count their length).
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
from aiohttp import web

from simulator.content import TextReply, request_seed, text_reply
from simulator.exchange import begin, respond
from simulator.streaming import interleave, stream_events
from simulator.tokens import count_input
from simulator.wire import (
    SSE_DONE,
    SYSTEM_FINGERPRINT,
    InvalidRequest,
    MissingParameter,
    new_id,
    positive_int,
    usage,
)

MAX_CHOICES = 128
MAX_PROMPTS = 2048
"""OpenAI's limit on the prompts of one call; with n, at most MAX_PROMPTS choices in all."""

DEFAULT_MAX_TOKENS = 16
_DUMPS = orjson.dumps


def split_prompts(prompt: Any) -> list[Any]:
    """A prompt (text or token ids) or a list of them, as a list of prompts."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(item, int) for item in prompt):
            return [prompt]
        if all(isinstance(item, str | list) for item in prompt):
            return list(prompt)
    raise InvalidRequest(
        "Invalid 'prompt': expected a string, an array of strings or of token arrays.",
        "prompt",
        "invalid_value",
    )


def _lane(reply: TextReply, index: int, prefix: bytes, suffix: bytes) -> list[bytes]:
    head = prefix + b'{"index":' + str(index).encode() + b',"text":'
    tail = b',"logprobs":null,"finish_reason":null}]' + suffix
    lane = [head + _DUMPS(piece) + tail for piece in reply.pieces]
    finish = _DUMPS(reply.finish_reason)
    lane.append(head + b'"","logprobs":null,"finish_reason":' + finish + b"}]" + suffix)
    return lane


async def completions(request: web.Request) -> web.StreamResponse:
    call = await begin(request)
    body = call.body
    if not call.model:
        raise MissingParameter("model")
    if body.get("prompt") is None:
        raise MissingParameter("prompt")
    prompts = split_prompts(body["prompt"])
    n = positive_int(body, "n", MAX_CHOICES) or 1
    if len(prompts) * n > MAX_PROMPTS:
        raise InvalidRequest(
            f"Too many choices: {len(prompts)} prompt(s) x n={n}; at most {MAX_PROMPTS} in all.",
            "prompt",
            "invalid_value",
        )
    cap = positive_int(body, "max_tokens") or DEFAULT_MAX_TOKENS
    replies: list[TextReply] = []
    seeds: list[int] = []
    for prompt in prompts:
        seed = request_seed(
            "completions", call.model, prompt, body.get("seed"), n, cap, body.get("suffix")
        )
        seeds.append(seed)
        replies.extend(text_reply(random.Random(seed + index), cap) for index in range(n))
    prompt_tokens = count_input(prompts)
    completion_tokens = sum(reply.tokens for reply in replies)
    ttft_s, token_s = call.delays(seeds[0])
    head = {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": call.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if body.get("stream") is True:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        prefix = b"data: " + _DUMPS(head)[:-1] + b',"choices":['
        suffix = (b',"usage":null' if include_usage else b"") + b"}\n\n"
        lanes = [_lane(reply, index, prefix, suffix) for index, reply in enumerate(replies)]
        trailer = SSE_DONE
        if include_usage:
            totals = _DUMPS(usage(prompt_tokens, completion_tokens))
            trailer = prefix + b'],"usage":' + totals + b"}\n\n" + SSE_DONE
        events = interleave(lanes, 1)
        return await stream_events(request, call, events, ttft_s, token_s, trailer)
    payload = {
        **head,
        "choices": [
            {
                "text": reply.text,
                "index": index,
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
            for index, reply in enumerate(replies)
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }
    wait_s = ttft_s + token_s * max(reply.tokens for reply in replies)
    return await respond(request, call, payload, wait_s)
