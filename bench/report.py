"""The benchmark's results: what was measured, the issue's targets, and the markdown report."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import capture_size_report, dialects_report, features_report, tail_report
from bench.dialects_results import DialectResults
from bench.features_report import FeatureResults
from bench.tail_report import TailResults
from bench.wrk import WrkResult

MIB = 1024 * 1024


@dataclass
class Cell:
    """One point of the matrix, run against both targets."""

    mode: str
    """``plain`` (a JSON answer) or ``stream`` (server-sent events)."""
    connections: int
    delay_ms: int
    """The simulated upstream's time to first token (x-sim-ttft-ms); tokens take 0 ms."""
    direct: WrkResult | None = None
    gateway: WrkResult | None = None
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per run (direct, gateway): each process's CPU time over the run's wall time (1.0: a core)."""

    @property
    def id(self) -> str:
        return f"{self.mode}/c{self.connections}/d{self.delay_ms}"

    def overhead_ms(self, percentile: str) -> float | None:
        """Gateway minus direct at one percentile (a difference of percentiles)."""
        if self.direct is None or self.gateway is None:
            return None
        return self.gateway.latency_ms[percentile] - self.direct.latency_ms[percentile]

    @property
    def rps_ratio(self) -> float | None:
        if self.direct is None or self.gateway is None or self.direct.rps == 0:
            return None
        return self.gateway.rps / self.direct.rps


@dataclass
class MemoryPoint:
    label: str
    calls: int
    """Calls the gateway had answered when the sample was taken."""
    rss_bytes: int


@dataclass
class Results:
    command: str
    date: str
    machine: dict[str, str]
    method: dict[str, Any]
    start_seconds: float
    """From spawning ``gateway serve`` to its first answered chat call."""
    cells: list[Cell] = field(default_factory=list)
    ttfb_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per target, the summary of streamed calls' time to first body chunk."""
    plain_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per target, the summary of plain calls' total time, from the same client."""
    reported_overhead_ms: dict[str, float] = field(default_factory=dict)
    client_errors: dict[str, int] = field(default_factory=dict)
    memory: list[MemoryPoint] = field(default_factory=list)
    features: FeatureResults | None = None
    """What each gateway feature adds (bench/features.py), when that part ran."""
    dialects: DialectResults | None = None
    """What a provider dialect costs (bench/dialects.py), when that part ran."""
    capture_size: dict[str, Any] | None = None
    """Bytes per captured call, write rate and prune (bench/capture_size.py), when that part
    ran."""
    tail: TailResults | None = None
    """Each component's share of the tail (bench/tail.py), when that part ran."""

    def cell(self, cell_id: str) -> Cell | None:
        return next((c for c in self.cells if c.id == cell_id and c.gateway is not None), None)

    def memory_ratio(self) -> float | None:
        by_label = {point.label: point for point in self.memory}
        low, high = by_label.get("first"), by_label.get("second")
        if low is None or high is None or low.rss_bytes == 0:
            return None
        return high.rss_bytes / low.rss_bytes


@dataclass(frozen=True)
class Check:
    target: str
    measured: str
    met: bool | None
    """None: not measured in this run."""


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count() or 0),
        "cpu": cpu,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def _ms(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def _mib(value: int) -> str:
    return f"{value / MIB:.1f}"


def _int(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _cell_checks(results: Results, mode: str) -> list[Check]:
    suffix = "" if mode == "plain" else ", streamed"
    checks: list[Check] = []

    def add(cell_id: str, target: str, figure: Callable[[Cell], tuple[str, bool]]) -> None:
        cell = results.cell(cell_id)
        if cell is None:
            checks.append(Check(target + suffix, "not measured", None))
        else:
            text, met = figure(cell)
            checks.append(Check(target + suffix, text, met))

    def overhead(cell: Cell, percentile: str, limit: float) -> tuple[str, bool]:
        value = cell.overhead_ms(percentile)
        assert value is not None
        return f"{value:+.2f} ms", value <= limit

    if mode == "plain":
        add(
            f"{mode}/c1/d0",
            "c=1, delay 0: overhead p50 ≤ 0.6 ms",
            lambda c: overhead(c, "p50", 0.6),
        )
        add(f"{mode}/c1/d0", "c=1, delay 0: overhead p99 ≤ 2 ms", lambda c: overhead(c, "p99", 2.0))

    def throughput(cell: Cell) -> tuple[str, bool]:
        assert cell.gateway is not None
        return f"{cell.gateway.rps:,.0f} calls/s", cell.gateway.rps >= 2000

    def share(cell: Cell) -> tuple[str, bool]:
        assert cell.gateway is not None and cell.direct is not None
        ratio = cell.rps_ratio or 0.0
        return (
            f"{ratio:.0%} ({cell.gateway.rps:,.0f} vs {cell.direct.rps:,.0f} calls/s)",
            ratio >= 0.85,
        )

    def no_errors(cell: Cell) -> tuple[str, bool]:
        assert cell.gateway is not None and cell.direct is not None
        errors = cell.gateway.error_count
        return f"{errors} (direct {cell.direct.error_count})", errors == 0

    add(f"{mode}/c10/d0", "c=10, delay 0: ≥ 2,000 gateway calls/s", throughput)
    add(f"{mode}/c50/d50", "c=50, delay 50 ms: ≥ 85% of direct calls/s", share)
    add(
        f"{mode}/c50/d50",
        "c=50, delay 50 ms: overhead p99 ≤ 15 ms",
        lambda c: overhead(c, "p99", 15.0),
    )
    add(f"{mode}/c50/d50", "c=50, delay 50 ms: no errors", no_errors)
    return checks


def checks(results: Results) -> list[Check]:
    """The issue's targets next to the figures of this run."""
    out = _cell_checks(results, "plain")
    direct, gateway = results.ttfb_ms.get("direct", {}), results.ttfb_ms.get("gateway", {})
    if direct.get("n") and gateway.get("n"):
        ttfb = gateway["p50"] - direct["p50"]
        out.append(Check("streaming TTFB overhead p50 ≤ 0.8 ms", f"{ttfb:+.2f} ms", ttfb <= 0.8))
    else:
        out.append(Check("streaming TTFB overhead p50 ≤ 0.8 ms", "not measured", None))
    out.extend(_cell_checks(results, "stream"))
    out.append(
        Check(
            "start to first answered call < 1.5 s",
            f"{results.start_seconds:.2f} s",
            results.start_seconds < 1.5,
        )
    )
    ratio = results.memory_ratio()
    points = {point.label: point for point in results.memory}
    if ratio is None:
        out.append(Check("RSS after 50k calls within 10% of after 5k", "not measured", None))
    else:
        label = (
            f"RSS after {points['second'].calls:,} calls within 10% of after "
            f"{points['first'].calls:,}"
        )
        out.append(Check(label, f"{ratio:.3f}x", abs(ratio - 1.0) <= 0.10))
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _cpu(shares: dict[str, float], *names: str) -> str:
    if not all(name in shares for name in names):
        return "-"
    return " + ".join(f"{shares[name]:.0%}" for name in names)


def _matrix(results: Results) -> list[str]:
    header = [
        "call",
        "c",
        "delay ms",
        "p50 direct",
        "p50 gateway",
        "overhead p50",
        "p99 direct",
        "p99 gateway",
        "overhead p99",
        "calls/s direct",
        "calls/s gateway",
        "gateway / direct",
        "errors direct / gateway",
        "CPU direct: sim",
        "CPU gateway: sim + gw",
    ]
    rows = []
    for cell in results.cells:
        d, g = cell.direct, cell.gateway
        if d is None or g is None:
            continue
        rows.append([
            cell.mode, str(cell.connections), str(cell.delay_ms),
            _ms(d.latency_ms["p50"]), _ms(g.latency_ms["p50"]), _ms(cell.overhead_ms("p50"), True),
            _ms(d.latency_ms["p99"]), _ms(g.latency_ms["p99"]), _ms(cell.overhead_ms("p99"), True),
            _int(d.rps), _int(g.rps), f"{cell.rps_ratio or 0:.2f}",
            f"{d.error_count} / {g.error_count}",
            _cpu(cell.cpu.get("direct", {}), "simulator"),
            _cpu(cell.cpu.get("gateway", {}), "simulator", "gateway"),
        ])  # fmt: skip
    return _table(header, rows)


def _client_rows(name: str, summaries: dict[str, dict[str, float]]) -> list[list[str]]:
    direct, gateway = summaries.get("direct", {}), summaries.get("gateway", {})
    if not direct.get("n") or not gateway.get("n"):
        return []
    keys = ("p50", "p90", "p99", "mean")
    rows = [
        [f"{name}, direct", _int(direct["n"]), *(_ms(direct[k]) for k in keys)],
        [f"{name}, gateway", _int(gateway["n"]), *(_ms(gateway[k]) for k in keys)],
        [f"{name}, overhead", "", *(_ms(gateway[k] - direct[k], True) for k in keys)],
    ]
    return rows


def render(results: Results) -> str:
    m, how = results.machine, results.method
    lines = [
        "## Benchmarks",
        "",
        f"Command: `{results.command}`  ",
        f"Date: {results.date}  ",
        f"Machine: {m['nproc']} CPU ({m['cpu']}), {m['system']}, Python {m['python']}, "
        f"{how['wrk']}; load average at start {how.get('load_at_start', '?')}",
        "",
        f"Method: wrk `-t{how['threads']}` (one load thread: the {m['nproc']} cores are shared by "
        "wrk, the simulator and the gateway, and a second wrk thread would only take CPU from "
        f"them), {how['duration_s']} s per run after a {how['warmup_s']} s warm-up, direct and "
        "gateway runs of each cell back to back (order alternating by cell). The gateway runs "
        "one worker with key auth on and rewrites `model` (`bench-model` -> `gpt-4o-mini`); the "
        "simulator's profile has zero latency and each call sets `x-sim-ttft-ms` (the delay "
        "column) and `x-sim-token-ms: 0`. A chat call is a system and a user message with "
        "`max_tokens: 16`. Overhead is gateway minus direct at the same percentile. Times in ms. "
        "CPU is each process's CPU time over the run's wall time (100% = one core).",
        "",
        "### Targets",
        "",
    ]
    verdict = {True: "yes", False: "**no**", None: "-"}
    lines += _table(
        ["target", "measured", "met"],
        [[c.target, c.measured, verdict[c.met]] for c in checks(results)],
    )
    if results.cells:
        lines += ["", "### Latency and throughput (wrk, whole responses)", ""]
        lines += _matrix(results)
    rows = _client_rows("stream TTFB", results.ttfb_ms) + _client_rows("plain", results.plain_ms)
    if rows:
        lines += [
            "",
            "### One call at a time (asyncio client)",
            "",
            "Streamed calls are timed from sending the request to the first body chunk (TTFB); "
            "plain calls to the end of the answer. Direct and gateway calls alternate.",
            "",
        ]
        lines += _table(["", "calls", "p50", "p90", "p99", "mean"], rows)
        reported = results.reported_overhead_ms
        if reported.get("n"):
            lines += [
                "",
                f"The gateway's own `x-gateway-overhead-ms` on those plain calls: "
                f"p50 {_ms(reported['p50'])}, p90 {_ms(reported['p90'])}, "
                f"p99 {_ms(reported['p99'])} ms ({_int(reported['n'])} calls).",
            ]
        errors = results.client_errors
        if any(errors.values()):
            lines += ["", f"Client errors: {errors}."]
    if results.memory:
        lines += ["", "### Gateway memory (RSS)", ""]
        names = {"startup": "after startup", "end": "after the whole benchmark"}
        rows = [
            [names.get(p.label, f"after {p.calls:,} calls"), _int(p.calls), _mib(p.rss_bytes)]
            for p in results.memory
        ]
        lines += _table(["when", "calls answered", "RSS MiB"], rows)
    lines += [
        "",
        f"Start: {results.start_seconds:.2f} s from spawning `gateway serve` to its first "
        "answered chat call.",
        "",
    ]
    if results.features is not None:
        lines += [features_report.render(results.features)]
    if results.dialects is not None:
        lines += [dialects_report.render(results.dialects)]
    if results.capture_size is not None:
        lines += [capture_size_report.render(results.capture_size)]
    if results.tail is not None:
        lines += [tail_report.render(results.tail)]
    return "\n".join(lines)


def to_json(results: Results) -> dict[str, Any]:
    data = asdict(results)
    data["cells"] = [
        {
            "id": cell.id,
            "mode": cell.mode,
            "connections": cell.connections,
            "delay_ms": cell.delay_ms,
            "direct": cell.direct.to_json() if cell.direct else None,
            "gateway": cell.gateway.to_json() if cell.gateway else None,
            "overhead_ms": {p: cell.overhead_ms(p) for p in ("p50", "p90", "p99", "p99.9")},
            "rps_ratio": cell.rps_ratio,
            "cpu": cell.cpu,
        }
        for cell in results.cells
    ]
    data["memory_ratio"] = results.memory_ratio()
    data["targets"] = [asdict(check) for check in checks(results)]
    data["features"] = (
        features_report.to_json(results.features) if results.features is not None else None
    )
    data["dialects"] = (
        dialects_report.to_json(results.dialects) if results.dialects is not None else None
    )
    data["tail"] = tail_report.to_json(results.tail) if results.tail is not None else None
    return data
