"""Graceful shutdown of one worker process: from SIGTERM until its last stream is closed.

uvicorn alone, on SIGTERM, stops accepting at once, waits up to ``timeout_graceful_shutdown``
for the connections to finish, then cancels what is left: a stream still open is cut at the
TCP level, which the SDKs raise as a connection error. An LLM stream may run for minutes, so
the gateway chains uvicorn's signal handler (in each worker, at lifespan startup):

1. SIGTERM: /readyz answers 503 at once, and calls are still accepted and served for
   ``server.shutdown_delay_s``, so that a load balancer polling /readyz stops sending;
2. then uvicorn's own handler runs: the listener closes, calls in flight go on;
3. ``server.shutdown_timeout_s`` later every stream still open is ended: the relay sends an
   error event in OpenAI's stream shape (code ``gateway_shutting_down``) and completes the
   response; a call not answered yet (still waiting on its upstream) gets a 503 with the same
   code. Either is recorded with its error;
4. uvicorn's own limit, ``STREAM_END_MARGIN_S`` after that, cancels whatever still remains (a
   client that stopped reading), then the lifespan shutdown drains shadows and the capture.

SIGINT (Ctrl-C) skips the delay of step 1; a second signal goes to uvicorn at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger("gateway")

STREAM_END_MARGIN_S = 5.0
"""uvicorn's own graceful-shutdown limit is the configured timeout plus this: it cancels only
what the gateway could not end itself (a stream whose client stopped reading)."""

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SHUTTING_DOWN = "gateway_shutting_down"
"""The error code of a call ended by the shutdown deadline (stream event or 503)."""


class OpenCall(Protocol):
    """What the deadline needs of a call in flight (``gateway.relay.Call``)."""

    responded: bool

    def shutting_down(self) -> None:
        """Mark the call as ended by the shutdown (error and status, for its record)."""


_Handler = Callable[[int, FrameType | None], Any]


class Drain:
    """One process's shutdown state and its open streams (``relay_stream`` registers them)."""

    def __init__(self) -> None:
        self.draining = False
        self._streams: set[asyncio.Task[Any]] = set()
        self._ended: set[asyncio.Task[Any]] = set()
        self._calls: dict[asyncio.Task[Any], OpenCall] = {}
        self.installed = False
        self._previous: dict[int, _Handler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._delay_s = 0.0
        self._timeout_s = 0.0
        self._on_drain: Callable[[], None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_at = 0.0

    def install(
        self, delay_s: float, timeout_s: float, on_drain: Callable[[], None] | None = None
    ) -> bool:
        """Chain the running server's SIGTERM and SIGINT handlers (call in the main thread,
        inside the event loop, after uvicorn installed its own); False when there are none."""
        self._loop = asyncio.get_running_loop()
        self._delay_s, self._timeout_s, self._on_drain = delay_s, timeout_s, on_drain
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous):
                self._previous[sig] = previous
                signal.signal(sig, self._on_signal)
        self.installed = bool(self._previous)
        return self.installed

    def uninstall(self) -> None:
        """Give the signals back to the handlers chained by ``install``."""
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._previous.clear()
        self.installed = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it runs between two bytecodes of the main thread (the event loop's),
        # so it only sets flags and hands the rest to the loop.
        first = not self.draining
        self.draining = True
        if self._on_drain is not None:
            self._on_drain()
        previous = self._previous.get(sig)
        delay = self._delay_s if first and sig == signal.SIGTERM else 0.0
        loop = self._loop
        if loop is None or loop.is_closed():
            if previous is not None:
                previous(sig, frame)
            return
        if previous is not None and delay <= 0:
            previous(sig, frame)
        loop.call_soon_threadsafe(self._begin, sig, first, delay)

    def _begin(self, sig: int, first: bool, delay: float) -> None:
        """In the event loop: hand the signal to uvicorn after the delay, and set the streams'
        deadline (moved earlier, never later, by a second signal)."""
        assert self._loop is not None
        name = signal.Signals(sig).name
        previous = self._previous.get(sig)
        if delay > 0 and previous is not None:
            self._loop.call_later(delay, previous, sig, None)
        deadline = self._loop.time() + delay + self._timeout_s
        if self._deadline is not None and deadline >= self._deadline_at:
            return
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline_at = deadline
        self._deadline = self._loop.call_at(deadline, self.end_streams)
        if first:
            log.info(
                "%s: not ready from now on; accepting calls for %.0f s more, then calls in flight"
                " have %.0f s before open streams are ended",
                name,
                delay,
                self._timeout_s,
            )

    def end_streams(self) -> int:
        """End every open stream and every call not answered yet, now (a stream sends its error
        event and completes, a call is answered 503); how many."""
        self._deadline = None
        streams = list(self._streams)
        for task in streams:
            self._streams.discard(task)
            self._ended.add(task)
            task.cancel("the gateway is shutting down")
        waiting = [
            (task, call)
            for task, call in self._calls.items()
            if not call.responded and task not in self._ended and not task.done()
        ]
        for task, call in waiting:
            call.shutting_down()
            self._ended.add(task)
            task.cancel("the gateway is shutting down")
        if streams or waiting:
            log.warning(
                "shutdown deadline: ending %d open stream(s) and %d call(s) not answered yet",
                len(streams),
                len(waiting),
            )
        return len(streams) + len(waiting)

    def call_opened(self, call: OpenCall) -> None:
        """Register a call in flight (only while installed: ``call_closed`` is then sure to
        follow, from the app)."""
        if self.installed and (task := asyncio.current_task()) is not None:
            self._calls[task] = call

    def call_closed(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._calls.pop(task, None)
            self._ended.discard(task)

    def ended_call(self, task: asyncio.Task[Any] | None) -> OpenCall | None:
        """The call ``task`` runs, when the deadline cancelled it before it answered; the
        cancellation is then taken back, so that the 503 can be sent."""
        call = self._calls.get(task) if task is not None else None
        if call is None or call.responded or task not in self._ended:
            return None
        self.resume(task)
        return call

    def stream_opened(self) -> asyncio.Task[Any] | None:
        """Register the calling task as an open stream (None outside a task)."""
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        return task

    def stream_closed(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._streams.discard(task)
            self._ended.discard(task)

    def was_ended(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether the CancelledError ``task`` got comes from ``end_streams``."""
        return task is not None and task in self._ended

    def resume(self, task: asyncio.Task[Any] | None) -> None:
        """Take back the cancellation of ``end_streams`` (once), so that the stream can still
        send its error event; a later cancellation (uvicorn's) goes through."""
        if task is not None and task in self._ended:
            self._ended.discard(task)
            task.uncancel()

    @property
    def open_streams(self) -> int:
        return len(self._streams)


DRAIN = Drain()
"""This process's: signals are per process, and so are uvicorn's connections."""
