"""Long windows from the hourly rollup (``dashboard_hourly``, PostgreSQL).

The rollup's tables and triggers: ``capture.dashboard_rollup`` (migration 0003).

A week holds too many calls to aggregate at every page view: on a 2-core machine a bare count
over a million calls takes 100-250 ms, exact percentiles over them more than a second. When the
rollup exists, the table of a window over 24 hours (and its charts, once their buckets are whole
hours: windows over 90 hours) come from the rollup for the whole hours of the window and from
``calls`` for the partial hours at its two ends, merged here. Counts, errors, cost, tokens and
feedback are then exact; latency and TTFT percentiles come from histograms with bins 2% wide
(within about 1% of the exact value, 2% in a bucket of a few calls), and the Mann-Whitney test
ranks those bins (latencies in one bin tie).

The results have the same types as ``queries``, so ``report`` builds the same JSON from either.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import operator
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from capture.dashboard_rollup import (
    BINS_PER_E,
    ROLLUP_COLUMNS,
    feedback_select,
    picked_from_calls,
    rollup_ctes,
)
from gateway.dashboard.queries import (
    PERCENTILES,
    BucketCounts,
    FeedbackTotals,
    Percentiles,
    RankComparison,
    VariantLatency,
    VariantTotals,
)
from gateway.dashboard.window import Window

HOUR = dt.timedelta(hours=1)
TABLE = "dashboard_hourly"
LONG_WINDOW = dt.timedelta(hours=24)
"""Tables of windows longer than this are read from the rollup (when it exists); shorter ones
from ``calls``, exactly."""
_SELECT_HOURS = (
    f"SELECT {ROLLUP_COLUMNS}, feedback_calls, feedback_sum, feedback_sumsq FROM {TABLE}"
    " WHERE hour >= :lo AND hour < :hi"
)
_EDGE = "created_at >= :lo AND created_at < :hi"
_RECENT = "f.created_at >= CAST(:lo AS timestamptz) - interval '1 hour'"
_SELECT_EDGE = (
    f"WITH {rollup_ctes(picked_from_calls(_EDGE))}"
    " SELECT r.*, f.feedback_calls, f.feedback_sum, f.feedback_sumsq FROM rolled r"
    # Feedback comes after its call: older feedback (an hour's margin for clock skew) is not
    # about the calls of this edge, and need not be read.
    f" LEFT JOIN ({feedback_select(_EDGE.replace('created_at', 'c.created_at'), _RECENT)}) f"
    " USING (hour, route, variant)"
)


def wanted(window: Window, *, series: bool = False) -> bool:
    """Whether to read this window from the rollup: the table of a window over 24 hours, the
    charts when their buckets are whole hours (windows over 90 hours, e.g. 7 days)."""
    if series:
        return window.bucket_s % 3600 == 0
    return window.end - window.start > LONG_WINDOW


async def available(connection: AsyncConnection) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    found = await connection.scalar(text(f"SELECT to_regclass('{TABLE}') IS NOT NULL"))
    return bool(found)


async def fold(connection: AsyncConnection) -> int:
    """Move the pending calls into the hourly rows; how many (hour, route, variant) rows it
    touched. Commit the connection's transaction to release their locks."""
    return int(await connection.scalar(text("SELECT dashboard_hourly_fold()")) or 0)


async def fold_pending(engine: AsyncEngine) -> int:
    """Fold what is pending, if this database has the rollup (else 0): for a periodic task, so
    the pending table stays small even when nobody opens the dashboard for weeks."""
    if engine.dialect.name != "postgresql":
        return 0
    async with engine.begin() as connection:
        if not await available(connection):
            return 0
        return await fold(connection)


class Bins:
    """A latency histogram: counts of consecutive bins from ``low`` (bin = floor(ln(ms) *
    BINS_PER_E)), the layout of the rollup's ``int[]`` columns without their first element."""

    __slots__ = ("counts", "low")

    def __init__(self, low: int = 0, counts: list[int] | None = None) -> None:
        self.low = low
        self.counts = counts or []

    @classmethod
    def from_array(cls, array: Sequence[int] | None) -> Bins:
        if not array:
            return cls()
        return cls(int(array[0]), list(array[1:]))

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> Bins:
        """The histogram of some latencies (tests, and the reference for the SQL)."""
        found = Counter(bin_of(v) for v in values_ms)
        if not found:
            return cls()
        low = min(found)
        return cls(low, [found.get(b, 0) for b in range(low, max(found) + 1)])

    def __bool__(self) -> bool:
        return bool(self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def add(self, other: Bins) -> None:
        if not other.counts:
            return
        if not self.counts:
            self.low, self.counts = other.low, list(other.counts)
            return
        low = min(self.low, other.low)
        high = max(self.low + len(self.counts), other.low + len(other.counts))
        if low < self.low or high > self.low + len(self.counts):
            grown = [0] * (high - low)
            grown[self.low - low : self.low - low + len(self.counts)] = self.counts
            self.low, self.counts = low, grown
        start = other.low - self.low
        end = start + len(other.counts)
        self.counts[start:end] = map(operator.add, self.counts[start:end], other.counts)

    def items(self) -> Iterator[tuple[int, int]]:
        for offset, count in enumerate(self.counts):
            if count:
                yield self.low + offset, count


@dataclass(slots=True)
class Part:
    """One (hour, route, variant): a rollup row, or the same computed from calls (the edges)."""

    hour: dt.datetime
    route: str
    variant: str
    calls: int = 0
    shadow_calls: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    priced_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: Bins = field(default_factory=Bins)
    ttft: Bins = field(default_factory=Bins)
    feedback_calls: int = 0
    feedback_sum: float = 0.0
    feedback_sumsq: float = 0.0

    def add(self, other: Part) -> None:
        self.calls += other.calls
        self.shadow_calls += other.shadow_calls
        self.errors += other.errors
        self.cost_usd += other.cost_usd
        self.priced_calls += other.priced_calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latency.add(other.latency)
        self.ttft.add(other.ttft)
        self.feedback_calls += other.feedback_calls
        self.feedback_sum += other.feedback_sum
        self.feedback_sumsq += other.feedback_sumsq


def _part(row: Any) -> Part:
    return Part(
        hour=row.hour,
        route=row.route,
        variant=row.variant,
        calls=int(row.calls),
        shadow_calls=int(row.shadow_calls),
        errors=int(row.errors),
        cost_usd=float(row.cost_usd),
        priced_calls=int(row.priced_calls),
        prompt_tokens=int(row.prompt_tokens),
        completion_tokens=int(row.completion_tokens),
        latency=Bins.from_array(row.latency),
        ttft=Bins.from_array(row.ttft),
        feedback_calls=int(row.feedback_calls or 0),
        feedback_sum=float(row.feedback_sum or 0.0),
        feedback_sumsq=float(row.feedback_sumsq or 0.0),
    )


def _floor_hour(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(when: dt.datetime) -> dt.datetime:
    floor = _floor_hour(when)
    return floor if floor == when else floor + HOUR


async def load(connection: AsyncConnection, window: Window) -> list[Part]:
    """The window as (hour, route, variant) parts: the pending calls folded in first, then the
    whole hours from the rollup and the partial hours at both ends from calls."""
    await fold(connection)
    first, last = _ceil_hour(window.start), _floor_hour(window.end)
    if first >= last:
        edges = [(window.start, window.end)]
    else:
        edges = [(window.start, first), (last, window.end)]
    parts: list[Part] = []
    if first < last:
        rows = await connection.execute(text(_SELECT_HOURS), {"lo": first, "hi": last})
        parts.extend(_part(row) for row in rows)
    for lo, hi in edges:
        if lo < hi:
            rows = await connection.execute(text(_SELECT_EDGE), {"lo": lo, "hi": hi})
            parts.extend(_part(row) for row in rows)
    return parts


def _by_variant(parts: Sequence[Part]) -> dict[tuple[str, str], Part]:
    merged: dict[tuple[str, str], Part] = {}
    for part in parts:
        key = (part.route, part.variant)
        if key not in merged:
            merged[key] = Part(part.hour, part.route, part.variant)
        merged[key].add(part)
    return merged


# --- histograms ----------------------------------------------------------------------------


def bin_of(value_ms: float) -> int:
    """The histogram bin of a latency, as the SQL computes it."""
    return math.floor(math.log(max(value_ms, 0.001)) * BINS_PER_E)


def percentile(bins: Bins, p: float) -> float | None:
    """The p-quantile of a histogram, as ``percentile_cont`` would give it from the values:
    linear between the ranks around ``p * (n - 1)``, each rank's value placed inside its bin by
    its order there (in log space)."""
    if not bins:
        return None
    cumulative = list(itertools.accumulate(bins.counts))
    n = cumulative[-1]
    if n == 0:
        return None

    def at_rank(rank: int) -> float:
        offset = bisect.bisect_right(cumulative, rank)
        count = bins.counts[offset]
        below = cumulative[offset] - count
        return math.exp((bins.low + offset + (rank - below + 0.5) / count) / BINS_PER_E)

    position = p * (n - 1)
    low = int(position)
    value = at_rank(low)
    if position > low:
        value += (position - low) * (at_rank(low + 1) - value)
    return value


def _percentiles(bins: Bins) -> Percentiles:
    out: Percentiles = {}
    for p in PERCENTILES:
        value = percentile(bins, p)
        if value is not None:
            out[p] = value
    return out


def u_from_bins(sample: Bins, reference: Bins) -> tuple[float, float]:
    """Mann-Whitney's U of ``sample`` against ``reference`` and the tie term, bins as values."""
    if not sample or not reference:
        return 0.0, 0.0
    low = min(sample.low, reference.low)
    high = max(sample.low + len(sample.counts), reference.low + len(reference.counts))
    u = 0.0
    ties = 0.0
    reference_below = 0
    for b in range(low, high):
        mine = sample.counts[b - sample.low] if 0 <= b - sample.low < len(sample.counts) else 0
        i = b - reference.low
        theirs = reference.counts[i] if 0 <= i < len(reference.counts) else 0
        if mine:
            u += mine * (reference_below + 0.5 * theirs)
        pooled = mine + theirs
        if pooled > 1:
            ties += float(pooled**3 - pooled)
        reference_below += theirs
    return u, ties


# --- what report needs ------------------------------------------------------------------------


def totals(parts: Sequence[Part]) -> list[VariantTotals]:
    return [
        VariantTotals(
            route=p.route,
            variant=p.variant,
            calls=p.calls,
            shadow_calls=p.shadow_calls,
            errors=p.errors,
            cost_usd=p.cost_usd,
            priced_calls=p.priced_calls,
            prompt_tokens=p.prompt_tokens,
            completion_tokens=p.completion_tokens,
        )
        for p in _by_variant(parts).values()
        if p.calls
    ]


def latency(parts: Sequence[Part]) -> dict[tuple[str, str], VariantLatency]:
    return {
        key: VariantLatency(_percentiles(p.latency), _percentiles(p.ttft))
        for key, p in _by_variant(parts).items()
        if p.latency or p.ttft
    }


def feedback(parts: Sequence[Part]) -> list[FeedbackTotals]:
    return [
        FeedbackTotals(p.route, p.variant, p.feedback_calls, p.feedback_sum, p.feedback_sumsq)
        for p in _by_variant(parts).values()
        if p.feedback_calls
    ]


def ranks(parts: Sequence[Part], references: Mapping[str, str]) -> list[RankComparison]:
    merged = _by_variant(parts)
    out = []
    for (route, variant), part in merged.items():
        reference = references.get(route)
        ref = merged.get((route, reference)) if reference else None
        if ref is None or reference is None or variant == reference or not part.latency:
            continue
        if not ref.latency:
            continue
        u, ties = u_from_bins(part.latency, ref.latency)
        out.append(
            RankComparison(
                route=route,
                variant=variant,
                reference=reference,
                n=part.latency.total,
                n_reference=ref.latency.total,
                u=u,
                ties=ties,
            )
        )
    return out


def series(
    parts: Sequence[Part], step_s: int
) -> tuple[list[BucketCounts], dict[tuple[int, str, str], Percentiles]]:
    """Per (bucket, route, variant): the counts, and p50/p95 of the merged hourly histograms."""
    buckets: dict[tuple[int, str, str], Part] = {}
    for part in parts:
        bucket = int(part.hour.timestamp()) // step_s * step_s
        key = (bucket, part.route, part.variant)
        if key not in buckets:
            buckets[key] = Part(part.hour, part.route, part.variant)
        buckets[key].add(part)
    traffic = [
        BucketCounts(b, route, variant, p.calls, p.shadow_calls, p.errors)
        for (b, route, variant), p in buckets.items()
    ]
    percentiles = {key: _percentiles(p.latency) for key, p in buckets.items() if p.latency}
    return traffic, percentiles
