"""Interleaved rounds: the order targets run in, and one target's wrk runs by round.

The features and dialects benchmarks run every target once per round, the order changing from
round to round, so that a drift in the machine's load reaches all targets alike; a figure is
then the median over the rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.wrk import WrkResult


def round_order(names: list[str], round_index: int) -> list[str]:
    """Round r: the targets rotated by r, reversed on odd rounds (so neighbours change too)."""
    if not names:
        return []
    shift = round_index % len(names)
    order = names[shift:] + names[:shift]
    return order[::-1] if round_index % 2 else order


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values present (None where none is)."""
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


@dataclass
class Series:
    """One target's measured wrk runs, by round (None: that round's run failed)."""

    name: str
    runs: list[WrkResult | None] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    """CPU seconds the process under test (the gateway; the simulator for direct) used in each
    measured run."""
    errors: list[str] = field(default_factory=list)

    def measured(self) -> list[WrkResult]:
        return [run for run in self.runs if run is not None]

    def latency(self, percentile: str) -> float | None:
        values = [run.latency_ms[percentile] for run in self.measured()]
        return statistics.median(values) if values else None

    @property
    def rps(self) -> float | None:
        runs = self.measured()
        seconds = sum(run.duration_s for run in runs)
        return sum(run.requests for run in runs) / seconds if seconds > 0 else None

    @property
    def requests(self) -> int:
        return sum(run.requests for run in self.measured())

    @property
    def error_count(self) -> int:
        return sum(run.error_count for run in self.measured())

    @property
    def cpu_us_per_call(self) -> float | None:
        requests = self.requests
        if not requests or len(self.cpu_s) != len(self.measured()):
            return None
        return sum(self.cpu_s) / requests * 1e6
