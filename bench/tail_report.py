"""Where the tail comes from: the figures of bench/tail.py, their aggregation and the report.

Pure: the configurations, what one configuration measured, the figures derived from it (each a
difference or a ratio of figures from the same configuration's run), issue 16's targets marked
met or not for the everything-on configuration, the markdown section and its JSON. Nothing here
starts a process.

Figures. c=1 overhead at p50/p90/p99: the gateway's percentile minus the direct calls' at the
same percentile, over calls made one at a time with direct and gateway alternating call by call.
Stream TTFB +p50: the same for the time to a stream's first body chunk. c=10 and c=50 calls/s:
wrk, plain calls, upstream delay 0. With a 50 ms upstream at c=50: the gateway's calls/s as a
share of direct's and its p99 minus direct's (the two runs back to back). CPU per call: the
gateway process's user + system time over the c=50 run, divided by its calls. Loop holds: the
gateway's own sampler (gateway/looplag.py) in two windows of their own, one at c=1 and one at
c=50: how many times its 1 ms timer woke more than 0.2 ms and more than 1 ms late, the latest,
and the collector's pauses.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

from bench.loop_holds import Profile, holds, profile_lines, steps_lines
from bench.tables import VERDICT_TEXT, count, number, table
from bench.wrk import WrkResult

MIB = 1024 * 1024
EVERYTHING = "everything"
BASE = "base"


@dataclass(frozen=True)
class TailSpec:
    """One gateway configuration: which components are on."""

    name: str
    label: str
    capture: str | None = None
    """``sqlite`` or ``postgres`` when capture is on."""
    limits: bool = False
    """A key with RPM/TPM limits, in Redis."""
    ab: bool = False
    """A route of two sticky variants (``sticky: user``), 50/50."""
    metrics: bool = False
    """/metrics scraped every second while the configuration runs."""


SPECS: tuple[TailSpec, ...] = (
    TailSpec(BASE, "base: one variant, capture off, no limits, no scrape"),
    TailSpec("capture-sqlite", "capture to SQLite", capture="sqlite"),
    TailSpec("capture-postgres", "capture to PostgreSQL", capture="postgres"),
    TailSpec("limits-redis", "a key with RPM/TPM limits on Redis", limits=True),
    TailSpec("ab-sticky", "two sticky variants (50/50, `sticky: user`)", ab=True),
    TailSpec("metrics", "/metrics scraped every second", metrics=True),
    TailSpec(
        EVERYTHING,
        "everything on: two sticky variants, capture to PostgreSQL, RPM/TPM limits on Redis, "
        "/metrics scraped",
        capture="postgres",
        limits=True,
        ab=True,
        metrics=True,
    ),
)


def spec(name: str) -> TailSpec:
    return next(s for s in SPECS if s.name == name)


@dataclass
class TailResult:
    """What one configuration measured (its figures are derived below)."""

    spec: TailSpec
    skipped: str | None = None
    start_s: float | None = None
    rss_idle: int = 0
    rss_peak: int = 0
    """The process's high-water mark of resident memory (VmHWM) at the end."""
    c1_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per target (direct, gateway), the summary of plain calls made one at a time."""
    c1_own_ms: dict[str, float] = field(default_factory=dict)
    """The gateway's own time in those calls (its ``x-gateway-overhead-ms``: from taking the
    call to its answer's headers, less the upstream's time), summarized."""
    c1_cpu_us: float | None = None
    """The gateway process's time on a core per call over those calls (schedstat)."""
    c1_wait_us: float | None = None
    """Its time runnable but waiting for a core, per call (another process held the core)."""
    ttfb_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    c10: WrkResult | None = None
    c50: WrkResult | None = None
    c50_cpu_s: float | None = None
    """The gateway's CPU seconds over the c=50 run."""
    c50_writer_cpu_s: float | None = None
    """Its children's (the capture writer process's) CPU seconds over the c=50 run."""
    writer_rss_peak: int = 0
    """The children's high-water marks of resident memory, summed."""
    capture: dict[str, int] = field(default_factory=dict)
    """The gateway's capture counters at the end (``gateway_capture_records`` by outcome)."""
    d50: dict[str, WrkResult] = field(default_factory=dict)
    """c=50 with a 50 ms upstream, per target."""
    lag: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per window (``c1``, ``c50``), the gateway's loop-lag snapshot (gateway/looplag.py)."""
    lag_calls: dict[str, int] = field(default_factory=dict)
    """Per window, the gateway calls answered in it."""
    scrapes: int = 0
    errors: list[str] = field(default_factory=list)

    def overhead(self, percentile: str, which: str = "c1") -> float | None:
        figures = self.c1_ms if which == "c1" else self.ttfb_ms
        direct, gateway = figures.get("direct", {}), figures.get("gateway", {})
        if percentile not in direct or percentile not in gateway:
            return None
        return gateway[percentile] - direct[percentile]

    @property
    def cpu_us_per_call(self) -> float | None:
        if self.c50 is None or self.c50_cpu_s is None or self.c50.requests == 0:
            return None
        return self.c50_cpu_s / self.c50.requests * 1e6

    @property
    def writer_us_per_call(self) -> float | None:
        if self.c50 is None or self.c50_writer_cpu_s is None or self.c50.requests == 0:
            return None
        return self.c50_writer_cpu_s / self.c50.requests * 1e6

    @property
    def d50_share(self) -> float | None:
        direct, gateway = self.d50.get("direct"), self.d50.get("gateway")
        if direct is None or gateway is None or direct.rps == 0:
            return None
        return gateway.rps / direct.rps

    @property
    def d50_overhead_p99(self) -> float | None:
        direct, gateway = self.d50.get("direct"), self.d50.get("gateway")
        if direct is None or gateway is None:
            return None
        return gateway.latency_ms["p99"] - direct.latency_ms["p99"]

    @property
    def wrk_errors(self) -> int:
        runs = [self.c10, self.c50, self.d50.get("gateway")]
        return sum(run.error_count for run in runs if run is not None)


@dataclass
class TailResults:
    calls: int
    """One-at-a-time calls per target (plain, and again streamed)."""
    seconds: int
    """Measured seconds per wrk run."""
    warmup_s: int
    pinning: str
    """Which cores the gateway and the rest ran on."""
    c1_warmup_s: float = 0.0
    """Seconds of unmeasured one-at-a-time calls before the measured ones."""
    configs: list[TailResult] = field(default_factory=list)
    profile: Profile | None = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per window (``c1``, ``c50``) of the everything-on gateway run again with its tasks'
    steps timed: ``calls`` and ``steps`` (per coroutine, wall and CPU figures)."""
    load: dict[str, float] = field(default_factory=dict)

    def config(self, name: str) -> TailResult | None:
        return next((c for c in self.configs if c.spec.name == name), None)


# --- targets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    base: str
    """The base configuration's figure, same run."""
    met: bool | None


def _figures(result: TailResult) -> dict[str, float | None]:
    d50 = result.d50.get("gateway")
    return {
        "c1_p50": result.overhead("p50"),
        "c1_p99": result.overhead("p99"),
        "ttfb_p50": result.overhead("p50", "ttfb"),
        "c50_rps": result.c50.rps if result.c50 is not None else None,
        "d50_share": result.d50_share,
        "d50_p99": result.d50_overhead_p99,
        "d50_errors": float(d50.error_count) if d50 is not None else None,
        "start_s": result.start_s,
        "rss_peak_mib": result.rss_peak / MIB if result.rss_peak else None,
    }


TARGETS: tuple[tuple[str, str, str, float, str], ...] = (
    # (figure, text, comparison, limit, format)
    ("c1_p50", "c=1 overhead p50 ≤ 0.4 ms", "le", 0.4, "{:+.2f} ms"),
    ("c1_p99", "c=1 overhead p99 ≤ 1.5 ms", "le", 1.5, "{:+.2f} ms"),
    ("ttfb_p50", "streaming TTFB overhead p50 ≤ 0.4 ms", "le", 0.4, "{:+.2f} ms"),
    ("c50_rps", "≥ 3,000 calls/s at c=50 on one core", "ge", 3000.0, "{:,.0f} calls/s"),
    ("d50_share", "50 ms upstream, c=50: ≥ 96% of direct calls/s", "ge", 0.96, "{:.1%}"),
    ("d50_p99", "50 ms upstream, c=50: overhead p99 ≤ 10 ms", "le", 10.0, "{:+.1f} ms"),
    ("start_s", "start to first answered call < 1 s", "lt", 1.0, "{:.2f} s"),
    ("rss_peak_mib", "peak RSS < 100 MiB", "lt", 100.0, "{:.1f} MiB"),
)


def verdicts(results: TailResults) -> list[Verdict]:
    """Issue 16's targets, on the everything-on configuration (the base's figure beside)."""
    everything = results.config(EVERYTHING)
    base = results.config(BASE)
    mine = _figures(everything) if everything and everything.skipped is None else {}
    theirs = _figures(base) if base and base.skipped is None else {}
    out: list[Verdict] = []
    compare = {"le": operator.le, "ge": operator.ge, "lt": operator.lt}
    for key, text, comparison, limit, form in TARGETS:
        value, reference = mine.get(key), theirs.get(key)
        met = None if value is None else bool(compare[comparison](value, limit))
        shown = form.format(value) if value is not None else "not measured"
        out.append(
            Verdict(text, shown, form.format(reference) if reference is not None else "-", met)
        )
    return out


# --- the report -----------------------------------------------------------------------------

TABLE_HEADER = (
    "gateway config",
    "c=1 +p50",
    "c=1 +p99",
    "c=1 +p90",
    "stream TTFB +p50",
    "c=10 calls/s",
    "c=50 calls/s",
    "c=50, 50 ms upstream: share of direct, +p99",
    "RSS idle / peak",
    "start",
    "CPU µs/call (c=50)",
)
HOLDS_HEADER = (
    "gateway config",
    *(
        f"{window}: {figure}"
        for window in ("c=1", "c=50")
        for figure in (
            "late > 0.2 / > 1 ms (per 1,000 calls)",
            "latest",
            "busy > 0.2 / > 1 ms (per 1,000 calls)",
            "longest busy",
            "collections > 1 ms, longest",
        )
    ),
)


def _ms(value: float | None, sign: bool = True) -> str:
    return "-" if value is None else number(value, 2, sign) + " ms"


def table_rows(results: TailResults) -> list[list[str]]:
    rows: list[list[str]] = []
    for item in results.configs:
        if item.skipped is not None:
            rows.append([item.spec.label, f"not measured: {item.skipped}"] + ["-"] * 9)
            continue
        share = item.d50_share
        d50 = "-" if share is None else f"{share:.1%}, {_ms(item.d50_overhead_p99)}"
        rss = (
            f"{item.rss_idle / MIB:.0f} / {item.rss_peak / MIB:.0f} MiB"
            if item.rss_idle and item.rss_peak
            else "-"
        )
        rows.append(
            [
                item.spec.label,
                _ms(item.overhead("p50")),
                _ms(item.overhead("p99")),
                _ms(item.overhead("p90")),
                _ms(item.overhead("p50", "ttfb")),
                count(item.c10.rps if item.c10 else None),
                count(item.c50.rps if item.c50 else None),
                d50,
                rss,
                "-" if item.start_s is None else f"{item.start_s:.2f} s",
                count(item.cpu_us_per_call),
            ]
        )
    return rows


def _per_thousand(events: int, calls: int) -> str:
    return "-" if calls <= 0 else f"{events * 1000 / calls:.1f}"


def holds_rows(results: TailResults) -> list[list[str]]:
    rows: list[list[str]] = []
    for item in results.configs:
        if item.skipped is not None:
            continue
        row = [item.spec.label]
        for window in ("c1", "c50"):
            found = holds(item.lag.get(window))
            calls = item.lag_calls.get(window, 0)
            if found is None:
                row += ["-"] * 5
                continue
            row += [
                f"{found.late_02:,} / {found.late_1:,} "
                f"({_per_thousand(found.late_02, calls)} / {_per_thousand(found.late_1, calls)})",
                f"{found.late_max_ms:.2f} ms",
                f"{found.busy_02:,} / {found.busy_1:,} "
                f"({_per_thousand(found.busy_02, calls)} / {_per_thousand(found.busy_1, calls)})",
                f"{found.busy_max_ms:.2f} ms",
                f"{found.gc_above_1}, {found.gc_max_ms:.2f} ms"
                + (f" (gen {found.gc_max_generation})" if found.gc_max_generation else ""),
            ]
        rows.append(row)
    return rows


CAPTURE_HEADER = (
    "configuration",
    "writer CPU µs/call",
    "writer peak RSS",
    "written",
    "dropped",
    "failed",
    "queued at the end",
)


def capture_rows(results: TailResults) -> list[list[str]]:
    rows: list[list[str]] = []
    for item in results.configs:
        if item.skipped is not None or not item.spec.capture:
            continue
        counts = item.capture
        rows.append(
            [
                item.spec.label,
                count(item.writer_us_per_call),
                f"{item.writer_rss_peak / MIB:.0f} MiB" if item.writer_rss_peak else "-",
                *(f"{counts[key]:,}" if key in counts else "-" for key in CAPTURE_OUTCOMES),
            ]
        )
    return rows


CAPTURE_OUTCOMES = ("written", "dropped", "failed", "queue_depth")


SPENT_HEADER = (
    "gateway config",
    "c=1 +p50 / +p99",
    "c=1 p99: direct / gateway",
    "gateway's own time p50 / p99",
    "gateway CPU µs/call (c=1)",
    "waiting for its core, µs/call (c=1)",
)


def spent_rows(results: TailResults) -> list[list[str]]:
    """Per configuration: the end-to-end c=1 overheads beside the gateway's own time in the
    same calls and its process's time on and waiting for its core."""
    rows: list[list[str]] = []
    for item in results.configs:
        if item.skipped is not None:
            continue
        own = item.c1_own_ms
        rows.append(
            [
                item.spec.label,
                f"{_ms(item.overhead('p50'))} / {_ms(item.overhead('p99'))}",
                f"{_ms(item.c1_ms.get('direct', {}).get('p99'), False)} / "
                f"{_ms(item.c1_ms.get('gateway', {}).get('p99'), False)}",
                f"{_ms(own.get('p50'), False)} / {_ms(own.get('p99'), False)}",
                count(item.c1_cpu_us),
                number(item.c1_wait_us, 1),
            ]
        )
    return rows


def _notes(results: TailResults) -> list[str]:
    notes: list[str] = []
    for item in results.configs:
        parts = list(item.errors)
        if item.wrk_errors:
            parts.append(f"{item.wrk_errors} wrk errors")
        for name, summary in item.c1_ms.items():
            if summary.get("n", 0) == 0:
                parts.append(f"no one-at-a-time calls answered ({name})")
        if parts:
            notes.append(f"- {item.spec.name}: " + "; ".join(parts) + ".")
    return notes


def _warmup(results: TailResults) -> str:
    if results.c1_warmup_s <= 0:
        return ""
    return f"{results.c1_warmup_s:g} s of one-at-a-time calls unmeasured (warm-up), then "


def render(results: TailResults) -> str:
    lines = [
        "### The tail, component by component (issue 16)",
        "",
        "Method: one gateway process per configuration (`gateway serve --workers 1`, key auth on, "
        "`model` rewritten), one after the other, against the same zero-latency simulator; "
        f"{results.pinning}. Per configuration: {_warmup(results)}{results.calls:,} plain calls "
        "one at a time, "
        "direct and gateway alternating, then as many streamed (asyncio client); wrk "
        f"(bench/post.lua, plain calls) at c=10 and c=50 for {results.seconds} s each after a "
        f"{results.warmup_s} s warm-up; c=50 with a 50 ms upstream, direct and gateway back to "
        "back. Overheads (+) are gateway minus direct at the same percentile. Start is spawn to "
        "the first answered call; RSS idle is the serving process's after that call, peak its "
        "high-water mark at the end (the capture writer process's is in its own table). CPU "
        "µs/call is the gateway process's user + system time over the c=50 run divided by its "
        "calls. Load average (1 min): "
        f"{results.load.get('start', 0):.2f} before, {results.load.get('end', 0):.2f} after.",
        "",
    ]
    lines += table(TABLE_HEADER, table_rows(results))
    lines += [
        "",
        "Targets (issue 16), on the everything-on configuration, with the base's figure from the "
        "same run:",
        "",
    ]
    lines += table(
        ("target", "everything on", "base", "met"),
        [[v.target, v.measured, v.base, VERDICT_TEXT[v.met]] for v in verdicts(results)],
    )
    capture = capture_rows(results)
    if capture:
        lines += [
            "",
            "The capture writer process (capture.writer_process; `SCHED_IDLE` by default) in each "
            "configuration with capture: its CPU over the c=50 run per gateway call (the "
            "gateway's own is in CPU µs/call above), its peak RSS, and the gateway's capture "
            "counters at the end (records written, dropped at the bounded queue, failed, still "
            "queued).",
            "",
        ]
        lines += table(CAPTURE_HEADER, capture)
    lines += [
        "",
        "Where the c=1 time goes, over the same one-at-a-time plain calls: the overheads above, "
        "the p99 of each target, the gateway's own time in those calls (its "
        "`x-gateway-overhead-ms` header: from taking the call to its answer's headers, less the "
        "upstream's time), and the gateway process's "
        "time on its core and runnable but waiting for it (`/proc/PID/task/*/schedstat`), per "
        "call. A +p99 far above the gateway's own p99 is time spent outside the gateway's "
        "handling: waiting for a core held by another process (the last column), or the load's "
        "core busy with work the gateway's calls cause there (a store's server).",
        "",
        *table(SPENT_HEADER, spent_rows(results)),
    ]
    lines += [
        "",
        "Loop holds (gateway/looplag.py, sampling only in these windows: a c=1 run of "
        "one-at-a-time calls and a c=50 wrk run of its own, so the figures above are measured "
        "without it). Late: how often the loop's 1 ms timer woke more than 0.2 ms and more than "
        "1 ms late (per 1,000 gateway calls in brackets), and the latest wake-up; a wait for a "
        "core on a busy machine counts here too. Busy: the same counts for the loop thread's "
        "own CPU time between two wake-ups (a callback's or a step's hold, a collection), and "
        "the longest. Collections: the collector's pauses over 1 ms, and the longest.",
        "",
    ]
    lines += table(HOLDS_HEADER, holds_rows(results))
    if results.steps:
        lines += steps_lines(results.steps)
    if results.profile is not None:
        lines += profile_lines(results.profile)
    notes = _notes(results)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def to_json(results: TailResults) -> dict[str, Any]:
    def config_json(item: TailResult) -> dict[str, Any]:
        return {
            "name": item.spec.name,
            "label": item.spec.label,
            "skipped": item.skipped,
            "figures": _figures(item),
            "c1_overhead_ms": {p: item.overhead(p) for p in ("p50", "p90", "p99")},
            "c1_ms": item.c1_ms,
            "c1_own_ms": item.c1_own_ms,
            "c1_cpu_us": item.c1_cpu_us,
            "c1_wait_us": item.c1_wait_us,
            "ttfb_ms": item.ttfb_ms,
            "c10": item.c10.to_json() if item.c10 else None,
            "c50": item.c50.to_json() if item.c50 else None,
            "c50_cpu_s": item.c50_cpu_s,
            "cpu_us_per_call": item.cpu_us_per_call,
            "c50_writer_cpu_s": item.c50_writer_cpu_s,
            "writer_us_per_call": item.writer_us_per_call,
            "writer_rss_peak_bytes": item.writer_rss_peak,
            "capture": item.capture,
            "d50": {name: run.to_json() for name, run in item.d50.items()},
            "rss_idle_bytes": item.rss_idle,
            "rss_peak_bytes": item.rss_peak,
            "start_s": item.start_s,
            "lag": item.lag,
            "lag_calls": item.lag_calls,
            "scrapes": item.scrapes,
            "errors": item.errors,
        }

    profile = results.profile
    return {
        "calls": results.calls,
        "seconds": results.seconds,
        "warmup_s": results.warmup_s,
        "c1_warmup_s": results.c1_warmup_s,
        "pinning": results.pinning,
        "load": results.load,
        "configs": [config_json(item) for item in results.configs],
        "targets": [
            {"target": v.target, "measured": v.measured, "base": v.base, "met": v.met}
            for v in verdicts(results)
        ],
        "steps": results.steps,
        "profile": None
        if profile is None
        else {
            "config": profile.config,
            "samples": profile.samples,
            "own": profile.own,
            "inclusive": profile.inclusive,
            "threads": profile.threads,
            "error": profile.error,
        },
    }
