"""What each gateway feature adds to a call: the figures of bench/features.py and their report.

Pure: the results of a run, their aggregation over the rounds, the verdicts on the issues'
targets, the markdown section and its JSON. Nothing here starts a process; the configurations
themselves are bench/features_configs.py's.

Aggregation. Every target (the simulator direct, and each gateway configuration) is run once per
round, the rounds interleaved, so a drift in the machine's load reaches all of them alike. A
figure is the median over the rounds: a latency percentile is the median of the rounds' wrk
percentiles; an overhead is the median of the per-round differences (gateway minus direct in
the same round, at the same percentile); a difference against the base configuration (a) is the
median of the per-round differences of the two overheads. Calls/s is all requests over all the
measured seconds.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.features_configs import BASE, ConfigSpec
from bench.rounds import Series, median
from bench.tables import VERDICT_TEXT, count, number, table

DIRECT = "direct"
"""The simulator direct, with the matrix's body."""
DIRECT_DETERMINISTIC = "direct-det"
"""The simulator direct, with the cache configurations' body (``temperature: 0, seed: 1``)."""


@dataclass
class ConfigResult:
    spec: ConfigSpec
    series: Series
    skipped: str | None = None
    """Why this configuration was not measured (its store unreachable, its gateway failed)."""
    header_ms: dict[str, float] = field(default_factory=dict)
    """Summary of the gateway's own ``x-gateway-overhead-ms`` (one call at a time)."""
    client_ms: dict[str, float] = field(default_factory=dict)
    """Summary of the same calls' time at the client."""
    cache: dict[str, int] = field(default_factory=dict)
    """``x-gateway-cache`` values seen on those calls."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Counters read from the gateway's /metrics after the rounds."""


@dataclass
class SustainResult:
    """Capture at a fixed call rate: every answered call must become a row."""

    store: str
    rate: float
    seconds: float
    skipped: str | None = None
    sent: int = 0
    answered: int = 0
    """Calls answered 200."""
    failed: int = 0
    achieved_rate: float = 0.0
    max_lag_ms: float = 0.0
    """Longest a call waited past its scheduled time before it was sent."""
    latency_ms: dict[str, float] = field(default_factory=dict)
    written: int = 0
    dropped: int = 0
    retried: int = 0
    write_failed: int = 0
    rows: int = 0
    drain_s: float = 0.0
    """From the last answer until the queue was empty and the counters still."""

    @property
    def met(self) -> bool | None:
        if self.skipped is not None:
            return None
        return (
            self.dropped == 0
            and self.write_failed == 0
            and self.failed == 0
            and self.rows == self.answered == self.written
            and self.achieved_rate >= 0.98 * self.rate
        )


@dataclass
class FeatureResults:
    rounds: int
    seconds: int
    """Measured seconds per wrk run."""
    warmup_s: int
    direct: Series = field(default_factory=lambda: Series(DIRECT))
    direct_deterministic: Series = field(default_factory=lambda: Series(DIRECT_DETERMINISTIC))
    configs: list[ConfigResult] = field(default_factory=list)
    sustain: list[SustainResult] = field(default_factory=list)
    load: dict[str, float] = field(default_factory=dict)
    """The 1-minute load average before and after."""
    direct_header_ms: dict[str, float] = field(default_factory=dict)
    """The client's time of the one-at-a-time calls direct (plain body)."""

    def config(self, name: str) -> ConfigResult | None:
        return next((c for c in self.configs if c.spec.name == name), None)

    def reference(self, config: ConfigResult) -> Series:
        return self.direct_deterministic if config.spec.deterministic else self.direct

    def overheads(self, config: ConfigResult, percentile: str) -> list[float | None]:
        """Per round, gateway minus direct at ``percentile`` (None where either is missing)."""
        reference = self.reference(config).runs
        out: list[float | None] = []
        for index, run in enumerate(config.series.runs):
            direct = reference[index] if index < len(reference) else None
            if run is None or direct is None:
                out.append(None)
            else:
                out.append(run.latency_ms[percentile] - direct.latency_ms[percentile])
        return out

    def overhead(self, config: ConfigResult, percentile: str) -> float | None:
        return median(self.overheads(config, percentile))

    def versus_base(self, config: ConfigResult, percentile: str) -> float | None:
        """Median over the rounds of (this overhead - the base's overhead)."""
        base = self.config(BASE.name)
        if base is None:
            return None
        mine, theirs = self.overheads(config, percentile), self.overheads(base, percentile)
        pairs = [
            a - b for a, b in zip(mine, theirs, strict=False) if a is not None and b is not None
        ]
        return statistics.median(pairs) if pairs else None


@dataclass(frozen=True)
class Verdict:
    config: str
    target: str
    measured: str
    met: bool | None


def verdict(results: FeatureResults, config: ConfigResult) -> Verdict | None:
    target = config.spec.target
    if target is None:
        return None
    where = f"({config.spec.id}) {config.spec.name}"
    if config.skipped is not None or not config.series.measured():
        return Verdict(where, target.text, "not measured", None)
    if target.kind == "absolute_p50":
        p50 = config.series.latency("p50")
        assert p50 is not None
        header = config.header_ms.get("p50")
        text = f"{p50:.2f} ms" + (f" (x-gateway-overhead-ms {header:.3f})" if header else "")
        return Verdict(where, target.text, text, p50 < target.limit)
    delta = results.versus_base(config, "p50")
    if delta is None:
        return Verdict(where, target.text, "base not measured", None)
    if target.kind == "delta_p50":
        return Verdict(where, target.text, f"{delta:+.3f} ms", delta <= target.limit)
    base = results.config(BASE.name)
    base_overhead = results.overhead(base, "p50") if base is not None else None
    if base_overhead is None or base_overhead <= 0:
        return Verdict(where, target.text, f"{delta:+.3f} ms (base overhead ≤ 0)", None)
    ratio = delta / base_overhead
    return Verdict(
        where,
        target.text,
        f"{delta:+.3f} ms = {ratio:+.0%} of {base_overhead:.3f}",
        ratio <= target.limit,
    )


def verdicts(results: FeatureResults) -> list[Verdict]:
    out = [verdict(results, config) for config in results.configs]
    out += [
        Verdict(
            f"sustained capture, {s.store}",
            f"0 drops, rows = calls answered at {s.rate:g} calls/s for {s.seconds:g} s (issue 4)",
            "not measured"
            if s.skipped is not None
            else f"{s.dropped} dropped, {s.rows:,} rows / {s.answered:,} answered",
            s.met,
        )
        for s in results.sustain
    ]
    return [v for v in out if v is not None]


OVERHEAD_HEADER = (
    "config",
    "p50",
    "p99",
    "overhead p50",
    "overhead p99",
    "vs (a) p50",
    "vs (a) p99",
    "calls/s",
    "errors",
    "CPU µs/call",
    "x-gateway-overhead-ms p50",
    "target",
    "measured",
    "met",
)


def overhead_rows(results: FeatureResults) -> list[list[str]]:
    rows: list[list[str]] = []
    for series, label in (
        (results.direct, "direct (simulator)"),
        (results.direct_deterministic, "direct, `temperature: 0, seed: 1`"),
    ):
        if not series.measured():
            continue
        rows.append(
            [
                label,
                number(series.latency("p50")),
                number(series.latency("p99")),
                *("",) * 4,
                count(series.rps),
                str(series.error_count),
                *("",) * 5,
            ]
        )
    for config in results.configs:
        name = f"({config.spec.id}) {config.spec.label}"
        check = verdict(results, config)
        target = [check.target, check.measured, VERDICT_TEXT[check.met]] if check else ["", "", ""]
        if config.skipped is not None or not config.series.measured():
            reason = config.skipped or "no run succeeded"
            rows.append([name, *("-",) * 10, target[0], f"not measured: {reason}", "-"])
            continue
        series = config.series
        is_base = config.spec.name == BASE.name
        rows.append(
            [
                name,
                number(series.latency("p50")),
                number(series.latency("p99")),
                number(results.overhead(config, "p50"), sign=True),
                number(results.overhead(config, "p99"), sign=True),
                "" if is_base else number(results.versus_base(config, "p50"), 3, sign=True),
                "" if is_base else number(results.versus_base(config, "p99"), 3, sign=True),
                count(series.rps),
                str(series.error_count),
                count(series.cpu_us_per_call),
                number(config.header_ms.get("p50"), 3),
                *target,
            ]
        )
    return rows


SUSTAIN_HEADER = (
    "store",
    "rate x seconds",
    "sent",
    "answered 200",
    "failed",
    "achieved calls/s",
    "max send lag ms",
    "p50 / p99 ms",
    "written",
    "dropped",
    "retried",
    "rows",
    "rows = answered",
    "drain s",
    "met",
)


def sustain_rows(results: FeatureResults) -> list[list[str]]:
    rows: list[list[str]] = []
    for s in results.sustain:
        head = [s.store, f"{s.rate:g} x {s.seconds:g}"]
        if s.skipped is not None:
            rows.append([*head, f"not measured: {s.skipped}", *("-",) * 12])
            continue
        latency = f"{number(s.latency_ms.get('p50'))} / {number(s.latency_ms.get('p99'))}"
        rows.append(
            [
                *head,
                f"{s.sent:,}",
                f"{s.answered:,}",
                str(s.failed),
                f"{s.achieved_rate:,.1f}",
                f"{s.max_lag_ms:.1f}",
                latency,
                f"{s.written:,}",
                str(s.dropped),
                str(s.retried),
                f"{s.rows:,}",
                "yes" if s.rows == s.answered else "**no**",
                f"{s.drain_s:.1f}",
                VERDICT_TEXT[s.met],
            ]
        )
    return rows


def _notes(results: FeatureResults) -> list[str]:
    notes: list[str] = []
    for config in results.configs:
        if config.skipped is not None:
            continue
        m = config.metrics
        name = f"({config.spec.id}) {config.spec.name}"
        series = config.series
        parts: list[str] = []
        if config.spec.capture is not None:
            parts.append(
                f"capture during the rounds: {count(m.get('capture_written'))} written, "
                f"{count(m.get('capture_dropped'))} dropped, queue depth after "
                f"{count(m.get('capture_queue_depth'))}"
            )
        if config.spec.name == "ab-shadow":
            calls = m.get("requests", 0.0)
            shadows = m.get("shadow_ok", 0.0) + m.get("shadow_error", 0.0)
            skipped = m.get("shadow_skipped", 0.0)
            split = ", ".join(
                f"{k.removeprefix('variant_')} {v / calls:.1%}"
                for k, v in sorted(m.items())
                if k.startswith("variant_") and calls
            )
            share = f"{shadows / calls:.1%}" if calls else "-"
            parts.append(
                f"{count(calls)} calls answered by {split or '-'}; {count(shadows)} shadow calls "
                f"({share} of calls), {count(skipped)} skipped"
            )
        if config.spec.name.startswith("limits-redis"):
            parts.append(
                f"{series.error_count} refused or failed calls (status ≥ 400) in "
                f"{series.requests:,}"
            )
        if config.spec.deterministic and config.cache:
            seen = ", ".join(f"{k} {v}" for k, v in sorted(config.cache.items()))
            parts.append(
                f"x-gateway-cache on the one-at-a-time calls: {seen}; gateway counters "
                f"hit {count(m.get('cache_hit'))}, miss {count(m.get('cache_miss'))}"
            )
        for error in series.errors:
            parts.append(f"a run failed: {error}")
        if parts:
            notes.append(f"- {name}: " + "; ".join(parts) + ".")
    return notes


def render(results: FeatureResults) -> str:
    lines = [
        "### Feature overhead (c=1, upstream delay 0)",
        "",
        f"Method: one gateway process per configuration, each started once (one worker, key "
        f"auth on, `model` rewritten), all against the same zero-latency simulator; wrk "
        f"`-t1 -c1` with bench/post.lua (the matrix's call; the cache configurations add "
        f"`temperature: 0, seed: 1`, so every call after the first is a hit, and are compared "
        f"with that body direct). {results.rounds} interleaved rounds: in each, every target "
        f"runs {results.seconds} s after a {results.warmup_s} s warm-up, the order rotating "
        "from round to round. p50/p99 are medians over the rounds; overhead is gateway minus "
        "direct in the same round, and 'vs (a)' the per-round difference with the base's "
        "overhead, both medians over the rounds (ms). CPU µs/call is the CPU time of the gateway "
        "and its capture writer process over the gateway's calls (PostgreSQL's and Redis's own "
        "not). x-gateway-overhead-ms is the gateway's own figure, from calls made one at a "
        "time by an asyncio client afterwards. Load average (1 min): "
        f"{results.load.get('start', 0):.2f} before, {results.load.get('end', 0):.2f} after.",
        "",
    ]
    lines += table(OVERHEAD_HEADER, overhead_rows(results))
    notes = _notes(results)
    if notes:
        lines += ["", *notes]
    if results.sustain:
        first = results.sustain[0]
        lines += [
            "",
            "### Sustained capture",
            "",
            f"An asyncio client sends calls at a fixed rate ({first.rate:g} calls/s for "
            f"{first.seconds:g} s, open loop: a call is sent at its time whether or not the "
            "earlier ones are answered; plain and streamed alternately) to the capture-on "
            "gateway; then, once the queue is empty, /metrics' "
            '`gateway_capture_records_total{outcome="written"|"dropped"|"retried"}` and the '
            "rows in the store are read. Every figure is the difference over the run.",
            "",
        ]
        lines += table(SUSTAIN_HEADER, sustain_rows(results))
    return "\n".join(lines) + "\n"


def _series_json(series: Series) -> dict[str, Any]:
    return {
        "runs": [run.to_json() if run is not None else None for run in series.runs],
        "cpu_s": [round(value, 4) for value in series.cpu_s],
        "errors": series.errors,
        "p50_ms": series.latency("p50"),
        "p99_ms": series.latency("p99"),
        "rps": series.rps,
        "cpu_us_per_call": series.cpu_us_per_call,
    }


def to_json(results: FeatureResults) -> dict[str, Any]:
    def config_json(config: ConfigResult) -> dict[str, Any]:
        check = verdict(results, config)
        return {
            "id": config.spec.id,
            "name": config.spec.name,
            "label": config.spec.label,
            "deterministic": config.spec.deterministic,
            "skipped": config.skipped,
            **_series_json(config.series),
            "overhead_ms": {p: results.overhead(config, p) for p in ("p50", "p99")},
            "overhead_by_round_ms": {p: results.overheads(config, p) for p in ("p50", "p99")},
            "versus_base_ms": {p: results.versus_base(config, p) for p in ("p50", "p99")},
            "header_overhead_ms": config.header_ms,
            "client_ms": config.client_ms,
            "cache": config.cache,
            "metrics": config.metrics,
            "target": None
            if check is None
            else {"target": check.target, "measured": check.measured, "met": check.met},
        }

    return {
        "rounds": results.rounds,
        "seconds": results.seconds,
        "warmup_s": results.warmup_s,
        "load": results.load,
        "direct": _series_json(results.direct),
        "direct_deterministic": _series_json(results.direct_deterministic),
        "direct_client_ms": results.direct_header_ms,
        "configs": [config_json(config) for config in results.configs],
        "sustain": [
            {
                "store": s.store,
                "rate": s.rate,
                "seconds": s.seconds,
                "skipped": s.skipped,
                "sent": s.sent,
                "answered": s.answered,
                "failed": s.failed,
                "achieved_rate": round(s.achieved_rate, 2),
                "max_lag_ms": round(s.max_lag_ms, 2),
                "latency_ms": s.latency_ms,
                "written": s.written,
                "dropped": s.dropped,
                "retried": s.retried,
                "write_failed": s.write_failed,
                "rows": s.rows,
                "drain_s": round(s.drain_s, 2),
                "met": s.met,
            }
            for s in results.sustain
        ],
        "targets": [
            {"config": v.config, "target": v.target, "measured": v.measured, "met": v.met}
            for v in verdicts(results)
        ],
    }
