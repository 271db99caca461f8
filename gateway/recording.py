"""After the answer has gone out: metrics for every routed call, and a capture record for the
calls that are recorded. Nothing here runs before the client has its answer, and nothing here
may fail a call: errors are logged and counted.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from capture.prepare import is_mark
from capture.pricing import PriceTable
from capture.record import CallRecord
from gateway.ids import new_request_id
from gateway.limits import Limiter
from gateway.metrics import Children, Metrics
from gateway.relay import Call
from gateway.shadow import ShadowResult
from gateway.usage import Usage, usage_from_body, usage_from_chunks

log = logging.getLogger("gateway.recording")


class Writer(Protocol):
    def should_capture(self) -> bool: ...

    def submit(self, record: CallRecord) -> bool: ...


def parse_tags(header: str | None) -> dict[str, str]:
    """``x-gateway-tags: k=v,k2=v2`` as a dict; malformed pairs are skipped."""
    tags: dict[str, str] = {}
    if header:
        for pair in header.split(","):
            key, sep, value = pair.partition("=")
            if sep and key.strip():
                tags[key.strip()] = value.strip()
    return tags


# Tag keys starting ``gateway.`` are the gateway's marks on its own calls (``gateway.purpose``,
# ``gateway.rollout``: see capture/ledger.py); a client's are dropped (capture.prepare.is_mark)
# so that it cannot mark its calls.


def strip_marks(header: str) -> str | None:
    """``x-gateway-tags`` without the pairs whose key starts with ``gateway.``; None if empty."""
    kept = [pair for pair in header.split(",") if not is_mark(pair.partition("=")[0])]
    return ",".join(kept) if any(p.strip() for p in kept) else None


def routing_tags(header: str | None, body: object) -> dict[str, str]:
    """A call's tags for routing: ``x-gateway-tags`` plus the string values of an OpenAI body's
    ``metadata`` (the header wins a conflict, ``gateway.*`` keys of the body never count), as the
    capture merges them."""
    tags = parse_tags(header)
    metadata = body.get("metadata") if isinstance(body, dict) else None
    if isinstance(metadata, dict):
        for key, value in metadata.items():
            if isinstance(key, str) and isinstance(value, str) and not is_mark(key):
                tags.setdefault(key, value)
    return tags


class Recorder:
    def __init__(
        self,
        metrics: Metrics,
        prices: PriceTable,
        writer: Writer | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.metrics = metrics
        self.prices = prices
        self.writer = writer
        self.limiter = limiter
        # The children every routed call updates, looked up by their labels' values.
        self._requests = Children(metrics.requests)
        self._duration = Children(metrics.duration)
        self._upstream = Children(metrics.upstream)
        self._overhead = Children(metrics.overhead)
        self._ttft = Children(metrics.ttft)
        self._tokens = Children(metrics.tokens)
        self._cost = Children(metrics.cost)

    def wants(self, route_capture: bool) -> bool:
        """Whether a call of this route is recorded (capture on, route on, sampled in)."""
        return self.writer is not None and route_capture and self.writer.should_capture()

    def finish(self, call: Call, record: bool) -> None:
        try:
            self._finish(call, record)
        except Exception:
            log.exception("recording call %s failed", call.request_id)

    def _finish(self, call: Call, record: bool) -> None:
        decision = call.decision
        if decision is None:
            return
        m = self.metrics
        route, variant, model = decision.route, decision.variant, decision.upstream_model
        total = time.perf_counter() - call.started
        self._requests(route, variant, model, call.status).inc()
        if call.responded:
            self._duration(route, variant).observe(total)
        self._upstream(route, variant).observe(call.upstream_seconds)
        self._overhead(route).observe(call.overhead_ms / 1000.0)
        if call.first_byte_at is not None:
            self._ttft(route, variant).observe(call.first_byte_at - call.started)
        if call.attempts or call.error is not None or call.first_decision is not decision:
            self._count_attempts(call)

        usage: Usage | None = None
        cost: float | None = None
        if call.cache_key is not None:
            m.cache.labels(route, "hit" if call.cache_hit else "miss").inc()
        if call.status == 200 and not call.cache_hit:  # a cached answer costs nothing
            anthropic = call.upstream_api == "anthropic"
            if call.response_body is not None:
                usage = usage_from_body(call.response_body, anthropic)
            elif call.chunks:
                usage = usage_from_chunks(call.chunks, anthropic)
        if usage is not None:
            self._tokens(route, variant, "prompt").inc(usage.prompt_tokens)
            self._tokens(route, variant, "completion").inc(usage.completion_tokens)
            if usage.cached_tokens:
                self._tokens(route, variant, "cached").inc(usage.cached_tokens)
            cost = self.prices.cost_usd(
                model,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
                usage.cache_write_tokens,
            )
            if cost is None:
                m.unpriced.labels(model).inc()
            else:
                self._cost(route, variant).inc(cost)
        if call.limits is not None and self.limiter is not None and usage is not None:
            tokens = usage.prompt_tokens + usage.completion_tokens
            self.limiter.record(call.key_id, call.limits, tokens, cost)

        if record and self.writer is not None:
            total_ms = total * 1000.0
            self.writer.submit(
                CallRecord(
                    id=call.request_id,
                    started_at=call.started_wall,
                    endpoint=call.endpoint or "passthrough",
                    route=route,
                    variant=variant,
                    provider=decision.provider,
                    requested_model=call.requested_model,
                    upstream_model=model,
                    request_body=call.request_body,
                    status=call.status,
                    stream=call.stream,
                    total_ms=total_ms,
                    overhead_ms=call.overhead_ms,
                    response_body=call.response_body,
                    stream_chunks=call.chunks,
                    error=call.error,
                    ttft_ms=(call.first_byte_at - call.started) * 1000.0
                    if call.first_byte_at is not None
                    else None,
                    upstream_ms=max(0.0, total_ms - call.overhead_ms),
                    user_key=call.user,
                    tags=parse_tags(call.tags),
                    redact=call.redact,
                    cache_hit=call.cache_hit,
                    dialect=call.dialect,
                    upstream_api=call.upstream_api,
                )
            )

    def _count_attempts(self, call: Call) -> None:
        decision, first = call.decision, call.first_decision
        assert decision is not None
        m = self.metrics
        tries: dict[str, int] = {}
        for attempt in call.attempts:  # the failed tries
            if attempt.kind == "skipped":
                continue
            tries[attempt.variant] = tries.get(attempt.variant, 0) + 1
            m.upstream_errors.labels(attempt.provider, attempt.kind).inc()
        answered = 0 < call.status < 500 and call.status != 429 and not call.cache_hit
        if answered and call.attempts:  # the try that answered
            tries[decision.variant] = tries.get(decision.variant, 0) + 1
        for variant, count in tries.items():
            if count > 1:
                m.retries.labels(decision.route, variant).inc(count - 1)
        if call.error is not None and call.error.startswith("stream interrupted"):
            m.upstream_errors.labels(decision.provider, "stream_interrupted").inc()
        if first is not None and first.variant != decision.variant:
            m.fallbacks.labels(decision.route, first.variant, decision.variant).inc()

    def finish_shadow(self, result: ShadowResult, record: bool) -> None:
        try:
            self._finish_shadow(result, record)
        except Exception:
            log.exception("recording shadow call of %s failed", result.shadow_of)

    def rejected(self, status: int, code: str | None) -> None:
        """A call refused before routing (its labels: status and our own error codes only)."""
        try:
            self.metrics.rejected.labels(str(status), code or "none").inc()
        except Exception:
            log.exception("counting a rejected call failed")

    def _finish_shadow(self, result: ShadowResult, record: bool) -> None:
        decision = result.decision
        m = self.metrics
        ok = result.error is None and (result.status or 0) < 400
        m.shadow_calls.labels(decision.route, decision.variant, "ok" if ok else "error").inc()
        usage = None
        if result.status == 200:
            anthropic = result.upstream_api == "anthropic"
            if result.body is not None:
                usage = usage_from_body(result.body, anthropic)
            elif result.chunks:
                usage = usage_from_chunks(result.chunks, anthropic)
        if usage is not None:
            route, variant = decision.route, decision.variant
            m.shadow_tokens.labels(route, variant, "prompt").inc(usage.prompt_tokens)
            m.shadow_tokens.labels(route, variant, "completion").inc(usage.completion_tokens)
            cost = self.prices.cost_usd(
                decision.upstream_model,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
                usage.cache_write_tokens,
            )
            if cost is not None:
                m.shadow_cost.labels(route, variant).inc(cost)
        if not record or self.writer is None:
            return
        self.writer.submit(
            CallRecord(
                id=new_request_id(),
                started_at=result.started_at,
                endpoint=result.endpoint,
                route=decision.route,
                variant=decision.variant,
                provider=decision.provider,
                requested_model=result.requested_model,
                upstream_model=decision.upstream_model,
                request_body=result.client_body,
                status=result.status or 0,
                stream=result.stream,
                total_ms=result.total_ms,
                overhead_ms=0.0,
                response_body=result.body,
                stream_chunks=result.chunks or None,
                error=result.error,
                ttft_ms=result.ttft_ms,
                upstream_ms=result.total_ms,
                user_key=result.user,
                tags={**parse_tags(result.tags), **(result.marks or {})},
                shadow_of=result.shadow_of,
                redact=result.redact,
                dialect=result.dialect,
                upstream_api=result.upstream_api,
            )
        )
