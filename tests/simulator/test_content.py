"""The token rule and the deterministic generators, without a server."""

from __future__ import annotations

import random

import orjson

from simulator.content import fill_schema, sentences, text_reply, tool_reply
from simulator.tokens import count_prompt, count_tokens, split_tokens


def test_token_rule() -> None:
    assert split_tokens("Hello, world.") == ["Hello", ",", " world", "."]
    assert count_tokens("") == 0
    assert count_tokens('{"a":1}') == 7
    text = "  Tokens keep  their spacing, so joining\tthem gives the text back."
    assert "".join(split_tokens(text)) == text
    messages = [{"role": "user", "content": "Hello, world."}, {"role": "user", "content": ""}]
    assert count_prompt(messages) == 4 + 3 + 0 + 3 + 3


def test_generated_text_counts_as_it_is_streamed() -> None:
    for length in (12, 13, 17, 31, 60):
        pieces = sentences(random.Random(length), length)
        assert len(pieces) == length
        text = "".join(pieces)
        assert split_tokens(text) == pieces and text.endswith(".")
    reply = text_reply(random.Random(1), cap=None)
    assert 12 <= reply.tokens <= 60 and reply.finish_reason == "stop"
    assert text_reply(random.Random(1), cap=None) == reply
    capped = text_reply(random.Random(1), cap=4)
    assert capped.pieces == reply.pieces[:4] and capped.finish_reason == "length"


def test_schema_filling_by_type() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string", "format": "date"},
            "e": {"enum": [3, "x"]},
            "n": {"type": ["number", "null"], "minimum": 5, "maximum": 6},
            "c": {"const": "fixed"},
            "any": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "list": {"type": "array", "items": {"type": "boolean"}, "minItems": 2},
            "skip": {"type": "string"},
        },
        "required": ["s", "e", "n", "c", "any", "list"],
    }
    value = fill_schema(schema, random.Random(0))
    assert set(value) == {"s", "e", "n", "c", "any", "list"}
    assert len(value["s"]) == 10 and value["e"] in (3, "x")
    assert 5 <= value["n"] <= 6 and value["c"] == "fixed"
    assert isinstance(value["any"], int)
    assert len(value["list"]) >= 2 and all(isinstance(item, bool) for item in value["list"])

    call = tool_reply(random.Random(0), "f", schema)
    assert orjson.loads(call.arguments) == fill_schema(schema, random.Random(0))
    assert call.call_id.startswith("call_") and call.tokens == 1 + len(call.argument_pieces)
