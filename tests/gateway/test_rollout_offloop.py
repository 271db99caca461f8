"""The rollout evidence's own loop (gateway.offloop): work runs on another thread and loop,
results and errors come back, cancelling the waiter cancels the work, close cleans up there."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.offloop import LoopThread


def test_work_runs_on_its_own_thread_and_comes_back() -> None:
    async def run() -> None:
        worker = LoopThread("test-offloop")
        here = threading.get_ident()

        async def where() -> int:
            await asyncio.sleep(0)
            return threading.get_ident()

        async def fails() -> None:
            raise ValueError("bad evidence")

        started = asyncio.Event()
        cancelled = threading.Event()

        async def forever() -> None:
            try:
                loop.call_soon_threadsafe(started.set)
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        loop = asyncio.get_running_loop()
        try:
            assert await worker.run(where()) != here
            with pytest.raises(ValueError, match="bad evidence"):
                await worker.run(fails())
            task = asyncio.create_task(worker.run(forever()))
            await started.wait()
            # the gateway's loop stays free while the work waits there
            assert await asyncio.wait_for(asyncio.sleep(0, "free"), 1) == "free"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(cancelled.wait, 5)
        finally:
            cleaned: list[int] = []

            async def cleanup() -> None:
                cleaned.append(threading.get_ident())

            await worker.close(cleanup)
            assert cleaned and cleaned[0] != here
            await worker.close()  # closing twice is harmless

    asyncio.run(run())
