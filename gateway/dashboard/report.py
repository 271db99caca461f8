"""From query results to the JSON the page draws: the A/B table per route and the chart series.

The reference variant of a route (what the others are compared against) is, in this order: the
one asked for (``references``), the variant named ``teacher`` if it has calls in the window,
else the variant with the most live calls (shadow calls do not count).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.dashboard import queries, rollup, stats
from gateway.dashboard.queries import (
    BucketCounts,
    FeedbackTotals,
    RankComparison,
    VariantLatency,
    VariantTotals,
)
from gateway.dashboard.window import Window

Configured = Mapping[str, Mapping[str, int]]
"""Route -> variant -> weight, from the running configuration (order kept)."""
TEACHER = "teacher"


def choose_references(
    totals: Sequence[VariantTotals], asked: Mapping[str, str], configured: Configured
) -> dict[str, str]:
    by_route: dict[str, list[VariantTotals]] = defaultdict(list)
    for row in totals:
        by_route[row.route].append(row)
    chosen: dict[str, str] = {}
    for route, rows in by_route.items():
        names = {row.variant for row in rows}
        if asked.get(route) in names:
            chosen[route] = asked[route]
        elif TEACHER in names:
            chosen[route] = TEACHER
        else:
            order = list(configured.get(route, {}))
            best = max(
                rows,
                key=lambda r: (
                    r.live_calls,
                    r.calls,
                    -order.index(r.variant) if r.variant in order else -len(order),
                    r.variant,
                ),
            )
            chosen[route] = best.variant
    return chosen


def _percentiles(values: Mapping[float, float]) -> dict[str, float | None]:
    return {"p50": values.get(0.5), "p95": values.get(0.95)}


def _feedback(row: FeedbackTotals | None) -> dict[str, Any]:
    if row is None:
        return {"n": 0, "mean": None, "low": None, "high": None}
    interval = stats.score_interval(row.n, row.mean or 0.0, row.variance or 0.0)
    return {
        "n": row.n,
        "mean": row.mean,
        "low": interval.low if interval else None,
        "high": interval.high if interval else None,
    }


def _feedback_test(
    row: FeedbackTotals | None, reference: FeedbackTotals | None
) -> dict[str, Any] | None:
    if row is None or reference is None:
        return None
    result = stats.welch(
        row.n,
        row.mean or 0.0,
        row.variance or 0.0,
        reference.n,
        reference.mean or 0.0,
        reference.variance or 0.0,
    )
    if result is None:
        return None
    return {
        "test": "welch_t",
        "difference": result.difference,
        "low": result.low,
        "high": result.high,
        "t": result.t,
        "df": result.df,
        "p": result.p,
        "significant": result.significant,
    }


def _latency_test(
    ranks: RankComparison | None, median: float | None, reference_median: float | None
) -> dict[str, Any] | None:
    if ranks is None:
        return None
    result = stats.mann_whitney(ranks.n, ranks.n_reference, ranks.u, ranks.ties)
    if result is None:
        return None
    ratio = median / reference_median if median is not None and reference_median else None
    return {
        "test": "mann_whitney_u",
        "u": result.u,
        "z": result.z,
        "p": result.p,
        "prob_slower": result.prob_greater,
        "median_ratio": ratio,
        "significant": result.significant,
    }


def _route_order(routes: set[str], configured: Configured, calls: Mapping[str, int]) -> list[str]:
    known = [r for r in configured if r in routes]
    others = sorted(routes - set(known), key=lambda r: (-calls.get(r, 0), r))
    return known + others


def _source(parts: list[rollup.Part] | None) -> dict[str, str]:
    if parts is None:
        return {"table": "calls", "percentiles": "exact"}
    return {"table": rollup.TABLE, "percentiles": "from hourly histograms: 2% bins, within ~1%"}


async def _rollup_parts(
    engine: AsyncEngine, window: Window, *, series: bool = False
) -> list[rollup.Part] | None:
    """The window from the hourly rollup, when it exists and the window is long; else None."""
    if not rollup.wanted(window, series=series):
        return None
    async with engine.begin() as connection:  # the fold writes: committed on the way out
        await queries.tuned(connection)
        if not await rollup.available(connection):
            return None
        return await rollup.load(connection, window)


async def _on(engine: AsyncEngine, query: Any, *args: Any) -> Any:
    async with engine.connect() as connection:
        return await query(await queries.tuned(connection), *args)


async def build_overview(
    engine: AsyncEngine,
    window: Window,
    references: Mapping[str, str] | None = None,
    configured: Configured | None = None,
) -> dict[str, Any]:
    """Per route, its variants side by side, each compared with the route's reference."""
    started = time.perf_counter()
    configured = configured or {}
    parts = await _rollup_parts(engine, window)
    latency: dict[tuple[str, str], VariantLatency]
    feedback: list[FeedbackTotals]
    ranks: list[RankComparison]
    if parts is not None:
        totals = rollup.totals(parts)
        chosen = choose_references(totals, references or {}, configured)
        latency = rollup.latency(parts)
        feedback = rollup.feedback(parts)
        ranks = rollup.ranks(parts, chosen)
    else:
        totals = await _on(engine, queries.variant_totals, window)
        chosen = choose_references(totals, references or {}, configured)
        latency, feedback, ranks = await asyncio.gather(
            _on(engine, queries.variant_latency, window),
            _on(engine, queries.feedback_totals, window),
            _on(engine, queries.latency_ranks, window, chosen),
        )
    by_key = {(t.route, t.variant): t for t in totals}
    feedback_by = {(f.route, f.variant): f for f in feedback}
    ranks_by = {(r.route, r.variant): r for r in ranks}
    live_by_route: dict[str, int] = defaultdict(int)
    calls_by_route: dict[str, int] = defaultdict(int)
    for t in totals:
        live_by_route[t.route] += t.live_calls
        calls_by_route[t.route] += t.calls

    routes_json = []
    for route in _route_order(
        {t.route for t in totals} | set(configured), configured, calls_by_route
    ):
        weights = configured.get(route, {})
        seen = [v for (r, v) in by_key if r == route]
        names = list(weights) + sorted(v for v in seen if v not in weights)
        reference = chosen.get(route)
        ref_latency = latency.get((route, reference)) if reference else None
        ref_median = ref_latency.total_ms.get(0.5) if ref_latency else None
        variants = []
        for name in names:
            row = by_key.get((route, name))
            lat = latency.get((route, name))
            fb = feedback_by.get((route, name))
            entry: dict[str, Any] = {
                "variant": name,
                "reference": name == reference,
                "weight": weights.get(name),
                "calls": row.calls if row else 0,
                "live_calls": row.live_calls if row else 0,
                "shadow_calls": row.shadow_calls if row else 0,
                "share": (row.live_calls / live_by_route[route])
                if row and live_by_route[route]
                else None,
                "errors": row.errors if row else 0,
                "error_rate": row.errors / row.calls if row and row.calls else None,
                "latency_ms": _percentiles(lat.total_ms if lat else {}),
                "ttft_ms": _percentiles(lat.ttft_ms if lat else {}),
                "cost_usd": row.cost_usd if row else 0.0,
                "priced_calls": row.priced_calls if row else 0,
                "cost_per_1k_calls_usd": 1000 * row.cost_usd / row.priced_calls
                if row and row.priced_calls
                else None,
                "tokens": {
                    "prompt": row.prompt_tokens if row else 0,
                    "completion": row.completion_tokens if row else 0,
                },
                "feedback": _feedback(fb),
                "vs_reference": None,
            }
            if reference is not None and name != reference and row is not None:
                median = lat.total_ms.get(0.5) if lat else None
                entry["vs_reference"] = {
                    "variant": reference,
                    "feedback": _feedback_test(fb, feedback_by.get((route, reference))),
                    "latency": _latency_test(ranks_by.get((route, name)), median, ref_median),
                }
            variants.append(entry)
        routes_json.append(
            {
                "route": route,
                "reference": reference,
                "calls": calls_by_route.get(route, 0),
                "variants": variants,
            }
        )
    return {
        "window": window.as_json(),
        "source": _source(parts),
        "routes": routes_json,
        "tests": {
            "alpha": stats.ALPHA,
            "feedback": "Welch's t-test (two-sided) on per-call mean scores",
            "latency": "Mann-Whitney U (two-sided, normal approximation, tie-corrected)"
            " on total latency of calls that did not fail"
            + (" (latencies in the same 2% bin tie)" if parts is not None else ""),
            "min_latency_sample": stats.MIN_RANK_SAMPLE,
        },
        "query_ms": round((time.perf_counter() - started) * 1000, 1),
    }


async def build_series(
    engine: AsyncEngine,
    window: Window,
    configured: Configured | None = None,
) -> dict[str, Any]:
    """Per route and variant, over the window's buckets: calls, traffic share, p50/p95."""
    started = time.perf_counter()
    configured = configured or {}
    parts = await _rollup_parts(engine, window, series=True)
    traffic: list[BucketCounts]
    latency: dict[tuple[int, str, str], queries.Percentiles]
    if parts is not None:
        traffic, latency = rollup.series(parts, window.bucket_s)
    else:
        traffic, latency = await asyncio.gather(
            _on(engine, queries.traffic_series, window),
            _on(engine, queries.latency_series, window),
        )
    buckets = window.bucket_starts()
    index = {b: i for i, b in enumerate(buckets)}
    size = len(buckets)
    live: dict[str, list[int]] = defaultdict(lambda: [0] * size)
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * size)
    shadows: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * size)
    for row in traffic:
        i = index.get(row.bucket)
        if i is None:
            continue
        counts[(row.route, row.variant)][i] += row.calls
        shadows[(row.route, row.variant)][i] += row.shadow_calls
        live[row.route][i] += row.calls - row.shadow_calls
    routes = {route for route, _ in counts}
    calls_by_route = {r: sum(live[r]) for r in routes}
    out_routes = []
    for route in _route_order(routes, configured, calls_by_route):
        weights = configured.get(route, {})
        seen = [v for (r, v) in counts if r == route]
        names = [v for v in weights if v in seen] + sorted(v for v in seen if v not in weights)
        variants = []
        for name in names:
            p50: list[float | None] = [None] * size
            p95: list[float | None] = [None] * size
            for b, i in index.items():
                found = latency.get((b, route, name))
                if found:
                    p50[i], p95[i] = found.get(0.5), found.get(0.95)
            calls = counts[(route, name)]
            route_live = live[route]
            share = [
                (c - s) / total if total else None
                for c, s, total in zip(calls, shadows[(route, name)], route_live, strict=True)
            ]
            variants.append(
                {"variant": name, "calls": calls, "share": share, "p50_ms": p50, "p95_ms": p95}
            )
        out_routes.append({"route": route, "variants": variants})
    return {
        "window": window.as_json(),
        "source": _source(parts),
        "buckets": buckets,
        "routes": out_routes,
        "query_ms": round((time.perf_counter() - started) * 1000, 1),
    }
