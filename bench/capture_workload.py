"""``bench.capture_size``'s workload: seeded calls as a product's traffic makes them (features
with 1-3k-token system prompts and tools on every call, varied user turns, 100-500-token
answers streamed or not, growing conversations, Anthropic-dialect calls), as capture records,
and what they hold (the bytes stored whole, the share of request bytes seen before)."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from capture.config import CaptureSettings
from capture.prepare import Preparer
from capture.record import CallRecord
from dialects.capture import chat_view

SPAN_DAYS = 30
PART_MIN_BYTES = 256
CHARS_PER_TOKEN = 4


# --- the workload ---------------------------------------------------------------------------


class Words:
    """A seeded vocabulary of pseudo-words drawn with Zipf-like frequencies, as words in prose."""

    def __init__(self, rng: random.Random, size: int = 3000) -> None:
        syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in ("a", "e", "i", "o", "u", "ou")]
        words: set[str] = set()
        while len(words) < size:
            words.add("".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
        self.words = sorted(words)
        rng.shuffle(self.words)
        weights = [1.0 / (rank + 1) for rank in range(size)]
        total = 0.0
        self.cumulative = []
        for weight in weights:
            total += weight
            self.cumulative.append(total)
        self.rng = rng
        # Characters per word with its space or full stop, by frequency: so that ``text`` makes
        # its number of tokens at CHARS_PER_TOKEN characters a token.
        self.chars_per_word = (
            sum(w * (len(word) + 1) for w, word in zip(weights, self.words, strict=True)) / total
        )

    def text(self, tokens: int) -> str:
        """About ``tokens`` tokens of text (4 characters a token), in sentences."""
        picked = self.rng.choices(
            self.words,
            cum_weights=self.cumulative,
            k=max(1, round(tokens * CHARS_PER_TOKEN / self.chars_per_word)),
        )
        out: list[str] = []
        for index, word in enumerate(picked):
            out.append(word.capitalize() if index == 0 or out[-1].endswith(".") else word)
            if self.rng.random() < 0.08:
                out[-1] += "."
        return " ".join(out) + "."


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    model: str
    system_tokens: int
    tools: int
    anthropic: bool = False
    """Anthropic's dialect on both sides (``/v1/messages`` answered by Claude)."""
    claude_share: float = 0.0
    """The share of this feature's (OpenAI-dialect) calls answered by an Anthropic upstream."""
    stream_share: float = 0.4
    weight: int = 1


FEATURES = (
    Feature("support-agent", "gpt-4o", 2600, 6, claude_share=0.25, weight=4),
    Feature("invoice-extract", "gpt-4o-mini", 1200, 2, stream_share=0.0, weight=3),
    Feature("code-review", "claude-sonnet-4-5", 3000, 4, anthropic=True, weight=2),
    Feature("summarize", "gpt-4o-mini", 1000, 1, stream_share=0.6, weight=2),
)


def _tool(words: Words, rng: random.Random, index: int) -> dict[str, Any]:
    properties = {
        f"{words.text(1).rstrip('.').lower()}_{n}": {
            "type": rng.choice(("string", "integer", "boolean")),
            "description": words.text(rng.randint(8, 25)),
        }
        for n in range(rng.randint(2, 6))
    }
    return {
        "name": f"tool_{index}_{words.text(1).rstrip('.').lower()}",
        "description": words.text(rng.randint(30, 90)),
        "parameters": {
            "type": "object",
            "properties": properties,
            "required": sorted(properties)[:2],
        },
    }


@dataclass(slots=True)
class _Kit:
    """A feature's fixed parts: its system prompt and tools, in both dialects."""

    feature: Feature
    system: str
    tools_openai: list[dict[str, Any]]
    tools_anthropic: list[dict[str, Any]]


def _kit(feature: Feature, words: Words, rng: random.Random) -> _Kit:
    tools = [_tool(words, rng, n) for n in range(feature.tools)]
    return _Kit(
        feature,
        words.text(feature.system_tokens),
        [{"type": "function", "function": tool} for tool in tools],
        [
            {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
            for t in tools
        ],
    )


def _openai_response(answer: str, model: str, prompt_tokens: int, tokens: int) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-" + hashlib.sha1(answer.encode()).hexdigest()[:24],
            "object": "chat.completion",
            "created": 1_760_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": tokens,
                "total_tokens": prompt_tokens + tokens,
            },
        }
    )


def _pieces(rng: random.Random, answer: str) -> Iterator[str]:
    words = answer.split(" ")
    position = 0
    while position < len(words):
        step = rng.randint(1, 3)
        yield (" " if position else "") + " ".join(words[position : position + step])
        position += step


def _split(rng: random.Random, raw: bytes) -> list[bytes]:
    """``raw`` cut at arbitrary places, as TCP reads do."""
    chunks = []
    position = 0
    while position < len(raw):
        step = rng.randint(300, 4000)
        chunks.append(raw[position : position + step])
        position += step
    return chunks


def _openai_stream(
    rng: random.Random, answer: str, model: str, prompt_tokens: int, tokens: int
) -> list[bytes]:
    head = (
        b'data: {"id":"chatcmpl-' + hashlib.sha1(answer.encode()).hexdigest()[:24].encode()
        + b'","object":"chat.completion.chunk","created":1760000000,"model":"'
        + model.encode() + b'","choices":[{"index":0,"delta":'
    )  # fmt: skip
    events = [head + b'{"role":"assistant","content":""},"finish_reason":null}]}\n\n']
    for piece in _pieces(rng, answer):
        events.append(
            head + b'{"content":' + orjson.dumps(piece) + b'},"finish_reason":null}]}\n\n'
        )
    events.append(head + b'{},"finish_reason":"stop"}]}\n\n')
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens}
    events.append(b'data: {"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n")
    events.append(b"data: [DONE]\n\n")
    return _split(rng, b"".join(events))


def _anthropic_message(answer: str, model: str, prompt_tokens: int, tokens: int) -> dict[str, Any]:
    return {
        "id": "msg_" + hashlib.sha1(answer.encode()).hexdigest()[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": answer}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": tokens},
    }


def _anthropic_stream(
    rng: random.Random, answer: str, model: str, prompt_tokens: int, tokens: int
) -> list[bytes]:
    start = _anthropic_message(answer, model, prompt_tokens, 1)
    start["content"], start["stop_reason"] = [], None

    def event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    events = [
        event("message_start", {"type": "message_start", "message": start}),
        event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    for piece in _pieces(rng, answer):
        delta = {"type": "text_delta", "text": piece}
        events.append(
            event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        )
    events.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": tokens},
            },
        )
    )
    events.append(event("message_stop", {"type": "message_stop"}))
    return _split(rng, b"".join(events))


@dataclass(slots=True)
class _Conversation:
    kit: _Kit
    turns_left: int
    history: list[dict[str, Any]]
    stream: bool
    claude: bool


def make_workload(count: int, seed: int = 15, *, span_days: float = SPAN_DAYS) -> list[CallRecord]:
    """``count`` calls of the features above, oldest first, over the last ``span_days`` days."""
    rng = random.Random(seed)
    words = Words(rng)
    kits = [_kit(feature, words, rng) for feature in FEATURES]
    weights = [kit.feature.weight for kit in kits]
    now = time.time()
    start = now - span_days * 86400
    step = span_days * 86400 / max(count, 1)
    records: list[CallRecord] = []
    open_conversations: list[_Conversation] = []
    for index in range(count):
        if open_conversations and rng.random() < 0.33:
            conversation = open_conversations.pop(rng.randrange(len(open_conversations)))
        else:
            kit = rng.choices(kits, weights=weights)[0]
            feature = kit.feature
            conversation = _Conversation(
                kit,
                rng.choice((1, 1, 1, 1, 2, 3, 4, 5, 6)),
                [],
                rng.random() < feature.stream_share,
                not feature.anthropic and rng.random() < feature.claude_share,
            )
        record, answer = _call(rng, words, conversation, index, start + index * step)
        records.append(record)
        conversation.turns_left -= 1
        if conversation.turns_left > 0:
            conversation.history.append({"role": "assistant", "content": answer})
            open_conversations.append(conversation)
            del open_conversations[:-50]  # conversations left open long are abandoned
    return records


def _call(
    rng: random.Random, words: Words, conversation: _Conversation, index: int, started: float
) -> tuple[CallRecord, str]:
    kit, feature = conversation.kit, conversation.kit.feature
    user = words.text(rng.randint(15, 250))
    if index % 17 == 0:
        user += f" Write to me at user{index}@example.com."
    conversation.history.append({"role": "user", "content": user})
    prompt_tokens = (
        sum(len(m["content"]) for m in conversation.history) + len(kit.system)
    ) // CHARS_PER_TOKEN + 120 * feature.tools
    tokens = rng.randint(100, 500)
    answer = words.text(tokens)
    stream = conversation.stream
    body: dict[str, Any]
    if feature.anthropic:
        body = {
            "model": feature.model,
            "max_tokens": 1024,
            "system": kit.system,
            "tools": kit.tools_anthropic,
            "messages": list(conversation.history),
        }
        upstream_api = dialect = "anthropic"
        endpoint = "messages"
    else:
        body = {
            "model": feature.model,
            "messages": [{"role": "system", "content": kit.system}, *conversation.history],
            "tools": kit.tools_openai,
            "temperature": 0.2,
            "metadata": {"feature": feature.name},
        }
        dialect = "openai"
        upstream_api = "anthropic" if conversation.claude else "openai"
        endpoint = "chat"
    if stream:
        body["stream"] = True
        if dialect == "openai":
            body["stream_options"] = {"include_usage": True}
    upstream_model = "claude-sonnet-4-5" if upstream_api == "anthropic" else feature.model
    response: bytes | None = None
    chunks: list[bytes] | None = None
    if upstream_api == "anthropic":
        if stream:
            chunks = _anthropic_stream(rng, answer, upstream_model, prompt_tokens, tokens)
        else:
            response = orjson.dumps(
                _anthropic_message(answer, upstream_model, prompt_tokens, tokens)
            )
    elif stream:
        chunks = _openai_stream(rng, answer, upstream_model, prompt_tokens, tokens)
    else:
        response = _openai_response(answer, upstream_model, prompt_tokens, tokens)
    record = CallRecord(
        id=f"{rng.getrandbits(128):032x}",
        started_at=started,
        endpoint=endpoint,
        route=feature.name,
        variant="claude" if conversation.claude else "default",
        provider="anthropic" if upstream_api == "anthropic" else "openai",
        requested_model=feature.model,
        upstream_model=upstream_model,
        request_body=orjson.dumps(body),
        response_body=response,
        stream_chunks=chunks,
        stream=stream,
        status=200,
        total_ms=rng.uniform(400, 9000),
        upstream_ms=rng.uniform(400, 9000),
        overhead_ms=0.5,
        ttft_ms=rng.uniform(150, 900) if stream else None,
        user_key=f"user-{rng.randrange(500)}",
        tags={"app": "bench", "feature": feature.name},
        dialect=dialect,
        upstream_api=upstream_api,
    )
    return record, answer


# --- what the workload holds ----------------------------------------------------------------


def _parts(body: Any) -> Iterator[bytes]:
    """The parts of a chat request a content-addressed store would keep once each."""
    if not isinstance(body, dict):
        return
    system = body.get("system")
    if system is not None:
        yield orjson.dumps(system)
    if body.get("tools") is not None:
        yield orjson.dumps(body["tools"])
    for message in body.get("messages") or ():
        yield orjson.dumps(message)


def workload_stats(
    records: list[CallRecord], part_min_bytes: int = PART_MIN_BYTES, *, content_store: bool = False
) -> dict[str, Any]:
    """Sizes the store is measured against, and the prepare CPU per record (with the gateway's
    normaliser), from one pass of ``Preparer.prepare`` over every record (today's layout); with
    ``content_store``, a second pass times the preparation that cuts the repeated parts out."""
    preparer = Preparer(CaptureSettings(content_store=False), chat_view)  # whole: the reference
    wire = whole = normalized = request_bytes = repeated = 0
    seen: set[bytes] = set()
    kinds: dict[str, int] = {}
    cpu = 0.0
    for record in records:
        response = record.response_body or b"".join(record.stream_chunks or ())
        wire += len(record.request_body) + len(response)
        started = time.process_time()
        row = preparer.prepare(record).row
        cpu += time.process_time() - started
        request = orjson.dumps(row["request"])
        whole += len(request) + len(orjson.dumps(row["response"]))
        if row["normalized"] is not None:
            normalized += len(orjson.dumps(row["normalized"]))
        request_bytes += len(request)
        for part in _parts(row["request"]):
            if len(part) < part_min_bytes:
                continue
            digest = hashlib.sha256(part).digest()
            if digest in seen:
                repeated += len(part)
            else:
                seen.add(digest)
        kind = f"{record.dialect}->{record.upstream_api}{' stream' if record.stream else ''}"
        kinds[kind] = kinds.get(kind, 0) + 1
    n = max(len(records), 1)
    content_cpu = None
    if content_store:
        cutter = Preparer(
            CaptureSettings(content_store=True, content_min_bytes=part_min_bytes), chat_view
        )
        started = time.process_time()
        for record in records:
            cutter.prepare(record)
        content_cpu = round((time.process_time() - started) / n * 1e6, 1)
    return {
        "records": len(records),
        "kinds": dict(sorted(kinds.items())),
        "wire_bytes_per_call": round(wire / n),
        "whole_json_bytes_per_call": round(whole / n),
        "normalized_bytes_per_call": round(normalized / n),
        "request_bytes_per_call": round(request_bytes / n),
        "repeated_request_bytes_per_call": round(repeated / n),
        "repeated_share_of_request": round(repeated / max(request_bytes, 1), 4),
        "whole_without_repeated_bytes_per_call": round((whole - repeated) / n),
        "part_min_bytes": part_min_bytes,
        "prepare_cpu_us_per_record": round(cpu / n * 1e6, 1),
        "prepare_cpu_us_per_record_content_store": content_cpu,
    }
