"""How long the dashboard's aggregate queries take over a large capture store (PostgreSQL).

Usage::

    python -m bench.dashboard_queries \\
        --url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres --rows 1000000

The URL names a PostgreSQL server and a database to connect to for administration; a scratch
database (``dashboard_bench_<random>``) is created on that server, migrated to the capture
schema, filled, and dropped at the end. ``--keep`` leaves it (its URL is printed) and
``--reuse URL`` times an existing, already filled database again without filling it.

The rows are bench/dashboard_fill.py's: a week of calls over 3 routes x 3 variants, with
feedback on some, then VACUUM ANALYZE.

Three phases, each timing every query of ``gateway.dashboard.queries`` on its own and the JSON
API's overview and timeseries (what a page load waits for), for the 24 h and 7 d windows,
``--repeat`` warm runs after a first one:

1. the schema as migrated;
2. with the proposed indexes (``PROPOSED_INDEXES``, for a migration);
3. with the hourly rollup (``capture.dashboard_rollup``, migration 0003; ``--no-rollup``
   skips it): windows over 24 hours then read their whole hours from it. Its creation time, its
   size and the cost of its trigger on the capture writer's batches are measured too.

The target: each aggregate query under 300 ms over 1,000,000 rows. Results go to
``bench/results/dashboard_queries.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bench.dashboard_fill import fill, scratch_database, vacuum
from capture import dashboard_rollup as rollup_sql
from capture.engine import create_engine
from capture.store import Store
from gateway.dashboard import queries, rollup
from gateway.dashboard.report import build_overview, build_series
from gateway.dashboard.window import Window

RESULTS = Path(__file__).with_name("results")
PROPOSED_INDEXES = rollup_sql.INDEXES
TARGET_MS = 300.0


async def add_proposed_indexes(url: str) -> float:
    started = time.perf_counter()
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in PROPOSED_INDEXES:
                await connection.execute(text(statement))
            await connection.execute(text("VACUUM ANALYZE calls"))
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def describe(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT (SELECT count(*) FROM calls), (SELECT count(*) FROM feedback),"
                    " pg_size_pretty(pg_table_size('calls')),"
                    " pg_size_pretty(pg_indexes_size('calls')), version()"
                )
            )
        ).one()
    return {
        "calls": row[0],
        "feedback": row[1],
        "calls_table": row[2],
        "calls_indexes": row[3],
        "server": row[4].split(" on ")[0],
    }


Query = Callable[[AsyncConnection, Window], Awaitable[object]]


def query_set() -> dict[str, Query]:
    async def references(connection: AsyncConnection, window: Window) -> object:
        return await queries.latency_ranks(
            connection,
            window,
            {"chat": "teacher", "support-bot": "teacher", "summarize": "teacher"},
        )

    async def first_page(connection: AsyncConnection, window: Window) -> object:
        return await queries.recent_calls(connection, window, limit=25)

    async def store(connection: AsyncConnection, window: Window) -> object:
        return await queries.store_counts(connection)

    return {
        "variant_totals": queries.variant_totals,
        "variant_latency (total, TTFT)": queries.variant_latency,
        "feedback_totals": queries.feedback_totals,
        "latency_ranks (Mann-Whitney)": references,
        "traffic_series": queries.traffic_series,
        "latency_series": queries.latency_series,
        "recent_calls (first page)": first_page,
        "store_counts": store,
    }


async def time_queries(engine: AsyncEngine, end: dt.datetime, repeat: int) -> list[dict[str, Any]]:
    """Every query of ``queries`` on its own, for both windows."""
    results = []
    for label, window in windows(end):
        for name, query in query_set().items():
            samples = []
            for _ in range(repeat + 1):
                async with engine.connect() as connection:
                    started = time.perf_counter()
                    await query(await queries.tuned(connection), window)
                    samples.append((time.perf_counter() - started) * 1000)
            results.append(_row(label, name, samples))
    return results


async def time_rollup_read(engine: AsyncEngine, end: dt.datetime, repeat: int) -> dict[str, Any]:
    """The one query that replaces the aggregations of a long window: its whole hours from the
    rollup and its partial hours from calls (``rollup.load``), with the merge in Python."""
    window = Window(end - dt.timedelta(days=7), end, "7d")
    samples = []
    for _ in range(repeat + 1):
        async with engine.connect() as connection:
            started = time.perf_counter()
            parts = await rollup.load(await queries.tuned(connection), window)
            rollup.totals(parts)
            rollup.latency(parts)
            samples.append((time.perf_counter() - started) * 1000)
    return _row("7d", "rollup.load + merge", samples)


async def time_api(engine: AsyncEngine, end: dt.datetime, repeat: int) -> list[dict[str, Any]]:
    """What a page load waits for: the overview and the timeseries as the JSON API builds them."""
    results = []
    for label, window in windows(end):
        for name, build in (("overview", build_overview), ("timeseries", build_series)):
            samples = []
            for _ in range(repeat + 1):
                started = time.perf_counter()
                await build(engine, window)
                samples.append((time.perf_counter() - started) * 1000)
            results.append(_row(label, name, samples, target=False))
    return results


def windows(end: dt.datetime) -> list[tuple[str, Window]]:
    return [
        (label, Window(end - span, end, label))
        for label, span in (("24h", dt.timedelta(hours=24)), ("7d", dt.timedelta(days=7)))
    ]


async def time_writes(url: str, end: dt.datetime, blocks: int = 4) -> dict[str, Any]:
    """Milliseconds per capture batch (256 rows through ``Store.insert_calls``, as the writer
    inserts them) with the rollup's trigger and without, in alternating blocks of 10 batches
    (the machine's load drifts); then the fold of what the batches left pending."""
    store = await Store.connect(url)
    samples: dict[bool, list[float]] = {True: [], False: []}
    try:
        n = 0
        for _ in range(blocks):
            for enabled in (True, False):
                toggle = "ENABLE" if enabled else "DISABLE"
                async with store.engine.begin() as connection:
                    await connection.execute(
                        text(f"ALTER TABLE calls {toggle} TRIGGER dashboard_pending_insert")
                    )
                for _ in range(10):
                    rows = [_write_row(end, n + i) for i in range(256)]
                    n += 256
                    started = time.perf_counter()
                    await store.insert_calls(rows)
                    samples[enabled].append((time.perf_counter() - started) * 1000)
        async with store.engine.begin() as connection:
            await connection.execute(
                text("ALTER TABLE calls ENABLE TRIGGER dashboard_pending_insert")
            )
            pending = await connection.scalar(text("SELECT count(*) FROM dashboard_pending"))
            started = time.perf_counter()
            await rollup.fold(connection)
        fold_ms = (time.perf_counter() - started) * 1000
    finally:
        await store.close()

    def summary(values: list[float]) -> dict[str, float]:
        return {"median_ms": round(statistics.median(values), 2), "max_ms": round(max(values), 2)}

    return {
        "with": summary(samples[True]),
        "without": summary(samples[False]),
        "fold": {"pending": int(pending or 0), "ms": round(fold_ms, 1)},
    }


def _write_row(end: dt.datetime, i: int) -> dict[str, Any]:
    variant = ("teacher", "student", "next")[i % 3]
    total = 300.0 + (i * 37) % 2000
    return {
        "id": secrets.token_hex(16),
        "created_at": end - dt.timedelta(seconds=i % 3000),
        "endpoint": "chat",
        "route": ("chat", "support-bot", "summarize")[i % 3],
        "variant": variant,
        "provider": "openai",
        "requested_model": "chat",
        "upstream_model": variant,
        "request": {"messages": [{"role": "user", "content": "x" * 600}]},
        "response": {"choices": [{"message": {"content": "y" * 800}}]},
        "status": 200,
        "error": None,
        "finish_reason": "stop",
        "prompt_tokens": 300,
        "completion_tokens": 200,
        "cached_tokens": 0,
        "cost_usd": 0.002,
        "total_ms": total,
        "ttft_ms": total / 4,
        "upstream_ms": total - 0.5,
        "overhead_ms": 0.5,
        "user_key": None,
        "tags": {},
        "stream": True,
        "shadow_of": None,
        "cache_hit": False,
    }


async def create_rollup(url: str) -> float:
    started = time.perf_counter()
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in rollup_sql.UPGRADE:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()
    await vacuum(url)
    return time.perf_counter() - started


def _row(window: str, name: str, samples: list[float], target: bool = True) -> dict[str, Any]:
    warm = samples[1:]
    return {
        "window": window,
        "query": name,
        "first_ms": round(samples[0], 1),
        "median_ms": round(statistics.median(warm), 1),
        "max_ms": round(max(warm), 1),
        "target": target,
    }


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    return f"{r['median_ms']:.0f} ({r['max_ms']:.0f})"


def render(report: dict[str, Any], meta: dict[str, Any]) -> str:
    queries_by_phase: dict[str, list[dict[str, Any]]] = report["queries"]
    phases = list(queries_by_phase)
    rolled = "rollup" in report
    lines = [
        f"Dashboard queries over {meta['calls']:,} calls and {meta['feedback']:,} feedback rows,"
        f" 7 days, 3 routes x 3 variants ({meta['server']}, {meta['cpus']} CPUs, load average"
        f" {meta['load']} at the start; calls table {meta['calls_table']}, its indexes"
        f" {meta['indexes_schema']} as migrated, {meta.get('indexes_proposed', '-')} with the"
        " proposed ones). Milliseconds, median (max) of"
        f" {meta['repeat']} warm runs after a first one. Target: < {TARGET_MS:.0f} ms a query.",
        "",
        "Each query on its own:",
        "",
        "| window | query | " + " | ".join(phases) + " | met |",
        "|---|---|" + "---|" * len(phases) + "---|",
    ]
    for i, base in enumerate(queries_by_phase[phases[0]]):
        last = queries_by_phase[phases[-1]][i]
        cells = [_cell(queries_by_phase[p][i]) for p in phases]
        met = "yes" if last["max_ms"] < TARGET_MS else "**no**"
        if rolled and base["window"] == "7d" and base["query"] in ROLLED_UP:
            met = "replaced by the rollup"
        lines.append(f"| {base['window']} | {base['query']} | " + " | ".join(cells) + f" | {met} |")
    if rolled:
        r = report["rollup"]["read"]
        met = "yes" if r["max_ms"] < TARGET_MS else "**no**"
        blank = " | ".join("-" for _ in phases[:-1])
        lines.append(f"| 7d | {r['query']} (with the rollup) | {blank} | {_cell(r)} | {met} |")
    api_phases = list(report["api"])
    lines += [
        "",
        "What a page load waits for (the JSON API's overview and timeseries, all their queries):",
        "",
        "| window | API | " + " | ".join(api_phases) + " |",
        "|---|---|" + "---|" * len(api_phases),
    ]
    for i, base in enumerate(report["api"][api_phases[0]]):
        cells = [_cell(report["api"][p][i]) for p in api_phases]
        lines.append(f"| {base['window']} | {base['query']} | " + " | ".join(cells) + " |")
    if rolled:
        w = report["rollup"]
        writes = w["writes"]
        lines += [
            "",
            f"The rollup: created and filled from the {meta['calls']:,} calls in"
            f" {w['create_s']:.1f} s; {w['rows']:,} rows ({w['size']}). A capture batch of 256"
            f" rows (Store.insert_calls) takes {writes['with']['median_ms']:.1f} ms (max"
            f" {writes['with']['max_ms']:.1f}) with its trigger,"
            f" {writes['without']['median_ms']:.1f} ms (max {writes['without']['max_ms']:.1f})"
            f" without; folding the {writes['fold']['pending']:,} calls they left pending took"
            f" {writes['fold']['ms']:.0f} ms.",
        ]
    return "\n".join(lines) + "\n"


ROLLED_UP = {
    "variant_totals",
    "variant_latency (total, TTFT)",
    "feedback_totals",
    "latency_ranks (Mann-Whitney)",
    "traffic_series",
    "latency_series",
}


async def main_async(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    meta: dict[str, Any] = {"repeat": args.repeat, "cpus": os.cpu_count()}
    meta["load"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    if args.reuse:
        return await _measure(args.reuse, None, args, meta)
    async with scratch_database(args.url, args.keep) as url:
        end = dt.datetime.now(dt.UTC).replace(microsecond=0)
        print(f"filling {args.rows:,} calls ...", file=sys.stderr)
        meta.update(await fill(url, args.rows, end))
        return await _measure(url, end, args, meta)


async def _measure(
    url: str, end: dt.datetime | None, args: argparse.Namespace, meta: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    engine = create_engine(url)
    report: dict[str, Any] = {"queries": {}, "api": {}}
    try:
        if end is None:
            async with engine.connect() as connection:
                newest = await connection.scalar(text("SELECT max(created_at) FROM calls"))
            end = (newest or dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=1)
        meta.update(await describe(engine))
        meta["indexes_schema"] = meta["calls_indexes"]
        print("timing with the schema's indexes ...", file=sys.stderr)
        report["queries"]["as migrated"] = await time_queries(engine, end, args.repeat)
        report["api"]["as migrated"] = await time_api(engine, end, args.repeat)
        meta["create_indexes_s"] = round(await add_proposed_indexes(url), 1)
        meta["indexes_proposed"] = (await describe(engine))["calls_indexes"]
        print("timing with the proposed indexes ...", file=sys.stderr)
        report["queries"]["proposed indexes"] = await time_queries(engine, end, args.repeat)
        report["api"]["proposed indexes"] = await time_api(engine, end, args.repeat)
        if not args.no_rollup:
            print("creating the hourly rollup ...", file=sys.stderr)
            created = await create_rollup(url)
            async with engine.connect() as connection:
                rows = await connection.scalar(text("SELECT count(*) FROM dashboard_hourly"))
                size = await connection.scalar(
                    text("SELECT pg_size_pretty(pg_total_relation_size('dashboard_hourly'))")
                )
            report["rollup"] = {
                "create_s": created,
                "rows": int(rows or 0),
                "size": size,
                "read": await time_rollup_read(engine, end, args.repeat),
            }
            report["api"]["+ hourly rollup"] = await time_api(engine, end, args.repeat)
            print("timing capture writes with and without the rollup ...", file=sys.stderr)
            report["rollup"]["writes"] = await time_writes(url, end)
    finally:
        await engine.dispose()
    return report, meta


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dashboard_queries", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server (and a database on it to connect to) for the scratch database",
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="warm runs per query")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", metavar="URL", help="time an already filled database")
    parser.add_argument(
        "--no-rollup", action="store_true", help="skip the phase with the hourly rollup"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if make_url(args.reuse or args.url).get_backend_name() != "postgresql":
        print("this benchmark needs a PostgreSQL URL", file=sys.stderr)
        return 2
    report, meta = asyncio.run(main_async(args))
    text_report = render(report, meta)
    print(text_report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dashboard_queries.md").write_text(text_report)
    (RESULTS / "dashboard_queries.json").write_text(
        json.dumps({"meta": meta, **report}, indent=2, default=str) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
