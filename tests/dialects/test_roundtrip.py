"""Property tests: OpenAI -> Anthropic -> OpenAI keeps everything both dialects can say.

Requests and whole answers are generated, translated there and back, and compared in a normal
form that forgets only what the two dialects say differently for the same meaning (a string or
one text part, consecutive turns of one role or one merged turn, arguments' whitespace).
Streams: any split of the upstream's bytes gives the same output as the whole, and a generated
OpenAI stream taken through Anthropic's events and back assembles (with the openai SDK's own
accumulator) to the same message, tool call arguments byte for byte.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialects.requests import anthropic_to_openai_chat, openai_chat_to_anthropic
from dialects.responses import anthropic_message_to_openai_chat, openai_chat_to_anthropic_message
from dialects.streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from tests.dialects.sse import anthropic_event, assemble_anthropic, assemble_openai, openai_chunk

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.text(st.characters(codec="utf-8"), max_size=24)  # utf-8: no lone surrogates
nonempty_texts = texts.filter(bool)
names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True)
call_ids = st.from_regex(r"(toolu_|call_)[A-Za-z0-9]{1,12}", fullmatch=True)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(texts, json_values, max_size=4)
base64_data = st.from_regex(r"[A-Za-z0-9+/]{4,40}={0,2}", fullmatch=True)
image_urls = st.one_of(
    st.builds(
        lambda kind, data: f"data:image/{kind};base64,{data}",
        st.sampled_from(["png", "jpeg", "gif", "webp"]),
        base64_data,
    ),
    st.builds(lambda path: f"https://img.test/{path}.png", names),
)


# ---------------------------------------------------------------- requests


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


@st.composite
def user_content(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(texts)
    parts = draw(
        st.lists(
            st.one_of(
                texts.map(text_part),
                st.builds(
                    lambda url, detail: {
                        "type": "image_url",
                        "image_url": {"url": url, **({"detail": detail} if detail else {})},
                    },
                    image_urls,
                    st.sampled_from([None, "low", "high", "auto"]),
                ),
            ),
            min_size=1,
            max_size=3,
        )
    )
    return parts


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 2))):
        role = draw(st.sampled_from(["system", "developer"]))
        content = draw(
            st.one_of(
                nonempty_texts, st.lists(nonempty_texts.map(text_part), min_size=1, max_size=2)
            )
        )
        messages.append({"role": role, "content": content})
    messages.append({"role": "user", "content": draw(user_content())})
    used_ids: set[str] = set()
    for _ in range(draw(st.integers(0, 3))):
        assistant: dict[str, Any] = {"role": "assistant"}
        content = draw(st.one_of(st.none(), texts, st.lists(texts.map(text_part), max_size=2)))
        assistant["content"] = content
        calls = []
        for _ in range(draw(st.integers(0, 3))):
            call_id = draw(call_ids.filter(lambda i: i not in used_ids))
            used_ids.add(call_id)
            arguments = draw(
                st.one_of(
                    st.just(""),
                    st.builds(
                        lambda o, indent: json.dumps(o, indent=indent),
                        json_objects,
                        st.sampled_from([None, 1]),
                    ),
                )
            )
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": draw(names), "arguments": arguments},
                }
            )
        if calls:
            assistant["tool_calls"] = calls
        messages.append(assistant)
        for call in calls:
            result = draw(st.one_of(texts, st.lists(texts.map(text_part), min_size=1, max_size=2)))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        for _ in range(draw(st.integers(0 if calls else 1, 2))):
            messages.append({"role": "user", "content": draw(user_content())})
    return messages


@st.composite
def openai_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(names), "messages": draw(conversations())}
    tools: list[dict[str, Any]] = draw(
        st.lists(
            st.builds(
                lambda name, description, parameters, strict: {
                    "type": "function",
                    "function": {
                        "name": name,
                        **({"description": description} if description is not None else {}),
                        **({"parameters": parameters} if parameters is not None else {}),
                        **({"strict": strict} if strict is not None else {}),
                    },
                },
                names,
                st.none() | texts,
                st.none()
                | st.just({})
                | st.builds(
                    lambda props: {"type": "object", "properties": props},
                    st.dictionaries(names, st.just({"type": "string"}), max_size=3),
                ),
                st.sampled_from([None, True, False]),
            ),
            max_size=3,
            unique_by=lambda t: t["function"]["name"],
        )
    )
    if tools:
        body["tools"] = tools
        choice = draw(st.sampled_from([None, "auto", "required", "none", "named"]))
        if choice == "named":
            body["tool_choice"] = {
                "type": "function",
                "function": {"name": tools[0]["function"]["name"]},
            }
        elif choice is not None:
            body["tool_choice"] = choice
        parallel = draw(st.sampled_from([None, True, False]))
        if parallel is not None:
            body["parallel_tool_calls"] = parallel
    optional = {
        "stop": st.one_of(nonempty_texts, st.lists(nonempty_texts, max_size=3)),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "max_tokens": st.integers(1, 100_000),
        "max_completion_tokens": st.integers(1, 100_000),
        "user": names,
        "stream": st.booleans(),
        "seed": st.integers(0, 1000),
        "store": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


def _parts(content: Any) -> list[tuple[Any, ...]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [("text", content)] if content else []
    items: list[tuple[Any, ...]] = []
    for part in content:
        if part["type"] == "text":
            if part["text"]:
                items.append(("text", part["text"]))
        elif part["type"] == "image_url":
            items.append(("image", part["image_url"]["url"]))
    return items


def request_normal_form(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """What an OpenAI chat request asks, in one spelling."""
    system: list[str] = []
    turns: list[tuple[str, list[tuple[Any, ...]]]] = []
    for message in body["messages"]:
        role = message["role"]
        if role in ("system", "developer"):
            system.extend(text for _, text in _parts(message["content"]))
            continue
        if role == "tool":
            content = message["content"]
            result = (
                tuple(text for _, text in _parts(content))
                if isinstance(content, list)
                else ((content,) if content else ())
            )
            role = "user"
            items: list[tuple[Any, ...]] = [("tool_result", message["tool_call_id"], result)]
        else:
            items = _parts(message.get("content"))
            for call in message.get("tool_calls") or []:
                arguments = call["function"]["arguments"]
                items.append(
                    (
                        "tool_call",
                        call["id"],
                        call["function"]["name"],
                        orjson.loads(arguments or "{}"),
                    )
                )
            if role == "assistant" and not items:
                continue
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(items)
        else:
            turns.append((role, items))
    tools = [
        (
            tool["function"]["name"],
            tool["function"].get("description"),
            tool["function"].get("parameters") or {"type": "object", "properties": {}},
            tool["function"].get("strict") is True,
        )
        for tool in body.get("tools") or []
    ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = ("named", choice["function"]["name"])
    if tools and choice is None:
        choice = "auto"
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    return {
        "system": system,
        "turns": turns,
        "tools": tools,
        "tool_choice": choice if tools else None,
        "parallel": not (tools and choice != "none" and body.get("parallel_tool_calls") is False),
        "stop": stop or None,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_tokens": limit,
        "user": body.get("user"),
        "stream": bool(body.get("stream")),
    }


@SETTINGS
@given(openai_requests())
def test_requests_survive_openai_anthropic_openai(body: dict[str, Any]) -> None:
    anthropic = openai_chat_to_anthropic(body, model="claude-x", default_max_tokens=777)
    back = anthropic_to_openai_chat(anthropic, model=body["model"])
    assert back["model"] == body["model"]
    assert request_normal_form(back, 777) == request_normal_form(body, 777)
    # and the Anthropic request is one Anthropic accepts: alternating turns, no empty text blocks
    roles = [message["role"] for message in anthropic["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))
    for message in anthropic["messages"]:
        if isinstance(message["content"], list):
            assert all(block.get("text", "x") for block in message["content"])


# ---------------------------------------------------------------- whole answers

usage_counts = st.integers(0, 10**6)


@st.composite
def completions(draw: st.DrawFn) -> dict[str, Any]:
    calls = [
        {
            "id": call_id,
            "type": "function",
            "function": {
                "name": draw(names),
                "arguments": draw(st.one_of(st.just(""), json_objects.map(json.dumps))),
            },
        }
        for call_id in draw(st.lists(call_ids, max_size=3, unique=True))
    ]
    message: dict[str, Any] = {"role": "assistant", "content": draw(st.none() | texts)}
    if draw(st.booleans()):
        message["reasoning_content"] = draw(nonempty_texts)
    if calls:
        message["tool_calls"] = calls
    prompt = draw(usage_counts)
    cached = draw(st.integers(0, prompt))
    completion_tokens = draw(usage_counts)
    details: dict[str, Any] = {"cached_tokens": cached}
    if draw(st.booleans()):
        details["cache_creation_input_tokens"] = draw(st.integers(0, prompt - cached))
    return {
        "id": draw(st.from_regex(r"(chatcmpl-|msg_)[A-Za-z0-9]{1,20}", fullmatch=True)),
        "object": "chat.completion",
        "created": 0,
        "model": draw(names),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": draw(
                    st.sampled_from(
                        ["tool_calls"] if calls else ["stop", "length", "content_filter"]
                    )
                ),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
            "prompt_tokens_details": details,
        },
    }


def completion_normal_form(completion: dict[str, Any]) -> dict[str, Any]:
    choice = completion["choices"][0]
    message = choice["message"]
    calls = message.get("tool_calls") or []
    usage = completion.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return {
        "id": completion["id"],
        "model": completion["model"],
        "content": message.get("content") or "",
        "reasoning": message.get("reasoning_content") or "",
        "tool_calls": [
            (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"] or "{}"))
            for c in calls
        ],
        "finish_reason": choice["finish_reason"],
        "usage": (
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            usage.get("total_tokens"),
            details.get("cached_tokens") or 0,
            details.get("cache_creation_input_tokens") or 0,
        ),
    }


@SETTINGS
@given(completions())
def test_answers_survive_openai_anthropic_openai(completion: dict[str, Any]) -> None:
    message = openai_chat_to_anthropic_message(completion)
    back = anthropic_message_to_openai_chat(message)
    assert completion_normal_form(back) == completion_normal_form(completion)
    # the raw arguments string is even kept byte for byte when it was JSON already compact
    for original, again in zip(
        completion["choices"][0]["message"].get("tool_calls") or [],
        back["choices"][0]["message"].get("tool_calls") or [],
        strict=True,
    ):
        arguments = original["function"]["arguments"]
        if arguments:
            assert orjson.loads(again["function"]["arguments"]) == orjson.loads(arguments)


# ---------------------------------------------------------------- streams


def pieces(draw: st.DrawFn, text: str) -> list[str]:
    """``text`` cut at drawn places (at least one piece, none empty unless the text is)."""
    if not text:
        return []
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(text) - 1, 1)), max_size=4))))
    bounds = [0, *[c for c in cuts if 0 < c < len(text)], len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def openai_streams(draw: st.DrawFn) -> tuple[list[bytes], dict[str, Any]]:
    """A chat completion and the OpenAI chunks that stream it."""
    completion = draw(completions())
    choice = completion["choices"][0]
    message = choice["message"]
    head = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": 0,
        "model": completion["model"],
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return openai_chunk(
            {
                **head,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [
        chunk({"reasoning_content": p})
        for p in pieces(draw, message.get("reasoning_content") or "")
    ]
    chunks += [chunk({"content": p}) for p in pieces(draw, message.get("content") or "")]
    for index, call in enumerate(message.get("tool_calls") or []):
        arguments = call["function"]["arguments"]
        parts = pieces(draw, arguments)
        first = ""
        with_name: bool = draw(st.booleans())  # the first fragment with the name, as some send it
        if parts and with_name:
            first = parts.pop(0)
        chunks.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": first},
                        }
                    ]
                }
            )
        )
        chunks += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]}) for p in parts
        ]
    chunks.append(chunk({}, choice["finish_reason"]))
    chunks.append(openai_chunk({**head, "choices": [], "usage": completion["usage"]}))
    chunks.append(openai_chunk("[DONE]"))
    return chunks, completion


def split_anywhere(drawn: st.DataObject, data: bytes) -> list[bytes]:
    cuts = sorted(set(drawn.draw(st.lists(st.integers(0, len(data)), max_size=12))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def run(stream: AnthropicToOpenAIStream | OpenAIToAnthropicStream, chunks: list[bytes]) -> bytes:
    return b"".join(stream.feed(c) for c in chunks) + stream.flush()


@SETTINGS
@given(openai_streams(), st.data())
def test_openai_streams_split_anywhere_translate_the_same(
    generated: tuple[list[bytes], dict[str, Any]], data: st.DataObject
) -> None:
    chunks, _ = generated
    whole = b"".join(chunks)
    expected = run(OpenAIToAnthropicStream(), [whole])
    assert run(OpenAIToAnthropicStream(), split_anywhere(data, whole)) == expected


@SETTINGS
@given(openai_streams(), st.data())
def test_openai_stream_through_anthropic_events_and_back(
    generated: tuple[list[bytes], dict[str, Any]], data: st.DataObject
) -> None:
    chunks, completion = generated
    there = OpenAIToAnthropicStream()
    anthropic = run(there, split_anywhere(data, b"".join(chunks)))
    assert there.ended
    # the anthropic SDK assembles the same message the whole translation gives
    message = assemble_anthropic(anthropic)
    whole = openai_chat_to_anthropic_message(completion)
    assert [{k: v for k, v in b.items() if v is not None} for b in message["content"]] == (
        whole["content"]
    )
    assert message["stop_reason"] == whole["stop_reason"]
    assert {k: v for k, v in message["usage"].items() if v is not None} == whole["usage"]
    back = AnthropicToOpenAIStream(include_usage=True)
    openai = run(back, split_anywhere(data, anthropic))
    assert back.ended
    assembled = assemble_openai(openai)
    assert completion_normal_form(assembled) == completion_normal_form(completion)
    # tool call arguments byte for byte ("" becomes "{}", which is what it meant)
    for original, again in zip(
        completion["choices"][0]["message"].get("tool_calls") or [],
        assembled["choices"][0]["message"].get("tool_calls") or [],
        strict=True,
    ):
        assert again["function"]["arguments"] == (original["function"]["arguments"] or "{}")
        assert again["id"] == original["id"]


@st.composite
def anthropic_streams(draw: st.DrawFn) -> list[bytes]:
    """The Anthropic events of a generated answer (text, thinking, tool calls), as bytes."""
    completion = draw(completions())
    message = openai_chat_to_anthropic_message(completion)
    out = [
        anthropic_event(
            "message_start",
            {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}},
        )
    ]
    for index, block in enumerate(message["content"]):
        if draw(st.booleans()):
            out.append(anthropic_event("ping", {"type": "ping"}))
        kind = block["type"]
        start = {
            "text": {"type": "text", "text": ""},
            "thinking": {"type": "thinking", "thinking": "", "signature": ""},
        }
        out.append(
            anthropic_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": start.get(kind) or {**block, "input": {}},
                },
            )
        )
        if kind == "text":
            deltas = [{"type": "text_delta", "text": p} for p in pieces(draw, block["text"])]
        elif kind == "thinking":
            deltas = [
                {"type": "thinking_delta", "thinking": p} for p in pieces(draw, block["thinking"])
            ]
        else:
            deltas = [
                {"type": "input_json_delta", "partial_json": p}
                for p in pieces(draw, orjson.dumps(block["input"]).decode())
            ]
        out += [
            anthropic_event(
                "content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}
            )
            for d in deltas
        ]
        out.append(
            anthropic_event("content_block_stop", {"type": "content_block_stop", "index": index})
        )
    out.append(
        anthropic_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
    )
    out.append(anthropic_event("message_stop", {"type": "message_stop"}))
    return out


@SETTINGS
@given(anthropic_streams(), st.data())
def test_anthropic_streams_split_anywhere_translate_the_same(
    events: list[bytes], data: st.DataObject
) -> None:
    whole = b"".join(events)
    expected = run(AnthropicToOpenAIStream(include_usage=True), [whole])
    split = run(AnthropicToOpenAIStream(include_usage=True), split_anywhere(data, whole))
    assert split == expected
    assert run(AnthropicToOpenAIStream(include_usage=True), events) == expected
    # and the assembled answer is the whole translation of the assembled message
    assembled = assemble_openai(expected)
    whole_answer = anthropic_message_to_openai_chat(assemble_anthropic(whole))
    assert completion_normal_form(assembled) == completion_normal_form(whole_answer)
