"""The dialect benchmark (bench/dialects.py): its configurations, calls, aggregation, targets and
report, and one very short real run (wrk, the simulator and three gateways) whose report must
hold measured numbers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import dialects, procs, run, wrk
from bench.dialects_report import render, to_json, verdicts
from bench.dialects_results import (
    DIRECT,
    SPECS,
    ClientFigures,
    DialectResults,
    Process,
    series_key,
    spec,
    target_names,
)
from bench.report import Results
from bench.report import render as render_all
from bench.rounds import Series
from gateway.settings import parse_settings

REPOSITORY = Path(__file__).resolve().parents[2]


def result(p50: float, p99: float, requests: int = 1000) -> wrk.WrkResult:
    return wrk.WrkResult(
        requests=requests,
        duration_s=1.0,
        errors={"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
        latency_ms={"mean": p50, "stdev": 0.0, "max": p99, "p50": p50, "p90": p50, "p99": p99},
    )


@pytest.mark.parametrize("process", ["baseline", "current", "dialects"])
def test_configs_are_valid_and_route_each_dialect(process: Process) -> None:
    settings = parse_settings(dialects.gateway_config(process, 9000, 9001), environ={})
    assert not settings.capture.enabled
    assert settings.routes[dialects.ROUTE].variants["only"].model == dialects.UPSTREAM_MODEL
    if process == "dialects":
        assert settings.providers["claude"].api == "anthropic"
        assert settings.providers["sim"].api == "openai"
        route = settings.routes[dialects.CLAUDE_ROUTE]
        assert route.variants["only"].model == dialects.CLAUDE_MODEL
    else:  # the baseline's config must be one the gateway before dialects could read
        assert list(settings.providers) == ["sim"] and list(settings.routes) == [dialects.ROUTE]
        assert "api" not in dialects.gateway_config(process, 9000, 9001)["providers"]["sim"]


def test_each_configuration_calls_its_route_in_its_dialect() -> None:
    for config in SPECS:
        model, upstream = dialects.route_for(config)
        if config.upstream == "anthropic":
            assert (model, upstream) == (dialects.CLAUDE_ROUTE, dialects.CLAUDE_MODEL)
        else:
            assert (model, upstream) == (dialects.ROUTE, dialects.UPSTREAM_MODEL)
    references = {s.name: s.reference for s in SPECS if s.reference is not None}
    assert references == {
        "now": "before",
        "openai-anthropic": "openai-openai",
        "anthropic-anthropic": "openai-openai",
        "anthropic-openai": "anthropic-anthropic",
    }
    for name, reference in references.items():  # a same-dialect call; of the same process
        other = spec(reference)  # except (b), compared with the older gateway
        assert other.inbound == other.upstream
        assert (spec(name).process == other.process) == (name != "now")


def test_the_anthropic_call_is_post_luas_with_api_anthropic() -> None:
    load = wrk.Load("http://127.0.0.1:1/v1/messages", "bench-claude", 1, True, 0, api="anthropic")
    argv = wrk.command("wrk", load, 2, threads=1)
    assert argv[argv.index("--") + 1 :][-1] == "api=anthropic"
    plain = wrk.Load("http://127.0.0.1:1/v1/chat/completions", "m", 1, False, 0)
    assert not any(arg.startswith("api=") for arg in wrk.command("wrk", plain, 2, threads=1))
    lua = wrk.SCRIPT.read_text()
    data = json.loads(dialects.anthropic_body("bench-claude", True))
    assert data["system"] in lua and data["messages"][0]["content"] in lua
    assert data["max_tokens"] == 16 and data["stream"] is True
    assert '"system":"' in lua and 'wrk.headers["anthropic-version"] = "2023-06-01"' in lua
    assert dialects.headers("anthropic")["anthropic-version"] == "2023-06-01"
    assert "authorization" not in dialects.headers("anthropic")
    assert b'"system":"' not in dialects.body("openai", "m", False)
    assert dialects.stream_complete("anthropic", b'event: message_stop\ndata: {"type"')
    assert not dialects.stream_complete("openai", b'event: message_stop\ndata: {"type"')


def test_a_round_runs_each_configuration_beside_its_reference() -> None:
    names = target_names()
    first, second = dialects.paired_order(names, 0), dialects.paired_order(names, 1)
    assert (
        sorted(first)
        == sorted(second)
        == sorted(series_key(name, mode) for name in names for mode in ("plain", "stream"))
    )
    assert first[:3] == ["direct-openai/plain", "before/plain", "now/plain"]
    assert second[:2] == ["anthropic-openai/stream", "anthropic-anthropic/stream"]
    for order in (first, second):
        for config in SPECS:
            if config.reference is None or config.name == "anthropic-anthropic":
                continue  # (e) is two runs from (c): (d) and the Anthropic direct come between
            for mode in ("plain", "stream"):
                mine = order.index(series_key(config.name, mode))
                theirs = order.index(series_key(config.reference, mode))
                assert abs(mine - theirs) == 1, (config.name, mode)
    # Which of the pair runs first alternates.
    assert first.index("before/plain") < first.index("now/plain")
    assert second.index("before/plain") > second.index("now/plain")
    without = dialects.paired_order([n for n in names if n != "before"], 0)
    assert "before/plain" not in without and len(without) == 14


def test_arguments_select_the_part_and_shorten_it() -> None:
    quick = run.parse_args(["--quick", "--only", "dialects"])
    assert (quick.dialects_rounds, quick.dialects_seconds, quick.dialects_calls) == (2, 1, 100)
    assert run._selected(quick, "dialects") and not run._selected(quick, "features")
    assert quick.dialects_baseline is None
    full = run.parse_args(["--dialects-baseline", "/tmp/base"])
    assert (full.dialects_rounds, full.dialects_seconds, full.dialects_calls) == (7, 2, 1000)
    assert full.dialects_baseline == Path("/tmp/base") and run._selected(full, "dialects")
    assert not run._selected(run.parse_args(["--only", "features"]), "dialects")


def test_a_baseline_is_run_from_its_own_checkout(tmp_path: Path) -> None:
    empty = dialects.baseline_interpreter(tmp_path)
    assert empty.env["PYTHONPATH"] == str(tmp_path.resolve())
    assert empty.python == sys.executable
    # The checkout has no gateway package: `gateway` would come from elsewhere, so it must not
    # start as if it were the baseline.
    with pytest.raises(procs.StartError, match="imported from"):
        dialects.start_gateway("baseline", "baseline", empty, tmp_path, 1)
    assert dialects.gateway_origin(dialects.current_interpreter(), tmp_path) == REPOSITORY
    venv = tmp_path / "with-venv" / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    own = dialects.baseline_interpreter(tmp_path / "with-venv")
    assert own.python == str(venv / "python") and "PYTHONPATH" not in own.env


def sample() -> DialectResults:
    """Three rounds; overheads chosen so each verdict is known."""
    results = DialectResults(
        rounds=3, seconds=3, warmup_s=1, client_calls=100, commit="abc1234", load={"start": 1.0}
    )
    direct = {"openai": (0.20, 0.22, 0.20), "anthropic": (0.10, 0.12, 0.10)}
    gateway = {  # overhead over the upstream's direct, per round
        "before": (0.40, 0.40, 0.40),
        "now": (0.43, 0.44, 0.43),  # +0.03, +0.04, +0.03 vs before: met
        "openai-openai": (0.40, 0.41, 0.40),
        "openai-anthropic": (0.60, 0.61, 0.60),  # +0.20 vs (c): not met
        "anthropic-anthropic": (0.40, 0.41, 0.40),
        "anthropic-openai": (0.50, 0.50, 0.50),
    }
    cpu_s = {"now": 0.31, "openai-anthropic": 0.33}
    for api, values in direct.items():
        for mode in ("plain", "stream"):
            runs: list[wrk.WrkResult | None] = [result(v, v * 2) for v in values]
            results.series[series_key(DIRECT[api], mode)] = Series(DIRECT[api], runs)
    for config in SPECS:
        totals = [b + o for b, o in zip(direct[config.upstream], gateway[config.name], strict=True)]
        for mode in ("plain", "stream"):
            runs = [result(total, total * 2) for total in totals]
            cpu = [cpu_s.get(config.name, 0.3)] * 3  # CPU seconds per run of 1000 calls
            results.series[series_key(config.name, mode)] = Series(config.name, runs, cpu)
    results.series[series_key("openai-anthropic", "stream")].cpu_s[2] = 0.9  # a busy round
    now = results.series[series_key("now", "plain")]
    now.runs[1] = None  # a failed run is left out, and has no CPU time
    del now.cpu_s[1]
    ttfb = {
        DIRECT["openai"]: 0.40,
        DIRECT["anthropic"]: 0.50,
        "before": 0.90,
        "now": 0.92,
        "openai-openai": 0.90,
        "openai-anthropic": 1.10,  # overhead 0.60 vs (c)'s 0.50: +0.10, met
        "anthropic-anthropic": 1.00,
        "anthropic-openai": 0.95,
    }
    for name, p50 in ttfb.items():
        summary = {"n": 100, "p50": p50, "p90": p50 + 0.1, "p99": p50 + 0.5}
        whole = {"n": 100, "p50": p50 * 2, "p90": p50 * 2, "p99": p50 * 3}
        results.client[name] = ClientFigures(summary, whole, summary, {"n": 100, "p50": 0.06})
    return results


def test_overheads_are_over_the_upstream_dialects_direct() -> None:
    results = sample()
    assert results.overhead(spec("openai-anthropic"), "stream", "p50") == pytest.approx(0.60)
    assert results.overheads(spec("now"), "plain", "p50")[1] is None
    assert results.versus(spec("now"), "plain", "p50") == pytest.approx(0.03)
    assert results.versus(spec("openai-anthropic"), "stream", "p50") == pytest.approx(0.20)
    assert results.ratio(spec("openai-anthropic"), "stream", "p50") == pytest.approx(1.5)
    assert results.versus(spec("anthropic-openai"), "plain", "p50") == pytest.approx(0.10)
    translated = spec("openai-anthropic")
    assert results.client_overhead(translated, "ttfb", "p50") == pytest.approx(0.60)
    assert results.client_versus(translated, "ttfb", "p50") == pytest.approx(0.10)
    assert results.client_overhead(translated, "stream", "p50") == pytest.approx(1.20)
    assert results.client_versus(translated, "stream", "p50") == pytest.approx(0.20)
    assert results.client_versus(spec("now"), "plain", "p50") == pytest.approx(0.02)
    assert results.versus(spec("openai-openai"), "plain", "p50") is None
    assert results.cpu_us("now", "plain") == pytest.approx(310)
    assert results.cpu_versus(spec("openai-anthropic"), "stream") == pytest.approx(30)
    assert results.cpu_versus(spec("openai-openai"), "stream") is None


def test_verdicts_mark_each_target() -> None:
    found = verdicts(sample())
    assert found[0].measured == (
        "+0.030 ms (b) vs (a) (one at a time: +0.020 ms; gateway CPU +10 µs/call)"
    )
    assert found[2].measured == (
        "+0.200 ms (d) vs (c) (one at a time: +0.200 ms; gateway CPU +30 µs/call)"
    )
    marks = [(v.target.split(":")[0], v.measured.split()[0], v.met) for v in found]
    assert marks == [
        ("a same-dialect call costs what it costs today", "+0.030", True),
        ("a same-dialect call costs what it costs today", "+0.030", True),
        ("a translated call (OpenAI in, Anthropic out)", "+0.200", False),
        ("a translated call (OpenAI in, Anthropic out)", "+0.100", True),
    ]


def test_without_a_baseline_the_first_target_is_not_measured() -> None:
    results = sample()
    del results.series[series_key("before", "plain")], results.series["before/stream"]
    del results.client["before"]
    results.skipped["before"] = "no --dialects-baseline"
    first = verdicts(results)[0]
    assert first.met is None and "one at a time" not in first.measured
    assert "no --dialects-baseline" in first.measured and "+0.430 ms" in first.measured
    text = render(results)
    assert "(a) not measured (no --dialects-baseline)" in text
    assert "not measured: no --dialects-baseline" in text


def test_the_section_is_in_the_report_and_its_json() -> None:
    results = Results(
        command="make bench",
        date="2025-01-01 00:00 UTC",
        machine={"nproc": "2", "cpu": "Test CPU", "system": "Linux", "python": "3.11"},
        method={"wrk": "wrk 4.1.0", "threads": 1, "duration_s": 8, "warmup_s": 1},
        start_seconds=0.9,
        dialects=sample(),
    )
    text = render_all(results)
    assert "### Dialects (c=1, upstream delay 0)" in text
    assert "| (d) OpenAI -> Anthropic (translated), the same gateway as (c) | stream |" in text
    assert "**no**" in text and "1.50x" in text
    assert "| 1,000 | 0 | 310 | +10 |" in text
    widths: dict[str, int] = {}
    for line in text.split("### Dialects")[1].splitlines():
        if line.startswith("| configuration |"):
            widths["current"] = line.count("|")
        elif line.startswith("| (") or line.startswith("| direct"):
            assert line.count("|") == widths["current"], line
    data = to_json(sample())
    translated = next(c for c in data["configs"] if c["name"] == "openai-anthropic")
    assert translated["wrk"]["stream"]["versus_reference_ms"]["p50"] == pytest.approx(0.20)
    assert translated["client"]["ttfb_versus_reference_ms"]["p50"] == pytest.approx(0.10)
    assert translated["client"]["stream_overhead_ms"]["p50"] == pytest.approx(1.20)
    assert [t["met"] for t in data["targets"]] == [True, True, False, True]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench does)")
def test_a_short_real_run_reports_measured_numbers(tmp_path: Path) -> None:
    """The whole part, very briefly, with this checkout as its own baseline (CI has no worktree
    of an older commit; the baseline's machinery is the same)."""
    argv = [
        sys.executable,
        "-m",
        "bench.run",
        "--only",
        "dialects",
        "--warmup",
        "0",
        "--dialects-rounds",
        "1",
        "--dialects-seconds",
        "1",
        "--dialects-calls",
        "20",
        "--dialects-baseline",
        str(REPOSITORY),
        "--out-dir",
        str(tmp_path),
    ]
    done = subprocess.run(
        argv, cwd=REPOSITORY, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())["dialects"]
    assert data["skipped"] == {} and data["baseline"]["path"] == str(REPOSITORY)
    for config in data["configs"]:
        for mode in ("plain", "stream"):
            figures = config["wrk"][mode]
            (only,) = figures["runs"]
            assert only["requests"] > 50 and only["errors"]["status"] == 0, config["name"]
            assert 0 < figures["p50_ms"] <= figures["p99_ms"] < 1000
            assert isinstance(figures["overhead_ms"]["p50"], float)
            assert 20 < figures["cpu_us_per_call_median"] < 100_000, config["name"]
        client = config["client"]
        assert client["ttfb_ms"]["n"] == client["stream_ms"]["n"] == client["plain_ms"]["n"] == 20
        assert client["stream_ms"]["p50"] > client["ttfb_ms"]["p50"]
        assert client["errors"] == 0 and client["header_ms"]["p50"] > 0
        assert isinstance(client["ttfb_overhead_ms"]["p50"], float)
        if config["reference"] is not None:
            assert isinstance(config["wrk"]["stream"]["versus_reference_ms"]["p50"], float)
    for direct in data["direct"].values():
        assert direct["client"]["ttfb_ms"]["n"] == 20
        assert direct["wrk"]["plain"]["p50_ms"] > 0
    assert len(data["targets"]) == 4
    assert all(target["met"] in (True, False) for target in data["targets"])
    text = (tmp_path / "latest.md").read_text()
    assert "### Dialects (c=1, upstream delay 0)" in text
    assert "| (f) Anthropic -> OpenAI (translated), the same gateway as (c) | stream | " in text
    assert "not measured" not in text.split("### Dialects")[1]
