from __future__ import annotations

from router.breaker import Breakers, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state


def test_opens_after_k_failures_then_probes_and_recovers() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=10.0, clock=clock)
    for _ in range(2):
        breaker.failure()
        assert breaker.allow()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()  # the probe
    assert state(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow()  # only one probe at a time
    breaker.success()
    assert state(breaker) is BreakerState.CLOSED and breaker.allow()


def test_a_failed_probe_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=5.0, clock=clock)
    breaker.failure()
    clock.now = 5.0
    assert breaker.allow()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN
    clock.now = 9.0
    assert not breaker.allow()


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures=2, cooldown=5.0, clock=Clock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state is BreakerState.CLOSED


def test_registry_keys_by_provider_and_model() -> None:
    breakers = Breakers(Clock())
    a = breakers.get("p", "m", 1, 1.0)
    assert breakers.get("p", "m", 1, 1.0) is a
    assert breakers.get("p", "other", 1, 1.0) is not a
    a.failure()
    assert breakers.states()[("p", "m")] is BreakerState.OPEN
