"""Percentiles of the client's samples, the same ones wrk reports."""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, mean and the percentiles of ``values`` (milliseconds, rounded to the microsecond)."""
    if not values:
        return {"n": 0}
    out: dict[str, float] = {"n": len(values), "mean": round(sum(values) / len(values), 3)}
    for name, q in PERCENTILES:
        out[name] = round(percentile(values, q), 3)
    return out
