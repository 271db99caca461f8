"""Retries and fallbacks over the ``Upstream`` seam: scripted answers, no network."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from router.breaker import Breakers
from router.config import BreakerConfig, RetryConfig
from router.errors import UpstreamTimeout, UpstreamUnreachable
from router.fallback import Outcome, retry_after_seconds, send_with_fallbacks
from router.table import Decision
from router.upstream import BufferedResponse, UpstreamResponse

TEACHER = Decision("r", "teacher", "p", "gpt-4")
STUDENT = Decision("r", "student", "p", "ft:s")
RETRY = RetryConfig(attempts=2, backoff_ms=10, max_backoff_ms=1000)
BREAKER = BreakerConfig(failures=3, cooldown_s=60)


class Script:
    """Answers per variant, in order; records the waits asked of ``sleep``."""

    def __init__(self, answers: Mapping[str, list[int | Exception]]) -> None:
        self.answers = {k: list(v) for k, v in answers.items()}
        self.calls: list[str] = []
        self.sleeps: list[float] = []

    async def send(self, decision: Decision) -> UpstreamResponse:
        self.calls.append(decision.variant)
        answer = self.answers[decision.variant].pop(0)
        if isinstance(answer, Exception):
            raise answer
        headers = {"retry-after": "0.5"} if answer == 429 else {}
        return BufferedResponse(answer, headers, b'{"status": %d}' % answer)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def run(script: Script, chain: tuple[Decision, ...], breakers: Breakers | None = None) -> Outcome:
    return asyncio.run(
        send_with_fallbacks(
            chain,
            script.send,
            retry=RETRY,
            breaker=BREAKER,
            breakers=breakers or Breakers(),
            sleep=script.sleep,
        )
    )


def test_success_needs_one_call() -> None:
    script = Script({"teacher": [200]})
    outcome = run(script, (TEACHER, STUDENT))
    assert outcome.decision is TEACHER and outcome.response.status == 200
    assert script.calls == ["teacher"] and outcome.attempts == []


@pytest.mark.parametrize(
    "failure", [429, 500, 503, UpstreamTimeout("p", "slow"), UpstreamUnreachable("p", "refused")]
)
def test_retry_then_fall_back(failure: int | Exception) -> None:
    script = Script({"teacher": [failure, failure], "student": [200]})
    outcome = run(script, (TEACHER, STUDENT))
    assert script.calls == ["teacher", "teacher", "student"]
    assert outcome.decision is STUDENT and outcome.response.status == 200
    assert len(outcome.attempts) == 2
    assert script.sleeps == ([0.5] if failure == 429 else [0.01])  # Retry-After honoured


def test_client_errors_are_not_retried() -> None:
    script = Script({"teacher": [400], "student": [200]})
    outcome = run(script, (TEACHER, STUDENT))
    assert outcome.response.status == 400 and script.calls == ["teacher"]


def test_when_all_fail_the_last_upstream_error_is_the_answer() -> None:
    script = Script({"teacher": [500, 500], "student": [503, 503]})
    outcome = run(script, (TEACHER, STUDENT))
    assert outcome.decision is STUDENT and outcome.response.status == 503
    assert asyncio.run(outcome.response.read()) == b'{"status": 503}'

    script = Script({"teacher": [500, 500], "student": [UpstreamTimeout("p", "slow")] * 2})
    with pytest.raises(UpstreamTimeout):
        run(script, (TEACHER, STUDENT))


def test_a_retry_after_beyond_the_cap_goes_straight_to_the_fallback() -> None:
    script = Script({"teacher": [429], "student": [200]})
    script_send = script.send

    async def long_wait(decision: Decision) -> UpstreamResponse:
        response = await script_send(decision)
        if response.status == 429:
            return BufferedResponse(429, {"retry-after": "30"}, b"{}")
        return response

    script.send = long_wait  # type: ignore[method-assign]
    outcome = run(script, (TEACHER, STUDENT))
    assert script.calls == ["teacher", "student"] and script.sleeps == []
    assert outcome.decision is STUDENT


def test_open_breaker_skips_the_variant_until_it_probes() -> None:
    breakers = Breakers()
    failing = Script({"teacher": [500] * 4, "student": [200] * 4})
    run(failing, (TEACHER, STUDENT), breakers)  # 2 failures
    run(failing, (TEACHER, STUDENT), breakers)  # 3rd failure opens it
    assert failing.calls.count("teacher") == 3
    outcome = run(failing, (TEACHER, STUDENT), breakers)
    assert outcome.decision is STUDENT
    assert outcome.attempts[0].kind == "skipped"
    assert failing.calls.count("teacher") == 3


def test_retry_after_parsing() -> None:
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    date = retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0)
    assert date == 10.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
