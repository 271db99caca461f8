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

The configurations, their scratch stores and starting their gateways are in
bench/features_configs.py; the sustained half's client is bench/features_sustain.py.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import subprocess
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench import client, procs, wrk
from bench.features_configs import (
    AB_MODELS,
    BASE,
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    HEADERS,
    KEY,
    LIMITS,
    ROUTE,
    SPECS,
    UPSTREAM_MODEL,
    ConfigSpec,
    Progress,
    Stores,
    chat_body,
    one_line,
    postgres_scratch,
    redis_prefix,
    start_gateway,
)
from bench.features_report import (
    DIRECT,
    DIRECT_DETERMINISTIC,
    ConfigResult,
    FeatureResults,
    SustainResult,
)
from bench.features_sustain import sustain
from bench.prometheus import MetricSample, capture_counters, metric_sum, scrape
from bench.rounds import Series, round_order
from bench.stats import summarize

SCRIPT = Path(__file__).with_name("post.lua")


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


# --- wrk and the one-at-a-time calls --------------------------------------------------------


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


@dataclass(frozen=True)
class Probe:
    """Where one target's calls go."""

    name: str
    url: str
    model: str
    deterministic: bool
    service: procs.Service


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
                    target.errors.append(f"round {round_index + 1}: {one_line(exc)}")
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
                item.series.errors.append(f"/metrics: {one_line(exc)}")
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
