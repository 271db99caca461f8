"""Deterministic replies: text, JSON objects and tool calls, drawn from a seeded RNG.

The seed is a sha256 of the canonical JSON of whatever determines the answer (model, messages,
seed, n, max_tokens, tools, ...), so the same request always gets the same reply, streamed or
not, and changing any of those changes it. Words come from a fixed vocabulary and form short
sentences; a reply is 12..60 tokens (see ``tokens``) unless capped by max_tokens.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any

import orjson

from simulator.tokens import count_tokens, split_tokens

MIN_TOKENS = 12
MAX_TOKENS = 60
MAX_DEPTH = 4
MAX_ITEMS = 16
"""The most items an array filled from a schema gets, whatever its ``minItems`` says."""

_WORDS = """
    the a model answer data system request response token stream latency student teacher
    route gateway capture record training example user question result value signal quality
    cost budget vector window context prompt reply message service cluster node queue batch
    cache replica shard index query filter score metric trace span event layer weight
    simple fast small large early late quiet clear stable careful useful common open steady
    brief exact plain rough honest modest robust gentle bright narrow
    runs holds moves keeps sends reads writes finds makes takes gives shows builds checks
    learns counts waits turns grows meets
    with from into over under after before about across between through within
    and but so then also often rarely always never soon still only
"""
VOCABULARY: tuple[str, ...] = tuple(_WORDS.split())
_SPACED = tuple(" " + word for word in VOCABULARY)
_CAPITAL = tuple(word.capitalize() for word in VOCABULARY)
_SPACED_CAPITAL = tuple(" " + word for word in _CAPITAL)


def request_seed(*parts: Any) -> int:
    """A 64-bit seed from the canonical JSON of the parts that determine a reply."""
    canonical = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return int.from_bytes(hashlib.sha256(canonical).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class TextReply:
    """A text answer as the tokens it is streamed in."""

    pieces: list[str]
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def tokens(self) -> int:
        return len(self.pieces)


@dataclass(frozen=True, slots=True)
class ToolCallReply:
    """One function call; its arguments are streamed as token-sized fragments."""

    call_id: str
    name: str
    argument_pieces: list[str]

    @property
    def arguments(self) -> str:
        return "".join(self.argument_pieces)

    @property
    def tokens(self) -> int:
        return count_tokens(self.name) + len(self.argument_pieces)


Reply = TextReply | ToolCallReply


def _capped(pieces: list[str], cap: int | None) -> TextReply:
    if cap is not None and len(pieces) > cap:
        return TextReply(pieces[:cap], "length")
    return TextReply(pieces, "stop")


def sentences(rng: random.Random, length: int) -> list[str]:
    """Exactly ``length`` tokens of short sentences, each ending in a full stop."""
    pieces: list[str] = []
    remaining = length
    while remaining > 0:
        size = rng.randint(5, 12)
        if remaining - size < 5:
            size = remaining
        first = rng.randrange(len(VOCABULARY))
        pieces.append(_CAPITAL[first] if not pieces else _SPACED_CAPITAL[first])
        position = 1
        while position < size - 1:
            if 1 < position < size - 2 and pieces[-1] != "," and rng.random() < 0.1:
                pieces.append(",")
            else:
                pieces.append(rng.choice(_SPACED))
            position += 1
        pieces.append(".")
        remaining -= size
    return pieces


def phrase(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(words))


def text_reply(rng: random.Random, cap: int | None) -> TextReply:
    return _capped(sentences(rng, rng.randint(MIN_TOKENS, MAX_TOKENS)), cap)


def json_reply(rng: random.Random, cap: int | None, schema: Any = None) -> TextReply:
    """A JSON object as text: filled from ``schema`` when given, else a small fixed shape."""
    if isinstance(schema, dict):
        value = fill_schema(schema, rng, all_properties=True)
        if not isinstance(value, dict):
            value = {"value": value}
    else:
        value = {"answer": phrase(rng, rng.randint(4, 10)), "confidence": _number(rng, {})}
    return _capped(split_tokens(orjson.dumps(value).decode()), cap)


def tool_reply(rng: random.Random, name: str, parameters: Any) -> ToolCallReply:
    schema = parameters if isinstance(parameters, dict) else {}
    arguments = fill_schema(schema, rng) if schema.get("properties") else {}
    if not isinstance(arguments, dict):
        arguments = {}
    call_id = f"call_{rng.getrandbits(96):024x}"
    return ToolCallReply(call_id, name, split_tokens(orjson.dumps(arguments).decode()))


def fill_schema(
    schema: dict[str, Any], rng: random.Random, depth: int = 0, all_properties: bool = False
) -> Any:
    """A value of the schema's type; objects get their required properties (all if unlisted)."""
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options and isinstance(options[0], dict):
            return fill_schema(options[0], rng, depth, all_properties)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), "null")
    if kind == "object":
        return _object(schema, rng, depth, all_properties)
    if kind == "array":
        items = schema.get("items")
        if depth >= MAX_DEPTH or not isinstance(items, dict):
            return []
        low = schema.get("minItems", 1)
        count = min(MAX_ITEMS, max(low if isinstance(low, int) else 1, rng.randint(1, 3)))
        return [fill_schema(items, rng, depth + 1, all_properties) for _ in range(count)]
    if kind == "integer":
        return _integer(rng, schema)
    if kind == "number":
        return _number(rng, schema)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(rng, schema)


def _object(
    schema: dict[str, Any], rng: random.Random, depth: int, all_properties: bool
) -> dict[str, Any]:
    properties = schema.get("properties")
    if depth >= MAX_DEPTH or not isinstance(properties, dict):
        return {}
    required = schema.get("required")
    if all_properties or not isinstance(required, list):
        names = list(properties)
    else:
        names = [name for name in required if isinstance(name, str) and name in properties]
    result: dict[str, Any] = {}
    for name in names:
        sub = properties[name]
        result[name] = fill_schema(sub if isinstance(sub, dict) else {}, rng, depth + 1)
    return result


def _bound(value: Any, default: float) -> float:
    """A schema's ``minimum`` or ``maximum``: a finite number, else ``default``."""
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    return default


_SAFE_INTEGER = 2**53
"""Integers drawn stay within what every JSON reader takes exactly."""


def _integer(rng: random.Random, schema: dict[str, Any]) -> int:
    def clamped(value: float) -> int:
        return int(min(_SAFE_INTEGER, max(-_SAFE_INTEGER, value)))

    low = clamped(_bound(schema.get("minimum"), 1))
    high = clamped(_bound(schema.get("maximum"), max(100, low + 100)))
    return rng.randint(min(low, high), max(low, high))


def _number(rng: random.Random, schema: dict[str, Any]) -> float:
    low = float(_bound(schema.get("minimum"), 0.0))
    high = float(_bound(schema.get("maximum"), low + 1.0 if low >= 1.0 else 1.0))
    value = rng.uniform(min(low, high), max(low, high))
    return round(value, 2) if math.isfinite(value) else low


def _string(rng: random.Random, schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    if fmt == "date":
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "date-time":
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z"
    if fmt == "email":
        return f"{rng.choice(VOCABULARY)}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{rng.choice(VOCABULARY)}"
    return phrase(rng, rng.randint(1, 3))
