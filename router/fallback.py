"""Calling a plan: retries with backoff, then the fallback chain, under circuit breakers.

Only failures before the first byte are retried: a connection or timeout error, or an answer
with status 429 or 5xx. Any other answer (2xx, 4xx) ends the search and is the outcome. When
every variant fails, the outcome is the last upstream's error answer, or its transport error.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from router.breaker import Breakers, BreakerState
from router.config import BreakerConfig, RetryConfig
from router.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from router.table import Decision
from router.upstream import BufferedResponse, UpstreamResponse


@dataclass(frozen=True, slots=True)
class Attempt:
    """A failed try (the successful one is the outcome itself)."""

    variant: str
    provider: str
    status: int | None
    error: str | None
    kind: str
    """timeout, unreachable, disconnected, status_429, status_5xx or skipped (circuit open)."""


def _kind(exc: UpstreamError) -> str:
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamUnreachable):
        return "unreachable"
    return "disconnected"


def _status_kind(status: int) -> str:
    return "status_429" if status == 429 else "status_5xx"


@dataclass(slots=True)
class Outcome:
    response: UpstreamResponse
    decision: Decision
    attempts: list[Attempt] = field(default_factory=list)


def retryable(status: int) -> bool:
    return status == 429 or status >= 500


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait an upstream asked for (``retry-after-ms`` or ``retry-after``), if any."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


async def send_with_fallbacks(
    chain: tuple[Decision, ...],
    send: Callable[[Decision], Awaitable[UpstreamResponse]],
    *,
    retry: RetryConfig,
    breaker: BreakerConfig,
    breakers: Breakers,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    attempts: list[Attempt] | None = None,
) -> Outcome:
    """Try the chain; failed tries are appended to ``attempts`` (also when this raises)."""
    if attempts is None:
        attempts = []
    last_response: tuple[BufferedResponse, Decision] | None = None
    last_error: UpstreamError | None = None
    tried = False
    for index, decision in enumerate(chain):
        gate = breakers.get(
            decision.provider, decision.upstream_model, breaker.failures, breaker.cooldown_s
        )
        last_resort = index == len(chain) - 1 and not tried
        if not gate.allow() and not last_resort:
            attempts.append(
                Attempt(decision.variant, decision.provider, None, "circuit open", "skipped")
            )
            continue
        tried = True
        for number in range(retry.attempts):
            wait = retry.backoff_ms / 1000.0 * (2**number)
            try:
                response = await send(decision)
            except UpstreamError as exc:
                gate.failure()
                attempts.append(
                    Attempt(decision.variant, decision.provider, None, exc.detail, _kind(exc))
                )
                last_error, last_response = exc, None
            else:
                if not retryable(response.status):
                    gate.success()
                    return Outcome(response, decision, attempts)
                gate.failure()
                try:
                    body = await response.read()
                except UpstreamError as exc:
                    attempts.append(
                        Attempt(
                            decision.variant,
                            decision.provider,
                            response.status,
                            exc.detail,
                            _kind(exc),
                        )
                    )
                    last_error, last_response = exc, None
                else:
                    attempts.append(
                        Attempt(
                            decision.variant,
                            decision.provider,
                            response.status,
                            None,
                            _status_kind(response.status),
                        )
                    )
                    buffered = BufferedResponse(response.status, dict(response.headers), body)
                    last_response, last_error = (buffered, decision), None
                    asked = retry_after_seconds(response.headers)
                    if asked is not None:
                        wait = max(wait, asked)
            if number + 1 >= retry.attempts or wait * 1000.0 > retry.max_backoff_ms:
                break  # leave it to the next variant
            if gate.state is BreakerState.OPEN and not last_resort:
                break  # this failure opened the breaker
            await sleep(wait)
    if last_response is not None:
        return Outcome(last_response[0], last_response[1], attempts)
    assert last_error is not None
    raise last_error
