"""The feature benchmark's pure parts: configurations, wrk arguments, /metrics, aggregation,
targets and the report. Nothing here starts wrk, a gateway, a database or Redis.
"""

from __future__ import annotations

import pytest

from bench import features, features_configs, prometheus, rounds, run, wrk
from bench.features_configs import SPECS, spec
from bench.features_report import (
    DIRECT,
    DIRECT_DETERMINISTIC,
    ConfigResult,
    FeatureResults,
    SustainResult,
    verdicts,
)
from bench.report import Results, render, to_json
from bench.rounds import Series
from gateway.settings import hash_key, parse_settings

STORES = features_configs.Stores(
    sqlite_url="sqlite+aiosqlite:////tmp/x/capture.db",
    postgres_url="postgresql+asyncpg://postgres@127.0.0.1:5432/bench_features_x",
    redis_url="redis://127.0.0.1:6379/0",
    redis_prefix="bench-features-x",
)


def result(p50: float, p99: float, requests: int = 1000, errors: int = 0) -> wrk.WrkResult:
    return wrk.WrkResult(
        requests=requests,
        duration_s=1.0,
        errors={"connect": 0, "read": 0, "write": 0, "status": errors, "timeout": 0},
        latency_ms={"mean": p50, "stdev": 0.0, "max": p99, "p50": p50, "p90": p50, "p99": p99},
    )


@pytest.mark.parametrize("config", SPECS, ids=lambda c: c.name)
def test_every_configuration_is_a_valid_gateway_config(config: features_configs.ConfigSpec) -> None:
    data = features_configs.config_for(config, 9000, 9001, STORES)
    settings = parse_settings(data, environ={})
    route = settings.routes[features_configs.ROUTE]
    key = settings.auth.keys[0]  # type: ignore[union-attr]
    assert key.digest() == hash_key(features_configs.KEY)
    assert settings.capture.enabled == (config.capture is not None)
    if config.capture == "sqlite":
        assert settings.capture.database_url == STORES.sqlite_for(config)
    if config.capture == "postgres":
        assert settings.capture.database_url == STORES.postgres_url
    if config.name == "ab-shadow":
        weights = {name: v.weight for name, v in route.variants.items()}
        assert weights == {"a": 50, "b": 50, "next": 0}
        assert route.shadow is not None and route.shadow.sample == 0.2
    elif config.name == "rollout-sqlite":
        assert route.rollout is not None and route.rollout.candidate == "student"
        assert settings.autopilot.judge_route in settings.routes
        assert settings.capture.database_url != STORES.sqlite_url  # not (b)'s file
    else:
        assert list(route.variants) == ["only"] and route.shadow is None
    if config.name.startswith("limits-redis"):
        assert (key.rpm, key.tpm, key.daily_budget_usd) == (10_000_000, 1_000_000_000, 1e6)
    else:
        assert key.rpm is None and key.tpm is None and key.daily_budget_usd is None
    assert (route.cache is not None) == config.deterministic
    uses_redis = config.name in features_configs.REDIS_CONFIGS
    assert (settings.redis is not None) == uses_redis
    if config.name.startswith("limits-redis"):
        assert settings.redis is not None
        assert settings.redis.credits is (config.name == "limits-redis")
    if settings.redis is not None:
        assert settings.redis.prefix.startswith(STORES.redis_prefix)


def test_unreachable_stores_skip_only_their_configurations() -> None:
    stores = features_configs.Stores(
        sqlite_url="sqlite+aiosqlite:///x.db", postgres_reason="down", redis_reason="no redis"
    )
    skipped = {c.name: stores.unavailable(c) for c in SPECS}
    assert skipped == {
        "base": None,
        "capture-sqlite": None,
        "capture-postgres": "down",
        "ab-shadow": None,
        "limits-redis": "no redis",
        "limits-redis-percall": "no redis",
        "rollout-sqlite": None,
        "cache-memory": None,
        "cache-redis": "no redis",
    }


def test_wrk_command_and_the_body_match_the_lua_script() -> None:
    argv = features.wrk_command("wrk", "http://127.0.0.1:1", "bench-model", 3, True)
    assert argv[1:4] == ["-t1", "-c1", "-d3s"]
    assert argv[argv.index("-s") + 1] == str(features.SCRIPT) and features.SCRIPT.exists()
    assert argv[argv.index("--") - 1] == "http://127.0.0.1:1/v1/chat/completions"
    assert argv[argv.index("--") + 1 :] == [
        "model=bench-model",
        "stream=0",
        "ttft=0",
        "token=0",
        "key=sk-bench",
        "det=1",
    ]
    lua = features.SCRIPT.read_text()
    for message in features_configs.MESSAGES:
        assert message["content"] in lua
    assert '"temperature":0,"seed":1' in lua and '"max_tokens":16' in lua
    body = features_configs.chat_body("m", True)
    assert body.endswith(b'"max_tokens":16,"temperature":0,"seed":1}')
    assert b"temperature" not in features_configs.chat_body("m", False)


def test_round_order_rotates_and_keeps_every_target() -> None:
    names = ["direct", "a", "b", "c"]
    orders = [rounds.round_order(names, r) for r in range(4)]
    assert all(sorted(order) == sorted(names) for order in orders)
    assert orders[0] == names and orders[1] == ["direct", "c", "b", "a"]
    assert len({tuple(order) for order in orders}) == 4
    assert rounds.round_order([], 3) == []


METRICS = """\
# HELP gateway_capture_records_total Capture records by outcome.
# TYPE gateway_capture_records_total counter
gateway_capture_records_total{outcome="written"} 1500.0
gateway_capture_records_total{outcome="dropped"} 2.0
gateway_capture_queue_depth 0.0
gateway_requests_total{route="bench-model",status="200",upstream_model="m",variant="a"} 60.0
gateway_requests_total{route="bench-model",status="200",upstream_model="n",variant="b"} 40.0
gateway_shadow_calls_total{outcome="ok",route="bench-model",variant="next"} 19.0
gateway_cache_total{outcome="hit",route="bench-model"} 99.0
gateway_cache_created{outcome="hit",route="bench-model"} 1.7e+09
"""


def test_metrics_are_parsed_and_summed_by_label() -> None:
    samples = prometheus.parse_metrics(METRICS)
    assert prometheus.metric_sum(samples, "gateway_requests_total") == 100
    assert prometheus.metric_sum(samples, "gateway_requests_total", variant="b") == 40
    counters = prometheus.capture_counters(samples)
    assert counters == {
        "written": 1500,
        "dropped": 2,
        "retried": 0,
        "failed": 0,
        "queue_depth": 0,
    }
    ab = features.summary_metrics(spec("ab-shadow"), samples)
    assert ab["variant_a"] == 60 and ab["shadow_ok"] == 19 and ab["requests"] == 100
    assert features.summary_metrics(spec("cache-redis"), samples)["cache_hit"] == 99


def test_arguments_select_and_shorten_the_features() -> None:
    quick = run.parse_args(["--quick", "--only", "features"])
    assert (quick.features_rounds, quick.features_seconds, quick.sustain_seconds) == (2, 1, 10)
    assert features.parts(lambda name: run._selected(quick, name)) == (True, True)
    full = run.parse_args([])
    assert (full.features_rounds, full.sustain_seconds, full.sustain_rate) == (6, 60, 500)
    assert features.parts(lambda name: run._selected(full, name)) == (True, True)
    half = run.parse_args(["--only", "features/sustain"])
    assert features.parts(lambda name: run._selected(half, name)) == (False, True)
    core = run.parse_args(["--only", "plain/c1/*,ttfb"])
    assert features.parts(lambda name: run._selected(core, name)) == (False, False)


def sample() -> FeatureResults:
    results = FeatureResults(rounds=3, seconds=3, warmup_s=1, load={"start": 0.5, "end": 0.7})
    results.direct = Series(DIRECT, [result(0.20, 0.40), result(0.22, 0.50), result(0.20, 0.40)])
    results.direct_deterministic = Series(
        DIRECT_DETERMINISTIC, [result(0.21, 0.4), result(0.21, 0.4), result(0.21, 0.4)]
    )
    gateway_p50 = {
        "base": (0.45, 0.47, 0.45),  # overhead 0.25 each round
        "capture-sqlite": (0.60, 0.62, 0.60),  # +0.15 over base
        "capture-postgres": (0.80, 0.82, 0.80),  # +0.35
        "ab-shadow": (0.47, 0.49, 0.47),  # +0.02 = +8%
        "limits-redis": (0.90, 0.92, 0.90),  # +0.45
        "limits-redis-percall": (0.95, 0.97, 0.95),
        "rollout-sqlite": (0.62, 0.64, 0.62),  # +0.17: within (a) + 0.2
        "cache-memory": (0.30, 0.30, 0.30),
    }
    for config in SPECS:
        if config.name == "cache-redis":
            results.configs.append(ConfigResult(config, Series(config.name), skipped="no redis"))
            continue
        runs: list[wrk.WrkResult | None] = [
            result(p50, p50 * 2, 2000) for p50 in gateway_p50[config.name]
        ]
        item = ConfigResult(config, Series(config.name, runs, cpu_s=[0.4, 0.4, 0.4]))
        item.header_ms = {"n": 10, "p50": 0.05}
        results.configs.append(item)
    results.configs[1].metrics = {"capture_written": 6000, "capture_dropped": 0}
    results.sustain = [
        SustainResult(
            "SQLite",
            500,
            60,
            sent=30000,
            answered=30000,
            achieved_rate=500.0,
            written=30000,
            rows=30000,
            latency_ms={"p50": 0.6, "p99": 2.0},
        ),
        SustainResult(
            "PostgreSQL",
            500,
            60,
            sent=30000,
            answered=30000,
            achieved_rate=500.0,
            written=29990,
            dropped=10,
            rows=29990,
        ),
    ]
    return results


def test_overheads_are_medians_of_per_round_differences() -> None:
    results = sample()
    base = results.config("base")
    sqlite = results.config("capture-sqlite")
    assert base is not None and sqlite is not None
    assert results.overhead(base, "p50") == pytest.approx(0.25)
    assert results.versus_base(sqlite, "p50") == pytest.approx(0.15)
    assert base.series.rps == pytest.approx(2000)
    assert base.series.cpu_us_per_call == pytest.approx(200)
    cache = results.config("cache-memory")
    assert cache is not None and results.overhead(cache, "p50") == pytest.approx(0.09)
    missing = Series("x", [None, result(1.0, 2.0)])
    assert missing.latency("p50") == 1.0 and missing.requests == 1000


def test_verdicts_mark_each_target() -> None:
    met = {v.config: v.met for v in verdicts(sample())}
    assert met == {
        "(b) capture-sqlite": True,
        "(c) capture-postgres": False,
        "(d) ab-shadow": True,
        "(e) limits-redis": False,
        "(g) rollout-sqlite": True,
        "(f1) cache-memory": True,
        "(f2) cache-redis": None,
        "sustained capture, SQLite": True,
        "sustained capture, PostgreSQL": False,
    }


def test_the_section_is_in_the_report_and_its_json() -> None:
    results = Results(
        command="make bench",
        date="2025-01-01 00:00 UTC",
        machine={"nproc": "2", "cpu": "Test CPU", "system": "Linux", "python": "3.11"},
        method={"wrk": "wrk 4.1.0", "threads": 1, "duration_s": 8, "warmup_s": 1},
        start_seconds=0.9,
        features=sample(),
    )
    text = render(results)
    assert "### Feature overhead (c=1, upstream delay 0)" in text
    assert "### Sustained capture" in text
    assert "not measured: no redis" in text
    widths: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("| config |"):
            widths["overhead"] = line.count("|")
        elif line.startswith("| store |"):
            widths["sustain"] = line.count("|")
        elif line.startswith("| (") or line.startswith("| direct"):
            assert line.count("|") == widths["overhead"], line
        elif line.startswith("| SQLite") or line.startswith("| PostgreSQL"):
            assert line.count("|") == widths["sustain"], line
    data = to_json(results)["features"]
    assert data["configs"][0]["overhead_ms"]["p50"] == pytest.approx(0.25)
    assert data["sustain"][1]["met"] is False
    assert [t["met"] for t in data["targets"]].count(True) == 5
