"""The capture writer: a bounded in-memory queue written to the store in batches, off the hot path.

``submit(record)`` is synchronous, O(1), and never blocks or raises: the record is queued, or,
when ``queue_size`` records are already held (waiting, or taken for a batch and not yet
stored), or the writer has stopped, dropped and counted. A background task
(``await start()``) takes up to ``batch_size`` records at a time, waiting at most
``flush_interval_ms`` for a batch to fill, prepares them (``capture.prepare``: parse,
assemble, price, redact) and inserts them in one transaction (executemany INSERTs, see
``Store.insert_calls``). The next batch is prepared while the last one is being inserted.
``normalize`` (``dialects.capture.chat_view``, from the gateway) gives calls in Anthropic's
dialect their normalised chat view (``capture.prepare``).

When the database fails (unreachable, restarting, locked, or silent past the statement
timeout), the batch is kept while new records keep queueing; nothing that fits in the queue is
lost. The database is then probed (``Store.ping``: ``SELECT 1`` on a fresh connection) at
intervals growing from 50 ms to ``retry_max_backoff_s`` (0.5 s), and the batch is retried as
soon as a probe answers: the writer resumes within about that interval of the database's
return, at the cost of one small query per interval while it is down. ``store_up`` (the
``gateway_capture_store_up`` gauge) says which state it is in.

A batch the database rejects for its content is split in halves until the rows it refuses are
alone, and only those are given up (``failed``): one bad record (say, a body nested too deep to
be serialised) costs only itself. Log lines name records by id and errors by type and a clipped
message (``capture.errortext``), never a record's body: a deeply nested one cannot even be
formatted.

Shutdown (SIGTERM): the gateway stops taking calls, finishes those in flight (which may still
submit), then ``await drain(deadline_s)``: everything queued is written, retrying until the
deadline, and the writer stops. ``stop()`` stops at once and gives up what is queued.

Where the CPU work of preparation runs. ``prepare="loop"`` (the default) prepares on the event
loop in slices, yielding to it before a slice would run past ``SLICE_S``; ``prepare="thread"``
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
from collections.abc import Callable, Mapping
from typing import Any, Literal

from sqlalchemy import exc as sa_exc

from capture import retention
from capture.config import CaptureSettings
from capture.errortext import describe_error
from capture.intake import DROP_LOG_INTERVAL_S, Intake
from capture.partitions import BeforeDrop
from capture.prepare import Normalize, Prepared, Preparer, Row
from capture.pricing import PriceLike, PriceTable
from capture.record import CallRecord
from capture.redaction import Redactor
from capture.store import Store

log = logging.getLogger("capture.writer")

SLICE_S = 0.0002
"""Longest stretch of preparation on the event loop before it yields (issue 16: nothing that
serves another call holds the loop for more than ~0.2 ms; one record's preparation is not
split, so a large one still takes what it takes)."""
FIRST_BACKOFF_S = 0.05
DOWN_LOG_INTERVAL_S = 60.0
"""While the database is down, how often a line says it still is."""
REJECT_LOG_LIMIT = 20
"""Rejected records logged one by one per ``DROP_LOG_INTERVAL_S``; the rest are summed up."""
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


def _archiver(store: Store, settings: CaptureSettings) -> BeforeDrop | None:
    """With ``capture.archive``, retention archives each partition before dropping it."""
    if settings.archive is None:
        return None
    from capture.archive import configured_archiver  # pyarrow: only when archiving

    return configured_archiver(store.engine, settings.archive)


class CaptureWriter(Intake):
    def __init__(
        self,
        store: Store,
        settings: CaptureSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        prepare: Literal["loop", "thread"] = "loop",
        sample_random: Callable[[], float] = random.random,
        normalize: Normalize | None = None,
        maintenance: bool = True,
        on_finish: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(settings, clock, sample_random, log)
        self.store = store
        self._on_finish = on_finish
        """Called each time records are settled (stored or given up): the writer process reports
        its progress from it (``capture.writer_main``)."""
        self.maintenance = (
            retention.Maintenance(
                store.engine,
                unit=settings.partition,
                retention_days=settings.retention_days,
                interval_s=settings.maintenance_interval_s,
                before_drop=_archiver(store, settings),
            )
            if maintenance
            else None
        )
        self._maintenance_task: asyncio.Task[None] | None = None
        self._prepare_in_thread = prepare == "thread"
        self._preparer = Preparer(settings, normalize)
        self._batch_size = settings.batch_size
        self._interval_s = settings.flush_interval_ms / 1000
        self._max_backoff_s = settings.retry_max_backoff_s
        self._probe_timeout_s = settings.connect_timeout_s + settings.statement_timeout_s

        self._queue: deque[CallRecord] = deque()
        self._pending_ids: set[str] = set()
        self._wakeup = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._deadline: float | None = None
        self._in_flight: list[list[CallRecord]] = []
        """Batches taken from the queue and not yet stored or given up (at most three)."""
        self._in_flight_count = 0
        self._submitted = 0
        self._finished = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._settled = 0
        """Rows of the batch being inserted that are stored or given up (for a bug's count)."""
        self._down_since: float | None = None
        self._rejects_logged = 0
        self._rejects_unlogged = 0
        self._reject_window: float | None = None

        self.written = 0
        """Records stored."""
        self.retried = 0
        """Batch retries after a database failure."""
        self.failed = 0
        """Records given up: rejected by the database, or still queued at the end of ``drain``
        or at ``stop``."""
        self.unpriced: Counter[str] = Counter()
        """Records with token usage whose model has no price, by model."""
        self.store_up = True
        """False from a failure of the database until a batch is stored again."""

    @property
    def normalize_failed(self) -> int:
        """Records stored without their normalised view because the normaliser failed."""
        return self._preparer.normalize_failed

    def set_prices(self, prices: Mapping[str, PriceLike]) -> None:
        """Price the records prepared from now on with ``prices`` over the built-in table (a
        reload that changed ``capture.prices``)."""
        self._preparer.prices = PriceTable(prices)

    def default_redactor(self) -> Redactor:
        """The redaction of the settings' list (``capture.redact``), for strings stored outside
        a call record (feedback's label and comment)."""
        return self._preparer.redactor_for(None)

    # --- the hot path ---------------------------------------------------------------------

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

    # --- state ----------------------------------------------------------------------------

    def is_pending(self, request_id: str) -> bool:
        """Is this call queued or being written (so feedback for it should wait a moment)?"""
        return request_id in self._pending_ids

    @property
    def settled(self) -> int:
        """Records accepted and then stored or given up, plus those refused by ``submit``."""
        return self._finished + self.dropped

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
            "normalize_failed": self.normalize_failed,
            "unpriced": dict(self.unpriced),
            "queue_depth": self.queue_depth,
            "queue_size": self._capacity,
            "store_up": self.store_up,
        }

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background task (records submitted before are kept), and the database's
        maintenance (``capture.retention.Maintenance``: partitions ahead, retention, the
        content collector) unless ``maintenance=False``."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="capture-writer")
        if self.maintenance is not None and self._maintenance_task is None:
            self._maintenance_task = retention.start(self.maintenance)

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
        await retention.stop(self._maintenance_task)
        self._maintenance_task = None
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
            failed_before = self.failed
            try:
                rows = await self._prepare(batch)
            except Exception as exc:  # a bug of ours: lose this batch, not the writer
                rows = []
                self.failed = failed_before + len(batch)
                log.error(
                    "capture writer failed to prepare %d records: %s",
                    len(batch),
                    describe_error(exc),
                    exc_info=not isinstance(exc, RecursionError),
                )
            await prepared.put((batch, rows))

    async def _insert_stage(self, prepared: asyncio.Queue[Batch | None]) -> None:
        while (item := await prepared.get()) is not None:
            batch, rows = item
            self._settled = 0
            try:
                await self._write(rows)
            except Exception as exc:  # a bug of ours: lose what is left of this batch only
                left = len(rows) - self._settled
                self.failed += left
                log.error(
                    "capture writer failed to insert %d records: %s",
                    left,
                    describe_error(exc),
                    exc_info=not isinstance(exc, RecursionError),
                )
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
        if self._on_finish is not None:
            self._on_finish()
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
            started = last = clock()
            for record in batch:
                prepared.append(self._prepare_one(record))
                now = clock()
                # Yield before the next record would take the slice past SLICE_S (one record's
                # time is the guess for the next one's).
                if 2 * now - last - started >= SLICE_S:
                    await asyncio.sleep(0)
                    now = clock()
                    started = now
                last = now
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
        except Exception as exc:  # not even an id to store it under: not a CallRecord
            log.error(
                "capture record %s could not be prepared: %s",
                _record_id(record),
                describe_error(exc),
            )
            return None

    def _stored(self, count: int) -> None:
        self.written += count
        self._settled += count
        if not self.store_up:
            self.store_up = True
            since = self._down_since
            self._down_since = None
            took = f" after {self._clock() - since:.1f} s" if since is not None else ""
            log.warning("capture database back%s: writing again", took)

    def _given_up(self, count: int) -> None:
        self.failed += count
        self._settled += count

    async def _write(self, rows: list[Row]) -> None:
        """Store ``rows``; through a failure of the database, wait for it to answer again and
        retry, until they are stored or drain's deadline passes."""
        pending = rows
        while pending:
            try:
                await self.store.insert_calls(pending)
            except Exception as exc:
                if not is_transient(exc):
                    pending = await self._isolate(pending)
                    continue
                self.retried += 1
                if not await self._wait_for_database(exc):
                    log.error("capture drain deadline passed: %d records not written", len(pending))
                    self._given_up(len(pending))
                    return
            else:
                self._stored(len(pending))
                return

    async def _wait_for_database(self, error: BaseException) -> bool:
        """After ``error``, a failure of the database: probe it until it answers (True), or
        until drain's deadline (False)."""
        now = self._clock()
        if self.store_up:
            self.store_up = False
            self._down_since = now
            log.warning(
                "capture database unavailable (%s): probing it every %.1f s at most; "
                "%d records waiting",
                describe_error(error),
                self._max_backoff_s,
                self.queue_depth,
            )
        last_log = now
        interval = FIRST_BACKOFF_S
        while True:
            delay = interval
            if self._deadline is not None:
                delay = max(0.0, min(delay, self._deadline - self._clock()))
            await self._pause(delay)
            if self._expired():
                return False
            try:
                await self._ping()
            except Exception as exc:
                now = self._clock()
                if now - last_log >= DOWN_LOG_INTERVAL_S:
                    last_log = now
                    since = self._down_since if self._down_since is not None else now
                    log.warning(
                        "capture database still unavailable after %.0f s (%s); %d records waiting",
                        now - since,
                        describe_error(exc),
                        self.queue_depth,
                    )
            else:
                return True
            interval = min(interval * 2, self._max_backoff_s)

    async def _ping(self) -> None:
        """``Store.ping``, bounded by its timeouts and by drain's deadline."""
        limit = self._probe_timeout_s
        if self._deadline is not None:
            limit = max(0.0, min(limit, self._deadline - self._clock()))
        async with asyncio.timeout(limit):
            await self.store.ping()

    async def _pause(self, delay: float) -> None:
        """Sleep between probes; ``drain`` cuts it short so the last attempts come sooner."""
        self._interrupt.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._interrupt.wait()

    async def _isolate(self, rows: list[Row]) -> list[Row]:
        """Write a batch the database rejected in halves, and halves of those, until each row
        it refuses is alone: only those are given up.

        Returns the rows not yet written when the database itself failed on the way.
        """
        parts = [rows]
        while parts:
            part = parts.pop()
            try:
                await self.store.insert_calls(part)
            except Exception as exc:
                if is_transient(exc):
                    return [row for rest in (part, *reversed(parts)) for row in rest]
                if len(part) > 1:
                    middle = len(part) // 2
                    parts += [part[middle:], part[:middle]]
                    continue
                self._given_up(1)
                self._log_rejected(part[0], exc)
            else:
                self._stored(len(part))
        return []

    def _log_rejected(self, row: Row, exc: BaseException) -> None:
        """One line per rejected record, up to ``REJECT_LOG_LIMIT`` a minute, then a count."""
        now = self._clock()
        if self._reject_window is None or now - self._reject_window >= DROP_LOG_INTERVAL_S:
            if self._rejects_unlogged:
                log.error(
                    "capture: %d more records rejected by the database (not logged one by one)",
                    self._rejects_unlogged,
                )
            self._reject_window = now
            self._rejects_logged = self._rejects_unlogged = 0
        if self._rejects_logged >= REJECT_LOG_LIMIT:
            self._rejects_unlogged += 1
            return
        self._rejects_logged += 1
        log.error(
            "capture record %s rejected by the database: %s",
            _record_id(row),
            describe_error(exc),
        )


def _record_id(item: object) -> str:
    """A record's or a row's id for a log line, whatever it is (never its repr)."""
    value = item.get("id") if isinstance(item, dict) else getattr(item, "id", None)
    return value[:64] if isinstance(value, str) else f"(no id, {type(item).__name__})"
