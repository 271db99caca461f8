"""How a key's limits look on the wire: OpenAI's rate-limit error and ``x-ratelimit-*`` headers."""

from __future__ import annotations

from gateway.errors import BudgetExceeded, RateLimited
from gateway.limits import Limits, Verdict, retry_after_header
from gateway.types import RawHeaders

_WHAT = {
    "rpm": "requests per minute",
    "tpm": "tokens per minute",
}


def ratelimit_headers(verdict: Verdict, limits: Limits) -> RawHeaders:
    """The key's limits and what is left of them, for each figure the verdict knows: a call
    admitted while the limits could not be checked (fail open) gets none, rather than a
    made-up 0 that would send clients into backing off."""
    headers: RawHeaders = []
    remaining = verdict.remaining_requests
    if limits.rpm is not None and remaining is not None:
        headers.append((b"x-ratelimit-limit-requests", str(limits.rpm).encode()))
        headers.append((b"x-ratelimit-remaining-requests", str(max(0, remaining)).encode()))
    used = verdict.used_tokens
    if limits.tpm is not None and used is not None:
        headers.append((b"x-ratelimit-limit-tokens", str(limits.tpm).encode()))
        headers.append((b"x-ratelimit-remaining-tokens", str(max(0, limits.tpm - used)).encode()))
    if not verdict.allowed:
        reset = f"{verdict.retry_after:.3f}s".encode()
        name = (
            b"x-ratelimit-reset-tokens"
            if verdict.reason == "tpm"
            else b"x-ratelimit-reset-requests"
        )
        headers.append((name, reset))
    return headers


def refusal(verdict: Verdict, limits: Limits) -> RateLimited:
    """The 429 for a refused call, with Retry-After and the x-ratelimit-* headers."""
    reason = verdict.reason
    wait = retry_after_header(verdict.retry_after)
    error: RateLimited
    if reason == "daily_budget":
        error = BudgetExceeded(
            f"This gateway key has spent its daily budget of ${limits.daily_usd:g}; "
            f"it resets at midnight UTC (in {wait} s).",
            code="budget_exceeded",
        )
    elif reason == "monthly_budget":
        error = BudgetExceeded(
            f"This gateway key has spent its monthly budget of ${limits.monthly_usd:g}; "
            f"it resets at the start of next month (UTC).",
            code="budget_exceeded",
        )
    elif reason in _WHAT:
        limit = limits.rpm if reason == "rpm" else limits.tpm
        error = RateLimited(
            f"Rate limit reached for this gateway key: {limit} {_WHAT[reason]}. "
            f"Try again in {wait} s."
        )
    else:
        error = RateLimited(
            "Rate limits cannot be checked right now (shared state unreachable); try again.",
            code="rate_limit_unavailable",
        )
    error.headers = [(b"retry-after", wait.encode()), *ratelimit_headers(verdict, limits)]
    return error
