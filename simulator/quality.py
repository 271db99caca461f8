"""Answer quality: defects a weaker model makes, and a judge that sees them.

A model's ``quality`` (its profile entry, 0..1, default 1) is the share of its chat answers
without a defect; the rest carry one, drawn from the request's content seed (so the same
request always gets the same answer):

- text: cut off after a few words, without its full stop;
- JSON (``response_format``): the JSON text cut in half, so it does not parse;
- a tool call: its arguments cut in half, so they do not parse.

A quality of 1 changes nothing, so every answer is what it was without this module.

The judge: a chat request that asks for structured output (``json_schema``) with a property
whose ``enum`` holds ``"A"`` and ``"B"`` (and perhaps ``"tie"``), and whose last user message
shows the two answers as ``<answer_a>...</answer_a>`` and ``<answer_b>...</answer_b>`` (the
usual pairwise-judge layout), is answered by comparing the defects the simulator can see in
each: a text cut off mid-sentence, JSON that does not parse, a tool call (shown as
``[calls NAME(ARGS)]``) whose arguments do not parse, an empty answer (``[empty]``). The answer
with fewer defects wins; when both have as many, the verdict is drawn from the enum as any
other structured answer would be. Everything else about the request is answered as usual.
"""

from __future__ import annotations

import random
import re
from typing import Any

import orjson

from simulator.content import Reply, TextReply, ToolCallReply, fill_schema

DEFECT_SALT = 0x5EED_D0C7
"""Mixed into the content seed for the quality draw, so it is independent of the answer."""
FRAGMENT_TOKENS = 3
SENTENCE_ENDS = (".", "!", "?")

_A = re.compile(r"<answer_a>\s*(.*?)\s*</answer_a>", re.DOTALL)
_B = re.compile(r"<answer_b>\s*(.*?)\s*</answer_b>", re.DOTALL)
_CALL = re.compile(r"\[calls ([^\s(]+)\((.*)\)\]", re.DOTALL)


def defective(seed: int, index: int, quality: float) -> bool:
    """Whether answer ``index`` of the request with this content seed has a defect."""
    if quality >= 1.0:
        return False
    return random.Random((seed ^ DEFECT_SALT) + index).random() >= quality


def degrade(reply: Reply, as_json: bool) -> Reply:
    """The reply with its defect (see the module's description)."""
    if isinstance(reply, ToolCallReply):
        half = reply.argument_pieces[: max(1, len(reply.argument_pieces) // 2)]
        if len(half) == len(reply.argument_pieces):  # "{}" in one piece: cut the piece
            half = [reply.arguments[: max(1, len(reply.arguments) // 2)]]
        return ToolCallReply(reply.call_id, reply.name, half)
    if as_json:
        text = reply.text
        return TextReply([text[: max(1, len(text) // 2)]], reply.finish_reason)
    words = [piece for piece in reply.pieces if piece.strip() not in (",", ".")]
    fragment = words[:FRAGMENT_TOKENS]
    if fragment:
        fragment[0] = fragment[0].lower()
    return TextReply(fragment, reply.finish_reason)


def _parses(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def defects(answer: str) -> int:
    """The defects the judge sees in one rendered answer."""
    text = answer.strip()
    if not text or text == "[empty]":
        return 1
    found = 0
    prose: list[str] = []
    for line in text.splitlines():
        call = _CALL.fullmatch(line.strip())
        if call is not None:
            found += not _parses(call.group(2))
        elif line.strip():
            prose.append(line.strip())
    if prose:
        body = "\n".join(prose)
        if body.startswith(("{", "[")):
            found += not _parses(body)
        elif not body.endswith(SENTENCE_ENDS):
            found += 1
    return found


def _verdict_property(schema: Any) -> str | None:
    """The property of a pairwise verdict schema that names the winner, if it is one."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return None
    for name, spec in schema["properties"].items():
        enum = spec.get("enum") if isinstance(spec, dict) else None
        if isinstance(enum, list) and "A" in enum and "B" in enum:
            return str(name)
    return None


def _last_user_text(messages: list[Any]) -> str | None:
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(
                part.get("text", "")
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
        return None
    return None


def judged(messages: list[Any], schema: Any, rng: random.Random) -> str | None:
    """The judge's JSON answer to a pairwise verdict request; None for any other request."""
    field = _verdict_property(schema)
    if field is None:
        return None
    text = _last_user_text(messages)
    if text is None:
        return None
    first, second = _A.search(text), _B.search(text)
    if first is None or second is None:
        return None
    value = fill_schema(schema, rng, all_properties=True)
    if not isinstance(value, dict):
        return None
    a, b = defects(first.group(1)), defects(second.group(1))
    if a != b:
        value[field] = "A" if a < b else "B"
        if "reason" in value:
            fewer, more = sorted((a, b))
            value["reason"] = f"answer {value[field]} has fewer defects ({fewer} vs {more})."
    return orjson.dumps(value).decode()
