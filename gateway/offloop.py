"""A thread with an event loop of its own, for background work heavy in Python CPU.

The rollout controller's evidence read parses and checks every captured call since its last
look (about 60 us of CPU per call): thousands of calls at once, run on the gateway's event
loop, would hold every call in flight for hundreds of milliseconds. Run on this loop instead,
it shares the interpreter with the calls a few milliseconds at a time (the GIL's switch
interval), so calls wait on it no longer than that.

``await worker.run(coroutine)`` runs the coroutine on the thread's loop and returns its result
(or raises its exception); cancelling the awaiting task cancels it there. Anything the
coroutine opens (a database engine and its connections) belongs to that loop and must be made
and closed there (``close(cleanup)``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return await asyncio.wrap_future(future)

    async def close(self, cleanup: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Run ``cleanup`` on the thread's loop, then stop the loop and the thread."""
        if not self._thread.is_alive():
            return
        try:
            if cleanup is not None:
                await self.run(cleanup())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, 10.0)
            if not self._thread.is_alive():
                self._loop.close()
