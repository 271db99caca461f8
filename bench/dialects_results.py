"""What a provider dialect costs a call: the configurations of bench/dialects.py and their figures.

Pure: the configurations and their references, the results of a run, and their aggregation
over the rounds (wrk's runs) and over the one-at-a-time client's calls. Nothing here starts a
process; bench/dialects_report.py judges the figures and writes the report.

Aggregation (as bench/features_report.py does it). Every target (the simulator direct in each
dialect, and each gateway configuration) runs once per round, plain and streamed, the rounds
interleaved. A configuration's overhead in a round is its wrk percentile minus the direct run's
at the same percentile, the direct run being the simulator in the configuration's *upstream*
dialect with the same kind of call (plain or streamed): what the gateway adds to the call it
makes. A figure is the median over the rounds; "vs" is the median over the rounds of (this
overhead - the reference configuration's overhead in the same round), and the ratio is the two
overheads' medians divided. The one-at-a-time client's figures are percentiles over all its
calls (configurations alternate call by call, so drift reaches all alike): a streamed call's
time to its first body chunk (TTFB), a plain call's whole time and the gateway's own
``x-gateway-overhead-ms``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Literal

from bench.rounds import Series, median

Api = Literal["openai", "anthropic"]
Process = Literal["baseline", "current", "dialects"]
MODES = ("plain", "stream")
PERCENTILES = ("p50", "p90", "p99")
DIRECT = {"openai": "direct-openai", "anthropic": "direct-anthropic"}
"""The simulator called directly, per dialect: each configuration's overhead is over its
upstream dialect's."""
API_TEXT = {"openai": "OpenAI", "anthropic": "Anthropic"}
Kind = Literal["ttfb", "stream", "plain"]
"""The one-at-a-time client's times: a streamed call's to its first body chunk and to its end,
a plain call's to its end."""
KINDS: tuple[Kind, ...] = ("ttfb", "stream", "plain")


@dataclass(frozen=True)
class Limit:
    """A target: the configuration's figure minus its reference's at most ``ms``."""

    text: str
    ms: float
    modes: tuple[str, ...]
    """Which kinds of wrk call it applies to (``plain``, ``stream``)."""
    ttfb: bool = False
    """It also applies to the streamed calls' time to first byte (the asyncio client)."""


@dataclass(frozen=True)
class DialectSpec:
    """One configuration under test: a gateway process and the dialects of one call."""

    id: str
    """``a`` .. ``f``, as in the report."""
    name: str
    """Short name: the JSON's key."""
    label: str
    process: Process
    """Which gateway answers: the one at the baseline commit, this one with the baseline's
    config (one OpenAI provider, one route), or this one with providers in both dialects."""
    inbound: Api
    upstream: Api
    reference: str | None = None
    """The configuration this one is compared with (its "same-dialect" call)."""
    limit: Limit | None = None

    @property
    def arrow(self) -> str:
        return f"{API_TEXT[self.inbound]} -> {API_TEXT[self.upstream]}"


SPECS: tuple[DialectSpec, ...] = (
    DialectSpec(
        "a",
        "before",
        "OpenAI -> OpenAI, the gateway before dialects (`--dialects-baseline`)",
        "baseline",
        "openai",
        "openai",
    ),
    DialectSpec(
        "b",
        "now",
        "OpenAI -> OpenAI, this gateway, the same config as (a)",
        "current",
        "openai",
        "openai",
        reference="before",
        limit=Limit(
            "a same-dialect call costs what it costs today: overhead p50 ≤ (a) + 0.05 ms",
            0.05,
            ("plain", "stream"),
        ),
    ),
    DialectSpec(
        "c",
        "openai-openai",
        "OpenAI -> OpenAI (same dialect), a gateway with providers in both dialects",
        "dialects",
        "openai",
        "openai",
    ),
    DialectSpec(
        "d",
        "openai-anthropic",
        "OpenAI -> Anthropic (translated), the same gateway as (c)",
        "dialects",
        "openai",
        "anthropic",
        reference="openai-openai",
        limit=Limit(
            "a translated call (OpenAI in, Anthropic out): overhead p50 ≤ (c) + 0.15 ms",
            0.15,
            ("stream",),
            ttfb=True,
        ),
    ),
    DialectSpec(
        "e",
        "anthropic-anthropic",
        "Anthropic -> Anthropic (passed through), the same gateway as (c)",
        "dialects",
        "anthropic",
        "anthropic",
        reference="openai-openai",
    ),
    DialectSpec(
        "f",
        "anthropic-openai",
        "Anthropic -> OpenAI (translated), the same gateway as (c)",
        "dialects",
        "anthropic",
        "openai",
        reference="anthropic-anthropic",
    ),
)
BEFORE = SPECS[0]


def spec(name: str) -> DialectSpec:
    return next(s for s in SPECS if s.name == name)


def series_key(name: str, mode: str) -> str:
    """``openai-anthropic/stream``, ``direct-openai/plain``: a wrk series' key."""
    return f"{name}/{mode}"


def target_names() -> list[str]:
    """Every target's name: the two directs, then the configurations."""
    return [DIRECT["openai"], DIRECT["anthropic"], *(s.name for s in SPECS)]


@dataclass
class ClientFigures:
    """One target's calls made one at a time by the asyncio client."""

    ttfb_ms: dict[str, float] = field(default_factory=dict)
    """Summary of streamed calls' time from sending to the first body chunk."""
    stream_ms: dict[str, float] = field(default_factory=dict)
    """Summary of the same calls' time to the end of the stream."""
    plain_ms: dict[str, float] = field(default_factory=dict)
    """Summary of plain calls' whole time."""
    header_ms: dict[str, float] = field(default_factory=dict)
    """Summary of the gateway's ``x-gateway-overhead-ms`` on the plain calls."""
    errors: int = 0

    def summary(self, kind: Kind) -> dict[str, float]:
        return {"ttfb": self.ttfb_ms, "stream": self.stream_ms, "plain": self.plain_ms}[kind]


@dataclass
class Baseline:
    """The gateway at an earlier commit, as given by ``--dialects-baseline``."""

    path: str
    commit: str
    python: str
    """The interpreter it ran on (the checkout's .venv, else this one with PYTHONPATH)."""


@dataclass
class DialectResults:
    rounds: int
    seconds: int
    """Measured seconds per wrk run."""
    warmup_s: int
    client_calls: int
    """Most calls per target of the one-at-a-time client, streamed (as many again plain)."""
    commit: str = ""
    """This checkout's commit (``+`` when its work tree has changes)."""
    baseline: Baseline | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    """Configurations not measured, with why (no ``--dialects-baseline``, did not start)."""
    series: dict[str, Series] = field(default_factory=dict)
    """wrk runs by :func:`series_key`."""
    client: dict[str, ClientFigures] = field(default_factory=dict)
    """The one-at-a-time figures by target name."""
    load: dict[str, float] = field(default_factory=dict)

    def measured(self, name: str) -> bool:
        return name not in self.skipped and any(
            self.series.get(series_key(name, mode), Series(name)).measured() for mode in MODES
        )

    def overheads(self, config: DialectSpec, mode: str, percentile: str) -> list[float | None]:
        """Per round, the configuration minus its upstream dialect's direct, at ``percentile``."""
        mine = self.series.get(series_key(config.name, mode))
        direct = self.series.get(series_key(DIRECT[config.upstream], mode))
        if mine is None or direct is None:
            return []
        out: list[float | None] = []
        for index, run in enumerate(mine.runs):
            reference = direct.runs[index] if index < len(direct.runs) else None
            if run is None or reference is None:
                out.append(None)
            else:
                out.append(run.latency_ms[percentile] - reference.latency_ms[percentile])
        return out

    def overhead(self, config: DialectSpec, mode: str, percentile: str) -> float | None:
        return median(self.overheads(config, mode, percentile))

    def versus(self, config: DialectSpec, mode: str, percentile: str) -> float | None:
        """Median over the rounds of (this overhead - the reference's), at ``percentile``."""
        if config.reference is None or config.reference in self.skipped:
            return None
        mine = self.overheads(config, mode, percentile)
        theirs = self.overheads(spec(config.reference), mode, percentile)
        pairs = [
            a - b for a, b in zip(mine, theirs, strict=False) if a is not None and b is not None
        ]
        return statistics.median(pairs) if pairs else None

    def cpu_us(self, name: str, mode: str) -> float | None:
        """CPU µs per call of the process under test: the median over the rounds of each
        measured wrk run's CPU time over its calls."""
        series = self.series.get(series_key(name, mode))
        if series is None:
            return None
        runs = series.measured()
        if not runs or len(series.cpu_s) != len(runs):
            return None
        pairs = zip(series.cpu_s, runs, strict=True)
        return median([cpu / run.requests * 1e6 for cpu, run in pairs if run.requests])

    def cpu_versus(self, config: DialectSpec, mode: str) -> float | None:
        """CPU µs per call minus the reference configuration's."""
        if config.reference is None or config.reference in self.skipped:
            return None
        mine, theirs = self.cpu_us(config.name, mode), self.cpu_us(config.reference, mode)
        return None if mine is None or theirs is None else mine - theirs

    def ratio(self, config: DialectSpec, mode: str, percentile: str) -> float | None:
        if config.reference is None or config.reference in self.skipped:
            return None
        mine = self.overhead(config, mode, percentile)
        theirs = self.overhead(spec(config.reference), mode, percentile)
        if mine is None or theirs is None or theirs <= 0:
            return None
        return mine / theirs

    def client_overhead(self, config: DialectSpec, kind: Kind, percentile: str) -> float | None:
        """One at a time: the configuration's ``kind`` of time minus its upstream dialect's
        direct one, at ``percentile``."""
        mine = self.client.get(config.name)
        direct = self.client.get(DIRECT[config.upstream])
        if mine is None or direct is None:
            return None
        ours, theirs = mine.summary(kind), direct.summary(kind)
        if not ours.get("n") or not theirs.get("n"):
            return None
        return ours[percentile] - theirs[percentile]

    def client_versus(self, config: DialectSpec, kind: Kind, percentile: str) -> float | None:
        """One at a time: this overhead minus the reference configuration's."""
        if config.reference is None or config.reference in self.skipped:
            return None
        mine = self.client_overhead(config, kind, percentile)
        theirs = self.client_overhead(spec(config.reference), kind, percentile)
        return None if mine is None or theirs is None else mine - theirs
