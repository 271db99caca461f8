"""What each feature adds to the gateway's overhead, and capture at a sustained rate.

Part of ``make bench`` (``--only features`` runs only this; ``features/overhead`` and
``features/sustain`` select one half). Usage::

    make bench BENCH_ARGS='--only features'             # ~6 minutes
    make bench BENCH_ARGS='--quick --only features'     # ~1.5 minutes
    .venv/bin/python -m bench.run --only features/overhead --features-rounds 3

Overhead. Beside the matrix's simulator, one gateway process per configuration is started once
(``gateway serve --workers 1``, key auth on, route ``bench-model`` rewritten to ``gpt-4o-mini``):

  a. base: one variant, capture off (``capture: {enabled: false}``), no limits;
  b. capture on, SQLite (a file in the run's temp directory);
  c. capture on, PostgreSQL (a scratch database created on ``--postgres-url``'s server,
     migrated with ``gateway db upgrade``, dropped at the end);
  d. a route of two variants 50/50 and a shadow at 20% on a third, capture off;
  e. a key with RPM, TPM and a daily budget, limits in Redis (``redis:`` with a prefix of this
     run's own, whose keys are deleted at the end); the RPM is 10,000,000, so nothing is refused;
     the key is busy, so after its first two seconds its calls are admitted from credits;
  e2. the same with ``redis: {credits: false}``: every call waits for the admit script;
  f1/f2. a route with ``cache: {ttl_s: 600}`` called with ``temperature: 0, seed: 1``: every call
     after the first is a hit; in memory (f1) and in Redis (f2);
  g. (b) with a rollout of a second variant in its shadow stage (``routes.R.rollout``): 20% of
     the calls copied to it, pairs judged through a judge route (at most 20 pairs a look), the
     evidence read, every second, all in the background.

wrk (``-t1 -c1``, bench/post.lua: the matrix's call, plus the deterministic fields for f)
runs against the simulator direct (both bodies) and each gateway, upstream delay 0, in
interleaved rounds: every round runs each target once (a warm-up run, then the measured one),
the order rotating from round to round, so that drift in the machine's load reaches all alike.
Then each configuration is called one at a time by an asyncio client (configurations
alternating call by call) for its ``x-gateway-overhead-ms`` header and ``x-gateway-cache``, and
its /metrics are read (capture counters, shadow calls, cache hits). bench/features_report.py
aggregates (medians over the rounds) and marks the issues' targets.

Sustained capture. The capture-on gateways (b, c) are driven by an open-loop asyncio client at
``--sustain-rate`` calls/s (500) for ``--sustain-seconds`` (60; 10 with ``--quick``), plain and
streamed calls alternating. When the queue is empty, the written/dropped/retried counters of
/metrics and the rows in the store are read: every answered call must be a row, nothing dropped.

A store that cannot be reached (PostgreSQL, Redis) makes its configurations "not measured", with
the reason, rather than failing the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import client, procs, wrk
from bench.features_report import (
    BASE,
    DIRECT,
    DIRECT_DETERMINISTIC,
    SPECS,
    ConfigResult,
    ConfigSpec,
    FeatureResults,
    Series,
    SustainResult,
)
from bench.stats import summarize

SCRIPT = Path(__file__).with_name("post.lua")
ROUTE = procs.ROUTE
KEY = procs.GATEWAY_KEY
UPSTREAM_MODEL = procs.UPSTREAM_MODEL
AB_MODELS = {
    "a": UPSTREAM_MODEL,
    "b": "gpt-4o-mini-2024-07-18",
    "next": "ft:gpt-4o-mini-2024-07-18:bench::shadow",
}
"""The 2-variant route's upstream models (``next`` is the shadow); all on the simulator."""
LIMITS: dict[str, Any] = {"rpm": 10_000_000, "tpm": 1_000_000_000, "daily_budget_usd": 1_000_000}
CACHE_TTL_S = 600
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant. Answer in one short sentence."},
    {"role": "user", "content": "What does a gateway in front of a model API do?"},
]
"""bench/post.lua's messages."""
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_CONFIGS = ("limits-redis", "limits-redis-percall", "cache-redis")
Progress = Callable[[str], None]


# --- arguments ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("features (bench/features.py; --only features)")
    group.add_argument("--features-rounds", type=int, help="interleaved rounds (6, quick 2)")
    group.add_argument(
        "--features-seconds", type=int, help="measured seconds per wrk run (3, quick 1)"
    )
    group.add_argument(
        "--header-calls",
        type=int,
        help="one-at-a-time calls per configuration for x-gateway-overhead-ms (500, quick 100)",
    )
    group.add_argument("--sustain-rate", type=float, default=500.0, help="calls/s (500)")
    group.add_argument("--sustain-seconds", type=float, help="seconds (60, quick 10)")
    group.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a PostgreSQL server where a scratch database may be created and dropped",
    )
    group.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis for limits and the cache (keys under a prefix of the run's own)",
    )


def finish_arguments(args: argparse.Namespace) -> None:
    """Fill the defaults that depend on ``--quick``."""
    quick = bool(args.quick)
    if args.features_rounds is None:
        args.features_rounds = 2 if quick else 6
    if args.features_seconds is None:
        args.features_seconds = 1 if quick else 3
    if args.header_calls is None:
        args.header_calls = 100 if quick else 500
    if args.sustain_seconds is None:
        args.sustain_seconds = 10.0 if quick else 60.0


def parts(selected: Callable[[str], bool]) -> tuple[bool, bool]:
    """(overhead, sustain): which halves ``--only`` selects (``features`` selects both)."""
    both = selected("features")
    return both or selected("features/overhead"), both or selected("features/sustain")


# --- configurations -------------------------------------------------------------------------


@dataclass
class Stores:
    """Where the configurations keep their state; a reason when a store cannot be used."""

    sqlite_url: str
    postgres_url: str | None = None
    postgres_reason: str | None = None
    redis_url: str = DEFAULT_REDIS_URL
    redis_prefix: str = "bench-features"
    redis_reason: str | None = None

    def sqlite_for(self, config: ConfigSpec) -> str:
        """Each SQLite configuration's own file (``capture-features.db`` for (b))."""
        if config.name == "capture-sqlite":
            return self.sqlite_url
        return self.sqlite_url.removesuffix(".db") + f"-{config.name}.db"

    def unavailable(self, config: ConfigSpec) -> str | None:
        if config.capture == "postgres" and self.postgres_url is None:
            return self.postgres_reason or "no PostgreSQL"
        if config.name in REDIS_CONFIGS and self.redis_reason is not None:
            return self.redis_reason
        return None


def config_for(config: ConfigSpec, upstream_port: int, port: int, stores: Stores) -> dict[str, Any]:
    """The gateway configuration (the parsed YAML) of one configuration under test."""
    data = procs.gateway_config(upstream_port, port)
    data["capture"] = {"enabled": False}
    route: dict[str, Any] = {"variants": {"only": {"provider": "sim", "model": UPSTREAM_MODEL}}}
    extra: dict[str, Any] = {}
    key: dict[str, Any] = {"name": "bench", "key": KEY}
    if config.capture == "sqlite":
        data["capture"] = {"enabled": True, "database_url": stores.sqlite_for(config)}
    elif config.capture == "postgres":
        data["capture"] = {"enabled": True, "database_url": stores.postgres_url}
    if config.name == "rollout-sqlite":
        route = {
            "variants": {
                "teacher": {"provider": "sim", "model": UPSTREAM_MODEL, "weight": 100},
                "student": {"provider": "sim", "model": AB_MODELS["b"], "weight": 0},
            },
            "rollout": {"candidate": "student", "stages": [0.0, 0.05], "shadow_sample": 0.2},
        }
        extra["bench-judge"] = {"variants": {"judge": {"provider": "sim", "model": UPSTREAM_MODEL}}}
        data["autopilot"] = {"interval_s": 1.0, "judge_route": "bench-judge", "judge_batch": 20}
    elif config.name == "ab-shadow":
        route = {
            "variants": {
                "a": {"provider": "sim", "model": AB_MODELS["a"], "weight": 50},
                "b": {"provider": "sim", "model": AB_MODELS["b"], "weight": 50},
                "next": {"provider": "sim", "model": AB_MODELS["next"], "weight": 0},
            },
            "shadow": {"variant": "next", "sample": 0.2},
        }
    elif config.name.startswith("limits-redis"):
        key.update(LIMITS)
        data["redis"] = {"url": stores.redis_url, "prefix": f"{stores.redis_prefix}-{config.name}"}
        if config.name == "limits-redis-percall":
            data["redis"]["credits"] = False
    elif config.name.startswith("cache-"):
        route["cache"] = {"ttl_s": CACHE_TTL_S}
        if config.name == "cache-redis":
            data["redis"] = {"url": stores.redis_url, "prefix": f"{stores.redis_prefix}-cache"}
    data["auth"] = {"keys": [key]}
    data["routes"] = {ROUTE: route, **extra}
    return data


def chat_body(model: str, deterministic: bool, stream: bool = False) -> bytes:
    """The call bench/post.lua sends, as bytes."""
    data: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": 16}
    if stream:
        data["stream"] = True
    if deterministic:
        data.update(temperature=0, seed=1)
    return json.dumps(data, separators=(",", ":")).encode()


def wrk_command(
    executable: str, url: str, model: str, seconds: int, deterministic: bool, key: str = KEY
) -> list[str]:
    return [
        executable,
        "-t1",
        "-c1",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(SCRIPT),
        f"{url}/v1/chat/completions",
        "--",
        f"model={model}",
        "stream=0",
        "ttft=0",
        "token=0",
        f"key={key}",
        f"det={int(deterministic)}",
    ]


def round_order(names: list[str], round_index: int) -> list[str]:
    """Round r: the targets rotated by r, reversed on odd rounds (so neighbours change too)."""
    if not names:
        return []
    shift = round_index % len(names)
    order = names[shift:] + names[:shift]
    return order[::-1] if round_index % 2 else order


# --- /metrics -------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class MetricSample:
    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[MetricSample]:
    """The samples of a Prometheus text exposition (comments skipped)."""
    out: list[MetricSample] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        out.append(MetricSample(name, dict(_LABEL.findall(labels or "")), number))
    return out


def metric_sum(samples: list[MetricSample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def capture_counters(samples: list[MetricSample]) -> dict[str, float]:
    out = {
        outcome: metric_sum(samples, "gateway_capture_records_total", outcome=outcome)
        for outcome in ("written", "dropped", "retried", "failed")
    }
    out["queue_depth"] = metric_sum(samples, "gateway_capture_queue_depth")
    return out


def scrape(url: str) -> list[MetricSample]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return parse_metrics(response.read().decode())


def summary_metrics(config: ConfigSpec, samples: list[MetricSample]) -> dict[str, float]:
    """The counters the report's notes use."""
    out: dict[str, float] = {
        "requests": metric_sum(samples, "gateway_requests_total", route=ROUTE),
    }
    if config.capture is not None:
        for name, value in capture_counters(samples).items():
            out[f"capture_{name}"] = value
    if config.name == "ab-shadow":
        for outcome in ("ok", "error", "skipped"):
            out[f"shadow_{outcome}"] = metric_sum(
                samples, "gateway_shadow_calls_total", outcome=outcome
            )
        for variant in ("a", "b"):
            out[f"variant_{variant}"] = metric_sum(
                samples, "gateway_requests_total", route=ROUTE, variant=variant
            )
    if config.deterministic:
        for outcome in ("hit", "miss"):
            out[f"cache_{outcome}"] = metric_sum(samples, "gateway_cache_total", outcome=outcome)
    return out


# --- stores ---------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


async def _create_database(admin_url: str, name: str) -> str:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    parsed = make_url(admin_url)
    engine = create_async_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


async def _drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


async def count_rows(database_url: str) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            value = (await connection.execute(text("SELECT count(*) FROM calls"))).scalar_one()
            return int(value)
    finally:
        await engine.dispose()


@contextlib.contextmanager
def postgres_scratch(admin_url: str, progress: Progress) -> Iterator[tuple[str | None, str | None]]:
    """(url, None) of a fresh database on ``admin_url``'s server, dropped after; or (None, why)."""
    name = f"bench_features_{secrets.token_hex(4)}"
    try:
        url = client.run_async(lambda: _create_database(admin_url, name))
    except Exception as exc:
        yield None, f"PostgreSQL unreachable ({_one_line(exc)})"
        return
    progress(f"features: scratch database {name} created")
    try:
        yield url, None
    finally:
        try:
            client.run_async(lambda: _drop_database(admin_url, name))
            progress(f"features: scratch database {name} dropped")
        except Exception as exc:
            progress(f"features: could not drop the scratch database {name}: {_one_line(exc)}")


@contextlib.contextmanager
def redis_prefix(url: str, progress: Progress) -> Iterator[tuple[str, str | None]]:
    """(a prefix of this run's own, None), or (prefix, why Redis cannot be used); the keys
    under the prefix are deleted after."""
    import redis

    prefix = f"bench-features-{secrets.token_hex(4)}"
    connection = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        connection.ping()
    except Exception as exc:
        connection.close()
        yield prefix, f"Redis unreachable ({_one_line(exc)})"
        return
    try:
        yield prefix, None
    finally:
        try:
            keys = list(connection.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(keys), 500):
                connection.delete(*keys[start : start + 500])
            progress(f"features: {len(keys)} Redis keys under {prefix}* deleted")
        except Exception as exc:
            progress(f"features: could not delete the Redis keys {prefix}*: {_one_line(exc)}")
        finally:
            connection.close()


# --- gateways -------------------------------------------------------------------------------


def db_upgrade(config_path: Path) -> str | None:
    """``gateway db upgrade``; None, or what went wrong."""
    argv = [*procs.gateway_command(), "db", "upgrade", "--config", str(config_path)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        return "gateway db upgrade did not finish in 120 s"
    if done.returncode != 0:
        return f"gateway db upgrade failed: {(done.stderr or done.stdout).strip()[:300]}"
    return None


def start_gateway(
    config: ConfigSpec, workdir: Path, upstream_port: int, stores: Stores
) -> procs.Service:
    port = procs.free_port()
    path = procs.write_yaml(
        workdir / f"gateway-{config.name}.yaml", config_for(config, upstream_port, port, stores)
    )
    if config.capture is not None:
        problem = db_upgrade(path)
        if problem is not None:
            raise procs.StartError(problem)
    argv = procs.serve_command(path, port)
    service = procs.spawn(f"gateway-{config.name}", argv, port, workdir)
    try:
        procs.wait_until(service, procs.chat_request(service.url), 60.0)
    except BaseException:
        service.stop()
        raise
    return service


@dataclass(frozen=True)
class Probe:
    """Where one target's calls go."""

    name: str
    url: str
    model: str
    deterministic: bool
    service: procs.Service


HEADERS = {
    "authorization": f"Bearer {KEY}",
    "content-type": "application/json",
    "x-sim-ttft-ms": "0",
    "x-sim-token-ms": "0",
}


async def check(probe: Probe, config: ConfigSpec) -> str | None:
    """Two calls: None when answered as this configuration should, else what is wrong."""
    url = f"{probe.url}/v1/chat/completions"
    payload = chat_body(probe.model, probe.deterministic)
    async with aiohttp.ClientSession(timeout=client.TIMEOUT) as session:
        seen: list[aiohttp.ClientResponse] = []
        for _ in range(2):
            async with session.post(url, data=payload, headers=HEADERS) as response:
                raw = await response.read()
                if response.status != 200:
                    return f"status {response.status}: {raw[:200]!r}"
                seen.append(response)
    last = seen[-1].headers
    models = set(AB_MODELS.values()) if config.name == "ab-shadow" else {UPSTREAM_MODEL}
    if last.get("x-gateway-upstream-model") not in models:
        return f"x-gateway-upstream-model is {last.get('x-gateway-upstream-model')!r}"
    if config.deterministic and last.get("x-gateway-cache") != "hit":
        return f"the second identical call was not a cache hit ({last.get('x-gateway-cache')})"
    if config.name.startswith("limits-redis") and last.get("x-ratelimit-limit-requests") != str(
        LIMITS["rpm"]
    ):
        return f"x-ratelimit-limit-requests is {last.get('x-ratelimit-limit-requests')!r}"
    return None


@dataclass
class HeaderSamples:
    client_ms: list[float] = field(default_factory=list)
    header_ms: list[float] = field(default_factory=list)
    cache: dict[str, int] = field(default_factory=dict)
    errors: int = 0


async def one_at_a_time(probes: list[Probe], calls: int) -> dict[str, HeaderSamples]:
    """``calls`` calls per probe, one at a time, probes alternating call by call."""
    samples = {probe.name: HeaderSamples() for probe in probes}
    payloads = {probe.name: chat_body(probe.model, probe.deterministic) for probe in probes}
    sessions = {
        probe.name: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), timeout=client.TIMEOUT
        )
        for probe in probes
    }
    try:
        for index in range(calls):
            for probe in round_order(probes_names(probes), index):
                target = next(p for p in probes if p.name == probe)
                sample = samples[probe]
                started = time.perf_counter()
                try:
                    async with sessions[probe].post(
                        f"{target.url}/v1/chat/completions",
                        data=payloads[probe],
                        headers=HEADERS,
                    ) as response:
                        await response.read()
                        elapsed = (time.perf_counter() - started) * 1000.0
                        if response.status != 200:
                            sample.errors += 1
                            continue
                        sample.client_ms.append(elapsed)
                        overhead = response.headers.get("x-gateway-overhead-ms")
                        if overhead is not None:
                            sample.header_ms.append(float(overhead))
                        cache = response.headers.get("x-gateway-cache")
                        if cache is not None:
                            sample.cache[cache] = sample.cache.get(cache, 0) + 1
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    sample.errors += 1
    finally:
        for session in sessions.values():
            await session.close()
    return samples


def probes_names(probes: list[Probe]) -> list[str]:
    return [probe.name for probe in probes]


# --- sustained capture ----------------------------------------------------------------------


@dataclass
class Paced:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    seconds: float = 0.0
    """From the first call's scheduled time to the last call's sending."""
    max_lag_ms: float = 0.0
    latency_ms: list[float] = field(default_factory=list)


async def paced(url: str, rate: float, seconds: float) -> Paced:
    """Open loop: call i is sent at start + i/rate, whether or not earlier ones are answered."""
    total = max(1, int(rate * seconds))
    payloads = (chat_body(ROUTE, False), chat_body(ROUTE, False, stream=True))
    out = Paced()
    loop = asyncio.get_running_loop()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512), timeout=client.TIMEOUT
    )

    async def one(index: int) -> None:
        started = time.perf_counter()
        try:
            async with session.post(
                f"{url}/v1/chat/completions", data=payloads[index % 2], headers=HEADERS
            ) as response:
                await response.read()
                if response.status == 200:
                    out.answered += 1
                    out.latency_ms.append((time.perf_counter() - started) * 1000.0)
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        out.failed += 1

    tasks: list[asyncio.Task[None]] = []
    try:
        start = loop.time()
        last_sent = start
        while out.sent < total:
            now = loop.time()
            due = min(total, int((now - start) * rate) + 1)
            while out.sent < due:
                lag = now - (start + out.sent / rate)
                out.max_lag_ms = max(out.max_lag_ms, lag * 1000.0)
                tasks.append(loop.create_task(one(out.sent)))
                out.sent += 1
            last_sent = now
            await asyncio.sleep(max(0.0, start + out.sent / rate - loop.time()))
        out.seconds = last_sent - start
        await asyncio.gather(*tasks)
    finally:
        await session.close()
    return out


def wait_drained(
    url: str, expected: float, seconds: float = 60.0
) -> tuple[dict[str, float], float]:
    """Scrape until the capture queue is empty, at least ``expected`` records are accounted
    for (written + dropped + failed) and the counters did not move between two scrapes."""
    started = time.monotonic()
    previous: dict[str, float] | None = None
    while True:
        counters = capture_counters(scrape(url))
        done = counters["written"] + counters["dropped"] + counters["failed"]
        settled = counters["queue_depth"] == 0 and done >= expected
        if settled and previous == counters:
            return counters, time.monotonic() - started
        if time.monotonic() - started > seconds:
            return counters, time.monotonic() - started
        previous = counters
        time.sleep(0.5)


def sustain(
    config: ConfigSpec, service: procs.Service, database_url: str, rate: float, seconds: float
) -> SustainResult:
    store = "SQLite" if config.capture == "sqlite" else "PostgreSQL"
    result = SustainResult(store, rate, seconds)
    before, _ = wait_drained(service.url, 0.0)
    rows_before = client.run_async(lambda: count_rows(database_url))
    accounted = before["written"] + before["dropped"] + before["failed"]
    outcome = client.run_async(lambda: paced(service.url, rate, seconds))
    after, drain = wait_drained(service.url, accounted + outcome.answered)
    rows_after = client.run_async(lambda: count_rows(database_url))
    result.sent, result.answered, result.failed = outcome.sent, outcome.answered, outcome.failed
    result.achieved_rate = (outcome.sent - 1) / outcome.seconds if outcome.seconds > 0 else 0.0
    result.max_lag_ms = outcome.max_lag_ms
    result.latency_ms = summarize(outcome.latency_ms)
    result.written = int(after["written"] - before["written"])
    result.dropped = int(after["dropped"] - before["dropped"])
    result.retried = int(after["retried"] - before["retried"])
    result.write_failed = int(after["failed"] - before["failed"])
    result.rows = rows_after - rows_before
    result.drain_s = drain
    return result


# --- the run --------------------------------------------------------------------------------


def _run_wrk(argv: list[str], seconds: int) -> wrk.WrkResult:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired:
        raise wrk.WrkError(f"wrk did not finish in {seconds + 30} s") from None
    if done.returncode != 0:
        raise wrk.WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip()[:300]}")
    return wrk.parse_output(done.stdout)


@dataclass
class Run:
    """One features run: its arguments, processes and results."""

    args: argparse.Namespace
    executable: str
    simulator: procs.Service
    workdir: Path
    progress: Progress
    results: FeatureResults = field(init=False)
    gateways: dict[str, procs.Service] = field(default_factory=dict)
    database_urls: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.results = FeatureResults(
            rounds=self.args.features_rounds,
            seconds=self.args.features_seconds,
            warmup_s=self.args.warmup,
        )

    def start(
        self, stack: contextlib.ExitStack, specs: list[ConfigSpec], stores: Stores
    ) -> dict[str, str]:
        """Start each configuration's gateway; the ones that could not start, with why."""
        skipped: dict[str, str] = {}
        for config in specs:
            reason = stores.unavailable(config)
            if reason is None:
                self.progress(f"features: starting gateway ({config.id}) {config.name}")
                try:
                    service = start_gateway(config, self.workdir, self.simulator.port, stores)
                except procs.StartError as exc:
                    if config is BASE:
                        raise
                    reason = f"did not start: {str(exc).splitlines()[0][:200]}"
                else:
                    stack.callback(service.stop)
                    self.gateways[config.name] = service
                    if config.capture == "sqlite":
                        self.database_urls[config.name] = stores.sqlite_for(config)
                    elif config.capture == "postgres" and stores.postgres_url:
                        self.database_urls[config.name] = stores.postgres_url
                    probe = self.probe(config)
                    problem = client.run_async(functools.partial(check, probe, config))
                    if problem is not None:
                        if config is BASE:
                            raise client.BadAnswer(f"({config.id}) {config.name}: {problem}")
                        reason = f"bad answer: {problem}"
            if reason is not None:
                self.progress(f"features: ({config.id}) {config.name} not measured: {reason}")
                skipped[config.name] = reason
        return skipped

    def probe(self, config: ConfigSpec) -> Probe:
        service = self.gateways[config.name]
        return Probe(config.name, service.url, ROUTE, config.deterministic, service)

    def direct_probes(self) -> list[Probe]:
        url = self.simulator.url
        return [
            Probe(DIRECT, url, UPSTREAM_MODEL, False, self.simulator),
            Probe(DIRECT_DETERMINISTIC, url, UPSTREAM_MODEL, True, self.simulator),
        ]

    def rounds(self, probes: list[Probe], series: dict[str, Series]) -> None:
        args = self.args
        names = probes_names(probes)
        by_name = {probe.name: probe for probe in probes}
        total = args.features_rounds * len(names)
        step = 0
        for round_index in range(args.features_rounds):
            for name in round_order(names, round_index):
                step += 1
                probe = by_name[name]
                self.progress(
                    f"features: round {round_index + 1}/{args.features_rounds} {name} "
                    f"({step}/{total})"
                )
                target = series[name]
                try:
                    if args.warmup > 0:
                        _run_wrk(self._argv(probe, args.warmup), args.warmup)
                    # The gateway's CPU and its capture writer process's.
                    service = probe.service
                    cpu = service.cpu_seconds() + service.children_cpu_seconds()
                    result = _run_wrk(
                        self._argv(probe, args.features_seconds), args.features_seconds
                    )
                    spent = service.cpu_seconds() + service.children_cpu_seconds() - cpu
                    target.cpu_s.append(spent)
                except wrk.WrkError as exc:
                    target.errors.append(f"round {round_index + 1}: {_one_line(exc)}")
                    target.runs.append(None)
                    continue
                target.runs.append(result)

    def _argv(self, probe: Probe, seconds: int) -> list[str]:
        return wrk_command(self.executable, probe.url, probe.model, seconds, probe.deterministic)

    def overhead(self, specs: list[ConfigSpec], skipped: dict[str, str]) -> None:
        results = self.results
        measured = [config for config in specs if config.name not in skipped]
        probes = [*self.direct_probes(), *(self.probe(config) for config in measured)]
        series = {DIRECT: results.direct, DIRECT_DETERMINISTIC: results.direct_deterministic}
        for config in specs:
            item = ConfigResult(config, Series(config.name), skipped=skipped.get(config.name))
            results.configs.append(item)
            series[config.name] = item.series
        self.rounds(probes, series)
        self.progress(f"features: one call at a time, {self.args.header_calls} per target")
        samples = client.run_async(lambda: one_at_a_time(probes, self.args.header_calls))
        results.direct_header_ms = summarize(samples[DIRECT].client_ms)
        for item in results.configs:
            if item.spec.name not in self.gateways or item.skipped is not None:
                continue
            sample = samples[item.spec.name]
            item.header_ms = summarize(sample.header_ms)
            item.client_ms = summarize(sample.client_ms)
            item.cache = dict(sample.cache)
            if sample.errors:
                item.series.errors.append(f"{sample.errors} one-at-a-time calls failed")
            try:
                metrics = scrape(self.gateways[item.spec.name].url)
            except (OSError, urllib.error.URLError) as exc:
                item.series.errors.append(f"/metrics: {_one_line(exc)}")
            else:
                item.metrics = summary_metrics(item.spec, metrics)

    def sustained(self, specs: list[ConfigSpec], skipped: dict[str, str]) -> None:
        args = self.args
        for config in specs:
            if config.capture is None or config.name == "rollout-sqlite":
                continue  # sustained capture: (b) and (c)
            store = "SQLite" if config.capture == "sqlite" else "PostgreSQL"
            service = self.gateways.get(config.name)
            if service is None or config.name in skipped:
                reason = skipped.get(config.name, "no gateway")
                self.results.sustain.append(
                    SustainResult(store, args.sustain_rate, args.sustain_seconds, skipped=reason)
                )
                continue
            self.progress(
                f"features: sustained capture, {store}: {args.sustain_rate:g} calls/s for "
                f"{args.sustain_seconds:g} s"
            )
            result = sustain(
                config,
                service,
                self.database_urls[config.name],
                args.sustain_rate,
                args.sustain_seconds,
            )
            self.progress(
                f"features: {store}: {result.answered:,} answered, {result.written:,} written, "
                f"{result.dropped} dropped, {result.rows:,} rows"
            )
            self.results.sustain.append(result)

    def execute(self, overhead: bool, sustained: bool) -> FeatureResults:
        specs = list(SPECS) if overhead else [s for s in SPECS if s.capture is not None]
        self.results.load["start"] = round(os.getloadavg()[0], 2)
        with contextlib.ExitStack() as stack:
            stores = Stores(
                sqlite_url=f"sqlite+aiosqlite:///{self.workdir / 'capture-features.db'}",
                redis_url=self.args.redis_url,
            )
            if any(s.capture == "postgres" for s in specs):
                url, why = stack.enter_context(
                    postgres_scratch(self.args.postgres_url, self.progress)
                )
                stores.postgres_url, stores.postgres_reason = url, why
            if overhead:
                prefix, why = stack.enter_context(redis_prefix(self.args.redis_url, self.progress))
                stores.redis_prefix, stores.redis_reason = prefix, why
            skipped = self.start(stack, specs, stores)
            if overhead:
                self.overhead(specs, skipped)
            if sustained:
                self.sustained(specs, skipped)
            self.progress("features: stopping the gateways")
        self.results.load["end"] = round(os.getloadavg()[0], 2)
        return self.results


def run(
    args: argparse.Namespace,
    executable: str,
    simulator: procs.Service,
    workdir: Path,
    progress: Progress,
    overhead: bool = True,
    sustained: bool = True,
) -> FeatureResults:
    """Both halves (or those asked for); the gateways and scratch stores are gone after."""
    return Run(args, executable, simulator, workdir, progress).execute(overhead, sustained)
