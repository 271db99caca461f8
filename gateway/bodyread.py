"""Reading a request body, bounded in size (413) and in time (408).

A client that sends its body a byte a second would otherwise hold a connection and a task
for as long as it likes. The time limit is kept by one watchdog rather than a timer per call:
``asyncio.timeout`` costs ~5 µs a call, about 1% of the gateway's whole overhead, while
registering a read in a dict costs a fraction of a microsecond. The watchdog wakes a few times
a second while reads are in progress and cancels those past their deadline; the read turns that
cancellation into RequestTimeout. A read can overrun its limit by at most one tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from gateway.types import Message, Receive

T = TypeVar("T")

TICK_S = 0.25
"""How often the watchdog looks at the reads in progress."""


class BodyReader:
    def __init__(self) -> None:
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    async def read(
        self, receive: Receive, content_length: bytes | None, limit: int, timeout_s: float
    ) -> bytes:
        """The whole body, or PayloadTooLarge, RequestTimeout, InvalidRequest."""
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                raise InvalidRequest("Invalid Content-Length header.") from None
            if declared > limit:
                raise PayloadTooLarge(
                    f"The request body is {declared} bytes; the limit is {limit}."
                )
        deadline = asyncio.get_running_loop().time() + timeout_s
        return await self._before(deadline, timeout_s, _read(receive, limit))

    def guard(
        self,
        receive: Receive,
        timeout_s: float,
        error: Callable[[str], Exception] = RequestTimeout,
    ) -> Receive:
        """``receive`` for an app that reads the body itself (the FastAPI routes): until the
        body is complete, a read past ``timeout_s`` from the first raises ``error(message)``."""
        deadline: float | None = None
        complete = False

        async def guarded() -> Message:
            nonlocal deadline, complete
            if complete:  # later reads only wait for the client to go
                return await receive()
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + timeout_s
            message = await self._before(deadline, timeout_s, receive(), error)
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return guarded

    async def _before(
        self,
        deadline: float,
        timeout_s: float,
        work: Awaitable[T],
        error: Callable[[str], Exception] = RequestTimeout,
    ) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._deadlines[task] = deadline
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._watch(), name="body-read-watchdog"
            )
        try:
            return await work
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            if task.uncancel() > 0:
                raise  # cancelled for another reason as well (shutdown): that one wins
            message = f"The request body was not received within {timeout_s:g} seconds."
            raise error(message) from None
        finally:
            del self._deadlines[task]

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._deadlines:
                await asyncio.sleep(TICK_S)
                now = loop.time()
                for task, deadline in list(self._deadlines.items()):
                    if deadline <= now and task not in self._expired:
                        # The task is suspended in its read (it unregisters before it leaves),
                        # so the cancellation lands there.
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._watchdog = None


async def _read(receive: Receive, limit: int) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise InvalidRequest("The client disconnected before sending the whole body.")
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("The client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        parts.append(chunk)
    return b"".join(parts)
