"""The benchmark's loop-lag sampler (gateway/looplag.py): off unless asked, sampling only between
its two signals, a blocked loop recorded as a hold. The end-to-end use (a gateway under uvicorn
with ``GATEWAY_LOOPLAG`` set) is in tests/bench/test_tail_smoke.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import uvloop

from gateway import looplag
from gateway.looplag import BOUNDS_MS, Holds, Sampler


def test_holds_count_each_bound_passed() -> None:
    holds = Holds()
    for value in (0.05, 0.3, 1.5, 7.0):
        holds.add(value)
    data = holds.to_json()
    assert data["samples"] == 4
    assert data["above_ms"]["0.2"] == 3 and data["above_ms"]["1"] == 2
    assert data["above_ms"]["5"] == 1 and data["above_ms"]["10"] == 0
    assert data["max_ms"] == 7.0 and data["total_above_ms"] == pytest.approx(8.8)
    assert len(data["above_ms"]) == len(BOUNDS_MS)


def test_off_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(looplag.ENV, raising=False)

    async def main() -> looplag.Sampler | None:
        return looplag.start_from_environment()

    assert uvloop.run(main()) is None


async def _until(condition: Any) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition never held")


def test_a_blocked_loop_and_a_collection_are_recorded_between_the_signals(tmp_path: Path) -> None:
    path = tmp_path / "looplag.json"

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        loop = asyncio.get_running_loop()
        sampler = Sampler(path)
        sampler.install(loop)
        try:
            await asyncio.sleep(0.01)
            assert not sampler.running and not path.exists()  # nothing until asked
            os.kill(os.getpid(), signal.SIGUSR1)
            await _until(lambda: sampler.running)
            await asyncio.sleep(0.02)
            time.sleep(0.008)  # noqa: ASYNC251 (holds the loop for 8 ms at least: the point)
            spin = time.thread_time() + 0.004
            while time.thread_time() < spin:  # and works on it for 4 ms of CPU
                pass
            gc.collect()
            await asyncio.sleep(0.005)
            os.kill(os.getpid(), signal.SIGUSR1)  # the first window written, a second begun
            await _until(lambda: path.exists())
            first = json.loads(path.read_text())
            await asyncio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGUSR2)
            await _until(lambda: not sampler.running)
            second = json.loads(path.read_text())
            assert gc.callbacks.count(sampler._on_gc) == 0
            return first, second
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
            loop.remove_signal_handler(signal.SIGUSR2)

    first, second = uvloop.run(main())
    assert first["seq"] == 1 and second["seq"] == 2
    assert first["lag"]["samples"] > 0
    assert first["lag"]["max_ms"] >= 11.0  # the 12 ms hold, less at most the 1 ms period
    assert first["busy"]["max_ms"] >= 4.0  # of which 4 ms of the thread's own CPU
    assert first["busy"]["above_ms"]["2"] >= 1
    assert first["lag"]["above_ms"]["5"] >= 1
    assert first["gc"]["2"]["samples"] >= 1  # the full collection
    assert second["lag"]["samples"] > 0 and second["window_s"] > 0


def test_steps_are_timed_by_coroutine_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "looplag.json"

    async def holder() -> str:
        await asyncio.sleep(0)
        time.sleep(0.006)  # noqa: ASYNC251 (a step that holds the loop for 6 ms)
        await asyncio.sleep(0)
        gc.collect()  # a step whose time is mostly a collection's
        await asyncio.sleep(0)
        return "done"

    async def sleeper() -> None:
        await asyncio.sleep(60)

    async def main() -> tuple[dict[str, Any], str, str]:
        loop = asyncio.get_running_loop()
        sampler = Sampler(path)
        sampler.install(loop)
        sampler.time_steps(loop)
        try:
            before = loop.create_task(holder())  # timed only while sampling
            await before
            os.kill(os.getpid(), signal.SIGUSR1)
            await _until(lambda: sampler.running)
            result = await loop.create_task(holder())
            waiting = loop.create_task(sleeper())
            await asyncio.sleep(0.005)
            state = inspect.getcoroutinestate(waiting.get_coro())  # type: ignore[arg-type]
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            os.kill(os.getpid(), signal.SIGUSR2)
            await _until(lambda: not sampler.running)
            return json.loads(path.read_text()), result, state
        finally:
            loop.set_task_factory(None)
            loop.remove_signal_handler(signal.SIGUSR1)
            loop.remove_signal_handler(signal.SIGUSR2)

    data, result, state = uvloop.run(main())
    assert result == "done" and state == inspect.CORO_SUSPENDED
    steps = data["steps"]
    name = "test_steps_are_timed_by_coroutine_when_asked.<locals>.holder"
    assert steps[name]["wall"]["samples"] == 4  # one run only: the first was not sampling
    assert steps[name]["wall"]["max_ms"] >= 6.0 and steps[name]["wall"]["above_ms"]["5"] >= 1
    # The 6 ms step slept, not worked: it is over 5 ms by the clock, not by CPU time (compared
    # by counts: the collection's step, also timed, can be the longest either way).
    assert steps[name]["cpu"]["above_ms"]["5"] < steps[name]["wall"]["above_ms"]["5"]
    collection = data["gc"]["2"]["max_ms"]
    own = steps[name]["own"]
    assert own["samples"] == 4 and own["max_ms"] >= 6.0  # the sleep is its own...
    assert own["above_ms"]["5"] == 1  # ... the collection is not
    assert own["total_above_ms"] <= steps[name]["wall"]["total_above_ms"] - collection + 0.5
    sleeper_name = "test_steps_are_timed_by_coroutine_when_asked.<locals>.sleeper"
    assert steps[sleeper_name]["wall"]["samples"] == 2  # its first step, then the cancellation
