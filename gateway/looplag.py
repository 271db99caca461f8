"""Loop-lag sampling, for the benchmark only: how long the event loop is held, and by collections.

Off unless the environment asks at startup: ``GATEWAY_LOOPLAG=/path/looplag.json``. Off, nothing
is started; the one cost is reading the variable once. Asked, the gateway only listens for two
signals; it samples between a SIGUSR1 and a SIGUSR2, so the benchmark's other runs pay nothing.

While sampling, a task wakes every millisecond (``asyncio.sleep(0.001)``) and records how
late it woke: the interval since its last wake-up less 1 ms. While nothing else runs, uvloop
wakes it about 0.05-0.15 ms late (libuv's timers count whole milliseconds); when a callback or
a task's step holds the loop, the next wake-up waits for it, so a hold of D ms shows as a
lateness of up to D (a hold always shows when D > 1 ms; a shorter one only when it straddles the
due time). A late wake-up is not always the gateway's doing: on a busy machine its thread may
wait for a core. So each interval's CPU time of the loop's thread (``time.thread_time()``) is
recorded too ("busy"): the loop's own work between two wake-ups, which a hold by a callback, a
step or a collection is, and a wait for a core is not. The collector's pauses are timed apart,
per generation, through ``gc.callbacks``.

With ``GATEWAY_LOOPLAG_STEPS`` set as well, the tasks created after startup begins are made
with their coroutine wrapped (a task factory), and each step of each task (from resuming to its
next suspension, which is how long it held the loop) is timed, by the coroutine's name: which
work holds the loop (also less the collections that ran inside the step, which a step triggers
but are not its own work). Callbacks that are not tasks' steps (protocols' ``data_received``,
timers) are not named; the sampler's figures still count them.

``SIGUSR1`` starts sampling (or, while sampling, writes the window so far and starts a new one);
``SIGUSR2`` writes the window and stops. A window is written to the file whole (a new file put
in place with a rename, so a reader never sees half of it); its ``seq`` counts the windows.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import gc
import json
import os
import signal
import time
from collections.abc import Coroutine, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV = "GATEWAY_LOOPLAG"
STEPS_ENV = "GATEWAY_LOOPLAG_STEPS"
"""Set (to anything) beside ``GATEWAY_LOOPLAG``: every task's steps are timed too (a cost on
every step, sampling or not: for a run of its own)."""
STEPS_KEPT = 20
"""The window's file lists this many coroutines, those with the longest steps first."""
PERIOD_S = 0.001
BOUNDS_MS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
"""Bucket ``i`` counts values above ``BOUNDS_MS[i]`` and at most the next bound."""


@dataclass
class Holds:
    """Counts of values (ms) above each bound, and the largest value."""

    samples: int = 0
    above: list[int] = field(default_factory=lambda: [0] * len(BOUNDS_MS))
    max_ms: float = 0.0
    total_above_ms: float = 0.0
    """The sum of the values above the first bound."""

    def add(self, value_ms: float) -> None:
        self.samples += 1
        if value_ms > self.max_ms:
            self.max_ms = value_ms
        if value_ms <= BOUNDS_MS[0]:
            return
        self.total_above_ms += value_ms
        for index, bound in enumerate(BOUNDS_MS):
            if value_ms > bound:
                self.above[index] += 1
            else:
                break

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "above_ms": {
                f"{bound:g}": count for bound, count in zip(BOUNDS_MS, self.above, strict=True)
            },
            "max_ms": round(self.max_ms, 3),
            "total_above_ms": round(self.total_above_ms, 3),
        }


class Stepped:
    """A coroutine whose every step (a ``send`` or ``throw``, from one ``await`` that suspends
    to the next) is timed, wall and CPU, into the sampler's figures for its name."""

    __slots__ = ("_coro", "_name", "_sampler")

    def __init__(self, coro: Coroutine[Any, Any, Any], sampler: Sampler) -> None:
        self._coro = coro
        self._name = getattr(coro, "__qualname__", type(coro).__name__)
        self._sampler = sampler

    def _timed(self, step: Any, *args: Any) -> Any:
        sampler = self._sampler
        if sampler._task is None:
            return step(*args)
        wall, cpu, collecting = time.perf_counter(), time.thread_time(), sampler.gc_seconds
        try:
            return step(*args)
        finally:
            sampler.step(
                self._name,
                time.perf_counter() - wall,
                time.thread_time() - cpu,
                sampler.gc_seconds - collecting,
            )

    def send(self, value: Any) -> Any:
        return self._timed(self._coro.send, value)

    def throw(self, *args: Any) -> Any:
        return self._timed(self._coro.throw, *args)

    def close(self) -> None:
        self._coro.close()

    def __next__(self) -> Any:
        return self._timed(self._coro.send, None)

    def __iter__(self) -> Stepped:
        return self

    def __await__(self) -> Generator[Any, None, Any]:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._coro, name)  # cr_frame, cr_running ... for whoever inspects it


collections.abc.Coroutine.register(Stepped)


class Sampler:
    """The lateness of a 1 ms timer, and the collector's pauses, per window."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seq = 0
        self.lag = Holds()
        self.busy = Holds()
        self.gc: dict[int, Holds] = {}
        self.steps: dict[str, tuple[Holds, Holds, Holds]] = {}
        """Per coroutine name, its steps' wall time, CPU time, and wall time less the
        collections that ran inside the step (with ``GATEWAY_LOOPLAG_STEPS``)."""
        self.gc_seconds = 0.0
        """The collector's pauses so far, summed (while sampling)."""
        self.window_started = time.perf_counter()
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGUSR1: write the window so far (if sampling) and sample a new one; SIGUSR2: write
        the window and stop sampling."""
        loop.add_signal_handler(signal.SIGUSR1, self.next_window, loop)
        loop.add_signal_handler(signal.SIGUSR2, self.stop)

    def time_steps(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every task created from now on has its steps timed (while sampling)."""

        def factory(
            loop: asyncio.AbstractEventLoop,
            coro: Coroutine[Any, Any, Any],
            context: contextvars.Context | None = None,
            **kwargs: Any,
        ) -> asyncio.Task[Any]:
            return asyncio.Task(Stepped(coro, self), loop=loop, context=context, **kwargs)

        loop.set_task_factory(factory)  # type: ignore[arg-type]

    def step(self, name: str, wall_s: float, cpu_s: float, gc_s: float = 0.0) -> None:
        figures = self.steps.get(name)
        if figures is None:
            figures = self.steps[name] = (Holds(), Holds(), Holds())
        figures[0].add(wall_s * 1000.0)
        figures[1].add(cpu_s * 1000.0)
        figures[2].add(max(0.0, wall_s - gc_s) * 1000.0)

    @property
    def running(self) -> bool:
        return self._task is not None

    def next_window(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is not None:
            self.dump()
        else:
            self._task = loop.create_task(self._run(), name="looplag")
            gc.callbacks.append(self._on_gc)
        self._reset()

    def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        self._task = None
        gc.callbacks.remove(self._on_gc)
        self.dump()
        self._reset()

    def _reset(self) -> None:
        self.lag, self.busy, self.gc, self.steps = Holds(), Holds(), {}, {}
        self.window_started = time.perf_counter()

    async def _run(self) -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while True:
            await asyncio.sleep(PERIOD_S)
            now, cpu = time.perf_counter(), time.thread_time()
            self.lag.add(max(0.0, (now - last - PERIOD_S) * 1000.0))
            self.busy.add((cpu - last_cpu) * 1000.0)
            last, last_cpu = now, cpu

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        pause_s = time.perf_counter() - self._gc_started
        self.gc_seconds += pause_s
        pause_ms = pause_s * 1000.0
        generation = int(info.get("generation", -1))
        self.gc.setdefault(generation, Holds()).add(pause_ms)

    def snapshot(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "pid": os.getpid(),
            "period_ms": PERIOD_S * 1000.0,
            "window_s": round(time.perf_counter() - self.window_started, 3),
            "lag": self.lag.to_json(),
            "busy": self.busy.to_json(),
            "gc": {str(gen): holds.to_json() for gen, holds in sorted(self.gc.items())},
            "steps": {
                name: {"wall": wall.to_json(), "cpu": cpu.to_json(), "own": own.to_json()}
                for name, (wall, cpu, own) in sorted(
                    self.steps.items(), key=lambda item: (-item[1][0].max_ms, item[0])
                )[:STEPS_KEPT]
            },
        }

    def dump(self) -> None:
        """Write this window's figures to the file (``seq`` one more than the last)."""
        self.seq += 1
        data = self.snapshot()
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(data))
        partial.replace(self.path)


_sampler: Sampler | None = None


def start_from_environment() -> Sampler | None:
    """When ``GATEWAY_LOOPLAG`` names a file, the sampler's signals on the running loop (it
    samples from the first SIGUSR1); else None."""
    global _sampler
    path = os.environ.get(ENV)
    if not path or _sampler is not None:
        return _sampler
    loop = asyncio.get_running_loop()
    _sampler = Sampler(Path(path))
    _sampler.install(loop)
    if os.environ.get(STEPS_ENV):
        _sampler.time_steps(loop)
    return _sampler
