"""Capture at scale, measured: bytes per captured call, write rate, and prune on today's layout.

Usage::

    python -m bench.capture_size                       # 20,000 calls, PostgreSQL and SQLite
    python -m bench.capture_size --quick               # 2,000 calls
    python -m bench.capture_size --records 50000 --json
    python -m bench.capture_size --no-postgres         # SQLite only
    make bench BENCH_ARGS="--only capture-size"        # the same, as a part of make bench

Workload (seeded, so every run writes the same calls). A few "features" of one application, each
with its own system prompt of 1-3k tokens and its tool definitions, both repeated on every call
of the feature; user turns of 15-250 tokens drawn from a Zipf-distributed vocabulary of
pseudo-words (so the text compresses about as much as prose, not as much as a repeated
sentence); answers of 100-500 tokens, streamed (the upstream's raw SSE, a chunk per 1-3 words)
or not; a third of the calls are turns of multi-turn conversations that grow turn by turn, each
call repeating the earlier turns; one feature speaks Anthropic's dialect end to end (client and
upstream) and some calls of another are OpenAI requests answered by Claude, so the capture
stores a ``normalized`` view for them (capture/prepare.py). Calls are spread evenly over the
last 30 days, oldest first.

Per backend, the calls go through the real capture path (``capture.writer.CaptureWriter``, its
``Preparer`` with the gateway's normaliser, ``capture.store.Store``) flat out, into a scratch
PostgreSQL database (created and dropped) and a temp SQLite file; the write rate is records over
the time until ``drain`` stored the last one, and the CPU per record is this process's (the
PostgreSQL server's own work is not included; SQLite's is). The preparation CPU alone is timed
separately, over every record.

Sizes. PostgreSQL after ``VACUUM (ANALYZE)``: per table the heap (``pg_relation_size``), the
TOAST relation with its index, the indexes (``pg_indexes_size``) and the total
(``pg_total_relation_size``), plus the stored (compressed) size of the JSON columns
(``pg_column_size``). SQLite: the file after ``VACUUM``, and per table with its indexes from
``dbstat``. The reference is "each stored whole": the compact JSON of the request and of the
response (for streams, the assembled message, as the capture stores it), and the raw bytes that
crossed the wire (streams: the SSE). The repeated share: each request is cut into its parts (the
system prompt, the tools array, each message) and a part of at least ``--part-min-bytes`` whose
exact bytes were already seen in an earlier call counts as repeated; that is what a store that
keeps each part once, addressed by its hash, would not store again.

Prune (PostgreSQL): ``gateway db prune --older-than 15d`` (``capture.retention.prune``, a
DELETE) removes the older half; its time, the tables' sizes right after it, after ``VACUUM``
and after ``VACUUM FULL`` (which rewrites the table under an exclusive lock), are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import hashlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.capture_write import _submit_flat_out, scratch_database
from capture.config import CaptureSettings
from capture.migrate import upgrade_async
from capture.prepare import Preparer
from capture.record import CallRecord
from capture.retention import prune
from capture.store import Store
from capture.writer import CaptureWriter
from dialects.capture import chat_view

DEFAULT_RECORDS = 20_000
QUICK_RECORDS = 2_000
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
SPAN_DAYS = 30
PRUNE_OLDER_THAN = dt.timedelta(days=SPAN_DAYS / 2)
PART_MIN_BYTES = 256
CHARS_PER_TOKEN = 4

Progress = Callable[[str], None]


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
    preparer = Preparer(CaptureSettings(), chat_view)
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


# --- writing and measuring ------------------------------------------------------------------


async def write_all(
    url: str, records: list[CallRecord], settings: CaptureSettings
) -> dict[str, Any]:
    """Every record through ``CaptureWriter`` as fast as it takes them; rate and CPU."""
    store = await Store.connect(url)
    try:
        writer = CaptureWriter(store, settings, normalize=chat_view)
        await writer.start()
        started = time.perf_counter()
        cpu_started = time.process_time()
        await _submit_flat_out(writer, records, settings.queue_size)
        await writer.drain(600.0)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        stored = await store.count_calls()
        stats = writer.stats()
    finally:
        await store.close()
    return {
        "records": len(records),
        "stored": stored,
        "seconds": round(elapsed, 3),
        "records_per_s": round(len(records) / elapsed),
        "cpu_us_per_record": round(cpu / len(records) * 1e6, 1),
        "writer": stats,
    }


PG_SIZES = """
SELECT c.relname AS name,
       pg_relation_size(c.oid) AS heap,
       COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0) AS toast,
       pg_indexes_size(c.oid) AS indexes,
       pg_total_relation_size(c.oid) AS total
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
ORDER BY pg_total_relation_size(c.oid) DESC
"""

PG_COLUMNS = """
SELECT count(*) AS n,
       COALESCE(sum(pg_column_size(request)), 0) AS request,
       COALESCE(sum(pg_column_size(response)), 0) AS response,
       COALESCE(sum(pg_column_size(normalized)), 0) AS normalized
FROM calls
"""


async def _pg_sizes(engine: AsyncEngine) -> dict[str, dict[str, int]]:
    async with engine.connect() as connection:
        rows = (await connection.execute(text(PG_SIZES))).mappings().all()
    return {
        str(row["name"]): {key: int(row[key]) for key in ("heap", "toast", "indexes", "total")}
        for row in rows
    }


async def _pg_run(engine: AsyncEngine, statement: str) -> float:
    started = time.perf_counter()
    async with engine.connect() as connection:
        await connection.execute(text(statement))
    return round(time.perf_counter() - started, 3)


async def measure_postgres(
    admin_url: str, records: list[CallRecord], settings: CaptureSettings, progress: Progress
) -> dict[str, Any]:
    async with scratch_database(admin_url, in_place=False) as url:
        await upgrade_async(url)
        progress(f"postgresql: writing {len(records):,} calls")
        write = await write_all(url, records, settings)
        engine = create_async_engine(make_url(url), isolation_level="AUTOCOMMIT")
        try:
            progress("postgresql: VACUUM (ANALYZE), sizes")
            vacuum_s = await _pg_run(engine, "VACUUM (ANALYZE)")
            sizes = await _pg_sizes(engine)
            async with engine.connect() as connection:
                columns = dict((await connection.execute(text(PG_COLUMNS))).mappings().one())
            progress(f"postgresql: gateway db prune --older-than {PRUNE_OLDER_THAN.days}d")
            started = time.perf_counter()
            deleted = await prune(url, PRUNE_OLDER_THAN)
            prune_s = round(time.perf_counter() - started, 3)
            after_prune = await _pg_sizes(engine)
            progress("postgresql: VACUUM after the prune")
            after_vacuum_s = await _pg_run(engine, "VACUUM (ANALYZE)")
            after_vacuum = await _pg_sizes(engine)
            progress("postgresql: VACUUM FULL after the prune")
            full_s = await _pg_run(engine, "VACUUM (FULL, ANALYZE)")
            after_full = await _pg_sizes(engine)
        finally:
            await engine.dispose()
    count = max(int(columns["n"]), 1)
    return {
        "write": write,
        "vacuum_s": vacuum_s,
        "tables": sizes,
        "column_bytes_per_call": {
            key: round(int(columns[key]) / count) for key in ("request", "response", "normalized")
        },
        "prune": {
            "older_than_days": PRUNE_OLDER_THAN.days,
            "deleted": deleted,
            "seconds": prune_s,
            "calls_total_after": after_prune.get("calls", {}).get("total", 0),
            "vacuum_s": after_vacuum_s,
            "calls_total_after_vacuum": after_vacuum.get("calls", {}).get("total", 0),
            "vacuum_full_s": full_s,
            "calls_total_after_vacuum_full": after_full.get("calls", {}).get("total", 0),
            "content_total_after_vacuum_full": after_full.get("content", {}).get("total", 0),
        },
    }


def _sqlite_sizes(path: Path) -> dict[str, Any]:
    connection = sqlite3.connect(path)
    try:
        started = time.perf_counter()
        connection.execute("VACUUM")
        vacuum_s = round(time.perf_counter() - started, 3)
        owners = dict(
            connection.execute(
                "SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')"
            ).fetchall()
        )
        tables: dict[str, int] = {}
        try:
            for name, size in connection.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"
            ).fetchall():
                owner = owners.get(name, name)
                tables[owner] = tables.get(owner, 0) + int(size)
        except sqlite3.OperationalError:  # built without dbstat
            tables = {}
    finally:
        connection.close()
    return {
        "vacuum_s": vacuum_s,
        "file_bytes": path.stat().st_size,
        "tables": dict(sorted(tables.items(), key=lambda item: -item[1])),
    }


async def measure_sqlite(
    path: Path, records: list[CallRecord], settings: CaptureSettings, progress: Progress
) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(url)
    progress(f"sqlite: writing {len(records):,} calls")
    write = await write_all(url, records, settings)
    progress("sqlite: VACUUM, sizes")
    return {"write": write, **await asyncio.to_thread(_sqlite_sizes, path)}


def measure(
    records_count: int,
    *,
    postgres_url: str | None,
    sqlite: bool = True,
    seed: int = 15,
    part_min_bytes: int = PART_MIN_BYTES,
    progress: Progress = lambda message: None,
    content_store: bool = True,
) -> dict[str, Any]:
    """The whole measurement, as a JSON-able dict (``render`` makes the report): today's layout
    (each request whole), and with ``content_store`` the same calls again with
    ``capture.content_store: true`` (each large repeated part once, ``capture.content``)."""
    progress(f"generating {records_count:,} calls (seed {seed})")
    records = make_workload(records_count, seed)
    gc.freeze()  # the fixtures are not the system's garbage
    progress("preparing every call once (sizes of the whole JSON, repeated parts, CPU)")
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_at_start": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "seed": seed,
        "workload": workload_stats(records, part_min_bytes, content_store=content_store),
        "postgresql": None,
        "sqlite": None,
        "content_store": None,
    }
    layouts: list[tuple[dict[str, Any], CaptureSettings, str]] = [(result, CaptureSettings(), "")]
    if content_store:
        result["content_store"] = {"min_bytes": part_min_bytes, "postgresql": None, "sqlite": None}
        settings = CaptureSettings(content_store=True, content_min_bytes=part_min_bytes)
        layouts.append((result["content_store"], settings, "content store: "))
    for into, settings, label in layouts:

        def told(message: str, label: str = label) -> None:
            progress(label + message)

        if postgres_url:
            into["postgresql"] = _run(measure_postgres(postgres_url, records, settings, told))
        if sqlite:
            with tempfile.TemporaryDirectory(prefix="capture-size-") as tmp:
                into["sqlite"] = _run(
                    measure_sqlite(Path(tmp) / "capture.db", records, settings, told)
                )
    result["load_at_end"] = round(os.getloadavg()[0], 2)
    return result


def _run(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# --- the report -----------------------------------------------------------------------------


def _kb(value: float) -> str:
    return f"{value / 1024:,.1f}"


def render(result: dict[str, Any]) -> str:
    w = result["workload"]
    n = w["records"]
    whole = w["whole_json_bytes_per_call"]
    lines = [
        "### Capture at scale: bytes per call, write rate, prune (today's layout, then with "
        "the content store)",
        "",
        f"{n:,} generated calls (seed {result['seed']}; "
        + ", ".join(f"{kind}: {count:,}" for kind, count in w["kinds"].items())
        + f"), {result['date']}, {result['cpus']} CPUs, load {result['load_at_start']} at start, "
        f"{result['load_at_end']} at end.",
        "",
        "| per call | KiB |",
        "|---|---:|",
        f"| raw bytes on the wire (request + response; streams as SSE) | "
        f"{_kb(w['wire_bytes_per_call'])} |",
        f"| request + response stored whole (compact JSON; streams assembled): the reference "
        f"| {_kb(whole)} |",
        f"| of which the request | {_kb(w['request_bytes_per_call'])} |",
        f"| of the request, parts ≥ {w['part_min_bytes']} B seen before (system prompts, tools, "
        f"earlier turns): {w['repeated_share_of_request']:.1%} | "
        f"{_kb(w['repeated_request_bytes_per_call'])} |",
        f"| request + response with each repeated part once (no references counted, "
        f"uncompressed): {(whole - w['repeated_request_bytes_per_call']) / max(whole, 1):.0%} "
        f"of the reference | {_kb(whole - w['repeated_request_bytes_per_call'])} |",
        f"| the normalized view (Anthropic-dialect calls), averaged over all calls "
        f"| {_kb(w['normalized_bytes_per_call'])} |",
        "",
        f"Preparation alone (parse, assemble, price, redact, normalise): "
        f"{w['prepare_cpu_us_per_record']} µs CPU per record.",
        "",
    ]
    lines += _store_lines(result.get("postgresql"), result.get("sqlite"), n, whole)
    content = result.get("content_store")
    if content and (content.get("postgresql") or content.get("sqlite")):
        lines += [
            f"#### With `capture.content_store: true` (each part ≥ {content['min_bytes']} B stored "
            "once in `content`, compressed; calls refer to it by its sha256)",
            "",
        ]
        cpu = w.get("prepare_cpu_us_per_record_content_store")
        if cpu is not None:
            lines += [
                f"Preparation with the parts cut out (hashing included): {cpu} µs CPU per record "
                f"(today's layout: {w['prepare_cpu_us_per_record']}).",
                "",
            ]
        lines += _store_lines(content.get("postgresql"), content.get("sqlite"), n, whole)
    return "\n".join(lines)


def _store_lines(
    pg: dict[str, Any] | None, sq: dict[str, Any] | None, n: int, whole: int
) -> list[str]:
    """Sizes, write rate and prune of one layout."""
    lines: list[str] = []
    rows: list[list[str]] = []
    if pg:
        for name, size in pg["tables"].items():
            if size["total"] < 64 * 1024 and name != "calls":
                continue
            rows.append(
                [
                    f"PostgreSQL `{name}`",
                    _kb(size["heap"] / n),
                    _kb(size["toast"] / n),
                    _kb(size["indexes"] / n),
                    _kb(size["total"] / n),
                    f"{size['total'] / max(whole, 1) / n:.0%}",
                ]
            )
        total = sum(size["total"] for size in pg["tables"].values())
        rows.append(
            ["PostgreSQL, all tables", "", "", "", _kb(total / n), f"{total / whole / n:.0%}"]
        )
    if sq:
        for name, size in sq["tables"].items():
            if size < 64 * 1024 and name != "calls":
                continue
            rows.append([f"SQLite `{name}` (with its indexes)", "", "", "", _kb(size / n), ""])
        rows.append(
            [
                "SQLite, the file after VACUUM",
                "",
                "",
                "",
                _kb(sq["file_bytes"] / n),
                f"{sq['file_bytes'] / whole / n:.0%}",
            ]
        )
    if rows:
        lines += [
            "| store | heap KiB/call | TOAST KiB/call | indexes KiB/call | total KiB/call "
            "| of the reference |",
            "|---|---:|---:|---:|---:|---:|",
            *("| " + " | ".join(row) + " |" for row in rows),
            "",
        ]
    if pg:
        columns = pg["column_bytes_per_call"]
        lines += [
            "PostgreSQL's stored (compressed) JSON columns per call: request "
            f"{_kb(columns['request'])} KiB, response {_kb(columns['response'])} KiB, "
            f"normalized {_kb(columns['normalized'])} KiB.",
            "",
        ]
    rate_rows = [
        [
            backend,
            f"{data['write']['records_per_s']:,}",
            f"{data['write']['cpu_us_per_record']}",
            f"{data['write']['stored']:,} / {data['write']['records']:,}",
        ]
        for backend, data in (("PostgreSQL", pg), ("SQLite", sq))
        if data
    ]
    if rate_rows:
        lines += [
            "| write path (one writer, flat out) | records/s | CPU µs/record (this process) "
            "| stored / written |",
            "|---|---:|---:|---:|",
            *("| " + " | ".join(row) + " |" for row in rate_rows),
            "",
        ]
    if pg:
        p = pg["prune"]
        lines += [
            f"PostgreSQL prune today (`gateway db prune --older-than {p['older_than_days']}d`, a "
            f"DELETE): {p['deleted']:,} calls in {p['seconds']} s. `calls` (all of it, "
            f"TOAST and indexes) was {_kb(pg['tables']['calls']['total'] / 1024)} MiB before, "
            f"{_kb(p['calls_total_after'] / 1024)} MiB right after, "
            f"{_kb(p['calls_total_after_vacuum'] / 1024)} MiB after VACUUM "
            f"({p['vacuum_s']} s; the space is reusable, not returned) and "
            f"{_kb(p['calls_total_after_vacuum_full'] / 1024)} MiB after VACUUM FULL "
            f"({p['vacuum_full_s']} s, under an exclusive lock)."
            + (
                f" `content` keeps {_kb(p['content_total_after_vacuum_full'] / 1024)} MiB: "
                "parts no call refers to any more are not collected yet."
                if p.get("content_total_after_vacuum_full", 0) > 64 * 1024
                else ""
            ),
            "",
        ]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--capture-size-records",
        type=int,
        help=f"capture-size: calls generated and written (default {DEFAULT_RECORDS:,}, "
        f"quick {QUICK_RECORDS:,})",
    )
    parser.add_argument(
        "--capture-size-postgres",
        default=DEFAULT_POSTGRES,
        help="capture-size: a PostgreSQL server's URL where a scratch database is made and "
        "dropped ('' to skip PostgreSQL)",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capture_size",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--records", type=int, help=f"default {DEFAULT_RECORDS:,}")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RECORDS:,} calls")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--part-min-bytes", type=int, default=PART_MIN_BYTES)
    parser.add_argument(
        "--no-content-store",
        action="store_true",
        help="today's layout only (not again with capture.content_store: true)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.records is None:
        args.records = QUICK_RECORDS if args.quick else DEFAULT_RECORDS
    if args.records < 10:
        parser.error("--records: at least 10")
    return args


def _progress(message: str) -> None:
    print(f"[capture_size {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(
        args.records,
        postgres_url=None if args.no_postgres else args.postgres_url,
        sqlite=not args.no_sqlite,
        seed=args.seed,
        part_min_bytes=args.part_min_bytes,
        progress=_progress,
        content_store=not args.no_content_store,
    )
    print(json.dumps(result, indent=2) if args.json else render(result))
    runs = [result, result["content_store"] or {}]
    writes = [run[b]["write"] for run in runs for b in ("postgresql", "sqlite") if run.get(b)]
    return 0 if all(w["stored"] == w["records"] for w in writes) else 1


if __name__ == "__main__":
    sys.exit(main())
