"""What a provider dialect costs a call: the verdicts on issue 12's targets and the report.

The markdown section of bench/dialects.py's figures (the verdicts, the wrk table, the
one-at-a-time client's table) and its JSON. Pure: the figures and their aggregation are
bench/dialects_results.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.dialects_results import (
    API_TEXT,
    BEFORE,
    DIRECT,
    KINDS,
    MODES,
    PERCENTILES,
    SPECS,
    ClientFigures,
    DialectResults,
    DialectSpec,
    series_key,
    spec,
)
from bench.rounds import Series
from bench.tables import VERDICT_TEXT, count, number, table


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
                    number(series.latency("p50")),
                    number(series.latency("p99")),
                    *("",) * 8,
                    count(series.rps),
                    str(series.error_count),
                    count(results.cpu_us(DIRECT[api], mode)),
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
                    number(series.latency("p50")),
                    number(series.latency("p99")),
                    *(number(results.overhead(config, mode, p), sign=True) for p in PERCENTILES),
                    f"({reference.id})"
                    if reference and reference.name not in results.skipped
                    else "",
                    *(number(results.versus(config, mode, p), 3, sign=True) for p in PERCENTILES),
                    "-" if ratio is None else f"{ratio:.2f}x",
                    count(series.rps),
                    str(series.error_count),
                    count(results.cpu_us(config.name, mode)),
                    number(results.cpu_versus(config, mode), 0, sign=True),
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
                count(figures.ttfb_ms["n"]),
                number(figures.ttfb_ms.get("p50")),
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
                count(figures.ttfb_ms["n"]),
                number(figures.ttfb_ms.get("p50")),
                number(overhead(config, "ttfb", "p50"), sign=True),
                number(overhead(config, "ttfb", "p99"), sign=True),
                f"({reference.id})" if reference and reference.name not in results.skipped else "",
                number(versus(config, "ttfb", "p50"), 3, sign=True),
                number(versus(config, "ttfb", "p99"), 3, sign=True),
                number(overhead(config, "stream", "p50"), sign=True),
                number(versus(config, "stream", "p50"), 3, sign=True),
                number(overhead(config, "plain", "p50"), sign=True),
                number(versus(config, "plain", "p50"), 3, sign=True),
                number(figures.header_ms.get("p50"), 3),
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
    lines += table(
        ("target", "measured", "met"),
        [[v.target, v.measured, VERDICT_TEXT[v.met]] for v in verdicts(results)],
    )
    lines += ["", "wrk, whole responses:", ""]
    lines += table(WRK_HEADER, wrk_rows(results))
    rows = client_rows(results)
    if rows:
        lines += ["", "One call at a time (asyncio client):", ""]
        lines += table(CLIENT_HEADER, rows)
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
