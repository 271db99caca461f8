"""Serving the simulator: ``run(host, port, profile_path)`` blocks until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from simulator.app import create_app
from simulator.profile import load_profile


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def serve(host: str, port: int, profile_path: str | None) -> None:
    app = create_app(load_profile(profile_path))
    # No access log: the benchmark pushes thousands of calls a second through here. A short
    # shutdown: calls stalled by a `timeout` fault need not hold up the end of a test run.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    await site.start()
    addresses = runner.addresses
    bound = addresses[0][1] if addresses else port
    print(f"simulator listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(host: str, port: int, profile_path: str | None) -> None:
    """Serve the simulator on host:port (0 picks a free port, printed in the first line)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(host, port, profile_path))
    sys.stdout.flush()
