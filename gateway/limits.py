"""Per-key rate limits (requests and tokens per minute) and spend budgets (USD per day/month).

Two backends with one behaviour: ``LocalLimiter`` (here) keeps the windows in this process (the
default, and what holds when no Redis is configured); ``RedisLimiter`` (``gateway.redislimits``)
keeps them in Redis so every replica shares them, with one atomic script (one round trip) per
admitted call. Requests
are counted in an exact sliding window of 60 s; tokens in one-second buckets over the last 60 s,
added after the call from the real usage; spend per UTC day and month, added after the call.
A call is admitted while the key is under each limit, so the last admitted call may take the
tokens or the spend past it; the next one is refused.
"""

from __future__ import annotations

import calendar
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

log = logging.getLogger("gateway.limits")

Reason = Literal["rpm", "tpm", "daily_budget", "monthly_budget"]
LimiterOutcome = Literal["admitted", "refused", "unrecorded"]
"""What became of a limiter failure: a call admitted unchecked (fail open), a call refused
(fail closed), or a finished call's tokens and spend not counted."""
WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None

    def __bool__(self) -> bool:
        # Read for every call of a key: four comparisons, not a generator.
        return (
            self.rpm is not None
            or self.tpm is not None
            or self.daily_usd is not None
            or self.monthly_usd is not None
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: Reason | None = None
    retry_after: float = 0.0
    """Seconds until a refused call could be admitted."""
    remaining_requests: int | None = None
    """None: not known (no requests limit, or the limits could not be checked)."""
    used_tokens: int | None = None
    """None: not known (no tokens limit, or the limits could not be checked)."""


ADMITTED = Verdict(True)


class Admission(Protocol):
    """An admit under way: await it for the verdict, or ``discard`` it when the call ends
    before (the call still counts against the key's requests)."""

    def __await__(self) -> Generator[Any, None, Verdict]: ...

    def discard(self) -> None: ...


class Decided:
    """An admission whose verdict is known at once."""

    __slots__ = ("_verdict",)

    def __init__(self, verdict: Verdict) -> None:
        self._verdict = verdict

    def __await__(self) -> Generator[Any, None, Verdict]:
        return self._verdict
        yield  # a generator that returns at once

    def discard(self) -> None:
        pass


class Limiter(Protocol):
    def begin(self, key_id: str, limits: Limits) -> Admission:
        """Start admitting a call now (with Redis the script is sent at once), so the caller
        can do its own work while the answer travels; the request counts from here."""
        ...

    async def admit(self, key_id: str, limits: Limits) -> Verdict: ...

    def record(self, key_id: str, limits: Limits, tokens: int, cost: float | None) -> None:
        """Count a finished call's tokens and spend (after the answer). At once, in this
        process: a backend that shares them sends them later, in the background, so a call
        costs no task and no round trip for this."""
        ...

    async def flush(self) -> None:
        """Send what ``record`` holds back, if anything (tests)."""
        ...

    async def close(self) -> None:
        """Send what is held back and let go of what this replica holds (at shutdown)."""
        ...


def _day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def _month(now: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(now))


def until_next_day(now: float) -> float:
    return 86400.0 - (now % 86400.0)


def until_next_month(now: float) -> float:
    tm = time.gmtime(now)
    year, month = (tm.tm_year + 1, 1) if tm.tm_mon == 12 else (tm.tm_year, tm.tm_mon + 1)
    return max(1.0, calendar.timegm((year, month, 1, 0, 0, 0)) - now)


class Periods:
    """The UTC day and month names of a time, remembered for the current day."""

    def __init__(self) -> None:
        self._day_number = -1
        self._names = ("", "")

    def names(self, now: float) -> tuple[str, str]:
        day_number = int(now // 86400)
        if day_number != self._day_number:
            self._day_number, self._names = day_number, (_day(now), _month(now))
        return self._names


class LocalLimiter:
    """The limits of one process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, dict[int, int]] = {}
        self._spend: dict[tuple[str, str], float] = {}
        self._periods = Periods()

    async def admit(self, key_id: str, limits: Limits) -> Verdict:
        return self.admit_now(key_id, limits)

    def begin(self, key_id: str, limits: Limits) -> Admission:
        return Decided(self.admit_now(key_id, limits))

    def admit_now(self, key_id: str, limits: Limits) -> Verdict:
        now = self._clock()
        day_name, month_name = self._periods.names(now)
        day, month = (key_id, "d" + day_name), (key_id, "m" + month_name)
        if limits.daily_usd is not None and self._spend.get(day, 0.0) >= limits.daily_usd:
            return Verdict(False, "daily_budget", until_next_day(now))
        if limits.monthly_usd is not None and self._spend.get(month, 0.0) >= limits.monthly_usd:
            return Verdict(False, "monthly_budget", until_next_month(now))
        used: int | None = None
        if limits.tpm is not None:
            buckets = self._tokens.get(key_id, {})
            cutoff = int(now) - 59
            for second in [s for s in buckets if s < cutoff]:
                del buckets[second]
            used = sum(buckets.values())
            if used >= limits.tpm:
                oldest = min(buckets) if buckets else int(now)
                return Verdict(
                    False, "tpm", min(WINDOW_S, max(1.0, oldest + WINDOW_S - now)), used_tokens=used
                )
        remaining: int | None = None
        if limits.rpm is not None:
            window = self._requests.setdefault(key_id, deque())
            while window and window[0] <= now - WINDOW_S:
                window.popleft()
            if len(window) >= limits.rpm:
                retry = window[0] + WINDOW_S - now
                return Verdict(False, "rpm", min(WINDOW_S, max(0.001, retry)), 0, used)
            window.append(now)
            remaining = limits.rpm - len(window)
        return Verdict(True, None, 0.0, remaining, used)

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def record(self, key_id: str, limits: Limits, tokens: int, cost: float | None) -> None:
        now = self._clock()
        if limits.tpm is not None and tokens > 0:
            buckets = self._tokens.setdefault(key_id, {})
            buckets[int(now)] = buckets.get(int(now), 0) + tokens
        if cost and (limits.daily_usd is not None or limits.monthly_usd is not None):
            day_name, month_name = self._periods.names(now)
            for period in ((key_id, "d" + day_name), (key_id, "m" + month_name)):
                self._spend[period] = self._spend.get(period, 0.0) + cost


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
