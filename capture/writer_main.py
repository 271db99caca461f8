"""The capture writer process: ``python -m capture.writer_main``, started by the gateway.

It runs a ``CaptureWriter`` (preparation, batch inserts, retries through an outage, the
database's maintenance) on its own event loop and its own interpreter, so that none of that
work holds the serving process's loop or GIL (issue 16). It reads frames (``capture.channel``)
from its stdin and reports on its stdout; its stderr is the gateway's, so its log lines land
beside the gateway's in the same format.

It lives as long as its pipe: it exits after a ``drain`` or a ``stop`` from the gateway, and
when the pipe closes without one (the gateway died), it drains what it holds first. SIGINT and
SIGTERM are ignored: a Ctrl-C or a signal to the whole process group reaches the gateway too,
which drains the writer in order; a writer that quit on its own would lose its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from capture.channel import encode, read_frame, record_from

if TYPE_CHECKING:
    from capture.writer import CaptureWriter

log = logging.getLogger("capture.writer_main")

ORPHAN_DRAIN_S = 30.0
"""How long a writer whose gateway died keeps writing what it holds."""
REPORT_INTERVAL_S = 0.5
"""How often counters that change without records settling (retries, the store's state) are
reported when they changed."""


def stats_of(writer: CaptureWriter) -> dict[str, Any]:
    stats = writer.stats()
    stats["dropped"] = writer.dropped
    return stats


class Reporter:
    """Sends ``("state", settled, stats)`` once per loop turn at most, when something changed."""

    def __init__(self, out: asyncio.StreamWriter | None) -> None:
        self.out = out
        self.writer: CaptureWriter | None = None
        self._scheduled = False
        self._last: tuple[int, dict[str, Any]] | None = None

    def soon(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.send)

    def send(self, kind: str = "state") -> None:
        self._scheduled = False
        writer, out = self.writer, self.out
        if writer is None or out is None or out.is_closing():
            return
        state = (writer.settled, stats_of(writer))
        if kind == "state" and state == self._last:
            return
        self._last = state
        out.write(encode((kind, *state)))

    async def every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.send()


async def _pipes() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The channel on the process's original stdin and stdout; fd 1 then points at stderr and
    fd 0 at /dev/null, so that nothing a library prints can corrupt a frame."""
    loop = asyncio.get_running_loop()
    inbound = os.fdopen(os.dup(0), "rb", buffering=0)
    outbound = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    reader = asyncio.StreamReader(limit=2**16)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), inbound)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, outbound)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


def _configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(log_format))
    for name in ("capture",):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.basicConfig(level=logging.WARNING, format=log_format, stream=sys.stderr)


def _function(name: str) -> Any:
    """``module:function``, imported (the gateway names the normaliser; capture imports no
    dialect)."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


async def serve() -> int:
    reader, out = await _pipes()
    init = await read_frame(reader)
    if init is None:
        return 0
    if init[0] != "init":
        raise SystemExit(f"capture writer: expected init, got {init[0]!r}")
    options = init[1]
    _configure_logging(options["log_level"], options["log_format"])
    # The rest is imported here, after main() lowered the priority (a start on a shared core).
    from capture.config import CaptureSettings
    from capture.store import Store
    from capture.writer import CaptureWriter

    settings = CaptureSettings.model_validate_json(options["settings"])
    normalize = _function(options["normalize"]) if options["normalize"] else None

    store = await Store.connect(
        settings.database_url,
        sqlite_busy_timeout_ms=int(settings.statement_timeout_s * 1000),
        connect_timeout_s=settings.connect_timeout_s,
        statement_timeout_s=settings.statement_timeout_s,
    )
    reporter = Reporter(out)
    writer = CaptureWriter(store, settings, normalize=normalize, on_finish=reporter.soon)
    reporter.writer = writer
    await writer.start()
    ticker = asyncio.create_task(reporter.every(REPORT_INTERVAL_S))
    ending: asyncio.Task[Any] | None = None
    reading: asyncio.Task[tuple[Any, ...] | None] | None = None
    flushes: set[asyncio.Task[None]] = set()
    try:
        while True:
            if reading is None:
                reading = asyncio.create_task(read_frame(reader))
            if ending is not None:
                await asyncio.wait({reading, ending}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    break  # drained or stopped: what is still unread is the gateway's to count
            message = await reading
            reading = None
            if message is None:
                if ending is None:
                    log.warning(
                        "capture writer: the gateway went away; writing the %d records held "
                        "(for %.0f s at most)",
                        writer.queue_depth,
                        ORPHAN_DRAIN_S,
                    )
                    reporter.out = None
                    ending = asyncio.create_task(writer.drain(ORPHAN_DRAIN_S))
                break
            kind = message[0]
            if kind == "records":
                for values in message[1]:
                    writer.submit(record_from(values))
            elif kind == "flush":
                flushing = asyncio.create_task(writer.flush())  # its settles are reported
                flushes.add(flushing)
                flushing.add_done_callback(flushes.discard)
            elif kind == "prices":
                writer.set_prices(message[1])
            elif kind == "drain" and ending is None:
                ending = asyncio.create_task(writer.drain(float(message[1])))
            elif kind == "stop" and ending is None:
                ending = asyncio.create_task(writer.stop())
        if ending is not None:
            await ending
    finally:
        if reading is not None:
            reading.cancel()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        if ending is None or not ending.done():
            await writer.stop()
        reporter.send("done")
        with contextlib.suppress(Exception):
            out.close()
            await out.wait_closed()
        await store.close()
    return 0


def lower_priority(priority: str) -> None:
    """``capture.writer_priority``: "idle" (``SCHED_IDLE``, else ``nice`` +19 where the system
    refuses it), "low" (``nice`` +10) or "normal"."""
    with contextlib.suppress(OSError):
        if priority == "idle":
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            except (OSError, AttributeError):
                os.nice(19)
        elif priority == "low":
            os.nice(10)


def main() -> None:
    """``python -m capture.writer_main [PRIORITY]``: the priority is lowered first thing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(sys.argv) > 1:
        lower_priority(sys.argv[1])
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        code = runner(serve())
    except Exception as exc:
        from capture.errortext import describe_error

        print(f"capture writer process failed: {describe_error(exc)}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
