"""Captured calls made by hand, stored with the capture package's own store and schema."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from capture.migrate import upgrade
from capture.store import Store

START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
_ids = itertools.count(1)

Row = dict[str, Any]


def chat_call(
    prompt: str | list[dict[str, Any]],
    answer: str | None = "Sure, here is the answer.",
    *,
    system: str | None = "You are a helpful support agent.",
    tool_calls: list[dict[str, Any]] | None = None,
    tools: list[dict[str, Any]] | None = None,
    route: str = "support",
    variant: str = "teacher",
    model: str = "gpt-4o",
    status: int = 200,
    finish_reason: str | None = None,
    shadow_of: str | None = None,
    tags: dict[str, str] | None = None,
    minutes: float | None = None,
    call_id: str | None = None,
    response: Any = None,
) -> Row:
    """One ``calls`` row for a chat call, as ``capture.prepare`` would store it."""
    number = next(_ids)
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    if isinstance(prompt, str):
        messages.append({"role": "user", "content": prompt})
    else:
        messages.extend(prompt)
    request: dict[str, Any] = {"model": route, "messages": messages}
    if tools:
        request["tools"] = tools
    message: dict[str, Any] = {"role": "assistant", "content": answer, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
        message["content"] = None
    if response is None:
        response = {
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
    return {
        "id": call_id or f"{number:032x}",
        "created_at": START + dt.timedelta(minutes=number if minutes is None else minutes),
        "endpoint": "chat",
        "route": route,
        "variant": variant,
        "provider": "sim",
        "requested_model": route,
        "upstream_model": model,
        "request": request,
        "response": response,
        "status": status,
        "error": None,
        "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
        "prompt_tokens": 20,
        "completion_tokens": 10,
        "cached_tokens": 0,
        "cost_usd": 0.0001,
        "total_ms": 800.0,
        "ttft_ms": None,
        "upstream_ms": 790.0,
        "overhead_ms": 0.5,
        "user_key": None,
        "tags": tags or {},
        "stream": False,
        "shadow_of": shadow_of,
        "cache_hit": False,
    }


def responses_call(
    given: str | list[dict[str, Any]],
    answer: str | None = "Sure, here is the answer.",
    *,
    instructions: str | None = "You are a helpful support agent.",
    function_calls: list[dict[str, Any]] | None = None,
    tools: list[dict[str, Any]] | None = None,
    status: str = "completed",
    minutes: float | None = None,
    response: Any = None,
    **fields: Any,
) -> Row:
    """One ``calls`` row for a Responses API call (``/v1/responses``), as capture stores it.

    ``function_calls``: ``function_call`` output items (``call_id``, ``name``, ``arguments``).
    """
    row = chat_call("", minutes=minutes, **fields)
    request: dict[str, Any] = {"model": row["route"], "input": given}
    if instructions is not None:
        request["instructions"] = instructions
    if tools:
        request["tools"] = tools
    output: list[dict[str, Any]] = []
    if answer is not None:
        part = {"type": "output_text", "text": answer, "annotations": []}
        output.append(
            {
                "type": "message",
                "id": "msg_1",
                "status": status,
                "role": "assistant",
                "content": [part],
            }
        )
    for call in function_calls or ():
        output.append({"type": "function_call", "id": "fc_1", "status": status, **call})
    if response is None:
        response = {
            "id": f"resp_{row['id']}",
            "object": "response",
            "model": row["upstream_model"],
            "status": status,
            "output": output,
        }
    finish = "tool_calls" if function_calls else "stop"
    if status != "completed":
        finish = "length"
    row.update(
        endpoint="responses",
        request=request,
        response=response,
        finish_reason=fields.get("finish_reason") or finish,
    )
    return row


def store_calls(path: Path, rows: Sequence[Row], feedback: Sequence[tuple[str, float]] = ()) -> str:
    """A capture database at ``path`` holding ``rows`` and ``feedback``; its URL."""
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)

    async def fill() -> None:
        store = await Store.connect(url)
        try:
            await store.insert_calls(rows)
            for request_id, score in feedback:
                await store.add_feedback(request_id, score)
        finally:
            await store.close()

    asyncio.run(fill())
    return url


def questions(count: int, seed: int = 0) -> list[str]:
    """Distinct support questions (no two near-duplicates)."""
    import random

    rng = random.Random(seed)
    subjects = ["invoice", "password", "order", "refund", "account", "shipment", "plan", "device"]
    verbs = ["cancel", "change", "track", "reset", "upgrade", "return", "find", "merge", "verify"]
    extras = ["today", "before friday", "for my team", "on mobile", "again", "from abroad"]
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        words = [rng.choice(verbs), "my", rng.choice(subjects), rng.choice(extras)]
        words += [f"{rng.choice(subjects)}-{rng.randrange(10**6)}", rng.choice(verbs)]
        words += rng.sample(["please", "quickly", "kindly", "now", "asap", "thanks"], 3)
        text = "How do I " + " ".join(words) + "?"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
