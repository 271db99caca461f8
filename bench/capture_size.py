"""Capture at scale, measured: bytes per captured call, write rate, and prune time.

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
(``pg_column_size``); and the same total "less the empty layout": the tables measured the same
way before the first call was written (the 32 daily partitions, each with its indexes, cost
~225 KiB empty: per call that is a fixed cost over how many calls a day fills, large at this
bench's ~650 a day, nothing at a production's millions). SQLite: the file after ``VACUUM``,
and per table with its indexes from ``dbstat``. The reference is "each stored whole": the
compact JSON of the request and of the response (for streams, the assembled message, as the
capture stores it), and the raw bytes that crossed the wire (streams: the SSE). The repeated
share: each request is cut into its parts (the system prompt, the tools array, each message)
and a part of at least ``--part-min-bytes`` whose exact bytes were already seen in an earlier
call counts as repeated; that is what a store that keeps each part once, addressed by its
hash, would not store again.

Prune (PostgreSQL), the older half of the same rows both ways: before, on a copy of the
database moved back to migration 0008's plain tables, the DELETE that ``gateway db prune
--older-than 15d`` was, then ``VACUUM`` and ``VACUUM FULL`` (which rewrites the table under an
exclusive lock); after, ``gateway db prune`` on the partitioned layout (``capture.retention``:
whole partitions dropped, the boundary day's older rows deleted, then the content collector).
Times and the tables' sizes after each step are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.capture_size_report import render
from bench.capture_workload import (
    PART_MIN_BYTES,
    SPAN_DAYS,
    make_workload,
    workload_stats,
)
from bench.capture_write import scratch_database
from capture.config import CaptureSettings
from capture.migrate import downgrade_async, upgrade_async
from capture.partitions import ensure_partitions
from capture.record import CallRecord
from capture.retention import prune_store
from capture.store import Store
from capture.writer import CaptureWriter
from dialects.capture import chat_view

DEFAULT_RECORDS = 20_000
QUICK_RECORDS = 2_000
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

Progress = Callable[[str], None]


# --- writing and measuring ------------------------------------------------------------------


async def _submit_in_order(
    writer: CaptureWriter, records: list[CallRecord], room: int, submitted: list[int]
) -> None:
    """``bench.capture_write``'s flat-out submission, counting in ``submitted[0]``."""
    while submitted[0] < len(records):
        free = min(room - writer.queue_depth, 100)
        for record in records[submitted[0] : submitted[0] + free]:
            writer.submit(record)
        submitted[0] = min(submitted[0] + max(free, 0), len(records))
        await asyncio.sleep(0 if free > 0 else 0.001)  # a full queue: wait, do not drop


async def write_all(
    url: str, records: list[CallRecord], settings: CaptureSettings
) -> dict[str, Any]:
    """Every record through ``CaptureWriter`` as fast as it takes them; rate and CPU."""
    store = await Store.connect(url)
    try:
        writer = CaptureWriter(store, settings, normalize=chat_view, maintenance=False)
        # 30 days of calls written in minutes: each part is marked seen (content.last_seen) on
        # the day of the newest call submitted so far (its batch holds no newer one), as if
        # written as the calls were made, so that the content collector after the prune has
        # the days it would have had.
        submitted = [0]

        def clock() -> dt.datetime:
            newest = records[max(submitted[0] - 1, 0)]
            return dt.datetime.fromtimestamp(newest.started_at, dt.UTC)

        store.clock = clock
        await writer.start()
        started = time.perf_counter()
        cpu_started = time.process_time()
        await _submit_in_order(writer, records, settings.queue_size, submitted)
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
SELECT COALESCE(p.relname, c.relname) AS name,
       sum(pg_relation_size(c.oid)) AS heap,
       sum(COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0)) AS toast,
       sum(pg_indexes_size(c.oid)) AS indexes,
       sum(pg_total_relation_size(c.oid)) AS total
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
LEFT JOIN pg_class p ON p.oid = i.inhparent
WHERE n.nspname = 'public' AND c.relkind = 'r'
GROUP BY 1
ORDER BY 5 DESC
"""
"""Per table, its partitions summed (a partitioned table has no storage of its own)."""

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


async def _delete_prune(
    admin_url: str, source: str, cutoff: dt.datetime, progress: Progress, older_than: dt.timedelta
) -> dict[str, Any]:
    """The prune before partitions, on the same rows: a copy of the database moved back to the
    previous layout (migration 0008: plain tables), then what ``gateway db prune`` did there
    (one transaction: DELETE the old calls' feedback, DELETE the old calls), VACUUM, VACUUM
    FULL."""
    parsed = make_url(admin_url)
    name = f"{make_url(source).database}_plain"
    admin = create_async_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(
                text(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(source).database}"')
            )
        url = parsed.set(database=name).render_as_string(hide_password=False)
        try:
            progress("postgresql: a copy moved back to the plain layout (0008) for DELETE")
            await downgrade_async(url, "0008")
            engine = create_async_engine(make_url(url), isolation_level="AUTOCOMMIT")
            try:
                await _pg_run(engine, "VACUUM (ANALYZE)")
                before = await _pg_sizes(engine)
                progress("postgresql: DELETE prune on the plain layout")
                started = time.perf_counter()
                deleting = create_async_engine(make_url(url))
                try:
                    async with deleting.begin() as connection:
                        await connection.execute(
                            text(
                                "DELETE FROM feedback WHERE request_id IN"
                                " (SELECT id FROM calls WHERE created_at < :cutoff)"
                            ),
                            {"cutoff": cutoff},
                        )
                        deleted = await connection.execute(
                            text("DELETE FROM calls WHERE created_at < :cutoff"),
                            {"cutoff": cutoff},
                        )
                finally:
                    await deleting.dispose()
                prune_s = round(time.perf_counter() - started, 3)
                after_prune = await _pg_sizes(engine)
                after_vacuum_s = await _pg_run(engine, "VACUUM (ANALYZE)")
                after_vacuum = await _pg_sizes(engine)
                full_s = await _pg_run(engine, "VACUUM (FULL, ANALYZE)")
                after_full = await _pg_sizes(engine)
            finally:
                await engine.dispose()
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
    return {
        "older_than_days": older_than / dt.timedelta(days=1),
        "deleted": int(deleted.rowcount),
        "seconds": prune_s,
        "calls_total_before": before.get("calls", {}).get("total", 0),
        "calls_total_after": after_prune.get("calls", {}).get("total", 0),
        "vacuum_s": after_vacuum_s,
        "calls_total_after_vacuum": after_vacuum.get("calls", {}).get("total", 0),
        "vacuum_full_s": full_s,
        "calls_total_after_vacuum_full": after_full.get("calls", {}).get("total", 0),
        "content_total_after_vacuum_full": after_full.get("content", {}).get("total", 0),
    }


async def measure_postgres(
    admin_url: str,
    records: list[CallRecord],
    settings: CaptureSettings,
    progress: Progress,
    span_days: float = SPAN_DAYS,
) -> dict[str, Any]:
    older_than = dt.timedelta(days=span_days / 2)
    now = dt.datetime.now(dt.UTC)
    async with scratch_database(admin_url, in_place=False) as url:
        await upgrade_async(url)
        # The calls are spread over the last 30 days: their days' partitions exist, as they
        # would have when the calls were made (else they would wait in the DEFAULT partition).
        store = await Store.connect(url)
        try:
            await ensure_partitions(store.engine, start=now - dt.timedelta(days=span_days + 1))
        finally:
            await store.close()
        engine = create_async_engine(make_url(url), isolation_level="AUTOCOMMIT")
        try:  # what the layout costs before a call is written: its partitions, empty
            await _pg_run(engine, "VACUUM (ANALYZE)")
            empty = await _pg_sizes(engine)
        finally:
            await engine.dispose()
        progress(f"postgresql: writing {len(records):,} calls")
        write = await write_all(url, records, settings)
        engine = create_async_engine(make_url(url), isolation_level="AUTOCOMMIT")
        try:
            progress("postgresql: VACUUM (ANALYZE), sizes")
            vacuum_s = await _pg_run(engine, "VACUUM (ANALYZE)")
            sizes = await _pg_sizes(engine)
            async with engine.connect() as connection:
                columns = dict((await connection.execute(text(PG_COLUMNS))).mappings().one())
        finally:
            await engine.dispose()
        cutoff = now - older_than
        deleting = await _delete_prune(admin_url, url, cutoff, progress, older_than)
        progress(f"postgresql: gateway db prune --older-than {older_than} (partitions)")
        store = await Store.connect(url)
        try:
            started = time.perf_counter()
            pruned = await prune_store(store, older_than, now=now)
            prune_s = round(time.perf_counter() - started, 3)
        finally:
            await store.close()
        engine = create_async_engine(make_url(url), isolation_level="AUTOCOMMIT")
        try:
            after_prune = await _pg_sizes(engine)
            after_vacuum_s = await _pg_run(engine, "VACUUM (ANALYZE)")
            after_vacuum = await _pg_sizes(engine)
        finally:
            await engine.dispose()
    count = max(int(columns["n"]), 1)
    return {
        "write": write,
        "vacuum_s": vacuum_s,
        "tables": sizes,
        "empty_total": sum(size["total"] for size in empty.values()),
        "column_bytes_per_call": {
            key: round(int(columns[key]) / count) for key in ("request", "response", "normalized")
        },
        "prune": deleting,
        "prune_partitions": {
            "older_than_days": older_than / dt.timedelta(days=1),
            "deleted": pruned.calls,
            "partitions_dropped": len(pruned.partitions),
            "content_collected": pruned.content,
            "seconds": prune_s,
            "calls_total_after": after_prune.get("calls", {}).get("total", 0),
            "vacuum_s": after_vacuum_s,
            "calls_total_after_vacuum": after_vacuum.get("calls", {}).get("total", 0),
            "content_total_before": sizes.get("content", {}).get("total", 0),
            "content_total_after_vacuum": after_vacuum.get("content", {}).get("total", 0),
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
    span_days: float = SPAN_DAYS,
) -> dict[str, Any]:
    """The whole measurement, as a JSON-able dict (``render`` makes the report): today's layout
    (each request whole), and with ``content_store`` the same calls again with
    ``capture.content_store: true`` (each large repeated part once, ``capture.content``)."""
    progress(f"generating {records_count:,} calls (seed {seed})")
    records = make_workload(records_count, seed, span_days=span_days)
    gc.freeze()  # the fixtures are not the system's garbage
    progress("preparing every call once (sizes of the whole JSON, repeated parts, CPU)")
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_at_start": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "seed": seed,
        "span_days": span_days,
        "workload": workload_stats(records, part_min_bytes, content_store=content_store),
        "postgresql": None,
        "sqlite": None,
        "content_store": None,
    }
    whole = CaptureSettings(content_store=False)
    layouts: list[tuple[dict[str, Any], CaptureSettings, str]] = [(result, whole, "")]
    if content_store:
        result["content_store"] = {"min_bytes": part_min_bytes, "postgresql": None, "sqlite": None}
        settings = CaptureSettings(content_store=True, content_min_bytes=part_min_bytes)
        layouts.append((result["content_store"], settings, "content store: "))
    for into, settings, label in layouts:

        def told(message: str, label: str = label) -> None:
            progress(label + message)

        if postgres_url:
            into["postgresql"] = _run(
                measure_postgres(postgres_url, records, settings, told, span_days)
            )
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
    parser.add_argument(
        "--span-days",
        type=float,
        default=SPAN_DAYS,
        help=f"the days the calls are spread over, oldest first (default {SPAN_DAYS}; fewer "
        "fill each daily partition as a busier gateway would)",
    )
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
        span_days=args.span_days,
    )
    print(json.dumps(result, indent=2) if args.json else render(result))
    runs = [result, result["content_store"] or {}]
    writes = [run[b]["write"] for run in runs for b in ("postgresql", "sqlite") if run.get(b)]
    return 0 if all(w["stored"] == w["records"] for w in writes) else 1


if __name__ == "__main__":
    sys.exit(main())
