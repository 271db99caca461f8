"""Splicing top-level values into JSON bytes, checked against the standard library's parser on
thousands of generated bodies: odd spacing, escapes in keys, nested and repeated keys."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from gateway.jsonbytes import (
    first_member,
    nesting_depth_exceeds,
    splice,
    top_level_value_spans,
)
from gateway.payload import UpstreamPayload
from gateway.wire import ROUTED_ENDPOINTS

CHAT = ROUTED_ENDPOINTS["/v1/chat/completions"]
SPACES = ["", " ", "\n", "\t ", "\r\n  "]
KEY_SPELLINGS = {
    "model": ['"model"', '"mod\\u0065l"', '"\\u006Dodel"', '"\\u006d\\u006f\\u0064\\u0065\\u006c"'],
    "stream_options": ['"stream_options"', '"stream\\u005foptions"'],
}


def space(rng: random.Random) -> str:
    return rng.choice(SPACES)


def value(rng: random.Random, depth: int = 0) -> str:
    """A random JSON value as text, with the traps: strings holding quotes, backslashes,
    brackets and key-like text, nested objects keyed `model`, big integers."""
    kind = rng.randrange(9 if depth < 4 else 5)
    if kind == 0:
        return rng.choice(
            ["true", "false", "null", "0", "-1.50e3", "123456789012345678901234567890"]
        )
    if kind in (1, 2, 3, 4):
        return json.dumps(
            rng.choice(
                [
                    "plain",
                    'he said "model": "x"',
                    "back\\slash\\",
                    "\\\\",
                    "[{",
                    '\\"model\\":',
                    "caf\u00e9 \u2603",
                    "",
                ]
            ),
            ensure_ascii=rng.random() < 0.5,
        )
    if kind in (5, 6):
        items = [value(rng, depth + 1) for _ in range(rng.randrange(4))]
        return "[" + space(rng) + ("," + space(rng)).join(items) + space(rng) + "]"
    members = []
    for _ in range(rng.randrange(4)):
        key = rng.choice(['"a"', '"model"', '"stream_options"', '"x\\"model"', '"mod\\u0065l"'])
        members.append(key + space(rng) + ":" + space(rng) + value(rng, depth + 1))
    return "{" + space(rng) + ("," + space(rng)).join(members) + space(rng) + "}"


def body(rng: random.Random) -> str:
    members = []
    for name in rng.sample(["messages", "model", "stream", "stream_options", "seed", "extra"], 6):
        if name == "model":
            text = json.dumps(rng.choice(["gpt-4o", "a\\b", 'q"uote']))
            spellings = KEY_SPELLINGS["model"]
        elif name == "stream":
            text = rng.choice(["true", "false"])
            spellings = ['"stream"']
        elif name == "stream_options":
            if rng.random() < 0.4:
                continue
            text = rng.choice(["null", "{}", '{"include_usage": false}', '{"x": [1, {"y": 2}]}'])
            spellings = KEY_SPELLINGS["stream_options"]
        else:
            text = value(rng)
            spellings = [json.dumps(name)]
        key = rng.choice(spellings)
        members.append(key + space(rng) + ":" + space(rng) + text)
        if name == "model" and rng.random() < 0.15:  # a repeated top-level key
            members.append(rng.choice(spellings) + ":" + json.dumps("other"))
    return space(rng) + "{" + space(rng) + ("," + space(rng)).join(members) + space(rng) + "}"


def expected_upstream(parsed: dict[str, Any], wants_usage: bool, model: str) -> dict[str, Any]:
    out = dict(parsed)
    out["model"] = model
    if parsed.get("stream") is True and not wants_usage:
        options = parsed.get("stream_options") or {}
        out["stream_options"] = {**options, "include_usage": True}
    return out


@pytest.mark.parametrize("seed", range(8))
def test_spliced_bodies_parse_to_the_client_body_with_only_our_fields_changed(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(400):
        raw = body(rng).encode()
        reference = json.loads(raw)  # the standard library keeps big integers exact
        parsed = orjson.loads(raw)
        payload = UpstreamPayload(CHAT, parsed, raw, parsed["model"])
        sent = payload.for_model("upstream-model")
        assert json.loads(sent) == expected_upstream(
            reference, payload.client_wants_usage, "upstream-model"
        ), raw
        # Every top-level `model` key now says the upstream model, whichever the provider reads.
        pairs = json.loads(sent, object_pairs_hook=lambda pairs: pairs)
        assert [v for k, v in pairs if k == "model"] == ["upstream-model"] * sum(
            1 for k, _ in json.loads(raw, object_pairs_hook=lambda pairs: pairs) if k == "model"
        )


def test_bytes_outside_the_changed_values_are_kept() -> None:
    raw = b'{ "a" : 1.50 , "model":"m" ,"seed":123456789012345678901234567890 }'
    spans = top_level_value_spans(raw, "model")
    assert [raw[s:e] for s, e in spans] == [b'"m"']
    assert splice(raw, [(spans[0], b'"n"')]) == raw.replace(b'"m"', b'"n"')


def test_a_member_is_inserted_first_in_empty_and_full_objects() -> None:
    for raw, expected in [
        (b"{}", b'{"k":1}'),
        (b" { } ", b' {"k":1} } '.replace(b"} }", b" }")),
        (b'{"a":2}', b'{"k":1,"a":2}'),
    ]:
        edit = first_member(raw, b'"k":1')
        assert json.loads(splice(raw, [edit])) == json.loads(expected)


def nested_text(rng: random.Random, depth: int) -> bytes:
    """``depth`` levels of arrays and objects, with brackets in strings and siblings on the way."""
    openings = {"[": "]", '{"k":': "}", '[1, "]]", {"a": [2]}, ': "]"}
    pieces = [rng.choice(list(openings)) for _ in range(depth)]
    closing = "".join(openings[piece] for piece in reversed(pieces))
    return ("".join(pieces) + "0" + closing).encode()


def real_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((real_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((real_depth(v) for v in value.values()), default=0)
    return 0


@pytest.mark.parametrize("seed", range(4))
def test_nesting_depth_is_measured_exactly(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        depth = rng.randrange(1, 300)
        raw = nested_text(rng, depth)
        actual = real_depth(json.loads(raw))
        assert actual >= depth
        for limit in (actual - 1, actual, actual + 1, 128):
            assert nesting_depth_exceeds(raw, limit) == (actual > limit), (raw, limit)


def test_brackets_inside_strings_do_not_count() -> None:
    raw = b'{"a": "' + b"[" * 500 + b'\\"' + b"{" * 500 + b'"}'
    assert not nesting_depth_exceeds(raw, 2)
