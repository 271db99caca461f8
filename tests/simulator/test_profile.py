"""The latency profile: parsing, the built-in numbers, and latency you can measure."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic
import pytest
import yaml
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from simulator.profile import BUILTIN_PROFILE, Latency, load_profile, parse_profile

if TYPE_CHECKING:
    from tests.simulator.conftest import RunningSimulator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "simulator-profile.yaml"
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def test_builtin_profile_makes_the_teacher_slower() -> None:
    student = Latency(ttft_ms=120, token_ms=11, jitter=0.1)
    teacher = Latency(ttft_ms=450, token_ms=40, jitter=0.1)
    students = ("ft:gpt-3.5-turbo:acme::abc", "gpt-3.5-turbo", "gpt-4o-mini", "o1-mini")
    for model in (*students, "claude-haiku-4-5", "claude-3-5-haiku-latest"):
        assert BUILTIN_PROFILE.latency_for(model) == student, model
    teachers = ("gpt-4", "gpt-4o", "o1-preview", "o3")
    for model in (*teachers, "claude-opus-4-1", "claude-sonnet-4-5", "claude-3-7-sonnet-latest"):
        assert BUILTIN_PROFILE.latency_for(model) == teacher, model
    assert BUILTIN_PROFILE.latency_for("text-embedding-3-small") == Latency(ttft_ms=20)
    assert load_profile(None) is BUILTIN_PROFILE


def test_profile_parsing_is_strict() -> None:
    assert parse_profile(None).latency_for("anything") == Latency()
    parsed = parse_profile({"faults": [{"kind": 429}], "models": {"a*": {"ttft_ms": 5}}})
    assert parsed.faults[0].kind == "429" and parsed.faults[0].rate == 1.0
    assert parsed.latency_for("abc").ttft_ms == 5
    bad_profiles: list[dict[str, object]] = [
        {"defaults": {}},
        {"default": {"ttft": 5}},
        {"models": {"a*": {"ttft_ms": -1}}},
        {"faults": [{"kind": "418"}]},
        {"faults": [{"kind": "500", "rate": 2}]},
        {"faults": [{"kind": "500", "colour": "red"}]},
    ]
    for bad in bad_profiles:
        with pytest.raises(pydantic.ValidationError):
            parse_profile(bad)


def test_example_profile_loads() -> None:
    profile = load_profile(EXAMPLE)
    assert profile.latency_for("gpt-4o-mini") == BUILTIN_PROFILE.latency_for("gpt-4o-mini")
    assert profile.latency_for("gpt-4") == BUILTIN_PROFILE.latency_for("gpt-4")
    assert {rule.kind for rule in profile.faults} == {"429", "503", "drop", "timeout"}
    assert yaml.safe_load(EXAMPLE.read_text())["seed"] == 0


def test_a_bad_profile_file_stops_the_server(
    simulator_with_profile: Callable[[str], RunningSimulator],
) -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        simulator_with_profile("default: {ttft_ms: 1}\nmodel: {}\n")


LATENCY_PROFILE = """
default: {ttft_ms: 0, token_ms: 0}
models:
  "student-*": {ttft_ms: 16, token_ms: 2.75}
  "teacher-*": {ttft_ms: 60, token_ms: 10}
"""


def _seconds(client: OpenAI, model: str) -> float:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        client.chat.completions.create(model=model, messages=ASK, max_tokens=12)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def test_latency_profile_is_measurable(
    simulator_with_profile: Callable[[str], RunningSimulator],
) -> None:
    simulator = simulator_with_profile(LATENCY_PROFILE)
    client = simulator.client(fast=False)
    _seconds(client, "warm-up")
    student = _seconds(client, "student-1")  # 16 + 12 * 2.75 = 49 ms
    teacher = _seconds(client, "teacher-1")  # 60 + 12 * 10 = 180 ms
    assert 0.049 <= student < 0.120
    assert 0.180 <= teacher < 0.300
    assert 2.8 < teacher / student < 4.5

    started = time.perf_counter()
    stream = client.chat.completions.create(
        model="teacher-1", messages=ASK, max_tokens=12, stream=True
    )
    arrivals = [time.perf_counter() - started for _ in stream]
    assert 0.060 <= arrivals[1] < 0.150  # the first token, after the role chunk
    assert arrivals[-1] - arrivals[1] >= 0.110  # 11 more tokens and the finish, 10 ms apart

    started = time.perf_counter()
    client.chat.completions.create(
        model="teacher-1",
        messages=ASK,
        max_tokens=12,
        extra_headers={"x-sim-ttft-ms": "0", "x-sim-token-ms": "0"},
    )
    assert time.perf_counter() - started < 0.060
