"""The capture writer in a process of its own: the serving process only queues and sends.

``ProcessWriter`` has ``CaptureWriter``'s interface (``should_capture``, ``submit``, ``flush``,
``drain``, ``stop``, ``stats``...) and the same guarantees, but the work runs in a child
process (``python -m capture.writer_main``, which runs a ``CaptureWriter``): the records'
preparation (parse, assemble, price, redact), the inserts, the retries through an outage and
the database's maintenance. In the serving process a record costs a tuple of its fields and a
share of one pickle written to a pipe (``capture.channel``) every ``SEND_INTERVAL_S`` (10 ms)
for the records of that interval: nothing that serves another call holds the loop or the GIL
for the writer's work (issue 16).

Guarantees, as ``CaptureWriter``'s:

- **Bounded, drop-and-count.** At most ``queue_size`` records are outstanding: submitted and
  not yet reported settled (stored or given up) by the writer process, wherever they are (in
  this process waiting for the next turn, in the pipe, or in the writer's queue). ``submit``
  drops and counts beyond that; the writer process has the same capacity, so it never drops
  what was sent to it.
- **Nothing lost through an outage** within the queue: the writer process keeps its batch and
  probes the database, as ``CaptureWriter`` does.
- **Drained on SIGTERM**: ``drain(deadline_s)`` sends what is left and asks the writer to write
  everything, retrying until the deadline; it waits for the writer process to exit. A writer
  whose gateway died (the pipe closed without a drain) drains what it holds and exits.
- **A writer process that dies** (a bug, the OOM killer) loses what it held: those records are
  counted ``failed`` and logged, and a new writer process is started (after 1 s, doubling up
  to a minute while it keeps failing); records submitted meanwhile wait, within the bound.

The writer process runs at a lower priority (``capture.writer_priority``, "idle" by default:
Linux's ``SCHED_IDLE``): where the gateway and its writer share one core, the calls come first
and the writer uses what they leave; on a saturated core the bounded queue then fills and
records are dropped and counted. A writer starved of CPU does not even read its pipe: what it
has not read is held to ``MAX_UNREAD_BYTES`` in the gateway's memory, and records beyond that
are dropped and counted too (an outage of the database is not that case: the writer reads on
into its own queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

from capture.channel import encode, read_frame, record_values
from capture.config import CaptureSettings
from capture.errortext import describe_error
from capture.intake import Intake
from capture.pricing import PriceLike
from capture.record import CallRecord
from capture.redaction import Redactor

log = logging.getLogger("capture.writer_process")

EXIT_WAIT_S = 5.0
"""How long a writer process that was asked to stop (or whose drain deadline passed) may take
to exit before it is killed."""
FIRST_RESTART_S = 1.0
LAST_RESTART_S = 60.0
MAX_UNREAD_BYTES = 2 << 20
"""Records sent and not yet read by the writer process, held in the gateway's memory at most;
beyond, new records are dropped and counted (a writer starved of CPU on a saturated core)."""
SEND_INTERVAL_S = 0.01
"""Records are sent this long after the first of them is submitted, together: one write and
one wake-up of the writer process for all the calls of those 10 ms, not one per call."""
COUNTERS = ("written", "retried", "failed", "normalize_failed")


class ProcessWriter(Intake):
    def __init__(
        self,
        settings: CaptureSettings,
        *,
        normalize: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sample_random: Callable[[], float] = random.random,
        python: str = sys.executable,
    ) -> None:
        """``normalize``: the normaliser as ``module:function``, imported by the writer
        process (``capture.prepare.Normalize``)."""
        super().__init__(settings, clock, sample_random, log)
        self._normalize = normalize
        self._python = python
        self._redactor = Redactor(settings.redact)
        self._prices: Mapping[str, PriceLike] | None = None

        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._stdin: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None
        self._unsent: list[tuple[Any, ...]] = []
        self._send_scheduled = False
        self._sent = 0
        """Records sent to the current writer process."""
        self._child_settled = 0
        self._child_stats: dict[str, Any] = {}
        self._settled_before = 0
        """Records settled before the current writer process (by earlier ones, or lost)."""
        self._totals: Counter[str] = Counter()
        """Counters of earlier writer processes."""
        self._unpriced: Counter[str] = Counter()
        self._ids: deque[str] = deque()
        self._pending_ids: set[str] = set()
        self._submitted = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._ending = False
        self._restart_delay = FIRST_RESTART_S
        self._restarting: asyncio.Task[None] | None = None
        self._exited: asyncio.Event | None = None
        self.lost = 0
        """Records held by a writer process that died (counted in ``failed`` too)."""

    # --- the hot path ---------------------------------------------------------------------

    def submit(self, record: CallRecord) -> bool:
        """Queue ``record`` for the writer process; False when it was dropped (queue full, or
        the writer stopped). Call it from the event loop's thread. Never blocks, never raises.
        """
        try:
            if not self._accepting or self._submitted - self._settled() >= self._capacity:
                self._drop()
                return False
            stdin = self._stdin
            if stdin is not None and stdin.transport.get_write_buffer_size() > MAX_UNREAD_BYTES:
                self._drop("the writer process is behind")
                return False
            self._unsent.append(record_values(record))
            self._ids.append(record.id)
            self._pending_ids.add(record.id)
            self._submitted += 1
            if not self._send_scheduled and self._loop is not None:
                self._send_scheduled = True
                self._loop.call_later(SEND_INTERVAL_S, self._send)
            return True
        except Exception:
            return False

    def _send(self) -> None:
        """Send the records submitted since the last send in one frame (when a writer process
        runs)."""
        self._send_scheduled = False
        process = self._process
        if not self._unsent or process is None or process.stdin is None:
            return
        if process.stdin.is_closing():
            return
        records, self._unsent = self._unsent, []
        try:
            frame = encode(("records", records))
        except Exception:  # a value pickle refuses (never a bytes body): lose only its record
            records = [values for values in records if self._picklable(values)]
            frame = encode(("records", records))
        self._sent += len(records)
        process.stdin.write(frame)

    def _picklable(self, values: tuple[Any, ...]) -> bool:
        try:
            encode(values)
        except Exception as exc:
            record_id = values[0] if isinstance(values[0], str) else "(no id)"
            log.error("capture record %s cannot be sent: %s", record_id[:64], describe_error(exc))
            self._totals["failed"] += 1
            self._settled_before += 1
            with contextlib.suppress(ValueError):
                self._ids.remove(record_id)
            self._pending_ids.discard(record_id)
            self._settle()
            return False
        return True

    # --- state ----------------------------------------------------------------------------

    def _settled(self) -> int:
        return self._settled_before + self._child_settled

    def is_pending(self, request_id: str) -> bool:
        """Is this call queued or being written (so feedback for it should wait a moment)?"""
        return request_id in self._pending_ids

    @property
    def queue_depth(self) -> int:
        return self._submitted - self._settled()

    def _counter(self, name: str) -> int:
        return int(self._totals[name]) + int(self._child_stats.get(name, 0))

    @property
    def written(self) -> int:
        return self._counter("written")

    @property
    def failed(self) -> int:
        return self._counter("failed")

    def stats(self) -> dict[str, Any]:
        unpriced = Counter(self._unpriced)
        unpriced.update(self._child_stats.get("unpriced", {}))
        return {
            "written": self.written,
            "dropped": self.dropped + self._counter("dropped"),
            "retried": self._counter("retried"),
            "failed": self.failed,
            "sampled_out": self.sampled_out,
            "normalize_failed": self._counter("normalize_failed"),
            "unpriced": dict(unpriced),
            "queue_depth": self.queue_depth,
            "queue_size": self._capacity,
            "store_up": bool(self._child_stats.get("store_up", True)),
        }

    def set_prices(self, prices: Mapping[str, PriceLike]) -> None:
        """Price the records prepared from now on with ``prices`` (a reload)."""
        self._prices = dict(prices)
        self._write(("prices", self._prices))

    def default_redactor(self) -> Redactor:
        """The redaction of the settings' list, for strings stored outside a call record."""
        return self._redactor

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer process (records submitted before are kept and sent)."""
        self._loop = asyncio.get_running_loop()
        if self._process is None and not self._ending:
            await self._spawn()

    async def _spawn(self) -> None:
        self._exited = asyncio.Event()
        process = await asyncio.create_subprocess_exec(
            self._python,
            "-m",
            "capture.writer_main",
            self.settings.writer_priority,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._process = process
        self._stdin = process.stdin
        self._sent = 0
        self._child_settled = 0
        self._child_stats = {}
        capture_log = logging.getLogger("capture")
        level = logging.getLevelName(capture_log.getEffectiveLevel())
        handler = next((h for h in capture_log.handlers if h.formatter is not None), None)
        log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
        if handler is not None and handler.formatter is not None:
            log_format = handler.formatter._fmt or log_format
        init = {
            "settings": self.settings.model_dump_json(),
            "log_level": level,
            "log_format": log_format,
            "normalize": self._normalize,
        }
        self._write(("init", init))
        if self._prices is not None:
            self._write(("prices", self._prices))
        self._send()
        self._reader = asyncio.create_task(self._read(process), name="capture-writer-reader")

    def _write(self, message: tuple[Any, ...]) -> None:
        process = self._process
        if process is not None and process.stdin is not None and not process.stdin.is_closing():
            process.stdin.write(encode(message))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        """Take the writer process's reports until it exits, then account for what it held."""
        assert process.stdout is not None
        try:
            while (message := await read_frame(process.stdout)) is not None:
                kind, settled, stats = message
                self._child_settled = int(settled)
                self._child_stats = stats
                if kind == "state" and stats.get("written", 0):
                    self._restart_delay = FIRST_RESTART_S
                self._settle()
        except Exception as exc:
            log.error("capture writer process: unreadable report: %s", describe_error(exc))
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        code = await process.wait()
        self._gone(process, code)

    def _gone(self, process: asyncio.subprocess.Process, code: int) -> None:
        """The writer process exited: what it was sent and did not settle is lost."""
        lost = self._sent - self._child_settled
        if lost > 0:
            self.lost += lost
            self._totals["failed"] += lost
        for name in (*COUNTERS, "dropped"):
            self._totals[name] += int(self._child_stats.get(name, 0))
        self._unpriced.update(self._child_stats.get("unpriced", {}))
        self._settled_before += self._sent
        self._sent = self._child_settled = 0
        self._child_stats = {}
        self._process = None
        self._stdin = None
        if self._exited is not None:
            self._exited.set()
        self._settle()
        if self._ending and lost <= 0:
            return
        log.error(
            "capture writer process exited (code %s) with %d records not written%s",
            code,
            max(lost, 0),
            "" if self._ending else f"; starting another in {self._restart_delay:.0f} s",
        )
        if not self._ending:
            self._restarting = asyncio.create_task(self._restart(self._restart_delay))
            self._restart_delay = min(self._restart_delay * 2, LAST_RESTART_S)

    async def _restart(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self._ending and self._process is None:
            try:
                await self._spawn()
            except Exception as exc:
                log.error("cannot start the capture writer process: %s", describe_error(exc))
                self._restarting = asyncio.create_task(self._restart(self._restart_delay))
                self._restart_delay = min(self._restart_delay * 2, LAST_RESTART_S)

    def _settle(self) -> None:
        """Forget the ids of settled records and wake the flushes they complete."""
        settled = self._settled()
        ids = self._ids
        while len(ids) > self._submitted - settled:
            self._pending_ids.discard(ids.popleft())
        if self._waiters:
            done = [w for w in self._waiters if w[0] <= settled]
            self._waiters = [w for w in self._waiters if w[0] > settled]
            for _, future in done:
                if not future.done():
                    future.set_result(None)

    async def flush(self) -> None:
        """Write everything submitted so far now; returns when all of it is stored or given
        up. Bound the wait with ``asyncio.timeout``."""
        target = self._submitted
        if self._settled() >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._send()
        self._write(("flush",))
        await asyncio.shield(future)

    async def drain(self, deadline_s: float) -> bool:
        """Send what is left, have the writer process write everything (retrying for up to
        ``deadline_s`` seconds) and exit. True when nothing was given up."""
        failed_before = self.failed
        self._ending = True
        if self._restarting is not None:
            self._restarting.cancel()
        if self._process is None and self._unsent and self._loop is not None:
            with contextlib.suppress(Exception):
                await self._spawn()  # a writer that died: one more for what waits
        self._send()
        self._write(("drain", deadline_s))
        await self._wait_exit(deadline_s + EXIT_WAIT_S)
        self._close()
        return self.failed == failed_before

    async def stop(self) -> None:
        """Stop now: submit refuses from here on, and what is still queued is given up."""
        self._ending = True
        if self._restarting is not None:
            self._restarting.cancel()
        self._write(("stop",))
        await self._wait_exit(EXIT_WAIT_S)
        self._close()

    async def _wait_exit(self, timeout_s: float) -> None:
        process, exited = self._process, self._exited
        if process is None or exited is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await exited.wait()
        except TimeoutError:
            log.error("capture writer process did not exit in %.0f s: killed", timeout_s)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await exited.wait()

    def _close(self) -> None:
        """No writer process any more: submit refuses, and records never sent are given up."""
        self._accepting = False
        if self._unsent:
            left = len(self._unsent)
            log.error("capture writer stopped with %d records not sent", left)
            self._totals["failed"] += left
            self._settled_before += left
            self._unsent = []
            self._settle()
