"""The tail benchmark (bench/tail.py, bench/tail_report.py): its configurations, the figures
derived from what a configuration measured, the targets and the report; and one very short real
run (wrk, the simulator, PostgreSQL, Redis, py-spy and two gateways) whose report must hold
measured numbers, the loop-lag windows' included.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cores, features_configs, loop_holds, run, tail, tail_report, wrk
from bench.loop_holds import holds, profile_from_collapsed
from bench.report import Results, render, to_json
from bench.tail_report import SPECS, TailResult, TailResults, spec, verdicts
from gateway.settings import hash_key, parse_settings

REPOSITORY = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
STORES = features_configs.Stores(
    sqlite_url="sqlite+aiosqlite:////tmp/x/capture-tail.db",
    postgres_url="postgresql+asyncpg://postgres@127.0.0.1:5432/bench_features_x",
    redis_url="redis://127.0.0.1:6379/0",
    redis_prefix="bench-features-x",
)


def result(p50: float, p99: float, requests: int, seconds: float = 1.0) -> wrk.WrkResult:
    return wrk.WrkResult(
        requests=requests,
        duration_s=seconds,
        errors={"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
        latency_ms={"mean": p50, "stdev": 0.0, "max": p99, "p50": p50, "p90": p50, "p99": p99},
    )


@pytest.mark.parametrize("config", SPECS, ids=lambda c: c.name)
def test_every_configuration_is_a_valid_gateway_config(config: tail_report.TailSpec) -> None:
    settings = parse_settings(tail.config_for(config, 9000, 9001, STORES), environ={})
    route = settings.routes[features_configs.ROUTE]
    key = settings.auth.keys[0]  # type: ignore[union-attr]
    assert key.digest() == hash_key(features_configs.KEY)
    assert settings.capture.enabled == (config.capture is not None)
    if config.capture == "postgres":
        assert settings.capture.database_url == STORES.postgres_url
    elif config.capture == "sqlite":
        assert settings.capture.database_url == STORES.sqlite_url
    if config.ab:
        assert route.sticky == "user" and {v.weight for v in route.variants.values()} == {50}
        assert len(route.variants) == 2
    else:
        assert list(route.variants) == ["only"] and route.sticky is None
    assert (key.rpm is not None, key.tpm is not None) == (config.limits, config.limits)
    assert (settings.redis is not None) == config.limits
    if settings.redis is not None:
        assert settings.redis.prefix == f"{STORES.redis_prefix}-{config.name}"
    assert {v.model for v in route.variants.values()} == {features_configs.UPSTREAM_MODEL}
    assert route.shadow is None and route.cache is None


def test_everything_on_is_every_component() -> None:
    everything = spec(tail_report.EVERYTHING)
    assert everything.capture == "postgres" and everything.limits and everything.ab
    assert everything.metrics
    base = spec(tail_report.BASE)
    assert (base.capture, base.limits, base.ab, base.metrics) == (None, False, False, False)


def test_unreachable_stores_skip_only_their_configurations() -> None:
    stores = features_configs.Stores(
        sqlite_url="sqlite+aiosqlite:///x.db", postgres_reason="down", redis_reason="no redis"
    )
    skipped = {s.name: tail.unavailable(s, stores) for s in SPECS}
    assert skipped == {
        "base": None,
        "capture-sqlite": None,
        "capture-postgres": "down",
        "limits-redis": "no redis",
        "ab-sticky": None,
        "metrics": None,
        "everything": "down",
    }


def test_arguments_quick_full_and_chosen_configurations() -> None:
    quick = run.parse_args(["--quick", "--only", "tail"])
    assert (quick.tail_calls, quick.tail_seconds) == (500, 2)
    assert [s.name for s in quick.tail_specs] == [s.name for s in SPECS]
    assert run._selected(quick, "tail") and not run._selected(quick, "features")
    full = run.parse_args(["--tail-configs", "everything, base"])
    assert (full.tail_calls, full.tail_seconds) == (2000, 8)
    assert [s.name for s in full.tail_specs] == ["base", "everything"]  # the table's order
    with pytest.raises(SystemExit):
        run.parse_args(["--tail-configs", "base,nope"])


def test_pinning_leaves_the_gateway_a_core_of_its_own() -> None:
    pinning = cores.plan_pinning()
    if pinning is None:
        pytest.skip("one core: nothing is pinned")
    assert pinning.gateway.isdisjoint(pinning.others)
    assert pinning.gateway | pinning.others == pinning.saved


SNAPSHOT = {
    "seq": 3,
    "lag": {
        "samples": 900,
        "above_ms": {"0.2": 12, "0.5": 7, "1": 4, "2": 1},
        "max_ms": 2.5,
        "total_above_ms": 11.0,
    },
    "busy": {"samples": 900, "above_ms": {"0.2": 9, "1": 2}, "max_ms": 1.9},
    "gc": {
        "0": {"samples": 40, "above_ms": {"0.2": 3, "1": 1}, "max_ms": 1.2},
        "2": {"samples": 1, "above_ms": {"0.2": 1, "1": 1}, "max_ms": 4.0},
    },
}


def sample() -> TailResults:
    results = TailResults(calls=1000, seconds=8, warmup_s=1, pinning="pinned")
    for config in SPECS:
        item = TailResult(config)
        if config.name == "capture-postgres":
            item.skipped = "PostgreSQL unreachable"
            results.configs.append(item)
            continue
        slow = config.name == tail_report.EVERYTHING
        item.c1_ms = {
            "direct": {"n": 1000, "p50": 0.20, "p90": 0.30, "p99": 0.50},
            "gateway": {"n": 1000, "p50": 0.55 if slow else 0.50, "p90": 1.0, "p99": 3.5},
        }
        item.ttfb_ms = {
            "direct": {"n": 1000, "p50": 0.25, "p99": 0.6},
            "gateway": {"n": 1000, "p50": 0.60, "p99": 1.0},
        }
        item.c1_own_ms = {"n": 1000, "p50": 0.04, "p99": 0.09}
        item.c1_cpu_us, item.c1_wait_us = 240.0, 31.5
        item.c10 = result(3.0, 6.0, 20_000, 8.0)
        item.c50 = result(16.0, 30.0, 24_000, 8.0)  # 3,000 calls/s
        item.c50_cpu_s = 7.2  # 300 µs per call
        item.d50 = {
            "direct": result(50.5, 53.0, 7_800, 8.0),
            "gateway": result(51.0, 60.0, 7_600, 8.0),  # 97.4%, +7 ms
        }
        item.start_s = 1.2 if slow else 0.9
        item.rss_idle, item.rss_peak = 90 * MIB, (104 if slow else 95) * MIB
        item.lag = {"c1": SNAPSHOT, "c50": SNAPSHOT}
        item.lag_calls = {"c1": 500, "c50": 24_000}
        results.configs.append(item)
    return results


def test_figures_are_differences_and_ratios_of_the_same_configuration() -> None:
    results = sample()
    base = results.config("base")
    assert base is not None
    assert base.overhead("p50") == pytest.approx(0.30)
    assert base.overhead("p90") == pytest.approx(0.70)
    assert base.overhead("p99") == pytest.approx(3.0)
    assert base.overhead("p50", "ttfb") == pytest.approx(0.35)
    assert base.overhead("p99.9") is None
    assert base.cpu_us_per_call == pytest.approx(300)
    assert base.d50_share == pytest.approx(7_600 / 7_800)
    assert base.d50_overhead_p99 == pytest.approx(7.0)
    assert TailResult(spec("base")).cpu_us_per_call is None
    assert TailResult(spec("base")).d50_share is None


def test_holds_are_read_from_the_sampler_snapshot() -> None:
    found = holds(SNAPSHOT)
    assert found is not None
    assert (found.samples, found.late_02, found.late_1, found.late_max_ms) == (900, 12, 4, 2.5)
    assert (found.busy_02, found.busy_1, found.busy_max_ms) == (9, 2, 1.9)
    assert (found.gc_above_1, found.gc_max_ms, found.gc_max_generation) == (2, 4.0, "2")
    assert holds(None) is None and holds({}) is None


def test_verdicts_mark_the_targets_on_everything_on() -> None:
    met = {v.target: (v.met, v.measured, v.base) for v in verdicts(sample())}
    assert met["c=1 overhead p50 ≤ 0.4 ms"] == (True, "+0.35 ms", "+0.30 ms")
    assert met["c=1 overhead p99 ≤ 1.5 ms"][0] is False
    assert met["streaming TTFB overhead p50 ≤ 0.4 ms"][0] is True
    assert met["≥ 3,000 calls/s at c=50 on one core"][0] is True
    assert met["50 ms upstream, c=50: ≥ 96% of direct calls/s"][0] is True
    assert met["50 ms upstream, c=50: overhead p99 ≤ 10 ms"][0] is True
    assert met["start to first answered call < 1 s"] == (False, "1.20 s", "0.90 s")
    assert met["peak RSS < 100 MiB"] == (False, "104.0 MiB", "95.0 MiB")
    empty = TailResults(calls=1, seconds=1, warmup_s=0, pinning="")
    assert {v.met for v in verdicts(empty)} == {None}


TOP = "thread (4242): MainThread;<module> (gateway/__main__.py:3);serve (/w/gateway/cli.py:108)"
WRITER = "_finish (/w/capture/writer.py:9);dumps (json/__init__.py:2)"
WORKER = "_connection_worker_thread (aiosqlite/core.py:63)"
COLLAPSED = f"""\
{TOP};run (asyncio/runners.py:1) 50
{TOP};{WRITER} 30
{TOP};{WRITER.replace(":2)", ":7)")} 10
thread (4250): Thread-2 (_connection_worker_thread);{WORKER} 6
thread (4251): Thread-3 (_connection_worker_thread);{WORKER} 4
not a line
"""


def test_profile_shares_by_innermost_frame_and_by_own_function() -> None:
    text = tail._collapse_lines(COLLAPSED.strip())
    profile = profile_from_collapsed("everything", text, tail.OWN_PACKAGES)
    assert profile.samples == 100 and profile.error is None
    assert profile.own[0] == ("run (asyncio/runners.py)", 0.5)
    assert profile.own[1] == ("dumps (json/__init__.py)", 0.4)
    assert profile.own[2] == ("_connection_worker_thread (aiosqlite/core.py)", 0.1)
    assert profile.threads == [
        ("MainThread", 0.9),
        ("Thread-* (_connection_worker_thread)", 0.1),
    ]
    inclusive = dict(profile.inclusive)
    assert inclusive["serve (/w/gateway/cli.py)"] == 0.9
    assert inclusive["_finish (/w/capture/writer.py)"] == 0.4
    assert "run (asyncio/runners.py)" not in inclusive
    assert profile_from_collapsed("x", "", tail.OWN_PACKAGES).error == "no samples"


STEPS = {
    "c1": {
        "calls": 500,
        "steps": {
            "RequestResponseCycle.run_asgi": {
                "wall": {"samples": 1500, "above_ms": {"0.2": 3, "1": 0}, "max_ms": 0.6},
                "cpu": {"samples": 1500, "above_ms": {"0.2": 2, "1": 0}, "max_ms": 0.5},
            },
        },
    },
    "c50": {
        "calls": 20_000,
        "steps": {
            "CaptureWriter._run": {
                "wall": {"samples": 80, "above_ms": {"0.2": 40, "1": 12}, "max_ms": 6.5},
                "cpu": {"samples": 80, "above_ms": {"0.2": 40, "1": 12}, "max_ms": 6.1},
                "own": {"samples": 80, "above_ms": {"0.2": 40, "1": 9}, "max_ms": 3.5},
            },
            "RequestResponseCycle.run_asgi": {
                "wall": {"samples": 60000, "above_ms": {"0.2": 30, "1": 2}, "max_ms": 1.4},
                "cpu": {"samples": 60000, "above_ms": {"0.2": 25, "1": 1}, "max_ms": 1.2},
            },
        },
    },
}


def test_steps_are_listed_by_their_longest_at_c50() -> None:
    rows = loop_holds.steps_rows(STEPS)
    assert rows == [
        ["`CaptureWriter._run`", "-", "-", "-", "80: 40 / 12", "6.50 ms (6.10)", "9, 3.50 ms"],
        [
            "`RequestResponseCycle.run_asgi`",
            "1,500: 3 / 0",
            "0.60 ms (0.50)",
            "-",  # a snapshot without the figures less collections
            "60,000: 30 / 2",
            "1.40 ms (1.20)",
            "-",
        ],
    ]
    assert loop_holds.steps_rows({}) == []


def test_the_section_is_in_the_report_and_its_json() -> None:
    results = Results(
        command="make bench",
        date="2025-01-01 00:00 UTC",
        machine={"nproc": "2", "cpu": "Test CPU", "system": "Linux", "python": "3.11"},
        method={"wrk": "wrk 4.1.0", "threads": 1, "duration_s": 8, "warmup_s": 1},
        start_seconds=0.9,
        tail=sample(),
    )
    assert results.tail is not None
    results.tail.steps = STEPS
    text = render(results)
    section = text.split("### The tail, component by component (issue 16)")[1]
    assert "not measured: PostgreSQL unreachable" in section
    assert "| base: one variant, capture off, no limits, no scrape | +0.30 ms | +3.00 ms |" in (
        section
    )
    assert "| 3,000 |" in section and "97.4%, +7.00 ms" in section and "90 / 95 MiB" in section
    assert "| 12 / 4 (24.0 / 8.0) | 2.50 ms | 9 / 2 (18.0 / 4.0) | 1.90 ms |" in section
    assert "| `CaptureWriter._run` | - | - | - | 80: 40 / 12 | 6.50 ms (6.10) | 9, 3.50 ms |" in (
        section
    )
    # Where the c=1 time goes: the end-to-end overheads beside the gateway's own time.
    assert "| +0.30 ms / +3.00 ms | 0.50 ms / 3.50 ms | 0.04 ms / 0.09 ms | 240 | 31.5 |" in section
    lines = section.splitlines()
    width = 0
    for index, line in enumerate(lines):  # every row has as many cells as its table's header
        if index + 1 < len(lines) and lines[index + 1].startswith("|---"):
            width = line.count("|")
        elif line.startswith("| "):
            assert line.count("|") == width, line
    data = to_json(results)["tail"]
    assert data["configs"][0]["c1_overhead_ms"]["p99"] == pytest.approx(3.0)
    assert data["configs"][0]["cpu_us_per_call"] == pytest.approx(300)
    assert data["configs"][0]["c1_own_ms"]["p99"] == 0.09
    assert data["configs"][0]["c1_wait_us"] == 31.5
    assert [t["met"] for t in data["targets"]].count(True) == 5


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench does)")
def test_a_short_real_run_reports_measured_numbers(tmp_path: Path) -> None:
    """The part in its smallest form: the base and everything on, a few calls and seconds."""
    argv = [
        sys.executable,
        "-m",
        "bench.run",
        "--only",
        "tail",
        "--tail-configs",
        "base,everything",
        "--tail-calls",
        "30",
        "--tail-seconds",
        "1",
        "--warmup",
        "0",
        "--tail-warmup",
        "0.5",
        "--out-dir",
        str(tmp_path),
    ]
    done = subprocess.run(
        argv, cwd=REPOSITORY, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())["tail"]
    assert [c["name"] for c in data["configs"]] == ["base", "everything"]
    for config in data["configs"]:
        assert config["skipped"] is None and config["errors"] == [], config["name"]
        assert config["c1_ms"]["gateway"]["n"] == config["ttfb_ms"]["gateway"]["n"] == 30
        for figure in ("c1_p50", "c1_p99", "ttfb_p50", "d50_share", "d50_p99", "start_s"):
            assert isinstance(config["figures"][figure], float), (config["name"], figure)
        assert config["c10"]["requests"] > 10 and config["c50"]["requests"] > 10
        assert config["c50"]["errors"]["status"] == 0 and config["d50"]["gateway"]["requests"] > 0
        assert 10 < config["cpu_us_per_call"] < 100_000
        # The gateway's own time (its header) is a part of each call's whole time through it.
        own, whole = config["c1_own_ms"], config["c1_ms"]["gateway"]
        assert own["n"] == 30 and 0 < own["p50"] <= own["p99"] < whole["p99"], (own, whole)
        assert 10 < config["c1_cpu_us"] < 100_000 and config["c1_wait_us"] >= 0
        assert 0 < config["rss_idle_bytes"] <= config["rss_peak_bytes"]
        for window in ("c1", "c50"):
            lag = config["lag"][window]
            assert lag["lag"]["samples"] > 0 and lag["lag"]["max_ms"] >= 0, (config, window)
            assert lag["busy"]["samples"] == lag["lag"]["samples"]
            assert config["lag_calls"][window] > 0
    assert data["configs"][1]["scrapes"] >= 1 and data["configs"][0]["scrapes"] == 0
    # Capture off in base: no writer process; everything on: its own figures, and records.
    base, everything = data["configs"]
    assert base["writer_rss_peak_bytes"] == 0 and "written" not in base["capture"]
    assert everything["writer_rss_peak_bytes"] > 0 and everything["writer_us_per_call"] > 0
    assert everything["capture"]["written"] > 0, everything["capture"]
    assert len(data["targets"]) == 8
    assert all(target["met"] in (True, False) for target in data["targets"])
    steps = data["steps"]
    assert steps["c1"]["calls"] > 0 and steps["c50"]["calls"] > 0
    for window in ("c1", "c50"):  # the calls' own task is among the timed coroutines
        assert any("run_asgi" in name for name in steps[window]["steps"]), steps[window]
    profile = data["profile"]
    assert profile is not None and profile["config"] == "everything"
    if profile["error"] is None:  # py-spy may lack the right to read another process
        assert profile["samples"] > 0 and profile["own"]
        assert profile["threads"][0][0] == "MainThread"
    text = (tmp_path / "latest.md").read_text()
    section = text.split("### The tail, component by component (issue 16)")[1]
    assert "0.5 s of one-at-a-time calls unmeasured (warm-up)" in section
    for column in tail_report.TABLE_HEADER + tail_report.HOLDS_HEADER + tail_report.SPENT_HEADER:
        assert f"| {column} |" in section or f" {column} |" in section, column
    assert "not measured" not in section.split("Targets")[0]
