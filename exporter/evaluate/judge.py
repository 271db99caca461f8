"""A pairwise LLM judge, called through the gateway like any other model.

The judge sees the conversation and two answers, labelled A and B in an order drawn at random
for each pair (so a judge that favours the first answer does not favour either side), and
answers JSON ``{"winner": "A" | "B" | "tie", "reason": ...}``, ties allowed. A verdict that
cannot be read counts as no verdict, reported apart.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import httpx
import orjson

from exporter.examples import Message

Verdict = Literal["candidate", "baseline", "tie"]
MAX_CHARS = 6000

INSTRUCTIONS = (
    "You compare two answers to the same conversation. Decide which answer serves the user "
    "better: correct, complete, following the conversation's instructions and format, no "
    "longer than the task needs. The order of the answers means nothing. If they are equally "
    "good or equally bad, say tie. Reply with JSON only: "
    '{"winner": "A" | "B" | "tie", "reason": "<one sentence>"}.'
)

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "winner": {"type": "string", "enum": ["A", "B", "tie"]},
        "reason": {"type": "string"},
    },
    "required": ["winner", "reason"],
    "additionalProperties": False,
}


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + " [...]"


def render(message: Message) -> str:
    parts = []
    content = message.get("content")
    if isinstance(content, str) and content:
        parts.append(_clip(content))
    for call in message.get("tool_calls") or ():
        function = call.get("function", {})
        parts.append(f"[calls {function.get('name')}({_clip(str(function.get('arguments')))})]")
    return "\n".join(parts) or "[empty]"


def judge_request(
    prompt: list[Message], first: Message, second: Message, model: str
) -> dict[str, Any]:
    conversation = "\n\n".join(f"{m['role'].upper()}: {render(m)}" for m in prompt)
    text = (
        f"<conversation>\n{conversation}\n</conversation>\n\n"
        f"<answer_a>\n{render(first)}\n</answer_a>\n\n<answer_b>\n{render(second)}\n</answer_b>"
    )
    return {
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": text},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "verdict", "schema": VERDICT_SCHEMA, "strict": True},
        },
    }


def read_verdict(payload: Any) -> str | None:
    try:
        content = payload["choices"][0]["message"]["content"]
        winner = orjson.loads(content)["winner"]
    except (KeyError, IndexError, TypeError, orjson.JSONDecodeError):
        return None
    return winner if winner in ("A", "B", "tie") else None


async def judge(
    client: httpx.AsyncClient,
    judge_model: str,
    prompt: list[Message],
    candidate: Message,
    baseline: Message,
    rng: random.Random,
    headers: dict[str, str] | None = None,
) -> Verdict | None:
    """Which answer the judge prefers, from the candidate's side; None if it did not say."""
    candidate_first = rng.random() < 0.5
    first, second = (candidate, baseline) if candidate_first else (baseline, candidate)
    body = judge_request(prompt, first, second, judge_model)
    try:
        response = await client.post("/v1/chat/completions", json=body, headers=headers)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    winner = read_verdict(response.json())
    if winner is None:
        return None
    if winner == "tie":
        return "tie"
    return "candidate" if (winner == "A") == candidate_first else "baseline"
