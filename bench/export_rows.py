"""Export throughput and memory: N captured rows in PostgreSQL through ``gateway export``.

Usage::

    python -m bench.export_rows                        # 1,000,000 rows, the issue's target
    python -m bench.export_rows --rows 100000 --keep   # smaller; keep the scratch database
    python -m bench.export_rows --reuse                # export again from a kept database

Method. A scratch database (``export_bench``) is created on the server (``--server``, by default
the local PostgreSQL), migrated with the capture schema, and filled by ``INSERT ... SELECT``
over ``generate_series`` in batches of 100,000 (not timed): chat calls of route ``support``,
variant ``teacher``, a fixed ~60-word system prompt, a 12-30 word question and a 30-60 word
answer drawn from a 2,000-word vocabulary by ``hashint4`` of the row number, so texts are
distinct; every 10th row repeats the one before it (an exact duplicate) and every 10th + 5 repeats
it with one word of the answer changed (a near duplicate). Then the export runs as its own
process, exactly as a user runs it::

    python -m exporter export --database-url URL --route support --variant teacher --out DIR --json

with exact dedup, near-dup (MinHash LSH, defaults), the leak check, validation, o200k_base
token counts and the train/valid split all on. The figures are the wall time of that process,
its CPU time, its peak RSS (``ru_maxrss``) and the peak RSS of it and any processes it starts
together (sampled every 0.1 s), and the machine's load average as it starts and ends (on a
shared machine the wall time follows the load); targets (issue 15): at most 60 s and 1 GB for
1,000,000 rows.
``--database`` names the scratch database (``--keep`` and ``--reuse`` then work on that one).
``--from-archive DIR`` archives the scratch database's calls to Parquet in DIR first (as
``gateway db archive`` does; kept there for the next run) and exports them from the archive
beside an empty database (``--archive file://DIR``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from capture.archive import archive_before
from capture.archive_location import open_location, read_manifest
from capture.engine import create_engine
from capture.migrate import upgrade

SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"
DATABASE = "export_bench"
BATCH = 100_000
TARGET_S = 60.0
TARGET_RSS_MB = 1024.0

SYSTEM_PROMPT = (
    "You are Acme's support assistant. Answer in two or three short sentences, name the "
    "settings page the customer needs, never promise refunds, and hand over to a human when the "
    "customer is angry or asks for a manager. Our products are Acme Cloud, Acme Sync and the "
    "Acme mobile app; plans are Free, Team and Enterprise. Keep answers friendly and exact."
)

FILL = """
INSERT INTO calls (id, created_at, endpoint, route, variant, provider, requested_model,
    upstream_model, request, response, status, error, finish_reason, prompt_tokens,
    completion_tokens, cached_tokens, cost_usd, total_ms, ttft_ms, upstream_ms, overhead_ms,
    user_key, tags, stream, shadow_of, cache_hit)
SELECT lpad(to_hex(g), 32, '0'),
       timestamptz '2026-11-01 00:00:00+00' + g * interval '10 ms',
       'chat', 'support', 'teacher', 'openai', 'support', 'gpt-4o',
       jsonb_build_object('model', 'support', 'messages', jsonb_build_array(
           jsonb_build_object('role', 'system', 'content', CAST(:system AS text)),
           jsonb_build_object('role', 'user', 'content', q.words || '?'))),
       jsonb_build_object('object', 'chat.completion', 'model', 'gpt-4o', 'choices',
           jsonb_build_array(jsonb_build_object('index', 0, 'finish_reason', 'stop',
               'message', jsonb_build_object('role', 'assistant', 'content', a.words || '.')))),
       200, NULL, 'stop', 120, 60, 0, 0.0012, 800.0, NULL, 790.0, 0.4, NULL, '{}'::jsonb,
       false, NULL, false
FROM (
    SELECT g, CASE WHEN g % 10 IN (0, 5) THEN g - 1 ELSE g END AS seed
    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
) AS rows_
CROSS JOIN LATERAL (
    SELECT string_agg(
        (CAST(:vocabulary AS text[]))[1 + abs(hashint8(rows_.seed * 64 + k)) % 2000], ' ') AS words
    FROM generate_series(1, 12 + abs(hashint8(rows_.seed)) % 19) AS k
) AS q
CROSS JOIN LATERAL (
    SELECT string_agg(
        CASE WHEN rows_.g % 10 = 5 AND k = 7 THEN 'changed'
             ELSE (CAST(:vocabulary AS text[]))[1 + abs(hashint8(rows_.seed * 64 + 32 + k)) % 2000]
        END, ' ') AS words
    FROM generate_series(1, 30 + abs(hashint8(rows_.seed + 7)) % 31) AS k
) AS a
"""


def vocabulary(size: int = 2000) -> list[str]:
    rng = random.Random(42)
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    words: set[str] = set()
    while len(words) < size:
        length = rng.randint(1, 4)
        words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(length)))
    return sorted(words)


async def _admin(server: str, statement: str) -> None:
    engine = create_async_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _fill(url: str, rows: int) -> None:
    engine = create_async_engine(url)
    words = vocabulary()
    try:
        for first in range(1, rows + 1, BATCH):
            last = min(rows, first + BATCH - 1)
            started = time.monotonic()
            async with engine.begin() as connection:
                await connection.execute(
                    text(FILL),
                    {"system": SYSTEM_PROMPT, "first": first, "last": last, "vocabulary": words},
                )
            print(f"  rows {first:,}-{last:,} in {time.monotonic() - started:.1f} s", flush=True)
        async with engine.begin() as connection:  # committed: ANALYZE is transactional
            await connection.execute(text("ANALYZE calls"))
    finally:
        await engine.dispose()


def prepare(server: str, rows: int, database: str = DATABASE) -> str:
    url = f"{server}/{database}"
    asyncio.run(_admin(server, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
    asyncio.run(_admin(server, f"CREATE DATABASE {database}"))
    upgrade(url)
    print(f"filling {url} with {rows:,} rows (not timed)")
    asyncio.run(_fill(url, rows))
    return url


async def archived(server: str, url: str, database: str, folder: str) -> str:
    """Archive the scratch database's calls to ``folder`` (Parquet, one file per day: what
    ``gateway db archive`` writes) unless its manifest lists them already; an empty, migrated
    database beside it, whose URL is returned: the export then reads the archive alone."""
    location = open_location(f"file://{folder}")
    engine = create_engine(url)
    try:
        if not sum(entry.rows for entry in read_manifest(location)):
            started = time.monotonic()
            files = await archive_before(engine, location, dt.datetime.now(dt.UTC))
            rows = sum(entry.rows for entry in files)
            print(f"archived {rows:,} calls to {folder} in {time.monotonic() - started:.1f} s")
    finally:
        await engine.dispose()
    empty = f"{database}_empty"
    await _admin(server, f"DROP DATABASE IF EXISTS {empty} WITH (FORCE)")
    await _admin(server, f"CREATE DATABASE {empty}")
    empty_url = f"{server}/{empty}"
    await asyncio.to_thread(upgrade, empty_url)
    return empty_url


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_mb: float
    report: dict[str, Any]
    """The export's --json report."""
    total_rss_mb: float
    """The peak of the export's processes' resident memory together (sampled)."""
    total_pss_mb: float
    """The peak of their proportional set sizes together: the machine's memory they use."""
    each_rss_mb: list[float]
    """Each process's own peak (sampled), the export's first, then its workers'."""
    cpu_seconds: float
    """User and system CPU time of the export and its workers."""
    load: tuple[float, float]
    """The machine's 1-minute load average as the export started and as it ended: what else
    ran beside it (the figures are only comparable under similar load)."""


class _TreeMemory(threading.Thread):
    """Samples the resident memory of a process and all its children (the export's worker
    processes) every 0.1 s; ``peak`` is the largest sum seen. ``peak_pss`` is the largest sum
    of their proportional set sizes (a page shared by n of them counted 1/n in each: what the
    processes take of the machine's memory together; the RSS sum counts a shared library's
    pages once per process)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.peak_pss = 0
        self.each: dict[int, int] = {}
        """Each process's own peak, by pid, in the order first seen."""
        self.done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.wait(0.1):
            try:
                members = [root, *root.children(recursive=True)]
                total = pss = 0
                for member in members:
                    with contextlib.suppress(psutil.Error, OSError):  # a worker that just ended
                        rss = int(member.memory_info().rss)
                        total += rss
                        self.each[member.pid] = max(self.each.get(member.pid, 0), rss)
                        pss += _pss(member.pid)
            except psutil.Error:
                return
            self.peak = max(self.peak, total)
            self.peak_pss = max(self.peak_pss, pss)


def _pss(pid: int) -> int:
    """A process's proportional set size in bytes (Linux's smaps_rollup; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return 0
    return 0


def _gateway() -> list[str]:
    """The ``gateway`` script users run (its worker processes import what it imports), beside
    this Python; ``python -m exporter`` where it is not installed."""
    script = Path(sys.executable).parent / "gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "exporter"]


def measure(url: str, out: Path, extra: list[str]) -> Measured:
    command = [
        *_gateway(), "export", "--database-url", url,
        "--route", "support", "--variant", "teacher", "--out", str(out), "--json", *extra,
    ]  # fmt: skip
    print("$ gateway " + " ".join(command[command.index("export") :]), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = _TreeMemory(process.pid)
    sampler.start()
    stdout, stderr = process.communicate()
    elapsed = time.monotonic() - started
    sampler.done.set()
    sampler.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    if process.returncode != 0:
        raise SystemExit(f"the export failed ({process.returncode}): {stderr.strip()}")
    return Measured(
        round(elapsed, 1),
        round(usage.ru_maxrss / 1024, 1),
        json.loads(stdout),
        round(sampler.peak / 2**20, 1),
        round(sampler.peak_pss / 2**20, 1),
        [round(rss / 2**20, 1) for rss in sampler.each.values()],
        round(cpu, 1),
        (round(load_before, 1), round(os.getloadavg()[0], 1)),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.export_rows",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--server", default=SERVER, help="PostgreSQL server URL, no database")
    parser.add_argument("--database", default=DATABASE, help="the scratch database's name")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", action="store_true", help="export from the kept database")
    parser.add_argument(
        "--from-archive",
        type=Path,
        metavar="DIR",
        help="archive the scratch database's calls to DIR (unless it holds them already) and "
        "export from there, beside an empty database",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("export_args", nargs="*", help="more `gateway export` options, after --")
    args = parser.parse_args(argv)
    if not args.database.isidentifier():
        parser.error("--database: letters, digits and underscores only")
    url = f"{args.server}/{args.database}"
    if not args.reuse:
        prepare(args.server, args.rows, args.database)
    extra = list(args.export_args)
    source = url
    try:
        if args.from_archive is not None:
            folder = str(args.from_archive.resolve())
            source = asyncio.run(archived(args.server, url, args.database, folder))
            extra += ["--archive", f"file://{folder}"]
        with tempfile.TemporaryDirectory(prefix="export-bench-") as out:
            result = measure(source, Path(out), extra)
    finally:
        if not args.keep and not args.reuse:
            asyncio.run(
                _admin(args.server, f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
            )
        if source != url:
            asyncio.run(_admin(args.server, f"DROP DATABASE IF EXISTS {args.database}_empty"))
    report = result.report
    selected = int(report["selected"])
    rate = selected / result.seconds
    print(
        f"exported {selected:,} rows in {result.seconds:.1f} s ({rate:,.0f} rows/s), "
        f"{result.cpu_seconds:.1f} s of CPU; peak RSS {result.peak_rss_mb:,.0f} MB (the "
        f"largest process), {result.total_rss_mb:,.0f} MB (all its processes together; each: "
        f"{', '.join(f'{rss:,.0f}' for rss in result.each_rss_mb)} MB); proportional set "
        f"sizes together {result.total_pss_mb:,.0f} MB"
    )
    print(f"  kept {report['kept']:,}, dropped {report['dropped']}")
    print(f"  load average (1 min) {result.load[0]} at the start, {result.load[1]} at the end")
    fast, small = result.seconds < TARGET_S, result.total_rss_mb < TARGET_RSS_MB
    print(
        f"  target < {TARGET_S:.0f} s: {'met' if fast else 'MISSED'}; "
        f"< {TARGET_RSS_MB:.0f} MB: {'met' if small else 'MISSED'}"
    )
    if args.json is not None:
        summary = {
            "rows": selected,
            "seconds": result.seconds,
            "peak_rss_mb": result.peak_rss_mb,
            "total_rss_mb": result.total_rss_mb,
            "each_rss_mb": result.each_rss_mb,
            "total_pss_mb": result.total_pss_mb,
            "cpu_seconds": result.cpu_seconds,
            "load": list(result.load),
            "kept": report["kept"],
            "dropped": report["dropped"],
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
