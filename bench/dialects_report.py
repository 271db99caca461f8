"""What a provider dialect costs a call: the figures of bench/dialects.py and their report.

Pure: the configurations and their references, the aggregation of wrk runs over rounds and of
the one-at-a-time client's samples, the verdicts on issue 12's targets, the markdown section and
its JSON. Nothing here starts a process.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.features_report import Series

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
        return _median(self.overheads(config, mode, percentile))

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
        return _median([cpu / run.requests * 1e6 for cpu, run in pairs if run.requests])

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


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    met: bool | None


NO_BASELINE = "no --dialects-baseline: compared with the simulator direct only"


def verdicts(results: DialectResults) -> list[Verdict]:
    out: list[Verdict] = []
    for config in SPECS:
        limit = config.limit
        if limit is None:
            continue
        reference = spec(config.reference) if config.reference else None
        where = f"({config.id}) vs ({reference.id})" if reference else f"({config.id})"
        for mode in limit.modes:
            text = f"{limit.text}, {'streamed' if mode == 'stream' else 'plain'} (c=1, wrk)"
            out.append(_verdict(results, config, text, where, limit.ms, mode))
        if limit.ttfb:
            text = f"{limit.text.split(':')[0]}: streaming TTFB p50 ≤ (c) + {limit.ms:g} ms"
            delta = results.client_versus(config, "ttfb", "p50")
            if delta is None:
                out.append(Verdict(text, _why_not(results, config), None))
            else:
                out.append(Verdict(text, f"{delta:+.3f} ms {where}", delta <= limit.ms))
    return out


def _why_not(results: DialectResults, config: DialectSpec) -> str:
    for name in (config.name, config.reference):
        if name is not None and name in results.skipped:
            return f"not measured: ({spec(name).id}) {results.skipped[name]}"
    return "not measured"


def _verdict(
    results: DialectResults, config: DialectSpec, text: str, where: str, limit: float, mode: str
) -> Verdict:
    delta = results.versus(config, mode, "p50")
    if delta is None:
        why = _why_not(results, config)
        own = results.overhead(config, mode, "p50")
        if own is not None:
            why += f"; ({config.id})'s own overhead over the simulator: {own:+.3f} ms"
        return Verdict(text, why, None)
    measured = f"{delta:+.3f} ms {where}"
    others = []
    second = results.client_versus(config, "plain" if mode == "plain" else "stream", "p50")
    if second is not None:
        others.append(f"one at a time: {second:+.3f} ms")
    cpu = results.cpu_versus(config, mode)
    if cpu is not None:
        others.append(f"gateway CPU {cpu:+.0f} µs/call")
    if others:
        measured += f" ({'; '.join(others)})"
    return Verdict(text, measured, delta <= limit)


# --- markdown -------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


VERDICT_TEXT: dict[bool | None, str] = {True: "yes", False: "**no**", None: "-"}

WRK_HEADER = (
    "configuration",
    "call",
    "p50",
    "p99",
    "overhead p50",
    "overhead p90",
    "overhead p99",
    "vs",
    "vs p50",
    "vs p90",
    "vs p99",
    "ratio p50",
    "calls/s",
    "errors",
    "CPU µs/call",
    "vs CPU µs/call",
)


def _name(config: DialectSpec) -> str:
    return f"({config.id}) {config.label}"


def wrk_rows(results: DialectResults) -> list[list[str]]:
    rows: list[list[str]] = []
    for api in ("openai", "anthropic"):
        for mode in MODES:
            series = results.series.get(series_key(DIRECT[api], mode))
            if series is None or not series.measured():
                continue
            rows.append(
                [
                    f"direct: the simulator's {API_TEXT[api]} API",
                    mode,
                    _f(series.latency("p50")),
                    _f(series.latency("p99")),
                    *("",) * 8,
                    _n(series.rps),
                    str(series.error_count),
                    _n(results.cpu_us(DIRECT[api], mode)),
                    "",
                ]
            )
    for config in SPECS:
        if config.name in results.skipped:
            reason = results.skipped[config.name]
            rows.append(
                [_name(config), "-", *("-",) * 10, f"not measured: {reason}", "-", "-", "-"]
            )
            continue
        reference = spec(config.reference) if config.reference else None
        for mode in MODES:
            series = results.series.get(series_key(config.name, mode))
            if series is None or not series.measured():
                continue
            ratio = results.ratio(config, mode, "p50")
            rows.append(
                [
                    _name(config),
                    mode,
                    _f(series.latency("p50")),
                    _f(series.latency("p99")),
                    *(_f(results.overhead(config, mode, p), sign=True) for p in PERCENTILES),
                    f"({reference.id})"
                    if reference and reference.name not in results.skipped
                    else "",
                    *(_f(results.versus(config, mode, p), 3, sign=True) for p in PERCENTILES),
                    "-" if ratio is None else f"{ratio:.2f}x",
                    _n(series.rps),
                    str(series.error_count),
                    _n(results.cpu_us(config.name, mode)),
                    _f(results.cpu_versus(config, mode), 0, sign=True),
                ]
            )
    return rows


CLIENT_HEADER = (
    "configuration",
    "calls",
    "TTFB p50",
    "TTFB overhead p50",
    "TTFB overhead p99",
    "vs",
    "vs TTFB p50",
    "vs TTFB p99",
    "stream overhead p50",
    "vs stream p50",
    "plain overhead p50",
    "vs plain p50",
    "x-gateway-overhead-ms p50",
    "errors",
)


def client_rows(results: DialectResults) -> list[list[str]]:
    rows: list[list[str]] = []
    for api in ("openai", "anthropic"):
        figures = results.client.get(DIRECT[api])
        if figures is None or not figures.ttfb_ms.get("n"):
            continue
        rows.append(
            [
                f"direct: the simulator's {API_TEXT[api]} API",
                _n(figures.ttfb_ms["n"]),
                _f(figures.ttfb_ms.get("p50")),
                *("",) * 10,
                str(figures.errors),
            ]
        )
    for config in SPECS:
        figures = results.client.get(config.name)
        if config.name in results.skipped or figures is None or not figures.ttfb_ms.get("n"):
            continue
        reference = spec(config.reference) if config.reference else None
        overhead, versus = results.client_overhead, results.client_versus
        rows.append(
            [
                _name(config),
                _n(figures.ttfb_ms["n"]),
                _f(figures.ttfb_ms.get("p50")),
                _f(overhead(config, "ttfb", "p50"), sign=True),
                _f(overhead(config, "ttfb", "p99"), sign=True),
                f"({reference.id})" if reference and reference.name not in results.skipped else "",
                _f(versus(config, "ttfb", "p50"), 3, sign=True),
                _f(versus(config, "ttfb", "p99"), 3, sign=True),
                _f(overhead(config, "stream", "p50"), sign=True),
                _f(versus(config, "stream", "p50"), 3, sign=True),
                _f(overhead(config, "plain", "p50"), sign=True),
                _f(versus(config, "plain", "p50"), 3, sign=True),
                _f(figures.header_ms.get("p50"), 3),
                str(figures.errors),
            ]
        )
    return rows


def render(results: DialectResults) -> str:
    base = results.baseline
    if base is not None:
        baseline = (
            f"(a) is the gateway at commit {base.commit} (`{base.path}`, run by `{base.python}`), "
            f"(b) this checkout ({results.commit}) with the same config."
        )
    else:
        reason = results.skipped.get(BEFORE.name, NO_BASELINE)
        baseline = (
            f"(a) not measured ({reason}); (b) is this checkout ({results.commit}) with the "
            "config (a) would have."
        )
    lines = [
        "### Dialects (c=1, upstream delay 0)",
        "",
        "Method: the simulator answers OpenAI's chat completions and Anthropic's Messages API "
        "with zero latency. Three gateway processes (one worker each, key auth on, capture "
        "off): (a) and (b) with one OpenAI-format provider and one route (`bench-model` -> "
        "`gpt-4o-mini`), and (c)-(f) one gateway with an OpenAI-format provider and an "
        "`api: anthropic` one, routes `bench-model` -> `gpt-4o-mini` and `bench-claude` -> "
        "`claude-sonnet-4-5`, called on `/v1/chat/completions` or `/v1/messages`. "
        f"{baseline} Every call is the matrix's (a system and a user message, `max_tokens: "
        "16`), in the inbound dialect's format. wrk `-t1 -c1` with bench/post.lua, "
        f"{results.rounds} interleaved rounds: in each, every target, plain and streamed, runs "
        f"{results.seconds} s after a {results.warmup_s} s warm-up, each configuration next to "
        "the one it is compared with, which of the two runs first alternating from round to "
        "round. Overhead is a configuration's figure minus the simulator's direct in "
        "the configuration's upstream dialect (same round, same percentile, same kind of "
        "call); 'vs' is the per-round difference with the configuration named (its same-"
        "dialect call), ratio the two overheads divided; medians over the rounds (ms). CPU "
        "µs/call is the process under test's CPU time (the gateway's; the simulator's for "
        "direct calls) over its calls in a measured run, the median over the rounds: a second "
        "figure, which also grows when other processes share the cores. A configuration "
        "whose upstream dialect is not its inbound one is measured over the other dialect's "
        "direct call, and what the simulator and the client spend on each format (and on the "
        "calls the gateway sends, which are not the client's bytes) cancels only roughly: a "
        "translated call can show less overhead than the same-dialect one. "
        "`x-gateway-overhead-ms` and CPU µs/call count the gateway's own work. Then "
        f"an asyncio client calls every target one at a time, targets alternating call by "
        f"call, up to {results.client_calls:,} streamed calls each (time to the first body "
        "chunk, TTFB, and to the end) and as many plain ones (whole time, and the gateway's "
        "own `x-gateway-overhead-ms`, its handler time only); its figures are percentiles "
        "over all the calls, its overheads and 'vs' differences of those percentiles. Where "
        "a target is measured by wrk, the one-at-a-time client's difference is given beside "
        "it: it alternates call by call, so a burst of load from elsewhere on the machine "
        "reaches both sides alike, where wrk's runs are seconds apart. Load average (1 min): "
        f"{results.load.get('start', 0):.2f} before, {results.load.get('end', 0):.2f} after.",
        "",
    ]
    lines += _table(
        ("target", "measured", "met"),
        [[v.target, v.measured, VERDICT_TEXT[v.met]] for v in verdicts(results)],
    )
    lines += ["", "wrk, whole responses:", ""]
    lines += _table(WRK_HEADER, wrk_rows(results))
    rows = client_rows(results)
    if rows:
        lines += ["", "One call at a time (asyncio client):", ""]
        lines += _table(CLIENT_HEADER, rows)
    errors = [
        f"- {key}: {error}"
        for key, series in sorted(results.series.items())
        for error in series.errors
    ]
    if errors:
        lines += ["", "Runs that failed:", "", *errors]
    return "\n".join(lines) + "\n"


def _series_json(series: Series) -> dict[str, Any]:
    return {
        "runs": [run.to_json() if run is not None else None for run in series.runs],
        "errors": series.errors,
        "p50_ms": series.latency("p50"),
        "p90_ms": series.latency("p90"),
        "p99_ms": series.latency("p99"),
        "rps": series.rps,
        "cpu_s": [round(value, 4) for value in series.cpu_s],
    }


def to_json(results: DialectResults) -> dict[str, Any]:
    def config_json(config: DialectSpec) -> dict[str, Any]:
        figures = results.client.get(config.name, ClientFigures())
        return {
            "id": config.id,
            "name": config.name,
            "label": config.label,
            "inbound": config.inbound,
            "upstream": config.upstream,
            "reference": config.reference,
            "skipped": results.skipped.get(config.name),
            "wrk": {
                mode: {
                    **_series_json(results.series.get(series_key(config.name, mode), Series(""))),
                    "overhead_ms": {p: results.overhead(config, mode, p) for p in PERCENTILES},
                    "overhead_by_round_ms": {
                        p: results.overheads(config, mode, p) for p in PERCENTILES
                    },
                    "versus_reference_ms": {
                        p: results.versus(config, mode, p) for p in PERCENTILES
                    },
                    "ratio_p50": results.ratio(config, mode, "p50"),
                    "cpu_us_per_call_median": results.cpu_us(config.name, mode),
                    "cpu_versus_reference_us": results.cpu_versus(config, mode),
                }
                for mode in MODES
            },
            "client": {
                "ttfb_ms": figures.ttfb_ms,
                "stream_ms": figures.stream_ms,
                "plain_ms": figures.plain_ms,
                "header_ms": figures.header_ms,
                "errors": figures.errors,
                **{
                    f"{kind}_overhead_ms": {
                        p: results.client_overhead(config, kind, p) for p in PERCENTILES
                    }
                    for kind in KINDS
                },
                **{
                    f"{kind}_versus_reference_ms": {
                        p: results.client_versus(config, kind, p) for p in PERCENTILES
                    }
                    for kind in KINDS
                },
            },
        }

    directs = {
        DIRECT[api]: {
            "wrk": {
                mode: _series_json(results.series.get(series_key(DIRECT[api], mode), Series("")))
                for mode in MODES
            },
            "client": {
                f"{kind}_ms": results.client.get(DIRECT[api], ClientFigures()).summary(kind)
                for kind in KINDS
            },
        }
        for api in ("openai", "anthropic")
    }
    return {
        "rounds": results.rounds,
        "seconds": results.seconds,
        "warmup_s": results.warmup_s,
        "client_calls": results.client_calls,
        "commit": results.commit,
        "baseline": None
        if results.baseline is None
        else {
            "path": results.baseline.path,
            "commit": results.baseline.commit,
            "python": results.baseline.python,
        },
        "skipped": results.skipped,
        "load": results.load,
        "direct": directs,
        "configs": [config_json(config) for config in SPECS],
        "targets": [
            {"target": v.target, "measured": v.measured, "met": v.met} for v in verdicts(results)
        ],
    }
