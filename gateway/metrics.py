"""Prometheus metrics: cheap to update on the hot path, correct with several workers.

With more than one uvicorn worker, ``PROMETHEUS_MULTIPROC_DIR`` is set by ``gateway serve``
before the workers start, and a scrape merges every worker's values (prometheus-client's
multiprocess mode). Labels are bounded by the configuration: routes, variants, upstream models,
providers, status codes; never users or request ids.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.exposition import FastExposition

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# LLM calls take from tens of milliseconds to minutes.
_CALL_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
# The gateway's own time is sub-millisecond when all is well.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A metric's labelled children, kept by their label values.

    prometheus-client's ``labels()`` checks and converts its arguments and takes the metric's
    lock at every call; a routed call updates about eight children, nearly always the same few,
    so the recorder looks them up here: one dict lookup each. A child is made by ``labels()`` on
    first use, so a series still appears in /metrics only once it is updated. The values are
    bounded as the labels are (routes, variants, models, statuses of the configuration); nothing
    removes a child from a metric, so a kept one is never stale.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[Hashable, ...], M] = {}

    def __call__(self, *values: Hashable) -> M:
        """The child for ``values`` (each turned into its ``str``, as ``labels()`` does)."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    def __init__(self) -> None:
        # No `_created` series: a sixth fewer samples, and one worker renders like several.
        disable_created_metrics()
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        registry = None if self.multiprocess else self.registry
        route_variant = ("route", "variant")
        self.requests = Counter(
            "gateway_requests",
            "Calls answered, by route, variant, upstream model and HTTP status.",
            ("route", "variant", "upstream_model", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Total time of a call at the gateway, from its arrival to the last byte sent.",
            route_variant,
            buckets=_CALL_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "Time from the call's arrival to the upstream's first chunk of a streamed answer "
            "(the role chunk, usually just before the first token).",
            route_variant,
            buckets=_CALL_BUCKETS,
            registry=registry,
        )
        self.upstream = Histogram(
            "gateway_upstream_duration_seconds",
            "Time waiting on the upstream, all attempts: to the whole body for plain calls, "
            "to the response headers for streams.",
            route_variant,
            buckets=_CALL_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "The gateway's own time per call: total minus time waiting on the upstream.",
            ("route",),
            buckets=_OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "Tokens by kind (prompt, completion, cached) as the upstream reported them.",
            ("route", "variant", "kind"),
            registry=registry,
        )
        self.cost = Counter(
            "gateway_cost_usd",
            "Cost in US dollars from the price table (calls of unpriced models excluded).",
            route_variant,
            registry=registry,
        )
        self.unpriced = Counter(
            "gateway_unpriced_calls",
            "Calls to models with no known price (their cost is unknown, not zero).",
            ("upstream_model",),
            registry=registry,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Failed upstream attempts, by provider and kind (timeout, unreachable, "
            "disconnected, status_429, status_5xx, stream_interrupted).",
            ("provider", "kind"),
            registry=registry,
        )
        self.retries = Counter(
            "gateway_retries",
            "Attempts beyond the first on the same variant.",
            route_variant,
            registry=registry,
        )
        self.fallbacks = Counter(
            "gateway_fallbacks",
            "Calls answered by a variant other than the one first chosen.",
            ("route", "from_variant", "to_variant"),
            registry=registry,
        )
        self.breaker_state = Gauge(
            "gateway_breaker_state",
            "Circuit breaker per upstream model: 0 closed, 1 half-open, 2 open.",
            ("provider", "upstream_model"),
            registry=registry,
            multiprocess_mode="max",
        )
        self.shadow_calls = Counter(
            "gateway_shadow_calls",
            "Shadow calls by outcome (ok, error, skipped).",
            ("route", "variant", "outcome"),
            registry=registry,
        )
        self.cache = Counter(
            "gateway_cache",
            "Response cache lookups by outcome (hit, miss), on routes with a cache.",
            ("route", "outcome"),
            registry=registry,
        )
        self.rejected = Counter(
            "gateway_rejected_requests",
            "Calls refused before reaching an upstream (bad body, key, model, size, limits), "
            "by status and error code.",
            ("status", "code"),
            registry=registry,
        )
        self.limiter_errors = Counter(
            "gateway_limiter_errors",
            "Rate-limit checks and updates that failed to reach the limits' backend, by backend "
            "and outcome (admitted: a call let through unchecked, fail open; refused: a call "
            "refused, fail closed; unrecorded: finished calls' tokens and spend not counted).",
            ("backend", "outcome"),
            registry=registry,
        )
        self.shadow_tokens = Counter(
            "gateway_shadow_tokens",
            "Tokens spent by shadow calls, by kind.",
            ("route", "variant", "kind"),
            registry=registry,
        )
        self.shadow_cost = Counter(
            "gateway_shadow_cost_usd",
            "Cost in US dollars of shadow calls (unpriced models excluded).",
            ("route", "variant"),
            registry=registry,
        )
        self.capture_queue_depth = Gauge(
            "gateway_capture_queue_depth",
            "Capture records waiting to be written.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.capture_records = Counter(
            "gateway_capture_records",
            "Capture records by outcome (written, dropped, retried, failed).",
            ("outcome",),
            registry=registry,
        )
        self.capture_store_up = Gauge(
            "gateway_capture_store_up",
            "1 while the capture database takes writes (or capture is off); 0 from a failure "
            "of the database until the writer stores a batch again.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.capture_store_up.set(1)
        self.rollout_decisions = Counter(
            "gateway_rollout_decisions",
            "Rollout decisions by route, slice and action (start, advance, promote, rollback, "
            "pin, give_up, abort).",
            ("route", "slice", "action"),
            registry=registry,
        )
        self.rollout_share = Gauge(
            "gateway_rollout_share",
            "The candidate's share of a rollout's slice of traffic (0 while shadowed or pinned).",
            ("route", "slice"),
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.judge_verdicts = Counter(
            "gateway_judge_verdicts",
            "Judged pairs the rollout controller counted, by verdict (win, tie, loss from the "
            "candidate's side).",
            ("route", "verdict"),
            registry=registry,
        )
        self.rollout_look = Histogram(
            "gateway_rollout_look_seconds",
            "Wall time of the rollout controller's look at every rollout, on the deciding "
            "replica: the evidence read and checked, the decisions, the changes shared.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.rollout_webhook = Counter(
            "gateway_rollout_webhook_posts",
            "Decisions posted to the autopilot's webhook, by outcome (ok, failed, dropped).",
            ("outcome",),
            registry=registry,
        )

        self._fast = FastExposition(
            [value for value in vars(self).values() if isinstance(value, MetricWrapperBase)],
            self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return self._fast.render(), CONTENT_TYPE_LATEST

    def render_reference(self) -> bytes:
        """prometheus-client's own rendering (tests compare it with the fast one)."""
        return generate_latest(self.registry)
