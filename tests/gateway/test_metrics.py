"""GET /metrics against real processes: names, labels and values after a known sequence of calls.

One simulator (faults by model glob) and one gateway serve a fixed sequence: 3 plain and 2
streamed chat calls on a single-variant route, a call whose primary fails with 500 and falls
back, a call on a route with a shadow at sample 1.0, an upstream 429 passed through, and a call
to a model no route serves. The scrape is parsed with prometheus-client's own parser and every
series is compared with what those calls must have produced, exactly. A second gateway with
``--workers 2`` checks that a scrape of either worker sums every worker's counters.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
import psutil
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from capture.pricing import PriceTable
from tests.processes import Running, start_gateway, start_simulator

KEY = "sk-metrics-tests"
ENV = {"METRICS_KEY": KEY}
UNKNOWN_MODEL = "no-such-model-7f3a"
PROFILE: dict[str, Any] = {
    "default": {"ttft_ms": 0, "token_ms": 0},
    "faults": [
        {"model": "broken-*", "kind": "500"},
        {"model": "limited-*", "kind": "429"},
        # Fails or not by a seeded draw: with seed 1 the first call fails, the second passes.
        {"model": "flaky-*", "kind": "500", "rate": 0.5},
    ],
    "seed": 1,
}
PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "How do I reset my password?"}
]


def variant(model: str, weight: int = 1, provider: str = "sim") -> dict[str, Any]:
    return {"provider": provider, "model": model, "weight": weight}


def metrics_config(sim_url: str) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"name": "tests", "key": "${METRICS_KEY}"}]},
        "providers": {
            "sim": {"base_url": f"{sim_url}/v1"},
            # Only the retry test uses this provider, so its errors stay out of the others'.
            "sim-retry": {"base_url": f"{sim_url}/v1"},
        },
        "routes": {
            "chat": {"variants": {"teacher": variant("gpt-4o")}},
            "fallback": {
                "variants": {"primary": variant("broken-1"), "backup": variant("gpt-4o", 0)},
                "fallbacks": ["backup"],
                "retry": {"attempts": 2, "backoff_ms": 5, "max_backoff_ms": 50},
                # Two failures open the primary's breaker: the call's own two attempts.
                "breaker": {"failures": 2, "cooldown_s": 30},
            },
            "shadowed": {
                # An upstream model with no price: counted as unpriced, never as $0.
                "variants": {"teacher": variant("sim-local-1"), "student": variant("shadow-1")},
                "shadow": {"variant": "student", "sample": 1.0},
            },
            "limited": {"variants": {"primary": variant("limited-1")}, "retry": {"attempts": 1}},
            "retried": {
                "variants": {"primary": variant("flaky-1", provider="sim-retry")},
                "retry": {"attempts": 3, "backoff_ms": 5, "max_backoff_ms": 50},
            },
        },
    }


# ----------------------------------------------------------------------------- scraping


LabelKey = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    """One /metrics answer: each family's type, and every sample by name and label set."""

    text: str
    types: dict[str, str] = field(default_factory=dict)
    samples: dict[str, dict[LabelKey, float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        scrape = cls(text)
        for family in text_string_to_metric_families(text):
            scrape.types[family.name] = family.type
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                series = scrape.samples.setdefault(sample.name, {})
                assert key not in series, f"duplicate series {sample.name}{dict(key)}"
                series[key] = sample.value
        return scrape

    def series(self, name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """Values of ``name`` by the values of ``labels``, which must be all its labels."""
        out: dict[tuple[str, ...], float] = {}
        for key, value in self.samples.get(name, {}).items():
            names = tuple(label for label, _ in key)
            assert sorted(names) == sorted(labels), f"{name} has labels {names}, not {labels}"
            as_dict = dict(key)
            out[tuple(as_dict[label] for label in labels)] = value
        return out

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get(name, {}).get(tuple(sorted(labels.items())))

    def total(self, name: str) -> float:
        return sum(self.samples.get(name, {}).values())


def scrape(url: str) -> Scrape:
    # A new connection each time: with several workers, any of them may answer.
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape.parse(response.text)


def poll(url: str, ready: Callable[[Scrape], bool], seconds: float = 10.0) -> Scrape:
    """Scrape until ``ready``: metrics are updated after the answer has gone out, and the
    shadow and the capture writer finish in the background."""
    deadline = time.monotonic() + seconds
    while True:
        current = scrape(url)
        if ready(current) or time.monotonic() > deadline:
            return current
        time.sleep(0.05)


# ----------------------------------------------------------------------------- the sequence


@dataclass
class KnownCalls:
    scrape: Scrape
    config: dict[str, Any]
    usage: dict[tuple[str, str], dict[str, int]]
    """(route, variant) -> prompt/completion/cached tokens the simulator reported."""
    costs: dict[tuple[str, str], float]
    statuses: dict[str, int]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start_simulator(tmp_path_factory.mktemp("metrics-sim"), PROFILE)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sim: Running) -> Iterator[Running]:
    running = start_gateway(tmp_path_factory.mktemp("metrics-gw"), metrics_config(sim.url), ENV)
    yield running
    running.stop()


def _add_usage(
    totals: dict[tuple[str, str], dict[str, int]], where: tuple[str, str], usage: Any
) -> None:
    into = totals.setdefault(where, {"prompt": 0, "completion": 0, "cached": 0})
    into["prompt"] += usage.prompt_tokens
    into["completion"] += usage.completion_tokens
    details = usage.prompt_tokens_details
    into["cached"] += (details.cached_tokens or 0) if details is not None else 0


def _chat(client: httpx.Client, model: str) -> httpx.Response:
    return client.post(
        "/v1/chat/completions", json={"model": model, "messages": PROMPT, "max_tokens": 6}
    )


@pytest.fixture(scope="module")
def sequence(gw: Running, sim: Running) -> KnownCalls:
    sdk = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
    direct = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="direct", max_retries=0)
    usage: dict[tuple[str, str], dict[str, int]] = {}
    statuses: dict[str, int] = {}

    # 3 plain and 2 streamed calls on a single-variant route.
    for n in range(3):
        reply = sdk.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"question {n}"}], max_tokens=5 + n
        )
        assert reply.usage is not None
        _add_usage(usage, ("chat", "teacher"), reply.usage)
    with_usage = sdk.chat.completions.create(
        model="chat",
        messages=PROMPT,
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk for chunk in with_usage if isinstance(chunk, ChatCompletionChunk)]
    assert chunks[-1].usage is not None
    _add_usage(usage, ("chat", "teacher"), chunks[-1].usage)
    # Without include_usage the client never sees the usage, but the gateway asks for it:
    # the simulator's answers are deterministic, so ask it directly for the same call's usage.
    without_usage = sdk.chat.completions.create(
        model="chat", messages=PROMPT, max_tokens=9, stream=True
    )
    seen = [chunk for chunk in without_usage if isinstance(chunk, ChatCompletionChunk)]
    assert seen and all(chunk.usage is None for chunk in seen)
    same = direct.chat.completions.create(model="gpt-4o", messages=PROMPT, max_tokens=9)
    assert same.usage is not None
    _add_usage(usage, ("chat", "teacher"), same.usage)

    with httpx.Client(
        base_url=gw.url, headers={"authorization": f"Bearer {KEY}"}, timeout=10
    ) as client:
        fallback = _chat(client, "fallback")
        assert fallback.status_code == 200, fallback.text
        assert fallback.headers["x-gateway-variant"] == "backup"
        _add_usage(
            usage,
            ("fallback", "backup"),
            openai.types.CompletionUsage.model_validate(fallback.json()["usage"]),
        )
        shadowed = _chat(client, "shadowed")
        assert shadowed.status_code == 200, shadowed.text
        assert shadowed.headers["x-gateway-variant"] == "teacher"
        _add_usage(
            usage,
            ("shadowed", "teacher"),
            openai.types.CompletionUsage.model_validate(shadowed.json()["usage"]),
        )
        for model in ("limited", UNKNOWN_MODEL):
            statuses[model] = _chat(client, model).status_code
    assert statuses == {"limited": 429, UNKNOWN_MODEL: 404}

    prices = PriceTable()
    costs: dict[tuple[str, str], float] = {}
    for (route, name), tokens in usage.items():
        model = metrics_config(sim.url)["routes"][route]["variants"][name]["model"]
        cost = prices.cost_usd(model, tokens["prompt"], tokens["completion"], tokens["cached"])
        if cost is not None:
            costs[(route, name)] = cost

    def settled(s: Scrape) -> bool:
        # 8 routed calls and the shadow are captured; the 404 never reached a route.
        return (
            s.value("gateway_shadow_calls_total", route="shadowed", variant="student", outcome="ok")
            == 1
            and s.value("gateway_capture_records_total", outcome="written") == 9
            and s.total("gateway_requests_total") == 8
        )

    final = poll(gw.url, settled)
    assert settled(final), final.text
    return KnownCalls(final, metrics_config(sim.url), usage, costs, statuses)


# ----------------------------------------------------------------------------- values


def test_requests_by_route_variant_upstream_model_and_status(sequence: KnownCalls) -> None:
    requests = sequence.scrape.series(
        "gateway_requests_total", "route", "variant", "upstream_model", "status"
    )
    assert requests == {
        ("chat", "teacher", "gpt-4o", "200"): 5,
        ("fallback", "backup", "gpt-4o", "200"): 1,
        ("shadowed", "teacher", "sim-local-1", "200"): 1,
        ("limited", "primary", "limited-1", "429"): 1,
    }


def test_histogram_counts(sequence: KnownCalls) -> None:
    s = sequence.scrape
    answered = {
        ("chat", "teacher"): 5,
        ("fallback", "backup"): 1,
        ("shadowed", "teacher"): 1,
        ("limited", "primary"): 1,
    }
    for name in ("gateway_request_duration_seconds", "gateway_upstream_duration_seconds"):
        assert s.types[name] == "histogram"
        assert s.series(f"{name}_count", "route", "variant") == answered, name
        # The +Inf bucket holds every observation, and sums are positive times.
        inf = {
            key[:2]: value
            for key, value in s.series(f"{name}_bucket", "route", "variant", "le").items()
            if key[2] == "+Inf"
        }
        assert inf == answered, name
        assert all(v > 0 for v in s.series(f"{name}_sum", "route", "variant").values()), name
    # Time to first token: streams only.
    ttft = s.series("gateway_time_to_first_token_seconds_count", "route", "variant")
    assert ttft == {("chat", "teacher"): 2}
    overhead = s.series("gateway_overhead_seconds_count", "route")
    assert overhead == {("chat",): 5, ("fallback",): 1, ("shadowed",): 1, ("limited",): 1}


def test_histogram_buckets_are_cumulative(sequence: KnownCalls) -> None:
    s = sequence.scrape
    for name, kind in s.types.items():
        if kind != "histogram":
            continue
        by_series: dict[LabelKey, list[tuple[float, float]]] = {}
        for key, value in s.samples[f"{name}_bucket"].items():
            rest = tuple(item for item in key if item[0] != "le")
            bound = float(dict(key)["le"])
            by_series.setdefault(rest, []).append((bound, value))
        for rest, buckets in by_series.items():
            counts = [count for _, count in sorted(buckets)]
            assert counts == sorted(counts), f"{name}{dict(rest)}"
            assert counts[-1] == s.samples[f"{name}_count"][rest]


def test_tokens_by_kind_equal_the_simulators_usage(sequence: KnownCalls) -> None:
    tokens = sequence.scrape.series("gateway_tokens_total", "route", "variant", "kind")
    expected = {
        (route, name, kind): count
        for (route, name), kinds in sequence.usage.items()
        for kind, count in kinds.items()
        if count or kind != "cached"  # cached is only counted when there are some
    }
    assert tokens == expected
    # The shadow's tokens are not the route's live traffic.
    assert not any(route == "shadowed" and name == "student" for route, name, _ in tokens)


def test_cost_of_priced_models_and_unpriced_calls(sequence: KnownCalls) -> None:
    s = sequence.scrape
    cost = s.series("gateway_cost_usd_total", "route", "variant")
    assert set(cost) == set(sequence.costs) == {("chat", "teacher"), ("fallback", "backup")}
    for (route, name), value in cost.items():
        assert value > 0
        assert value == pytest.approx(sequence.costs[(route, name)], rel=1e-9)
    # sim-local-1 has no price: no cost series for its route, one unpriced call instead.
    assert s.series("gateway_unpriced_calls_total", "upstream_model") == {("sim-local-1",): 1}


def test_upstream_errors_retries_and_fallbacks(sequence: KnownCalls) -> None:
    s = sequence.scrape
    errors = s.series("gateway_upstream_errors_total", "provider", "kind")
    # The fallback route's primary: two attempts with 500; the limited route: one 429.
    assert errors == {("sim", "status_5xx"): 2, ("sim", "status_429"): 1}
    assert s.series("gateway_retries_total", "route", "variant") == {("fallback", "primary"): 1}
    fallbacks = s.series("gateway_fallbacks_total", "route", "from_variant", "to_variant")
    assert fallbacks == {("fallback", "primary", "backup"): 1}


def test_breaker_state(sequence: KnownCalls) -> None:
    breakers = sequence.scrape.series("gateway_breaker_state", "provider", "upstream_model")
    assert sequence.scrape.types["gateway_breaker_state"] == "gauge"
    # broken-1 failed twice with failures: 2, so it is open (2); the rest are closed.
    assert breakers == {
        ("sim", "gpt-4o"): 0,
        ("sim", "broken-1"): 2,
        ("sim", "sim-local-1"): 0,
        ("sim", "limited-1"): 0,
    }


def test_shadow_calls(sequence: KnownCalls) -> None:
    shadows = sequence.scrape.series("gateway_shadow_calls_total", "route", "variant", "outcome")
    assert shadows == {("shadowed", "student", "ok"): 1}


def test_capture_health(sequence: KnownCalls) -> None:
    s = sequence.scrape
    assert s.series("gateway_capture_records_total", "outcome") == {("written",): 9}
    assert s.types["gateway_capture_queue_depth"] == "gauge"
    assert s.series("gateway_capture_queue_depth") == {(): 0}


def test_the_unknown_model_leaves_no_label(sequence: KnownCalls) -> None:
    assert sequence.statuses[UNKNOWN_MODEL] == 404
    assert UNKNOWN_MODEL not in sequence.scrape.text


# ----------------------------------------------------------------------------- conventions

COUNTER_SUFFIXES = ("_total", "_created")
FORBIDDEN_LABELS = {"user", "user_id", "request_id", "id", "key", "api_key", "trace_id"}
BOUNDED = {
    "kind": {
        "prompt",
        "completion",
        "cached",
        "timeout",
        "unreachable",
        "disconnected",
        "status_429",
        "status_5xx",
        "stream_interrupted",
    },
    "outcome": {"ok", "error", "skipped", "written", "dropped", "retried", "failed"},
}


def test_names_follow_prometheus_conventions(sequence: KnownCalls) -> None:
    s = sequence.scrape
    ours = {
        name: kind
        for name, kind in s.types.items()
        if name.startswith("gateway_")
        # prometheus-client's creation timestamps of counters and histograms (text format
        # 0.0.4 exposes them as gauges of their own), not metrics defined by the gateway
        and not (name.endswith("_created") and name.removesuffix("_created") in s.types)
    }
    assert len(ours) >= 15
    for name, kind in ours.items():
        assert re.fullmatch(r"gateway(_[a-z0-9]+)+", name), name
        if kind == "counter":
            # The parser strips _total from a counter family's name; its samples keep it.
            assert not name.endswith("_total"), f"{name}: counter family named *_total_total"
            for sample_name in s.samples:
                if sample_name.startswith(name + "_") and s.samples[sample_name]:
                    suffix = sample_name[len(name) :]
                    assert suffix in COUNTER_SUFFIXES, sample_name
        elif kind == "histogram":
            # Every histogram here times something: base unit seconds.
            assert name.endswith("_seconds"), name
        else:
            assert kind == "gauge", f"{name}: {kind}"
        if any(word in name for word in ("duration", "latency", "time", "overhead")):
            assert name.endswith("_seconds"), name
        assert not name.endswith(("_ms", "_milliseconds", "_cents")), name
    # Every sample of ours belongs to a declared family (nothing untyped).
    for sample_name in s.samples:
        if sample_name.startswith("gateway_"):
            assert any(sample_name.startswith(family) for family in ours), sample_name


def test_labels_are_bounded_by_the_configuration(sequence: KnownCalls) -> None:
    config = sequence.config
    routes: dict[str, Any] = config["routes"]
    models = {v["model"] for route in routes.values() for v in route["variants"].values()}
    variants = {name for route in routes.values() for name in route["variants"]}
    seen = 0
    for sample_name, series in sequence.scrape.samples.items():
        if not sample_name.startswith("gateway_"):
            continue
        for key in series:
            labels: Mapping[str, str] = dict(key)
            assert not FORBIDDEN_LABELS & set(labels), f"{sample_name}{labels}"
            route = labels.get("route")
            if route is not None:
                assert route in routes, f"{sample_name}: route {route!r}"
                for label in ("variant", "from_variant", "to_variant"):
                    if label in labels:
                        assert labels[label] in routes[route]["variants"], f"{sample_name}{labels}"
            for label in ("variant", "from_variant", "to_variant"):
                if label in labels:
                    assert labels[label] in variants
            if "upstream_model" in labels:
                assert labels["upstream_model"] in models, f"{sample_name}{labels}"
            if "provider" in labels:
                assert labels["provider"] in config["providers"], f"{sample_name}{labels}"
            if "status" in labels:
                assert re.fullmatch(r"[1-5]\d\d", labels["status"]), f"{sample_name}{labels}"
            for label, allowed in BOUNDED.items():
                if label in labels:
                    assert labels[label] in allowed, f"{sample_name}{labels}"
            seen += 1
    assert seen > 100


# ----------------------------------------------------------------------------- retries


def test_a_retry_that_succeeds_is_counted(gw: Running, sim: Running, sequence: KnownCalls) -> None:
    # Depends on ``sequence`` so that its scrape was taken before this call.
    httpx.delete(f"{sim.url}/_sim/requests")
    with httpx.Client(
        base_url=gw.url, headers={"authorization": f"Bearer {KEY}"}, timeout=10
    ) as client:
        response = _chat(client, "retried")
    assert response.status_code == 200, response.text
    tries = [r for r in httpx.get(f"{sim.url}/_sim/requests").json() if r["body"]]
    assert [r["body"]["model"] for r in tries] == ["flaky-1", "flaky-1"], "seeded draws moved"
    after = poll(
        gw.url,
        lambda s: (
            s.value("gateway_upstream_errors_total", provider="sim-retry", kind="status_5xx") == 1
        ),
    )
    assert after.value("gateway_retries_total", route="retried", variant="primary") == 1


# ----------------------------------------------------------------------------- workers


async def _calls(url: str, count: int, concurrency: int) -> list[int]:
    """``count`` embeddings calls, each on a new connection, ``concurrency`` at a time."""
    statuses: list[int] = []
    pending = list(range(count))
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while pending:
                pending.pop()
                async with session.post(
                    f"{url}/v1/embeddings",
                    json={"model": "chat", "input": "count me"},
                    headers={"authorization": f"Bearer {KEY}"},
                ) as response:
                    await response.read()
                    statuses.append(response.status)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def _workers(gateway: Running) -> list[psutil.Process]:
    """uvicorn's worker processes (multiprocessing spawns them with ``spawn_main``)."""
    supervisor = psutil.Process(gateway.process.pid)
    return [
        child
        for child in supervisor.children(recursive=True)
        if any("spawn_main" in part for part in child.cmdline())
    ]


def test_several_workers_sum_in_every_scrape(sim: Running, tmp_path: Path) -> None:
    gateway = start_gateway(
        tmp_path,
        {**metrics_config(sim.url), "capture": {"enabled": False}},
        ENV,
        extra_args=["--workers", "2"],
    )
    try:
        workers = _workers(gateway)
        assert len(workers) == 2, [w.cmdline() for w in workers]
        metrics_dir = Path(workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"])

        def served(worker: psutil.Process) -> bool:
            # A worker's counter file appears with its first counted call.
            return (metrics_dir / f"counter_{worker.pid}.db").exists()

        # The gateway is ready when one worker is: call in batches until both have answered
        # some (a worker still starting up leaves every connection to the other).
        calls = 0
        deadline = time.monotonic() + 20
        while not all(served(worker) for worker in workers) or calls < 40:
            assert time.monotonic() < deadline, sorted(metrics_dir.iterdir())
            statuses = asyncio.run(_calls(gateway.url, 20, concurrency=8))
            assert statuses == [200] * 20
            calls += 20

        first = poll(gateway.url, lambda s: s.total("gateway_requests_total") == calls)
        totals = [first.total("gateway_requests_total")]
        totals += [scrape(gateway.url).total("gateway_requests_total") for _ in range(9)]
        assert totals == [calls] * 10
        counts = [
            scrape(gateway.url).value(
                "gateway_request_duration_seconds_count", route="chat", variant="teacher"
            )
            for _ in range(4)
        ]
        assert counts == [calls] * 4
    finally:
        gateway.stop()
