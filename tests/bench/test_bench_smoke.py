"""The benchmark's pure parts: reading wrk's result line, statistics, targets, the report.

Nothing here starts wrk, the gateway or the simulator.
"""

from __future__ import annotations

import pytest

from bench import run, wrk
from bench.report import Cell, MemoryPoint, Results, checks, render, to_json
from bench.stats import percentile, summarize

WRK_STDOUT = """\
Running 2s test @ http://127.0.0.1:9911/v1/chat/completions
  1 threads and 2 connections
  13608 requests in 2.10s, 40.19MB read
Requests/sec:   6481.02
BENCH_JSON {"requests":13608,"duration_us":2099668,"bytes":42144493,\
"errors":{"connect":0,"read":0,"write":0,"status":3,"timeout":1},\
"latency_us":{"mean":309.9,"stdev":96.7,"max":2028,"p50":306,"p90":416,"p99":607,"p99.9":1274}}
"""


def result(p50: float, p99: float, requests: int, errors: int = 0) -> wrk.WrkResult:
    latency = {"mean": p50, "stdev": 0.1, "max": p99, "p50": p50, "p90": p50, "p99": p99}
    return wrk.WrkResult(
        requests=requests,
        duration_s=1.0,
        errors={"connect": 0, "read": 0, "write": 0, "status": errors, "timeout": 0},
        latency_ms={**latency, "p99.9": p99},
    )


def test_parse_output_reads_the_json_line_only() -> None:
    parsed = wrk.parse_output(WRK_STDOUT)
    assert parsed.requests == 13608
    assert parsed.duration_s == pytest.approx(2.099668)
    assert parsed.rps == pytest.approx(13608 / 2.099668)
    assert parsed.latency_ms["p50"] == pytest.approx(0.306)
    assert parsed.latency_ms["p99.9"] == pytest.approx(1.274)
    assert parsed.errors["status"] == 3
    assert parsed.error_count == 4


def test_parse_output_without_the_line_is_an_error() -> None:
    with pytest.raises(wrk.WrkError):
        wrk.parse_output("Running 2s test\nRequests/sec: 100\n")


def test_command_passes_the_load_to_the_lua_script() -> None:
    load = wrk.Load("http://127.0.0.1:1/v1/chat/completions", "bench-model", 1, True, 50)
    argv = wrk.command("wrk", load, 8, threads=2)
    assert argv[1:4] == ["-t1", "-c1", "-d8s"]  # never more threads than connections
    assert str(wrk.SCRIPT) in argv and wrk.SCRIPT.exists()
    assert argv[argv.index("--") + 1 :] == [
        "model=bench-model",
        "stream=1",
        "ttft=50",
        "token=0",
        "key=sk-bench",
    ]


def test_percentiles_interpolate() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile([3.0], 99) == 3.0
    summary = summarize(values)
    assert summary["n"] == 100 and summary["p99"] == pytest.approx(99.01)
    assert summarize([]) == {"n": 0}


def sample_results() -> Results:
    results = Results(
        command="make bench",
        date="2025-01-01 00:00 UTC",
        machine={"nproc": "2", "cpu": "Test CPU", "system": "Linux", "python": "3.11"},
        method={"wrk": "wrk 4.1.0", "threads": 1, "duration_s": 8, "warmup_s": 1},
        start_seconds=0.9,
    )
    results.cells = [
        Cell("plain", 1, 0, direct=result(0.2, 0.4, 5000), gateway=result(0.6, 1.0, 2000)),
        Cell("plain", 10, 0, direct=result(1.0, 2.0, 8000), gateway=result(3.0, 6.0, 2500)),
        Cell("plain", 50, 50, direct=result(50.5, 53, 990), gateway=result(51, 70, 800, 2)),
    ]
    results.cells[0].cpu = {
        "direct": {"simulator": 0.5},
        "gateway": {"simulator": 0.4, "gateway": 0.9},
    }
    results.ttfb_ms = {
        "direct": {"n": 10, "p50": 0.4, "p90": 0.5, "p99": 0.6, "mean": 0.4},
        "gateway": {"n": 10, "p50": 0.9, "p90": 1.0, "p99": 1.2, "mean": 0.9},
    }
    results.memory = [
        MemoryPoint("startup", 1, 60 << 20),
        MemoryPoint("first", 5000, 62 << 20),
        MemoryPoint("second", 50000, 70 << 20),
    ]
    return results


def test_checks_mark_each_target() -> None:
    verdicts = {check.target: check.met for check in checks(sample_results())}
    assert verdicts["c=1, delay 0: overhead p50 ≤ 0.6 ms"] is True  # +0.4
    assert verdicts["c=10, delay 0: ≥ 2,000 gateway calls/s"] is True
    assert verdicts["c=50, delay 50 ms: ≥ 85% of direct calls/s"] is False  # 81%
    assert verdicts["c=50, delay 50 ms: overhead p99 ≤ 15 ms"] is False  # +17
    assert verdicts["c=50, delay 50 ms: no errors"] is False
    assert verdicts["streaming TTFB overhead p50 ≤ 0.8 ms"] is True
    assert verdicts["c=10, delay 0: ≥ 2,000 gateway calls/s, streamed"] is None
    assert verdicts["start to first answered call < 1.5 s"] is True
    assert verdicts["RSS after 50,000 calls within 10% of after 5,000"] is False  # 70/62


def test_render_is_a_markdown_report_with_the_figures() -> None:
    results = sample_results()
    text = render(results)
    assert text.startswith("## Benchmarks")
    assert "`make bench`" in text and "Test CPU" in text and "`-t1`" in text
    assert "| plain | 1 | 0 | 0.20 | 0.60 | +0.40 |" in text
    assert "| 50% | 40% + 90% |" in text
    assert "**no**" in text
    for line in text.splitlines():  # every row of a table has as many cells as its header
        if line.startswith("| call |"):
            width = line.count("|")
        elif line.startswith("| plain |"):
            assert line.count("|") == width
    data = to_json(results)
    assert data["cells"][0]["id"] == "plain/c1/d0"
    assert data["memory_ratio"] == pytest.approx(70 / 62)


def test_arguments_quick_and_only() -> None:
    args = run.parse_args(["--quick", "--only", "plain/c1/*, ttfb"])
    assert args.duration == 1 and args.memory_counts == (1000, 10000)
    assert run._selected(args, "plain/c1/d50") and run._selected(args, "ttfb")
    assert not run._selected(args, "memory") and not run._selected(args, "stream/c1/d0")
    full = run.parse_args([])
    assert full.duration == 10 and full.memory_counts == (5000, 50000)
    with pytest.raises(SystemExit):
        run.parse_args(["--memory-calls", "500"])
