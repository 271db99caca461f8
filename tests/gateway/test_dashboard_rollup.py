"""The hourly rollup (PostgreSQL): kept equal to ``calls`` by its triggers, and the long windows
read from it give the numbers of the raw queries (exact counts, cost and feedback; percentiles
within their 2% bins; Mann-Whitney on the bins).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import random
import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from capture import dashboard_rollup as rollup_sql
from capture.migrate import upgrade_async
from capture.store import Store
from gateway.dashboard import queries, rollup, stats
from gateway.dashboard.report import build_overview, build_series
from gateway.dashboard.window import Window

PG_ADMIN_URL = os.environ.get(
    "DASHBOARD_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
NOW = dt.datetime(2026, 3, 14, 15, 42, 17, tzinfo=dt.UTC)
DAYS = 5
WINDOW = Window(NOW - dt.timedelta(days=4, hours=5, minutes=17), NOW, "custom")
VARIANTS = {"gpt-4": ("teacher", "student"), "bot": ("v1", "v2", "v3")}
MEDIANS = {"teacher": 900.0, "student": 320.0, "v1": 500.0, "v2": 470.0, "v3": 700.0}


def make_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        route = rng.choice(list(VARIANTS))
        variant = rng.choice(VARIANTS[route])
        roll = rng.random()
        status = 200 if roll > 0.05 else rng.choice([429, 500])
        total = rng.lognormvariate(math.log(MEDIANS[variant]), 0.45)
        rows.append(
            {
                "id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "created_at": NOW - dt.timedelta(seconds=rng.uniform(0, DAYS * 86400)),
                "endpoint": "chat",
                "route": None if i % 101 == 7 else route,
                "variant": variant,
                "provider": "sim",
                "requested_model": route,
                "upstream_model": variant,
                "request": {"i": i},
                "response": {"ok": True},
                "status": status,
                "error": "stream cut" if 0.05 < roll < 0.07 else None,
                "finish_reason": "stop",
                "prompt_tokens": 50 + i % 17,
                "completion_tokens": 10 + i % 13,
                "cached_tokens": 0,
                "cost_usd": rng.uniform(0.0001, 0.01) if status == 200 and roll < 0.9 else None,
                "total_ms": total,
                "ttft_ms": total * 0.25 if i % 2 else None,
                "upstream_ms": total - 1,
                "overhead_ms": 0.3,
                "user_key": None,
                "tags": {},
                "stream": bool(i % 2),
                "shadow_of": uuid.UUID(int=i).hex if variant == "v3" else None,
                "cache_hit": False,
            }
        )
    return rows


def make_scores(rows: list[dict[str, Any]], seed: int) -> list[tuple[str, float]]:
    rng = random.Random(seed)
    scores = []
    for row in rows:
        if row["shadow_of"] is None and rng.random() < 0.4:
            scores.append((row["id"], rng.choice([-1.0, 1.0, 0.5])))
            if rng.random() < 0.15:
                scores.append((row["id"], rng.choice([-1.0, 1.0])))
    return scores


async def _admin(statement: str) -> None:
    engine = create_async_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5}
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as exc:
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc}")
    name = f"dashboard_rollup_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Db:
    runner: asyncio.Runner
    store: Store

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)

    def sql(self, statement: str, **params: Any) -> list[Any]:
        rows: list[Any] = self.run(self._sql(statement, params))
        return rows

    async def _sql(self, statement: str, params: dict[str, Any]) -> list[Any]:
        async with self.store.engine.begin() as connection:
            result = await connection.execute(text(statement), params)
            return list(result) if result.returns_rows else []


async def create_rollup(store: Store) -> None:
    async with store.engine.begin() as connection:
        for statement in rollup_sql.UPGRADE:
            await connection.execute(text(statement))


async def drop_rollup(store: Store) -> None:
    async with store.engine.begin() as connection:
        for statement in rollup_sql.DOWNGRADE:
            await connection.execute(text(statement))


@pytest.fixture(scope="module")
def db() -> Iterator[Db]:
    with scratch_database() as url, asyncio.Runner() as runner:

        async def open_store() -> Store:
            await upgrade_async(url)  # migration 0003 creates the rollup and its triggers
            store = await Store.connect(url)
            rows = make_rows(4000, seed=3)
            for start in range(0, len(rows), 256):  # the capture writer's batches
                await store.insert_calls(rows[start : start + 256])
            for call_id, score in make_scores(rows, seed=4):
                await store.add_feedback(call_id, score, now=NOW)
            return store

        store = runner.run(open_store())
        try:
            yield Db(runner, store)
        finally:
            runner.run(store.close())


ROLLUP = (
    "SELECT hour, route, variant, calls, shadow_calls, errors, round(cost_usd::numeric, 9),"
    " priced_calls, prompt_tokens, completion_tokens, latency, ttft, feedback_calls,"
    " round(feedback_sum::numeric, 9), round(feedback_sumsq::numeric, 9)"
    " FROM dashboard_hourly ORDER BY 1, 2, 3"
)
RECOMPUTED = (
    f"WITH {rollup_sql.rollup_ctes(rollup_sql.picked_from_calls('true'))}"
    " SELECT r.hour, r.route, r.variant, r.calls, r.shadow_calls, r.errors,"
    " round(r.cost_usd::numeric, 9), r.priced_calls, r.prompt_tokens, r.completion_tokens,"
    " r.latency, r.ttft, coalesce(f.feedback_calls, 0),"
    " round(coalesce(f.feedback_sum, 0)::numeric, 9),"
    " round(coalesce(f.feedback_sumsq, 0)::numeric, 9)"
    f" FROM rolled r LEFT JOIN ({rollup_sql.feedback_select('true')}) f"
    " USING (hour, route, variant) ORDER BY 1, 2, 3"
)


def folded(db: Db) -> list[Any]:
    """The rollup after folding what is pending."""
    db.sql("SELECT dashboard_hourly_fold()")
    assert db.sql("SELECT count(*) FROM dashboard_pending")[0][0] == 0
    return db.sql(ROLLUP)


def test_inserted_calls_wait_in_pending_until_folded(db: Db) -> None:
    pending = db.sql("SELECT count(*) FROM dashboard_pending")[0][0]
    assert pending == sum(1 for r in make_rows(4000, seed=3) if r["route"])
    # Feedback (given meanwhile) made rows of its own, with no calls yet.
    assert db.sql("SELECT count(*) FROM dashboard_hourly WHERE calls > 0")[0][0] == 0
    kept = folded(db)
    assert len(kept) > DAYS * 24 * 4
    assert kept == db.sql(RECOMPUTED)
    assert all(row[0].minute == 0 and row[0].second == 0 for row in kept)


def test_fold_pending_for_a_periodic_task(db: Db) -> None:
    db.run(db.store.insert_calls(make_rows(50, seed=12)))
    assert db.sql("SELECT count(*) FROM dashboard_pending")[0][0] > 0
    assert db.run(rollup.fold_pending(db.store.engine)) > 0
    assert db.sql("SELECT count(*) FROM dashboard_pending")[0][0] == 0
    assert db.run(rollup.fold_pending(db.store.engine)) == 0


def test_later_batches_merge_into_their_hours(db: Db) -> None:
    extra = make_rows(600, seed=9)
    db.run(db.store.insert_calls(extra[:300]))
    db.sql("SELECT dashboard_hourly_fold()")
    db.run(db.store.insert_calls(extra[300:]))
    for call_id, score in make_scores(extra, seed=10):
        db.run(db.store.add_feedback(call_id, score, now=NOW))
    assert folded(db) == db.sql(RECOMPUTED)


def test_the_upgrade_fills_the_rollup_from_stored_calls(db: Db) -> None:
    before = folded(db)
    db.run(drop_rollup(db.store))
    db.run(create_rollup(db.store))
    assert db.sql(ROLLUP) == before


def test_deletes_and_updates_rebuild_their_hours(db: Db) -> None:
    oldest = db.sql("SELECT min(created_at) FROM calls")[0][0]
    pruned = db.run(db.store.prune(dt.timedelta(days=DAYS) - dt.timedelta(hours=7), now=NOW))
    assert pruned > 0 and db.sql("SELECT min(created_at) FROM calls")[0][0] > oldest
    db.sql("DELETE FROM feedback WHERE id IN (SELECT id FROM feedback ORDER BY id LIMIT 40)")
    db.sql(
        "UPDATE calls SET variant = 'student', status = 500 WHERE id IN"
        " (SELECT id FROM calls WHERE route = 'gpt-4' ORDER BY id LIMIT 25)"
    )
    assert folded(db) == db.sql(RECOMPUTED)


def test_a_second_score_changes_the_calls_mean_not_the_count(db: Db) -> None:
    call_id, created = db.sql(
        "SELECT id, created_at FROM calls c WHERE route = 'bot' AND variant = 'v1' AND NOT"
        " EXISTS (SELECT 1 FROM feedback f WHERE f.request_id = c.id) LIMIT 1"
    )[0]
    hour = created.replace(minute=0, second=0, microsecond=0)

    def feedback_of_hour() -> tuple[int, float]:
        row = db.sql(
            "SELECT feedback_calls, feedback_sum FROM dashboard_hourly"
            " WHERE hour = :hour AND route = 'bot' AND variant = 'v1'",
            hour=hour,
        )[0]
        return int(row[0]), float(row[1])

    folded(db)
    calls, total = feedback_of_hour()
    db.run(db.store.add_feedback(call_id, 1.0))
    now_calls, now_total = feedback_of_hour()
    assert now_calls == calls + 1 and now_total == pytest.approx(total + 1.0)
    db.run(db.store.add_feedback(call_id, 0.0))  # the call's mean is now 0.5
    now_calls, now_total = feedback_of_hour()
    assert now_calls == calls + 1 and now_total == pytest.approx(total + 0.5)
    assert folded(db) == db.sql(RECOMPUTED)


# --- long windows read from the rollup ------------------------------------------------------


def raw(db: Db, query: Any, *args: Any) -> Any:
    async def go() -> Any:
        async with db.store.engine.connect() as connection:
            return await query(await queries.tuned(connection), *args)

    return db.run(go())


def test_long_windows_are_read_from_the_rollup(db: Db) -> None:
    assert rollup.wanted(WINDOW) and rollup.wanted(WINDOW, series=True)
    assert WINDOW.bucket_s == 3600
    day = Window(NOW - dt.timedelta(hours=24), NOW, "24h")
    assert not rollup.wanted(day) and not rollup.wanted(day, series=True)
    two_days = Window(NOW - dt.timedelta(hours=48), NOW, "custom")
    assert rollup.wanted(two_days) and not rollup.wanted(two_days, series=True)
    body = db.run(build_overview(db.store.engine, WINDOW))
    assert body["source"]["table"] == "dashboard_hourly"


def test_rollup_overview_equals_the_raw_queries(db: Db) -> None:
    body = db.run(build_overview(db.store.engine, WINDOW, {"bot": "v1"}))
    totals = {(t.route, t.variant): t for t in raw(db, queries.variant_totals, WINDOW)}
    latency = raw(db, queries.variant_latency, WINDOW)
    feedback = {(f.route, f.variant): f for f in raw(db, queries.feedback_totals, WINDOW)}
    samples = latency_samples(db)
    checked = 0
    for route in body["routes"]:
        for v in route["variants"]:
            key = (route["route"], v["variant"])
            t = totals[key]
            assert (v["calls"], v["shadow_calls"], v["errors"]) == (
                t.calls,
                t.shadow_calls,
                t.errors,
            )
            assert v["cost_per_1k_calls_usd"] == pytest.approx(1000 * t.cost_usd / t.priced_calls)
            for p, name in ((0.5, "p50"), (0.95, "p95")):
                assert v["latency_ms"][name] == pytest.approx(latency[key].total_ms[p], rel=0.01)
                assert v["ttft_ms"][name] == pytest.approx(latency[key].ttft_ms[p], rel=0.01)
            f = feedback.get(key)
            assert v["feedback"]["n"] == (f.n if f else 0)
            if f:
                assert v["feedback"]["mean"] == pytest.approx(f.mean)
            if v["reference"]:
                continue
            reference = route["reference"]
            u, ties = stats.u_statistic(binned(samples[key]), binned(samples[(key[0], reference)]))
            test = v["vs_reference"]["latency"]
            assert test["u"] == pytest.approx(u)
            want = stats.mann_whitney(len(samples[key]), len(samples[(key[0], reference)]), u, ties)
            assert want is not None and test["p"] == pytest.approx(want.p, rel=1e-6)
            checked += 1
    assert checked == 3  # student vs teacher; v2 and v3 vs v1


def test_rollup_series_equals_the_raw_queries(db: Db) -> None:
    body = db.run(build_series(db.store.engine, WINDOW))
    traffic = raw(db, queries.traffic_series, WINDOW)
    latency = raw(db, queries.latency_series, WINDOW)
    index = {b: i for i, b in enumerate(body["buckets"])}
    calls = {
        (b, r["route"], v["variant"]): v["calls"][index[b]]
        for r in body["routes"]
        for v in r["variants"]
        for b in body["buckets"]
        if v["calls"][index[b]]
    }
    assert calls == {(b.bucket, b.route, b.variant): b.calls for b in traffic}
    for r in body["routes"]:
        for v in r["variants"]:
            for b, i in index.items():
                exact = latency.get((b, r["route"], v["variant"]))
                if exact is None:
                    assert v["p50_ms"][i] is None
                    continue
                # A few calls an hour here: each placed in its 2% bin by its rank there.
                assert v["p50_ms"][i] == pytest.approx(exact[0.5], rel=0.02)
                assert v["p95_ms"][i] == pytest.approx(exact[0.95], rel=0.02)


def test_windows_inside_one_hour_need_no_rollup_rows(db: Db) -> None:
    inside = Window(NOW - dt.timedelta(minutes=30), NOW - dt.timedelta(minutes=5), "custom")

    async def go() -> list[rollup.Part]:
        async with db.store.engine.connect() as connection:
            return await rollup.load(connection, inside)

    parts = db.run(go())
    want = {(t.route, t.variant): t.calls for t in raw(db, queries.variant_totals, inside)}
    assert {(t.route, t.variant): t.calls for t in rollup.totals(parts)} == want


def latency_samples(db: Db) -> dict[tuple[str, str], list[float]]:
    rows = db.sql(
        "SELECT route, variant, total_ms FROM calls WHERE created_at >= :start"
        " AND created_at < :end AND route IS NOT NULL AND status < 400 AND status >= 100"
        " AND error IS NULL",
        start=WINDOW.start,
        end=WINDOW.end,
    )
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for route, variant, total in rows:
        out[(route, variant)].append(float(total))
    return out


def binned(values: list[float]) -> list[float]:
    return [float(rollup.bin_of(v)) for v in values]


# --- the histogram arithmetic ------------------------------------------------------------------


def test_histogram_percentiles_stay_within_their_bin() -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(6, 0.6) for _ in range(5000)]
    bins = rollup.Bins.of(values)
    for p in (0.01, 0.5, 0.95, 0.99):
        exact = statistics.quantiles(values, n=1000, method="inclusive")[round(p * 1000) - 1]
        assert rollup.percentile(bins, p) == pytest.approx(exact, rel=0.01)
    assert rollup.percentile(rollup.Bins(), 0.5) is None
    assert rollup.percentile(rollup.Bins.of([250.0]), 0.5) == pytest.approx(250.0, rel=0.01)
    # Two calls: halfway between them, as percentile_cont.
    two = rollup.percentile(rollup.Bins.of([100.0, 300.0]), 0.5)
    assert two == pytest.approx(200.0, rel=0.01)


def test_bins_add_up_whatever_their_ranges() -> None:
    a, b, c = [10.0, 11.0, 500.0], [3.0, 12.0], [9000.0]
    merged = rollup.Bins.of(a)
    merged.add(rollup.Bins.of(b))
    merged.add(rollup.Bins.of(c))
    merged.add(rollup.Bins())
    whole = rollup.Bins.of(a + b + c)
    assert (merged.low, merged.counts) == (whole.low, whole.counts)
    assert merged.total == 6


def test_u_from_bins_equals_pairwise_counting_on_binned_values() -> None:
    rng = random.Random(6)
    a = [rng.lognormvariate(6, 0.5) for _ in range(300)]
    b = [rng.lognormvariate(6.1, 0.5) for _ in range(250)]
    u, ties = rollup.u_from_bins(rollup.Bins.of(a), rollup.Bins.of(b))
    assert (u, ties) == stats.u_statistic(binned(a), binned(b))


def test_the_sql_bins_like_python(db: Db) -> None:
    values = [0.5, 1.0, 99.99, 100.0, 1234.5, 60000.0]
    rows = db.sql(
        "SELECT floor(ln(greatest(x, 0.001)) * :k)::int FROM unnest(CAST(:xs AS float8[])) x",
        k=rollup_sql.BINS_PER_E,
        xs=values,
    )
    assert [r[0] for r in rows] == [rollup.bin_of(v) for v in values]
    merged = db.sql(
        "SELECT dashboard_merge_bins(CAST(:a AS int[]), CAST(:b AS int[]))",
        a=[5, 1, 0, 2],
        b=[3, 4, 0, 0, 1, 1],
    )[0][0]
    assert merged == [3, 4, 0, 1, 1, 3]  # bins 3..7
