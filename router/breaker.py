"""Circuit breakers: skip an upstream model after K consecutive failures, then probe it."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed: calls pass. K consecutive failures open it: calls skip it for ``cooldown`` s.
    Then it is half-open: one probe call passes; its success closes it, its failure reopens it.
    """

    __slots__ = ("_clock", "_cooldown", "_failures", "_limit", "_opened_at", "_probe_at", "state")

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = failures
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probe_at: float | None = None
        self.state = BreakerState.CLOSED

    def allow(self) -> bool:
        """Whether a call may go to this upstream now (a True in half-open state is the probe)."""
        if self.state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self._cooldown:
                return False
            self.state = BreakerState.HALF_OPEN
            self._probe_at = now
            return True
        # Half-open: one probe at a time; a probe that never reported back is replaced.
        if self._probe_at is not None and now - self._probe_at < self._cooldown:
            return False
        self._probe_at = now
        return True

    def success(self) -> None:
        self._failures = 0
        self._probe_at = None
        self.state = BreakerState.CLOSED

    def failure(self) -> None:
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self._limit:
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._probe_at = None


class Breakers:
    """One breaker per (provider, upstream model), kept across configuration reloads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def get(self, provider: str, model: str, failures: int, cooldown: float) -> CircuitBreaker:
        key = (provider, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(failures, cooldown, self._clock)
        return breaker

    def states(self) -> dict[tuple[str, str], BreakerState]:
        return {key: breaker.state for key, breaker in self._breakers.items()}
