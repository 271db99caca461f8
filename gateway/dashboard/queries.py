"""The dashboard's SQL: aggregations over ``calls`` and ``feedback`` in a time window.

SQLAlchemy Core over ``capture.schema``, one statement per function, the same on SQLite and
PostgreSQL except in three places:

- Percentiles. PostgreSQL has ``percentile_cont``. Elsewhere, ``row_number()`` over each group
  (ordered by the value) keeps only the rows at the two ranks around each percentile, and the
  value is interpolated here exactly as ``percentile_cont`` does (linear between the ranks
  ``floor(p * (n - 1))`` and the next). No group's values are ever all in Python: memory stays
  bounded by the number of groups, and the sorting is the database's (SQLite's sorter spills
  to disk).
- Time buckets: ``date_part('epoch', ...)`` on PostgreSQL, ``strftime('%s', ...)`` on SQLite.
- The Mann-Whitney ranks: 0.1% bins of the latency on PostgreSQL (``rank_value``).

The window's calls are read in two branches, without and with an ``error`` (``window_calls``),
so that PostgreSQL answers from partial covering indexes (``bench/dashboard_queries.py`` has
them, for a migration). Windows over 24 hours are read from the hourly rollup instead when the
database has it (``rollup``).

What counts. Rows without a route (pass-through calls) are left out. A call *failed* when its
status is not 1xx-3xx or it has an ``error`` (a stream cut mid-way is stored with status 200 and
an error). Latency and TTFT percentiles are over the calls that did not fail; a fast 429 is not a
fast answer. Shadow calls count in their variant's latency and cost (that is what shadowing is
for) but not in the traffic share, which is about who answered the users.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    Select,
    Subquery,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from capture.schema import calls, feedback
from gateway.dashboard.window import Window

PERCENTILES = (0.5, 0.95)
CLOCK_SKEW = dt.timedelta(hours=1)
GroupKey = tuple[Any, ...]
Percentiles = dict[float, float]
"""Percentile (0.5) -> value; empty when the group has no value."""

_c = calls.c
SUCCEEDED: ColumnElement[bool] = and_(_c.status >= 100, _c.status < 400, _c.error.is_(None))


def in_window(window: Window) -> ColumnElement[bool]:
    return and_(
        _c.created_at >= window.start,
        _c.created_at < window.end,
        _c.route.is_not(None),
        _c.variant.is_not(None),
    )


def window_calls(window: Window, *columns: ColumnElement[Any]) -> Subquery:
    """The window's calls with ``columns`` and a ``failed`` flag (1 or 0).

    Written as two branches, ``error IS NULL`` and ``error IS NOT NULL``, so that PostgreSQL can
    answer each from a partial covering index (see ``bench/dashboard_queries.py``) without
    touching the table; on SQLite it is the same rows.
    """
    answered = select(
        *columns, case((or_(_c.status >= 400, _c.status < 100), 1), else_=0).label("failed")
    ).where(in_window(window), _c.error.is_(None))
    broken = select(*columns, literal(1).label("failed")).where(
        in_window(window), _c.error.is_not(None)
    )
    return union_all(answered, broken).subquery("window_calls")


async def tuned(connection: AsyncConnection) -> AsyncConnection:
    """On PostgreSQL, room to sort in memory for this transaction (and no JIT, which costs more
    than it saves on these short aggregations)."""
    if _dialect(connection) == "postgresql":
        await connection.execute(text("SET LOCAL work_mem = '64MB'"))
        await connection.execute(text("SET LOCAL jit = off"))
    return connection


def _as_float(value: Any) -> float:
    return float(value) if value is not None else 0.0


def _dialect(connection: AsyncConnection) -> str:
    return connection.dialect.name


# --- per variant totals ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VariantTotals:
    route: str
    variant: str
    calls: int
    shadow_calls: int
    errors: int
    cost_usd: float
    """Sum over the calls that have a cost."""
    priced_calls: int
    """Calls with a cost (usage known and the model priced)."""
    prompt_tokens: int
    completion_tokens: int

    @property
    def live_calls(self) -> int:
        return self.calls - self.shadow_calls


async def variant_totals(connection: AsyncConnection, window: Window) -> list[VariantTotals]:
    w = window_calls(
        window,
        _c.route,
        _c.variant,
        _c.shadow_of,
        _c.cost_usd,
        _c.prompt_tokens,
        _c.completion_tokens,
    ).c
    statement = select(
        w.route,
        w.variant,
        func.count().label("calls"),
        func.count(w.shadow_of).label("shadow_calls"),
        func.sum(w.failed).label("errors"),
        func.sum(w.cost_usd).label("cost_usd"),
        func.count(w.cost_usd).label("priced_calls"),
        func.sum(w.prompt_tokens).label("prompt_tokens"),
        func.sum(w.completion_tokens).label("completion_tokens"),
    ).group_by(w.route, w.variant)
    result = await connection.execute(statement)
    return [
        VariantTotals(
            route=row.route,
            variant=row.variant,
            calls=int(row.calls),
            shadow_calls=int(row.shadow_calls),
            errors=int(row.errors or 0),
            cost_usd=_as_float(row.cost_usd),
            priced_calls=int(row.priced_calls),
            prompt_tokens=int(row.prompt_tokens or 0),
            completion_tokens=int(row.completion_tokens or 0),
        )
        for row in result
    ]


# --- percentiles -----------------------------------------------------------------------------


def interpolate(ranked: Mapping[int, float], n: int, p: float) -> float:
    """``percentile_cont(p)`` from the values at 0-based ranks ``floor(p*(n-1))`` and the next."""
    position = p * (n - 1)
    low = int(position)
    fraction = position - low
    value = ranked[low]
    if fraction > 0:
        value += fraction * (ranked[low + 1] - value)
    return value


async def percentiles(
    connection: AsyncConnection,
    window: Window,
    keys: Sequence[ColumnElement[Any]],
    value: ColumnElement[float],
    ps: Sequence[float] = PERCENTILES,
) -> dict[GroupKey, Percentiles]:
    """Percentiles of ``value`` over the calls that did not fail, grouped by ``keys``."""
    where = and_(in_window(window), SUCCEEDED, value.is_not(None))
    out: dict[GroupKey, Percentiles] = {}
    if _dialect(connection) == "postgresql":
        statement = (
            select(
                *keys,
                *(
                    func.percentile_cont(literal_column(repr(float(p)))).within_group(value)
                    for p in ps
                ),
            )
            .where(where)
            .group_by(*keys)
        )
        for row in await connection.execute(statement):
            out[tuple(row[: len(keys)])] = {
                p: float(v) for p, v in zip(ps, row[len(keys) :], strict=True) if v is not None
            }
        return out

    ranked = (
        select(
            *(key.label(f"k{i}") for i, key in enumerate(keys)),
            value.label("x"),
            func.row_number().over(partition_by=list(keys), order_by=value).label("rn"),
            func.count().over(partition_by=list(keys)).label("n"),
        )
        .where(where)
        .subquery()
    )
    zero_based = ranked.c.rn - 1
    wanted = [
        and_(
            zero_based >= cast(literal_column(repr(float(p))) * (ranked.c.n - 1), Integer),
            zero_based <= cast(literal_column(repr(float(p))) * (ranked.c.n - 1), Integer) + 1,
        )
        for p in ps
    ]
    statement = select(ranked).where(or_(*wanted))
    values: dict[GroupKey, dict[int, float]] = defaultdict(dict)
    sizes: dict[GroupKey, int] = {}
    for row in await connection.execute(statement):
        key = tuple(row[: len(keys)])
        values[key][int(row.rn) - 1] = float(row.x)
        sizes[key] = int(row.n)
    for key, ranks in values.items():
        out[key] = {p: interpolate(ranks, sizes[key], p) for p in ps}
    return out


@dataclass(frozen=True, slots=True)
class VariantLatency:
    total_ms: Percentiles
    ttft_ms: Percentiles


async def variant_latency(
    connection: AsyncConnection, window: Window
) -> dict[tuple[str, str], VariantLatency]:
    """p50/p95 of total latency and time to first token per (route, variant)."""
    keys = (_c.route, _c.variant)
    total = await percentiles(connection, window, keys, _c.total_ms)
    ttft = await percentiles(connection, window, keys, _c.ttft_ms)
    return {
        (str(k[0]), str(k[1])): VariantLatency(total.get(k, {}), ttft.get(k, {}))
        for k in total.keys() | ttft.keys()
    }


# --- feedback --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedbackTotals:
    """Per (route, variant): the calls with feedback and the sums of their scores.

    A call's score is the mean of its feedback entries, so a call scored twice counts once:
    the calls are the independent observations, not the entries.
    """

    route: str
    variant: str
    n: int
    total: float
    total_sq: float

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float | None:
        """Sample variance (n - 1)."""
        if self.n < 2:
            return None
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))


async def feedback_totals(connection: AsyncConnection, window: Window) -> list[FeedbackTotals]:
    in_window_calls = window_calls(window, _c.id, _c.route, _c.variant)
    per_call = (
        select(
            in_window_calls.c.route,
            in_window_calls.c.variant,
            func.avg(feedback.c.score).label("score"),
        )
        .select_from(in_window_calls.join(feedback, feedback.c.request_id == in_window_calls.c.id))
        # Feedback is given after its call started, so older feedback cannot be about a call
        # in the window: redundant (with an hour's margin for clock skew between replicas),
        # but it lets the database skip the older feedback.
        .where(feedback.c.created_at >= window.start - CLOCK_SKEW)
        .group_by(in_window_calls.c.route, in_window_calls.c.variant, in_window_calls.c.id)
        .subquery()
    )
    score = cast(per_call.c.score, Float)
    statement = select(
        per_call.c.route,
        per_call.c.variant,
        func.count().label("n"),
        func.sum(score).label("total"),
        func.sum(score * score).label("total_sq"),
    ).group_by(per_call.c.route, per_call.c.variant)
    return [
        FeedbackTotals(row.route, row.variant, int(row.n), float(row.total), float(row.total_sq))
        for row in await connection.execute(statement)
    ]


# --- ranks for the Mann-Whitney U test -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RankComparison:
    """What the Mann-Whitney U test of ``variant`` against ``reference`` needs (total latency
    of the calls that did not fail)."""

    route: str
    variant: str
    reference: str
    n: int
    n_reference: int
    u: float
    """Pairs (variant call, reference call) where the variant's is slower; ties count 1/2."""
    ties: float
    """Sum of t^3 - t over the groups of tied values in the two samples pooled."""


RANK_BINS_PER_E = 1000
"""On PostgreSQL, latencies are ranked in bins of width 1/1000 in log space (0.1%)."""


def rank_value(dialect: str) -> ColumnElement[float]:
    """What the Mann-Whitney ranks order: the latency, or its 0.1% bin on PostgreSQL (the
    literal keeps GROUP BY and SELECT the same expression)."""
    if dialect == "postgresql":
        scaled = func.ln(func.greatest(_c.total_ms, literal_column("0.001"))).op("*")(
            literal_column(str(RANK_BINS_PER_E))
        )
        return cast(func.floor(scaled), Float)
    return _c.total_ms


async def latency_ranks(
    connection: AsyncConnection, window: Window, references: Mapping[str, str]
) -> list[RankComparison]:
    """U statistics of every variant against its route's reference, in one statement.

    The calls are counted per distinct latency value; a running sum over the values gives,
    for each value, how many reference calls are below or equal to it. On PostgreSQL the values
    are first put in bins 0.1% wide (``rank_value``), which makes the statement one hash
    aggregation over the covering index instead of a sort of every call (3-5x faster at 100k
    calls); latencies within 0.1% of each other then count as ties, a difference no test of
    this size can see. SQLite, which holds far fewer calls, ranks the exact values.
    """
    if not references:
        return []
    value = rank_value(_dialect(connection))
    counts = (
        select(_c.route, _c.variant, value.label("x"), func.count().label("n"))
        .where(in_window(window), SUCCEEDED, _c.route.in_(list(references)))
        .group_by(_c.route, _c.variant, value)
        .cte("counts")
    )
    reference = case(dict(references), value=counts.c.route)
    n = cast(counts.c.n, Float)
    n_ref = case((counts.c.variant == reference, n), else_=0.0)
    running = select(
        counts.c.route,
        counts.c.variant,
        (counts.c.variant == reference).label("is_ref"),
        n.label("n"),
        func.sum(n_ref).over(partition_by=counts.c.route, order_by=counts.c.x).label("ref_le"),
        func.sum(n_ref).over(partition_by=[counts.c.route, counts.c.x]).label("ref_eq"),
    ).cte("running")
    r = running.c
    pooled = r.n + r.ref_eq
    statement = select(
        r.route,
        r.variant,
        func.max(case((r.is_ref, 1), else_=0)).label("is_ref"),
        func.sum(r.n).label("n"),
        func.sum(r.n * (r.ref_le - r.ref_eq * 0.5)).label("u"),
        # For a reference row, its own ties; for another variant, the ties it adds to them.
        func.sum(
            case(
                (r.is_ref, r.n * r.n * r.n - r.n),
                else_=(pooled * pooled * pooled - pooled)
                - (r.ref_eq * r.ref_eq * r.ref_eq - r.ref_eq),
            )
        ).label("ties"),
    ).group_by(r.route, r.variant)
    rows = list(await connection.execute(statement))
    ref_rows = {row.route: row for row in rows if row.is_ref}
    out = []
    for row in rows:
        ref_row = ref_rows.get(row.route)
        if row.is_ref or ref_row is None:
            continue
        out.append(
            RankComparison(
                route=row.route,
                variant=row.variant,
                reference=references[row.route],
                n=int(row.n),
                n_reference=int(ref_row.n),
                u=float(row.u),
                ties=float(row.ties) + float(ref_row.ties),
            )
        )
    return out


# --- series over time ------------------------------------------------------------------------


def bucket_of(dialect: str, step_s: int) -> ColumnElement[int]:
    """The epoch second a call's bucket starts at (an integer, grouping-safe: no parameters)."""
    step: ColumnElement[int] = literal_column(str(int(step_s)))
    if dialect == "postgresql":
        epoch = func.date_part(literal_column("'epoch'"), _c.created_at)
        return cast(func.floor(epoch.op("/")(step)), BigInteger).op("*")(step)
    seconds = cast(func.strftime(literal_column("'%s'"), _c.created_at), Integer)
    return seconds.op("/")(step).op("*")(step)


@dataclass(frozen=True, slots=True)
class BucketCounts:
    bucket: int
    route: str
    variant: str
    calls: int
    shadow_calls: int
    errors: int


async def traffic_series(connection: AsyncConnection, window: Window) -> list[BucketCounts]:
    bucket = bucket_of(_dialect(connection), window.bucket_s).label("bucket")
    w = window_calls(window, bucket, _c.route, _c.variant, _c.shadow_of).c
    statement = select(
        w.bucket,
        w.route,
        w.variant,
        func.count().label("calls"),
        func.count(w.shadow_of).label("shadow_calls"),
        func.sum(w.failed).label("errors"),
    ).group_by(w.bucket, w.route, w.variant)
    return [
        BucketCounts(
            int(row.bucket),
            row.route,
            row.variant,
            int(row.calls),
            int(row.shadow_calls),
            int(row.errors or 0),
        )
        for row in await connection.execute(statement)
    ]


async def latency_series(
    connection: AsyncConnection, window: Window
) -> dict[tuple[int, str, str], Percentiles]:
    """p50/p95 of total latency per (bucket, route, variant)."""
    bucket = bucket_of(_dialect(connection), window.bucket_s)
    found = await percentiles(connection, window, (bucket, _c.route, _c.variant), _c.total_ms)
    return {(int(k[0]), str(k[1]), str(k[2])): v for k, v in found.items()}


# --- the last calls --------------------------------------------------------------------------

CALL_COLUMNS = (
    _c.id,
    _c.created_at,
    _c.endpoint,
    _c.route,
    _c.variant,
    _c.upstream_model,
    _c.status,
    _c.error,
    _c.stream,
    _c.total_ms,
    _c.ttft_ms,
    _c.prompt_tokens,
    _c.completion_tokens,
    _c.cost_usd,
    _c.shadow_of,
)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page of calls ends: the last call's time and id (newest first)."""

    created_at: dt.datetime
    id: str


async def recent_calls(
    connection: AsyncConnection,
    window: Window,
    *,
    limit: int,
    before: Cursor | None = None,
    route: str | None = None,
    variant: str | None = None,
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """A page of calls, newest first, each with its mean feedback; and the next page's cursor."""
    score = (
        select(func.avg(feedback.c.score))
        .where(feedback.c.request_id == _c.id)
        .scalar_subquery()
        .label("feedback")
    )
    conditions: list[ColumnElement[bool]] = [in_window(window)]
    if route is not None:
        conditions.append(_c.route == route)
    if variant is not None:
        conditions.append(_c.variant == variant)
    if before is not None:
        conditions.append(
            or_(
                _c.created_at < before.created_at,
                and_(_c.created_at == before.created_at, _c.id < before.id),
            )
        )
    statement: Select[Any] = (
        select(*CALL_COLUMNS, score)
        .where(*conditions)
        .order_by(_c.created_at.desc(), _c.id.desc())
        .limit(limit + 1)
    )
    rows = [dict(row) for row in (await connection.execute(statement)).mappings()]
    following = None
    if len(rows) > limit:
        rows = rows[:limit]
        following = Cursor(rows[-1]["created_at"], rows[-1]["id"])
    return rows, following


# --- the store -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreCounts:
    calls: int
    feedback: int
    oldest: dt.datetime | None
    newest: dt.datetime | None


async def store_counts(connection: AsyncConnection) -> StoreCounts:
    """Rows in the store (all of it, not the window)."""
    row = (
        await connection.execute(
            select(
                select(func.count()).select_from(calls).scalar_subquery(),
                select(func.count()).select_from(feedback).scalar_subquery(),
                select(func.min(_c.created_at)).scalar_subquery(),
                select(func.max(_c.created_at)).scalar_subquery(),
            )
        )
    ).one()
    oldest, newest = row[2], row[3]
    created = calls.c.created_at.type
    # min()/max() of a scalar subquery lose the column's type on SQLite: convert here.
    processor = created.result_processor(connection.dialect, None)
    if processor is not None and isinstance(oldest, str):
        oldest, newest = processor(oldest), processor(newest)
    return StoreCounts(int(row[0]), int(row[1]), oldest, newest)
