"""The dashboard's numbers equal an independent computation over the same rows.

Known rows (failures, shadow calls, calls without TTFT or cost, tied latencies, calls scored
twice, rows outside the window and without a route) go into a SQLite file and into a scratch
database on the machine's PostgreSQL; the query functions and the JSON API are compared with
plain Python over the raw rows (``statistics.quantiles`` for percentiles, pairwise counting for
Mann-Whitney's U, ``statistics`` for means and variances) and with plain SQL for the counts.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from capture.migrate import upgrade_async
from capture.store import Store
from gateway.api import build_api
from gateway.capturing import AnyWriter
from gateway.dashboard import build_dashboard, queries, stats
from gateway.dashboard.report import build_overview, build_series
from gateway.dashboard.window import Window
from gateway.metrics import Metrics
from gateway.runtime import RuntimeManager
from gateway.settings import Settings

ADMIN_KEY = "dash-admin-key-5e1f"
PG_ADMIN_URL = os.environ.get(
    "DASHBOARD_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
NOW = dt.datetime(2026, 3, 14, 15, 9, 26, tzinfo=dt.UTC)
WINDOW = Window(NOW - dt.timedelta(hours=1), NOW, "1h")
ROUTES = {
    "gpt-4": {"teacher": 60, "student": 30, "next": 0},
    "support-bot": {"v1": 50, "v2": 50},
}
REL = 1e-9


def settings() -> Settings:
    return Settings.model_validate(
        {
            "auth": "none",
            "admin": {"keys": [{"name": "ops", "key": ADMIN_KEY}]},
            "providers": {"sim": {"base_url": "http://127.0.0.1:9/v1"}},
            "routes": {
                route: {
                    "variants": {
                        name: {"provider": "sim", "model": f"m-{name}", "weight": weight}
                        for name, weight in variants.items()
                    }
                }
                for route, variants in ROUTES.items()
            },
        }
    )


def make_rows(seed: int = 7) -> tuple[list[dict[str, Any]], list[tuple[str, float]]]:
    """Calls over the last 80 minutes (some before the window, one at its end) and feedback."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    scores: list[tuple[str, float]] = []
    medians = {"teacher": 900.0, "student": 300.0, "next": 280.0, "v1": 500.0, "v2": 520.0}
    for i in range(700):
        route = rng.choice(list(ROUTES))
        variants = list(ROUTES[route])
        variant = rng.choices(variants, weights=[max(w, 8) for w in ROUTES[route].values()])[0]
        created = NOW - dt.timedelta(seconds=rng.uniform(0, 80 * 60))
        if i == 0:
            created = NOW  # the window's end is exclusive
        roll = rng.random()
        status, error = 200, None
        if roll < 0.04:
            status = rng.choice([429, 500, 503])
        elif roll < 0.06:
            error = "stream interrupted after 3 chunks"
        elif roll < 0.065:
            status = 0  # a shadow call that never got an answer
        # Round to 1 ms so that latencies tie, as real ones do at the store's precision.
        total = round(rng.lognormvariate(math.log(medians[variant]), 0.4))
        stream = rng.random() < 0.5
        priced = status == 200 and rng.random() < 0.9
        rows.append(
            {
                "id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "created_at": created,
                "endpoint": "chat",
                "route": None if i % 97 == 5 else route,
                "variant": variant,
                "provider": "sim",
                "requested_model": route,
                "upstream_model": f"m-{variant}",
                "request": {"model": route, "messages": [{"role": "user", "content": f"q{i}"}]},
                "response": {"choices": [{"message": {"content": f"<b>a{i}</b>"}}]},
                "status": status,
                "error": error,
                "finish_reason": "stop",
                "prompt_tokens": 100 + i,
                "completion_tokens": 20 + i % 50,
                "cached_tokens": 0,
                "cost_usd": round(rng.uniform(0.0001, 0.01), 6) if priced else None,
                "total_ms": float(total),
                "ttft_ms": total * 0.3 if stream else None,
                "upstream_ms": total - 1.0,
                "overhead_ms": 0.4,
                "user_key": f"u{i % 40}",
                "tags": {},
                "stream": stream,
                "shadow_of": uuid.UUID(int=i).hex if variant == "next" else None,
                "cache_hit": False,
            }
        )
    for row in rows:
        if row["shadow_of"] or rng.random() > 0.45:
            continue
        good = {"teacher": 0.8, "student": 0.7, "v1": 0.6, "v2": 0.62}[row["variant"]]
        scores.append((row["id"], 1.0 if rng.random() < good else -1.0))
        if rng.random() < 0.1:
            scores.append((row["id"], round(rng.uniform(-1, 1), 2)))
    return rows, scores


# --- the independent computation ---------------------------------------------------------------


def in_window(row: dict[str, Any]) -> bool:
    return bool(WINDOW.start <= row["created_at"] < WINDOW.end and row["route"] and row["variant"])


def failed(row: dict[str, Any]) -> bool:
    return bool(row["status"] >= 400 or row["status"] < 100 or row["error"] is not None)


def ranked(values: list[float], dialect: str) -> list[float]:
    """What the Mann-Whitney test ranks: on PostgreSQL, 0.1% bins of the latency."""
    if dialect != "postgresql":
        return values
    return [float(math.floor(math.log(max(v, 0.001)) * 1000)) for v in values]


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks, by the standard library."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(p * 100) - 1]


@dataclass
class Expected:
    calls: int = 0
    shadow: int = 0
    errors: int = 0
    cost: float = 0.0
    priced: int = 0
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def expected(
    rows: list[dict[str, Any]], scores: list[tuple[str, float]]
) -> dict[tuple[str, str], Expected]:
    by_call: dict[str, list[float]] = defaultdict(list)
    for call_id, value in scores:
        by_call[call_id].append(value)
    out: dict[tuple[str, str], Expected] = defaultdict(Expected)
    for row in rows:
        if not in_window(row):
            continue
        e = out[(row["route"], row["variant"])]
        e.calls += 1
        e.shadow += row["shadow_of"] is not None
        e.errors += failed(row)
        if row["cost_usd"] is not None:
            e.cost += row["cost_usd"]
            e.priced += 1
        if not failed(row):
            e.latency.append(row["total_ms"])
            if row["ttft_ms"] is not None:
                e.ttft.append(row["ttft_ms"])
        if row["id"] in by_call:
            e.scores.append(statistics.fmean(by_call[row["id"]]))
    return dict(out)


# --- the stores -------------------------------------------------------------------------------


@dataclass
class Loaded:
    runner: asyncio.Runner
    store: Store
    rows: list[dict[str, Any]]
    scores: list[tuple[str, float]]

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)


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
def _database(kind: str, tmp: Path) -> Iterator[str]:
    """A SQLite file, or a scratch database on the machine's PostgreSQL (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp}/dashboard.db"
        return
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as exc:
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc}")
    name = f"dashboard_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loaded]:
    tmp = tmp_path_factory.mktemp(f"dashboard-{request.param}")
    rows, scores = make_rows()
    with _database(request.param, tmp) as url, asyncio.Runner() as runner:
        store = runner.run(fill(url, rows, scores))
        try:
            yield Loaded(runner, store, rows, scores)
        finally:
            runner.run(store.close())


async def fill(url: str, rows: list[dict[str, Any]], scores: list[tuple[str, float]]) -> Store:
    await upgrade_async(url)
    store = await Store.connect(url)
    await store.insert_calls(rows)
    for call_id, value in scores:
        await store.add_feedback(call_id, value, "thumbs", now=NOW)
    return store


# --- the query functions ------------------------------------------------------------------------


async def _on(loaded: Loaded, query: Any, *args: Any) -> Any:
    async with loaded.store.engine.connect() as connection:
        return await query(connection, *args)


def test_variant_totals_equal_python_over_the_rows(loaded: Loaded) -> None:
    want = expected(loaded.rows, loaded.scores)
    got = {(t.route, t.variant): t for t in loaded.run(_on(loaded, queries.variant_totals, WINDOW))}
    assert set(got) == set(want)
    for key, e in want.items():
        t = got[key]
        assert (t.calls, t.shadow_calls, t.errors, t.priced_calls) == (
            e.calls,
            e.shadow,
            e.errors,
            e.priced,
        ), key
        assert t.cost_usd == pytest.approx(e.cost, rel=REL)


def test_variant_totals_equal_plain_sql(loaded: Loaded) -> None:
    sql = text(
        "SELECT route, variant, count(*), "
        " sum(CASE WHEN status >= 400 OR status < 100 OR error IS NOT NULL THEN 1 ELSE 0 END)"
        " FROM calls WHERE created_at >= :start AND created_at < :end"
        " AND route IS NOT NULL GROUP BY route, variant"
    )
    start, end = WINDOW.start, WINDOW.end
    if loaded.store.dialect == "sqlite":  # stored as naive UTC text
        start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)

    async def plain() -> dict[tuple[str, str], tuple[int, int]]:
        async with loaded.store.engine.connect() as connection:
            result = await connection.execute(sql, {"start": start, "end": end})
            return {(r[0], r[1]): (int(r[2]), int(r[3])) for r in result}

    got = {
        (t.route, t.variant): (t.calls, t.errors)
        for t in loaded.run(_on(loaded, queries.variant_totals, WINDOW))
    }
    assert got == loaded.run(plain())


def test_latency_percentiles_equal_python(loaded: Loaded) -> None:
    want = expected(loaded.rows, loaded.scores)
    got = loaded.run(_on(loaded, queries.variant_latency, WINDOW))
    for key, e in want.items():
        for p in (0.5, 0.95):
            assert got[key].total_ms[p] == pytest.approx(percentile(e.latency, p), rel=REL), key
            assert got[key].ttft_ms[p] == pytest.approx(percentile(e.ttft, p), rel=REL), key


def test_feedback_totals_count_each_call_once(loaded: Loaded) -> None:
    want = expected(loaded.rows, loaded.scores)
    got = {
        (f.route, f.variant): f for f in loaded.run(_on(loaded, queries.feedback_totals, WINDOW))
    }
    assert set(got) == {k for k, e in want.items() if e.scores}
    for key, f in got.items():
        s = want[key].scores
        assert f.n == len(s)
        assert f.mean == pytest.approx(statistics.fmean(s), rel=REL)
        assert f.variance == pytest.approx(statistics.variance(s), rel=1e-7)


def test_mann_whitney_inputs_equal_pairwise_counting(loaded: Loaded) -> None:
    want = expected(loaded.rows, loaded.scores)
    refs = {"gpt-4": "teacher", "support-bot": "v2"}
    got = loaded.run(_on(loaded, queries.latency_ranks, WINDOW, refs))
    assert {(r.route, r.variant) for r in got} == {
        k for k in want if k[1] != refs[k[0]] and want[k].latency
    }
    for r in got:
        sample, reference = want[(r.route, r.variant)].latency, want[(r.route, r.reference)].latency
        dialect = loaded.store.dialect
        u, ties = stats.u_statistic(ranked(sample, dialect), ranked(reference, dialect))
        assert (r.n, r.n_reference) == (len(sample), len(reference))
        assert r.u == pytest.approx(u, rel=REL)
        assert r.ties == pytest.approx(ties, rel=REL)
        assert ties > 0, "the rows are meant to have tied latencies"


def test_series_equal_python_per_bucket(loaded: Loaded) -> None:
    step = WINDOW.bucket_s
    assert step == 30
    buckets: dict[tuple[int, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in loaded.rows:
        if in_window(row):
            bucket = int(row["created_at"].timestamp()) // step * step
            buckets[(bucket, row["route"], row["variant"])].append(row)
    traffic = loaded.run(_on(loaded, queries.traffic_series, WINDOW))
    assert {
        (b.bucket, b.route, b.variant): (b.calls, b.shadow_calls, b.errors) for b in traffic
    } == {
        key: (len(rs), sum(r["shadow_of"] is not None for r in rs), sum(failed(r) for r in rs))
        for key, rs in buckets.items()
    }
    latency = loaded.run(_on(loaded, queries.latency_series, WINDOW))
    for key, rs in buckets.items():
        ok = [r["total_ms"] for r in rs if not failed(r)]
        if not ok:
            assert key not in latency
            continue
        assert latency[key][0.5] == pytest.approx(percentile(ok, 0.5), rel=REL)
        assert latency[key][0.95] == pytest.approx(percentile(ok, 0.95), rel=REL)


def test_recent_calls_pages_through_the_window_newest_first(loaded: Loaded) -> None:
    want = sorted(
        (r for r in loaded.rows if in_window(r) and r["route"] == "gpt-4"),
        key=lambda r: (r["created_at"], r["id"]),
        reverse=True,
    )
    feedback: dict[str, list[float]] = defaultdict(list)
    for call_id, value in loaded.scores:
        feedback[call_id].append(value)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page, cursor = loaded.run(_on_recent(loaded, cursor))
        seen.extend(page)
        if cursor is None:
            break
    assert [r["id"] for r in seen] == [r["id"] for r in want]
    for got in seen:
        scores = feedback.get(got["id"])
        assert got["feedback"] == (pytest.approx(statistics.fmean(scores)) if scores else None)


async def _on_recent(loaded: Loaded, cursor: queries.Cursor | None) -> Any:
    async with loaded.store.engine.connect() as connection:
        return await queries.recent_calls(
            connection, WINDOW, limit=40, before=cursor, route="gpt-4"
        )


# --- the JSON API --------------------------------------------------------------------------------


@dataclass
class FakeGateway:
    manager: RuntimeManager
    store: Store | None
    writer: AnyWriter | None = None
    ready: bool = True
    metrics: Metrics = field(default_factory=Metrics)

    def sync_metrics(self) -> None:
        pass


def api_get(loaded: Loaded, path: str, **params: Any) -> Any:
    state = FakeGateway(RuntimeManager(settings()), loaded.store)
    app = build_api(state, build_dashboard(state))

    async def get() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.get(
                path, params=params, headers={"authorization": f"Bearer {ADMIN_KEY}"}
            )
            assert response.status_code == 200, response.text
            return response.json()

    return loaded.run(get())


WINDOW_PARAMS = {"start": WINDOW.start.isoformat(), "end": WINDOW.end.isoformat()}


def test_overview_api_equals_python(loaded: Loaded) -> None:
    want = expected(loaded.rows, loaded.scores)
    body = api_get(loaded, "/dashboard/api/overview", **WINDOW_PARAMS)
    assert body["window"]["start"] == WINDOW.start.isoformat()
    assert [r["route"] for r in body["routes"]] == list(ROUTES)
    for route in body["routes"]:
        name = route["route"]
        # Configured variants first, in config order; the teacher is the reference.
        assert [v["variant"] for v in route["variants"]] == list(ROUTES[name])
        live = {v: want[(name, v)].calls - want[(name, v)].shadow for v in ROUTES[name]}
        reference = "teacher" if name == "gpt-4" else max(live, key=lambda v: live[v])
        assert route["reference"] == reference
        for v in route["variants"]:
            e = want[(name, v["variant"])]
            assert v["calls"] == e.calls and v["shadow_calls"] == e.shadow
            assert v["share"] == pytest.approx(live[v["variant"]] / sum(live.values()))
            assert v["error_rate"] == pytest.approx(e.errors / e.calls)
            assert v["cost_per_1k_calls_usd"] == pytest.approx(1000 * e.cost / e.priced, rel=REL)
            assert v["latency_ms"]["p95"] == pytest.approx(percentile(e.latency, 0.95), rel=REL)
            assert v["ttft_ms"]["p50"] == pytest.approx(percentile(e.ttft, 0.5), rel=REL)
            fb = v["feedback"]
            assert fb["n"] == len(e.scores)
            if e.scores:
                interval = stats.score_interval(
                    len(e.scores), statistics.fmean(e.scores), statistics.variance(e.scores)
                )
                assert interval is not None
                assert fb["mean"] == pytest.approx(interval.mean, rel=REL)
                assert (fb["low"], fb["high"]) == pytest.approx((interval.low, interval.high))
            if v["variant"] == reference:
                assert v["reference"] and v["vs_reference"] is None
                continue
            r = want[(name, reference)]
            tests = v["vs_reference"]
            assert tests["variant"] == reference
            if e.scores and len(e.scores) >= 2:
                welch = stats.welch(
                    len(e.scores),
                    statistics.fmean(e.scores),
                    statistics.variance(e.scores),
                    len(r.scores),
                    statistics.fmean(r.scores),
                    statistics.variance(r.scores),
                )
                assert welch is not None
                assert tests["feedback"]["test"] == "welch_t"
                assert tests["feedback"]["p"] == pytest.approx(welch.p, rel=1e-6)
                assert tests["feedback"]["difference"] == pytest.approx(welch.difference)
            else:
                assert tests["feedback"] is None
            dialect = loaded.store.dialect
            u, ties = stats.u_statistic(ranked(e.latency, dialect), ranked(r.latency, dialect))
            mwu = stats.mann_whitney(len(e.latency), len(r.latency), u, ties)
            assert mwu is not None
            assert tests["latency"]["test"] == "mann_whitney_u"
            assert tests["latency"]["p"] == pytest.approx(mwu.p, rel=1e-6)
            assert tests["latency"]["u"] == pytest.approx(u)
            assert tests["latency"]["median_ratio"] == pytest.approx(
                percentile(e.latency, 0.5) / percentile(r.latency, 0.5)
            )


def test_overview_reference_can_be_chosen(loaded: Loaded) -> None:
    body = api_get(loaded, "/dashboard/api/overview", ref="gpt-4:student", **WINDOW_PARAMS)
    route = next(r for r in body["routes"] if r["route"] == "gpt-4")
    assert route["reference"] == "student"
    teacher = next(v for v in route["variants"] if v["variant"] == "teacher")
    # The teacher is slower than the student: P(slower) well above one half, significant.
    assert teacher["vs_reference"]["latency"]["prob_slower"] > 0.8
    assert teacher["vs_reference"]["latency"]["significant"] is True


def test_timeseries_api_shares_and_buckets(loaded: Loaded) -> None:
    body = api_get(loaded, "/dashboard/api/timeseries", **WINDOW_PARAMS)
    assert body["buckets"] == WINDOW.bucket_starts()
    first, last = body["buckets"][0], body["buckets"][-1]
    assert first <= WINDOW.start.timestamp() < first + 30
    assert last < WINDOW.end.timestamp() <= last + 30
    direct = loaded.run(build_series(loaded.store.engine, WINDOW, {}))
    assert sorted(r["route"] for r in body["routes"]) == sorted(
        r["route"] for r in direct["routes"]
    )
    for route in body["routes"]:
        for i in range(len(body["buckets"])):
            shares = [v["share"][i] for v in route["variants"] if v["share"][i] is not None]
            if shares:
                assert sum(shares) == pytest.approx(1.0)


def test_calls_api_pages_and_detail(loaded: Loaded) -> None:
    first = api_get(loaded, "/dashboard/api/calls", limit=5, **WINDOW_PARAMS)
    assert len(first["calls"]) == 5 and first["next"]
    second = api_get(loaded, "/dashboard/api/calls", limit=5, before=first["next"], **WINDOW_PARAMS)
    ids = [c["id"] for c in first["calls"] + second["calls"]]
    want = sorted(
        (r for r in loaded.rows if in_window(r)), key=lambda r: (r["created_at"], r["id"])
    )
    assert ids == [r["id"] for r in reversed(want)][:10]
    detail = api_get(loaded, f"/dashboard/api/calls/{ids[0]}")
    row = next(r for r in loaded.rows if r["id"] == ids[0])
    assert detail["request"] == row["request"] and detail["response"] == row["response"]
    assert isinstance(detail["feedback"], list)


def test_health_api_counts_the_store(loaded: Loaded) -> None:
    body = api_get(loaded, "/dashboard/api/health")
    assert body["capture"] == {"enabled": False}
    assert body["store"]["calls"] == len(loaded.rows)
    assert body["store"]["feedback"] == len(loaded.scores)
    assert body["store"]["dialect"] == loaded.store.dialect
    oldest = min(r["created_at"] for r in loaded.rows)
    assert dt.datetime.fromisoformat(body["store"]["oldest"]) == oldest


def test_overview_of_an_empty_window(loaded: Loaded) -> None:
    quiet = {"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"}
    body = api_get(loaded, "/dashboard/api/overview", **quiet)
    assert [r["calls"] for r in body["routes"]] == [0, 0]
    assert all(v["latency_ms"]["p50"] is None for r in body["routes"] for v in r["variants"])
    direct = loaded.run(
        build_overview(
            loaded.store.engine,
            Window(
                dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                dt.datetime(2020, 1, 2, tzinfo=dt.UTC),
                "custom",
            ),
        )
    )
    assert direct["routes"] == []
