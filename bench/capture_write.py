"""Sustained write throughput of the capture writer, and what it costs the event loop.

Usage::

    python -m bench.capture_write --records 20000                      # SQLite, a temp file
    python -m bench.capture_write --url postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        --records 50000
    python -m bench.capture_write --prepare loop,thread                # compare both
    python -m bench.capture_write --rate 500 --records 15000           # lag at 500 calls/s

Method. N realistic records are built first (not timed): half non-streamed chat calls (a system
prompt and a ~1 KB user message, some with an e-mail address or a phone number to redact), 40%
streamed chat calls (the upstream's raw SSE bytes, ~50 chunks with a usage chunk), 10%
embeddings. Then, on uvloop, they are submitted to a ``CaptureWriter`` as fast as its queue
takes them (a full queue makes the producer wait 1 ms, so nothing is dropped), and the clock
stops when ``drain`` has stored the last one. Throughput is N over that time; every record goes
through the whole path: parse, stream assembly, pricing, redaction, batched INSERT. The CPU time
of this process per record (the database server's is not included; SQLite's is) says what the
rate would be on a core of its own, which matters on a machine that is busy with other work.
Meanwhile a ticker sleeps 1 ms in a loop and records how late it wakes up: the "loop lag" is what
a request on the hot path would wait for the writer's CPU work at that moment.

For a PostgreSQL URL a scratch database (``capture_bench_<random>``) is created on that server
and dropped at the end, unless ``--in-place`` is given (then the URL's database is migrated and
the rows stay). For SQLite the default is a fresh file in a temp directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal, cast

import orjson
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.stats import summarize
from capture.config import CaptureSettings
from capture.migrate import upgrade_async
from capture.prepare import Preparer
from capture.record import CallRecord
from capture.store import Store
from capture.writer import CaptureWriter

WORDS = (
    "the",
    "order",
    "shipment",
    "invoice",
    "account",
    "customer",
    "refund",
    "delivery",
    "please",
    "help",
    "with",
    "my",
    "issue",
    "was",
    "late",
    "damaged",
    "missing",
    "when",
    "will",
    "it",
    "arrive",
    "thanks",
    "again",
    "support",
    "team",
    "update",
    "tracking",
)


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _chat_request(rng: random.Random, index: int, stream: bool) -> bytes:
    user = _text(rng, 160)
    if index % 10 == 0:
        user += " you can reach me at jane.doe@example.com"
    if index % 10 == 5:
        user += " or call +1 415 555 2671"
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a helpful support agent for ACME. " * 4},
            {"role": "user", "content": f"Order {10000 + index}: {user}"},
        ],
        "temperature": 0.2,
        "max_tokens": 300,
        "metadata": {"app": "bench", "tenant": f"t{index % 7}"},
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def _chat_response(rng: random.Random) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_760_000_000,
            "model": "gpt-4o-2024-08-06",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _text(rng, 60), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 412,
                "completion_tokens": 80,
                "total_tokens": 492,
                "prompt_tokens_details": {"cached_tokens": 128},
            },
        }
    )


def _chat_stream(rng: random.Random) -> list[bytes]:
    head = b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1760000000,'
    head += b'"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":'
    events = [head + b'{"role":"assistant","content":""},"finish_reason":null}]}\n\n']
    for _ in range(48):
        piece = orjson.dumps(" " + rng.choice(WORDS))
        events.append(head + b'{"content":' + piece + b'},"finish_reason":null}]}\n\n')
    events.append(head + b'{},"finish_reason":"stop"}]}\n\n')
    events.append(
        b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","choices":[],'
        b'"usage":{"prompt_tokens":412,"completion_tokens":49,"total_tokens":461}}\n\n'
    )
    events.append(b"data: [DONE]\n\n")
    raw = b"".join(events)
    chunks = []
    position = 0
    while position < len(raw):  # split at arbitrary places, as TCP reads do
        step = rng.randint(200, 1500)
        chunks.append(raw[position : position + step])
        position += step
    return chunks


def _embedding_request(index: int) -> bytes:
    return orjson.dumps({"model": "text-embedding-3-small", "input": f"document {index}"})


def _embedding_response(rng: random.Random) -> bytes:
    vector = [round(rng.uniform(-0.1, 0.1), 6) for _ in range(256)]
    return orjson.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": vector}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    )


def make_records(count: int, seed: int = 7) -> list[CallRecord]:
    rng = random.Random(seed)
    chat_response = [_chat_response(rng) for _ in range(16)]
    streams = [_chat_stream(rng) for _ in range(16)]
    embeddings = [_embedding_response(rng) for _ in range(4)]
    now = time.time()
    records = []
    for index in range(count):
        kind = index % 10
        common: dict[str, Any] = {
            "id": secrets.token_hex(16),
            "started_at": now + index / 1000,
            "provider": "openai",
            "status": 200,
            "total_ms": 812.5,
            "upstream_ms": 811.9,
            "overhead_ms": 0.6,
            "user_key": f"user-{index % 100}",
            "tags": {"env": "bench"},
        }
        if kind == 9:
            records.append(
                CallRecord(
                    **common,
                    endpoint="embeddings",
                    route="text-embedding-3-small",
                    variant="default",
                    requested_model="text-embedding-3-small",
                    upstream_model="text-embedding-3-small",
                    request_body=_embedding_request(index),
                    response_body=embeddings[index % 4],
                    stream=False,
                )
            )
            continue
        stream = kind >= 5
        records.append(
            CallRecord(
                **common,
                endpoint="chat",
                route="gpt-4o",
                variant="teacher",
                requested_model="gpt-4o",
                upstream_model="gpt-4o",
                request_body=_chat_request(rng, index, stream),
                response_body=None if stream else chat_response[index % 16],
                stream_chunks=streams[index % 16] if stream else None,
                stream=stream,
                ttft_ms=120.0 if stream else None,
            )
        )
    return records


@contextlib.asynccontextmanager
async def scratch_database(url: str, in_place: bool) -> AsyncIterator[str]:
    """``url`` itself, or a fresh database on its PostgreSQL server that is dropped after."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or in_place:
        yield url
        return
    name = f"capture_bench_{secrets.token_hex(4)}"
    admin = create_async_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield parsed.set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def _ticker(lags_ms: list[float], stop: asyncio.Event) -> None:
    clock = time.perf_counter
    while not stop.is_set():
        started = clock()
        await asyncio.sleep(0.001)
        lags_ms.append((clock() - started - 0.001) * 1000)


async def run_once(
    url: str,
    records: list[CallRecord],
    prepare: str,
    settings: CaptureSettings,
    rate: float = 0.0,
) -> dict[str, Any]:
    store = await Store.connect(url)
    try:
        before = await store.count_calls()
        writer = CaptureWriter(store, settings, prepare=cast(Literal["loop", "thread"], prepare))
        lags: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(_ticker(lags, stop))
        await asyncio.sleep(0.5)
        idle_lags = len(lags)
        await writer.start()
        started = time.perf_counter()
        cpu_started = time.process_time()
        if rate > 0:
            await _submit_at(writer, records, rate)
        else:
            await _submit_flat_out(writer, records, settings.queue_size)
        await writer.drain(120.0)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        stop.set()
        await ticker
        stored = await store.count_calls() - before
        stats = writer.stats()
    finally:
        await store.close()
    return {
        "prepare": prepare,
        "records": len(records),
        "stored": stored,
        "seconds": round(elapsed, 3),
        "records_per_s": round(len(records) / elapsed),
        "cpu_us_per_record": round(cpu / len(records) * 1e6, 1),
        "loop_lag_ms": _lag(lags[idle_lags:]),
        "idle_loop_lag_ms": _lag(lags[:idle_lags]),
        "writer": stats,
    }


async def _submit_flat_out(writer: CaptureWriter, records: list[CallRecord], room: int) -> None:
    position = 0
    while position < len(records):
        free = min(room - writer.queue_depth, 100)
        for record in records[position : position + free]:
            writer.submit(record)
        position += max(free, 0)
        await asyncio.sleep(0 if free > 0 else 0.001)  # a full queue: wait, do not drop


async def _submit_at(writer: CaptureWriter, records: list[CallRecord], rate: float) -> None:
    """Submit at ``rate`` records/s, as a gateway answering that many calls would."""
    started = time.perf_counter()
    position = 0
    while position < len(records):
        due = min(len(records), int((time.perf_counter() - started) * rate) + 1)
        for record in records[position:due]:
            writer.submit(record)
        position = max(position, due)
        await asyncio.sleep(0.001)


def _lag(values: list[float]) -> dict[str, float]:
    return {**summarize(values), "max": round(max(values), 3)} if values else {"n": 0}


def prepare_cost_us(records: list[CallRecord], settings: CaptureSettings) -> float:
    """CPU time of ``Preparer.prepare`` alone, microseconds per record."""
    preparer = Preparer(settings)
    sample = records[: min(len(records), 5000)]
    started = time.perf_counter()
    for record in sample:
        preparer.prepare(record)
    return (time.perf_counter() - started) / len(sample) * 1e6


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = CaptureSettings(
        database_url=args.url, batch_size=args.batch_size, queue_size=args.queue_size
    )
    records = make_records(args.records)
    # The prebuilt records are the benchmark's fixtures, not the system's: keep them out of
    # the garbage collector's full passes (which would show up as 40 ms pauses of the loop).
    gc.freeze()
    results = []
    async with scratch_database(args.url, args.in_place) as url:
        await upgrade_async(url)
        for mode in args.prepare:
            _progress(f"{mode}: writing {len(records)} records to {make_url(url)!r}")
            result = await run_once(url, _fresh_ids(records), mode, settings, args.rate)
            result["backend"] = make_url(url).get_backend_name()
            results.append(result)
    return results


def _fresh_ids(records: list[CallRecord]) -> list[CallRecord]:
    for record in records:
        record.id = secrets.token_hex(16)
    return records


def _progress(message: str) -> None:
    print(f"[capture_write {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capture_write",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--url", help="database URL (default: SQLite in a temp directory)")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="submit at this many records/s to see the loop lag at a gateway's pace "
        "(default: as fast as the writer takes them, for its throughput)",
    )
    parser.add_argument(
        "--prepare", default="loop", help="loop, thread or both as 'loop,thread' (default loop)"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--queue-size", type=int, default=10_000)
    parser.add_argument(
        "--in-place", action="store_true", help="PostgreSQL: use the URL's database itself"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    args.prepare = [p.strip() for p in args.prepare.split(",") if p.strip()]
    if not args.prepare or any(p not in ("loop", "thread") for p in args.prepare):
        parser.error("--prepare takes loop, thread or loop,thread")
    return args


def _rows(results: list[dict[str, Any]]) -> Iterator[str]:
    yield (
        "| backend | prepare | records | stored | records/s | CPU us/record "
        "| loop lag p50 / p99 / max ms (idle: p50 / p99) |"
    )
    yield "| --- | --- | ---: | ---: | ---: | ---: | --- |"
    for r in results:
        lag, idle = r["loop_lag_ms"], r["idle_loop_lag_ms"]
        yield (
            f"| {r['backend']} | {r['prepare']} | {r['records']} | {r['stored']} "
            f"| {r['records_per_s']:,} | {r['cpu_us_per_record']} "
            f"| {lag.get('p50')} / {lag.get('p99')} / {lag.get('max')} "
            f"({idle.get('p50')} / {idle.get('p99')}) |"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        if args.url is None:
            args.url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            results = asyncio.run(main_async(args))
        else:
            results = uvloop.run(main_async(args))
        settings = CaptureSettings()
        cost = prepare_cost_us(make_records(min(args.records, 5000)), settings)
    if args.json:
        print(json.dumps({"results": results, "prepare_us_per_record": round(cost, 1)}, indent=2))
    else:
        for line in _rows(results):
            print(line)
        print(f"\npreparation alone: {cost:.1f} us per record (parse, assemble, price, redact)")
    return 0 if all(r["stored"] == r["records"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
