"""The capture writer: a bounded in-memory queue written to the store in batches, off the hot path.

``submit(record)`` is synchronous, O(1), and never blocks or raises: the record is queued, or,
when ``queue_size`` records are already held (waiting, or taken for a batch and not yet
stored), or the writer has stopped, dropped and counted. A background task
(``await start()``) takes up to ``batch_size`` records at a time, waiting at most
``flush_interval_ms`` for a batch to fill, prepares them (``capture.prepare``: parse,
assemble, price, redact) and inserts them in one transaction (executemany INSERTs, see
``Store.insert_calls``). The next batch is prepared while the last one is being inserted.

When the database fails (unreachable, restarting, locked), the batch is kept and retried with
exponential backoff capped at ``retry_max_backoff_s`` while new records keep queueing; nothing
that fits in the queue is lost. A batch the database rejects for its content is written row by
row and only the rows it refuses are given up (``failed``).

Shutdown (SIGTERM): the gateway stops taking calls, finishes those in flight (which may still
submit), then ``await drain(deadline_s)``: everything queued is written, retrying until the
deadline, and the writer stops. ``stop()`` stops at once and gives up what is queued.

Where the CPU work of preparation runs. ``prepare="loop"`` (the default) prepares on the event
loop in slices, yielding to it whenever a slice has run for ``SLICE_S``; ``prepare="thread"``
hands each batch to a worker thread. ``python -m bench.capture_write --prepare loop,thread``
measures both (how late a 1 ms ticker wakes up while the writer works): with the writer flat
out, a thread gives a lower median lag but a p99 about twice the slices' (it holds the GIL for
up to the interpreter's 5 ms switch interval at a time, and orjson and ``re`` do not release
it), and no more throughput, since the work is CPU-bound either way; at a gateway's pace
(``--rate 500``) both add nothing measurable to the median. Hence slices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import exc as sa_exc

from capture.config import CaptureSettings
from capture.prepare import Prepared, Preparer, Row
from capture.record import CallRecord
from capture.store import Store

log = logging.getLogger("capture.writer")

SLICE_S = 0.0005
"""Longest stretch of preparation on the event loop before it yields."""
FIRST_BACKOFF_S = 0.05
DROP_LOG_INTERVAL_S = 60.0
DRAIN_MARGIN_S = 5.0

Batch = tuple[list[CallRecord], list[Row]]
"""Records taken from the queue, and their prepared rows."""


def is_transient(exc: BaseException) -> bool:
    """Is this a failure of the database (retry the batch) rather than of the rows?"""
    if isinstance(exc, OSError | TimeoutError | sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return False


class CaptureWriter:
    def __init__(
        self,
        store: Store,
        settings: CaptureSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        prepare: Literal["loop", "thread"] = "loop",
        sample_random: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.settings = settings
        self._clock = clock
        self._prepare_in_thread = prepare == "thread"
        self._random = sample_random
        self._preparer = Preparer(settings)
        self._capacity = settings.queue_size
        self._batch_size = settings.batch_size
        self._interval_s = settings.flush_interval_ms / 1000
        self._max_backoff_s = settings.retry_max_backoff_s

        self._queue: deque[CallRecord] = deque()
        self._pending_ids: set[str] = set()
        self._wakeup = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._accepting = True
        self._closing = False
        self._deadline: float | None = None
        self._in_flight: list[list[CallRecord]] = []
        """Batches taken from the queue and not yet stored or given up (at most three)."""
        self._in_flight_count = 0
        self._submitted = 0
        self._finished = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._last_drop_log: float | None = None

        self.written = 0
        """Records stored."""
        self.dropped = 0
        """Records refused by ``submit`` (queue full or writer stopped)."""
        self.retried = 0
        """Batch retries after a database failure."""
        self.failed = 0
        """Records given up: rejected by the database, or still queued at the end of ``drain``
        or at ``stop``."""
        self.sampled_out = 0
        """Calls ``should_capture`` said not to record."""
        self.unpriced: Counter[str] = Counter()
        """Records with token usage whose model has no price, by model."""

    # --- the hot path ---------------------------------------------------------------------

    def should_capture(self) -> bool:
        """Whether to record this call (``enabled`` and the ``sample`` rate); decide before
        building the record so a sampled-out call costs nothing more."""
        settings = self.settings
        if not settings.enabled:
            return False
        if settings.sample >= 1.0 or self._random() < settings.sample:
            return True
        self.sampled_out += 1
        return False

    def submit(self, record: CallRecord) -> bool:
        """Queue ``record``; False when it was dropped (queue full, or the writer stopped).

        Call it from the event loop's thread. Never blocks, never raises.
        """
        try:
            queue = self._queue
            if not self._accepting or len(queue) + self._in_flight_count >= self._capacity:
                self._drop()
                return False
            self._pending_ids.add(record.id)
            queue.append(record)
            self._submitted += 1
            depth = len(queue)
            if depth == 1 or depth == self._batch_size:
                self._wakeup.set()
            return True
        except Exception:
            return False

    def _drop(self) -> None:
        self.dropped += 1
        now = self._clock()
        if self._last_drop_log is None or now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            reason = "the writer has stopped" if not self._accepting else "the queue is full"
            log.warning(
                "capture record dropped: %s (%d dropped so far, queue_size %d)",
                reason,
                self.dropped,
                self._capacity,
            )

    # --- state ----------------------------------------------------------------------------

    def is_pending(self, request_id: str) -> bool:
        """Is this call queued or being written (so feedback for it should wait a moment)?"""
        return request_id in self._pending_ids

    @property
    def queue_depth(self) -> int:
        """Records accepted and not yet stored or given up (the batch in flight included)."""
        return len(self._queue) + self._in_flight_count

    def stats(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "dropped": self.dropped,
            "retried": self.retried,
            "failed": self.failed,
            "sampled_out": self.sampled_out,
            "unpriced": dict(self.unpriced),
            "queue_depth": self.queue_depth,
            "queue_size": self._capacity,
        }

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background task (records submitted before are kept)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="capture-writer")

    async def flush(self) -> None:
        """Write everything submitted so far now, without waiting for a batch to fill; returns
        when all of it is stored or given up. Bound the wait with ``asyncio.timeout``."""
        target = self._submitted
        if self._finished >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._wakeup.set()
        await asyncio.shield(future)

    async def drain(self, deadline_s: float) -> bool:
        """Write everything queued, retrying failed batches for up to ``deadline_s`` seconds,
        then stop. Records submitted meanwhile are still taken. True when nothing was given up.
        """
        failed_before = self.failed
        self._closing = True
        self._deadline = self._clock() + deadline_s
        self._wakeup.set()
        self._interrupt.set()
        while True:
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="capture-writer")
            remaining = self._deadline - self._clock()
            try:
                # The task gives up by itself at the deadline; the margin covers a database
                # call that hangs past it.
                await asyncio.wait_for(asyncio.shield(self._task), remaining + DRAIN_MARGIN_S)
            except TimeoutError:
                log.error(
                    "capture writer still busy %.0f s after its drain deadline", DRAIN_MARGIN_S
                )
                break
            if not self._queue or self._expired():
                break  # else: records were submitted while the task was finishing
        await self.stop()
        return self.failed == failed_before

    async def stop(self) -> None:
        """Stop now: submit refuses from here on, and what is still queued is given up."""
        self._accepting = False
        self._closing = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = [record for batch in self._in_flight for record in batch]
        left.extend(self._queue)
        self._queue.clear()
        self._in_flight = []
        self._in_flight_count = 0
        if left:
            log.error("capture writer stopped with %d records not written", len(left))
            self.failed += len(left)
            self._finish(left)

    # --- the background task --------------------------------------------------------------

    def _expired(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    async def _run(self) -> None:
        """Two stages, so that the next batch is prepared while the last one is inserted."""
        prepared: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=1)
        inserting = asyncio.create_task(self._insert_stage(prepared), name="capture-insert")
        try:
            await self._prepare_stage(prepared)
            await inserting
        finally:
            if not inserting.done():
                inserting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await inserting

    async def _prepare_stage(self, prepared: asyncio.Queue[Batch | None]) -> None:
        while True:
            batch = await self._next_batch()
            if not batch or self._expired():
                self._queue.extendleft(reversed(batch))  # drain's deadline: stop() counts them
                await prepared.put(None)
                return
            self._in_flight.append(batch)
            self._in_flight_count += len(batch)
            try:
                rows = await self._prepare(batch)
            except Exception:  # a bug of ours: lose this batch, not the writer
                log.exception("capture writer failed to prepare %d records", len(batch))
                rows = []
                self.failed += len(batch)
            await prepared.put((batch, rows))

    async def _insert_stage(self, prepared: asyncio.Queue[Batch | None]) -> None:
        while (item := await prepared.get()) is not None:
            batch, rows = item
            try:
                await self._write(rows)
            except Exception:
                log.exception("capture writer failed to insert %d records", len(rows))
                self.failed += len(rows)
            self._in_flight.remove(batch)
            self._in_flight_count -= len(batch)
            self._finish(batch)

    async def _next_batch(self) -> list[CallRecord]:
        queue = self._queue
        while not queue:
            if self._closing:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        if len(queue) < self._batch_size and not self._closing and not self._waiters:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wakeup.wait()
        return [queue.popleft() for _ in range(min(len(queue), self._batch_size))]

    def _finish(self, batch: list[CallRecord]) -> None:
        self._finished += len(batch)
        for record in batch:
            self._pending_ids.discard(record.id)
        if self._waiters:
            done = [w for w in self._waiters if w[0] <= self._finished]
            self._waiters = [w for w in self._waiters if w[0] > self._finished]
            for _, future in done:
                if not future.done():
                    future.set_result(None)

    async def _prepare(self, batch: list[CallRecord]) -> list[Row]:
        if self._prepare_in_thread:
            prepared = await asyncio.to_thread(lambda: [self._prepare_one(r) for r in batch])
        else:
            prepared = []
            clock = time.perf_counter
            started = clock()
            for record in batch:
                prepared.append(self._prepare_one(record))
                if clock() - started >= SLICE_S:
                    await asyncio.sleep(0)
                    started = clock()
        rows = []
        for item in prepared:
            if item is None:
                self.failed += 1
                continue
            if item.unpriced_model is not None:
                self.unpriced[item.unpriced_model] += 1
            rows.append(item.row)
        return rows

    def _prepare_one(self, record: CallRecord) -> Prepared | None:
        try:
            return self._preparer.prepare(record)
        except Exception:  # not even an id to store it under: not a CallRecord
            log.exception("capture record could not be prepared: %r", record)
            return None

    async def _write(self, rows: list[Row]) -> None:
        """Store ``rows``, retrying database failures until they succeed or drain's deadline."""
        pending = rows
        backoff = FIRST_BACKOFF_S
        failures = 0
        while pending:
            try:
                await self.store.insert_calls(pending)
            except Exception as exc:
                if is_transient(exc):
                    error: BaseException = exc
                else:
                    pending = await self._isolate(pending)
                    if not pending:
                        break
                    error = exc
            else:
                self.written += len(pending)
                break
            failures += 1
            self.retried += 1
            if failures == 1:
                log.warning("capture database unavailable, retrying with backoff: %s", error)
            if self._expired():
                log.error("capture drain deadline passed: %d records not written", len(pending))
                self.failed += len(pending)
                return
            delay = backoff
            if self._deadline is not None:
                delay = max(0.0, min(delay, self._deadline - self._clock()))
            await self._pause(delay)
            backoff = min(backoff * 2, self._max_backoff_s)
        if failures:
            log.warning("capture database back after %d retries", failures)

    async def _pause(self, delay: float) -> None:
        """Sleep between retries; ``drain`` cuts it short so the last attempts come sooner."""
        self._interrupt.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._interrupt.wait()

    async def _isolate(self, rows: list[Row]) -> list[Row]:
        """Write a rejected batch row by row, giving up only the rows the database refuses.

        Returns the rows not yet written when the database itself failed on the way.
        """
        for index, row in enumerate(rows):
            try:
                await self.store.insert_calls([row])
            except Exception as exc:
                if is_transient(exc):
                    return rows[index:]
                self.failed += 1
                log.error("capture record %s rejected by the database: %s", row.get("id"), exc)
            else:
                self.written += 1
        return []
