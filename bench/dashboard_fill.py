"""A scratch PostgreSQL database filled with a week of synthetic capture rows.

For bench/dashboard_queries.py: a database created on a server for the run (dropped at the end
unless kept), migrated to the capture schema, then filled.

The rows (one INSERT ... SELECT over generate_series, in chunks): calls spread evenly over the
7 days before now, 3 routes x 3 variants (``teacher`` 70%, ``student`` 25%, ``next`` 5% as
shadow calls of the other two), log-normal latencies (teacher median 1.8 s, students ~0.5 s),
half of them streamed with a TTFT, 1.5% failed, tokens and a cost, and request/response JSON of
chat calls (~1.3 KB a row, as the writer stores them). One live call in five has feedback
(thumbs up/down), a few have two entries. Then VACUUM ANALYZE, as autovacuum would have done.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import sys
import time
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from capture.migrate import upgrade_async

CHUNK = 100_000

FILL_CALLS = """
WITH base AS (
    SELECT i,
           random() AS u_variant, random() AS u1, random() AS u2, random() AS u3,
           random() AS u_status, random() AS u_stream, random() AS u_tokens
    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS i
), shaped AS (
    SELECT i, u1, u2, u3, u_status, u_stream, u_tokens,
           (ARRAY['chat', 'support-bot', 'summarize'])[1 + i % 3] AS route,
           CASE WHEN u_variant < 0.70 THEN 'teacher'
                WHEN u_variant < 0.95 THEN 'student'
                ELSE 'next' END AS variant,
           CAST(:start_at AS timestamptz)
               + (CAST(:span_s AS float8) * (i - 0.5 + 0.4 * (u3 - 0.5)) / CAST(:rows AS float8))
                 * interval '1 second'
               AS created_at,
           sqrt(-2 * ln(greatest(u1, 1e-12))) * cos(2 * pi() * u2) AS z
    FROM base
)
INSERT INTO calls (id, created_at, endpoint, route, variant, provider, requested_model,
                   upstream_model, request, response, status, error, finish_reason,
                   prompt_tokens, completion_tokens, cached_tokens, cost_usd, total_ms, ttft_ms,
                   upstream_ms, overhead_ms, user_key, tags, stream, shadow_of, cache_hit)
SELECT
    md5(i::text),
    created_at,
    'chat',
    route,
    variant,
    'openai',
    route,
    CASE variant WHEN 'teacher' THEN 'gpt-4o'
                 WHEN 'student' THEN 'ft:gpt-4o-mini:acme::s1'
                 ELSE 'ft:gpt-4o-mini:acme::s2' END,
    jsonb_build_object(
        'model', route,
        'temperature', 0.7,
        'messages', jsonb_build_array(
            jsonb_build_object('role', 'system', 'content',
                               'You are a helpful assistant for ' || route || '. '
                               || repeat(md5((i * 7)::text), 5)),
            jsonb_build_object('role', 'user', 'content', repeat(md5((i * 13)::text), 9))
        )
    ),
    CASE WHEN u_status < 0.015 THEN NULL ELSE jsonb_build_object(
        'id', 'chatcmpl-' || md5((i * 3)::text),
        'object', 'chat.completion',
        'model', variant,
        'choices', jsonb_build_array(jsonb_build_object(
            'index', 0, 'finish_reason', 'stop',
            'message', jsonb_build_object('role', 'assistant',
                                          'content', repeat(md5((i * 17)::text), 18))
        )),
        'usage', jsonb_build_object('prompt_tokens', 300, 'completion_tokens', 200)
    ) END,
    CASE WHEN u_status < 0.010 THEN 429 WHEN u_status < 0.013 THEN 500 ELSE 200 END,
    CASE WHEN u_status >= 0.013 AND u_status < 0.015
         THEN 'stream interrupted after 12 chunks' END,
    CASE WHEN u_status < 0.015 THEN NULL ELSE 'stop' END,
    CASE WHEN u_status < 0.015 THEN NULL ELSE 150 + (u_tokens * 1100)::int END,
    CASE WHEN u_status < 0.015 THEN NULL ELSE 40 + (u3 * 600)::int END,
    0,
    CASE WHEN u_status < 0.015 THEN NULL
         WHEN variant = 'teacher' THEN (150 + u_tokens * 1100) * 2.5e-6 + (40 + u3 * 600) * 1e-5
         ELSE (150 + u_tokens * 1100) * 3e-7 + (40 + u3 * 600) * 1.2e-6 END,
    CASE variant WHEN 'teacher' THEN exp(ln(1800) + 0.45 * z)
                 WHEN 'student' THEN exp(ln(520) + 0.5 * z)
                 ELSE exp(ln(480) + 0.5 * z) END,
    CASE WHEN u_stream < 0.5 THEN
         CASE variant WHEN 'teacher' THEN exp(ln(450) + 0.3 * z) ELSE exp(ln(120) + 0.3 * z) END
    END,
    CASE variant WHEN 'teacher' THEN exp(ln(1800) + 0.45 * z) - 0.4
                 ELSE exp(ln(500) + 0.5 * z) - 0.4 END,
    0.2 + u2 * 0.5,
    'user-' || (i % 5000),
    jsonb_build_object('app', 'bench'),
    u_stream < 0.5,
    CASE WHEN variant = 'next' THEN md5((i + 1)::text) END,
    false
FROM shaped
"""

FILL_FEEDBACK = """
INSERT INTO feedback (request_id, created_at, score, label)
SELECT id, created_at + interval '30 seconds',
       CASE WHEN random() < CASE variant WHEN 'teacher' THEN 0.80 ELSE 0.76 END
            THEN 1.0 ELSE -1.0 END,
       'thumbs'
FROM calls
WHERE shadow_of IS NULL AND status = 200 AND ('x' || substr(id, 1, 8))::bit(32)::int % 5 = 0
UNION ALL
SELECT id, created_at + interval '60 seconds', 1.0, 'thumbs'
FROM calls
WHERE shadow_of IS NULL AND status = 200 AND ('x' || substr(id, 1, 8))::bit(32)::int % 97 = 0
"""


@contextlib.asynccontextmanager
async def scratch_database(url: str, keep: bool) -> AsyncIterator[str]:
    """A fresh database on ``url``'s server, dropped afterwards unless ``keep``."""
    parsed = make_url(url)
    name = f"dashboard_bench_{secrets.token_hex(4)}"
    admin = create_async_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        scratch = parsed.set(database=name).render_as_string(hide_password=False)
        try:
            yield scratch
        finally:
            if keep:
                print(f"kept the scratch database: --reuse {scratch}", file=sys.stderr)
            else:
                async with admin.connect() as connection:
                    await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def fill(url: str, rows: int, end: dt.datetime) -> dict[str, float]:
    """Migrate and fill the scratch database; seconds per step."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    await upgrade_async(url, "0002")  # before the dashboard's migration: measured step by step
    engine = create_async_engine(url)
    span_s = 7 * 24 * 3600
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SELECT setseed(0.42)"))
            for first in range(1, rows + 1, CHUNK):
                last = min(rows, first + CHUNK - 1)
                await connection.execute(
                    text(FILL_CALLS),
                    {
                        "first": first,
                        "last": last,
                        "rows": rows,
                        "span_s": span_s,
                        "start_at": end - dt.timedelta(seconds=span_s),
                    },
                )
                print(f"  {last:,} calls", file=sys.stderr, end="\r")
        timings["fill_calls_s"] = time.perf_counter() - started
        started = time.perf_counter()
        async with engine.begin() as connection:
            await connection.execute(text(FILL_FEEDBACK))
        timings["fill_feedback_s"] = time.perf_counter() - started
    finally:
        await engine.dispose()
    started = time.perf_counter()
    await vacuum(url)
    timings["vacuum_analyze_s"] = time.perf_counter() - started
    return timings


async def vacuum(url: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("VACUUM ANALYZE calls"))
            await connection.execute(text("VACUUM ANALYZE feedback"))
    finally:
        await engine.dispose()
